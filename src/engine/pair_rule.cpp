// The pair rules the losses build directly, and the sparse-to-mask helper.
// Interface: include/medcl/core/pair_rule.h.

#include <medcl/core/pair_rule.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>
#include <utility>

namespace medcl {

at::Tensor tile_mask_from_sparse(
    const at::Tensor& cols_of_rows,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1) {
  // Clamped index + validity flag: no data-dependent shapes, so no device synchronisation.
  auto local = cols_of_rows.slice(0, r0, r1) - c0;
  auto inside = local.ge(0).logical_and(local.lt(c1 - c0));
  auto mask = at::zeros({r1 - r0, c1 - c0}, local.options().dtype(at::kBool));
  mask.scatter_(1, local.clamp(0, c1 - c0 - 1).unsqueeze(1), inside.unsqueeze(1));
  return mask;
}

KeyMatchRule::KeyMatchRule(
    at::Tensor anchor_keys,
    at::Tensor candidate_keys,
    bool exclude_diagonal,
    std::string what)
    : a_(std::move(anchor_keys)),
      c_(std::move(candidate_keys)),
      exclude_diagonal_(exclude_diagonal),
      what_(std::move(what)) {
  TORCH_CHECK(
      a_.dim() == 1 && c_.dim() == 1,
      "KeyMatchRule: keys must be 1-D, got ",
      a_.sizes(),
      " and ",
      c_.sizes());
  // Equal keys are one class, and the engine's per-class sums read classes as int64: a
  // floating-point key would be truncated there ({0.2, 0.7} all class 0), so it is refused here.
  for (const auto* side : {&a_, &c_}) {
    const auto dtype = side->scalar_type();
    TORCH_CHECK(
        !at::isFloatingType(dtype) && !at::isComplexType(dtype),
        "KeyMatchRule ('",
        what_,
        "'): the ",
        side == &a_ ? "anchor" : "candidate",
        " keys are class ids and must be an integer tensor (int64), got the floating-point dtype ",
        dtype,
        "; floating-point keys are refused rather than truncated (0.2 and 0.7 would both become "
        "0)");
  }
  TORCH_CHECK(
      !exclude_diagonal_ || a_.size(0) == c_.size(0),
      "KeyMatchRule: excluding the diagonal needs as many anchors as candidates, got ",
      a_.size(0),
      " and ",
      c_.size(0));
}

PairTile KeyMatchRule::tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const {
  PairTile t;
  t.positive = a_.slice(0, r0, r1).unsqueeze(1).eq(c_.slice(0, c0, c1).unsqueeze(0));
  if (exclude_diagonal_ && r0 < c1 && c0 < r1) {
    auto rows = at::arange(r0, r1, a_.options()).unsqueeze(1);
    auto cols = at::arange(c0, c1, a_.options()).unsqueeze(0);
    t.excluded = rows.eq(cols);
    t.positive.logical_and_(t.excluded.logical_not());
  }
  return t;
}

std::optional<at::Tensor> KeyMatchRule::excluded_cols() const {
  if (exclude_diagonal_) {
    return at::arange(a_.size(0), a_.options());
  }
  return at::full({a_.size(0)}, -1, a_.options());
}

TwoViewRule::TwoViewRule(int64_t batch_size, const at::TensorOptions& long_options)
    : b_(batch_size) {
  auto i = at::arange(2 * b_, long_options.dtype(at::kLong));
  pos_ = at::remainder(i + b_, 2 * b_);
  self_ = i;
}

DiagonalRule::DiagonalRule(int64_t n, const at::TensorOptions& long_options) : n_(n) {
  diag_ = at::arange(n_, long_options.dtype(at::kLong));
  none_ = at::full({n_}, -1, long_options.dtype(at::kLong));
}

AllNegativeRule::AllNegativeRule(int64_t rows, int64_t cols, const at::TensorOptions& long_options)
    : rows_(rows), cols_(cols) {
  none_ = at::full({rows_}, -1, long_options.dtype(at::kLong));
}

} // namespace medcl
