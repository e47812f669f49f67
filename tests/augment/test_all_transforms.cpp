#include "augment/catalogue.h"
#include "support.h"

#include <medcl/augment/image.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>

#include <catch2/catch.hpp>

#include <limits>
#include <memory>
#include <string>
#include <vector>

using Catch::Contains;
using namespace medcl::augment;

TEST_CASE(
    "every transform: layout kept, seeded, varies with the seed, describes every parameter",
    "[augment]") {
  for (const auto& it : medcl_test::all_transforms()) {
    INFO(it.t->name());
    const auto in = medcl_test::transform_sample(it.m);
    auto run = [&](uint64_t seed) { return Policy(it.m, it.t, seed).views(in, 1)[0]; };
    auto a = run(1);
    REQUIRE(a.values.dim() == in.values.dim());
    REQUIRE(a.values.size(0) == in.values.size(0));
    REQUIRE(a.values.scalar_type() == in.values.scalar_type());
    REQUIRE(a.values.device() == in.values.device());
    REQUIRE(a.mask.defined() == in.mask.defined());
    REQUIRE(a.times.defined() == in.times.defined());
    if (a.values.is_floating_point()) {
      REQUIRE(torch::isfinite(a.values).all().item<bool>());
    }
    medcl_test::require_seeded(it.random, run);
    const auto json = it.t->describe_json();
    REQUIRE(json.find("\"name\": \"" + it.t->name() + "\"") != std::string::npos);
    for (const auto& kv : it.t->params()) {
      REQUIRE(json.find("\"" + kv.first + "\": \"" + kv.second + "\"") != std::string::npos);
    }
    REQUIRE_FALSE(it.t->invariances().empty());
  }
}

TEST_CASE("NaN input is refused naming the policy's transform", "[augment][errors]") {
  auto x = torch::randn({2, 3, 50});
  x[1][2][3] = std::nan("");
  REQUIRE_THROWS_WITH(
      Policy(Modality::ECG, std::make_shared<GaussianJitter>(0.1), 1).views({x, {}, {}}, 1),
      Contains("transform 'gaussian_jitter'") && Contains("contains NaN"));
  // Found next to infinities and in the last value of a batch processed in several chunks;
  // infinities alone are not NaN.
  auto big = torch::zeros({40, 12, 1000});
  big[0][0][0] = std::numeric_limits<float>::infinity();
  big[1][0][0] = -std::numeric_limits<float>::infinity();
  Policy amp(Modality::ECG, std::make_shared<AmplitudeScale>(0.9, 1.1), 1);
  REQUIRE_NOTHROW(amp.views({big, {}, {}}, 1));
  big[39][11][999] = std::nan("");
  REQUIRE_THROWS_WITH(amp.views({big, {}, {}}, 1), Contains("contains NaN"));
  REQUIRE_THROWS_WITH(amp.views({big.to(torch::kDouble), {}, {}}, 1), Contains("contains NaN"));
}
