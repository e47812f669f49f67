#pragma once

/// \file
/// The one similarity engine under every InfoNCE-family loss (NT-Xent, InfoNCE/MoCo, SupCon,
/// CLIP) and every negative weighting. It has a dense path (one logits matrix, kept for
/// backward) and a tiled path (streams tiles of logits, keeps per-row log-sum-exp statistics
/// and recomputes tiles in backward: memory O((N+M)·D + tile²)). Both give the same values and
/// gradients; similarities and log-sum-exp accumulate in float32 (float64 for double inputs).

#include <medcl/core/negative_weighting.h>
#include <medcl/pairing/pair_rule.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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
  /// Rows and columns per tile on the tiled path; 0 picks 2048 on CPU and 8192 on CUDA.
  /// Default: 0
  TORCH_ARG(int64_t, tile_size) = 0;
  /// Largest N·M for which EnginePath::Auto takes the dense path. Default: 2^28 (1 GiB of float32)
  TORCH_ARG(int64_t, dense_max_elements) = int64_t(1) << 28;
};

namespace detail {

/// A contrastive problem as the engine sees it. Anchors A [N, D] and candidates C [M, D] are
/// L2-normalised and in the accumulation dtype (float32 or float64); the logits are
/// `scale · A Cᵀ`. `paired` (optional, [N, D]) adds one positive per row outside C (MoCo's key).
struct ContrastProblem {
  at::Tensor anchors;
  at::Tensor candidates;
  at::Tensor paired;
  double scale = 1.0;
  /// Optional 0-dim tensor holding `scale`, when the scale is learnable (CLIP): it then gets
  /// d loss / d scale.
  at::Tensor scale_tensor;
  std::shared_ptr<const PairRule> rule;
  NegativeWeighting weighting = NegativeWeighting::uniform();
  /// Also contrast each candidate against the anchors (CLIP); the two directions are averaged.
  bool symmetric = false;
  /// Multiplies the loss (SupCon's temperature / base_temperature).
  double loss_scale = 1.0;
  /// dtype of the matrix products (the input dtype on CUDA for bf16/fp16, else accumulation).
  at::ScalarType mm_dtype = at::kFloat;
  SimilarityEngineOptions options;
  /// Name of the calling loss, for warnings.
  const char* caller = "similarity engine";
};

inline double masked_value(at::ScalarType acc) {
  // Finite and far below any logit: exp(x - max) is exactly 0, and no -inf arithmetic can
  // produce NaN (-inf - -inf) in rows whose candidates are all masked.
  return acc == at::kDouble ? -1e300 : -1e30;
}

/// Per-row statistics of one direction (rows = anchors, or columns for the symmetric direction).
struct DirectionStats {
  at::Tensor pos_n;   // number of positives
  at::Tensor pos_sum; // sum of positive logits
  at::Tensor pos_lse; // log-sum-exp of positive logits
  at::Tensor neg_n;   // number of negatives
  at::Tensor den_lse; // uniform: log-sum-exp over positives and negatives
  at::Tensor lse_a;   // weighted: log-sum-exp of (1 + beta) * negative logits
  at::Tensor lse_b;   // weighted: log-sum-exp of beta * negative logits

