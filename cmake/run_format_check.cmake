# cmake -DCLANG_FORMAT=... -DSOURCE_DIR=... -P run_format_check.cmake
file(GLOB_RECURSE _files
  "${SOURCE_DIR}/include/*.h" "${SOURCE_DIR}/src/*.cpp" "${SOURCE_DIR}/src/*.h"
  "${SOURCE_DIR}/tests/*.cpp" "${SOURCE_DIR}/tests/*.h" "${SOURCE_DIR}/examples/*.cpp"
  "${SOURCE_DIR}/bench/*.cpp" "${SOURCE_DIR}/bench/*.h")
list(FILTER _files EXCLUDE REGEX "/build[^/]*/")
list(LENGTH _files _n)
execute_process(COMMAND "${CLANG_FORMAT}" --dry-run --Werror --style=file ${_files}
  RESULT_VARIABLE _rc ERROR_VARIABLE _err)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "clang-format: files differ from .clang-format (fix with: clang-format -i <file>):\n${_err}")
endif()
message(STATUS "format_check: ${_n} files match .clang-format")
