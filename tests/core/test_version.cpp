#include <medcl/core/checks.h>
#include <medcl/core/runtime.h>
#include <medcl/version.h>

#include <catch2/catch.hpp>

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
  REQUIRE(info.cuda_device_count >= 0);
  const auto line = info.summary();
  REQUIRE(line.find("medcl " + info.medcl_version) != std::string::npos);
  REQUIRE(line.find("LibTorch " + info.torch_version) != std::string::npos);
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
      medcl::detail::check_finite("f", "z", both), Catch::Contains("f: z contains NaN or Inf"));
}
