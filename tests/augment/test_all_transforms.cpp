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

namespace {

struct Item {
  TransformPtr t;
  Modality m;
  bool random = true;
};

Batch sample(Modality m) {
  torch::manual_seed(101);
  switch (m) {
    case Modality::Image2D:
    case Modality::ChestRadiograph:
      return {torch::rand({4, 1, 16, 16}), {}, {}};
    case Modality::Image3D:
      return {torch::rand({2, 1, 8, 8, 8}), {}, {}};
    case Modality::ECG:
    case Modality::EEG:
      return {torch::randn({4, 3, 200}), {}, {}};
    case Modality::Tabular: {
      auto mask = torch::rand({8, 6}).gt(0.2);
      return {torch::randn({8, 6}).masked_fill(mask.logical_not(), 0.0), mask, {}};
    }
    case Modality::Visits: {
      auto mask = torch::rand({4, 5, 3}).gt(0.2);
      return {
          torch::randn({4, 5, 3}).masked_fill(mask.logical_not(), 0.0),
          mask,
          torch::arange(5).to(torch::kDouble).expand({4, 5}).contiguous()};
    }
    case Modality::Omics:
      return {torch::poisson(torch::full({4, 20}, 5.0)), {}, {}};
    case Modality::Text: {
      auto ids = torch::tensor(
          {{1, 2, 9, 3, 4, 9, 5, 6, 9, 0}, {7, 9, 8, 8, 9, 6, 9, 0, 0, 0}}, torch::kLong);
      return {ids, ids.ne(0), {}};
    }
  }
  return {};
}

std::vector<Item> everything() {
  return {
      {std::make_shared<RandomResizedCrop>(0.5), Modality::Image2D},
      {std::make_shared<IntensityWindow>(0.5, 1.0, 0.1, 0.1), Modality::Image2D},
      {std::make_shared<Gamma>(0.5, 2.0), Modality::Image3D},
      {std::make_shared<BrightnessContrast>(0.2, 0.2), Modality::ChestRadiograph},
      {std::make_shared<GaussianNoise>(0.1), Modality::Image3D},
      {std::make_shared<GaussianBlur>(0.5, 1.0), Modality::Image3D},
      {std::make_shared<RandomAffine>(15, 0.1, 0.1), Modality::Image3D},
      {std::make_shared<BiasField>(0.3, 3), Modality::Image2D},
      {std::make_shared<Cutout>(0.25, 1), Modality::Image2D},
      {std::make_shared<Flip>(0), Modality::ChestRadiograph, false},
      {std::make_shared<AmplitudeScale>(0.5, 1.5, true), Modality::EEG},
      {std::make_shared<GaussianJitter>(0.1), Modality::EEG},
      {std::make_shared<BaselineWander>(0.2, 0.5, 100), Modality::ECG},
      {std::make_shared<PowerlineInterference>(50, 0.2, 200), Modality::ECG},
      {std::make_shared<RandomCrop>(100), Modality::ECG},
      {std::make_shared<TimeMask>(0.3), Modality::ECG},
      {std::make_shared<LeadDropout>(0.5), Modality::ECG},
      {std::make_shared<TimeWarp>(0.2), Modality::ECG},
      {std::make_shared<TimeReversal>(), Modality::EEG, false},
      {std::make_shared<FeatureMask>(0.3), Modality::Tabular},
      {std::make_shared<FeatureNoise>(torch::ones({6}), 0.5), Modality::Tabular},
      {std::make_shared<VisitDropout>(0.5), Modality::Visits},
      {std::make_shared<TemporalCrop>(0.5), Modality::Visits},
      {std::make_shared<TimeShift>(10.0), Modality::Visits},
      {std::make_shared<GeneDropout>(0.3), Modality::Omics},
      {std::make_shared<BinomialThinning>(0.3, 0.7), Modality::Omics},
      {std::make_shared<LibrarySizeScale>(0.5, 2.0), Modality::Omics},
      {std::make_shared<LogExpressionNoise>(0.2), Modality::Omics},
      {std::make_shared<TokenMask>(0.4, 99), Modality::Text},
      {std::make_shared<SentenceShuffle>(9), Modality::Text},
      {std::make_shared<SentenceSample>(0.5, 9, 0), Modality::Text},
  };
}

// Everything a transform's output carries, as one comparable tensor list.
bool same(const Batch& a, const Batch& b) {
  auto eq = [](const at::Tensor& x, const at::Tensor& y) {
    return x.defined() == y.defined() && (!x.defined() || x.equal(y));
  };
  return eq(a.values, b.values) && eq(a.mask, b.mask) && eq(a.times, b.times);
}

} // namespace

TEST_CASE(
    "every transform: layout kept, seeded, varies with the seed, describes every parameter",
    "[augment]") {
  for (const auto& it : everything()) {
    INFO(it.t->name());
    const auto in = sample(it.m);
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
    REQUIRE(same(a, run(1)));
    if (it.random) {
      bool differs = false;
      for (uint64_t s = 2; s < 6 && !differs; ++s)
        differs = !same(a, run(s));
      REQUIRE(differs);
    }
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
