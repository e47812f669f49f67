#pragma once

/// \file
/// Invariance probe: how stable an encoder's embedding is under each transform of a policy.

#include <medcl/augment/policy.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <functional>
#include <string>
#include <vector>

namespace medcl {
namespace augment {

/// Stability of the embedding under one transform.
struct InvarianceResult {
  std::string transform;
  /// Mean and standard deviation over samples (and repeats) of cos(f(x), f(t(x))).
  double mean_cosine = 0;
  double std_cosine = 0;
  int64_t samples = 0;
};

/// For each transform, the cosine between the embedding of every sample and that of its
/// transformed version (`repeats` independent draws), without gradient. An encoder that is
/// invariant to a transform scores near 1; the invariance audit (eval/invariance_audit.h) compares
/// these with the stability under clinically meaningful change.
///
/// Example:
///   auto r = medcl::augment::invariance_probe(
///       [&](const Batch& b) { return encoder->forward(b.values); }, Modality::ECG,
///       {std::make_shared<GaussianJitter>(0.05), std::make_shared<LeadDropout>(0.25)}, batch, 7);
inline std::vector<InvarianceResult> invariance_probe(
    const std::function<at::Tensor(const Batch&)>& encoder,
    Modality modality,
    const std::vector<TransformPtr>& transforms,
    const Batch& batch,
    uint64_t seed,
    int64_t repeats = 1) {
  TORCH_CHECK(!transforms.empty(), "invariance_probe: no transforms");
  TORCH_CHECK(repeats >= 1, "invariance_probe: repeats must be >= 1, got ", repeats);
  c10::NoGradGuard no_grad;
  auto base = encoder(batch);
  TORCH_CHECK(
      base.defined() && base.dim() == 2 && base.size(0) == batch.values.size(0),
      "invariance_probe: the encoder must return [B, D] embeddings, got ",
      base.defined() ? base.sizes() : at::IntArrayRef{});
  auto unit = [](const at::Tensor& e) {
    auto f = e.to(at::kDouble);
    return f / f.norm(2, 1, true).clamp_min(1e-12);
  };
  auto b0 = unit(base);
  std::vector<InvarianceResult> out;
  for (size_t i = 0; i < transforms.size(); ++i) {
    Policy policy(modality, transforms[i], seed + i);
    std::vector<at::Tensor> cos;
    for (const auto& v : policy.views(batch, repeats)) {
      cos.push_back((b0 * unit(encoder(v))).sum(1));
    }
    auto c = at::cat(cos);
    InvarianceResult r;
    r.transform = transforms[i]->name();
    r.mean_cosine = c.mean().item<double>();
    r.std_cosine = c.numel() > 1 ? c.std().item<double>() : 0.0;
    r.samples = c.numel();
    out.push_back(r);
  }
  return out;
}

} // namespace augment
} // namespace medcl
