// libFuzzer target: .npy and .npz parsing.
#define MEDCL_DATA_NO_ATEN
#include <medcl/data/npy.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto a = medcl::data::parse_npy(bytes, "fuzz.npy");
    if (static_cast<int64_t>(a.data.size()) != a.numel() * medcl::data::npy_itemsize(a.dtype)) {
      __builtin_trap(); // the reader promised data of exactly this size
    }
  } catch (const std::runtime_error&) {
  }
  try {
    for (const auto& kv : medcl::data::parse_npz(bytes, "fuzz.npz")) {
      if (static_cast<int64_t>(kv.second.data.size()) !=
          kv.second.numel() * medcl::data::npy_itemsize(kv.second.dtype)) {
        __builtin_trap();
      }
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
