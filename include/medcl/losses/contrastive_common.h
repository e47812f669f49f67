#pragma once

/// \file
/// Pieces shared by the InfoNCE-family losses (NT-Xent, InfoNCE, SupCon, CLIP).

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>
#include <medcl/core/similarity_engine.h>
#include <medcl/dist/process_group.h>
#include <medcl/pairing/sample_keys.h>
#include <medcl/pairing/strategy.h>

#include <ATen/ATen.h>

#include <cmath>
#include <memory>
#include <utility>

namespace medcl {
namespace detail {

/// The option checks of the InfoNCE-family loss modules, run at construction (`reset()`), so that
/// a bad option fails where it is set, not at the first forward.
inline void check_contrastive_options(
    const char* who,
    double temperature,
    double eps,
    const SimilarityEngineOptions& engine) {
  check_temperature(who, "temperature", temperature);
  TORCH_CHECK(std::isfinite(eps) && eps > 0.0, who, ": eps must be finite and > 0, got ", eps);
  TORCH_CHECK(
      engine.tile_size() >= 0,
      who,
      ": engine tile_size must be >= 0 (0 picks a default), got ",
      engine.tile_size());
  TORCH_CHECK(
      engine.dense_max_elements() >= 0,
      who,
      ": engine dense_max_elements must be >= 0, got ",
      engine.dense_max_elements());
}

/// Earlier name of `make_contrast_problem`, kept for one release.
inline ContrastProblem make_problem(
    const char* fn,
    at::Tensor anchors,
    at::Tensor candidates,
    std::shared_ptr<const PairRule> rule,
    double temperature,
    const NegativeWeighting& weighting,
    const SimilarityEngineOptions& engine,
    at::ScalarType mm_dtype) {
  return make_contrast_problem(
      fn,
      std::move(anchors),
      std::move(candidates),
      std::move(rule),
      temperature,
      weighting,
      engine,
      mm_dtype);
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
