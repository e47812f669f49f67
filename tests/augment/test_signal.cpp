#include "support.h"

#include <medcl/augment/signal.h>

#include "catch.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

using medcl_test::Contains;
using namespace medcl::augment;
using medcl_test::rel_err;

namespace {

Batch ecg(int64_t b = 8, int64_t leads = 12, int64_t t = 1000) {
  torch::manual_seed(61);
  return {torch::randn({b, leads, t}), {}};
}

std::vector<TransformPtr> all_signal_transforms() {
  return {
      std::make_shared<AmplitudeScale>(0.5, 2.0),
      std::make_shared<GaussianJitter>(0.1),
      std::make_shared<BaselineWander>(0.5, 0.5, 500),
      std::make_shared<PowerlineInterference>(50, 0.2, 500),
      std::make_shared<RandomCrop>(250),
      std::make_shared<TimeMask>(0.3),
      std::make_shared<LeadDropout>(0.3),
      std::make_shared<TimeWarp>(0.1)};
}

Batch view_of(const TransformPtr& t, const Batch& b, uint64_t seed, Modality m = Modality::ECG) {
  Policy p(m, t, seed);
  return p.views(b, 1)[0];
}

} // namespace

TEST_CASE(
    "signal transforms keep dtype and device, are seeded and differ across seeds",
    "[augment][signal]") {
  auto b = ecg();
  for (const auto& t : all_signal_transforms()) {
    INFO(t->name());
    auto v1 = view_of(t, b, 1);
    auto v1b = view_of(t, b, 1);
    auto v2 = view_of(t, b, 2);
    REQUIRE(v1.values.scalar_type() == b.values.scalar_type());
    REQUIRE(v1.values.device() == b.values.device());
    REQUIRE(v1.values.size(0) == 8);
    REQUIRE(v1.values.size(1) == 12);
    REQUIRE(v1.values.size(2) == (t->name() == "random_crop" ? 250 : 1000));
    REQUIRE(torch::isfinite(v1.values).all().item<bool>());
    REQUIRE(v1.values.equal(v1b.values));
    REQUIRE_FALSE(v1.values.equal(v2.values));
    // Two views from one policy differ too.
    Policy p(Modality::ECG, t, 3);
    auto views = p.views(b, 2);
    REQUIRE_FALSE(views[0].values.equal(views[1].values));
  }
}

