#include "augment/catalogue.h"
#include "support.h"

#include <medcl/augment/image.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>

#include "catch.h"

#include <limits>
#include <memory>
#include <string>
#include <vector>

using medcl_test::Contains;
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

TEST_CASE("a large batch goes through in chunks, stitched back in order", "[augment]") {
  // 200 records of 3 x 1000 values: chunks of 87, 87 and 26 records.
  REQUIRE(200 * 3 * 1000 > Policy::kChunkElements);
  auto eeg = torch::randn({200, 3, 1000});
  Policy reverse(Modality::EEG, std::make_shared<TimeReversal>(), 1, {"time_reversal"});
  for (const auto& v : reverse.views({eeg, {}, {}}, 2)) {
    REQUIRE(v.values.equal(eeg.flip({2})));
  }
  // A transform that changes the record's length: every output row is a window of its own input
  // row (values encode row and time, so a row out of place is seen).
  const int64_t n = 300, t = 1000, w = 500;
  auto ecg = (torch::arange(n).view({n, 1, 1}) * 10000 + torch::arange(t).view({1, 1, t}))
                 .expand({n, 12, t})
                 .to(torch::kFloat)
                 .contiguous();
  auto crop = Policy(Modality::ECG, std::make_shared<RandomCrop>(w), 3).views({ecg, {}, {}}, 1)[0];
  REQUIRE(crop.values.sizes() == torch::IntArrayRef({n, 12, w}));
  auto start = crop.values.select(2, 0).select(1, 0) - torch::arange(n).to(torch::kFloat) * 10000;
  REQUIRE(start.min().item<double>() >= 0);
  REQUIRE(start.max().item<double>() <= t - w);
  auto expected = ecg.select(1, 0).select(1, 0).view({n, 1, 1}) + start.view({n, 1, 1}) +
      torch::arange(w).to(torch::kFloat).view({1, 1, w});
  REQUIRE(crop.values.equal(expected.expand({n, 12, w})));
  REQUIRE(std::get<0>(torch::_unique(start)).numel() > 50); // each record its own window
  // Masks and visit times come back with their rows: each record's times move by one offset.
  const int64_t b = 20000;
  auto mask = torch::rand({b, 5, 3}).gt(0.3);
  auto times =
      (torch::arange(b).view({b, 1}) * 100 + torch::arange(5).view({1, 5})).to(torch::kDouble);
  Batch visits{torch::randn({b, 5, 3}).masked_fill(mask.logical_not(), 0.0), mask, times};
  auto shifted = Policy(Modality::Visits, std::make_shared<TimeShift>(10.0), 4).views(visits, 1)[0];
  REQUIRE(shifted.mask.equal(mask));
  REQUIRE(shifted.values.equal(visits.values));
  auto offset = shifted.times - times;
  REQUIRE(shifted.times.scalar_type() == torch::kDouble);
  REQUIRE((offset - offset.select(1, 0).unsqueeze(1)).abs().max().item<double>() < 1e-9);
  REQUIRE(offset.abs().max().item<double>() <= 10.0 + 1e-9);
}
