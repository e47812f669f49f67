// The fuzz targets' reader error: a std::runtime_error (medcl's own is a c10::Error; the parsing
// sources are built here without LibTorch).

#include "io_error.h"

#include <stdexcept>

namespace medcl {
namespace data {
namespace detail {

void io_fail(const std::string& message) {
  throw std::runtime_error(message);
}

} // namespace detail
} // namespace data
} // namespace medcl
