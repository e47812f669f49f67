# Registers `format_check` with ctest: every C++ file of the project must match .clang-format.
find_program(MEDCL_CLANG_FORMAT NAMES clang-format clang-format-19 clang-format-14)
if(MEDCL_CLANG_FORMAT)
  add_test(NAME format_check
    COMMAND ${CMAKE_COMMAND} -DCLANG_FORMAT=${MEDCL_CLANG_FORMAT} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
            -P ${PROJECT_SOURCE_DIR}/cmake/run_format_check.cmake)
  set_tests_properties(format_check PROPERTIES LABELS "format"
    SKIP_REGULAR_EXPRESSION "medcl-format: skipped")
else()
  message(STATUS "medcl: clang-format not found; the format check is not registered "
                 "(apt-get install clang-format, or -DMEDCL_FORMAT_CHECK=OFF)")
endif()
