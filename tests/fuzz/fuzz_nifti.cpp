// libFuzzer target: NIfTI-1/2 parsing (plain and gzip-compressed) from memory.
#define MEDCL_DATA_NO_ATEN
#include <medcl/data/nifti.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto v = medcl::data::parse_nifti(bytes, "fuzz.nii");
    int64_t n = 1;
    for (int64_t d : v.dims) {
      n *= d;
    }
    if (n != static_cast<int64_t>(v.data.size()) || v.dims.size() != v.voxel_size.size()) {
      __builtin_trap();
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