TEST_CASE("signal transforms deliver the statistics they promise", "[augment][signal]") {
  auto b = ecg(64, 12, 2000);
  const auto& x = b.values;
  // Jitter: the added noise has the requested variance and zero mean.
  auto d = view_of(std::make_shared<GaussianJitter>(0.25), b, 5).values - x;
  REQUIRE(d.std().item<double>() == Approx(0.25).epsilon(0.01));
  REQUIRE(std::abs(d.mean().item<double>()) < 0.002);
  // Amplitude scale: each record is x times one factor in [lo, hi].
  auto s = view_of(std::make_shared<AmplitudeScale>(0.5, 2.0), b, 5).values / x;
  auto per = s.flatten(1);
  REQUIRE((std::get<0>(per.max(1)) - std::get<0>(per.min(1))).abs().max().item<double>() < 1e-4);
  REQUIRE(per.min().item<double>() >= 0.5 - 1e-5);
  REQUIRE(per.max().item<double>() <= 2.0 + 1e-5);
  // Lead dropout: a fraction p of leads zeroed, never all leads of a record.
  auto ld = view_of(std::make_shared<LeadDropout>(0.3), b, 5).values;
  auto zero_leads = ld.abs().sum(2).eq(0);
  REQUIRE(zero_leads.to(torch::kFloat).mean().item<double>() == Approx(0.3).margin(0.05));
  REQUIRE_FALSE(zero_leads.all(1).any().item<bool>());
  auto all_drop = view_of(std::make_shared<LeadDropout>(1.0), b, 5).values;
  REQUIRE(all_drop.abs().sum(2).ne(0).sum(1).eq(1).all().item<bool>());
  // Time mask: one contiguous stretch of at most max_fraction * T, all leads alike.
  auto tm = view_of(std::make_shared<TimeMask>(0.2), b, 5).values;
  auto masked = tm.eq(0).all(1); // [B, T]
  REQUIRE(masked.sum(1).max().item<int64_t>() <= 400);
  REQUIRE(masked.sum().item<int64_t>() > 0);
  // Random crop: each window is a contiguous piece of its own record.
  auto crop = view_of(std::make_shared<RandomCrop>(300), b, 5).values;
  for (int64_t i = 0; i < 4; ++i) {
    bool found = false;
    for (int64_t s0 = 0; s0 + 300 <= 2000 && !found; ++s0) {
      found = crop[i].equal(x[i].slice(1, s0, s0 + 300));
    }
    REQUIRE(found);
  }
  // Baseline wander: the added component is slow (tiny sample-to-sample change) and bounded.
  auto bw = view_of(std::make_shared<BaselineWander>(0.5, 0.5, 500), b, 5).values - x;
  REQUIRE(bw.abs().max().item<double>() <= 0.5 + 1e-5);
  REQUIRE(
      (bw.slice(2, 1) - bw.slice(2, 0, -1)).abs().max().item<double>() <
      2 * 3.1416 * 0.5 * 0.5 / 500 + 1e-5);
  // Powerline: the added component's spectrum peaks at 50 Hz.
  auto pl = view_of(std::make_shared<PowerlineInterference>(50, 0.2, 500), b, 5).values - x;
  auto spec = at::fft_rfft(pl[0][0].to(torch::kDouble)).abs();
  const int64_t peak = spec.argmax().item<int64_t>();
  REQUIRE(peak == 50 * 2000 / 500);
  // Time warp with zero stretch is the identity; with stretch the mean is kept roughly.
  REQUIRE(rel_err(view_of(std::make_shared<TimeWarp>(0.0), b, 5).values, x) < 1e-6);
}

TEST_CASE("clinically invalid signal transforms are refused unless allowed", "[augment][signal]") {
  auto rev = std::make_shared<TimeReversal>();
  REQUIRE_THROWS_WITH(
      Policy(Modality::ECG, rev, 1),
      Contains("'time_reversal' is clinically invalid for ecg") && Contains("allow_invalid"));
  REQUIRE_NOTHROW(Policy(Modality::EEG, rev, 1));
  Policy allowed(Modality::ECG, rev, 1, {"time_reversal"});
  auto b = ecg(2, 3, 10);
  REQUIRE(allowed.views(b, 1)[0].values.equal(b.values.flip({2})));
  // Nested in a composition the refusal still applies.
  auto seq = std::make_shared<Sequence>(std::vector<TransformPtr>{
      std::make_shared<GaussianJitter>(0.1),
      std::make_shared<RandomApply>(std::make_shared<LeadPermutation>(), 0.5)});
  REQUIRE_THROWS_WITH(Policy(Modality::ECG, seq, 1), Contains("lead_permutation"));
  auto perm = Policy(Modality::EEG, std::make_shared<LeadPermutation>(), 1, {"lead_permutation"})
                  .views(b, 1)[0]
                  .values;
  REQUIRE(std::get<0>(perm.sum(2).sort(1)).allclose(std::get<0>(b.values.sum(2).sort(1))));
}

