#pragma once

/// \file
/// The transform interface: a batched random transform that knows the modalities it accepts,
/// declares the invariances it teaches, describes its parameters as typed JSON and draws its
/// randomness from an explicit generator. Also the argument checks and random draws that the
/// transforms share.

#include <medcl/augment/batch.h>
#include <medcl/core/json.h>

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace augment {

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

/// A number as text with up to 6 significant digits ("0.25", "250"), as the deprecated params()
/// wrote it.
inline std::string fmt_double(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

namespace detail {

/// A parameter's value as text for the deprecated params(): strings as they are, numbers as
/// numbers are written (integers exactly), booleans as "true"/"false", anything else as JSON.
inline std::string parameter_text(const Json& v) {
  switch (v.type()) {
    case Json::Type::String:
      return v.as_string();
    case Json::Type::Bool:
      return v.as_bool() ? "true" : "false";
    case Json::Type::Number:
      return v.is_integer() ? std::to_string(v.as_int64()) : fmt_double(v.as_double());
    default:
      return v.dump();
  }
}

/// A JSON object of `members`, in their order: what parameters() returns, in one expression.
inline Json json_object(std::initializer_list<std::pair<std::string, Json>> members) {
  Json out = Json::object();
  for (const auto& m : members) {
    out[m.first] = m.second;
  }
  return out;
}

/// Marks a transform as being inside a default parameters() or params() on this thread, so that
/// a transform overriding neither is refused instead of the two defaults calling each other.
class DefaultDescription {
 public:
  explicit DefaultDescription(const void* transform) : transform_(transform) {
    auto& a = active();
    reentered_ = std::find(a.begin(), a.end(), transform_) != a.end();
    if (!reentered_) {
      a.push_back(transform_);
    }
  }
  ~DefaultDescription() {
    if (!reentered_) {
      auto& a = active();
      a.erase(std::find(a.begin(), a.end(), transform_));
    }
  }
  DefaultDescription(const DefaultDescription&) = delete;
  DefaultDescription& operator=(const DefaultDescription&) = delete;
  /// Whether the transform was already inside one of the defaults.
  bool reentered() const {
    return reentered_;
  }

 private:
  static std::vector<const void*>& active() {
    thread_local std::vector<const void*> transforms;
    return transforms;
  }
  const void* transform_;
  bool reentered_ = false;
};

} // namespace detail

/// A batched random transform. Implementations draw every random number from `gen` (whose device
/// is the batch's), never from a global generator, so a seeded policy reproduces its views.
///
/// A transform overrides name(), modalities(), invariances(), parameters() and apply(),
/// invalid_for() where it is clinically invalid for a modality, and unsupported_for() where a
/// parameter rules out a modality's layout (known once the policy fixes the modality).
class Transform {
 public:
  virtual ~Transform() = default;
  /// Short name, e.g. "gaussian_jitter".
  virtual std::string name() const = 0;
  /// Modalities whose layout this transform accepts.
  virtual std::vector<Modality> modalities() const = 0;
  /// Invariances the transform teaches, e.g. {"amplitude scale"}.
  virtual std::vector<std::string> invariances() const = 0;
  /// Every parameter as a JSON object, name -> typed value: numbers as numbers, flags as booleans,
  /// text as strings, lists as arrays, e.g. {"lo": 0.8, "hi": 1.2, "per_lead": true}.
  ///
  /// The default serves transforms written against the deprecated params(): its values, as
  /// strings. A transform that overrides neither is a c10::Error naming it.
  virtual Json parameters() const {
    detail::DefaultDescription inside(this);
    refuse_if_reentered(inside);
    Json out = Json::object();
    for (const auto& kv : params()) {
      out[kv.first] = kv.second;
    }
    return out;
  }
  /// Deprecated (kept for one release): use parameters(). Every parameter as name -> value text;
  /// the default writes parameters() as text (numbers as "0.25", booleans as "true").
  virtual std::map<std::string, std::string> params() const {
    detail::DefaultDescription inside(this);
    refuse_if_reentered(inside);
    const Json p = parameters();
    TORCH_CHECK(
        p.is_object(),
        "Transform '",
        name(),
        "': parameters() must return a JSON object, got ",
        Json::type_name(p.type()));
    std::map<std::string, std::string> out;
    for (const auto& kv : p.items()) {
      out[kv.first] = detail::parameter_text(kv.second);
    }
    return out;
  }
  /// Why the transform is clinically invalid for `m` (empty when it is valid). Policy refuses it
  /// unless its name is in the policy's allow_invalid.
  virtual std::string invalid_for(Modality /*m*/) const {
    return "";
  }
  /// Why the transform cannot work on `m`'s layout although it accepts the modality, e.g. a flip
  /// along an axis a 2-D image does not have (empty when it can). Policy refuses it at
  /// construction; allow_invalid does not lift this.
  virtual std::string unsupported_for(Modality /*m*/) const {
    return "";
  }
  /// Applies the transform to every sample of the batch (each with its own random draw).
  virtual Batch apply(const Batch& in, Modality m, at::Generator& gen) const = 0;

  /// {"name": ..., "params": parameters(), "invariances": [...]}; composites describe their
  /// transforms nested in theirs.
  virtual Json describe() const {
    Json j = Json::object();
    j["name"] = name();
    j["params"] = parameters();
    j["invariances"] = Json::array_of(invariances());
    return j;
  }
  /// Deprecated (kept for one release): use describe(). describe() as JSON text.
  virtual std::string describe_json() const {
    return describe().dump();
  }
  /// Transforms nested in this one (for validity checks of compositions).
  virtual std::vector<std::shared_ptr<const Transform>> children() const {
    return {};
  }

 private:
  // The default parameters() and params() call each other: reentering means neither is overridden.
  void refuse_if_reentered(const detail::DefaultDescription& inside) const {
    TORCH_CHECK(
        !inside.reentered(),
        "Transform '",
        name(),
        "' overrides neither parameters() nor params(): override parameters() to describe its "
        "parameters");
  }
};

using TransformPtr = std::shared_ptr<const Transform>;

/// Randomness for transforms: every draw comes from the generator a transform is given (on the
/// batch's device), never from a global one, so that a seeded policy reproduces its views.

/// Uniform [lo, hi) values of `shape` from `gen`, on the generator's device.
inline at::Tensor random_uniform(
    at::IntArrayRef shape,
    double lo,
    double hi,
    at::Generator& gen,
    const at::TensorOptions& o) {
  return at::empty(shape, o).uniform_(lo, hi, gen);
}
/// Standard normal values.
inline at::Tensor
random_normal(at::IntArrayRef shape, at::Generator& gen, const at::TensorOptions& o) {
  return at::empty(shape, o).normal_(0.0, 1.0, gen);
}
/// x + N(0, sigma²) noise, element by element, with one temporary: the noise is drawn with its
/// standard deviation and x added to it in place.
inline at::Tensor plus_gaussian(const at::Tensor& x, double sigma, at::Generator& gen) {
  return at::empty(x.sizes(), x.options()).normal_(0.0, sigma, gen).add_(x);
}
/// Bernoulli(p) booleans.
inline at::Tensor
random_bernoulli(at::IntArrayRef shape, double p, at::Generator& gen, const at::TensorOptions& o) {
  return at::empty(shape, o.dtype(at::kFloat)).uniform_(0.0, 1.0, gen).lt(p);
}

/// White Gaussian noise of standard deviation `sigma` added to every value: the one
/// implementation behind the image (`GaussianNoise`) and signal (`GaussianJitter`) transforms,
/// which differ in their name and the layouts they accept.
class AdditiveGaussianNoise : public Transform {
 public:
  AdditiveGaussianNoise(
      std::string who,
      std::string name,
      std::vector<Modality> modalities,
      double sigma)
      : name_(std::move(name)), modalities_(std::move(modalities)), sigma_(sigma) {
    TORCH_CHECK(std::isfinite(sigma) && sigma >= 0, who, ": sigma must be >= 0, got ", sigma);
  }
  std::string name() const override {
    return name_;
  }
  std::vector<Modality> modalities() const override {
    return modalities_;
  }
  std::vector<std::string> invariances() const override {
    return {"additive noise"};
  }
  Json parameters() const override {
    auto j = Json::object();
    j["sigma"] = sigma_;
    return j;
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    return {plus_gaussian(in.values, sigma_, gen), in.mask};
  }

 private:
  std::string name_;
  std::vector<Modality> modalities_;
  double sigma_;
};

namespace detail {
// The names of earlier releases, kept for one release.
inline at::Tensor uniform(
    at::IntArrayRef shape,
    double lo,
    double hi,
    at::Generator& gen,
    const at::TensorOptions& o) {
  return random_uniform(shape, lo, hi, gen, o);
}
inline at::Tensor normal(at::IntArrayRef shape, at::Generator& gen, const at::TensorOptions& o) {
  return random_normal(shape, gen, o);
}
using ::medcl::augment::plus_gaussian;
inline at::Tensor
bernoulli(at::IntArrayRef shape, double p, at::Generator& gen, const at::TensorOptions& o) {
  return random_bernoulli(shape, p, gen, o);
}
} // namespace detail

} // namespace augment
} // namespace medcl
