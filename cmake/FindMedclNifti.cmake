# Finds libnifti2 (the NIfTI-1/2 I/O library of nifti_clib) by its header and libraries, and
# defines MedclNifti::nifti2. Debian's NIFTIConfig.cmake refers to files the package does not
# install, so find_package(NIFTI CONFIG) fails there; this module is installed with medcl's package
# so that consumers of a static libmedcl find the library the same way.
find_path(MedclNifti_INCLUDE_DIR nifti2_io.h PATH_SUFFIXES nifti)
find_library(MedclNifti_nifti2_LIBRARY NAMES nifti2)
find_library(MedclNifti_znz_LIBRARY NAMES znz)
find_package(ZLIB QUIET)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MedclNifti
  REQUIRED_VARS MedclNifti_nifti2_LIBRARY MedclNifti_znz_LIBRARY MedclNifti_INCLUDE_DIR ZLIB_FOUND)
mark_as_advanced(MedclNifti_INCLUDE_DIR MedclNifti_nifti2_LIBRARY MedclNifti_znz_LIBRARY)

if(MedclNifti_FOUND AND NOT TARGET MedclNifti::nifti2)
  add_library(MedclNifti::znz UNKNOWN IMPORTED)
  set_target_properties(MedclNifti::znz PROPERTIES
    IMPORTED_LOCATION "${MedclNifti_znz_LIBRARY}"
    INTERFACE_LINK_LIBRARIES ZLIB::ZLIB)
  add_library(MedclNifti::nifti2 UNKNOWN IMPORTED)
  set_target_properties(MedclNifti::nifti2 PROPERTIES
    IMPORTED_LOCATION "${MedclNifti_nifti2_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MedclNifti_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES MedclNifti::znz)
  if(UNIX)
    set_property(TARGET MedclNifti::nifti2 APPEND PROPERTY INTERFACE_LINK_LIBRARIES m)
  endif()
endif()
