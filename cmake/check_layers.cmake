# Checks the layering of medcl's public headers: a header in include/medcl/<folder>/ may include
# medcl headers of its own folder and of the folders listed before it in MEDCL_LAYERS, never one
# listed after it (an upward include). Run by ctest as `layers_check`:
#   cmake -DSOURCE_DIR=<medcl checkout> -P cmake/check_layers.cmake
# Prints every upward include as file:line and fails when there is one.
cmake_policy(SET CMP0057 NEW)
if(NOT SOURCE_DIR)
  message(FATAL_ERROR "check_layers: pass -DSOURCE_DIR=<the medcl checkout>")
endif()

# Bottom to top; the same order as the layer table of docs/index.md.
set(MEDCL_LAYERS core pairing dist memory nn losses data augment eval methods train)

file(GLOB _folders RELATIVE "${SOURCE_DIR}/include/medcl" "${SOURCE_DIR}/include/medcl/*")
foreach(_f IN LISTS _folders)
  if(IS_DIRECTORY "${SOURCE_DIR}/include/medcl/${_f}" AND NOT _f IN_LIST MEDCL_LAYERS)
    message(FATAL_ERROR "check_layers: include/medcl/${_f}/ is not in the layer order; add it to "
                        "MEDCL_LAYERS in cmake/check_layers.cmake and to docs/index.md")
  endif()
endforeach()

set(_violations "")
set(_headers 0)
list(LENGTH MEDCL_LAYERS _n)
math(EXPR _last "${_n} - 1")
foreach(_i RANGE ${_last})
  list(GET MEDCL_LAYERS ${_i} _layer)
  file(GLOB_RECURSE _files "${SOURCE_DIR}/include/medcl/${_layer}/*.h")
  foreach(_file IN LISTS _files)
    math(EXPR _headers "${_headers} + 1")
    file(STRINGS "${_file}" _lines)
    set(_line_no 0)
    foreach(_line IN LISTS _lines)
      math(EXPR _line_no "${_line_no} + 1")
      if(_line MATCHES "^[ \t]*#[ \t]*include[ \t]*[<\"]medcl/([A-Za-z0-9_]+)/")
        set(_target "${CMAKE_MATCH_1}")
        list(FIND MEDCL_LAYERS "${_target}" _j)
        file(RELATIVE_PATH _rel "${SOURCE_DIR}" "${_file}")
        if(_j EQUAL -1)
          list(APPEND _violations "${_rel}:${_line_no}: includes medcl/${_target}/, not a layer")
        elseif(_j GREATER _i)
          list(APPEND _violations
            "${_rel}:${_line_no}: ${_layer}/ includes ${_target}/, a higher layer")
        endif()
      endif()
    endforeach()
  endforeach()
endforeach()

if(_headers EQUAL 0)
  message(FATAL_ERROR "check_layers: no header found under ${SOURCE_DIR}/include/medcl")
endif()
list(LENGTH _violations _count)
if(_count GREATER 0)
  string(REPLACE ";" "\n  " _text "${_violations}")
  message(FATAL_ERROR "check_layers: ${_count} upward include(s):\n  ${_text}\n"
                      "Order, bottom to top: ${MEDCL_LAYERS}")
endif()
message(STATUS "check_layers: ${_headers} headers, no upward include (order: ${MEDCL_LAYERS})")
