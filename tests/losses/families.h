#pragma once

// The contrastive loss families behind one signature, shared by the engine tests
// (losses/test_engine.cpp) and the CUDA tests (cuda/test_cuda_losses.cpp): how each family is
// called under given engine options and negative weighting, and its random inputs.

#include <medcl/core/negative_weighting.h>
#include <medcl/core/similarity_engine.h>
#include <medcl/losses/clip.h>
#include <medcl/losses/info_nce.h>
#include <medcl/losses/nt_xent.h>
#include <medcl/losses/supcon.h>

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace medcl_test {

/// Sizes of the families' inputs: small ones keep finite differences cheap on the CPU, large ones
/// span several tiles on a device.
struct FamilySizes {
  /// Embedding size.
  int64_t dim = 6;
  int64_t nt_xent_batch = 11;
  int64_t info_nce_batch = 9;
  int64_t info_nce_queue = 13;
  int64_t supcon_batch = 8;
  int64_t supcon_views = 3;
  int64_t clip_batch = 10;

  static FamilySizes small() {
    return FamilySizes();
  }
  static FamilySizes large() {
    FamilySizes s;
    s.dim = 64;
    s.nt_xent_batch = 300;
    s.info_nce_batch = 200;
    s.info_nce_queue = 700;
    s.supcon_batch = 150;
    s.supcon_views = 2;
    s.clip_batch = 250;
    return s;
  }
};

/// One family behind a common signature: the loss of a list of inputs under engine options and a
/// negative weighting, and random inputs of a dtype.
struct Family {
  std::string name;
  std::function<at::Tensor(
      const std::vector<at::Tensor>&,
      const medcl::SimilarityEngineOptions&,
      const medcl::NegativeWeighting&)>
      loss;
  /// Inputs drawn with torch::randn in the given dtype; CLIP's logit scale (a learnable 0-dim
  /// input) stays float64 whatever the dtype.
  std::function<std::vector<at::Tensor>(at::ScalarType)> inputs;
};

/// SupCon's labels of `n` samples: i mod 3, and the last sample alone in class 3 (its only
/// positives are its other views). For 8 samples: 0 1 2 0 1 2 0 3.
inline at::Tensor supcon_labels(int64_t n, const at::Device& device) {
  auto labels = torch::arange(n, torch::kLong) % 3;
  labels[n - 1] = 3;
  return labels.to(device);
}

/// NT-Xent, InfoNCE (with a queue), SupCon and CLIP (with a learnable scale), at temperature 0.2
/// (CLIP: scale 4).
inline std::vector<Family> families(const FamilySizes& s = FamilySizes::small()) {
  namespace F = medcl::functional;
  using medcl::NegativeWeighting;
  using medcl::SimilarityEngineOptions;
  std::vector<Family> out;
  out.push_back(
      {"nt_xent",
       [](const std::vector<at::Tensor>& x,
          const SimilarityEngineOptions& e,
          const NegativeWeighting& w) {
         return F::nt_xent_loss(
             x[0], x[1], medcl::NTXentLossOptions().engine(e).weighting(w).temperature(0.2));
       },
       [s](at::ScalarType t) {
         return std::vector<at::Tensor>{
             torch::randn({s.nt_xent_batch, s.dim}, t), torch::randn({s.nt_xent_batch, s.dim}, t)};
       }});
  out.push_back(
      {"info_nce",
       [](const std::vector<at::Tensor>& x,
          const SimilarityEngineOptions& e,
          const NegativeWeighting& w) {
         return F::info_nce_loss(
             x[0], x[1], x[2], medcl::InfoNCELossOptions().engine(e).weighting(w).temperature(0.2));
       },
       [s](at::ScalarType t) {
         return std::vector<at::Tensor>{
             torch::randn({s.info_nce_batch, s.dim}, t),
             torch::randn({s.info_nce_batch, s.dim}, t),
             torch::randn({s.info_nce_queue, s.dim}, t)};
       }});
  out.push_back(
      {"supcon",
       [](const std::vector<at::Tensor>& x,
          const SimilarityEngineOptions& e,
          const NegativeWeighting& w) {
         return F::supcon_loss(
             x[0],
             supcon_labels(x[0].size(0), x[0].device()),
             medcl::SupConLossOptions().engine(e).weighting(w).temperature(0.2));
       },
       [s](at::ScalarType t) {
         return std::vector<at::Tensor>{torch::randn({s.supcon_batch, s.supcon_views, s.dim}, t)};
       }});
  out.push_back(
      {"clip",
       [](const std::vector<at::Tensor>& x,
          const SimilarityEngineOptions& e,
          const NegativeWeighting& w) {
         return F::clip_loss(x[0], x[1], x[2], medcl::CLIPLossOptions().engine(e).weighting(w));
       },
       [s](at::ScalarType t) {
         return std::vector<at::Tensor>{
             torch::randn({s.clip_batch, s.dim}, t),
             torch::randn({s.clip_batch, s.dim}, t),
             torch::full({}, 4.0, torch::kDouble)};
       }});
  return out;
}

} // namespace medcl_test
