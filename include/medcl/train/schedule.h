#pragma once

/// \file
/// Per-step schedules: linear warm-up then cosine decay, for the learning rate, the weight decay,
/// the EMA momentum of BYOL/MoCo/DINO and DINO's teacher temperature.

#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <medcl/core/json.h>

#include <cmath>
#include <cstdint>
#include <utility>

namespace medcl {
namespace train {

/// Options of `CosineSchedule`.
struct CosineScheduleOptions {
  CosineScheduleOptions(double base, double final_value, int64_t total_steps)
      : base_(base), final_value_(final_value), total_steps_(total_steps) {}
  /// Value at the end of the warm-up and at the start of the cosine.
  TORCH_ARG(double, base);
  /// Value at the last step (total_steps - 1) and after it.
  TORCH_ARG(double, final_value);
  /// Number of steps T of the whole schedule (warm-up included), >= 1.
  TORCH_ARG(int64_t, total_steps);
  /// Number of warm-up steps W, 0 <= W <= T. Default: 0
  TORCH_ARG(int64_t, warmup_steps) = 0;
  /// Value at step 0 when W > 0. Default: 0
  TORCH_ARG(double, warmup_start) = 0.0;
};

/// Linear warm-up from `warmup_start` to `base` over W steps, then a half cosine from `base` to
/// `final_value` ending exactly at the last step T - 1, then constant. For a step s (0-based):
/// \f[
///   v(s) = \begin{cases}
///     v_0 + (b - v_0)\,\frac{s}{W} & s < W
///     \\ f + (b - f)\,\frac{1 + \cos\left(\pi\,\frac{s - W}{T - 1 - W}\right)}{2} & W \le s < T -
///     1
///     \\ f & s \ge T - 1
///   \end{cases}
/// \f]
/// So step 0 is `warmup_start` (or `base` when W = 0), step W is `base` (when W < T - 1), the
/// cosine's midpoint W + (T - 1 - W)/2 is (b + f)/2, and step T - 1 and every later step are
/// `final_value`. When W = T the whole run is warm-up and steps >= T are `final_value`.
///
/// Relation to the reference implementations: after the warm-up this is lightly's
/// `cosine_schedule(s - W, T - W, base, final)`, which also reaches `final` at the last step;
/// DINO's `cosine_scheduler` instead divides by T - W (so its last step stays slightly above
/// `final`) and ends its `linspace` warm-up at `base` one step earlier (step W - 1). Lightly's
/// `cosine_warmup_schedule` starts the warm-up at (s + 1)/W instead of s/W.
///
/// Shape: a scalar function of the step; cheap (one cosine), call it every step.
///
/// Example:
///   medcl::train::CosineSchedule lr({0.3 * batch / 256, 0.0, steps});          // no warm-up
///   medcl::train::CosineSchedule lr2(
///       medcl::train::CosineScheduleOptions(1e-3, 1e-6, steps).warmup_steps(500));
///   medcl::train::CosineSchedule ema({0.996, 1.0, steps});                     // BYOL momentum
///   set_learning_rate(*opt, lr2(step));
class CosineSchedule {
 public:
  explicit CosineSchedule(CosineScheduleOptions options) : options_(std::move(options)) {
    constexpr const char* fn = "CosineSchedule";
    const auto& o = options_;
    TORCH_CHECK(o.total_steps() >= 1, fn, ": total_steps must be >= 1, got ", o.total_steps());
    TORCH_CHECK(
        o.warmup_steps() >= 0 && o.warmup_steps() <= o.total_steps(),
        fn,
        ": warmup_steps must be in [0, total_steps = ",
        o.total_steps(),
        "], got ",
        o.warmup_steps());
    TORCH_CHECK(
        std::isfinite(o.base()) && std::isfinite(o.final_value()) &&
            std::isfinite(o.warmup_start()),
        fn,
        ": values must be finite, got base ",
        o.base(),
        ", final_value ",
        o.final_value(),
        ", warmup_start ",
        o.warmup_start());
  }

  /// A schedule that is `value` at every step.
  static CosineSchedule constant(double value) {
    return CosineSchedule(CosineScheduleOptions(value, value, 1));
  }

  /// The value at step `step` >= 0 (see the class formula).
  double value(int64_t step) const {
    TORCH_CHECK(step >= 0, "CosineSchedule::value: step must be >= 0, got ", step);
    const auto& o = options_;
    const int64_t w = o.warmup_steps();
    const int64_t last = o.total_steps() - 1;
    if (step < w) {
      return o.warmup_start() +
          (o.base() - o.warmup_start()) * static_cast<double>(step) / static_cast<double>(w);
    }
    if (step >= last) {
      return o.final_value();
    }
    const double pi = std::acos(-1.0);
    const double t = static_cast<double>(step - w) / static_cast<double>(last - w);
    return o.final_value() + (o.base() - o.final_value()) * (1.0 + std::cos(pi * t)) / 2.0;
  }

  /// Same as `value(step)`.
  double operator()(int64_t step) const {
    return value(step);
  }

  const CosineScheduleOptions& options() const {
    return options_;
  }

  /// {"type":"cosine","base":…,"final_value":…,"total_steps":…,"warmup_steps":…,"warmup_start":…}
  Json describe() const {
    Json j = Json::object();
    j["type"] = (options_.base() == options_.final_value() && options_.warmup_steps() == 0)
        ? "constant"
        : "cosine";
    j["base"] = options_.base();
    j["final_value"] = options_.final_value();
    j["total_steps"] = options_.total_steps();
    j["warmup_steps"] = options_.warmup_steps();
    j["warmup_start"] = options_.warmup_start();
    return j;
  }

 private:
  CosineScheduleOptions options_;
};

} // namespace train
} // namespace medcl