  void init(int64_t n, const at::TensorOptions& acc, double neg) {
    pos_n = at::zeros({n}, acc);
    pos_sum = at::zeros({n}, acc);
    neg_n = at::zeros({n}, acc);
    pos_lse = at::full({n}, neg, acc);
    den_lse = at::full({n}, neg, acc);
    lse_a = at::full({n}, neg, acc);
    lse_b = at::full({n}, neg, acc);
  }
};

/// What backward needs per row of one direction, computed once after the forward pass.
struct DirectionCoef {
  at::Tensor weight;     // d loss / d loss_i (0 for rows left out)
  at::Tensor inv_pn;     // 1 / number of positives
  at::Tensor log_pos;    // positives: d loss_i / d l = sign * exp(l + log_pos) - inv_pn
  at::Tensor sign_pos;   //
  at::Tensor log_a;      // negatives: d loss_i / d l = exp((1+b) l + log_a) - exp(b l + log_b)
  at::Tensor log_b;      //
  at::Tensor loss;       // per-row loss (0 for rows left out)
  at::Tensor floor_grad; // d loss_i / d scale through the clamp N e^{-scale} (0 unless clamped)
  at::Tensor
      shift_fac; // fast path: weight * exp(scale - log T), so that softmax = fac * e^{l - scale}
  int64_t valid_rows = 0;
};

/// Masks of a tile, from a sparse rule (indices) or dense tiles.
struct TileView {
  // dense masks (may be undefined)
  at::Tensor positive;
  at::Tensor excluded;
  // sparse: local (row, col) of the positive / excluded entry for rows that have one in the tile
  bool sparse = false;
  at::Tensor pos_rows, pos_cols, exc_rows, exc_cols;
};

inline void sparse_local(
    const at::Tensor& cols_of_rows,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1,
    at::Tensor* rows,
    at::Tensor* cols) {
  auto idx = cols_of_rows.slice(0, r0, r1);
  auto inside = idx.ge(c0).logical_and(idx.lt(c1));
  *rows = at::arange(r1 - r0, idx.options()).masked_select(inside);
  *cols = idx.masked_select(inside) - c0;
}

/// Tile masks for the row direction (transposed = false) or for a tile seen from the candidates
/// (transposed = true: rows are candidates [c0, c1), columns anchors [r0, r1)).
inline TileView make_tile_view(
    const ContrastProblem& p,
    const c10::optional<SparsePairs>& sp,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1,
    bool need_dense) {
  TileView v;
  if (sp.has_value() && !need_dense) {
    v.sparse = true;
    sparse_local(sp->positive_col, r0, r1, c0, c1, &v.pos_rows, &v.pos_cols);
    sparse_local(sp->excluded_col, r0, r1, c0, c1, &v.exc_rows, &v.exc_cols);
    return v;
  }
  if (sp.has_value()) {
    v.positive = tile_mask_from_sparse(sp->positive_col, r0, r1, c0, c1);
    v.excluded = tile_mask_from_sparse(sp->excluded_col, r0, r1, c0, c1);
    return v;
  }
  auto t = p.rule->tile(r0, r1, c0, c1);
  v.positive = t.positive;
  v.excluded = t.excluded;
  if (v.positive.defined() && v.excluded.defined()) {
    // A pair that is excluded is never a positive.
    v.positive = v.positive.logical_and(v.excluded.logical_not());
  }
  return v;
}

inline at::Tensor linear_index(const at::Tensor& rows, const at::Tensor& cols, int64_t width) {
  return rows * width + cols;
}

/// Writes the masked value into the excluded entries of a logits tile (in place).
inline void apply_exclusions(at::Tensor& logits, const TileView& v, double neg) {
  if (v.sparse) {
    if (v.exc_rows.numel() > 0) {
      logits.view(-1).index_fill_(0, linear_index(v.exc_rows, v.exc_cols, logits.size(1)), neg);
    }
  } else if (v.excluded.defined()) {
    logits.masked_fill_(v.excluded, neg);
  }
}

inline void merge_lse(at::Tensor& acc, const at::Tensor& add) {
  acc = at::logaddexp(acc, add);
}

/// Accumulates the statistics of one direction from a logits tile whose exclusions are applied.
/// `rows` selects the slice of `s` that the tile's rows belong to.
inline void accumulate_stats(
    DirectionStats& s,
    int64_t row0,
    const at::Tensor& logits,
    const TileView& v,
    const NegativeWeighting& w,
    double neg) {
  const int64_t tn = logits.size(0);
  const int64_t tm = logits.size(1);
  auto pos_n = s.pos_n.slice(0, row0, row0 + tn);
  auto pos_sum = s.pos_sum.slice(0, row0, row0 + tn);
  auto neg_n = s.neg_n.slice(0, row0, row0 + tn);
  auto opts = logits.options();
  at::Tensor tile_pos_n, tile_pos_sum, tile_pos_lse, tile_exc_n;
  if (v.sparse) {
    tile_pos_n = at::zeros({tn}, opts);
    tile_exc_n = at::zeros({tn}, opts);
    tile_pos_sum = at::zeros({tn}, opts);
    tile_pos_lse = at::full({tn}, neg, opts);
    if (v.pos_rows.numel() > 0) {
      auto vals = logits.view(-1).index_select(0, linear_index(v.pos_rows, v.pos_cols, tm));
      tile_pos_n.index_fill_(0, v.pos_rows, 1.0);
      tile_pos_sum.index_copy_(0, v.pos_rows, vals);
      tile_pos_lse.index_copy_(0, v.pos_rows, vals);
    }
    if (v.exc_rows.numel() > 0) {
      tile_exc_n.index_fill_(0, v.exc_rows, 1.0);
    }
  } else {
    if (v.positive.defined()) {
      tile_pos_n = v.positive.sum(1, false, opts.dtype().toScalarType());
      tile_pos_sum = at::where(v.positive, logits, at::zeros({}, opts)).sum(1);
      tile_pos_lse = at::where(v.positive, logits, at::full({}, neg, opts)).logsumexp(1);
    } else {
      tile_pos_n = at::zeros({tn}, opts);
      tile_pos_sum = at::zeros({tn}, opts);
      tile_pos_lse = at::full({tn}, neg, opts);
    }
    tile_exc_n = v.excluded.defined() ? v.excluded.sum(1, false, opts.dtype().toScalarType())
                                      : at::zeros({tn}, opts);
  }
  pos_n.add_(tile_pos_n);
  pos_sum.add_(tile_pos_sum);
  neg_n.add_(static_cast<double>(tm) - tile_pos_n - tile_exc_n);
  auto pos_lse = s.pos_lse.slice(0, row0, row0 + tn);
  pos_lse.copy_(at::logaddexp(pos_lse, tile_pos_lse));
  if (w.is_uniform()) {
    auto den = s.den_lse.slice(0, row0, row0 + tn);
    den.copy_(at::logaddexp(den, logits.logsumexp(1)));
    return;
  }
  // Weighted: negatives only. Positive entries are masked out of the negative statistics.
  at::Tensor negmask;
  if (v.sparse) {
    negmask = at::ones({tn, tm}, opts.dtype(at::kBool));
    if (v.pos_rows.numel() > 0) {
      negmask.view(-1).index_fill_(0, linear_index(v.pos_rows, v.pos_cols, tm), false);
    }
    if (v.exc_rows.numel() > 0) {
      negmask.view(-1).index_fill_(0, linear_index(v.exc_rows, v.exc_cols, tm), false);
    }
  } else {
    negmask = at::ones({tn, tm}, opts.dtype(at::kBool));
    if (v.positive.defined()) {
      negmask.logical_and_(v.positive.logical_not());
    }
    if (v.excluded.defined()) {
      negmask.logical_and_(v.excluded.logical_not());
    }
  }
  const double beta = w.beta();
  auto negval = at::full({}, neg, opts);
  auto lse_a = s.lse_a.slice(0, row0, row0 + tn);
  lse_a.copy_(at::logaddexp(lse_a, at::where(negmask, logits * (1.0 + beta), negval).logsumexp(1)));
  auto lse_b = s.lse_b.slice(0, row0, row0 + tn);
  lse_b.copy_(at::logaddexp(lse_b, at::where(negmask, logits * beta, negval).logsumexp(1)));
}

/// Adds one extra positive logit per row (MoCo's query-key logit) to the statistics.
inline void
accumulate_paired(DirectionStats& s, const at::Tensor& logit, const NegativeWeighting& w) {
  s.pos_n.add_(1.0);
  s.pos_sum.add_(logit);
  s.pos_lse = at::logaddexp(s.pos_lse, logit);
  if (w.is_uniform()) {
    s.den_lse = at::logaddexp(s.den_lse, logit);
  }
}

/// Turns the statistics into per-row losses and backward coefficients (in float64, O(N)).
inline DirectionCoef finalize(
    const DirectionStats& s,
    const NegativeWeighting& w,
    double scale,
    double direction_weight,
    at::ScalarType acc) {
  const double neg = masked_value(acc);
  auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  auto pn = d(s.pos_n);
  auto nn = d(s.neg_n);
  auto valid = pn.gt(0.5).logical_and(nn.gt(0.5));
  DirectionCoef c;
  c.valid_rows = valid.sum().item<int64_t>();
  auto inv_pn = at::where(valid, 1.0 / pn.clamp_min(1.0), at::zeros({}, pn.options()));
  auto mean_pos = d(s.pos_sum) * inv_pn;
  at::Tensor log_t, log_pos, sign_pos, log_a, log_b;
  if (w.is_uniform()) {
    log_t = d(s.den_lse);
    log_pos = -log_t;
    sign_pos = at::ones_like(log_t);
    log_a = -log_t;
    log_b = at::full_like(log_t, neg);
  } else {
    const double tp = w.tau_plus();
    const double beta = w.beta();
    auto n = nn.clamp_min(1.0);
    auto p = pn.clamp_min(1.0);
    auto lse_a = d(s.lse_a);
    auto lse_b = d(s.lse_b);
    auto log_w = at::log(n) + lse_a - lse_b;
    auto log_s = d(s.pos_lse);
    auto m = at::maximum(log_w, log_s);
    auto wm = at::exp(log_w - m);
    auto sm = at::exp(log_s - m);
    auto g = (wm - tp * n * sm / p) / (1.0 - tp);
    auto floor = n * at::exp(-scale - m);
    auto clamped = g.lt(floor);
    auto ng = at::where(clamped, floor, g);
    log_t = m + at::log(sm + ng);
    // d log T / d l_p = e^{l_p} (1 - tau+ N / (P (1 - tau+))) / T unless clamped.
    auto k = at::where(clamped, at::ones_like(n), 1.0 - tp * n / (p * (1.0 - tp)));
    sign_pos = at::sign(k);
    log_pos = at::where(k.ne(0), at::log(k.abs()), at::full_like(k, neg)) - log_t;
    auto negv = at::full_like(log_t, neg);
    auto base = log_w - std::log(1.0 - tp) - log_t;
    log_a = at::where(clamped, negv, base + std::log1p(beta) - lse_a);
    log_b = beta > 0 ? at::where(clamped, negv, base + std::log(beta) - lse_b) : negv;
  }
  auto loss = at::where(valid, log_t - mean_pos, at::zeros({}, pn.options()));
  if (!w.is_uniform()) {
    // The clamp N e^{-scale} depends on the scale itself: d log T / d scale = -N e^{-scale} / T.
    const double tp = w.tau_plus();
    auto n = nn.clamp_min(1.0);
    auto log_w = at::log(n) + d(s.lse_a) - d(s.lse_b);
    auto log_s = d(s.pos_lse);
    auto m = at::maximum(log_w, log_s);
    auto g = (at::exp(log_w - m) - tp * n * at::exp(log_s - m) / pn.clamp_min(1.0)) / (1.0 - tp);
    auto floor = n * at::exp(-scale - m);
    c.floor_grad = at::where(
        valid.logical_and(g.lt(floor)),
        -at::exp(at::log(floor) + m - log_t),
        at::zeros({}, pn.options()));
  } else {
    c.floor_grad = at::zeros_like(loss);
  }
  const double rw = c.valid_rows > 0 ? direction_weight / static_cast<double>(c.valid_rows) : 0.0;
  c.weight = at::where(valid, at::full({}, rw, pn.options()), at::zeros({}, pn.options())).to(acc);
  c.inv_pn = inv_pn.to(acc);
  c.log_pos = at::where(valid, log_pos, at::full_like(log_pos, neg)).to(acc);
  c.sign_pos = sign_pos.to(acc);
  c.log_a = at::where(valid, log_a, at::full_like(log_a, neg)).to(acc);
  c.log_b = at::where(valid, log_b, at::full_like(log_b, neg)).to(acc);
  c.loss = loss;
  c.shift_fac = at::where(valid, at::exp(scale - log_t) * rw, at::zeros({}, pn.options())).to(acc);
  return c;
}

/// d loss / d logits for one direction over a tile with exclusions applied (rows of `logits` are
/// rows of that direction), multiplied by the row weights.
inline at::Tensor grad_tile(
    const at::Tensor& logits,
    const TileView& v,
    const DirectionCoef& c,
    int64_t row0,
    const NegativeWeighting& w,
    bool may_consume) {
  const int64_t tn = logits.size(0);
  const int64_t tm = logits.size(1);
  auto weight = c.weight.slice(0, row0, row0 + tn).unsqueeze(1);
  auto inv_pn = c.inv_pn.slice(0, row0, row0 + tn);
  auto log_pos = c.log_pos.slice(0, row0, row0 + tn).unsqueeze(1);
  at::Tensor g;
  if (w.is_uniform()) {
    // softmax over the row's denominator minus 1/P at its positives.
    g = may_consume ? logits.add_(log_pos).exp_() : (logits + log_pos).exp_();
    if (v.sparse) {
      if (v.pos_rows.numel() > 0) {
        g.view(-1).index_add_(
            0, linear_index(v.pos_rows, v.pos_cols, tm), inv_pn.index_select(0, v.pos_rows).neg());
      }
    } else if (v.positive.defined()) {
      g.sub_(v.positive * inv_pn.unsqueeze(1));
    }
    return g.mul_(weight);
  }
  const double beta = w.beta();
  at::Tensor posmask = v.positive;
  at::Tensor excmask = v.excluded;
  if (v.sparse) {
    posmask = at::zeros({tn, tm}, logits.options().dtype(at::kBool));
    excmask = at::zeros({tn, tm}, logits.options().dtype(at::kBool));
    if (v.pos_rows.numel() > 0) {
      posmask.view(-1).index_fill_(0, linear_index(v.pos_rows, v.pos_cols, tm), true);
    }
    if (v.exc_rows.numel() > 0) {
      excmask.view(-1).index_fill_(0, linear_index(v.exc_rows, v.exc_cols, tm), true);
    }
  }
  auto log_a = c.log_a.slice(0, row0, row0 + tn).unsqueeze(1);
  auto log_b = c.log_b.slice(0, row0, row0 + tn).unsqueeze(1);
  auto sign = c.sign_pos.slice(0, row0, row0 + tn).unsqueeze(1);
  auto gneg = (logits * (1.0 + beta) + log_a).exp_();
  if (beta > 0) {
    gneg.sub_((logits * beta + log_b).exp_());
  }
  auto zero = at::zeros({}, logits.options());
  at::Tensor negmask = at::ones({tn, tm}, logits.options().dtype(at::kBool));
  if (posmask.defined()) {
    negmask.logical_and_(posmask.logical_not());
  }
  if (excmask.defined()) {
    negmask.logical_and_(excmask.logical_not());
  }
  g = at::where(negmask, gneg, zero);
  if (posmask.defined()) {
    auto gpos = (logits + log_pos).exp_().mul_(sign).sub_(inv_pn.unsqueeze(1));
    g = at::where(posmask, gpos, g);
  }
  return g.mul_(weight);
}

/// d loss_i / d l for the paired positive logit of each row, times the row weight.
inline at::Tensor grad_paired(const at::Tensor& logit, const DirectionCoef& c) {
  return (logit + c.log_pos).exp().mul_(c.sign_pos).sub_(c.inv_pn).mul_(c.weight);
}

inline int64_t resolve_tile(const ContrastProblem& p) {
  if (p.options.tile_size() > 0) {
    return p.options.tile_size();
  }
  return p.anchors.is_cuda() ? 8192 : 2048;
}

struct EngineState {
  ContrastProblem problem;
  c10::optional<SparsePairs> sparse;
  c10::optional<SparsePairs> sparse_t;
  bool dense = false;
  int64_t tile = 0;
  at::Tensor a_mm; // scale * anchors in mm dtype
  at::Tensor c_mm; // candidates in mm dtype
  at::Tensor paired_logit;
  DirectionCoef row;
  DirectionCoef col;
  at::Tensor dense_logits; // dense path only (e^{l - scale} on the shifted path)
  bool consumed = false;
  bool shifted = false; // uniform fast path: logits shifted by their bound, no running maximum
};

/// Backward node of the engine: recomputes (tiled) or reuses (dense) the logits.
struct ContrastBackward : public torch::autograd::Node {
  std::shared_ptr<EngineState> state;

