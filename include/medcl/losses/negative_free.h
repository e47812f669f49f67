#pragma once

/// \file
/// Negative-free objectives: BYOL and SimSiam, in one process or across the ranks of a process
/// group (each rank's loss is its share of the global batch's).

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>
#include <medcl/dist/process_group.h>
#include <medcl/losses/distributed.h>

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <utility>

namespace medcl {
namespace detail {

/// The checks of two embeddings of one shape; `rank_of_group`: this process is one rank of a
/// group and may hold no rows.
inline void check_pair_of(
    const char* fn,
    const char* na,
    const at::Tensor& a,
    const char* nb,
    const at::Tensor& b,
    bool rank_of_group) {
  if (rank_of_group) {
    check_rank_embedding(fn, na, a, 2);
    check_rank_embedding(fn, nb, b, 2);
  } else {
    check_embedding(fn, na, a, 2);
    check_embedding(fn, nb, b, 2);
  }
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

inline void check_pair(
    const char* fn,
    const char* na,
    const at::Tensor& a,
    const char* nb,
    const at::Tensor& b) {
  check_pair_of(fn, na, a, nb, b, false);
}

/// check_pair on one rank of a process group: this rank may hold no rows.
inline void check_rank_pair(
    const char* fn,
    const char* na,
    const at::Tensor& a,
    const char* nb,
    const at::Tensor& b) {
  check_pair_of(fn, na, a, nb, b, true);
}

/// The number of rows of the global batch (every rank's `rows` summed) after every rank has
/// agreed on the embedding size and dtype of `like` (and passed its own checks, `error`); fails
/// on every rank when the global batch is empty.
inline int64_t negative_free_global_rows(
    const char* fn,
    const dist::ProcessGroup& group,
    const at::Tensor& like,
    int64_t rows,
    const std::string& error) {
  const bool shaped = like.defined() && like.dim() == 2;
  agree_across_ranks(
      fn,
      group,
      {agreed_int("embedding size", shaped ? like.size(1) : -1),
       agreed_text("dtype", like.defined() ? std::string(c10::toString(like.scalar_type())) : "")},
      error);
  const int64_t n = global_row_counter(group)(rows);
  TORCH_CHECK(
      n > 0,
      fn,
      ": every rank's batch is empty (",
      group.size(),
      " ranks); an empty batch has no loss");
  return n;
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

/// BYOL's loss across the ranks of `group` (data-parallel training: the global batch is every
/// rank's rows in rank order). Returns this rank's share,
/// \f[ \mathcal{L}_r = \frac1N\sum_{i \in \text{rank } r} \big(2 - 2\cos(p_i,
/// \mathrm{sg}(z_i))\big),
///     \quad N = \sum_r B_r, \f]
/// so that the shares summed over the ranks equal the one-process loss on the concatenated batch
/// and the parameters' gradients summed over the ranks equal its gradient. N comes from an
/// all-reduce of the row counts (a rank may hold no rows). Every rank must call it (it is a
/// collective); ranks with another embedding size or dtype, or whose own input is refused, fail
/// together. A one-process group gives exactly `byol_loss(online_prediction, target_projection)`.
///
/// Shape: online_prediction [B_r, D], target_projection [B_r, D] on rank r -> 0-dim tensor.
///
/// Example:
///   auto loss = F::byol_loss(p0, t1, group) + F::byol_loss(p1, t0, group);  // this rank's share
inline at::Tensor byol_loss(
    const at::Tensor& online_prediction,
    const at::Tensor& target_projection,
    const dist::ProcessGroup& group) {
  if (group.size() == 1) {
    return byol_loss(online_prediction, target_projection);
  }
  constexpr const char* fn = "byol_loss";
  const auto checks = [&]() {
    detail::check_rank_pair(
        fn, "online_prediction", online_prediction, "target_projection", target_projection);
  };
  const auto error = detail::local_check_error(checks);
  const int64_t n = detail::negative_free_global_rows(
      fn,
      group,
      online_prediction,
      online_prediction.defined() && online_prediction.dim() >= 1 ? online_prediction.size(0) : 0,
      error);
  return (2.0 - 2.0 * detail::cos_stopgrad(online_prediction, target_projection)).sum() /
      static_cast<double>(n);
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

/// SimSiam's loss across the ranks of `group` (the global batch is every rank's rows in rank
/// order). Returns this rank's share,
/// \f[ \mathcal{L}_r = -\frac{1}{2N}\sum_{i \in \text{rank } r}
///     \big(\cos(p_{0,i}, \mathrm{sg}(z_{1,i})) + \cos(p_{1,i}, \mathrm{sg}(z_{0,i}))\big),
///     \quad N = \sum_r B_r, \f]
/// so that the shares summed over the ranks equal the one-process loss on the concatenated batch.
/// A collective, as `byol_loss(..., group)`; a one-process group gives exactly
/// `simsiam_loss(p0, p1, z0, z1)`.
///
/// Shape: p0, p1, z0, z1 [B_r, D] on rank r -> 0-dim tensor.
inline at::Tensor simsiam_loss(
    const at::Tensor& p0,
    const at::Tensor& p1,
    const at::Tensor& z0,
    const at::Tensor& z1,
    const dist::ProcessGroup& group) {
  if (group.size() == 1) {
    return simsiam_loss(p0, p1, z0, z1);
  }
  constexpr const char* fn = "simsiam_loss";
  const auto error = detail::local_check_error([&]() {
    detail::check_rank_pair(fn, "p0", p0, "z1", z1);
    detail::check_rank_pair(fn, "p1", p1, "z0", z0);
    detail::check_rank_pair(fn, "p0", p0, "p1", p1);
  });
  const int64_t n = detail::negative_free_global_rows(
      fn, group, p0, p0.defined() && p0.dim() >= 1 ? p0.size(0) : 0, error);
  return -0.5 * (detail::cos_stopgrad(p0, z1).sum() + detail::cos_stopgrad(p1, z0).sum()) /
      static_cast<double>(n);
}

} // namespace functional

/// Module form of `functional::byol_loss`; with a process group of several ranks, the form that
/// returns this rank's share.
class BYOLLossImpl : public torch::nn::Cloneable<BYOLLossImpl> {
 public:
  /// `process_group`: the ranks whose batches form the global batch. Default: one process
  explicit BYOLLossImpl(dist::ProcessGroup process_group = {}) : group(std::move(process_group)) {}
  /// The loss has no options and no state: nothing to check or allocate.
  void reset() override {}
  at::Tensor forward(const at::Tensor& online_prediction, const at::Tensor& target_projection) {
    return functional::byol_loss(online_prediction, target_projection, group);
  }
  /// The ranks whose batches form the global batch.
  dist::ProcessGroup group;
};
TORCH_MODULE(BYOLLoss);

/// Module form of `functional::simsiam_loss`; with a process group of several ranks, the form
/// that returns this rank's share.
class SimSiamLossImpl : public torch::nn::Cloneable<SimSiamLossImpl> {
 public:
  /// `process_group`: the ranks whose batches form the global batch. Default: one process
  explicit SimSiamLossImpl(dist::ProcessGroup process_group = {})
      : group(std::move(process_group)) {}
  /// The loss has no options and no state: nothing to check or allocate.
  void reset() override {}
  at::Tensor
  forward(const at::Tensor& p0, const at::Tensor& p1, const at::Tensor& z0, const at::Tensor& z1) {
    return functional::simsiam_loss(p0, p1, z0, z1, group);
  }
  /// The ranks whose batches form the global batch.
  dist::ProcessGroup group;
};
TORCH_MODULE(SimSiamLoss);

} // namespace medcl
