#include <medcl/version.h>

namespace medcl {

const char* version() noexcept {
  return MEDCL_VERSION_STRING;
}

} // namespace medcl
