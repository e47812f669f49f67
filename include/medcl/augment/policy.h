#pragma once

/// \file
/// The augmentation policy interface: transforms that know the modality and layout they are valid
/// for, declare the invariances they encode, describe all their parameters, draw their randomness
/// from an explicit generator, and are refused where they are clinically invalid unless allowed.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace augment {

/// What a batch holds, which fixes its layout:
/// images [B, C, H, W] (Image2D, ChestRadiograph) or [B, C, D, H, W] (Image3D); signals
/// [B, leads, T] (ECG, EEG); tables [B, F] with an observed-mask (Tabular); expression [B, G]
/// (Omics); token ids [B, T] int64 with a valid-token mask (Text).
enum class Modality { Image2D, ChestRadiograph, Image3D, ECG, EEG, Tabular, Visits, Omics, Text };

inline const char* modality_name(Modality m) {
  switch (m) {
    case Modality::Image2D:
      return "image2d";
    case Modality::ChestRadiograph:
      return "chest_radiograph";
    case Modality::Image3D:
      return "image3d";
    case Modality::ECG:
      return "ecg";
    case Modality::EEG:
      return "eeg";
    case Modality::Tabular:
      return "tabular";
    case Modality::Visits:
      return "visits";
    case Modality::Omics:
      return "omics";
    case Modality::Text:
      return "text";
  }
  return "?";
}

/// Whether a modality is a physiological signal.
inline bool is_signal(Modality m) {
  return m == Modality::ECG || m == Modality::EEG;
}

/// A batch to augment: `values` in the modality's layout, `mask` where the modality has one
/// (Tabular, Visits: true where a value was observed; Text: true for real tokens), `times` for
/// visit sequences ([B, V], the visits' times; may be undefined).
struct Batch {
  Batch() = default;
  // NOLINTNEXTLINE(google-explicit-constructor): {values, mask, times} reads as the struct it is.
  Batch(at::Tensor values_, at::Tensor mask_ = {}, at::Tensor times_ = {})
      : values(std::move(values_)), mask(std::move(mask_)), times(std::move(times_)) {}
  at::Tensor values;
  at::Tensor mask;
  at::Tensor times;
};

/// Requires `b` to have the layout of modality `m` and no NaN (`who` names the caller).
inline void check_layout(const std::string& who, Modality m, const Batch& b) {
  const auto& x = b.values;
  TORCH_CHECK(x.defined(), who, ": the batch has no values");
  int64_t rank = 0;
  const char* layout = "";
  switch (m) {
    case Modality::Image2D:
    case Modality::ChestRadiograph:
      rank = 4;
      layout = "[B, C, H, W]";
      break;
    case Modality::Image3D:
      rank = 5;
      layout = "[B, C, D, H, W]";
      break;
    case Modality::ECG:
    case Modality::EEG:
      rank = 3;
      layout = "[B, leads, T]";
      break;
    case Modality::Tabular:
    case Modality::Omics:
      rank = 2;
      layout = "[B, features]";
      break;
    case Modality::Visits:
      rank = 3;
      layout = "[B, visits, features]";
      break;
    case Modality::Text:
      rank = 2;
      layout = "[B, T] token ids";
      break;
  }
  TORCH_CHECK(
      x.dim() == rank,
      who,
      ": a ",
      modality_name(m),
      " batch has layout ",
      layout,
      ", got shape ",
      x.sizes());
  if (m == Modality::Text) {
    TORCH_CHECK(
        x.scalar_type() == at::kLong, who, ": text token ids must be int64, got ", x.scalar_type());
  } else {
    TORCH_CHECK(
        at::isFloatingType(x.scalar_type()),
        who,
        ": ",
        modality_name(m),
        " values must be floating point, got ",
        x.scalar_type());
    // max() propagates NaN and is one vectorised pass without a temporary (isnan().any() is
    // about ten times slower on CPU).
    TORCH_CHECK(
        x.numel() == 0 || !std::isnan(x.max().item<double>()),
        who,
        ": the ",
        modality_name(m),
        " batch contains NaN");
  }
  if (b.mask.defined()) {
    TORCH_CHECK(
        b.mask.sizes() == x.sizes(),
        who,
        ": mask must have the values' shape ",
        x.sizes(),
        ", got ",
        b.mask.sizes());
    TORCH_CHECK(
        b.mask.scalar_type() == at::kBool, who, ": mask must be bool, got ", b.mask.scalar_type());
  }
  if (b.times.defined()) {
    TORCH_CHECK(
        m == Modality::Visits && b.times.dim() == 2 && b.times.size(0) == x.size(0) &&
            b.times.size(1) == x.size(1),
        who,
        ": times are for visit sequences, of shape [B, visits] = [",
        x.size(0),
        ", ",
        x.dim() > 1 ? x.size(1) : 0,
        "], got ",
        b.times.sizes());
  }
}

