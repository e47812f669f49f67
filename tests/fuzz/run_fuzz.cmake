# Builds the libFuzzer targets (once, in a nested build with clang++) and runs one of them for a
# short time over its seed corpus. Called by ctest:
#   cmake -DREADER=csv -DCLANGXX=… -DMEDCL_SOURCE_DIR=… -DMEDCL_TORCH_ARG_DIR=… -DBUILD_DIR=…
#         -DGENERATOR=… -DSECONDS=… -DMALLOC_LIMIT_MB=… -P run_fuzz.cmake
# Prints "medcl-fuzz: skipped" (ctest's SKIP_REGULAR_EXPRESSION) when clang++, libFuzzer or the
# reader's library is missing.
cmake_minimum_required(VERSION 3.18)
if(NOT CLANGXX)
  message("medcl-fuzz: skipped: clang++ not found (install clang to run the fuzz targets)")
  return()
endif()
set(_fuzz_dir "${MEDCL_SOURCE_DIR}/tests/fuzz")
if(NOT EXISTS "${BUILD_DIR}/CMakeCache.txt")
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S "${_fuzz_dir}/targets" -B "${BUILD_DIR}" -G "${GENERATOR}"
            -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_COMPILER=${CLANGXX}"
            "-DMEDCL_SOURCE_DIR=${MEDCL_SOURCE_DIR}" "-DMEDCL_TORCH_ARG_DIR=${MEDCL_TORCH_ARG_DIR}"
    RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    file(REMOVE "${BUILD_DIR}/CMakeCache.txt")
    message(FATAL_ERROR "medcl-fuzz: configuring the fuzz targets failed")
  endif()
endif()
file(STRINGS "${BUILD_DIR}/fuzz_targets.txt" _targets)
if(NOT "fuzz_${READER}" IN_LIST _targets)
  message("medcl-fuzz: skipped: fuzz_${READER} cannot be built here (libFuzzer or the reader's "
          "library is missing; see ${BUILD_DIR}/CMakeCache.txt)")
  return()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${BUILD_DIR}" --target fuzz_${READER}
                RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "medcl-fuzz: building fuzz_${READER} failed")
endif()

# New inputs go to a scratch corpus; the committed seeds are only read.
set(_work "${BUILD_DIR}/corpus/${READER}")
set(_artifacts "${BUILD_DIR}/artifacts/${READER}/")
file(MAKE_DIRECTORY "${_work}" "${_artifacts}")
execute_process(
  COMMAND "${BUILD_DIR}/fuzz_${READER}" -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          -malloc_limit_mb=${MALLOC_LIMIT_MB} -print_final_stats=1 "-artifact_prefix=${_artifacts}"
          "${_work}" "${_fuzz_dir}/corpus/${READER}"
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "medcl-fuzz: fuzz_${READER} found a problem (exit ${_rc}); the input is in ${_artifacts}")
endif()
message("medcl-fuzz: fuzz_${READER} ran ${SECONDS} s without finding a problem")
