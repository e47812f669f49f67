# medcl::dist: process groups on LibTorch's c10d with the Gloo backend (src/dist/).
#
# MEDCL_DIST: AUTO (default: on when LibTorch has c10d's Gloo headers and Gloo's own headers and
# library are found), ON (the same, but missing pieces are an error), OFF. Without it, the
# one-process group still works and the rest throws "built without medcl::dist".
#
# LibTorch's ProcessGroupGloo.hpp includes <gloo/...> (Debian: libgloo-dev, of the same release
# as libtorch-dev) and compiles its content only under USE_C10D_GLOO, which TorchConfig.cmake does
# not define: it is defined here, for src/dist/ only (medcl's public headers do not include c10d).
# libtorch_cpu links libgloo itself, but the Gloo classes that c10d's headers define inline refer
# to libgloo directly, so medcl links it too (MedclGloo::gloo, from FindMedclGloo.cmake).
set(MEDCL_DIST AUTO CACHE STRING "medcl::dist on c10d/Gloo: AUTO, ON or OFF")
set_property(CACHE MEDCL_DIST PROPERTY STRINGS AUTO ON OFF)

function(medcl_configure_dist target)
  set(MEDCL_WITH_DIST OFF PARENT_SCOPE)
  string(TOUPPER "${MEDCL_DIST}" _mode)
  if(_mode STREQUAL "OFF")
    message(STATUS "medcl: distributed (medcl::dist) OFF (MEDCL_DIST=OFF)")
    return()
  endif()

  set(_why "")
  find_path(MEDCL_C10D_GLOO_HEADER torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
    HINTS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
  if(NOT MEDCL_C10D_GLOO_HEADER)
    set(_why "LibTorch at ${Torch_DIR} has no c10d/ProcessGroupGloo.hpp (built without distributed)")
  else()
    find_package(MedclGloo QUIET)
    if(NOT MedclGloo_FOUND)
      set(_why "Gloo's headers or library (gloo/config.h, libgloo) are missing: install libgloo-dev")
    endif()
  endif()

  if(NOT _why STREQUAL "")
    if(_mode STREQUAL "ON")
      message(FATAL_ERROR "medcl: MEDCL_DIST=ON, but ${_why}")
    endif()
    message(STATUS "medcl: distributed (medcl::dist) OFF: ${_why}")
    return()
  endif()

  target_link_libraries(${target} PRIVATE MedclGloo::gloo)
  set_property(SOURCE src/dist/process_group.cpp src/dist/gather.cpp APPEND PROPERTY
    COMPILE_DEFINITIONS MEDCL_HAVE_DIST=1 USE_C10D_GLOO=1)
  if(NOT MEDCL_TOP_LEVEL)
    set_target_properties(MedclGloo::gloo PROPERTIES IMPORTED_GLOBAL TRUE)
  endif()
  message(STATUS "medcl: distributed (medcl::dist) ON: c10d Gloo, ${MedclGloo_LIBRARY}")
  set(MEDCL_WITH_DIST ON PARENT_SCOPE)

  # NCCL for CUDA tensors: a LibTorch with CUDA (c10_cuda) whose c10d has ProcessGroupNCCL.hpp,
  # and NCCL's header and library (Debian: libnccl-dev, contrib/non-free). Its content is compiled
  # only under USE_C10D_NCCL, which TorchConfig.cmake does not define either.
  set(MEDCL_WITH_NCCL OFF PARENT_SCOPE)
  set(_nccl_why "")
  if(NOT TARGET c10_cuda)
    set(_nccl_why "LibTorch without CUDA")
  else()
    find_path(MEDCL_C10D_NCCL_HEADER torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp
      HINTS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
    find_path(MEDCL_NCCL_INCLUDE_DIR nccl.h HINTS ${TORCH_INCLUDE_DIRS} $ENV{CUDA_HOME}/include)
    find_library(MEDCL_NCCL_LIBRARY nccl HINTS $ENV{CUDA_HOME}/lib64)
    if(NOT MEDCL_C10D_NCCL_HEADER)
      set(_nccl_why "LibTorch's c10d has no ProcessGroupNCCL.hpp")
    elseif(NOT MEDCL_NCCL_INCLUDE_DIR OR NOT MEDCL_NCCL_LIBRARY)
      set(_nccl_why "nccl.h or libnccl not found (Debian: libnccl-dev)")
    endif()
  endif()
  if(_nccl_why STREQUAL "")
    target_include_directories(${target} PRIVATE ${MEDCL_NCCL_INCLUDE_DIR})
    target_link_libraries(${target} PRIVATE ${MEDCL_NCCL_LIBRARY} c10_cuda)
    set_property(SOURCE src/dist/process_group.cpp APPEND PROPERTY
      COMPILE_DEFINITIONS MEDCL_HAVE_NCCL=1 USE_C10D_NCCL=1)
    message(STATUS "medcl: NCCL for CUDA tensors ON: ${MEDCL_NCCL_LIBRARY}")
    set(MEDCL_WITH_NCCL ON PARENT_SCOPE)
  else()
    message(STATUS "medcl: NCCL for CUDA tensors OFF: ${_nccl_why}")
  endif()
endfunction()
