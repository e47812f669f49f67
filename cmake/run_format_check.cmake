# cmake -DCLANG_FORMAT=... -DSOURCE_DIR=... -P run_format_check.cmake
#
# clang-format's output changes between major versions; the code is kept formatted identically
# by the two that CI runs (Debian 12's 14 and Debian 13's 19). With another version the check is
# skipped (ctest shows it as skipped), since a difference there says nothing about the code.
cmake_policy(SET CMP0057 NEW)
set(_known_versions 14 19)
execute_process(COMMAND "${CLANG_FORMAT}" --version OUTPUT_VARIABLE _version_text)
string(REGEX MATCH "version ([0-9]+)" _ "${_version_text}")
set(_major "${CMAKE_MATCH_1}")
if(NOT _major IN_LIST _known_versions)
  message("medcl-format: skipped: clang-format ${_major} is not one of the versions the code is "
          "kept formatted for (${_known_versions})")
  return()
endif()
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
