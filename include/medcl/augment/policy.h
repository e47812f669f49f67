#pragma once

/// \file
/// The augmentation policy: a transform (tree) for one modality, seeded, refused where it is
/// clinically invalid unless allowed. Includes the batch layout (batch.h), the transform interface
/// (transform.h) and the compositions (compose.h), so this one header gives the whole interface.

#include <medcl/augment/batch.h>
#include <medcl/augment/compose.h>
#include <medcl/augment/transform.h>
#include <medcl/core/json.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace augment {

/// A policy: the modality it is for, its transform (tree), a seed, and the transforms explicitly
/// allowed although clinically invalid for this modality. Construction refuses a transform that
/// does not accept the modality, that cannot work on its layout (Flip along an axis the layout
/// lacks), or that is clinically invalid for it and not allowed; the error names the innermost
/// offending transform and its path in the tree ("sequence > one_of > time_reversal").
///
/// Declare what the data are: a chest film is Modality::ChestRadiograph, not the generic Image2D,
/// which refuses nothing clinically (flips included).
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

  /// The generator the policy draws from for batches on `device`, made from the seed when first
  /// asked for. It is a handle: restoring its state (as the trainer does for a tracked generator
  /// when it resumes) changes the views this policy gives next. Exact resume of a run that
  /// augments: `trainer.track("augment", policy.generator())` (CPU batches) or
  /// `policy.generator(torch::Device(torch::kCUDA, 0))`.
  at::Generator generator(const at::Device& device = at::Device(at::kCPU)) {
    return device_generator(device);
  }

  /// V augmented views of `batch` (each sample transformed independently in each view). The
  /// generator for the batch's device is created from the seed on first use and then advances, so
  /// a policy built with the same seed gives the same sequence of views.
  std::vector<Batch> views(const Batch& batch, int64_t v) {
    const std::string who = "Policy(" + std::string(modality_name(modality_)) + ", transform '" +
        transform_->name() + "')";
    TORCH_CHECK(v >= 1, who, ": the number of views must be >= 1, got ", v);
    check_layout(who, modality_, batch);
    auto& gen = device_generator(batch.values.device());
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

  /// The whole policy: {"modality", "seed", "allow_invalid", "invariances", "transform": the
  /// transform tree's describe()}. A seed above INT64_MAX is written as a string of its digits.
  Json describe() const {
    Json j = Json::object();
    j["modality"] = modality_name(modality_);
    j["seed"] = seed_ <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
        ? Json(static_cast<int64_t>(seed_))
        : Json(std::to_string(seed_));
    j["allow_invalid"] = Json::array_of(allowed_);
    j["invariances"] = Json::array_of(transform_->invariances());
    j["transform"] = transform_->describe();
    return j;
  }
  /// Deprecated (kept for one release): use describe(). describe() as JSON text.
  std::string describe_json() const {
    return describe().dump();
  }

 private:
  // Checks the tree depth first, so that an error names the innermost offending transform and
  // its path from the root ("sequence > one_of > time_reversal"), not the composite around it
  // (whose modalities are its steps' intersection).
  void validate(const Transform& t, const std::string& parent = "") const {
    const std::string name = t.name();
    const std::string path = parent.empty() ? name : parent + " > " + name;
    for (const auto& c : t.children()) {
      TORCH_CHECK(c != nullptr, "Policy: transform '", name, "' (at ", path, ") has a null child");
      validate(*c, path);
    }
    // "transform 'flip'" at the root, "transform 'flip' (at sequence > flip)" inside a composite.
    const std::string where =
        "transform '" + name + "'" + (parent.empty() ? std::string() : " (at " + path + ")");
    const auto ms = t.modalities();
    if (std::find(ms.begin(), ms.end(), modality_) == ms.end()) {
      std::string accepted;
      for (Modality m : ms) {
        accepted += (accepted.empty() ? "" : ", ") + std::string(modality_name(m));
      }
      TORCH_CHECK(
          false,
          "Policy: ",
          where,
          " is not valid for modality '",
          modality_name(modality_),
          "'; it accepts: ",
          accepted.empty() ? "none" : accepted);
    }
    const auto unsupported = t.unsupported_for(modality_);
    TORCH_CHECK(
        unsupported.empty(),
        "Policy: ",
        where,
        " cannot be applied to modality '",
        modality_name(modality_),
        "': ",
        unsupported);
    const auto why = t.invalid_for(modality_);
    if (!why.empty()) {
      TORCH_CHECK(
          std::find(allowed_.begin(), allowed_.end(), name) != allowed_.end(),
          "Policy: ",
          where,
          " is clinically invalid for ",
          modality_name(modality_),
          ": ",
          why,
          ". Pass '",
          name,
          "' in allow_invalid to use it anyway.");
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

  at::Generator& device_generator(const at::Device& device) {
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
