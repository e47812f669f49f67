// libFuzzer target: CSV/TSV parsing and numeric conversion of every column.
#define MEDCL_DATA_NO_ATEN
#include <medcl/data/csv.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  // The first byte picks the options, the rest is the text.
  const uint8_t mode = data[0];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  medcl::data::CsvOptions options;
  options.delimiter((mode & 1) ? '\t' : ',').header((mode & 2) == 0);
  try {
    const auto table = medcl::data::parse_csv(text, options, "fuzz.csv");
    for (const auto& column : table.columns()) {
      (void)table.text(column);
      for (int64_t r = 0; r < table.rows(); ++r) {
        (void)table.is_missing(r, column);
        (void)table.line(r);
      }
      try {
        (void)table.numeric(column);
      } catch (const std::runtime_error&) {
      }
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
