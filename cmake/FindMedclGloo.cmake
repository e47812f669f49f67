# Finds Gloo (the collective library under LibTorch's c10d Gloo backend) by its header and
# library, and defines MedclGloo::gloo. Debian's libgloo-dev ships no CMake package; this module
# is installed with medcl's package so that consumers of a static libmedcl find it the same way.
find_path(MedclGloo_INCLUDE_DIR gloo/config.h)
find_library(MedclGloo_LIBRARY NAMES gloo)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MedclGloo REQUIRED_VARS MedclGloo_LIBRARY MedclGloo_INCLUDE_DIR)
mark_as_advanced(MedclGloo_INCLUDE_DIR MedclGloo_LIBRARY)

if(MedclGloo_FOUND AND NOT TARGET MedclGloo::gloo)
  add_library(MedclGloo::gloo UNKNOWN IMPORTED)
  set_target_properties(MedclGloo::gloo PROPERTIES
    IMPORTED_LOCATION "${MedclGloo_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MedclGloo_INCLUDE_DIR}")
endif()