  std::string name() const override {
    return "medcl::ContrastBackward";
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override;

  void release_variables() override {
    state.reset();
  }
};

/// Whether the uniform fast path may shift logits by their upper bound `scale` (cosine <= 1)
/// instead of a running maximum: exp(l - scale) >= exp(-2 scale) must stay a normal number.
inline bool use_shifted_path(const ContrastProblem& p) {
  if (!p.weighting.is_uniform()) {
    return false;
  }
  const double limit = p.anchors.scalar_type() == at::kDouble ? 300.0 : 40.0;
  return p.scale <= limit;
}

/// Positive statistics from a logits tile (before exponentiation), for the uniform fast path:
/// counts and sums only (the uniform loss needs no log-sum-exp of positives).
inline void accumulate_positive_sums(
    DirectionStats& s,
    int64_t row0,
    const at::Tensor& logits,
    const at::Tensor& pos_rows,
    const at::Tensor& lin,
    const at::Tensor& dense_pos,
    const at::Tensor& dense_exc,
    bool sparse,
    int64_t tn,
    int64_t tm) {
  auto opts = logits.options();
  auto pos_n = s.pos_n.slice(0, row0, row0 + tn);
  auto pos_sum = s.pos_sum.slice(0, row0, row0 + tn);
  auto neg_n = s.neg_n.slice(0, row0, row0 + tn);
  neg_n.add_(static_cast<double>(tm));
  if (sparse) {
    if (pos_rows.numel() > 0) {
      auto vals = logits.reshape(-1).index_select(0, lin);
      pos_n.index_add_(0, pos_rows, at::ones({pos_rows.numel()}, opts));
      pos_sum.index_add_(0, pos_rows, vals);
      neg_n.index_add_(0, pos_rows, at::full({pos_rows.numel()}, -1.0, opts));
    }
  } else if (dense_pos.defined()) {
    auto cnt = dense_pos.sum(1, false, opts.dtype().toScalarType());
    pos_n.add_(cnt);
    neg_n.sub_(cnt);
    pos_sum.add_(at::where(dense_pos, logits, at::zeros({}, opts)).sum(1));
  }
  if (!sparse && dense_exc.defined()) {
    neg_n.sub_(dense_exc.sum(1, false, opts.dtype().toScalarType()));
  }
}

/// Uniform fast path, forward part of one tile: positive sums, then logits -> e^{l - scale} in
/// place with excluded entries zeroed, and the row (and column) sums merged into the
/// log-denominators. Returns the exponentiated tile.
inline void shifted_tile_forward(
    const ContrastProblem& p,
    const c10::optional<SparsePairs>& sp,
    const c10::optional<SparsePairs>& sp_t,
    DirectionStats& rs,
    DirectionStats* cs,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1,
    at::Tensor& logits,
    double neg) {
  const int64_t tn = r1 - r0, tm = c1 - c0;
  auto v = make_tile_view(p, sp, r0, r1, c0, c1, false);
  at::Tensor lin =
      v.sparse && v.pos_rows.numel() > 0 ? linear_index(v.pos_rows, v.pos_cols, tm) : at::Tensor();
  accumulate_positive_sums(
      rs, r0, logits, v.pos_rows, lin, v.positive, v.excluded, v.sparse, tn, tm);
  if (v.sparse && v.exc_rows.numel() > 0) {
    rs.neg_n.slice(0, r0, r1).index_add_(
        0, v.exc_rows, at::full({v.exc_rows.numel()}, -1.0, logits.options()));
  }
  TileView vt;
  if (cs != nullptr) {
    if (sp_t.has_value()) {
      vt = make_tile_view(p, sp_t, c0, c1, r0, r1, false);
      // Positions in the (untransposed) tile: row = transposed column, column = transposed row.
      at::Tensor lin_t =
          vt.pos_rows.numel() > 0 ? linear_index(vt.pos_cols, vt.pos_rows, tm) : at::Tensor();
      accumulate_positive_sums(*cs, c0, logits, vt.pos_rows, lin_t, {}, {}, true, tm, tn);
      if (vt.exc_rows.numel() > 0) {
        cs->neg_n.slice(0, c0, c1).index_add_(
            0, vt.exc_rows, at::full({vt.exc_rows.numel()}, -1.0, logits.options()));
      }
    } else {
      auto lt = logits.t();
      accumulate_positive_sums(
          *cs,
          c0,
          lt,
          {},
          {},
          v.positive.defined() ? v.positive.t() : at::Tensor(),
          v.excluded.defined() ? v.excluded.t() : at::Tensor(),
          false,
          tm,
          tn);
    }
  }
  logits.sub_(p.scale).exp_();
  if (v.sparse) {
    if (v.exc_rows.numel() > 0) {
      logits.view(-1).index_fill_(0, linear_index(v.exc_rows, v.exc_cols, tm), 0.0);
    }
  } else if (v.excluded.defined()) {
    logits.masked_fill_(v.excluded, 0.0);
  }
  if (cs != nullptr && vt.sparse && vt.exc_rows.numel() > 0) {
    logits.view(-1).index_fill_(0, linear_index(vt.exc_cols, vt.exc_rows, tm), 0.0);
  }
  auto merge = [&](at::Tensor den, const at::Tensor& sums) {
    auto add = at::where(sums.gt(0), sums.log().add_(p.scale), at::full({}, neg, sums.options()));
    den.copy_(at::logaddexp(den, add));
  };
  merge(rs.den_lse.slice(0, r0, r1), logits.sum(1));
  if (cs != nullptr) {
    merge(cs->den_lse.slice(0, c0, c1), logits.sum(0));
  }
}

/// Uniform fast path, gradient of one exponentiated tile (consumed in place): row factor times
/// e^{l - scale} (plus the column factor for symmetric problems) minus 1/P at the positives.
inline at::Tensor shifted_grad_tile(
    const ContrastProblem& p,
    const c10::optional<SparsePairs>& sp,
    const c10::optional<SparsePairs>& sp_t,
    const DirectionCoef& row,
    const DirectionCoef* col,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1,
    at::Tensor& expl) {
  const int64_t tm = c1 - c0;
  auto v = make_tile_view(p, sp, r0, r1, c0, c1, false);
  auto rf = row.shift_fac.slice(0, r0, r1).unsqueeze(1);
  at::Tensor g;
  if (col != nullptr) {
    auto tmp = expl * col->shift_fac.slice(0, c0, c1).unsqueeze(0);
    g = expl.mul_(rf).add_(tmp);
  } else {
    g = expl.mul_(rf);
  }
  auto row_pos = (row.inv_pn * row.weight).slice(0, r0, r1);
  if (v.sparse) {
    if (v.pos_rows.numel() > 0) {
      g.view(-1).index_add_(
          0, linear_index(v.pos_rows, v.pos_cols, tm), row_pos.index_select(0, v.pos_rows).neg());
    }
  } else if (v.positive.defined()) {
    g.sub_(v.positive * row_pos.unsqueeze(1));
  }
  if (col != nullptr) {
    auto col_pos = (col->inv_pn * col->weight).slice(0, c0, c1);
    if (sp_t.has_value()) {
      auto vt = make_tile_view(p, sp_t, c0, c1, r0, r1, false);
      if (vt.pos_rows.numel() > 0) {
        g.view(-1).index_add_(
            0,
            linear_index(vt.pos_cols, vt.pos_rows, tm),
            col_pos.index_select(0, vt.pos_rows).neg());
      }
    } else if (v.positive.defined()) {
      g.sub_(v.positive * col_pos.unsqueeze(0));
    }
  }
  return g;
}

/// Recomputes e^{l - scale} of a tile with its exclusions zeroed (shifted path, backward).
inline void recompute_shifted(
    const ContrastProblem& p,
    const c10::optional<SparsePairs>& sp,
    const c10::optional<SparsePairs>& sp_t,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1,
    at::Tensor& logits) {
  const int64_t tm = c1 - c0;
  auto v = make_tile_view(p, sp, r0, r1, c0, c1, false);
  logits.sub_(p.scale).exp_();
  if (v.sparse) {
    if (v.exc_rows.numel() > 0) {
      logits.view(-1).index_fill_(0, linear_index(v.exc_rows, v.exc_cols, tm), 0.0);
    }
  } else if (v.excluded.defined()) {
    logits.masked_fill_(v.excluded, 0.0);
  }
  if (p.symmetric && sp_t.has_value()) {
    auto vt = make_tile_view(p, sp_t, c0, c1, r0, r1, false);
    if (vt.exc_rows.numel() > 0) {
      logits.view(-1).index_fill_(0, linear_index(vt.exc_cols, vt.exc_rows, tm), 0.0);
    }
  }
}

inline void tile_loop(
    EngineState& st,
    const std::function<void(int64_t, int64_t, int64_t, int64_t, at::Tensor&)>& body) {
  const auto& p = st.problem;
  const int64_t n = p.anchors.size(0);
  const int64_t m = p.candidates.size(0);
  const auto acc = p.anchors.scalar_type();
  const int64_t t = st.dense ? std::max(n, m) : st.tile;
  for (int64_t r0 = 0; r0 < n; r0 += t) {
    const int64_t r1 = std::min(n, r0 + t);
    auto a = st.a_mm.slice(0, r0, r1);
    for (int64_t c0 = 0; c0 < m; c0 += t) {
      const int64_t c1 = std::min(m, c0 + t);
      at::Tensor logits = at::mm(a, st.c_mm.slice(0, c0, c1).t());
      if (logits.scalar_type() != acc) {
        logits = logits.to(acc);
      }
      body(r0, r1, c0, c1, logits);
    }
  }
}

inline at::Tensor contrast_forward(std::shared_ptr<EngineState> st_ptr) {
  auto& st = *st_ptr;
  auto& p = st.problem;
  const int64_t n = p.anchors.size(0);
  const int64_t m = p.candidates.size(0);
  const auto acc = p.anchors.scalar_type();
  const double neg = masked_value(acc);
  const auto& w = p.weighting;
  auto acc_opts = p.anchors.options();

  st.sparse = p.rule->sparse();
  st.sparse_t = p.symmetric ? p.rule->sparse_transposed() : c10::nullopt;
  switch (p.options.path()) {
    case EnginePath::Dense:
      st.dense = true;
      break;
    case EnginePath::Tiled:
      st.dense = false;
      break;
    case EnginePath::Auto:
      st.dense = n * m <= p.options.dense_max_elements();
      break;
  }
  st.tile = resolve_tile(p);
  st.a_mm = (p.anchors * p.scale).to(p.mm_dtype);
  st.c_mm = p.candidates.to(p.mm_dtype);

  DirectionStats rs, cs;
  rs.init(n, acc_opts, neg);
  if (p.symmetric) {
    cs.init(m, acc_opts, neg);
  }
  const bool dense_masks_row = !st.sparse.has_value();
  st.shifted = use_shifted_path(p);
  tile_loop(st, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::Tensor& logits) {
    if (st.shifted) {
      shifted_tile_forward(
          p, st.sparse, st.sparse_t, rs, p.symmetric ? &cs : nullptr, r0, r1, c0, c1, logits, neg);
      if (st.dense) {
        st.dense_logits = logits;
      }
      return;
    }
    auto v = make_tile_view(p, st.sparse, r0, r1, c0, c1, dense_masks_row);
    apply_exclusions(logits, v, neg);
    accumulate_stats(rs, r0, logits, v, w, neg);
    if (p.symmetric) {
      TileView vt;
      if (st.sparse_t.has_value()) {
        vt = make_tile_view(p, st.sparse_t, c0, c1, r0, r1, false);
        // exclusions of the transposed rule on the transposed tile
        auto lt = logits.t().clone(at::MemoryFormat::Contiguous);
        apply_exclusions(lt, vt, neg);
        accumulate_stats(cs, c0, lt, vt, w, neg);
      } else {
        vt.positive = v.positive.defined() ? v.positive.t() : at::Tensor();
        vt.excluded = v.excluded.defined() ? v.excluded.t() : at::Tensor();
        auto lt = logits.t();
        accumulate_stats(cs, c0, lt, vt, w, neg);
      }
    }
    if (st.dense) {
      st.dense_logits = logits;
    }
  });
  if (p.paired.defined()) {
    st.paired_logit = (p.anchors * p.paired).sum(1).mul_(p.scale);
    accumulate_paired(rs, st.paired_logit, w);
  }
  const double dir_w = p.symmetric ? 0.5 * p.loss_scale : p.loss_scale;
  st.row = finalize(rs, w, p.scale, dir_w, acc);
  int64_t valid = st.row.valid_rows;
  at::Tensor total = (st.row.loss * st.row.weight.to(at::kDouble)).sum();
  if (p.symmetric) {
    st.col = finalize(cs, w, p.scale, dir_w, acc);
    valid += st.col.valid_rows;
    total = total + (st.col.loss * st.col.weight.to(at::kDouble)).sum();
  }
  if (valid == 0) {
    TORCH_WARN(
        p.caller,
        ": no anchor has both a positive and a negative; the loss is 0 (and its gradient zero). "
        "Check the pairing rule and the batch composition.");
  }
  return total.to(acc);
}

inline torch::autograd::variable_list ContrastBackward::apply(
    torch::autograd::variable_list&& grads) {
  TORCH_CHECK(
      state,
      "medcl::ContrastBackward: called after its buffers were freed; pass retain_graph=true");
  auto& st = *state;
  auto& p = st.problem;
  TORCH_CHECK(
      !st.consumed,
      p.caller,
      ": backward through the dense similarity path ran twice; it reuses its logits in place. "
      "Use EnginePath::Tiled for repeated backward passes.");
  torch::autograd::variable_list out(4);
  const bool need_s = p.scale_tensor.defined() && should_compute_output(3);
  const bool need_a = should_compute_output(0) || need_s;
  const bool need_c = should_compute_output(1);
  const bool need_p = p.paired.defined() && should_compute_output(2);
  if (!need_a && !need_c && !need_p) {
    return out;
  }
  const auto acc = p.anchors.scalar_type();
  const double neg = masked_value(acc);
  auto go = grads[0].defined() ? grads[0].to(acc) : at::ones({}, p.anchors.options());
  const int64_t n = p.anchors.size(0);
  const int64_t m = p.candidates.size(0);
  auto ga = at::zeros({n, p.anchors.size(1)}, p.anchors.options());
  auto gc = at::zeros({m, p.candidates.size(1)}, p.candidates.options());
  const auto& w = p.weighting;
  const auto mm_dtype = p.mm_dtype;
  // Fold the incoming gradient into the row weights once, instead of into every tile.
  DirectionCoef row = st.row;
  row.weight = st.row.weight * go;
  row.shift_fac = st.row.shift_fac * go;
  DirectionCoef col = st.col;
  if (p.symmetric) {
    col.weight = st.col.weight * go;
    col.shift_fac = st.col.shift_fac * go;
  }
  auto accumulate =
      [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::Tensor& logits, bool consume) {
        if (st.shifted) {
          if (!consume) {
            // Recompute e^{l - scale} with exclusions, as the forward pass did.
            recompute_shifted(p, st.sparse, st.sparse_t, r0, r1, c0, c1, logits);
          }
          auto g = shifted_grad_tile(
              p, st.sparse, st.sparse_t, row, p.symmetric ? &col : nullptr, r0, r1, c0, c1, logits);
          auto gm = g.to(mm_dtype);
          if (need_a) {
            ga.slice(0, r0, r1).add_(at::mm(gm, st.c_mm.slice(0, c0, c1)).to(acc), p.scale);
          }
          if (need_c) {
            gc.slice(0, c0, c1).add_(at::mm(gm.t(), st.a_mm.slice(0, r0, r1)).to(acc));
          }
          return;
        }
        auto v = make_tile_view(p, st.sparse, r0, r1, c0, c1, !st.sparse.has_value());
        if (!consume) {
          apply_exclusions(logits, v, neg);
        }
        at::Tensor g;
        if (p.symmetric) {
          TileView vt;
          at::Tensor lt;
          if (st.sparse_t.has_value()) {
            vt = make_tile_view(p, st.sparse_t, c0, c1, r0, r1, false);
            lt = logits.t().clone(at::MemoryFormat::Contiguous);
            apply_exclusions(lt, vt, neg);
          } else {
            vt.positive = v.positive.defined() ? v.positive.t() : at::Tensor();
            vt.excluded = v.excluded.defined() ? v.excluded.t() : at::Tensor();
            lt = logits.t().clone();
          }
          auto gt = grad_tile(lt, vt, col, c0, w, true);
          g = grad_tile(logits, v, row, r0, w, consume);
          g.add_(gt.t());
        } else {
          g = grad_tile(logits, v, row, r0, w, true);
        }
        auto gm = g.to(mm_dtype);
        if (need_a) {
          ga.slice(0, r0, r1).add_(at::mm(gm, st.c_mm.slice(0, c0, c1)).to(acc), p.scale);
        }
        if (need_c) {
          gc.slice(0, c0, c1).add_(at::mm(gm.t(), st.a_mm.slice(0, r0, r1)).to(acc));
        }
      };
  if (st.dense && st.dense_logits.defined()) {
    st.consumed = true;
    auto logits = st.dense_logits;
    st.dense_logits = at::Tensor();
    accumulate(0, n, 0, m, logits, true);
  } else {
    tile_loop(st, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::Tensor& logits) {
      accumulate(r0, r1, c0, c1, logits, false);
    });
  }
  if (p.paired.defined()) {
    auto gp = grad_paired(st.paired_logit, row).mul_(p.scale).unsqueeze(1);
    if (need_a) {
      ga.add_(gp * p.paired);
    }
    if (need_p) {
      out[2] = gp * p.anchors;
    }
  }
  if (need_s) {
    // l = scale * <a, c>: d loss / d scale = <A, dA> / scale (dA holds every logit's
    // contribution, the paired one included), plus the clamp's own dependence on the scale.
    auto gs = (ga * p.anchors).sum() / p.scale;
    gs = gs + (st.row.floor_grad * row.weight.to(at::kDouble)).sum().to(acc);
    if (p.symmetric) {
      gs = gs + (st.col.floor_grad * col.weight.to(at::kDouble)).sum().to(acc);
    }
    out[3] = gs.to(p.scale_tensor.scalar_type()).reshape(p.scale_tensor.sizes());
  }
  if (should_compute_output(0)) {
    out[0] = ga;
  }
  if (need_c) {
    out[1] = gc;
  }
  return out;
}

