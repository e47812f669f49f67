#pragma once

/// \file
/// DINO's self-distillation loss with its centre and teacher-temperature warm-up, in one process
/// or across the ranks of a process group.

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>
#include <medcl/dist/process_group.h>
#include <medcl/losses/distributed.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <algorithm>
#include <string>
#include <vector>

namespace medcl {

/// Options of `dino_loss` and `DINOLoss`. The functional form uses the two temperatures; the
/// module (which owns the centre and the teacher-temperature warm-up) needs `output_dim` too.
///
/// Example:
///   medcl::DINOLoss criterion(medcl::DINOLossOptions(65536).warmup_teacher_temperature(0.04));
///   auto loss = medcl::functional::dino_loss(s, t, center, medcl::DINOLossOptions());
struct DINOLossOptions {
  DINOLossOptions() = default;
  /// Options for a module whose head has `output_dim` outputs.
  explicit DINOLossOptions(int64_t output_dim) : output_dim_(output_dim) {}
  /// Temperature of the teacher's softmax (the module: after the warm-up). Default: 0.04
  TORCH_ARG(double, teacher_temperature) = 0.04;
  /// Temperature of the student's softmax. Default: 0.1
  TORCH_ARG(double, student_temperature) = 0.1;
  /// Size K of the head's output; the module needs it (> 0), the functional form ignores it.
  /// Default: 0 (unset)
  TORCH_ARG(int64_t, output_dim) = 0;
  /// Module: teacher temperature at epoch 0 of the warm-up. Default: 0.04
  TORCH_ARG(double, warmup_teacher_temperature) = 0.04;
  /// Module: epochs of the linear warm-up. Default: 30
  TORCH_ARG(int64_t, warmup_teacher_temperature_epochs) = 30;
  /// Module: momentum of the centre's moving average. Default: 0.9
  TORCH_ARG(double, center_momentum) = 0.9;
  /// Data-parallel training: the process group whose ranks' batches form one global batch (every
  /// rank's rows in rank order). The loss returned is this rank's share (divided by the global
  /// batch size, so that the shares summed over the ranks equal the one-process loss on the
  /// concatenated batch), and the module's centre moves towards the mean of every rank's teacher
  /// outputs (an all-reduce of their sum and count), so it stays the same on every rank. See
  /// docs/distributed.md. Default: one process
  TORCH_ARG(dist::ProcessGroup, group) = {};
};

/// Earlier name of the module's options (now one DINOLossOptions for both forms), kept for one
/// release.
using DINOLossModuleOptions [[deprecated("use DINOLossOptions(output_dim)")]] = DINOLossOptions;

namespace detail {

/// `rank_may_be_empty`: the views are one rank's share of a global batch and may hold no rows.
inline void check_view_list(
    const char* fn,
    const char* name,
    const std::vector<at::Tensor>& views,
    const at::Tensor& like,
    bool rank_may_be_empty = false) {
  TORCH_CHECK(!views.empty(), fn, ": ", name, " is an empty list of views");
  for (size_t i = 0; i < views.size(); ++i) {
    const auto& v = views[i];
    if (rank_may_be_empty) {
      check_rank_embedding(fn, name, v, 2);
    } else {
      check_embedding(fn, name, v, 2);
    }
    TORCH_CHECK(
        v.sizes() == like.sizes(),
        fn,
        ": every view must have shape ",
        like.sizes(),
        ", got ",
        v.sizes(),
        " for ",
        name,
        "[",
        i,
        "]");
    check_same_device_dtype(fn, "the first view", like, name, v);
  }
}

/// The checks of `dino_loss`; `rank_may_be_empty`: the outputs are one rank's share of a global
/// batch and may hold no rows.
inline void check_dino_inputs(
    const char* fn,
    const std::vector<at::Tensor>& student_outputs,
    const std::vector<at::Tensor>& teacher_outputs,
    const at::Tensor& center,
    const DINOLossOptions& options,
    bool rank_may_be_empty) {
  TORCH_CHECK(!student_outputs.empty(), fn, ": student_outputs is an empty list of views");
  TORCH_CHECK(!teacher_outputs.empty(), fn, ": teacher_outputs is an empty list of views");
  const auto& first = student_outputs.front();
  if (rank_may_be_empty) {
    check_rank_embedding(fn, "student_outputs[0]", first, 2);
  } else {
    check_embedding(fn, "student_outputs[0]", first, 2);
  }
  check_view_list(fn, "student_outputs", student_outputs, first, rank_may_be_empty);
  check_view_list(fn, "teacher_outputs", teacher_outputs, first, rank_may_be_empty);
  check_temperature(fn, "teacher_temperature", options.teacher_temperature());
  check_temperature(fn, "student_temperature", options.student_temperature());
  const int64_t k = first.size(1);
  TORCH_CHECK(
      center.defined() && center.numel() == k && (center.dim() == 1 || center.dim() == 2),
      fn,
      ": expected center of shape [",
      k,
      "] or [1, ",
      k,
      "], got ",
      center.defined() ? center.sizes() : at::IntArrayRef{});
  TORCH_CHECK(
      center.device() == first.device(),
      fn,
      ": center must be on the outputs' device ",
      first.device(),
      ", got ",
      center.device());
  const size_t n_s = student_outputs.size();
  const size_t n_t = teacher_outputs.size();
  TORCH_CHECK(
      n_s * n_t > std::min(n_s, n_t),
      fn,
      ": needs a pair of different views; got ",
      n_t,
      " teacher view(s) and ",
      n_s,
      " student view(s)");
  for (const auto& v : student_outputs) {
    check_finite(fn, "student_outputs", v);
  }
  for (const auto& v : teacher_outputs) {
    check_finite(fn, "teacher_outputs", v);
  }
}

/// DINO's cross-entropy summed over the rows of the outputs and the pairs of different views,
/// divided by the number of pairs and by `batch_size` (this batch's, or the global batch's across
/// ranks).
inline at::Tensor dino_cross_entropy(
    const std::vector<at::Tensor>& student_outputs,
    const std::vector<at::Tensor>& teacher_outputs,
    const at::Tensor& center,
    const DINOLossOptions& options,
    int64_t batch_size) {
  const auto& first = student_outputs.front();
  const int64_t k = first.size(1);
  const size_t n_s = student_outputs.size();
  const size_t n_t = teacher_outputs.size();
  const auto acc = accumulation_dtype(first.scalar_type());
  auto c = center.reshape({1, 1, k}).to(acc);
  auto t = at::stack(teacher_outputs, 0).detach().to(acc);         // [T, B, K]
  auto tp = ((t - c) / options.teacher_temperature()).softmax(-1); // [T, B, K]
  auto s = at::stack(student_outputs, 0).to(acc);                  // [S, B, K]
  auto sl = (s / options.student_temperature()).log_softmax(-1);   // [S, B, K]
  const int64_t b = first.size(0);
  auto pair = -at::mm(
      tp.reshape({static_cast<int64_t>(n_t), b * k}),
      sl.reshape({static_cast<int64_t>(n_s), b * k}).t()); // [T, S]
  const int64_t diag = static_cast<int64_t>(std::min(n_s, n_t));
  auto not_same = at::ones_like(pair);
  not_same.diagonal().zero_();
  const double n_terms = static_cast<double>(n_t * n_s) - static_cast<double>(diag);
  return (pair * not_same).sum() / (n_terms * static_cast<double>(batch_size));
}

} // namespace detail

namespace functional {

/// DINO loss (Caron et al. 2021, https://arxiv.org/abs/2104.14294) as lightly's `DINOLoss`
/// computes it: for every pair of a teacher view t and a student view s with t != s (student
/// views are indexed so that its first views are the teacher's global crops),
/// \f[ \mathcal{L} = \frac{1}{|\{(t,s): t\ne s\}|}\sum_{t\ne s} \frac1B\sum_b
///     -\sum_k \mathrm{softmax}\big(\tfrac{g_t - c}{T_t}\big)_{bk}
///     \log\mathrm{softmax}\big(\tfrac{f_s}{T_s}\big)_{bk} \f]
/// The teacher receives no gradient. Softmaxes are computed in float32 (float64 for double).
///
/// With `options.group()` of several ranks (data-parallel training), each rank passes its own
/// rows and gets its share: the same sum over its rows divided by the global batch size
/// \f$N = \sum_r B_r\f$ (an all-reduce of the row counts; a rank may hold no rows), so that the
/// shares summed over the ranks equal the one-process loss on the concatenated batch. It is then a
/// collective: every rank calls it; ranks that disagree on the output size, dtype, number of views
/// or temperatures, or whose own input is refused, fail together.
///
/// Shape: student_outputs V_s × [B, K], teacher_outputs V_t × [B, K], center [K] or [1, K]
/// -> 0-dim tensor.
///
/// Example:
///   auto loss = F::dino_loss({s0, s1, s2, s3}, {t0, t1}, center);
inline at::Tensor dino_loss(
    const std::vector<at::Tensor>& student_outputs,
    const std::vector<at::Tensor>& teacher_outputs,
    const at::Tensor& center,
    const DINOLossOptions& options = {}) {
  constexpr const char* fn = "dino_loss";
  const auto& group = options.group();
  if (group.size() == 1) {
    detail::check_dino_inputs(fn, student_outputs, teacher_outputs, center, options, false);
    return detail::dino_cross_entropy(
        student_outputs, teacher_outputs, center, options, student_outputs.front().size(0));
  }
  // Across ranks: every rank checks its own share, then all agree (or fail together) before the
  // global batch size is summed.
  const auto checks = [&]() {
    detail::check_dino_inputs(fn, student_outputs, teacher_outputs, center, options, true);
  };
  const auto error = detail::local_check_error(checks);
  const at::Tensor first = student_outputs.empty() ? at::Tensor() : student_outputs.front();
  const bool shaped = first.defined() && first.dim() == 2;
  detail::agree_across_ranks(
      fn,
      group,
      {detail::agreed_int("output size", shaped ? first.size(1) : -1),
       detail::agreed_text(
           "dtype", first.defined() ? std::string(c10::toString(first.scalar_type())) : ""),
       detail::agreed_int("number of student views", static_cast<int64_t>(student_outputs.size())),
       detail::agreed_int("number of teacher views", static_cast<int64_t>(teacher_outputs.size())),
       detail::agreed_double("teacher temperature", options.teacher_temperature()),
       detail::agreed_double("student temperature", options.student_temperature())},
      error);
  const int64_t n = detail::global_row_counter(group)(first.size(0));
  TORCH_CHECK(
      n > 0,
      fn,
      ": every rank's batch is empty (",
      group.size(),
      " ranks); an empty batch has no loss");
  return detail::dino_cross_entropy(student_outputs, teacher_outputs, center, options, n);
}

} // namespace functional

/// DINO loss module: owns the centre buffer [1, K] (zeros at start, updated after every forward
/// as `c = m c + (1 - m) mean(teacher outputs)`) and the teacher-temperature warm-up (linear from
/// `warmup_teacher_temperature` to `teacher_temperature` over the warm-up epochs). With
/// `options.group()` of several ranks the loss is this rank's share and the mean is over every
/// rank's teacher outputs (see `DINOLossOptions::group`).
///
/// Example:
///   medcl::DINOLoss criterion(medcl::DINOLossOptions(65536));
///   auto loss = criterion(student_views, teacher_views, epoch);
class DINOLossImpl : public torch::nn::Cloneable<DINOLossImpl> {
 public:
  explicit DINOLossImpl(DINOLossOptions opts) : options(std::move(opts)) {
    reset();
  }
  void reset() override {
    TORCH_CHECK(
        options.output_dim() > 0,
        "DINOLoss: output_dim must be > 0 (DINOLossOptions(output_dim)), got ",
        options.output_dim());
    detail::check_temperature("DINOLoss", "teacher_temperature", options.teacher_temperature());
    detail::check_temperature(
        "DINOLoss", "warmup_teacher_temperature", options.warmup_teacher_temperature());
    detail::check_temperature("DINOLoss", "student_temperature", options.student_temperature());
    TORCH_CHECK(
        options.center_momentum() >= 0 && options.center_momentum() <= 1,
        "DINOLoss: center_momentum must be in [0, 1], got ",
        options.center_momentum());
    TORCH_CHECK(
        options.warmup_teacher_temperature_epochs() >= 0,
        "DINOLoss: warmup_teacher_temperature_epochs must be >= 0, got ",
        options.warmup_teacher_temperature_epochs());
    center = register_buffer("center", at::zeros({1, options.output_dim()}));
  }
  /// The teacher temperature used at `epoch`.
  double teacher_temperature(int64_t epoch) const {
    TORCH_CHECK(epoch >= 0, "DINOLoss: epoch must be >= 0, got ", epoch);
    const int64_t w = options.warmup_teacher_temperature_epochs();
    if (epoch >= w) {
      return options.teacher_temperature();
    }
    // np.linspace(warmup, final, w)[epoch]
    const double f = w > 1 ? static_cast<double>(epoch) / static_cast<double>(w - 1) : 0.0;
    return options.warmup_teacher_temperature() +
        f * (options.teacher_temperature() - options.warmup_teacher_temperature());
  }
  /// Loss with the current centre, then the centre update (no gradient).
  at::Tensor forward(
      const std::vector<at::Tensor>& student_outputs,
      const std::vector<at::Tensor>& teacher_outputs,
      int64_t epoch = 0) {
    auto loss = functional::dino_loss(
        student_outputs,
        teacher_outputs,
        center.to(student_outputs.empty() ? center.device() : student_outputs.front().device()),
        DINOLossOptions(options).teacher_temperature(teacher_temperature(epoch)));
    update_center(teacher_outputs);
    return loss;
  }
  /// c = m c + (1 - m) mean over views and batch of the teacher outputs. With a process group of
  /// several ranks, the mean over every rank's teacher outputs (their sum and count all-reduced in
  /// float64), so that the centre is the one-process centre of the concatenated batch on every
  /// rank; a collective then (every rank calls it, forward does).
  void update_center(const std::vector<at::Tensor>& teacher_outputs) {
    c10::NoGradGuard no_grad;
    const auto& group = options.group();
    if (group.size() == 1) {
      auto batch_center =
          at::cat(teacher_outputs, 0).detach().to(center.scalar_type()).mean(0, true);
      center.mul_(options.center_momentum())
          .add_(batch_center.to(center.device()), 1.0 - options.center_momentum());
      return;
    }
    constexpr const char* fn = "DINOLoss::update_center";
    const int64_t k = center.size(1);
    const auto error = detail::local_check_error([&]() {
      TORCH_CHECK(!teacher_outputs.empty(), fn, ": teacher_outputs is an empty list of views");
      for (const auto& t : teacher_outputs) {
        TORCH_CHECK(
            t.defined() && t.dim() == 2 && t.size(1) == k,
            fn,
            ": expected teacher outputs of shape [B, ",
            k,
            "], got ",
            t.defined() ? t.sizes() : at::IntArrayRef{});
      }
    });
    detail::agree_across_ranks(
        fn,
        group,
        {detail::agreed_int("output size", k),
         detail::agreed_double("center momentum", options.center_momentum())},
        error);
    // [sum over this rank's rows, row count], summed over the ranks.
    auto rows = at::cat(teacher_outputs, 0).detach().to(center.device()).to(at::kDouble);
    auto stats =
        at::cat({rows.sum(0), at::full({1}, static_cast<double>(rows.size(0)), rows.options())}, 0);
    group.all_reduce(stats);
    const double n = stats[k].item<double>();
    TORCH_CHECK(n > 0, fn, ": every rank's teacher outputs are empty");
    auto batch_center = (stats.slice(0, 0, k) / n).reshape({1, k}).to(center.scalar_type());
    center.mul_(options.center_momentum()).add_(batch_center, 1.0 - options.center_momentum());
  }

  DINOLossOptions options;
  at::Tensor center;
};
TORCH_MODULE(DINOLoss);

} // namespace medcl
