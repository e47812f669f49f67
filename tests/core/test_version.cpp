#include <medcl/core/checks.h>
#include <medcl/core/runtime.h>
#include <medcl/version.h>

#include <torch/cuda.h>

#include "catch.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <limits>
#include <string>

TEST_CASE("version() matches the generated header", "[core]") {
  REQUIRE(std::string(medcl::version()) == MEDCL_VERSION_STRING);
  const std::string expected = std::to_string(MEDCL_VERSION_MAJOR) + "." +
      std::to_string(MEDCL_VERSION_MINOR) + "." + std::to_string(MEDCL_VERSION_PATCH);
  REQUIRE(std::string(medcl::version()) == expected);
}

TEST_CASE("runtime_info() names versions and threads", "[core]") {
  const auto info = medcl::runtime_info();
  REQUIRE(info.medcl_version == medcl::version());
  REQUIRE(info.torch_version.find('.') != std::string::npos);
  REQUIRE(info.cpu_threads >= 1);
  // Devices are counted when CUDA is available, as LibTorch counts them, and only then.
  REQUIRE(info.cuda_available == torch::cuda::is_available());
  REQUIRE(
      info.cuda_device_count ==
      (info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0));
  REQUIRE((info.cuda_device_count > 0) == info.cuda_available);
  const auto line = info.summary();
  REQUIRE(line.find("medcl " + info.medcl_version) != std::string::npos);
  REQUIRE(line.find("LibTorch " + info.torch_version) != std::string::npos);
  REQUIRE(line.find(info.compiler) != std::string::npos);
  const std::string devices = info.cuda_available
      ? "CUDA: " + std::to_string(info.cuda_device_count) + " device(s)"
      : std::string("CUDA: none");
  REQUIRE(line.find(devices) != std::string::npos);
}

TEST_CASE("runtime_info() says what LibTorch was built with, as its CMake package does", "[core]") {
  const auto info = medcl::runtime_info();
  // tests/CMakeLists.txt defines this where LibTorch's CMake package has CUDA targets.
#ifdef MEDCL_TEST_TORCH_CUDA
  CHECK(info.cuda_built);
  CHECK_FALSE(info.cuda_runtime.empty());
  CHECK(info.summary().find("(CUDA " + info.cuda_runtime) != std::string::npos);
#else
  CHECK_FALSE(info.cuda_built);
  CHECK(info.cuda_runtime.empty());
  CHECK_FALSE(info.nccl_built);
  CHECK_FALSE(info.cuda_available);
  CHECK(info.summary().find("(CPU only)") != std::string::npos);
#endif
  if (info.cuda_available) {
    CHECK(info.cuda_built);
  }
}

TEST_CASE("parse_torch_config reads CUDA and NCCL from LibTorch's build settings", "[core]") {
  medcl::RuntimeInfo info;
  // As LibTorch 1.13 (Debian 12) prints it, CPU only.
  medcl::detail::parse_torch_config(
      "PyTorch built with:\n  - GCC 12.2\n  - Build settings: BLAS_INFO=generic, "
      "CXX_FLAGS=-DUSE_PTHREADPOOL -DUSE_CUDA_FAKE=1, TORCH_VERSION=1.13.0, USE_CUDA=OFF, "
      "USE_CUDNN=OFF, USE_NCCL=OFF, USE_OPENMP=ON, \n",
      info);
  CHECK_FALSE(info.cuda_built);
  CHECK_FALSE(info.nccl_built);
  CHECK(info.cuda_runtime.empty());
  // As a CUDA build prints it (pip's torch writes 1 for NCCL, ON for CUDA).
  medcl::detail::parse_torch_config(
      "PyTorch built with:\n  - GCC 13.3\n  - CUDA Runtime 12.4\n  - NVCC architecture flags: "
      "-gencode;arch=compute_90,code=sm_90\n  - CuDNN 9.1\n  - Build settings: BLAS_INFO=mkl, "
      "CUDA_VERSION=12.4, TORCH_VERSION=2.6.0, USE_CUDA=ON, USE_CUDNN=ON, USE_NCCL=1, \n",
      info);
  CHECK(info.cuda_built);
  CHECK(info.nccl_built);
  CHECK(info.cuda_runtime == "12.4");
  // Without a visible device LibTorch prints no "CUDA Runtime" line; the build settings still
  // name the version. Without CUDA_VERSION, the runtime line is read.
  medcl::detail::parse_torch_config(
      "PyTorch built with:\n  - Build settings: CUDA_VERSION=12.8, USE_CUDA=ON, USE_NCCL=ON, \n",
      info);
  CHECK(info.cuda_runtime == "12.8");
  medcl::detail::parse_torch_config(
      "PyTorch built with:\n  - CUDA Runtime 11.8\n  - Build settings: USE_CUDA=1, \n", info);
  CHECK(info.cuda_built);
  CHECK_FALSE(info.nccl_built);
  CHECK(info.cuda_runtime == "11.8");
  // A key is matched whole: NO_USE_CUDA=ON is not USE_CUDA.
  medcl::detail::parse_torch_config("Build settings: NO_USE_CUDA=ON, USE_NCCL=0", info);
  CHECK_FALSE(info.cuda_built);
  CHECK_FALSE(info.nccl_built);
  CHECK(info.cuda_runtime.empty());
}

