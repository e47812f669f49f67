#pragma once

/// \file
/// Pieces shared by the InfoNCE-family losses (NT-Xent, InfoNCE, SupCon, CLIP).

#include <medcl/core/checks.h>
#include <medcl/core/normalize.h>
#include <medcl/core/similarity_engine.h>

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

} // namespace detail
} // namespace medcl
