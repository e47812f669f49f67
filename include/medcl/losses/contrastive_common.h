#pragma once

/// \file
/// Pieces shared by the InfoNCE-family losses (NT-Xent, InfoNCE, SupCon, CLIP).

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>
#include <medcl/core/similarity_engine.h>
#include <medcl/pairing/sample_keys.h>
#include <medcl/pairing/strategy.h>

#include <ATen/ATen.h>

#include <memory>
#include <utility>

namespace medcl {
namespace detail {

/// Builds the engine problem for anchors/candidates that are already normalised.
inline ContrastProblem make_problem(
    const char* fn,
    at::Tensor anchors,
    at::Tensor candidates,
    std::shared_ptr<const PairRule> rule,
    double temperature,
    const NegativeWeighting& weighting,
    const SimilarityEngineOptions& engine,
    at::ScalarType mm_dtype) {
  TORCH_CHECK(
      engine.tile_size() >= 0,
      fn,
      ": engine tile_size must be >= 0 (0 picks a default), got ",
      engine.tile_size());
  ContrastProblem p;
  p.anchors = std::move(anchors);
  p.candidates = std::move(candidates);
  p.rule = std::move(rule);
  p.scale = 1.0 / temperature;
  p.weighting = weighting;
  p.options = engine;
  p.mm_dtype = mm_dtype;
  p.caller = fn;
  return p;
}

/// Keys of `views` stacked copies of `b` samples (view-major), with `instance` defaulting to the
/// sample index. `keys` may be empty (no key carried).
inline SampleKeys stacked_view_keys(
    const char* fn,
    const SampleKeys& keys,
    int64_t b,
    int64_t views,
    const at::Device& device) {
  keys.check(fn, "sample", b, device);
  const auto lo = at::TensorOptions().dtype(at::kLong).device(device);
  if (keys.size() < 0) {
    SampleKeys k;
    k.instance = at::arange(b, lo).repeat({views});
    k.view = at::arange(views, lo).repeat_interleave(b);
    return k;
  }
  return keys.repeat_views(views, lo);
}

} // namespace detail
} // namespace medcl
