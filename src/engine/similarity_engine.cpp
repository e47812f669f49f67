// The similarity engine: statistics of the dense and tiled paths, and its autograd node.
// Public interface: include/medcl/core/similarity_engine.h.

#include <medcl/core/similarity_engine.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace medcl {
namespace {

/// The engine's large CPU buffers (the dense logits matrix, the tile workspace), kept between
/// calls so that a training loop does not pay the page faults of a fresh N×M matrix every step
/// (on CUDA, LibTorch's caching allocator does this already). One buffer per dtype is kept: the
/// largest released. Buffers are handed out whole (one user at a time) and come back only when
/// nothing else refers to them.
class WorkspaceCache {
 public:
  static WorkspaceCache& instance() {
    static WorkspaceCache cache;
    return cache;
  }

  /// A contiguous [rows, cols] tensor; its contents are undefined.
  at::Tensor acquire(int64_t rows, int64_t cols, const at::TensorOptions& options) {
    const int64_t need = rows * cols;
    if (options.device().is_cpu() && need > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(options.dtype().toScalarType());
      // Not a buffer far larger than needed: a small request would hold it for nothing.
      if (it != free_.end() && it->second.numel() >= need && it->second.numel() <= 4 * need) {
        at::Tensor buffer = std::move(it->second);
        free_.erase(it);
        // A tensor of its own over the storage, not a view (a view keeps its base alive, and
        // the storage could then never come back).
        return at::empty({0}, options).set_(buffer.storage(), 0, {rows, cols}, {cols, 1});
      }
    }
    return at::empty({rows, cols}, options);
  }

  /// Gives `t`'s storage back for later calls, when it is a CPU buffer nobody else refers to.
  void release(at::Tensor t) {
    if (!t.defined() || !t.device().is_cpu() || t.use_count() != 1 ||
        t.storage().use_count() != 1 || t.storage_offset() != 0) {
      return;
    }
    const int64_t numel = static_cast<int64_t>(t.storage().nbytes()) / t.element_size();
    auto whole = at::empty({0}, t.options()).set_(t.storage(), 0, {numel}, {1});
    t = at::Tensor();
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = free_[whole.scalar_type()];
    if (!slot.defined() || slot.numel() < numel) {
      slot = std::move(whole);
    }
  }

  int64_t bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t total = 0;
    for (const auto& kv : free_) {
      total += static_cast<int64_t>(kv.second.nbytes());
    }
    return total;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.clear();
  }

 private:
  mutable std::mutex mutex_;
  std::map<at::ScalarType, at::Tensor> free_;
};

double masked_value(at::ScalarType acc) {
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
  int64_t global_rows = 0; // valid rows over every process (= valid_rows in one process)
};

/// Adds one extra positive logit per row (MoCo's query-key logit) to the statistics.
void accumulate_paired(DirectionStats& s, const at::Tensor& logit, const NegativeWeighting& w) {
  s.pos_n.add_(1.0);
  s.pos_sum.add_(logit);
  s.pos_lse = at::logaddexp(s.pos_lse, logit);
  if (w.is_uniform()) {
    s.den_lse = at::logaddexp(s.den_lse, logit);
  }
}

