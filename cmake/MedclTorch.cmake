# Finds LibTorch for medcl and refuses versions it does not support.
#
# Where LibTorch comes from, in this order:
#   - Torch_DIR or CMAKE_PREFIX_PATH given by the user (pytorch.org's zip, a source build);
#   - with MEDCL_TORCH_FROM_PYTHON=ON, the LibTorch inside the Python `torch` package
#     (torch.utils.cmake_prefix_path), as on GPU machines with a CUDA-enabled torch 2.x;
#   - the system's (Debian/Ubuntu: apt-get install libtorch-dev).
set(MEDCL_MIN_TORCH_VERSION 1.13)

function(_medcl_torch_missing_message out)
  set(${out} "medcl needs LibTorch >= ${MEDCL_MIN_TORCH_VERSION} and none was found.
Provide it in one of two ways:
  1. Debian/Ubuntu: sudo apt-get install libtorch-dev libopenblas0-openmp
     (./scripts/test and ./scripts/demo do this for you when run as root or with sudo);
  2. your own LibTorch (pytorch.org's zip, or pip's torch): configure with
     -DCMAKE_PREFIX_PATH=/path/to/libtorch  or  -DTorch_DIR=/path/to/libtorch/share/cmake/Torch
     (for pip's torch: -DMEDCL_TORCH_FROM_PYTHON=ON, or the prefix printed by
      python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')." PARENT_SCOPE)
endfunction()

macro(medcl_find_torch)
  if(MEDCL_TORCH_FROM_PYTHON)
    find_package(Python3 COMPONENTS Interpreter REQUIRED)
    execute_process(
      COMMAND "${Python3_EXECUTABLE}" -c "import torch; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _medcl_py_torch_prefix
      OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _medcl_py_rc
      ERROR_VARIABLE _medcl_py_err)
    if(NOT _medcl_py_rc EQUAL 0)
      message(FATAL_ERROR "MEDCL_TORCH_FROM_PYTHON=ON but '${Python3_EXECUTABLE} -c \"import torch\"' failed:\n${_medcl_py_err}")
    endif()
    list(APPEND CMAKE_PREFIX_PATH "${_medcl_py_torch_prefix}")
    message(STATUS "medcl: LibTorch from Python torch at ${_medcl_py_torch_prefix}")
  endif()

  # Caffe2's config may look for CUDA; a failure there is reported by find_package itself.
  find_package(Torch QUIET CONFIG)
  if(NOT Torch_FOUND)
    _medcl_torch_missing_message(_medcl_msg)
    message(FATAL_ERROR "${_medcl_msg}")
  endif()
  if(NOT DEFINED Torch_VERSION OR Torch_VERSION STREQUAL "")
    message(WARNING "medcl: LibTorch found at ${Torch_DIR} does not report its version; assuming it is supported")
  elseif(Torch_VERSION VERSION_LESS MEDCL_MIN_TORCH_VERSION)
    message(FATAL_ERROR "medcl needs LibTorch >= ${MEDCL_MIN_TORCH_VERSION}, but the LibTorch at ${Torch_DIR} is version ${Torch_VERSION}. "
                        "Install a newer one (Debian 12: apt-get install libtorch-dev) or point Torch_DIR / CMAKE_PREFIX_PATH at one.")
  endif()
  message(STATUS "medcl: LibTorch ${Torch_VERSION} (${Torch_DIR})")
  # Under add_subdirectory, torch's imported targets (torch -> torch_cpu, c10, ...) are visible
  # only in this directory; the parent project links medcl, whose interface names them.
  if(NOT MEDCL_TOP_LEVEL)
    medcl_promote_imported_targets()
  endif()
endmacro()

function(medcl_promote_imported_targets)
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.21)
    get_property(_targets DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  else()
    set(_targets torch torch_cpu torch_cuda c10 c10_cuda torch_library torch_cpu_library
                 torch_cuda_library caffe2::mkl caffe2::cudart caffe2::cuda caffe2::nvrtc)
  endif()
  foreach(_t IN LISTS _targets)
    if(TARGET ${_t})
      get_target_property(_global ${_t} IMPORTED_GLOBAL)
      if(NOT _global)
        set_target_properties(${_t} PROPERTIES IMPORTED_GLOBAL TRUE)
      endif()
    endif()
  endforeach()
endfunction()
