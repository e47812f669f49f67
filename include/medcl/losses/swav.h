#pragma once

/// \file
/// SwAV's swapped-prediction loss and the Sinkhorn-Knopp equipartition it relies on.

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>
#include <medcl/losses/dino.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cmath>
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

} // namespace detail

namespace functional {

/// SwAV loss as lightly's `SwaVLoss` computes it: codes q_i come from Sinkhorn-Knopp on each
/// high-resolution view's prototype scores (with the queue's scores appended when given, without
/// gradient); every other view v (high or low resolution) predicts them:
/// \f[ \mathcal{L} = \frac{1}{H}\sum_{i=1}^{H}\frac{1}{V-1}\sum_{v\ne i}
///     -\frac1B\sum_b \sum_k q_{i,bk}\log\mathrm{softmax}(z_{v,b}/\tau)_k \f]
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
    at::Tensor sub;
    for (size_t v = 0; v < high_resolution_outputs.size(); ++v) {
      if (v != i) {
        auto term = subloss(high_resolution_outputs[v], q);
        sub = sub.defined() ? sub + term : term;
      }
    }
    for (const auto& z : low_resolution_outputs) {
      auto term = subloss(z, q);
      sub = sub.defined() ? sub + term : term;
    }
    sub = sub / static_cast<double>(n_crops - 1);
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
