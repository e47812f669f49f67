#pragma once

// What the CPU and the CUDA augmentation tests share: every transform of medcl/augment with a
// modality it accepts, a small batch of each modality, the seeded check, and the sampling-grid
// reference of the resized crop.

#include <medcl/augment/image.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>

#include <torch/torch.h>
#include "catch.h"

#include <memory>
#include <vector>

namespace medcl_test {

struct TransformItem {
  medcl::augment::TransformPtr t;
  medcl::augment::Modality m;
  bool random = true; // false for the transforms without randomness (flip, time reversal)
};

/// A small batch of modality m (drawn on the CPU with a fixed seed), moved to `device`.
inline medcl::augment::Batch transform_sample(
    medcl::augment::Modality m,
    const torch::Device& device = torch::kCPU) {
  using medcl::augment::Batch;
  using medcl::augment::Modality;
  const auto make = [&]() -> Batch {
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
  };
  const Batch b = make();
  return {
      b.values.to(device),
      b.mask.defined() ? b.mask.to(device) : at::Tensor(),
      b.times.defined() ? b.times.to(device) : at::Tensor()};
}

/// Equal values, masks and times (undefined on both sides counts as equal).
inline bool same_batch(const medcl::augment::Batch& a, const medcl::augment::Batch& b) {
  auto eq = [](const at::Tensor& x, const at::Tensor& y) {
    return x.defined() == y.defined() && (!x.defined() || x.equal(y));
  };
  return eq(a.values, b.values) && eq(a.mask, b.mask) && eq(a.times, b.times);
}

/// Requires run(seed) to give the same output for the same seed and, for a random transform, a
/// different one for some other seed.
template <typename Run>
void require_seeded(bool random, const Run& run) {
  const auto a = run(1);
  REQUIRE(same_batch(a, run(1)));
  if (random) {
    bool differs = false;
    for (uint64_t s = 2; s < 6 && !differs; ++s)
      differs = !same_batch(a, run(s));
    REQUIRE(differs);
  }
}

/// A random crop (side [B] in [min_side, 1], shift[d] [B] keeping it inside the image; d = 0 the
/// last axis) and its reference: an affine grid sampled bilinearly with border padding, which
/// RandomResizedCrop's separable crop must equal.
struct CropCase {
  at::Tensor side;
  std::vector<at::Tensor> shift;
  at::Tensor reference;
};
inline CropCase random_crop_case(const at::Tensor& x, double min_side) {
  const int64_t b = x.size(0), dims = x.dim() - 2;
  CropCase c;
  c.side = torch::rand({b}, x.options()) * (1 - min_side) + min_side;
  auto theta = torch::zeros({b, dims, dims + 1}, x.options());
  for (int64_t d = 0; d < dims; ++d) {
    c.shift.push_back((torch::rand({b}, x.options()) * 2 - 1) * (1 - c.side));
    theta.select(1, d).select(1, d).copy_(c.side);
    theta.select(1, d).select(1, dims).copy_(c.shift.back());
  }
  c.reference = torch::nn::functional::grid_sample(
      x,
      torch::nn::functional::affine_grid(theta, x.sizes(), /*align_corners=*/false),
      torch::nn::functional::GridSampleFuncOptions()
          .mode(torch::kBilinear)
          .padding_mode(torch::kBorder)
          .align_corners(false));
  return c;
}

/// Every transform, each with a modality it accepts.
inline std::vector<TransformItem> all_transforms() {
  using namespace medcl::augment;
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
      {std::make_shared<Flip>(0), Modality::Image2D, false}, // refused for chest films
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

} // namespace medcl_test
