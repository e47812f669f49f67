#pragma once

/// \file
/// The interface through which the similarity engine asks which pairs are positives and which
/// candidates must be left out of a row's denominator, one tile at a time (no N×M mask is built
/// unless a rule needs a dense mask), and the four rules the losses build directly. The pairing
/// strategies (pairing/strategy.h) implement it from sample keys. Bodies: src/engine/pair_rule.cpp.

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <memory>
#include <optional>
#include <string>

namespace medcl {

/// Masks of one tile of anchor rows [r0, r1) × candidate columns [c0, c1). Each is a bool tensor
/// of shape [r1 - r0, c1 - c0] on the embeddings' device, or undefined meaning "all false".
/// A candidate that is `excluded` for a row is neither a positive nor a negative of it (the
/// anchor itself, another record of the anchor's patient under false-negative control, ...).
struct PairTile {
  at::Tensor positive;
  at::Tensor excluded;
};

/// Rows that have at most one positive column and one excluded column (SimCLR's two views, CLIP's
/// diagonal, MoCo's queue) can say so by index: the engine then gathers instead of masking.
/// `positive_col[i]` and `excluded_col[i]` are int64 [N] column indices, -1 for none.
struct SparsePairs {
  at::Tensor positive_col;
  at::Tensor excluded_col;
};

/// Positives defined by equal keys (an equivalence relation between anchors and candidates), as
/// in SupCon (labels) or same-patient pairing: the engine then obtains positive counts and logit
/// sums from per-class sums of the embeddings, O((N + M)·D), without any positive mask. Pairs
/// listed by `PairRule::excluded_cols()` are removed from the positives too.
///
/// The keys are class ids of an integer dtype (int64; the engine reads them as int64): a rule must
/// never return floating-point keys here, which would be truncated (KeyMatchRule and the pairing
/// strategies refuse them).
struct KeyClasses {
  at::Tensor anchor_keys;    // int64 [N]
  at::Tensor candidate_keys; // int64 [M]
};

/// Decides, from per-sample keys, which (anchor, candidate) pairs are positives and which
/// candidates may not be negatives.
///
/// Implement `tile` (and, for speed, `sparse`) to plug in a rule of your own; `tile` must be a
/// pure function of its arguments, since the tiled path calls it again in backward.
class PairRule {
 public:
  virtual ~PairRule() = default;

  /// Number of anchor rows and candidate columns the rule was built for.
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;

  /// Masks for rows [r0, r1) × columns [c0, c1).
  virtual PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const = 0;

  /// The same rule as index vectors, when every row has at most one positive and one exclusion.
  virtual std::optional<SparsePairs> sparse() const {
    return std::nullopt;
  }
  /// When positives are "equal keys", the keys (see KeyClasses). Requires `excluded_cols()`.
  virtual std::optional<KeyClasses> key_classes() const {
    return std::nullopt;
  }
  /// The excluded candidate of each row as an index (-1 for none), when there is at most one.
  virtual std::optional<at::Tensor> excluded_cols() const {
    return std::nullopt;
  }

  /// The transposed rule as index vectors (for the column direction of symmetric losses).
  virtual std::optional<SparsePairs> sparse_transposed() const {
    return std::nullopt;
  }

  /// Human-readable description for reports, e.g. "same instance, other view".
  virtual std::string describe() const = 0;
};

/// Mask [r1 - r0, c1 - c0] of tile rows [r0, r1) × columns [c0, c1) that is true where row i's
/// column `cols_of_rows[i]` (-1 for none) falls inside the tile: how a sparse rule answers `tile`.
at::Tensor tile_mask_from_sparse(
    const at::Tensor& cols_of_rows,
    int64_t r0,
    int64_t r1,
    int64_t c0,
    int64_t c1);

namespace detail {
using ::medcl::tile_mask_from_sparse; // earlier name, kept for one release
} // namespace detail

/// Positives are pairs with equal keys; optionally the diagonal (an anchor paired with itself,
/// when anchors and candidates are the same embeddings) is excluded.
///
/// This is SimCLR's rule with `keys` = instance ids (each instance's other views are its
/// positives) and SupCon's with `keys` = labels.
///
/// Shape: anchor_keys [N], candidate_keys [M], int64, on the embeddings' device. Floating-point
/// keys are refused at construction (class ids are never truncated).
class KeyMatchRule : public PairRule {
 public:
  KeyMatchRule(
      at::Tensor anchor_keys,
      at::Tensor candidate_keys,
      bool exclude_diagonal,
      std::string what);

  int64_t rows() const override {
    return a_.size(0);
  }
  int64_t cols() const override {
    return c_.size(0);
  }

  PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override;

  std::optional<KeyClasses> key_classes() const override {
    return KeyClasses{a_, c_};
  }
  std::optional<at::Tensor> excluded_cols() const override;

  std::string describe() const override {
    return what_;
  }

 private:
  at::Tensor a_;
  at::Tensor c_;
  bool exclude_diagonal_;
  std::string what_;
};

/// SimCLR with two views stacked as [view 0 of all B; view 1 of all B]: row i's positive is
/// column (i + B) mod 2B, and row i itself is excluded. Sparse, so no mask is ever built.
class TwoViewRule : public PairRule {
 public:
  TwoViewRule(int64_t batch_size, const at::TensorOptions& long_options);
  int64_t rows() const override {
    return 2 * b_;
  }
  int64_t cols() const override {
    return 2 * b_;
  }
  PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override {
    return {
        tile_mask_from_sparse(pos_, r0, r1, c0, c1), tile_mask_from_sparse(self_, r0, r1, c0, c1)};
  }
  std::optional<SparsePairs> sparse() const override {
    return SparsePairs{pos_, self_};
  }
  std::optional<SparsePairs> sparse_transposed() const override {
    return SparsePairs{pos_, self_};
  }
  std::string describe() const override {
    return "instance: the other view of the same sample";
  }

 private:
  int64_t b_;
  at::Tensor pos_;
  at::Tensor self_;
};

/// Row i's only positive is column i (CLIP's matched image and text); nothing is excluded.
class DiagonalRule : public PairRule {
 public:
  DiagonalRule(int64_t n, const at::TensorOptions& long_options);
  int64_t rows() const override {
    return n_;
  }
  int64_t cols() const override {
    return n_;
  }
  PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override {
    return {tile_mask_from_sparse(diag_, r0, r1, c0, c1), at::Tensor()};
  }
  std::optional<SparsePairs> sparse() const override {
    return SparsePairs{diag_, none_};
  }
  std::optional<SparsePairs> sparse_transposed() const override {
    return SparsePairs{diag_, none_};
  }
  std::string describe() const override {
    return "matched pair (row i with column i)";
  }

 private:
  int64_t n_;
  at::Tensor diag_;
  at::Tensor none_;
};

/// Every candidate is a negative (MoCo's queue): positives come from elsewhere.
class AllNegativeRule : public PairRule {
 public:
  AllNegativeRule(int64_t rows, int64_t cols, const at::TensorOptions& long_options);
  int64_t rows() const override {
    return rows_;
  }
  int64_t cols() const override {
    return cols_;
  }
  PairTile tile(int64_t, int64_t, int64_t, int64_t) const override {
    return {};
  }
  std::optional<SparsePairs> sparse() const override {
    return SparsePairs{none_, none_};
  }
  std::string describe() const override {
    return "every candidate is a negative";
  }

 private:
  int64_t rows_;
  int64_t cols_;
  at::Tensor none_;
};

} // namespace medcl
