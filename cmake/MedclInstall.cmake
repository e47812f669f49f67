# Install rules and the exported CMake package (find_package(medcl CONFIG)).
include(CMakePackageConfigHelpers)

set(MEDCL_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/medcl" CACHE STRING
    "Where medclConfig.cmake is installed, relative to the prefix")

install(TARGETS medcl EXPORT medclTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/medcl" DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(FILES "${MEDCL_GENERATED_INCLUDE_DIR}/medcl/version.h"
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/medcl)
install(EXPORT medclTargets NAMESPACE medcl:: DESTINATION ${MEDCL_INSTALL_CMAKEDIR})

get_target_property(_medcl_type medcl TYPE)
if(_medcl_type STREQUAL "STATIC_LIBRARY")
  set(MEDCL_CONFIG_STATIC ON)
else()
  set(MEDCL_CONFIG_STATIC OFF)
endif()
set(MEDCL_CONFIG_WITH_ZLIB ${ZLIB_FOUND})
set(MEDCL_CONFIG_WITH_NIFTI ${MedclNifti_FOUND})
set(MEDCL_CONFIG_WITH_DCMTK ${MEDCL_WITH_DCMTK})
set(MEDCL_CONFIG_WITH_DIST ${MEDCL_WITH_DIST})
foreach(_v MEDCL_CONFIG_WITH_ZLIB MEDCL_CONFIG_WITH_NIFTI MEDCL_CONFIG_WITH_DCMTK MEDCL_CONFIG_WITH_DIST)
  if(${_v})
    set(${_v} ON)
  else()
    set(${_v} OFF)
  endif()
endforeach()
configure_package_config_file(cmake/medclConfig.cmake.in
  "${PROJECT_BINARY_DIR}/medclConfig.cmake"
  INSTALL_DESTINATION ${MEDCL_INSTALL_CMAKEDIR})
write_basic_package_version_file("${PROJECT_BINARY_DIR}/medclConfigVersion.cmake"
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/medclConfig.cmake"
  "${PROJECT_BINARY_DIR}/medclConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/FindMedclNifti.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/FindMedclGloo.cmake"
  DESTINATION ${MEDCL_INSTALL_CMAKEDIR})
install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/medcl)
