#pragma once

/// \file
/// SwAV's swapped-prediction loss and the Sinkhorn-Knopp equipartition it relies on, in one
/// process or across the ranks of a process group.

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>
#include <medcl/dist/process_group.h>
#include <medcl/losses/dino.h>
#include <medcl/losses/distributed.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <string>
#include <vector>

namespace medcl {

/// Options of `sinkhorn_knopp`.
struct SinkhornOptions {
  /// Number of alternating normalisations. Default: 3
  TORCH_ARG(int64_t, iterations) = 3;
  /// Entropic regularisation: scores are turned into exp(scores / epsilon). Default: 0.05
  TORCH_ARG(double, epsilon) = 0.05;
};

namespace functional {

/// Sinkhorn-Knopp of SwAV (Caron et al. 2020, https://arxiv.org/abs/2006.09882) as lightly's
/// `sinkhorn(exp(scores / epsilon), iterations)` computes it: the matrix
/// \f$Q = \exp(S^\top/\varepsilon)\f$ is scaled to sum 1, then `iterations` times its prototype
/// rows are scaled to sum 1/K and its sample columns to sum 1/B; the codes are \f$B Q^\top\f$
/// (each sample's code sums to 1). Computed in the log domain, so large scores or small epsilon
/// neither overflow nor divide by zero; no gradient flows.
///
/// Shape: scores [B, K] -> codes [B, K] (float32, float64 for double).
///
/// Example:
///   auto q = F::sinkhorn_knopp(prototypes(z).detach());
inline at::Tensor sinkhorn_knopp(const at::Tensor& scores, const SinkhornOptions& options = {}) {
  constexpr const char* fn = "sinkhorn_knopp";
  detail::check_embedding(fn, "scores", scores, 2);
  TORCH_CHECK(
      options.iterations() >= 1, fn, ": iterations must be >= 1, got ", options.iterations());
  detail::check_temperature(fn, "epsilon", options.epsilon());
  detail::check_finite(fn, "scores", scores);
  c10::NoGradGuard no_grad;
  const int64_t b = scores.size(0);
  const int64_t k = scores.size(1);
  auto lq = scores.detach().to(detail::accumulation_dtype(scores.scalar_type())).t() /
      options.epsilon(); // [K, B]
  lq = lq - lq.logsumexp(at::IntArrayRef{0, 1});
  const double log_k = std::log(static_cast<double>(k));
  const double log_b = std::log(static_cast<double>(b));
  for (int64_t it = 0; it < options.iterations(); ++it) {
    lq = lq - (lq.logsumexp(1, true) + log_k);
    lq = lq - (lq.logsumexp(0, true) + log_b);
  }
  return (lq + log_b).exp().t().contiguous();
}

} // namespace functional

namespace detail {

/// SwAV's swapped prediction for the codes `q` of high-resolution crop `i`: the mean of
/// `subloss(z, q)` over every other crop z (the other high-resolution crops and every
/// low-resolution one).
template <class SubLoss>
at::Tensor other_crops_loss(
    const std::vector<at::Tensor>& high,
    const std::vector<at::Tensor>& low,
    size_t i,
    const at::Tensor& q,
    SubLoss&& subloss) {
  at::Tensor sub;
  for (size_t v = 0; v < high.size(); ++v) {
    if (v != i) {
      auto term = subloss(high[v], q);
      sub = sub.defined() ? sub + term : term;
    }
  }
  for (const auto& z : low) {
    auto term = subloss(z, q);
    sub = sub.defined() ? sub + term : term;
  }
  return sub / static_cast<double>(high.size() + low.size() - 1);
}

/// The log-sum-exp over every rank of `local` (this rank's log-sum-exps, [n]) and, once, of
/// `shared` ([n], the same on every rank; undefined: none): one all-gather of [1, n].
inline at::Tensor global_logsumexp(
    const dist::ProcessGroup& group,
    const at::Tensor& local,
    const at::Tensor& shared) {
  auto all = group.all_gather(local.reshape({1, -1}));
  if (shared.defined()) {
    all = at::cat({all, shared.reshape({1, -1})}, 0);
  }
  return all.logsumexp(0);
}

/// Sinkhorn-Knopp's iterations on the columns of every rank: `lq` [K, b] this rank's scores
/// divided by epsilon (transposed), `lq_shared` [K, Q] the shared columns' (undefined: none),
/// `total` every rank's b summed plus Q. Returns this rank's codes [b, K].
inline at::Tensor sinkhorn_across_ranks(
    at::Tensor lq,
    at::Tensor lq_shared,
    int64_t total,
    int64_t iterations,
    const dist::ProcessGroup& group) {
  const bool shared = lq_shared.defined();
  auto lse_all = [&](const at::Tensor& local, const at::Tensor& of_shared) {
    return global_logsumexp(group, local, shared ? of_shared : at::Tensor());
  };
  const auto whole = lse_all(
      lq.logsumexp(at::IntArrayRef{0, 1}).reshape({1}),
      shared ? lq_shared.logsumexp(at::IntArrayRef{0, 1}).reshape({1}) : at::Tensor());
  lq = lq - whole;
  if (shared) {
    lq_shared = lq_shared - whole;
  }
  const double log_k = std::log(static_cast<double>(lq.size(0)));
  const double log_b = std::log(static_cast<double>(total));
  for (int64_t it = 0; it < iterations; ++it) {
    const auto rows =
        lse_all(lq.logsumexp(1), shared ? lq_shared.logsumexp(1) : at::Tensor()).unsqueeze(1);
    lq = lq - (rows + log_k);
    lq = lq - (lq.logsumexp(0, true) + log_b);
    if (shared) {
      lq_shared = lq_shared - (rows + log_k);
      lq_shared = lq_shared - (lq_shared.logsumexp(0, true) + log_b);
    }
  }
  return (lq + log_b).exp().t().contiguous();
}

/// The checks of `sinkhorn_knopp`'s scores on one rank of a group (it may hold no rows).
inline void check_rank_scores(const char* fn, const char* name, const at::Tensor& scores) {
  check_rank_embedding(fn, name, scores, 2);
  check_finite(fn, name, scores);
}

} // namespace detail

namespace functional {

/// Sinkhorn-Knopp across the ranks of `group` (data-parallel training): `scores` are this rank's
/// rows of the global score matrix (every rank's rows in rank order; a rank may hold none) and
/// `shared_scores` (optional) rows that every rank holds identically, such as SwAV's queue,
/// which count once. The sums over samples (the prototype rows of Q) are all-reduced and the
/// global number of samples B (every rank's rows plus the shared ones) is used in the
/// normalisation, so that the codes returned, this rank's [B_r, K], equal its rows of the
/// one-process `sinkhorn_knopp(cat(every rank's scores, shared_scores))`. A collective: every rank
/// calls it; ranks that disagree on K, the dtype, the options or the number of shared rows, or
/// whose own input is refused, fail together. A one-process group gives exactly the one-process
/// codes of its rows. The shared rows must be the same on every rank (not checked: SwAV's queue
/// is, because it enqueues every rank's projections).
///
/// Shape: scores [B_r, K], shared_scores [Q, K] or undefined -> codes [B_r, K] (float32, float64
/// for double).
///
/// Example:
///   auto q = F::sinkhorn_knopp(prototypes(z).detach(), SinkhornOptions(), group);
inline at::Tensor sinkhorn_knopp(
    const at::Tensor& scores,
    const SinkhornOptions& options,
    const dist::ProcessGroup& group,
    const at::Tensor& shared_scores = {}) {
  constexpr const char* fn = "sinkhorn_knopp";
  if (group.size() == 1) {
    if (!shared_scores.defined()) {
      return sinkhorn_knopp(scores, options);
    }
    detail::check_embedding(fn, "scores", scores, 2);
    detail::check_embedding(fn, "shared_scores", shared_scores, 2);
    TORCH_CHECK(
        shared_scores.size(1) == scores.size(1),
        fn,
        ": shared_scores must have ",
        scores.size(1),
        " columns, got shape ",
        shared_scores.sizes());
    return sinkhorn_knopp(at::cat({scores, shared_scores.to(scores.scalar_type())}, 0), options)
        .slice(0, 0, scores.size(0));
  }
  const auto error = detail::local_check_error([&]() {
    detail::check_rank_scores(fn, "scores", scores);
    TORCH_CHECK(
        options.iterations() >= 1, fn, ": iterations must be >= 1, got ", options.iterations());
    detail::check_temperature(fn, "epsilon", options.epsilon());
    if (shared_scores.defined()) {
      detail::check_rank_scores(fn, "shared_scores", shared_scores);
      TORCH_CHECK(
          shared_scores.size(1) == scores.size(1),
          fn,
          ": shared_scores must have ",
          scores.size(1),
          " columns, got shape ",
          shared_scores.sizes());
      TORCH_CHECK(
          shared_scores.device() == scores.device(),
          fn,
          ": shared_scores must be on the scores' device ",
          scores.device(),
          ", got ",
          shared_scores.device());
    }
  });
  const bool shaped = scores.defined() && scores.dim() == 2;
  const bool has_shared = shared_scores.defined() && shared_scores.dim() == 2;
  detail::agree_across_ranks(
      fn,
      group,
      {detail::agreed_int("number of prototypes", shaped ? scores.size(1) : -1),
       detail::agreed_text(
           "dtype", scores.defined() ? std::string(c10::toString(scores.scalar_type())) : ""),
       detail::agreed_int("iterations", options.iterations()),
       detail::agreed_double("epsilon", options.epsilon()),
       detail::agreed_int("number of shared rows", has_shared ? shared_scores.size(0) : -1)},
      error);
  const int64_t q = has_shared ? shared_scores.size(0) : 0;
  const int64_t total = detail::global_row_counter(group)(scores.size(0)) + q;
  TORCH_CHECK(total > 0, fn, ": every rank's scores are empty; there is nothing to assign");
  c10::NoGradGuard no_grad;
  const auto acc = detail::accumulation_dtype(scores.scalar_type());
  return detail::sinkhorn_across_ranks(
      scores.detach().to(acc).t() / options.epsilon(),
      has_shared ? shared_scores.detach().to(acc).t() / options.epsilon() : at::Tensor(),
      total,
      options.iterations(),
      group);
}

} // namespace functional

/// Options of `swav_loss` and `SwAVLoss`.
///
/// Example:
///   auto opts = medcl::SwAVLossOptions().temperature(0.1).sinkhorn(
///       medcl::SinkhornOptions().iterations(3).epsilon(0.05));
struct SwAVLossOptions {
  /// Temperature of the prototype softmax. Default: 0.1
  TORCH_ARG(double, temperature) = 0.1;
  /// The Sinkhorn-Knopp that computes the codes. Default: SinkhornOptions() (3 iterations,
  /// epsilon 0.05)
  TORCH_ARG(SinkhornOptions, sinkhorn) = {};
  /// Data-parallel training: the process group whose ranks' batches form one global batch (every
  /// rank's rows in rank order). Sinkhorn-Knopp then normalises over every rank's samples (the
  /// codes of this rank's rows are the one-process codes' rows) and the loss returned is this
  /// rank's share (divided by the global batch size), so that the shares summed over the ranks
  /// equal the one-process loss on the concatenated batch. A queue, if any, must be the same on
  /// every rank (SwAV's is). See docs/distributed.md. Default: one process
  TORCH_ARG(dist::ProcessGroup, group) = {};

