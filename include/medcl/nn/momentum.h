#pragma once

/// \file
/// Momentum (EMA) copies of networks and the cosine momentum schedule of BYOL, MoCo v3 and DINO.

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>

#include <medcl/core/json.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace medcl {

/// Moves every parameter of `target` towards `online`: \f$\theta_t \leftarrow m\,\theta_t +
/// (1-m)\,\theta_o\f$; buffers (batch-norm statistics) are copied. Both modules must have the same
/// structure. No gradient is recorded.
///
/// Example:
///   medcl::update_momentum(*online, *target, 0.996);
inline void update_momentum(const torch::nn::Module& online, torch::nn::Module& target, double m) {
  TORCH_CHECK(
      std::isfinite(m) && m >= 0.0 && m <= 1.0, "update_momentum: m must be in [0, 1], got ", m);
  auto op = online.named_parameters(true);
  auto tp = target.named_parameters(true);
  TORCH_CHECK(
      op.size() == tp.size(),
      "update_momentum: online has ",
      op.size(),
      " parameters, target has ",
      tp.size());
  c10::NoGradGuard no_grad;
  for (const auto& item : op) {
    auto* t = tp.find(item.key());
    TORCH_CHECK(t != nullptr, "update_momentum: target has no parameter '", item.key(), "'");
    TORCH_CHECK(
        t->sizes() == item.value().sizes(),
        "update_momentum: parameter '",
        item.key(),
        "' has shape ",
        item.value().sizes(),
        " online and ",
        t->sizes(),
        " in target");
    t->mul_(m).add_(item.value().detach().to(t->options()), 1.0 - m);
  }
  auto ob = online.named_buffers(true);
  auto tb = target.named_buffers(true);
  for (const auto& item : ob) {
    auto* t = tb.find(item.key());
    TORCH_CHECK(t != nullptr, "update_momentum: target has no buffer '", item.key(), "'");
    t->copy_(item.value());
  }
}

/// Cosine schedule from `start_value` at step 0 to `end_value` at step max_steps - 1, as lightly's
/// `cosine_schedule`: \f$v = e - (e - s)\,\frac{\cos(\pi\,t/(T-1)) + 1}{2}\f$.
/// Used for the EMA momentum (0.996 -> 1) and DINO's teacher temperature.
inline double
cosine_schedule(int64_t step, int64_t max_steps, double start_value, double end_value) {
  TORCH_CHECK(max_steps >= 1, "cosine_schedule: max_steps must be >= 1, got ", max_steps);
  TORCH_CHECK(step >= 0, "cosine_schedule: step must be >= 0, got ", step);
  if (max_steps == 1) {
    return end_value;
  }
  const double pi = std::acos(-1.0);
  const double t =
      static_cast<double>(std::min(step, max_steps - 1)) / static_cast<double>(max_steps - 1);
  return end_value - (end_value - start_value) * (std::cos(pi * t) + 1.0) / 2.0;
}

/// The EMA momentum m of a teacher (BYOL's target, MoCo's key encoder, DINO's teacher) on the
/// cosine schedule of those papers: m goes from `start` at step 0 to `end` at the last step, by
/// `cosine_schedule`. After every optimiser step, `advance` sets the step's m and `update` moves
/// each teacher towards its online network with it (`update_momentum`). A run of 0 steps counts as
/// one step.
///
/// Example:
///   medcl::MomentumSchedule ema(0.996, 1.0);
///   // after optimizer.step():
///   ema.advance(step, total_steps);
///   ema.update(*encoder, *target_encoder);
///   ema.describe();  // {"kind":"cosine","start":0.996,"end":1.0}
class MomentumSchedule {
 public:
  /// BYOL's and DINO's schedule: 0.996 -> 1.
  MomentumSchedule() = default;
  /// m from `start` at step 0 to `end` at the last step; both in [0, 1].
  MomentumSchedule(double start, double end) : start_(start), end_(end) {
    TORCH_CHECK(
        start >= 0 && start <= 1 && end >= 0 && end <= 1,
        "MomentumSchedule: start and end must be in [0, 1], got ",
        start,
        " and ",
        end);
  }

  /// The momentum at step 0.
  double start() const {
    return start_;
  }
  /// The momentum at the last step.
  double end() const {
    return end_;
  }

  /// The momentum at `step` of a run of `total_steps` optimiser steps.
  double at(int64_t step, int64_t total_steps) const {
    return cosine_schedule(step, std::max<int64_t>(total_steps, 1), start_, end_);
  }

  /// Sets `current()` to `at(step, total_steps)` and returns it.
  double advance(int64_t step, int64_t total_steps) {
    current_ = at(step, total_steps);
    return current_;
  }

  /// The momentum set by the last `advance` (0 before the first).
  double current() const {
    return current_;
  }

  /// Moves `target` towards `online` with `current()` (see `update_momentum`).
  void update(const torch::nn::Module& online, torch::nn::Module& target) const {
    update_momentum(online, target, current_);
  }

  /// The schedule for reports: {"kind":"cosine","start":<start>,"end":<end>}.
  Json describe() const {
    auto j = Json::object();
    j["kind"] = "cosine";
    j["start"] = start_;
    j["end"] = end_;
    return j;
  }

 private:
  double start_ = 0.996;
  double end_ = 1.0;
  double current_ = 0.0;
};

} // namespace medcl
