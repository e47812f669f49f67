#pragma once

/// \file
/// Augmentations of physiological signals (ECG, EEG) in the layout [B, leads, T], batched, each
/// sample with its own random draw from the policy's generator.

#include <medcl/augment/policy.h>

#include <ATen/ATen.h>

#include <cmath>
#include <string>
#include <vector>

namespace medcl {
namespace augment {
namespace detail {

constexpr double kPi = 3.14159265358979323846;

inline std::vector<Modality> signal_modalities() {
  return {Modality::ECG, Modality::EEG};
}

/// Shape [B, 1, 1] (or [B, L, 1] when per lead) for per-sample (per-lead) factors.
inline std::vector<int64_t> per_sample_shape(const at::Tensor& x, bool per_lead) {
  return {x.size(0), per_lead ? x.size(1) : 1, 1};
}

} // namespace detail

/// Multiplies each record (or each lead) by a factor drawn uniformly from [lo, hi]: the amplitude
/// of an ECG varies with electrode contact and body habitus, not with the rhythm.
class AmplitudeScale : public Transform {
 public:
  AmplitudeScale(double lo, double hi, bool per_lead = false)
      : lo_(lo), hi_(hi), per_lead_(per_lead) {
    check_range("AmplitudeScale", "scale", lo, hi);
    TORCH_CHECK(lo > 0, "AmplitudeScale: scales must be > 0, got [", lo, ", ", hi, "]");
  }
  std::string name() const override {
    return "amplitude_scale";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"amplitude scale"};
  }
  Json parameters() const override {
    return detail::json_object({{"lo", lo_}, {"hi", hi_}, {"per_lead", per_lead_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    auto s = random_uniform(
        detail::per_sample_shape(in.values, per_lead_), lo_, hi_, gen, in.values.options());
    return {in.values * s, in.mask};
  }

 private:
  double lo_, hi_;
  bool per_lead_;
};

/// Adds white Gaussian noise of standard deviation `sigma` (in the signal's unit).
class GaussianJitter : public AdditiveGaussianNoise {
 public:
  explicit GaussianJitter(double sigma)
      : AdditiveGaussianNoise(
            "GaussianJitter",
            "gaussian_jitter",
            detail::signal_modalities(),
            sigma) {}
};

/// Adds baseline wander: per lead a sinusoid a·sin(2π f t + φ) with a ~ U(0, max_amplitude),
/// f ~ U(0.05 Hz, max_frequency_hz), φ ~ U(0, 2π) — respiration and movement shift the baseline
/// slowly without changing the waveform.
class BaselineWander : public Transform {
 public:
  BaselineWander(double max_amplitude, double max_frequency_hz, double sampling_rate_hz)
      : amp_(max_amplitude), fmax_(max_frequency_hz), fs_(sampling_rate_hz) {
    TORCH_CHECK(
        std::isfinite(amp_) && amp_ >= 0, "BaselineWander: max_amplitude must be >= 0, got ", amp_);
    TORCH_CHECK(
        fs_ > 0 && std::isfinite(fs_), "BaselineWander: sampling_rate_hz must be > 0, got ", fs_);
    TORCH_CHECK(
        fmax_ >= 0.05 && fmax_ < fs_ / 2,
        "BaselineWander: max_frequency_hz must be in [0.05, fs/2), got ",
        fmax_);
  }
  std::string name() const override {
    return "baseline_wander";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"baseline wander"};
  }
  Json parameters() const override {
    return detail::json_object(
        {{"max_amplitude", amp_}, {"max_frequency_hz", fmax_}, {"sampling_rate_hz", fs_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    auto o = x.options();
    auto shape = detail::per_sample_shape(x, true);
    auto a = random_uniform(shape, 0.0, amp_, gen, o);
    auto f = random_uniform(shape, 0.05, fmax_, gen, o);
    auto phi = random_uniform(shape, 0.0, 2 * detail::kPi, gen, o);
    auto t = at::arange(x.size(2), o).div_(fs_).view({1, 1, -1});
    // One [B, L, T] temporary, updated in place.
    auto wave = (f * (2 * detail::kPi)) * t;
    return {wave.add_(phi).sin_().mul_(a).add_(x), in.mask};
  }

 private:
  double amp_, fmax_, fs_;
};

/// Adds mains interference at `frequency_hz` (50 or 60 Hz) with amplitude ~ U(0, max_amplitude)
/// and a random phase, the same on every lead of a record.
class PowerlineInterference : public Transform {
 public:
  PowerlineInterference(double frequency_hz, double max_amplitude, double sampling_rate_hz)
      : f_(frequency_hz), amp_(max_amplitude), fs_(sampling_rate_hz) {
    TORCH_CHECK(
        fs_ > 0 && std::isfinite(fs_),
        "PowerlineInterference: sampling_rate_hz must be > 0, got ",
        fs_);
    TORCH_CHECK(
        f_ > 0 && f_ < fs_ / 2,
        "PowerlineInterference: frequency_hz must be in (0, fs/2) = (0, ",
        fs_ / 2,
        "), got ",
        f_);
    TORCH_CHECK(
        std::isfinite(amp_) && amp_ >= 0,
        "PowerlineInterference: max_amplitude must be >= 0, got ",
        amp_);
  }
  std::string name() const override {
    return "powerline_interference";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"powerline interference"};
  }
  Json parameters() const override {
    return detail::json_object(
        {{"frequency_hz", f_}, {"max_amplitude", amp_}, {"sampling_rate_hz", fs_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    auto o = x.options();
    auto a = random_uniform({x.size(0), 1, 1}, 0.0, amp_, gen, o);
    auto phi = random_uniform({x.size(0), 1, 1}, 0.0, 2 * detail::kPi, gen, o);
    auto wt = at::arange(x.size(2), o).mul_(2 * detail::kPi * f_ / fs_).view({1, 1, -1});
    // a sin(wt + phi) = (a cos phi) sin wt + (a sin phi) cos wt: the trigonometry runs over T once,
    // not over every sample.
    auto hum = (a * at::cos(phi)) * at::sin(wt) + (a * at::sin(phi)) * at::cos(wt); // [B, 1, T]
    return {x + hum, in.mask};
  }

 private:
  double f_, amp_, fs_;
};

/// Crops a window of `window` samples at a random start in each record: [B, L, T] -> [B, L,
/// window]. Several views of a record give several windows (poly-window pretraining).
class RandomCrop : public Transform {
 public:
  explicit RandomCrop(int64_t window) : window_(window) {
    TORCH_CHECK(window_ >= 1, "RandomCrop: window must be >= 1, got ", window_);
  }
  std::string name() const override {
    return "random_crop";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"time shift"};
  }
  Json parameters() const override {
    return detail::json_object({{"window", window_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    const int64_t t = x.size(2);
    TORCH_CHECK(
        window_ <= t,
        "RandomCrop: window ",
        window_,
        " is longer than the signal (",
        t,
        " samples)");
    auto o = x.options();
    auto start =
        random_uniform(
            {x.size(0)}, 0.0, static_cast<double>(t - window_ + 1), gen, o.dtype(at::kFloat))
            .floor_()
            .clamp_max_(static_cast<double>(t - window_))
            .to(at::kLong);
    auto idx = (start.view({-1, 1}) + at::arange(window_, o.dtype(at::kLong)).view({1, -1}))
                   .unsqueeze(1); // [B, 1, W]
    auto gidx = idx.expand({x.size(0), x.size(1), window_});
    return {x.gather(2, gidx), in.mask.defined() ? in.mask.gather(2, gidx) : at::Tensor()};
  }

 private:
  int64_t window_;
};

/// Zeroes one contiguous stretch of each record (all leads), of length U(0, max_fraction)·T.
class TimeMask : public Transform {
 public:
  explicit TimeMask(double max_fraction) : frac_(max_fraction) {
    check_probability("TimeMask", "max_fraction", frac_);
  }
  std::string name() const override {
    return "time_mask";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"time masking"};
  }
  Json parameters() const override {
    return detail::json_object({{"max_fraction", frac_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    const int64_t t = x.size(2);
    auto fo = x.options().dtype(at::kFloat);
    auto len =
        random_uniform({x.size(0)}, 0.0, frac_, gen, fo).mul_(static_cast<double>(t)).floor_();
    auto start = random_uniform({x.size(0)}, 0.0, 1.0, gen, fo)
                     .mul_(static_cast<double>(t) - len + 1)
                     .floor_();
    auto pos = at::arange(t, fo).view({1, -1});
    auto masked =
        pos.ge(start.view({-1, 1})).logical_and(pos.lt((start + len).view({-1, 1}))).unsqueeze(1);
    return {x.masked_fill(masked, 0.0), in.mask};
  }

 private:
  double frac_;
};

/// Zeroes each lead with probability p, keeping at least one lead per record: a model should not
/// depend on every electrode being attached.
class LeadDropout : public Transform {
 public:
  explicit LeadDropout(double p) : p_(p) {
    check_probability("LeadDropout", "p", p_);
  }
  std::string name() const override {
    return "lead_dropout";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"lead dropout"};
  }
  Json parameters() const override {
    return detail::json_object({{"p", p_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    auto drop = random_bernoulli({x.size(0), x.size(1)}, p_, gen, x.options());
    // Keep one random lead of a record whose every lead was dropped.
    auto all = drop.all(1);
    auto keep =
        random_uniform(
            {x.size(0)}, 0.0, static_cast<double>(x.size(1)), gen, x.options().dtype(at::kFloat))
            .floor_()
            .clamp_max_(static_cast<double>(x.size(1) - 1))
            .to(at::kLong);
    auto rescue = at::zeros_like(drop).scatter_(1, keep.view({-1, 1}), all.view({-1, 1}));
    drop.logical_and_(rescue.logical_not());
    return {x.masked_fill(drop.unsqueeze(2), 0.0), in.mask};
  }

 private:
  double p_;
};

/// Stretches or compresses time by a factor ~ U(1 - max_stretch, 1 + max_stretch) around the
/// record's start (linear interpolation; samples beyond the end repeat the last value): small
/// changes of heart rate.
class TimeWarp : public Transform {
 public:
  explicit TimeWarp(double max_stretch) : s_(max_stretch) {
    TORCH_CHECK(
        std::isfinite(s_) && s_ >= 0 && s_ < 1,
        "TimeWarp: max_stretch must be in [0, 1), got ",
        s_);
  }
  std::string name() const override {
    return "time_warp";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"small time warp"};
  }
  Json parameters() const override {
    return detail::json_object({{"max_stretch", s_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    const int64_t t = x.size(2);
    auto o = x.options();
    auto r = random_uniform({x.size(0), 1}, 1.0 - s_, 1.0 + s_, gen, o);
    auto pos = (at::arange(t, o).view({1, -1}) * r).clamp_(0, static_cast<double>(t - 1)); // [B, T]
    auto lo = pos.floor().to(at::kLong);
    auto hi = (lo + 1).clamp_max_(t - 1);
    auto w = (pos - lo.to(o.dtype())).unsqueeze(1);
    auto gl = lo.unsqueeze(1).expand({x.size(0), x.size(1), t});
    auto gh = hi.unsqueeze(1).expand({x.size(0), x.size(1), t});
    return {at::lerp(x.gather(2, gl), x.gather(2, gh), w), in.mask};
  }

 private:
  double s_;
};

/// Reverses time. Clinically invalid for ECG (it reverses the P-QRS-T sequence, a different
/// heart); refused there unless the policy allows it explicitly.
class TimeReversal : public Transform {
 public:
  std::string name() const override {
    return "time_reversal";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"time direction"};
  }
  Json parameters() const override {
    return Json::object();
  }
  std::string invalid_for(Modality m) const override {
    return m == Modality::ECG
        ? "reversing time reverses the P-QRS-T sequence and the conduction it encodes"
        : "";
  }
  Batch apply(const Batch& in, Modality, at::Generator&) const override {
    return {in.values.flip({2}), in.mask.defined() ? in.mask.flip({2}) : at::Tensor()};
  }
};

/// Permutes the leads of each record. Invalid for ECG and EEG unless declared: a lead's (an
/// electrode's) position is anatomy, so permuting them invents another body.
class LeadPermutation : public Transform {
 public:
  std::string name() const override {
    return "lead_permutation";
  }
  std::vector<Modality> modalities() const override {
    return detail::signal_modalities();
  }
  std::vector<std::string> invariances() const override {
    return {"lead order"};
  }
  Json parameters() const override {
    return Json::object();
  }
  std::string invalid_for(Modality m) const override {
    return is_signal(m) ? "each lead's position is anatomy; permuting leads invents another body"
                        : "";
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    auto keys =
        random_uniform({x.size(0), x.size(1)}, 0.0, 1.0, gen, x.options().dtype(at::kFloat));
    auto perm = keys.argsort(/*dim=*/int64_t{1}).unsqueeze(2).expand_as(x);
    return {x.gather(1, perm), in.mask.defined() ? in.mask.gather(1, perm) : at::Tensor()};
  }
};

} // namespace augment
} // namespace medcl