 public:
  /// Deprecated: use `sinkhorn(SinkhornOptions().iterations(n))`. Kept for one release.
  [[deprecated("use SwAVLossOptions::sinkhorn(SinkhornOptions().iterations(n))")]] SwAVLossOptions&
  sinkhorn_iterations(int64_t n) {
    sinkhorn_.iterations(n);
    return *this;
  }
  [[deprecated("use SwAVLossOptions::sinkhorn().iterations()")]] int64_t sinkhorn_iterations()
      const noexcept {
    return sinkhorn_.iterations();
  }
  /// Deprecated: use `sinkhorn(SinkhornOptions().epsilon(e))`. Kept for one release.
  [[deprecated("use SwAVLossOptions::sinkhorn(SinkhornOptions().epsilon(e))")]] SwAVLossOptions&
  sinkhorn_epsilon(double e) {
    sinkhorn_.epsilon(e);
    return *this;
  }
  [[deprecated("use SwAVLossOptions::sinkhorn().epsilon()")]] double sinkhorn_epsilon()
      const noexcept {
    return sinkhorn_.epsilon();
  }
};

namespace detail {

/// The option checks of `swav_loss` and `SwAVLoss`.
inline void check_swav_options(const char* who, const SwAVLossOptions& options) {
  check_temperature(who, "temperature", options.temperature());
  TORCH_CHECK(
      options.sinkhorn().iterations() >= 1,
      who,
      ": sinkhorn iterations must be >= 1, got ",
      options.sinkhorn().iterations());
  check_temperature(who, "sinkhorn epsilon", options.sinkhorn().epsilon());
}

/// The checks of `swav_loss`'s outputs on one rank of a group (it may hold no rows).
inline void check_swav_rank_inputs(
    const char* fn,
    const std::vector<at::Tensor>& high,
    const std::vector<at::Tensor>& low,
    const std::vector<at::Tensor>& queue,
    const SwAVLossOptions& options) {
  TORCH_CHECK(!high.empty(), fn, ": high_resolution_outputs is an empty list of views");
  const auto& first = high.front();
  check_view_list(fn, "high_resolution_outputs", high, first, /*rank_may_be_empty=*/true);
  for (const auto& v : high) {
    check_finite(fn, "high_resolution_outputs", v);
  }
  for (size_t i = 0; i < low.size(); ++i) {
    const auto& v = low[i];
    check_rank_embedding(fn, "low_resolution_outputs", v, 2);
    TORCH_CHECK(
        v.size(0) == first.size(0) && v.size(1) == first.size(1),
        fn,
        ": low_resolution_outputs[",
        i,
        "] must have shape ",
        first.sizes(),
        " (the high-resolution views' samples and prototype scores), got ",
        v.sizes());
    check_same_device_dtype(fn, "high_resolution_outputs[0]", first, "low_resolution_outputs", v);
    check_finite(fn, "low_resolution_outputs", v);
  }
  TORCH_CHECK(
      high.size() + low.size() >= 2,
      fn,
      ": needs at least two views, got ",
      high.size() + low.size());
  TORCH_CHECK(
      queue.empty() || queue.size() == high.size(),
      fn,
      ": queue_outputs must be empty or hold one tensor per high-resolution view (",
      high.size(),
      "), got ",
      queue.size());
  for (size_t i = 0; i < queue.size(); ++i) {
    const auto& qo = queue[i];
    check_embedding(fn, "queue_outputs", qo, 2);
    TORCH_CHECK(
        qo.size(1) == first.size(1),
        fn,
        ": queue_outputs[",
        i,
        "] must have ",
        first.size(1),
        " prototype scores, got shape ",
        qo.sizes());
    TORCH_CHECK(
        qo.size(0) == queue.front().size(0),
        fn,
        ": every queue_outputs entry must have ",
        queue.front().size(0),
        " rows, got shape ",
        qo.sizes(),
        " for queue_outputs[",
        i,
        "]");
  }
  check_swav_options(fn, options);
}

/// `swav_loss` across the ranks of `options.group()`: the codes from Sinkhorn-Knopp over every
/// rank's samples (and the queue's, once), the loss divided by the global batch size.
inline at::Tensor swav_loss_across_ranks(
    const char* fn,
    const std::vector<at::Tensor>& high,
    const std::vector<at::Tensor>& low,
    const std::vector<at::Tensor>& queue,
    const SwAVLossOptions& options) {
  const auto& group = options.group();
  const auto checks = [&]() { check_swav_rank_inputs(fn, high, low, queue, options); };
  const auto error = local_check_error(checks);
  const at::Tensor first = high.empty() ? at::Tensor() : high.front();
  const bool shaped = first.defined() && first.dim() == 2;
  agree_across_ranks(
      fn,
      group,
      {agreed_int("number of prototypes", shaped ? first.size(1) : -1),
       agreed_text("dtype", first.defined() ? std::string(c10::toString(first.scalar_type())) : ""),
       agreed_int("number of high-resolution views", static_cast<int64_t>(high.size())),
       agreed_int("number of low-resolution views", static_cast<int64_t>(low.size())),
       agreed_int(
           "number of queue rows",
           queue.empty() || !queue.front().defined() || queue.front().dim() != 2
               ? -1
               : queue.front().size(0)),
       agreed_double("temperature", options.temperature()),
       agreed_int("sinkhorn iterations", options.sinkhorn().iterations()),
       agreed_double("sinkhorn epsilon", options.sinkhorn().epsilon())},
      error);
  const int64_t b = first.size(0);
  const int64_t n = global_row_counter(group)(b);
  TORCH_CHECK(
      n > 0,
      fn,
      ": every rank's batch is empty (",
      group.size(),
      " ranks); an empty batch has no loss");
  const int64_t q_rows = queue.empty() ? 0 : queue.front().size(0);
  const auto acc = accumulation_dtype(first.scalar_type());
  const double eps = options.sinkhorn().epsilon();
  auto subloss = [&](const at::Tensor& z, const at::Tensor& q) {
    return -(q * (z.to(acc) / options.temperature()).log_softmax(1)).sum(1).sum() /
        static_cast<double>(n);
  };
  at::Tensor loss;
  for (size_t i = 0; i < high.size(); ++i) {
    at::Tensor q;
    {
      c10::NoGradGuard no_grad;
      auto shared = queue.empty() ? at::Tensor()
                                  : queue[i].detach().to(first.scalar_type()).to(acc).t() / eps;
      q = sinkhorn_across_ranks(
          high[i].detach().to(acc).t() / eps,
          shared,
          n + q_rows,
          options.sinkhorn().iterations(),
          group);
    }
    auto sub = other_crops_loss(high, low, i, q, subloss);
    loss = loss.defined() ? loss + sub : sub;
  }
  return loss / static_cast<double>(high.size());
}

} // namespace detail

namespace functional {

/// SwAV loss as lightly's `SwaVLoss` computes it: codes q_i come from Sinkhorn-Knopp on each
/// high-resolution view's prototype scores (with the queue's scores appended when given, without
/// gradient); every other view v (high or low resolution) predicts them:
/// \f[ \mathcal{L} = \frac{1}{H}\sum_{i=1}^{H}\frac{1}{V-1}\sum_{v\ne i}
///     -\frac1B\sum_b \sum_k q_{i,bk}\log\mathrm{softmax}(z_{v,b}/\tau)_k \f]
///
/// With `options.group()` of several ranks (data-parallel training), each rank passes its own
/// rows and the queue's scores (the same queue on every rank) and gets its share: the codes come
/// from `sinkhorn_knopp` across the ranks (equal to the one-process codes' rows) and the sum over
/// its rows is divided by the global batch size, so that the shares summed over the ranks equal
/// the one-process loss on the concatenated batch (a rank may hold no rows). A collective then.
///
/// Shape: high_resolution_outputs H × [B, K], low_resolution_outputs L × [B', K] (L may be 0),
/// queue_outputs H × [Q, K] or empty -> 0-dim tensor. The data come first and the options last,
/// as in every other loss.
inline at::Tensor swav_loss(
    const std::vector<at::Tensor>& high_resolution_outputs,
    const std::vector<at::Tensor>& low_resolution_outputs,
    const std::vector<at::Tensor>& queue_outputs,
    const SwAVLossOptions& options = {}) {
  constexpr const char* fn = "swav_loss";
  if (options.group().size() > 1) {
    return detail::swav_loss_across_ranks(
        fn, high_resolution_outputs, low_resolution_outputs, queue_outputs, options);
  }
  TORCH_CHECK(
      !high_resolution_outputs.empty(), fn, ": high_resolution_outputs is an empty list of views");
  const auto& first = high_resolution_outputs.front();
  detail::check_embedding(fn, "high_resolution_outputs[0]", first, 2);
  detail::check_view_list(fn, "high_resolution_outputs", high_resolution_outputs, first);
  for (const auto& v : high_resolution_outputs) {
    detail::check_finite(fn, "high_resolution_outputs", v);
  }
  for (size_t i = 0; i < low_resolution_outputs.size(); ++i) {
    const auto& v = low_resolution_outputs[i];
    detail::check_embedding(fn, "low_resolution_outputs", v, 2);
    TORCH_CHECK(
        v.size(1) == first.size(1),
        fn,
        ": low_resolution_outputs[",
        i,
        "] must have ",
        first.size(1),
        " prototype scores, got shape ",
        v.sizes());
    detail::check_same_device_dtype(
        fn, "high_resolution_outputs[0]", first, "low_resolution_outputs", v);
    detail::check_finite(fn, "low_resolution_outputs", v);
  }
  const size_t n_crops = high_resolution_outputs.size() + low_resolution_outputs.size();
  TORCH_CHECK(n_crops >= 2, fn, ": needs at least two views, got ", n_crops);
  TORCH_CHECK(
      queue_outputs.empty() || queue_outputs.size() == high_resolution_outputs.size(),
      fn,
      ": queue_outputs must be empty or hold one tensor per high-resolution view (",
      high_resolution_outputs.size(),
      "), got ",
      queue_outputs.size());
  detail::check_swav_options(fn, options);
  const auto acc = detail::accumulation_dtype(first.scalar_type());
  const auto& sinkhorn = options.sinkhorn();
  auto subloss = [&](const at::Tensor& z, const at::Tensor& q) {
    TORCH_CHECK(
        z.size(0) == q.size(0),
        fn,
        ": a low-resolution view must have the batch size ",
        q.size(0),
        " of the high-resolution views, got ",
        z.size(0));
    return -(q * (z.to(acc) / options.temperature()).log_softmax(1)).sum(1).mean();
  };
  at::Tensor loss;
  for (size_t i = 0; i < high_resolution_outputs.size(); ++i) {
    at::Tensor q;
    {
      c10::NoGradGuard no_grad;
      auto out = high_resolution_outputs[i].detach();
      if (!queue_outputs.empty()) {
        const auto& qo = queue_outputs[i];
        detail::check_embedding(fn, "queue_outputs", qo, 2);
        TORCH_CHECK(
            qo.size(1) == first.size(1),
            fn,
            ": queue_outputs[",
            i,
            "] must have ",
            first.size(1),
            " prototype scores, got shape ",
            qo.sizes());
        out = at::cat({out, qo.detach().to(out.scalar_type())}, 0);
      }
      q = sinkhorn_knopp(out, sinkhorn).slice(0, 0, first.size(0));
    }
    auto sub =
        detail::other_crops_loss(high_resolution_outputs, low_resolution_outputs, i, q, subloss);
    loss = loss.defined() ? loss + sub : sub;
  }
  return loss / static_cast<double>(high_resolution_outputs.size());
}

/// `swav_loss` with the views only (no queue).
inline at::Tensor swav_loss(
    const std::vector<at::Tensor>& high_resolution_outputs,
    const std::vector<at::Tensor>& low_resolution_outputs = {},
    const SwAVLossOptions& options = {}) {
  return swav_loss(high_resolution_outputs, low_resolution_outputs, {}, options);
}

/// Deprecated argument order (options before the queue), kept for one release.
[[deprecated(
    "pass the queue before the options: swav_loss(high, low, queue, options)")]] inline at::Tensor
swav_loss(
    const std::vector<at::Tensor>& high_resolution_outputs,
    const std::vector<at::Tensor>& low_resolution_outputs,
    const SwAVLossOptions& options,
    const std::vector<at::Tensor>& queue_outputs) {
  return swav_loss(high_resolution_outputs, low_resolution_outputs, queue_outputs, options);
}

} // namespace functional

/// Module form of `functional::swav_loss`.
class SwAVLossImpl : public torch::nn::Cloneable<SwAVLossImpl> {
 public:
  explicit SwAVLossImpl(SwAVLossOptions opts = {}) : options(std::move(opts)) {
    reset();
  }
  /// Checks the options (nothing to allocate).
  void reset() override {
    detail::check_swav_options("SwAVLoss", options);
  }
  at::Tensor forward(
      const std::vector<at::Tensor>& high_resolution_outputs,
      const std::vector<at::Tensor>& low_resolution_outputs = {},
      const std::vector<at::Tensor>& queue_outputs = {}) {
    return functional::swav_loss(
        high_resolution_outputs, low_resolution_outputs, queue_outputs, options);
  }
  SwAVLossOptions options;
};
TORCH_MODULE(SwAVLoss);

} // namespace medcl