/// Requires p in [0, 1].
inline void check_probability(const std::string& who, const char* name, double p) {
  TORCH_CHECK(
      std::isfinite(p) && p >= 0.0 && p <= 1.0, who, ": ", name, " must be in [0, 1], got ", p);
}

/// Requires lo <= hi, both finite.
inline void check_range(const std::string& who, const char* name, double lo, double hi) {
  TORCH_CHECK(
      std::isfinite(lo) && std::isfinite(hi) && lo <= hi,
      who,
      ": ",
      name,
      " must be a finite range lo <= hi, got [",
      lo,
      ", ",
      hi,
      "]");
}

/// A batched random transform. Implementations draw every random number from `gen` (whose device
/// is the batch's), never from a global generator, so a seeded policy reproduces its views.
class Transform {
 public:
  virtual ~Transform() = default;
  /// Short name, e.g. "gaussian_jitter".
  virtual std::string name() const = 0;
  /// Modalities whose layout this transform accepts.
  virtual std::vector<Modality> modalities() const = 0;
  /// Invariances the transform teaches, e.g. {"amplitude scale"}.
  virtual std::vector<std::string> invariances() const = 0;
  /// Every parameter, as name -> value text.
  virtual std::map<std::string, std::string> params() const = 0;
  /// Why the transform is clinically invalid for `m` (empty when it is valid).
  virtual std::string invalid_for(Modality /*m*/) const {
    return "";
  }
  /// Applies the transform to every sample of the batch (each with its own random draw).
  virtual Batch apply(const Batch& in, Modality m, at::Generator& gen) const = 0;

  /// {"name": ..., "params": {...}, "invariances": [...]} as JSON.
  virtual std::string describe_json() const {
    std::ostringstream s;
    s << "{\"name\": \"" << name() << "\", \"params\": {";
    bool first = true;
    for (const auto& kv : params()) {
      s << (first ? "" : ", ") << "\"" << kv.first << "\": \"" << kv.second << "\"";
      first = false;
    }
    s << "}, \"invariances\": [";
    const auto inv = invariances();
    for (size_t i = 0; i < inv.size(); ++i) {
      s << (i ? ", " : "") << "\"" << inv[i] << "\"";
    }
    s << "]}";
    return s.str();
  }
  /// Transforms nested in this one (for validity checks of compositions).
  virtual std::vector<std::shared_ptr<const Transform>> children() const {
    return {};
  }
};

using TransformPtr = std::shared_ptr<const Transform>;

