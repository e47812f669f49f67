#pragma once

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
  /// Whether this LibTorch was built with CUDA and a device is visible.
  bool cuda_available = false;
  /// Number of visible CUDA devices (0 without CUDA).
  int cuda_device_count = 0;
  /// Intra-op CPU threads LibTorch uses.
  int cpu_threads = 0;
  /// Compiler that built medcl, e.g. "GNU 12.2.0".
  std::string compiler;

  /// One line: "medcl 0.1.0, LibTorch 1.13.0, CPU threads 2, CUDA: none, GNU 12.2.0".
  std::string summary() const;
};

/// Collects RuntimeInfo for the running process.
RuntimeInfo runtime_info();

} // namespace medcl
