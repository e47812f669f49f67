#pragma once

/// \file
/// Linear probe: L2-regularised multinomial logistic regression on frozen embeddings, the strength
/// chosen on a validation split. The standard frozen-encoder protocol of SimCLR, MoCo and DINO.

#include <medcl/core/checks.h>
#include <medcl/eval/metrics.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/optim/lbfgs.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace eval {

/// How the L2 strength is chosen on the validation split.
enum class ProbeSelection {
  /// Lowest mean validation log-loss (cross-entropy). Any number of classes.
  LogLoss,
  /// Highest validation AUROC of the class-1 probability. Two classes only; the validation split
  /// must hold both.
  Auroc,
};

/// The default L2 grid: 10^-6, 10^-5, ..., 10^2 (nine strengths).
inline std::vector<double> default_l2_grid() {
  std::vector<double> g;
  for (int e = -6; e <= 2; ++e) {
    g.push_back(std::pow(10.0, e));
  }
  return g;
}

/// Options of `fit_linear_probe`.
struct LinearProbeOptions {
  /// Candidate L2 strengths λ (each > 0). Default: 10^-6 ... 10^2, log-spaced (nine values)
  TORCH_ARG(std::vector<double>, l2_grid) = default_l2_grid();
  /// Criterion on the validation split. Default: ProbeSelection::LogLoss
  TORCH_ARG(ProbeSelection, selection) = ProbeSelection::LogLoss;
  /// L-BFGS iterations per fit. Default: 200
  TORCH_ARG(int64_t, max_iter) = 200;
  /// L-BFGS stops when the largest gradient entry is below this. Default: 1e-7
  TORCH_ARG(double, tolerance) = 1e-7;
};

/// A fitted linear probe: standardisation, weights, and the record of the L2 choice.
struct LinearProbe {
  int64_t num_classes = 0;
  /// Per-feature mean and standard deviation of the training rows (float64, [D]).
  at::Tensor mean;
  at::Tensor scale;
  /// Weights [D, C] and biases [C] on standardised features (float64).
  at::Tensor weight;
  at::Tensor bias;
  /// The chosen strength.
  double l2 = 0;
  /// The candidates in the order given, and their validation score (log-loss or AUROC); empty
  /// when the probe was fitted with a single strength and no validation split.
  std::vector<double> l2_grid;
  std::vector<double> validation_scores;
  /// "log_loss", "auroc" or "fixed".
  std::string selection;
  /// Final training objective (mean cross-entropy + λ/2 ||W||²).
  double train_objective = 0;

  /// Class probabilities [N, C] (float64, rows sum to 1) of embeddings [N, D].
  at::Tensor predict_proba(const at::Tensor& x) const {
    TORCH_CHECK(weight.defined(), "LinearProbe::predict_proba: the probe is not fitted");
    TORCH_CHECK(
        x.defined() && x.dim() == 2 && x.size(1) == weight.size(0),
        "LinearProbe::predict_proba: expected [N, ",
        weight.size(0),
        "] embeddings, got ",
        x.defined() ? x.sizes() : at::IntArrayRef{});
    TORCH_CHECK(
        medcl::detail::all_finite(x), "LinearProbe::predict_proba: embeddings contain NaN or Inf");
    c10::NoGradGuard no_grad;
    auto z = (x.to(at::kCPU, at::kDouble) - mean) / scale;
    return at::softmax(z.mm(weight) + bias, 1);
  }