TEST_CASE("signal policies refuse bad input with clear errors", "[augment][signal][errors]") {
  Policy p(Modality::ECG, std::make_shared<GaussianJitter>(0.1), 1);
  REQUIRE_THROWS_WITH(
      p.views({torch::randn({4, 100}), {}}, 1),
      Contains("ecg batch has layout [B, leads, T]") && Contains("[4, 100]"));
  auto nan = torch::randn({2, 3, 10});
  nan[0][0][0] = std::nan("");
  REQUIRE_THROWS_WITH(p.views({nan, {}}, 1), Contains("contains NaN"));
  REQUIRE_THROWS_WITH(
      Policy(Modality::ECG, std::make_shared<RandomCrop>(50), 1)
          .views({torch::randn({2, 3, 10}), {}}, 1),
      Contains("window 50 is longer than the signal (10 samples)"));
  REQUIRE_THROWS_WITH(LeadDropout(1.5), Contains("p must be in [0, 1]"));
  REQUIRE_THROWS_WITH(
      RandomApply(std::make_shared<GaussianJitter>(0.1), -0.1), Contains("p must be in [0, 1]"));
  REQUIRE_THROWS_WITH(AmplitudeScale(2.0, 1.0), Contains("lo <= hi"));
  REQUIRE_THROWS_WITH(
      PowerlineInterference(300, 0.1, 500), Contains("frequency_hz must be in (0, fs/2)"));
  REQUIRE_THROWS_WITH(p.views({torch::randn({2, 3, 10}), {}}, 0), Contains("views must be >= 1"));
}

TEST_CASE(
    "compositions: random apply fraction, one-of, and descriptions with every parameter",
    "[augment][signal]") {
  auto b = ecg(400, 2, 50);
  auto ra = std::make_shared<RandomApply>(std::make_shared<AmplitudeScale>(2.0, 2.0), 0.3);
  auto out = Policy(Modality::ECG, ra, 9).views(b, 1)[0].values;
  auto changed = std::get<0>((out - b.values).abs().flatten(1).max(1)).gt(1e-6);
  REQUIRE(changed.to(torch::kFloat).mean().item<double>() == Approx(0.3).margin(0.06));
  auto one = std::make_shared<OneOf>(std::vector<TransformPtr>{
      std::make_shared<GaussianJitter>(0.1), std::make_shared<TimeMask>(0.1)});
  REQUIRE_NOTHROW(Policy(Modality::EEG, one, 1).views(b, 2));
  auto seq = std::make_shared<Sequence>(std::vector<TransformPtr>{
      std::make_shared<RandomCrop>(40),
      ra,
      std::make_shared<BaselineWander>(0.3, 0.4, 250),
      std::make_shared<PowerlineInterference>(60, 0.1, 250)});
  Policy policy(Modality::ECG, seq, 4);
  const medcl::Json d = policy.describe();
  CHECK(d.at("modality") == "ecg");
  CHECK(d.at("seed") == 4);
  CHECK(d.at("allow_invalid") == medcl::Json::array());
  for (const char* invariance :
       {"time shift", "amplitude scale", "baseline wander", "powerline interference"}) {
    INFO(invariance);
    const auto& inv = d.at("invariances").elements();
    CHECK(std::find(inv.begin(), inv.end(), medcl::Json(invariance)) != inv.end());
  }
  // The tree nests every transform's own description, parameters typed.
  const auto& steps = d.at("transform").at("steps");
  REQUIRE(d.at("transform").at("name") == "sequence");
  REQUIRE(steps.size() == 4);
  CHECK(steps[0].at("name") == "random_crop");
  CHECK(steps[0].at("params").at("window").is_integer());
  CHECK(steps[0].at("params").at("window") == 40);
  CHECK(steps[1].at("name") == "random_apply");
  CHECK(steps[1].at("p") == 0.3);
  CHECK(steps[1].at("transform") == ra->describe().at("transform"));
  CHECK(steps[1].at("transform").at("params").at("lo") == 2.0);
  CHECK(steps[1].at("transform").at("params").at("per_lead") == false);
  const auto& wander = steps[2].at("params");
  CHECK(wander.at("max_amplitude") == 0.3);
  CHECK(wander.at("max_frequency_hz") == 0.4);
  CHECK(wander.at("sampling_rate_hz") == 250.0);
  CHECK(steps[3].at("params").at("frequency_hz") == 60.0);
  CHECK(steps[3].at("invariances") == medcl::Json::array({"powerline interference"}));
  // The deprecated text is the same description.
  CHECK(medcl::Json::parse(policy.describe_json()) == d);
}
