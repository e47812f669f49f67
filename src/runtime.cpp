#include <medcl/core/runtime.h>
#include <medcl/version.h>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <fmt/format.h>

namespace medcl {

namespace {

std::string compiler_name() {
#if defined(__clang__)
  return fmt::format("Clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  return fmt::format("GNU {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
  return fmt::format("MSVC {}", _MSC_VER);
#else
  return "unknown compiler";
#endif
}

} // namespace

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.medcl_version = version();
  info.torch_version =
      fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
  info.cuda_available = torch::cuda::is_available();
  info.cuda_device_count = info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0;
  info.cpu_threads = at::get_num_threads();
  info.compiler = compiler_name();
  return info;
}

std::string RuntimeInfo::summary() const {
  return fmt::format(
      "medcl {}, LibTorch {}, CPU threads {}, CUDA: {}, {}",
      medcl_version,
      torch_version,
      cpu_threads,
      cuda_available ? fmt::format("{} device(s)", cuda_device_count) : std::string("none"),
      compiler);
}

} // namespace medcl
