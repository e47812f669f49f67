#include "support.h"

#include <medcl/augment/tabular.h>

#include "catch.h"

#include <memory>

using medcl_test::Contains;
using namespace medcl::augment;

namespace {

Batch ehr(int64_t b = 200, int64_t f = 30) {
  torch::manual_seed(71);
  auto x = torch::randn({b, f});
  auto observed = torch::rand({b, f}).gt(0.3); // 30% missing
  return {x.masked_fill(observed.logical_not(), 0.0), observed};
}

Batch run(Modality m, const TransformPtr& t, const Batch& b, uint64_t seed) {
  return Policy(m, t, seed).views(b, 1)[0];
}

} // namespace

TEST_CASE(
    "FeatureMask hides a fraction p of observed values and never un-hides missing ones",
    "[augment][tabular]") {
  auto b = ehr();
  auto out = run(Modality::Tabular, std::make_shared<FeatureMask>(0.25), b, 1);
  REQUIRE(out.values.sizes() == b.values.sizes());
  REQUIRE(out.mask.scalar_type() == torch::kBool);
  // Missing stays missing.
  REQUIRE_FALSE(out.mask.logical_and(b.mask.logical_not()).any().item<bool>());
  // Among observed values, a fraction 0.25 is hidden, and hidden values are zero.
  auto hidden = b.mask.logical_and(out.mask.logical_not());
  const double frac = hidden.sum().item<double>() / b.mask.sum().item<double>();
  REQUIRE(frac == Approx(0.25).margin(0.03));
  REQUIRE(out.values.masked_select(hidden).abs().max().item<double>() == 0.0);
  // Kept values are untouched.
  REQUIRE(out.values.masked_select(out.mask).equal(b.values.masked_select(out.mask)));
  REQUIRE(run(Modality::Tabular, std::make_shared<FeatureMask>(0.25), b, 1).mask.equal(out.mask));
  REQUIRE_FALSE(
      run(Modality::Tabular, std::make_shared<FeatureMask>(0.25), b, 2).mask.equal(out.mask));
}

TEST_CASE(
    "FeatureNoise is scaled per feature and leaves missing values alone",
    "[augment][tabular]") {
  auto b = ehr(4000, 3);
  auto sd = torch::tensor({0.1, 1.0, 3.0});
  auto out = run(Modality::Tabular, std::make_shared<FeatureNoise>(sd, 0.5), b, 3);
  auto d = out.values - b.values;
  for (int64_t f = 0; f < 3; ++f) {
    auto df = d.select(1, f).masked_select(b.mask.select(1, f));
    REQUIRE(df.std().item<double>() == Approx(0.5 * sd[f].item<double>()).epsilon(0.05));
  }
  REQUIRE(d.masked_select(b.mask.logical_not()).abs().max().item<double>() == 0.0);
  REQUIRE_THROWS_WITH(
      run(Modality::Tabular, std::make_shared<FeatureNoise>(sd, 0.5), ehr(4, 5), 1),
      Contains("built for 3 features, the batch has 5"));
}

TEST_CASE("omics transforms: dropout, thinning, library size, log noise", "[augment][omics]") {
  torch::manual_seed(72);
  auto counts = torch::poisson(torch::full({300, 50}, 20.0));
  Batch b{counts, {}};
  auto drop = run(Modality::Omics, std::make_shared<GeneDropout>(0.2), b, 1).values;
  const double zero_new =
      drop.eq(0).logical_and(counts.ne(0)).sum().item<double>() / counts.ne(0).sum().item<double>();
  REQUIRE(zero_new == Approx(0.2).margin(0.02));
  auto thin = run(Modality::Omics, std::make_shared<BinomialThinning>(0.5, 0.5), b, 1).values;
  REQUIRE(thin.eq(thin.round()).all().item<bool>());
  REQUIRE(thin.le(counts).all().item<bool>());
  REQUIRE(thin.sum().item<double>() / counts.sum().item<double>() == Approx(0.5).margin(0.01));
  auto lib = run(Modality::Omics, std::make_shared<LibrarySizeScale>(0.5, 2.0), b, 1).values;
  auto ratio = lib.sum(1) / counts.sum(1);
  REQUIRE(ratio.min().item<double>() >= 0.5 - 1e-5);
  REQUIRE(ratio.max().item<double>() <= 2.0 + 1e-5);
  REQUIRE(
      (lib / counts.clamp_min(1)).masked_select(counts.gt(0)).std().item<double>() >
      0.1); // differs per sample
  auto logx = torch::log1p(counts);
  auto noisy =
      run(Modality::Omics, std::make_shared<LogExpressionNoise>(0.3), {logx, {}}, 1).values;
  REQUIRE((noisy - logx).std().item<double>() == Approx(0.3).epsilon(0.03));
  REQUIRE_THROWS_WITH(
      run(Modality::Omics, std::make_shared<BinomialThinning>(0.5, 0.9), {logx + 0.5, {}}, 1),
      Contains("non-negative integer counts"));
  REQUIRE_THROWS_WITH(
      Policy(Modality::Tabular, std::make_shared<GeneDropout>(0.1), 1),
      Contains("not valid for modality 'tabular'"));
  REQUIRE_THROWS_WITH(
      run(Modality::Omics, std::make_shared<GeneDropout>(0.1), {torch::randn({3, 4, 5}), {}}, 1),
      Contains("omics batch has layout [B, features]"));
  REQUIRE_THROWS_WITH(GeneDropout(-0.1), Contains("p must be in [0, 1]"));
}

TEST_CASE("FeatureNoise names what was wrong with its feature spread", "[augment][errors]") {
  REQUIRE_THROWS_WITH(
      FeatureNoise(torch::ones({2, 3}), 0.1), Contains("feature_sd must be 1-D [F], got [2, 3]"));
  REQUIRE_THROWS_WITH(
      FeatureNoise(torch::tensor({0.5, -2.0}), 0.1),
      Contains("feature_sd must be finite and >= 0, got minimum -2"));
}