  /// Probability of class `cls` for each row, as a vector (for the metrics).
  std::vector<double> scores(const at::Tensor& x, int64_t cls = 1) const {
    TORCH_CHECK(
        cls >= 0 && cls < num_classes,
        "LinearProbe::scores: class must be in [0, ",
        num_classes,
        "), got ",
        cls);
    auto p = predict_proba(x).select(1, cls).contiguous();
    return std::vector<double>(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
  }
};

namespace detail {

/// Labels of a split: int64 [n] with values in [0, num_classes).
inline void check_label_rows(
    const char* fn,
    const char* split,
    int64_t n,
    const at::Tensor& y,
    int64_t num_classes) {
  TORCH_CHECK(
      y.defined() && y.dim() == 1 && y.size(0) == n && y.scalar_type() == at::kLong,
      fn,
      ": expected int64 ",
      split,
      " labels of shape [",
      n,
      "], got ",
      y.defined() ? y.sizes() : at::IntArrayRef{},
      " ",
      y.defined() ? y.scalar_type() : at::ScalarType::Undefined);
  const int64_t lo = y.min().item<int64_t>();
  const int64_t hi = y.max().item<int64_t>();
  TORCH_CHECK(
      lo >= 0 && hi < num_classes,
      fn,
      ": ",
      split,
      " labels must be in [0, ",
      num_classes,
      "), got values in [",
      lo,
      ", ",
      hi,
      "]");
}

inline void check_probe_rows(
    const char* fn,
    const char* split,
    const at::Tensor& x,
    const at::Tensor& y,
    int64_t num_classes) {
  TORCH_CHECK(x.defined() && y.defined(), fn, ": the ", split, " split is undefined");
  TORCH_CHECK(
      x.dim() == 2 && at::isFloatingType(x.scalar_type()),
      fn,
      ": expected ",
      split,
      " embeddings of shape [N, D] and a floating dtype, got ",
      x.sizes(),
      " ",
      x.scalar_type());
  TORCH_CHECK(
      x.size(0) > 0 && x.size(1) > 0, fn, ": the ", split, " split is empty (", x.sizes(), ")");
  check_label_rows(fn, split, x.size(0), y, num_classes);
  TORCH_CHECK(medcl::detail::all_finite(x), fn, ": the ", split, " embeddings contain NaN or Inf");
}

// Fits W, b for one strength from zero, L-BFGS with a strong-Wolfe line search, in float64.
inline void fit_softmax_l2(
    const at::Tensor& z,
    const at::Tensor& y,
    int64_t num_classes,
    double l2,
    const LinearProbeOptions& options,
    LinearProbe& out) {
  c10::AutoGradMode grad(true);
  auto w = at::zeros({z.size(1), num_classes}, z.options()).requires_grad_(true);
  auto b = at::zeros({num_classes}, z.options()).requires_grad_(true);
  torch::optim::LBFGS opt(
      std::vector<at::Tensor>{w, b},
      torch::optim::LBFGSOptions(1.0)
          .max_iter(options.max_iter())
          .tolerance_grad(options.tolerance())
          .tolerance_change(1e-12)
          .history_size(20)
          .line_search_fn("strong_wolfe"));
  auto objective = [&]() {
    return at::cross_entropy_loss(z.mm(w) + b, y) + 0.5 * l2 * w.pow(2).sum();
  };
  opt.step([&]() {
    opt.zero_grad();
    auto loss = objective();
    loss.backward();
    return loss;
  });
  c10::NoGradGuard no_grad;
  out.weight = w.detach().clone();
  out.bias = b.detach().clone();
  out.train_objective = objective().item<double>();
}

} // namespace detail

/// Fits the probe with one L2 strength (`options.l2_grid()` must hold exactly one value), without
/// a validation split. Features are standardised with the training rows' mean and standard
/// deviation (a constant feature gets scale 1); the model is
/// \f[ p(c \mid x) = \mathrm{softmax}_c(z^\top W + b), \quad z = (x - \mu) / \sigma, \f]
/// fitted to minimise
/// \f[ \frac{1}{N} \sum_i -\log p(y_i \mid x_i) + \frac{\lambda}{2} \lVert W \rVert_F^2 \f]
/// (biases not penalised) by full-batch L-BFGS with a strong-Wolfe line search in float64, from
/// zero: deterministic. With two classes this is binary logistic regression.
///
/// Shape: x [N, D] floating, y [N] int64 in [0, C).
///
/// Example:
///   auto probe = medcl::eval::fit_linear_probe(z_train, y_train, 2,
///                                              LinearProbeOptions().l2_grid({1e-2}));
inline LinearProbe fit_linear_probe(
    const at::Tensor& x,
    const at::Tensor& y,
    int64_t num_classes,
    const LinearProbeOptions& options = LinearProbeOptions().l2_grid({1e-2})) {
  constexpr const char* fn = "fit_linear_probe";
  TORCH_CHECK(num_classes >= 2, fn, ": num_classes must be >= 2, got ", num_classes);
  TORCH_CHECK(
      options.l2_grid().size() == 1,
      fn,
      ": without a validation split the L2 grid must hold one strength, got ",
      options.l2_grid().size(),
      "; pass validation rows to choose among them");
  detail::check_probe_rows(fn, "training", x, y, num_classes);
  const double l2 = options.l2_grid()[0];
  TORCH_CHECK(std::isfinite(l2) && l2 > 0, fn, ": L2 strengths must be > 0, got ", l2);
  TORCH_CHECK(options.max_iter() >= 1, fn, ": max_iter must be >= 1, got ", options.max_iter());
  auto yc = y.to(at::kCPU);
  TORCH_CHECK(
      yc.min().item<int64_t>() != yc.max().item<int64_t>(),
      fn,
      ": the training labels hold a single class (",
      yc[0].item<int64_t>(),
      "); a probe needs at least two");
  LinearProbe out;
  out.num_classes = num_classes;
  auto xd = x.detach().to(at::kCPU, at::kDouble);
  out.mean = xd.mean(0);
  auto sd = xd.std(0, /*unbiased=*/false);
  out.scale = at::where(sd > 1e-12, sd, at::ones_like(sd));
  auto z = (xd - out.mean) / out.scale;
  detail::fit_softmax_l2(z, yc, num_classes, l2, options, out);
  out.l2 = l2;
  out.selection = "fixed";
  return out;
}

/// Fits the probe for every strength λ of `options.l2_grid()` on the training rows, scores each on
/// the validation rows (mean log-loss, lower is better; or AUROC for two classes, higher is
/// better) and keeps the best (ties go to the stronger λ). The kept model is the one fitted on the
/// training rows alone with that λ. The result records the chosen λ and every candidate's score.
///
/// Shape: x [N, D], y [N] int64 in [0, C); val_x [M, D], val_y [M].
///
/// Example:
///   auto probe = medcl::eval::fit_linear_probe(z_train, y_train, z_val, y_val, 2);
///   auto auc = medcl::eval::auroc_delong(probe.scores(z_test), y_test_vector);
inline LinearProbe fit_linear_probe(
    const at::Tensor& x,
    const at::Tensor& y,
    const at::Tensor& val_x,
    const at::Tensor& val_y,
    int64_t num_classes,
    const LinearProbeOptions& options = {}) {
  constexpr const char* fn = "fit_linear_probe";
  TORCH_CHECK(num_classes >= 2, fn, ": num_classes must be >= 2, got ", num_classes);
  TORCH_CHECK(!options.l2_grid().empty(), fn, ": the L2 grid is empty");
  for (double l : options.l2_grid()) {
    TORCH_CHECK(std::isfinite(l) && l > 0, fn, ": L2 strengths must be > 0, got ", l);
  }
  detail::check_probe_rows(fn, "training", x, y, num_classes);
  detail::check_probe_rows(fn, "validation", val_x, val_y, num_classes);
  TORCH_CHECK(
      val_x.size(1) == x.size(1),
      fn,
      ": training and validation embedding sizes differ: ",
      x.size(1),
      " vs ",
      val_x.size(1));
  const bool by_auroc = options.selection() == ProbeSelection::Auroc;
  std::vector<int64_t> vy;
  if (by_auroc) {
    TORCH_CHECK(num_classes == 2, fn, ": AUROC selection needs two classes, got ", num_classes);
    auto c = val_y.to(at::kCPU).contiguous();
    vy.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    const auto pos = std::count(vy.begin(), vy.end(), int64_t{1});
    TORCH_CHECK(
        pos > 0 && pos < static_cast<int64_t>(vy.size()),
        fn,
        ": AUROC selection needs both classes in the validation labels, got ",
        pos,
        " positive(s) and ",
        static_cast<int64_t>(vy.size()) - pos,
        " negative(s)");
  }
  LinearProbe best;
  double best_score = 0;
  std::vector<double> scores;
  auto vyc = val_y.to(at::kCPU);
  for (double l : options.l2_grid()) {
    auto probe = fit_linear_probe(x, y, num_classes, LinearProbeOptions(options).l2_grid({l}));
    double s = 0;
    if (by_auroc) {
      s = auroc(probe.scores(val_x), vy);
    } else {
      auto p = probe.predict_proba(val_x).clamp_min(1e-300);
      s = -p.log().gather(1, vyc.unsqueeze(1)).mean().item<double>();
    }
    scores.push_back(s);
    // Ties (within 1e-12) go to the stronger strength.
    const double gain = by_auroc ? s - best_score : best_score - s;
    if (scores.size() == 1 || gain > 1e-12 || (std::abs(gain) <= 1e-12 && l > best.l2)) {
      best = probe;
      best_score = s;
    }
  }
  best.l2_grid = options.l2_grid();
  best.validation_scores = scores;
  best.selection = by_auroc ? "auroc" : "log_loss";
  return best;
}

} // namespace eval
} // namespace medcl
