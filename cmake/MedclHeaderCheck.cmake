# Proves that every public header compiles on its own (a "surrogate TU" per header, as Catch2 does):
# each one is included first and alone in a generated source file.
file(GLOB_RECURSE _medcl_public_headers RELATIVE "${PROJECT_SOURCE_DIR}/include"
     CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/medcl/*.h")
set(_medcl_surrogates)
foreach(_h IN LISTS _medcl_public_headers)
  string(MAKE_C_IDENTIFIER "${_h}" _id)
  set(_src "${PROJECT_BINARY_DIR}/header_check/${_id}.cpp")
  set(_content "#include <${_h}>\n#include <${_h}> // and guarded against double inclusion\n")
  if(EXISTS "${_src}")
    file(READ "${_src}" _old)
  else()
    set(_old "")
  endif()
  if(NOT _old STREQUAL _content)
    file(WRITE "${_src}" "${_content}")
  endif()
  list(APPEND _medcl_surrogates "${_src}")
endforeach()
add_library(medcl_header_check OBJECT ${_medcl_surrogates})
target_link_libraries(medcl_header_check PRIVATE medcl)
# Optimisation buys nothing here: the point is that each header parses and instantiates alone.
target_compile_options(medcl_header_check PRIVATE -O0 -g0)
# ATen's core header is precompiled (it is the slow part, and every medcl header needs it): the check
# still proves that each medcl header includes the medcl and torch headers it needs beyond ATen.
target_precompile_headers(medcl_header_check PRIVATE <ATen/ATen.h>)
medcl_set_warnings(medcl_header_check)
