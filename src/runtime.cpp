#include <medcl/core/runtime.h>
#include <medcl/version.h>

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <fmt/format.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <limits>

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

// The value of `KEY=value` in show_config()'s build settings (values end at a comma), or "".
std::string build_setting(const std::string& config, const std::string& key) {
  const std::string needle = key + "=";
  for (size_t at = config.find(needle); at != std::string::npos; at = config.find(needle, at + 1)) {
    // A whole key: at the start, or after a space or a comma.
    if (at == 0 || config[at - 1] == ' ' || config[at - 1] == ',') {
      const size_t begin = at + needle.size();
      const size_t end = config.find_first_of(",\n", begin);
      return config.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    }
  }
  return "";
}

bool setting_on(const std::string& value) {
  return value == "ON" || value == "1" || value == "TRUE" || value == "True" || value == "true";
}

} // namespace

namespace detail {

void parse_torch_config(const std::string& config, RuntimeInfo& info) {
  info.cuda_built = setting_on(build_setting(config, "USE_CUDA"));
  info.nccl_built = setting_on(build_setting(config, "USE_NCCL"));
  // The build settings name the CUDA version whether or not a device is visible; the "CUDA
  // Runtime" line is printed only when one is.
  info.cuda_runtime = info.cuda_built ? build_setting(config, "CUDA_VERSION") : std::string();
  const std::string runtime = "CUDA Runtime ";
  const size_t at = config.find(runtime);
  if (info.cuda_built && info.cuda_runtime.empty() && at != std::string::npos) {
    const size_t begin = at + runtime.size();
    const size_t end = config.find_first_not_of("0123456789.", begin);
    info.cuda_runtime =
        config.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  }
}

} // namespace detail

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.medcl_version = version();
  info.torch_version =
      fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
  detail::parse_torch_config(at::show_config(), info);
  info.cuda_available = torch::cuda::is_available();
  info.cuda_device_count = info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0;
  info.cpu_threads = at::get_num_threads();
  info.compiler = compiler_name();
  return info;
}

bool keep_freed_memory() {
#if defined(__GLIBC__)
  // No mmap for large blocks (their free would unmap them), no trimming of the heap's top, and
  // room to grow it without a system call each step.
  return ::mallopt(M_MMAP_MAX, 0) == 1 &&
      ::mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1 &&
      ::mallopt(M_TOP_PAD, 64 << 20) == 1;
#else
  return false;
#endif
}

c10::Device resolve_device(const std::string& spec) {
  constexpr const char* fn = "resolve_device";
  if (spec == "cpu") {
    return c10::Device(c10::kCPU);
  }
  const RuntimeInfo info = runtime_info();
  if (spec == "auto") {
    return info.cuda_available ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  int64_t index = 0;
  if (spec == "cuda") {
    index = 0;
  } else if (
      spec.rfind("cuda:", 0) == 0 && spec.size() > 5 &&
      spec.find_first_not_of("0123456789", 5) == std::string::npos && spec.size() <= 9) {
    index = std::stoll(spec.substr(5));
  } else {
    TORCH_CHECK(
        false,
        fn,
        ": unknown device '",
        spec,
        "'; expected \"cpu\", \"cuda\", \"cuda:N\" or \"auto\"");
  }
  TORCH_CHECK(
      info.cuda_built,
      fn,
      ": '",
      spec,
      "' asked for, but this LibTorch (",
      info.torch_version,
      ") was built without CUDA. Use a CUDA build (pytorch.org's CUDA zip, pip's torch with CUDA, "
      "Debian 13's libtorch-cuda-dev) or run on \"cpu\"");
  TORCH_CHECK(
      info.cuda_device_count > 0,
      fn,
      ": '",
      spec,
      "' asked for; this LibTorch has CUDA ",
      info.cuda_runtime,
      " but sees no CUDA device (driver missing, CUDA_VISIBLE_DEVICES empty?)");
  TORCH_CHECK(
      index < info.cuda_device_count,
      fn,
      ": '",
      spec,
      "' asked for, but only ",
      info.cuda_device_count,
      " CUDA device(s) are visible (cuda:0 to cuda:",
      info.cuda_device_count - 1,
      ")");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::string RuntimeInfo::summary() const {
  return fmt::format(
      "medcl {}, LibTorch {} ({}), CPU threads {}, CUDA: {}, {}",
      medcl_version,
      torch_version,
      cuda_built ? fmt::format(
                       "CUDA {}, {}",
                       cuda_runtime.empty() ? std::string("runtime unknown") : cuda_runtime,
                       nccl_built ? "NCCL" : "no NCCL")
                 : std::string("CPU only"),
      cpu_threads,
      cuda_available ? fmt::format("{} device(s)", cuda_device_count) : std::string("none"),
      compiler);
}

} // namespace medcl
