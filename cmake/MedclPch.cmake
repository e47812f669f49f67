# One precompiled header (LibTorch + Catch2, see tests/catch.h) is built by the first test target
# and reused by the other tests, the examples and the benchmarks: LibTorch is most of their compile
# time. A target that reuses it must see the same definitions that the header reads.

# Makes `name` reuse the tests' precompiled header, when the tests are built.
function(medcl_reuse_test_pch name)
  get_property(_owner GLOBAL PROPERTY MEDCL_TEST_PCH_OWNER)
  if(NOT _owner)
    return()
  endif()
  get_property(_defs GLOBAL PROPERTY MEDCL_TEST_PCH_DEFINITIONS)
  target_compile_definitions(${name} PRIVATE ${_defs})
  # The header includes Catch2's, from wherever its package is (an unpacked prefix, say).
  get_property(_includes GLOBAL PROPERTY MEDCL_TEST_PCH_INCLUDES)
  if(_includes)
    target_include_directories(${name} SYSTEM PRIVATE ${_includes})
  endif()
  target_precompile_headers(${name} REUSE_FROM ${_owner})
endfunction()