/// Runs the engine: the loss (a 0-dim tensor of the accumulation dtype) with its autograd graph.
inline at::Tensor contrast_loss(ContrastProblem problem) {
  TORCH_INTERNAL_ASSERT(problem.rule, "contrast_loss: no pair rule");
  TORCH_INTERNAL_ASSERT(problem.rule->rows() == problem.anchors.size(0));
  TORCH_INTERNAL_ASSERT(problem.rule->cols() == problem.candidates.size(0));
  const bool needs_grad = torch::autograd::compute_requires_grad(
      problem.anchors, problem.candidates, problem.paired, problem.scale_tensor);
  auto st = std::make_shared<EngineState>();
  st->problem = std::move(problem);
  auto& p = st->problem;
  // The engine holds the inputs without their history; gradients flow through the node below.
  auto a_in = p.anchors;
  auto c_in = p.candidates;
  auto p_in = p.paired;
  auto s_in = p.scale_tensor;
  p.anchors = p.anchors.detach();
  p.candidates = p.candidates.detach();
  if (p.paired.defined()) {
    p.paired = p.paired.detach();
  }
  if (p.scale_tensor.defined()) {
    p.scale_tensor = p.scale_tensor.detach();
  }
  at::Tensor loss;
  {
    c10::NoGradGuard no_grad;
    loss = contrast_forward(st);
  }
  if (!needs_grad) {
    return loss;
  }
  if (!st->dense) {
    st->dense_logits = at::Tensor();
  }
  auto node =
      std::shared_ptr<ContrastBackward>(new ContrastBackward(), torch::autograd::deleteNode);
  node->state = st;
  node->set_next_edges(torch::autograd::collect_next_edges(a_in, c_in, p_in, s_in));
  torch::autograd::set_history(loss, node);
  return loss;
}

} // namespace detail
} // namespace medcl