inline std::string fmt_double(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

namespace detail {

/// Uniform [lo, hi) values of `shape` from `gen`, on the generator's device.
inline at::Tensor uniform(
    at::IntArrayRef shape,
    double lo,
    double hi,
    at::Generator& gen,
    const at::TensorOptions& o) {
  return at::empty(shape, o).uniform_(lo, hi, gen);
}
/// Standard normal values.
inline at::Tensor normal(at::IntArrayRef shape, at::Generator& gen, const at::TensorOptions& o) {
  return at::empty(shape, o).normal_(0.0, 1.0, gen);
}
/// x + N(0, sigma²) noise, element by element, with one temporary: the noise is drawn with its
/// standard deviation and x added to it in place.
inline at::Tensor plus_gaussian(const at::Tensor& x, double sigma, at::Generator& gen) {
  return at::empty(x.sizes(), x.options()).normal_(0.0, sigma, gen).add_(x);
}
/// Bernoulli(p) booleans.
inline at::Tensor
bernoulli(at::IntArrayRef shape, double p, at::Generator& gen, const at::TensorOptions& o) {
  return at::empty(shape, o.dtype(at::kFloat)).uniform_(0.0, 1.0, gen).lt(p);
}

} // namespace detail

/// Applies transforms one after the other.
class Sequence : public Transform {
 public:
  explicit Sequence(std::vector<TransformPtr> steps) : steps_(std::move(steps)) {
    for (const auto& s : steps_) {
      TORCH_CHECK(s != nullptr, "Sequence: a step is null");
    }
  }
  std::string name() const override {
    return "sequence";
  }
  std::vector<Modality> modalities() const override {
    // Valid where every step is valid.
    std::vector<Modality> out;
    for (Modality m :
         {Modality::Image2D,
          Modality::ChestRadiograph,
          Modality::Image3D,
          Modality::ECG,
          Modality::EEG,
          Modality::Tabular,
          Modality::Visits,
          Modality::Omics,
          Modality::Text}) {
      bool all = true;
      for (const auto& s : steps_) {
        auto ms = s->modalities();
        all = all && std::find(ms.begin(), ms.end(), m) != ms.end();
      }
      if (all) {
        out.push_back(m);
      }
    }
    return out;
  }
  std::vector<std::string> invariances() const override {
    std::vector<std::string> out;
    for (const auto& s : steps_) {
      for (const auto& i : s->invariances()) {
        if (std::find(out.begin(), out.end(), i) == out.end()) {
          out.push_back(i);
        }
      }
    }
    return out;
  }
  std::map<std::string, std::string> params() const override {
    return {{"steps", std::to_string(steps_.size())}};
  }
  Batch apply(const Batch& in, Modality m, at::Generator& gen) const override {
    Batch b = in;
    for (const auto& s : steps_) {
      b = s->apply(b, m, gen);
    }
    return b;
  }
  std::string describe_json() const override {
    std::string s = "{\"name\": \"sequence\", \"steps\": [";
    for (size_t i = 0; i < steps_.size(); ++i) {
      s += (i ? ", " : "") + steps_[i]->describe_json();
    }
    return s + "]}";
  }
  std::vector<TransformPtr> children() const override {
    return steps_;
  }

 private:
  std::vector<TransformPtr> steps_;
};

/// Applies `inner` to each sample with probability p (drawn per sample).
class RandomApply : public Transform {
 public:
  RandomApply(TransformPtr inner, double p) : inner_(std::move(inner)), p_(p) {
    TORCH_CHECK(inner_ != nullptr, "RandomApply: the transform is null");
    check_probability("RandomApply", "p", p_);
  }
  std::string name() const override {
    return "random_apply";
  }
  std::vector<Modality> modalities() const override {
    return inner_->modalities();
  }
  std::vector<std::string> invariances() const override {
    return inner_->invariances();
  }
  std::map<std::string, std::string> params() const override {
    return {{"p", fmt_double(p_)}};
  }
  Batch apply(const Batch& in, Modality m, at::Generator& gen) const override {
    const int64_t b = in.values.size(0);
    auto take = detail::bernoulli({b}, p_, gen, in.values.options().dtype(at::kFloat));
    auto out = inner_->apply(in, m, gen);
    TORCH_CHECK(
        out.values.sizes() == in.values.sizes(),
        "RandomApply: the inner transform '",
        inner_->name(),
        "' changes the shape; it cannot be applied to some samples only");
    std::vector<int64_t> shape(static_cast<size_t>(in.values.dim()), 1);
    shape[0] = b;
    auto sel = take.view(shape);
    Batch r;
    r.values = at::where(sel, out.values, in.values);
    if (in.times.defined()) {
      r.times = at::where(take.view({b, 1}), out.times, in.times);
    }
    if (in.mask.defined() || out.mask.defined()) {
      auto im = in.mask.defined() ? in.mask
                                  : at::ones_like(in.values, in.values.options().dtype(at::kBool));
      auto om = out.mask.defined() ? out.mask : im;
      r.mask = at::where(sel, om, im);
    }
    return r;
  }
  std::string describe_json() const override {
    return "{\"name\": \"random_apply\", \"p\": " + fmt_double(p_) +
        ", \"transform\": " + inner_->describe_json() + "}";
  }
  std::vector<TransformPtr> children() const override {
    return {inner_};
  }

 private:
  TransformPtr inner_;
  double p_;
};

/// Applies one of the transforms, chosen with the given weights for each call (on CPU a large
/// batch is processed in chunks, each with its own choice; see Policy::views).
class OneOf : public Transform {
 public:
  explicit OneOf(std::vector<TransformPtr> options, std::vector<double> weights = {})
      : options_(std::move(options)), weights_(std::move(weights)) {
    TORCH_CHECK(!options_.empty(), "OneOf: no transforms");
    if (weights_.empty()) {
      weights_.assign(options_.size(), 1.0);
    }
    TORCH_CHECK(
        weights_.size() == options_.size(),
        "OneOf: ",
        options_.size(),
        " transforms but ",
        weights_.size(),
        " weights");
    double total = 0;
    for (double w : weights_) {
      TORCH_CHECK(std::isfinite(w) && w >= 0, "OneOf: weights must be >= 0, got ", w);
      total += w;
    }
    TORCH_CHECK(total > 0, "OneOf: the weights sum to 0");
  }
  std::string name() const override {
    return "one_of";
  }
  std::vector<Modality> modalities() const override {
    return Sequence(options_).modalities();
  }
  std::vector<std::string> invariances() const override {
    return Sequence(options_).invariances();
  }
  std::map<std::string, std::string> params() const override {
    return {{"choices", std::to_string(options_.size())}};
  }
  Batch apply(const Batch& in, Modality m, at::Generator& gen) const override {
    auto w = at::tensor(weights_, at::kDouble);
    // One draw for the batch, from the batch's generator.
    const double u =
        detail::uniform({1}, 0.0, 1.0, gen, in.values.options().dtype(at::kFloat)).item<double>();
    double acc = 0;
    const double total = w.sum().item<double>();
    for (size_t i = 0; i < options_.size(); ++i) {
      acc += weights_[i] / total;
      if (u < acc || i + 1 == options_.size()) {
        return options_[i]->apply(in, m, gen);
      }
    }
    return in;
  }
  std::string describe_json() const override {
    std::string s = "{\"name\": \"one_of\", \"choices\": [";
    for (size_t i = 0; i < options_.size(); ++i) {
      s += (i ? ", " : "") + std::string("{\"weight\": ") + fmt_double(weights_[i]) +
          ", \"transform\": " + options_[i]->describe_json() + "}";
    }
    return s + "]}";
  }
  std::vector<TransformPtr> children() const override {
    return options_;
  }

 private:
  std::vector<TransformPtr> options_;
  std::vector<double> weights_;
};

/// A policy: the modality it is for, its transform (tree), a seed, and the transforms explicitly
/// allowed although clinically invalid for this modality. Construction refuses a transform that
/// does not accept the modality, or that is clinically invalid for it and not allowed.
///
/// Example:
///   auto policy = medcl::augment::Policy(Modality::ECG, std::make_shared<Sequence>(...), 7);
///   auto views = policy.views(batch, 2);   // two augmented views of every record
class Policy {
 public:
  Policy(
      Modality modality,
      TransformPtr transform,
      uint64_t seed,
      std::vector<std::string> allow_invalid = {})
      : modality_(modality),
        transform_(std::move(transform)),
        seed_(seed),
        allowed_(std::move(allow_invalid)) {
    TORCH_CHECK(transform_ != nullptr, "Policy: the transform is null");
    validate(*transform_);
  }

  Modality modality() const {
    return modality_;
  }

  /// V augmented views of `batch` (each sample transformed independently in each view). The
  /// generator for the batch's device is created from the seed on first use and then advances, so
  /// a policy built with the same seed gives the same sequence of views.
  std::vector<Batch> views(const Batch& batch, int64_t v) {
    const std::string who = "Policy(" + std::string(modality_name(modality_)) + ", transform '" +
        transform_->name() + "')";
    TORCH_CHECK(v >= 1, who, ": the number of views must be >= 1, got ", v);
    check_layout(who, modality_, batch);
    auto& gen = generator(batch.values.device());
    // Large batches go through the transforms in chunks of about kChunkElements values: every
    // op then works on cache-sized tensors, while still applying to many samples per call.
    const int64_t n = batch.values.size(0);
    const int64_t per_sample = std::max<int64_t>(1, batch.values.numel() / std::max<int64_t>(1, n));
    const int64_t chunk =
        batch.values.is_cuda() ? n : std::max<int64_t>(1, kChunkElements / per_sample);
    std::vector<Batch> out;
    out.reserve(static_cast<size_t>(v));
    for (int64_t i = 0; i < v; ++i) {
      if (chunk >= n) {
        out.push_back(transform_->apply(batch, modality_, gen));
        continue;
      }
      // Each chunk's result goes straight into the output, so only one chunk's temporaries are
      // alive at a time.
      Batch joined;
      for (int64_t s = 0; s < n; s += chunk) {
        const int64_t e = std::min(n, s + chunk);
        Batch part{
            batch.values.slice(0, s, e),
            batch.mask.defined() ? batch.mask.slice(0, s, e) : at::Tensor(),
            batch.times.defined() ? batch.times.slice(0, s, e) : at::Tensor()};
        auto r = transform_->apply(part, modality_, gen);
        place(joined.values, r.values, n, s, e);
        place(joined.mask, r.mask, n, s, e);
        place(joined.times, r.times, n, s, e);
      }
      out.push_back(std::move(joined));
    }
    return out;
  }

  /// Values per chunk on CPU (see views()).
  static constexpr int64_t kChunkElements = int64_t(1) << 18;

  /// The whole policy as JSON: modality, seed, allowed-invalid transforms, transform tree.
  std::string describe_json() const {
    std::ostringstream s;
    s << "{\"modality\": \"" << modality_name(modality_) << "\", \"seed\": " << seed_
      << ", \"allow_invalid\": [";
    for (size_t i = 0; i < allowed_.size(); ++i) {
      s << (i ? ", " : "") << "\"" << allowed_[i] << "\"";
    }
    s << "], \"invariances\": [";
    const auto inv = transform_->invariances();
    for (size_t i = 0; i < inv.size(); ++i) {
      s << (i ? ", " : "") << "\"" << inv[i] << "\"";
    }
    s << "], \"transform\": " << transform_->describe_json() << "}";
    return s.str();
  }

 private:
  void validate(const Transform& t) const {
    const auto ms = t.modalities();
    TORCH_CHECK(
        std::find(ms.begin(), ms.end(), modality_) != ms.end(),
        "Policy: transform '",
        t.name(),
        "' is not valid for modality '",
        modality_name(modality_),
        "'");
    const auto why = t.invalid_for(modality_);
    if (!why.empty()) {
      TORCH_CHECK(
          std::find(allowed_.begin(), allowed_.end(), t.name()) != allowed_.end(),
          "Policy: transform '",
          t.name(),
          "' is clinically invalid for ",
          modality_name(modality_),
          ": ",
          why,
          ". Pass it in allow_invalid to use it anyway.");
    }
    for (const auto& c : t.children()) {
      validate(*c);
    }
  }

  // Copies a chunk's result (rows [s, e) of n) into `dst`, allocated on the first chunk.
  static void place(at::Tensor& dst, const at::Tensor& part, int64_t n, int64_t s, int64_t e) {
    if (!part.defined()) {
      return;
    }
    if (!dst.defined()) {
      std::vector<int64_t> shape(part.sizes().begin(), part.sizes().end());
      shape[0] = n;
      dst = at::empty(shape, part.options());
    }
    dst.slice(0, s, e).copy_(part);
  }

  at::Generator& generator(const at::Device& device) {
    const std::string key = device.str();
    auto it = gens_.find(key);
    if (it == gens_.end()) {
      // A CPU generator is made afresh (LibTorch 1.13's Generator::clone() leaks the clone); other
      // devices clone their default generator and reseed it.
      at::Generator g;
      if (device.is_cpu()) {
        g = at::detail::createCPUGenerator(seed_);
      } else {
        g = at::globalContext().defaultGenerator(device).clone();
        g.set_current_seed(seed_);
      }
      it = gens_.emplace(key, std::move(g)).first;
    }
    return it->second;
  }

  Modality modality_;
  TransformPtr transform_;
  uint64_t seed_;
  std::vector<std::string> allowed_;
  std::map<std::string, at::Generator> gens_;
};

} // namespace augment
} // namespace medcl