TEST_CASE("all_finite finds NaN and infinities, and is not fooled by overflow", "[core]") {
  using medcl::detail::all_finite;
  const float inf = std::numeric_limits<float>::infinity();
  auto x = at::randn({64, 33});
  REQUIRE(all_finite(x));
  // Finite values whose sum overflows float: the element-wise test decides.
  REQUIRE(all_finite(at::full({4, 4}, 3e38f)));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), inf, -inf}) {
    auto y = x.clone();
    y[63][32] = bad;
    REQUIRE_FALSE(all_finite(y));
    REQUIRE_FALSE(all_finite(y.to(at::kDouble)));
    REQUIRE_FALSE(all_finite(y.to(at::kBFloat16)));
    REQUIRE_FALSE(all_finite(y.t())); // not contiguous
  }
  // +inf and -inf together sum to NaN; a NaN among huge values too.
  auto both = at::zeros({3});
  both[0] = inf;
  both[1] = -inf;
  REQUIRE_FALSE(all_finite(both));
  // Nothing to test, or nothing that can be non-finite.
  REQUIRE(all_finite(at::empty({0, 5})));
  REQUIRE(all_finite(at::arange(10)));
  REQUIRE_THROWS_WITH(
      medcl::detail::check_finite("f", "z", both),
      medcl_test::Contains("f: z contains NaN or Inf"));
}

TEST_CASE("resolve_device names what is missing when CUDA is asked for", "[core]") {
  using medcl_test::Contains;
  const auto info = medcl::runtime_info();
  CHECK(medcl::resolve_device("cpu") == c10::Device(c10::kCPU));
  CHECK(
      medcl::resolve_device("auto") ==
      (info.cuda_available ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU)));
  CHECK_THROWS_WITH(
      medcl::resolve_device("gpu"),
      Contains("unknown device 'gpu'; expected \"cpu\", \"cuda\", \"cuda:N\" or \"auto\""));
  CHECK_THROWS_WITH(medcl::resolve_device("cuda:x"), Contains("unknown device 'cuda:x'"));
  if (!info.cuda_built) {
    CHECK_THROWS_WITH(
        medcl::resolve_device("cuda"),
        Contains(
            "'cuda' asked for, but this LibTorch (" + info.torch_version +
            ") was built without CUDA"));
  } else if (info.cuda_device_count == 0) {
    CHECK_THROWS_WITH(medcl::resolve_device("cuda:0"), Contains("sees no CUDA device"));
  } else {
    CHECK(medcl::resolve_device("cuda") == c10::Device(c10::kCUDA, 0));
    CHECK_THROWS_WITH(
        medcl::resolve_device("cuda:" + std::to_string(info.cuda_device_count)),
        Contains("only " + std::to_string(info.cuda_device_count) + " CUDA device(s) are visible"));
  }
}

TEST_CASE("keep_freed_memory() keeps large blocks in the heap", "[core]") {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  // With glibc's defaults a 64 MiB tensor is an mmap of its own; afterwards it comes from the
  // heap, and stays there once freed.
  const auto mapped_before = ::mallinfo2().hblkhd;
  {
    auto t = torch::empty({16 << 20}, torch::kFloat);
    REQUIRE(::mallinfo2().hblkhd >= mapped_before + (64u << 20));
  }
  REQUIRE(medcl::keep_freed_memory());
  const auto heap_before = ::mallinfo2().arena;
  {
    auto t = torch::empty({16 << 20}, torch::kFloat);
    CHECK(::mallinfo2().hblkhd < mapped_before + (64u << 20));
    CHECK(::mallinfo2().arena >= heap_before + (64u << 20));
  }
  CHECK(::mallinfo2().arena >= heap_before + (64u << 20));
#elif defined(__GLIBC__)
  REQUIRE(medcl::keep_freed_memory());
#else
  REQUIRE_FALSE(medcl::keep_freed_memory());
#endif
}
