// libFuzzer target: DICOM image and waveform parsing from memory (DCMTK underneath).
#define MEDCL_DATA_NO_ATEN
#include <medcl/data/dicom.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // DCMTK logs every parse problem to stderr; the reader's exceptions already carry them.
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto im = medcl::data::parse_dicom_image(bytes, "fuzz.dcm");
    if (static_cast<int64_t>(im.data.size()) != im.frames * im.rows * im.columns) {
      __builtin_trap();
    }
  } catch (const std::runtime_error&) {
  }
  try {
    const auto w = medcl::data::parse_dicom_waveform(bytes, "fuzz.dcm");
    for (const auto& g : w.groups) {
      if (g.data.size() != g.channels.size() * static_cast<size_t>(g.samples)) {
        __builtin_trap();
      }
    }
    (void)w.rhythm();
  } catch (const std::runtime_error&) {
  }
  return 0;
}
