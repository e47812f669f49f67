// The reader error of the medcl library: a c10::Error, like every other medcl error.

#include "io_error.h"

#include <c10/util/Exception.h>

namespace medcl {
namespace data {
namespace detail {

void io_fail(const std::string& message) {
  C10_THROW_ERROR(Error, message);
}

} // namespace detail
} // namespace data
} // namespace medcl
