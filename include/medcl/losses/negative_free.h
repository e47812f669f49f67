#pragma once

/// \file
/// Negative-free objectives: BYOL and SimSiam.

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace medcl {
namespace detail {

inline void check_pair(
    const char* fn,
    const char* na,
    const at::Tensor& a,
    const char* nb,
    const at::Tensor& b) {
  check_embedding(fn, na, a, 2);
  check_embedding(fn, nb, b, 2);
  TORCH_CHECK(
      a.sizes() == b.sizes(),
      fn,
      ": ",
      na,
      " and ",
      nb,
      " must have the same shape, got ",
      a.sizes(),
      " and ",
      b.sizes());
  check_same_device_dtype(fn, na, a, nb, b);
  check_finite(fn, na, a);
  check_finite(fn, nb, b);
}

/// Row-wise cosine similarity in the accumulation dtype, with z detached (stop-gradient).
inline at::Tensor cos_stopgrad(const at::Tensor& p, const at::Tensor& z) {
  constexpr double eps = 1e-12;
  return (l2_normalize(p, eps) * l2_normalize(z.detach(), eps)).sum(1);
}

} // namespace detail

namespace functional {

/// BYOL's regression loss (Grill et al. 2020, https://arxiv.org/abs/2006.07733): the online
/// network's prediction regresses the target network's projection, which receives no gradient:
/// \f[ \mathcal{L} = \frac1B\sum_i \big(2 - 2\cos(p_i, \mathrm{sg}(z_i))\big) \f]
/// Symmetrise by adding the loss with the views swapped.
///
/// Shape: online_prediction [B, D], target_projection [B, D] -> 0-dim tensor.
///
/// Example:
///   auto loss = F::byol_loss(pred(online(v0)), target(v1)) + F::byol_loss(pred(online(v1)),
///   target(v0));
inline at::Tensor byol_loss(
    const at::Tensor& online_prediction,
    const at::Tensor& target_projection) {
  detail::check_pair(
      "byol_loss", "online_prediction", online_prediction, "target_projection", target_projection);
  return (2.0 - 2.0 * detail::cos_stopgrad(online_prediction, target_projection)).mean();
}

/// SimSiam's symmetrised negative cosine (Chen & He 2021, https://arxiv.org/abs/2011.10566):
/// \f[ \mathcal{L} = \tfrac12 D(p_0, \mathrm{sg}(z_1)) + \tfrac12 D(p_1, \mathrm{sg}(z_0)),\quad
///     D(p, z) = -\frac1B\sum_i \cos(p_i, z_i) \f]
///
/// Shape: p0, p1, z0, z1 [B, D] -> 0-dim tensor (minimum -1).
inline at::Tensor simsiam_loss(
    const at::Tensor& p0,
    const at::Tensor& p1,
    const at::Tensor& z0,
    const at::Tensor& z1) {
  detail::check_pair("simsiam_loss", "p0", p0, "z1", z1);
  detail::check_pair("simsiam_loss", "p1", p1, "z0", z0);
  detail::check_pair("simsiam_loss", "p0", p0, "p1", p1);
  return -0.5 * (detail::cos_stopgrad(p0, z1).mean() + detail::cos_stopgrad(p1, z0).mean());
}

} // namespace functional

/// Module form of `functional::byol_loss`.
class BYOLLossImpl : public torch::nn::Cloneable<BYOLLossImpl> {
 public:
  /// The loss has no options and no state: nothing to check or allocate.
  void reset() override {}
  at::Tensor forward(const at::Tensor& online_prediction, const at::Tensor& target_projection) {
    return functional::byol_loss(online_prediction, target_projection);
  }
};
TORCH_MODULE(BYOLLoss);

/// Module form of `functional::simsiam_loss`.
class SimSiamLossImpl : public torch::nn::Cloneable<SimSiamLossImpl> {
 public:
  /// The loss has no options and no state: nothing to check or allocate.
  void reset() override {}
  at::Tensor
  forward(const at::Tensor& p0, const at::Tensor& p1, const at::Tensor& z0, const at::Tensor& z1) {
    return functional::simsiam_loss(p0, p1, z0, z1);
  }
};
TORCH_MODULE(SimSiamLoss);

} // namespace medcl
