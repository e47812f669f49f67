#pragma once

/// \file
/// Compositions of transforms: a sequence, a transform applied to some samples only, and a choice
/// between transforms.

#include <medcl/augment/batch.h>
#include <medcl/augment/transform.h>
#include <medcl/core/json.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace augment {

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
  Json parameters() const override {
    Json j = Json::object();
    j["steps"] = steps_.size();
    return j;
  }
  Batch apply(const Batch& in, Modality m, at::Generator& gen) const override {
    Batch b = in;
    for (const auto& s : steps_) {
      b = s->apply(b, m, gen);
    }
    return b;
  }
  /// {"name": "sequence", "steps": [each step's describe()]}.
  Json describe() const override {
    Json j = Json::object();
    j["name"] = name();
    Json steps = Json::array();
    for (const auto& s : steps_) {
      steps.push_back(s->describe());
    }
    j["steps"] = std::move(steps);
    return j;
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
  Json parameters() const override {
    Json j = Json::object();
    j["p"] = p_;
    return j;
  }
  Batch apply(const Batch& in, Modality m, at::Generator& gen) const override {
    const int64_t b = in.values.size(0);
    auto take = random_bernoulli({b}, p_, gen, in.values.options().dtype(at::kFloat));
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
  /// {"name": "random_apply", "p": p, "transform": the transform's describe()}.
  Json describe() const override {
    Json j = Json::object();
    j["name"] = name();
    j["p"] = p_;
    j["transform"] = inner_->describe();
    return j;
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
  Json parameters() const override {
    Json j = Json::object();
    j["choices"] = options_.size();
    j["weights"] = Json::array_of(weights_);
    return j;
  }
  Batch apply(const Batch& in, Modality m, at::Generator& gen) const override {
    auto w = at::tensor(weights_, at::kDouble);
    // One draw for the batch, from the batch's generator.
    const double u =
        random_uniform({1}, 0.0, 1.0, gen, in.values.options().dtype(at::kFloat)).item<double>();
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
  /// {"name": "one_of", "choices": [{"weight": w, "transform": its describe()}, ...]}.
  Json describe() const override {
    Json j = Json::object();
    j["name"] = name();
    Json choices = Json::array();
    for (size_t i = 0; i < options_.size(); ++i) {
      Json c = Json::object();
      c["weight"] = weights_[i];
      c["transform"] = options_[i]->describe();
      choices.push_back(std::move(c));
    }
    j["choices"] = std::move(choices);
    return j;
  }
  std::vector<TransformPtr> children() const override {
    return options_;
  }

 private:
  std::vector<TransformPtr> options_;
  std::vector<double> weights_;
};

} // namespace augment
} // namespace medcl
