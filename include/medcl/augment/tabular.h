#pragma once

/// \file
/// Augmentations of tabular records (EHR values [B, F] with an observed-mask) and of omics
/// profiles (expression or counts [B, G]).

#include <medcl/augment/policy.h>
#include <medcl/core/checks.h>

#include <ATen/ATen.h>

#include <cmath>
#include <string>
#include <vector>

namespace medcl {
namespace augment {

/// Hides each observed feature with probability p: its mask becomes false and its value 0. A
/// missing feature stays missing (the transform never invents an observation).
class FeatureMask : public Transform {
 public:
  explicit FeatureMask(double p) : p_(p) {
    check_probability("FeatureMask", "p", p_);
  }
  std::string name() const override {
    return "feature_mask";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Tabular, Modality::Visits};
  }
  std::vector<std::string> invariances() const override {
    return {"missing features"};
  }
  Json parameters() const override {
    return detail::json_object({{"p", p_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    auto observed = in.mask.defined()
        ? in.mask
        : at::ones_like(in.values, in.values.options().dtype(at::kBool));
    auto hide =
        random_bernoulli(in.values.sizes(), p_, gen, in.values.options()).logical_and_(observed);
    return {in.values.masked_fill(hide, 0.0), observed.logical_and(hide.logical_not()), in.times};
  }

 private:
  double p_;
};

/// Adds Gaussian noise scaled per feature, `scale` times each feature's standard deviation
/// (`feature_sd` [F], e.g. the assay's measurement error or the cohort's spread), to observed
/// values only.
class FeatureNoise : public Transform {
 public:
  FeatureNoise(at::Tensor feature_sd, double scale) : sd_(std::move(feature_sd)), scale_(scale) {
    TORCH_CHECK(
        sd_.defined() && sd_.dim() == 1,
        "FeatureNoise: feature_sd must be 1-D [F], got ",
        sd_.defined() ? sd_.sizes() : at::IntArrayRef{});
    TORCH_CHECK(
        medcl::detail::all_finite(sd_) && sd_.ge(0).all().item<bool>(),
        "FeatureNoise: feature_sd must be finite and >= 0, got minimum ",
        sd_.numel() > 0 ? sd_.min().item<double>() : 0.0);
    TORCH_CHECK(
        std::isfinite(scale_) && scale_ >= 0, "FeatureNoise: scale must be >= 0, got ", scale_);
  }
  std::string name() const override {
    return "feature_noise";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Tabular, Modality::Visits};
  }
  std::vector<std::string> invariances() const override {
    return {"measurement noise"};
  }
  Json parameters() const override {
    const auto sd = sd_.to(at::kCPU, at::kDouble).contiguous();
    const double* v = sd.data_ptr<double>();
    return detail::json_object(
        {{"scale", scale_},
         {"features", sd_.size(0)},
         {"feature_sd", Json::array_of(std::vector<double>(v, v + sd.numel()))}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    TORCH_CHECK(
        in.values.size(-1) == sd_.size(0),
        "FeatureNoise: built for ",
        sd_.size(0),
        " features, the batch has ",
        in.values.size(-1));
    auto noise = random_normal(in.values.sizes(), gen, in.values.options()) *
        (sd_.to(in.values.options()) * scale_);
    if (in.mask.defined()) {
      noise.masked_fill_(in.mask.logical_not(), 0.0);
    }
    return {in.values + noise, in.mask, in.times};
  }

 private:
  at::Tensor sd_;
  double scale_;
};

/// Sets each gene's value to 0 with probability p (technical dropout of single-cell and
/// low-depth assays).
class GeneDropout : public Transform {
 public:
  explicit GeneDropout(double p) : p_(p) {
    check_probability("GeneDropout", "p", p_);
  }
  std::string name() const override {
    return "gene_dropout";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Omics};
  }
  std::vector<std::string> invariances() const override {
    return {"technical dropout"};
  }
  Json parameters() const override {
    return detail::json_object({{"p", p_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    return {
        in.values.masked_fill(
            random_bernoulli(in.values.sizes(), p_, gen, in.values.options()), 0.0),
        in.mask};
  }

 private:
  double p_;
};

/// Binomial thinning of counts: each count c becomes Binomial(c, p) with p ~ U(lo, hi) per
/// sample — the profile at a lower sequencing depth. Counts must be non-negative integers.
class BinomialThinning : public Transform {
 public:
  BinomialThinning(double lo, double hi) : lo_(lo), hi_(hi) {
    check_range("BinomialThinning", "keep probability", lo, hi);
    check_probability("BinomialThinning", "lo", lo);
    check_probability("BinomialThinning", "hi", hi);
  }
  std::string name() const override {
    return "binomial_thinning";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Omics};
  }
  std::vector<std::string> invariances() const override {
    return {"sequencing depth"};
  }
  Json parameters() const override {
    return detail::json_object({{"lo", lo_}, {"hi", hi_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const auto& x = in.values;
    TORCH_CHECK(
        x.ge(0).all().item<bool>() && x.eq(x.round()).all().item<bool>(),
        "BinomialThinning: expects non-negative integer counts (use it before log-transforming)");
    auto p = random_uniform({x.size(0), 1}, lo_, hi_, gen, x.options()).expand_as(x).contiguous();
    return {at::binomial(x.contiguous(), p, gen), in.mask};
  }

 private:
  double lo_, hi_;
};

/// Multiplies each profile by a factor ~ U(lo, hi): a different library size (total count).
class LibrarySizeScale : public Transform {
 public:
  LibrarySizeScale(double lo, double hi) : lo_(lo), hi_(hi) {
    check_range("LibrarySizeScale", "scale", lo, hi);
    TORCH_CHECK(lo > 0, "LibrarySizeScale: scales must be > 0, got [", lo, ", ", hi, "]");
  }
  std::string name() const override {
    return "library_size_scale";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Omics};
  }
  std::vector<std::string> invariances() const override {
    return {"library size"};
  }
  Json parameters() const override {
    return detail::json_object({{"lo", lo_}, {"hi", hi_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    return {
        in.values * random_uniform({in.values.size(0), 1}, lo_, hi_, gen, in.values.options()),
        in.mask};
  }

 private:
  double lo_, hi_;
};

/// Adds Gaussian noise of standard deviation `sigma` to log-expression values.
class LogExpressionNoise : public Transform {
 public:
  explicit LogExpressionNoise(double sigma) : sigma_(sigma) {
    TORCH_CHECK(
        std::isfinite(sigma) && sigma >= 0, "LogExpressionNoise: sigma must be >= 0, got ", sigma);
  }
  std::string name() const override {
    return "log_expression_noise";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Omics};
  }
  std::vector<std::string> invariances() const override {
    return {"expression noise"};
  }
  Json parameters() const override {
    return detail::json_object({{"sigma", sigma_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    return {plus_gaussian(in.values, sigma_, gen), in.mask};
  }

 private:
  double sigma_;
};

} // namespace augment
} // namespace medcl

namespace medcl {
namespace augment {
namespace detail {

/// Visits that exist: any observed value in the visit. [B, V] bool.
inline at::Tensor visit_present(const Batch& in) {
  return in.mask.defined()
      ? in.mask.any(2)
      : at::ones({in.values.size(0), in.values.size(1)}, in.values.options().dtype(at::kBool));
}

/// Removes visits (values 0, mask false) where `drop` [B, V] is true.
inline Batch drop_visits(const Batch& in, const at::Tensor& drop) {
  auto d3 = drop.unsqueeze(2);
  auto mask =
      in.mask.defined() ? in.mask : at::ones_like(in.values, in.values.options().dtype(at::kBool));
  return {in.values.masked_fill(d3, 0.0), mask.logical_and(d3.logical_not()), in.times};
}

} // namespace detail

/// Drops each present visit with probability p (its values hidden), keeping at least one visit
/// of every patient.
class VisitDropout : public Transform {
 public:
  explicit VisitDropout(double p) : p_(p) {
    check_probability("VisitDropout", "p", p_);
  }
  std::string name() const override {
    return "visit_dropout";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Visits};
  }
  std::vector<std::string> invariances() const override {
    return {"missed visits"};
  }
  Json parameters() const override {
    return detail::json_object({{"p", p_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    auto present = detail::visit_present(in);
    auto drop =
        random_bernoulli(present.sizes(), p_, gen, in.values.options()).logical_and_(present);
    // A patient whose every visit was dropped keeps one present visit, chosen at random.
    auto all_gone =
        present.logical_and(drop.logical_not()).any(1).logical_not().logical_and(present.any(1));
    auto score =
        random_uniform(present.sizes(), 0.0, 1.0, gen, in.values.options().dtype(at::kFloat))
            .masked_fill(present.logical_not(), -1.0);
    auto keep = at::zeros_like(present).scatter_(1, score.argmax(1, true), all_gone.unsqueeze(1));
    return detail::drop_visits(in, drop.logical_and(keep.logical_not()));
  }

 private:
  double p_;
};

/// Keeps a contiguous window of visits covering a fraction U(min_fraction, 1) of each patient's
/// visit slots (the others hidden): a shorter stretch of the same history.
class TemporalCrop : public Transform {
 public:
  explicit TemporalCrop(double min_fraction) : min_(min_fraction) {
    TORCH_CHECK(
        std::isfinite(min_) && min_ > 0 && min_ <= 1,
        "TemporalCrop: min_fraction must be in (0, 1], got ",
        min_);
  }
  std::string name() const override {
    return "temporal_crop";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Visits};
  }
  std::vector<std::string> invariances() const override {
    return {"observation window"};
  }
  Json parameters() const override {
    return detail::json_object({{"min_fraction", min_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const int64_t b = in.values.size(0), v = in.values.size(1);
    auto fo = in.values.options().dtype(at::kFloat);
    auto present = detail::visit_present(in);
    // Window over the slots [first, last] of present visits.
    auto pos = at::arange(v, fo).view({1, -1}).expand({b, v});
    auto first = pos.masked_fill(present.logical_not(), static_cast<double>(v))
                     .amin(1)
                     .clamp_max(static_cast<double>(v - 1));
    auto last = pos.masked_fill(present.logical_not(), -1.0).amax(1).clamp_min(0.0);
    auto span = (last - first + 1).clamp_min(1.0);
    auto len = (random_uniform({b}, min_, 1.0, gen, fo) * span).ceil_().clamp_min_(1.0);
    auto start = first + (random_uniform({b}, 0.0, 1.0, gen, fo) * (span - len + 1)).floor_();
    auto outside = pos.lt(start.view({-1, 1})).logical_or(pos.ge((start + len).view({-1, 1})));
    return detail::drop_visits(in, outside);
  }

 private:
  double min_;
};

/// Shifts every visit time of a patient by the same offset ~ U(±max_shift): absolute dates carry
/// no biology.
class TimeShift : public Transform {
 public:
  explicit TimeShift(double max_shift) : shift_(max_shift) {
    TORCH_CHECK(
        std::isfinite(shift_) && shift_ >= 0, "TimeShift: max_shift must be >= 0, got ", shift_);
  }
  std::string name() const override {
    return "time_shift";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Visits};
  }
  std::vector<std::string> invariances() const override {
    return {"absolute time"};
  }
  Json parameters() const override {
    return detail::json_object({{"max_shift", shift_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    TORCH_CHECK(in.times.defined(), "TimeShift: the batch has no visit times");
    auto off =
        random_uniform({in.times.size(0), 1}, -shift_, shift_ + 1e-12, gen, in.times.options());
    return {in.values, in.mask, in.times + off};
  }

 private:
  double shift_;
};

} // namespace augment
} // namespace medcl