/// Turns the statistics into per-row losses and backward coefficients (in float64, O(N)).
DirectionCoef finalize(
    const DirectionStats& s,
    const NegativeWeighting& w,
    double scale,
    double direction_weight,
    at::ScalarType acc,
    const std::function<int64_t(int64_t)>& global_row_count) {
  const double neg = masked_value(acc);
  auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  auto pn = d(s.pos_n);
  auto nn = d(s.neg_n);
  auto valid = pn.gt(0.5).logical_and(nn.gt(0.5));
  DirectionCoef c;
  c.valid_rows = valid.sum().item<int64_t>();
  // The divisor of the mean: this process's rows, or every process's (a data-parallel share).
  const int64_t divisor = global_row_count ? global_row_count(c.valid_rows) : c.valid_rows;
  c.global_rows = divisor;
  auto inv_pn = at::where(valid, 1.0 / pn.clamp_min(1.0), at::zeros({}, pn.options()));
  auto mean_pos = d(s.pos_sum) * inv_pn;
  at::Tensor log_t, log_pos, sign_pos, log_a, log_b, floor_grad;
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
    // The clamp N e^{-scale} depends on the scale itself: d log T / d scale = -N e^{-scale} / T.
    floor_grad = at::where(
        valid.logical_and(clamped),
        -at::exp(at::log(floor) + m - log_t),
        at::zeros({}, pn.options()));
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
  c.floor_grad = floor_grad.defined() ? floor_grad : at::zeros_like(loss);
  const double rw = divisor > 0 ? direction_weight / static_cast<double>(divisor) : 0.0;
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

/// At most one entry per line of a tile, by local index: a line's positive or excluded column
/// for sparse rules. Kept as a clamped index plus a validity flag so that no operation has a
/// data-dependent shape (which would force a device-to-host synchronisation on CUDA).
struct Slot {
  at::Tensor idx;   // int64 [lines], clamped into [0, extent)
  at::Tensor valid; // bool [lines]
  bool defined() const {
    return idx.defined();
  }
};

/// Slot of lines [l0, l1) whose target index (global, -1 for none) falls in [t0, t1).
Slot make_slot(const at::Tensor& targets, int64_t l0, int64_t l1, int64_t t0, int64_t t1) {
  Slot s;
  auto local = targets.slice(0, l0, l1) - t0;
  s.valid = local.ge(0).logical_and(local.lt(t1 - t0));
  s.idx = local.clamp(0, t1 - t0 - 1);
  return s;
}

/// The entries of `t` (lines along dim 0) at the slot's positions, [lines].
at::Tensor slot_gather(const at::Tensor& t, const Slot& s) {
  return t.gather(1, s.idx.unsqueeze(1)).squeeze(1);
}

/// t[line, idx] = value where the slot is valid (in place; t may be a transposed view).
void slot_fill(at::Tensor& t, const Slot& s, double value) {
  auto cur = slot_gather(t, s);
  auto v = at::where(s.valid, at::full({}, value, cur.options()), cur);
  t.scatter_(1, s.idx.unsqueeze(1), v.unsqueeze(1));
}

/// t[line, idx] += values[line] where the slot is valid (in place).
void slot_add(at::Tensor& t, const Slot& s, const at::Tensor& values) {
  auto v = at::where(s.valid, values, at::zeros({}, values.options()));
  t.scatter_add_(1, s.idx.unsqueeze(1), v.unsqueeze(1));
}

/// Dense boolean mask [lines, extent] of the slot.
at::Tensor slot_mask(const Slot& s, int64_t extent) {
  auto m = at::zeros({s.idx.size(0), extent}, s.valid.options());
  m.scatter_(1, s.idx.unsqueeze(1), s.valid.unsqueeze(1));
  return m;
}

/// What one direction (anchors against candidates, or candidates against anchors) sees of a
/// tile, in that direction's orientation: either slots (sparse rules) or dense masks.
struct DirView {
  bool sparse = false;
  Slot pos, exc;
  at::Tensor positive, excluded; // dense masks, may be undefined (= all false)
};

struct EngineState {
  ContrastProblem problem;
  std::optional<SparsePairs> sparse;
  std::optional<SparsePairs> sparse_t;
  bool dense = false;
  bool shifted = false; // uniform fast path: logits shifted by their bound, no running maximum
  int64_t tile = 0;
  at::Tensor a_mm; // scale * anchors in the matmul dtype
  at::Tensor c_mm; // candidates in the matmul dtype
  at::Tensor paired_logit;
  DirectionCoef row;
  DirectionCoef col;
  at::Tensor dense_logits; // dense path only (e^{l - scale} on the shifted path)
  bool consumed = false;
  // Key-class path (positives = equal keys): class ids, excluded columns, class sums.
  bool classes = false;
  at::Tensor aid, cid;  // class of each anchor / candidate
  at::Tensor excl_col;  // excluded column per row, -1 for none
  at::Tensor excl_same; // the excluded column has the row's class (removed from positives)
  at::Tensor pos_vec;   // sum of the row's positive candidates' embeddings [N, D]
  int64_t n_classes = 0;

  ~EngineState() {
    WorkspaceCache::instance().release(std::move(dense_logits));
  }
};

/// The row view (and, for symmetric problems, the column view) of tile [r0, r1) × [c0, c1).
void make_views(
    const EngineState& st,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1,
    DirView* row,
    DirView* col) {
  const auto& p = st.problem;
  if (st.classes) {
    // Positives come from class sums; only the exclusions are needed per tile.
    row->sparse = true;
    row->exc = make_slot(st.excl_col, r0, r1, c0, c1);
    return;
  }
  if (st.sparse.has_value()) {
    row->sparse = true;
    row->pos = make_slot(st.sparse->positive_col, r0, r1, c0, c1);
    row->exc = make_slot(st.sparse->excluded_col, r0, r1, c0, c1);
    if (col != nullptr) {
      col->sparse = true;
      col->pos = make_slot(st.sparse_t->positive_col, c0, c1, r0, r1);
      col->exc = make_slot(st.sparse_t->excluded_col, c0, c1, r0, r1);
    }
    return;
  }
  auto t = p.rule->tile(r0, r1, c0, c1);
  row->positive = t.positive;
  row->excluded = t.excluded;
  if (row->positive.defined() && row->excluded.defined()) {
    // A pair that is excluded is never a positive.
    row->positive = row->positive.logical_and(row->excluded.logical_not());
  }
  if (col != nullptr) {
    col->positive = row->positive.defined() ? row->positive.t() : at::Tensor();
    col->excluded = row->excluded.defined() ? row->excluded.t() : at::Tensor();
  }
}

/// Writes `value` into the excluded entries of a tile (in place). For symmetric problems the
/// transposed rule excludes the transposed pairs, so the row view's exclusions cover both.
void apply_exclusions(at::Tensor& tile, const DirView& v, double value) {
  if (v.sparse) {
    slot_fill(tile, v.exc, value);
  } else if (v.excluded.defined()) {
    tile.masked_fill_(v.excluded, value);
  }
}

/// Counts, sums (and optionally log-sum-exp) of the positive logits of one direction, and the
/// count of its negatives, from `lg` (that direction's orientation, before exponentiation).
void positive_stats(
    DirectionStats& s,
    int64_t off,
    const at::Tensor& lg,
    const DirView& v,
    bool need_lse,
    double neg) {
  const int64_t tn = lg.size(0);
  const int64_t tm = lg.size(1);
  auto opts = lg.options();
  const auto acc = lg.scalar_type();
  auto pos_n = s.pos_n.slice(0, off, off + tn);
  auto pos_sum = s.pos_sum.slice(0, off, off + tn);
  auto neg_n = s.neg_n.slice(0, off, off + tn);
  at::Tensor tile_pos_lse;
  neg_n.add_(static_cast<double>(tm));
  if (v.sparse) {
    auto vals = slot_gather(lg, v.pos);
    auto vf = v.pos.valid.to(acc);
    pos_n.add_(vf);
    neg_n.sub_(vf);
    pos_sum.add_(at::where(v.pos.valid, vals, at::zeros({}, opts)));
    neg_n.sub_(v.exc.valid.to(acc));
    if (need_lse) {
      tile_pos_lse = at::where(v.pos.valid, vals, at::full({}, neg, opts));
    }
  } else {
    if (v.positive.defined()) {
      auto cnt = v.positive.sum(1, false, acc);
      pos_n.add_(cnt);
      neg_n.sub_(cnt);
      pos_sum.add_(at::where(v.positive, lg, at::zeros({}, opts)).sum(1));
      if (need_lse) {
        tile_pos_lse = at::where(v.positive, lg, at::full({}, neg, opts)).logsumexp(1);
      }
    }
    if (v.excluded.defined()) {
      neg_n.sub_(v.excluded.sum(1, false, acc));
    }
  }
  if (tile_pos_lse.defined()) {
    auto pos_lse = s.pos_lse.slice(0, off, off + tn);
    pos_lse.copy_(at::logaddexp(pos_lse, tile_pos_lse));
  }
}

/// Mask of the negatives of one direction (neither positive nor excluded), dense.
at::Tensor negative_mask(const at::Tensor& lg, const DirView& v) {
  auto m = at::ones({lg.size(0), lg.size(1)}, lg.options().dtype(at::kBool));
  if (v.sparse) {
    m.logical_and_(slot_mask(v.pos, lg.size(1)).logical_not());
    m.logical_and_(slot_mask(v.exc, lg.size(1)).logical_not());
    return m;
  }
  if (v.positive.defined()) {
    m.logical_and_(v.positive.logical_not());
  }
  if (v.excluded.defined()) {
    m.logical_and_(v.excluded.logical_not());
  }
  return m;
}

/// Running-maximum path: denominators of one direction from `lg` with exclusions applied.
void denominator_stats(
    DirectionStats& s,
    int64_t off,
    const at::Tensor& lg,
    const DirView& v,
    const NegativeWeighting& w,
    double neg) {
  const int64_t tn = lg.size(0);
  if (w.is_uniform()) {
    auto den = s.den_lse.slice(0, off, off + tn);
    den.copy_(at::logaddexp(den, lg.logsumexp(1)));
    return;
  }
  auto negmask = negative_mask(lg, v);
  const double beta = w.beta();
  auto negval = at::full({}, neg, lg.options());
  auto lse_a = s.lse_a.slice(0, off, off + tn);
  lse_a.copy_(at::logaddexp(lse_a, at::where(negmask, lg * (1.0 + beta), negval).logsumexp(1)));
  auto lse_b = s.lse_b.slice(0, off, off + tn);
  lse_b.copy_(at::logaddexp(lse_b, at::where(negmask, lg * beta, negval).logsumexp(1)));
}

/// Running-maximum path: d loss / d logits of one direction over `lg` (exclusions applied),
/// times the row weights. Consumes `lg` when allowed.
at::Tensor grad_direction(
    at::Tensor lg,
    const DirView& v,
    const DirectionCoef& c,
    int64_t off,
    const NegativeWeighting& w,
    bool may_consume) {
  const int64_t tn = lg.size(0);
  const int64_t tm = lg.size(1);
  auto weight = c.weight.slice(0, off, off + tn);
  auto inv_pn = c.inv_pn.slice(0, off, off + tn);
  auto log_pos = c.log_pos.slice(0, off, off + tn).unsqueeze(1);
  auto zero = at::zeros({}, lg.options());
  if (w.is_uniform()) {
    // softmax over the row's denominator minus 1/P at its positives.
    auto g = may_consume ? lg.add_(log_pos).exp_() : (lg + log_pos).exp_();
    if (v.sparse) {
      slot_add(g, v.pos, inv_pn.neg());
    } else if (v.positive.defined()) {
      g.sub_(v.positive * inv_pn.unsqueeze(1));
    }
    return g.mul_(weight.unsqueeze(1));
  }
  const double beta = w.beta();
  auto posmask = v.sparse ? slot_mask(v.pos, tm) : v.positive;
  auto negmask = negative_mask(lg, v);
  auto log_a = c.log_a.slice(0, off, off + tn).unsqueeze(1);
  auto log_b = c.log_b.slice(0, off, off + tn).unsqueeze(1);
  auto sign = c.sign_pos.slice(0, off, off + tn).unsqueeze(1);
  auto gneg = (lg * (1.0 + beta) + log_a).exp_();
  if (beta > 0) {
    gneg.sub_((lg * beta + log_b).exp_());
  }
  auto g = at::where(negmask, gneg, zero);
  if (posmask.defined()) {
    auto gpos = (lg + log_pos).exp_().mul_(sign).sub_(inv_pn.unsqueeze(1));
    g = at::where(posmask, gpos, g);
  }
  return g.mul_(weight.unsqueeze(1));
}

/// d loss_i / d l for the paired positive logit of each row, times the row weight.
at::Tensor grad_paired(const at::Tensor& logit, const DirectionCoef& c) {
  return (logit + c.log_pos).exp().mul_(c.sign_pos).sub_(c.inv_pn).mul_(c.weight);
}

/// Whether the uniform fast path may shift logits by their upper bound `scale` (cosine <= 1)
/// instead of a running maximum: exp(l - scale) >= exp(-2 scale) must stay a normal number.
bool use_shifted_path(const ContrastProblem& p) {
  if (!p.weighting.is_uniform()) {
    return false;
  }
  const double limit = p.anchors.scalar_type() == at::kDouble ? 300.0 : 40.0;
  return p.scale <= limit;
}

/// Shifted path: logits -> e^{l - scale} in place, excluded entries zeroed.
void exponentiate(at::Tensor& tile, const DirView& row, double scale) {
  tile.sub_(scale).exp_();
  apply_exclusions(tile, row, 0.0);
}

/// Shifted path: merges sums of e^{l - scale} into a direction's log-denominators.
void merge_shifted(at::Tensor den, const at::Tensor& sums, double scale, double neg) {
  auto add = at::where(sums.gt(0), sums.log().add_(scale), at::full({}, neg, sums.options()));
  den.copy_(at::logaddexp(den, add));
}

/// g[i, positives of i] -= values[i] (sparse slot or dense mask).
void slot_or_mask_sub(at::Tensor& g, const DirView& v, const at::Tensor& values) {
  if (v.sparse) {
    if (!v.pos.defined()) {
      return; // key-class path: positives are handled outside the tiles
    }
    slot_add(g, v.pos, values.neg());
  } else if (v.positive.defined()) {
    g.sub_(v.positive * values.unsqueeze(1));
  }
}

/// Shifted path: d loss / d logits of a tile holding e^{l - scale} (consumed): the softmax is
/// shift_fac * e^{l - scale} per row (plus per column for symmetric problems), minus 1/P times
/// the row weight at the positives.
at::Tensor grad_shifted(
    at::Tensor& expl,
    const DirView& vr,
    const DirView* vc,
    const DirectionCoef& row,
    const DirectionCoef* col,
    int64_t r0,
    int64_t c0) {
  const int64_t tn = expl.size(0);
  const int64_t tm = expl.size(1);
  auto rf = row.shift_fac.slice(0, r0, r0 + tn).unsqueeze(1);
  at::Tensor g;
  if (col != nullptr) {
    auto tmp = expl * col->shift_fac.slice(0, c0, c0 + tm).unsqueeze(0);
    g = expl.mul_(rf).add_(tmp);
  } else {
    g = expl.mul_(rf);
  }
  slot_or_mask_sub(g, vr, (row.inv_pn * row.weight).slice(0, r0, r0 + tn));
  if (col != nullptr) {
    auto gt = g.t();
    slot_or_mask_sub(gt, *vc, (col->inv_pn * col->weight).slice(0, c0, c0 + tm));
  }
  return g;
}

int64_t resolve_tile(const ContrastProblem& p, bool shifted) {
  if (p.options.tile_size() > 0) {
    return p.options.tile_size();
  }
  if (!p.anchors.is_cuda()) {
    return 2048;
  }
  // On CUDA larger tiles mean fewer, fuller kernels. The uniform shifted path keeps about two
  // float32 tiles alive (1 GiB each at 16384); the other paths build masks and temporaries too.
  return shifted ? 16384 : 8192;
}

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

/// Calls `body(r0, r1, c0, c1, logits)` for every tile, logits in the accumulation dtype.
void tile_loop(
    EngineState& st,
    const std::function<void(int64_t, int64_t, int64_t, int64_t, at::Tensor&)>& body) {
  const auto& p = st.problem;
  const int64_t n = p.anchors.size(0);
  const int64_t m = p.candidates.size(0);
  const auto acc = p.anchors.scalar_type();
  const int64_t t = st.dense ? std::max(n, m) : st.tile;
  auto& cache = WorkspaceCache::instance();
  // One workspace for every tile (the products are written into it); on the dense path the
  // body keeps the one tile, so the workspace stays with the state until backward.
  const bool reuse = st.a_mm.scalar_type() == acc && st.a_mm.device().is_cpu();
  at::Tensor workspace;
  if (reuse) {
    workspace = cache.acquire(std::min(n, t), std::min(m, t), p.anchors.options());
  }
  for (int64_t r0 = 0; r0 < n; r0 += t) {
    const int64_t r1 = std::min(n, r0 + t);
    auto a = st.a_mm.slice(0, r0, r1);
    for (int64_t c0 = 0; c0 < m; c0 += t) {
      const int64_t c1 = std::min(m, c0 + t);
      at::Tensor logits;
      if (reuse) {
        // The whole workspace when the tile fills it (the dense path keeps it), else a view.
        logits = r1 - r0 == workspace.size(0) && c1 - c0 == workspace.size(1)
            ? workspace
            : workspace.view(-1).narrow(0, 0, (r1 - r0) * (c1 - c0)).view({r1 - r0, c1 - c0});
        at::mm_out(logits, a, st.c_mm.slice(0, c0, c1).t());
      } else {
        logits = at::mm(a, st.c_mm.slice(0, c0, c1).t());
        if (logits.scalar_type() != acc) {
          logits = logits.to(acc);
        }
      }
      body(r0, r1, c0, c1, logits);
    }
  }
  if (reuse) {
    cache.release(std::move(workspace));
  }
}

/// Key-class path, forward: positive counts and logit sums from per-class sums of the candidate
/// embeddings, O((N + M)·D); no positive mask is built.
void class_positive_stats(
    EngineState& st,
    const KeyClasses& kc,
    const at::Tensor& excluded,
    DirectionStats& rs) {
  auto& p = st.problem;
  const int64_t n = p.anchors.size(0);
  const int64_t m = p.candidates.size(0);
  const auto acc = p.anchors.scalar_type();
  auto keys = at::cat({kc.anchor_keys.to(at::kLong), kc.candidate_keys.to(at::kLong)});
  auto uniq = at::_unique(keys, /*sorted=*/false, /*return_inverse=*/true);
  st.n_classes = std::get<0>(uniq).size(0);
  auto inv = std::get<1>(uniq);
  st.aid = inv.slice(0, 0, n);
  st.cid = inv.slice(0, n, n + m);
  auto ev = excluded.ge(0);
  st.excl_col = excluded;
  auto ec = excluded.clamp_min(0);
  st.excl_same = ev.logical_and(st.cid.index_select(0, ec).eq(st.aid));
  auto csum = at::zeros({st.n_classes, p.candidates.size(1)}, p.candidates.options());
  csum.index_add_(0, st.cid, p.candidates);
  auto ccnt = at::zeros({st.n_classes}, p.candidates.options());
  ccnt.index_add_(0, st.cid, at::ones({m}, p.candidates.options()));
  auto samef = st.excl_same.to(acc);
  st.pos_vec = csum.index_select(0, st.aid) - p.candidates.index_select(0, ec) * samef.unsqueeze(1);
  rs.pos_n = ccnt.index_select(0, st.aid) - samef;
  rs.pos_sum = (p.anchors * st.pos_vec).sum(1).mul_(p.scale);
  rs.neg_n = static_cast<double>(m) - rs.pos_n - ev.to(acc);
}

/// Key-class path, backward: the positive part -(1/P_i) sum_p l_ip of every row, through the
/// class sums.
void class_positive_grad(
    const EngineState& st,
    const DirectionCoef& row,
    at::Tensor& ga,
    at::Tensor& gc,
    bool need_a,
    bool need_c) {
  const auto& p = st.problem;
  auto q = (row.inv_pn * row.weight).mul(p.scale).unsqueeze(1); // [N, 1]
  if (need_a) {
    ga.sub_(st.pos_vec * q);
  }
  if (need_c) {
    auto qa = p.anchors * q;
    auto aq = at::zeros({st.n_classes, p.anchors.size(1)}, p.anchors.options());
    aq.index_add_(0, st.aid, qa);
    gc.sub_(aq.index_select(0, st.cid));
    // Rows whose excluded column shares their class did not count it as a positive.
    gc.index_add_(0, st.excl_col.clamp_min(0), qa * st.excl_same.to(qa.scalar_type()).unsqueeze(1));
  }
}

at::Tensor contrast_forward(const std::shared_ptr<EngineState>& st_ptr) {
  auto& st = *st_ptr;
  auto& p = st.problem;
  const int64_t n = p.anchors.size(0);
  const int64_t m = p.candidates.size(0);
  const auto acc = p.anchors.scalar_type();
  const double neg = masked_value(acc);
  const auto& w = p.weighting;
  auto acc_opts = p.anchors.options();

  st.sparse = p.rule->sparse();
  st.sparse_t = p.symmetric ? p.rule->sparse_transposed() : std::nullopt;
  if (p.symmetric && st.sparse.has_value() != st.sparse_t.has_value()) {
    // Mixed sparse/dense directions: use the rule's dense tiles for both.
    st.sparse = std::nullopt;
    st.sparse_t = std::nullopt;
  }
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
  st.shifted = use_shifted_path(p);
  st.tile = resolve_tile(p, st.shifted);
  std::optional<KeyClasses> key_classes;
  std::optional<at::Tensor> excluded_cols;
  if (st.shifted && !p.symmetric && !st.sparse.has_value()) {
    key_classes = p.rule->key_classes();
    if (key_classes.has_value()) {
      // Class identities are compared exactly: a floating-point key (a rule of one's own that
      // passes scores) would be truncated by the integer path below, so it is refused.
      for (const at::Tensor* k : {&key_classes->anchor_keys, &key_classes->candidate_keys}) {
        TORCH_CHECK(
            !at::isFloatingType(k->scalar_type()),
            p.caller,
            ": the pair rule gave key classes of dtype ",
            k->scalar_type(),
            "; class keys must be integers (round and convert them: .round().to(at::kLong))");
      }
    }
    excluded_cols = key_classes.has_value() ? p.rule->excluded_cols() : std::nullopt;
  }
  st.classes = key_classes.has_value() && excluded_cols.has_value();
  st.a_mm = (p.anchors * p.scale).to(p.mm_dtype);
  st.c_mm = p.candidates.to(p.mm_dtype);

  DirectionStats rs, cs;
  rs.init(n, acc_opts, neg);
  if (p.symmetric) {
    cs.init(m, acc_opts, neg);
  }
  if (st.classes) {
    class_positive_stats(st, *key_classes, *excluded_cols, rs);
  }
  tile_loop(st, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::Tensor& logits) {
    DirView vr, vc;
    make_views(st, r0, r1, c0, c1, &vr, p.symmetric ? &vc : nullptr);
    if (st.classes) {
      exponentiate(logits, vr, p.scale);
      merge_shifted(rs.den_lse.slice(0, r0, r1), logits.sum(1), p.scale, neg);
    } else if (st.shifted) {
      positive_stats(rs, r0, logits, vr, false, neg);
      if (p.symmetric) {
        positive_stats(cs, c0, logits.t(), vc, false, neg);
      }
      exponentiate(logits, vr, p.scale);
      merge_shifted(rs.den_lse.slice(0, r0, r1), logits.sum(1), p.scale, neg);
      if (p.symmetric) {
        merge_shifted(cs.den_lse.slice(0, c0, c1), logits.sum(0), p.scale, neg);
      }
    } else {
      apply_exclusions(logits, vr, neg);
      positive_stats(rs, r0, logits, vr, !w.is_uniform(), neg);
      denominator_stats(rs, r0, logits, vr, w, neg);
      if (p.symmetric) {
        auto lt = logits.t();
        positive_stats(cs, c0, lt, vc, !w.is_uniform(), neg);
        denominator_stats(cs, c0, lt, vc, w, neg);
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
  st.row = finalize(rs, w, p.scale, dir_w, acc, p.global_row_count);
  int64_t valid = st.row.global_rows;
  at::Tensor total = (st.row.loss * st.row.weight.to(at::kDouble)).sum();
  if (p.symmetric) {
    st.col = finalize(cs, w, p.scale, dir_w, acc, p.global_row_count);
    valid += st.col.global_rows;
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

torch::autograd::variable_list ContrastBackward::apply(torch::autograd::variable_list&& grads) {
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
  // Fold the incoming gradient into the row coefficients once, instead of into every tile.
  DirectionCoef row = st.row;
  row.weight = st.row.weight * go;
  row.shift_fac = st.row.shift_fac * go;
  DirectionCoef col = st.col;
  if (p.symmetric) {
    col.weight = st.col.weight * go;
    col.shift_fac = st.col.shift_fac * go;
  }
  const bool negative_go = go.item<double>() < 0;
  at::Tensor row_log_shift;
  if (st.shifted && !p.symmetric) {
    auto f = row.shift_fac.abs();
    row_log_shift = at::where(f.gt(0), f.log() - p.scale, at::full({}, neg, f.options()));
  }
  auto accumulate =
      [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::Tensor& logits, bool saved) {
        DirView vr, vc;
        make_views(st, r0, r1, c0, c1, &vr, p.symmetric ? &vc : nullptr);
        at::Tensor g;
        if (st.shifted && !saved && !p.symmetric) {
          // Recomputed tile: e^{l - scale} * shift_fac = e^{l + log|shift_fac| - scale}, one pass
          // fewer than exponentiating and scaling.
          logits.add_(row_log_shift.slice(0, r0, r1).unsqueeze(1)).exp_();
          apply_exclusions(logits, vr, 0.0);
          if (negative_go) {
            logits.neg_();
          }
          g = logits;
          slot_or_mask_sub(g, vr, (row.inv_pn * row.weight).slice(0, r0, r1));
        } else if (st.shifted) {
          if (!saved) {
            exponentiate(logits, vr, p.scale);
          }
          g = grad_shifted(
              logits, vr, p.symmetric ? &vc : nullptr, row, p.symmetric ? &col : nullptr, r0, c0);
        } else {
          if (!saved) {
            apply_exclusions(logits, vr, neg);
          }
          if (p.symmetric) {
            auto gt = grad_direction(logits.t(), vc, col, c0, w, false);
            g = grad_direction(logits, vr, row, r0, w, true);
            g.add_(gt.t());
          } else {
            g = grad_direction(logits, vr, row, r0, w, true);
          }
        }
        auto gm = g.to(p.mm_dtype);
        if (need_a) {
          ga.slice(0, r0, r1).add_(at::mm(gm, st.c_mm.slice(0, c0, c1)).to(acc), p.scale);
        }
        if (need_c) {
          gc.slice(0, c0, c1).add_(at::mm(gm.t(), st.a_mm.slice(0, r0, r1)).to(acc));
        }
      };
  if (st.dense && st.dense_logits.defined()) {
    st.consumed = true;
    auto logits = std::move(st.dense_logits);
    st.dense_logits = at::Tensor();
    accumulate(0, n, 0, m, logits, true);
    WorkspaceCache::instance().release(std::move(logits));
  } else {
    tile_loop(st, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::Tensor& logits) {
      accumulate(r0, r1, c0, c1, logits, false);
    });
  }
  if (st.classes) {
    class_positive_grad(st, row, ga, gc, need_a, need_c);
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
at::Tensor run_engine(ContrastProblem problem) {
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
    WorkspaceCache::instance().release(std::move(st->dense_logits));
    st->dense_logits = at::Tensor();
  }
  auto node =
      std::shared_ptr<ContrastBackward>(new ContrastBackward(), torch::autograd::deleteNode);
  node->state = st;
  node->set_next_edges(torch::autograd::collect_next_edges(a_in, c_in, p_in, s_in));
  torch::autograd::set_history(loss, node);
  return loss;
}

} // namespace

ContrastProblem make_contrast_problem(
    const char* caller,
    at::Tensor anchors,
    at::Tensor candidates,
    std::shared_ptr<const PairRule> rule,
    double temperature,
    const NegativeWeighting& weighting,
    const SimilarityEngineOptions& engine,
    at::ScalarType mm_dtype) {
  TORCH_CHECK(
      std::isfinite(temperature) && temperature > 0.0,
      caller,
      ": temperature must be finite and > 0, got ",
      temperature);
  TORCH_CHECK(
      engine.tile_size() >= 0,
      caller,
      ": engine tile_size must be >= 0 (0 picks a default), got ",
      engine.tile_size());
  ContrastProblem p;
  p.anchors = std::move(anchors);
  p.candidates = std::move(candidates);
  p.rule = std::move(rule);
  p.scale = 1.0 / temperature;
  p.weighting = weighting;
  p.options = engine;
  p.mm_dtype = mm_dtype == at::ScalarType::Undefined && p.anchors.defined()
      ? p.anchors.scalar_type()
      : mm_dtype;
  p.caller = caller;
  return p;
}

at::Tensor contrast_loss(ContrastProblem problem) {
  const char* who = problem.caller != nullptr ? problem.caller : "contrast_loss";
  const auto& a = problem.anchors;
  const auto& c = problem.candidates;
  TORCH_CHECK(problem.rule, who, ": the problem has no pair rule");
  TORCH_CHECK(
      a.defined() && c.defined() && a.dim() == 2 && c.dim() == 2 && a.size(1) == c.size(1),
      who,
      ": anchors and candidates must be [N, D] and [M, D] with the same D, got ",
      a.defined() ? a.sizes() : at::IntArrayRef{},
      " and ",
      c.defined() ? c.sizes() : at::IntArrayRef{});
  TORCH_CHECK(
      (a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble) &&
          c.scalar_type() == a.scalar_type(),
      who,
      ": anchors and candidates must both be float32 or both float64 (the accumulation dtype; "
      "l2_normalize converts), got ",
      a.scalar_type(),
      " and ",
      c.scalar_type());
  TORCH_CHECK(
      problem.mm_dtype == a.scalar_type() ||
          (a.is_cuda() && (problem.mm_dtype == at::kHalf || problem.mm_dtype == at::kBFloat16)),
      who,
      ": mm_dtype must be the anchors' dtype ",
      a.scalar_type(),
      " (or, on CUDA, Half or BFloat16), got ",
      problem.mm_dtype);
  TORCH_CHECK(
      c.device() == a.device(),
      who,
      ": anchors and candidates must be on one device, got ",
      a.device(),
      " and ",
      c.device());
  TORCH_CHECK(
      problem.rule->rows() == a.size(0) && problem.rule->cols() == c.size(0),
      who,
      ": the pair rule was built for ",
      problem.rule->rows(),
      " x ",
      problem.rule->cols(),
      " pairs, but the problem has ",
      a.size(0),
      " anchors and ",
      c.size(0),
      " candidates");
  TORCH_CHECK(
      !problem.paired.defined() || problem.paired.sizes() == a.sizes(),
      who,
      ": paired positives must have the anchors' shape ",
      a.sizes(),
      ", got ",
      problem.paired.sizes());
  TORCH_CHECK(
      std::isfinite(problem.scale) && problem.scale > 0.0,
      who,
      ": scale (1 / temperature) must be finite and > 0, got ",
      problem.scale);
  TORCH_CHECK(
      std::isfinite(problem.loss_scale),
      who,
      ": loss_scale must be finite, got ",
      problem.loss_scale);
  TORCH_CHECK(
      problem.options.tile_size() >= 0,
      who,
      ": engine tile_size must be >= 0 (0 picks a default), got ",
      problem.options.tile_size());
  return run_engine(std::move(problem));
}

int64_t engine_workspace_bytes() {
  return WorkspaceCache::instance().bytes();
}

void release_engine_workspaces() {
  WorkspaceCache::instance().clear();
}

} // namespace medcl
