#pragma once

/// \file
/// The one similarity engine under every InfoNCE-family loss (NT-Xent, InfoNCE/MoCo, SupCon,
/// CLIP) and every negative weighting, and the public entry point for writing a new one.
///
/// A loss describes its problem (normalised anchors and candidates, a temperature, a PairRule,
/// a NegativeWeighting) as a ContrastProblem and calls `contrast_loss`. The engine has a dense
/// path (one logits matrix, kept for backward) and a tiled path (streams tiles of logits, keeps
/// per-row log-sum-exp statistics and recomputes tiles in backward: memory O((N+M)·D + tile²)).
/// Both give the same values and gradients; similarities and log-sum-exp accumulate in float32
/// (float64 for double inputs). The computation and its autograd node are compiled in
/// src/engine/similarity_engine.cpp.

#include <medcl/core/negative_weighting.h>
#include <medcl/core/normalize.h>
#include <medcl/core/pair_rule.h>

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <memory>

namespace medcl {

/// Which path of the similarity engine a loss takes.
enum class EnginePath {
  /// Dense while the logits matrix has at most `dense_max_elements` entries, tiled beyond.
  Auto,
  /// One N×M logits matrix, kept for backward: fastest while it fits in memory.
  Dense,
  /// Tiles of `tile_size`², recomputed in backward: memory linear in N + M.
  Tiled,
};

/// Options of the similarity engine, shared by every InfoNCE-family loss.
struct SimilarityEngineOptions {
  /// Path selection. Default: EnginePath::Auto
  TORCH_ARG(EnginePath, path) = EnginePath::Auto;
  /// Rows and columns per tile on the tiled path; 0 picks 2048 on CPU, and on CUDA 16384 for
  /// uniform weighting (8192 otherwise). Default: 0
  TORCH_ARG(int64_t, tile_size) = 0;
  /// Largest N·M for which EnginePath::Auto takes the dense path. Default: 2^28 (1 GiB of float32)
  TORCH_ARG(int64_t, dense_max_elements) = int64_t(1) << 28;
};

/// A contrastive problem as the engine sees it. Anchors A [N, D] and candidates C [M, D] are
/// L2-normalised (`l2_normalize`) and in the accumulation dtype (float32 or float64); the logits
/// are `scale · A Cᵀ`. Per anchor row i, with P_i its positives (from `rule`) and N_g,i the
/// (possibly reweighted) sum over its negatives,
///
///     loss_i = −(1/|P_i|) Σ_{p∈P_i} l_ip + log( Σ_{p∈P_i} e^{l_ip} + N_g,i ),
///
/// and the loss is the mean over rows that have at least one positive and one negative.
/// `make_contrast_problem` fills the common fields and checks them.
struct ContrastProblem {
  /// L2-normalised anchors [N, D], float32 or float64.
  at::Tensor anchors;
  /// L2-normalised candidates [M, D], same dtype and device as the anchors.
  at::Tensor candidates;
  /// Optional [N, D]: one extra positive per row outside the candidates (MoCo's key).
  at::Tensor paired;
  /// Multiplies the cosine similarities: 1 / temperature.
  double scale = 1.0;
  /// Optional 0-dim tensor holding `scale`, when the scale is learnable (CLIP): it then gets
  /// d loss / d scale.
  at::Tensor scale_tensor;
  /// Which pairs are positives and which candidates are left out of a row's denominator; built
  /// for N rows and M columns.
  std::shared_ptr<const PairRule> rule;
  /// Reweighting of the negatives (uniform, debiased, hard, both).
  NegativeWeighting weighting = NegativeWeighting::uniform();
  /// Also contrast each candidate against the anchors (CLIP); the two directions are averaged.
  bool symmetric = false;
  /// Multiplies the loss (SupCon's temperature / base_temperature).
  double loss_scale = 1.0;
  /// dtype of the matrix products (the input dtype on CUDA for bf16/fp16, else accumulation);
  /// `matmul_dtype(input)` gives it.
  at::ScalarType mm_dtype = at::kFloat;
  SimilarityEngineOptions options;
  /// Name of the calling loss, for error messages and warnings.
  const char* caller = "similarity engine";
  /// Data-parallel losses: given this process's number of rows that count (those with a positive
  /// and a negative; per direction when symmetric), returns the number over every process (an
  /// all-reduce, so every process must run the engine). The loss is then the sum over this
  /// process's rows divided by that global number: this process's share of the global mean.
  /// Unset: the local mean.
  std::function<int64_t(int64_t)> global_row_count;
};

/// A problem for anchors and candidates that are already L2-normalised, with logits scaled by
/// 1 / `temperature`. `mm_dtype` left undefined means the anchors' dtype (pass
/// `matmul_dtype(input)` of the un-normalised input to keep bf16/fp16 products on CUDA). Checks
/// the temperature (finite, > 0) and the tile size (>= 0), naming `caller` in the error.
ContrastProblem make_contrast_problem(
    const char* caller,
    at::Tensor anchors,
    at::Tensor candidates,
    std::shared_ptr<const PairRule> rule,
    double temperature,
    const NegativeWeighting& weighting = NegativeWeighting::uniform(),
    const SimilarityEngineOptions& engine = SimilarityEngineOptions(),
    at::ScalarType mm_dtype = at::ScalarType::Undefined);

/// Runs the engine: the loss (a 0-dim tensor of the accumulation dtype) with its own autograd
/// node (gradients for anchors, candidates, `paired` and `scale_tensor` when they require them).
/// Errors name `problem.caller` and what is wrong: a missing rule, a rule built for another
/// shape, anchors and candidates of different widths, dtypes or devices, a non-finite scale.
at::Tensor contrast_loss(ContrastProblem problem);

/// Bytes of CPU memory the engine keeps between calls: its largest buffer per dtype (the dense
/// logits matrix or the tile workspace), so that a training loop does not pay a fresh N×M
/// allocation and its page faults every step. CUDA memory is cached by LibTorch instead.
int64_t engine_workspace_bytes();
/// Frees the buffers the engine keeps between calls (e.g. after training, before evaluation).
void release_engine_workspaces();

namespace detail {
// The names under which the engine was reached before it was public; kept for one release.
using ContrastProblem = ::medcl::ContrastProblem;
using ::medcl::contrast_loss;
} // namespace detail

} // namespace medcl
