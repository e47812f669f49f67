#pragma once

#include <c10/core/Device.h>

#include <string>

namespace medcl {

/// What a result depends on besides the code: library versions and the compute available.
/// Reports and benchmarks print it so that every number names its machine.
///
/// Example:
///   std::cout << medcl::runtime_info().summary() << '\n';
struct RuntimeInfo {
  /// medcl's version, e.g. "0.1.0".
  std::string medcl_version;
  /// LibTorch's version, e.g. "1.13.0" or "2.11.0".
  std::string torch_version;
  /// Whether this LibTorch was built with CUDA (its build settings say USE_CUDA), device or not.
  bool cuda_built = false;
  /// The CUDA version LibTorch was built against, e.g. "12.4"; empty without CUDA.
  std::string cuda_runtime;
  /// Whether this LibTorch was built with NCCL (collectives between CUDA devices).
  bool nccl_built = false;
  /// Whether this LibTorch was built with CUDA and a device is visible.
  bool cuda_available = false;
  /// Number of visible CUDA devices (0 without CUDA).
  int cuda_device_count = 0;
  /// Intra-op CPU threads LibTorch uses.
  int cpu_threads = 0;
  /// Compiler that built medcl, e.g. "GNU 12.2.0".
  std::string compiler;

  /// One line: "medcl 0.1.0, LibTorch 1.13.0 (CPU only), CPU threads 2, CUDA: none, GNU 12.2.0",
  /// or "medcl 0.1.0, LibTorch 2.6.0 (CUDA 12.4, NCCL), CPU threads 16, CUDA: 1 device(s),
  /// GNU 14.2.0".
  std::string summary() const;
};

/// Collects RuntimeInfo for the running process (the build facts from `at::show_config()`).
RuntimeInfo runtime_info();

/// The device named by `spec`: "cpu", "cuda" (device 0), "cuda:N", or "auto" (CUDA device 0
/// when this LibTorch has CUDA and a device is visible, else the CPU). Checked against this
/// LibTorch and this machine, so that asking for CUDA fails here with medcl's words instead of
/// later in LibTorch's dispatcher: a LibTorch built without CUDA (it names the version and says
/// how to get a CUDA build), no visible device, an index beyond the visible devices, an unknown
/// name.
///
/// Example:
///   const auto device = medcl::resolve_device(argc > 1 ? argv[1] : "auto");
///   method.to(device);
c10::Device resolve_device(const std::string& spec);

/// Makes the C library keep the memory this process frees, for the next allocation, instead of
/// handing large blocks back to the kernel and faulting them in again (zeroed) at the next step.
/// A training loop on the CPU allocates and frees the same large tensors every step; with glibc's
/// defaults each one above its threshold is an mmap and a munmap, which costs more in a process
/// with other threads (Gloo's, LibTorch's pool): on this project's 2-vCPU VM it made a small
/// convolutional encoder's step 22% shorter and removed a forward slow-down of 50% or more on 2
/// ranks (docs/distributed.md). The process's memory then stays at its peak. Call it once, early,
/// from the program (a library should not): it changes the whole process. Same as the environment
/// `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...` of glibc. Returns whether it could: false where
/// the C library is not glibc (use jemalloc or tcmalloc there).
bool keep_freed_memory();

namespace detail {
/// Fills the build facts of `info` (cuda_built, cuda_runtime, nccl_built) from the text of
/// `at::show_config()`; exposed for tests.
void parse_torch_config(const std::string& config, RuntimeInfo& info);
} // namespace detail

} // namespace medcl
