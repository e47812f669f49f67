#pragma once

/// \file
/// Pairing strategies: which pairs are positives and which candidates may never be negatives,
/// decided from sample keys alone and evaluated tile by tile inside the similarity engine (no N×N
/// mask is ever built for them).

#include <medcl/core/pair_rule.h>
#include <medcl/pairing/sample_keys.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {

/// A boolean predicate over (anchor, candidate) pairs, built from key comparisons and combined
/// with `&`, `|` and `!`. It is evaluated on tiles of rows × columns from the keys of both sides.
///
/// Example:
///   auto p = medcl::PairExpr::same(medcl::Key::Patient) & medcl::PairExpr::time_within(30.0);
class PairExpr {
 public:
  enum class Op { Always, Never, Same, TimeWithin, Mask, And, Or, Not };

  /// True for every pair.
  static PairExpr always() {
    return PairExpr(std::make_shared<Node>(Node(Op::Always)));
  }
  /// False for every pair.
  static PairExpr never() {
    return PairExpr(std::make_shared<Node>(Node(Op::Never)));
  }
  /// Equal key `k` on both sides. For `Key::Label` both labels must be known (>= 0). `Key::Time`
  /// is not allowed here: use time_within.
  static PairExpr same(Key k) {
    TORCH_CHECK(k != Key::Time, "PairExpr::same: compare times with PairExpr::time_within(window)");
    Node n(Op::Same);
    n.key = k;
    return PairExpr(std::make_shared<Node>(std::move(n)));
  }
  /// |time(anchor) - time(candidate)| <= window (same unit as the keys' time).
  static PairExpr time_within(double window) {
    TORCH_CHECK(
        std::isfinite(window) && window >= 0,
        "PairExpr::time_within: window must be finite and >= 0, got ",
        window);
    Node n(Op::TimeWithin);
    n.key = Key::Time;
    n.window = window;
    return PairExpr(std::make_shared<Node>(std::move(n)));
  }
  /// A dense boolean mask [N, M] over all anchors × candidates, for rules keys cannot express.
  static PairExpr mask(at::Tensor dense, std::string what = "custom mask") {
    TORCH_CHECK(
        dense.defined() && dense.dim() == 2 && dense.scalar_type() == at::kBool,
        "PairExpr::mask: expected a bool tensor of shape [N, M], got ",
        dense.defined() ? dense.sizes() : at::IntArrayRef{},
        " of dtype ",
        dense.defined() ? dense.scalar_type() : at::kBool);
    Node n(Op::Mask);
    n.mask = std::move(dense);
    n.what = std::move(what);
    return PairExpr(std::make_shared<Node>(std::move(n)));
  }

  friend PairExpr operator&(const PairExpr& a, const PairExpr& b) {
    return binary(Op::And, a, b);
  }
  friend PairExpr operator|(const PairExpr& a, const PairExpr& b) {
    return binary(Op::Or, a, b);
  }
  friend PairExpr operator!(const PairExpr& a) {
    Node n(Op::Not);
    n.children = {a.node_};
    return PairExpr(std::make_shared<Node>(std::move(n)));
  }

  Op op() const {
    return node_->op;
  }
  /// For `same(k)`: the key.
  Key key() const {
    return node_->key;
  }
  bool is_never() const {
    return node_->op == Op::Never;
  }

  /// Keys this predicate reads.
  void required_keys(std::vector<Key>* out) const {
    collect(*node_, out);
  }

  /// The predicate on rows [r0, r1) of `a` × rows [c0, c1) of `c`: bool [r1 - r0, c1 - c0].
  at::Tensor eval(
      const SampleKeys& a,
      const SampleKeys& c,
      int64_t r0,
      int64_t r1,
      int64_t c0,
      int64_t c1,
      const at::Device& device) const {
    return eval_node(*node_, a, c, r0, r1, c0, c1, device);
  }

  /// "same patient & |Δtime| <= 30", for reports.
  std::string describe() const {
    return describe_node(*node_);
  }

 private:
  struct Node {
    explicit Node(Op o) : op(o) {}
    Op op;
    Key key = Key::Instance;
    double window = 0;
    at::Tensor mask;
    std::string what;
    std::vector<std::shared_ptr<const Node>> children;
  };
  explicit PairExpr(std::shared_ptr<const Node> n) : node_(std::move(n)) {}

  static PairExpr binary(Op op, const PairExpr& a, const PairExpr& b) {
    Node n(op);
    n.children = {a.node_, b.node_};
    return PairExpr(std::make_shared<Node>(std::move(n)));
  }

  static void collect(const Node& n, std::vector<Key>* out) {
    if (n.op == Op::Same || n.op == Op::TimeWithin) {
      if (std::find(out->begin(), out->end(), n.key) == out->end()) {
        out->push_back(n.key);
      }
    }
    for (const auto& c : n.children) {
      collect(*c, out);
    }
  }

  static at::Tensor eval_node(
      const Node& n,
      const SampleKeys& a,
      const SampleKeys& c,
      int64_t r0,
      int64_t r1,
      int64_t c0,
      int64_t c1,
      const at::Device& dev) {
    switch (n.op) {
      case Op::Always:
      case Op::Never:
        return at::full(
            {r1 - r0, c1 - c0},
            n.op == Op::Always,
            at::TensorOptions().dtype(at::kBool).device(dev));
      case Op::Same: {
        auto ka = a.get(n.key).slice(0, r0, r1).unsqueeze(1);
        auto kc = c.get(n.key).slice(0, c0, c1).unsqueeze(0);
        auto eq = ka.eq(kc);
        if (n.key == Key::Label) {
          eq.logical_and_(ka.ge(0)).logical_and_(kc.ge(0));
        }
        return eq;
      }
      case Op::TimeWithin: {
        auto ta = a.time.slice(0, r0, r1).unsqueeze(1).to(at::kDouble);
        auto tc = c.time.slice(0, c0, c1).unsqueeze(0).to(at::kDouble);
        return (ta - tc).abs().le(n.window);
      }
      case Op::Mask:
        // A copy: callers may combine tiles in place, and the user's mask must stay untouched.
        return n.mask.slice(0, r0, r1).slice(1, c0, c1).clone();
      case Op::And:
        return eval_node(*n.children[0], a, c, r0, r1, c0, c1, dev)
            .logical_and(eval_node(*n.children[1], a, c, r0, r1, c0, c1, dev));
      case Op::Or:
        return eval_node(*n.children[0], a, c, r0, r1, c0, c1, dev)
            .logical_or(eval_node(*n.children[1], a, c, r0, r1, c0, c1, dev));
      case Op::Not:
        return eval_node(*n.children[0], a, c, r0, r1, c0, c1, dev).logical_not();
    }
    TORCH_INTERNAL_ASSERT(false, "PairExpr: unknown node");
  }

  static std::string describe_node(const Node& n) {
    std::ostringstream s;
    switch (n.op) {
      case Op::Always:
        return "any pair";
      case Op::Never:
        return "no pair";
      case Op::Same:
        return std::string("same ") + key_name(n.key);
      case Op::TimeWithin:
        s << "|Δtime| <= " << n.window;
        return s.str();
      case Op::Mask:
        return n.what;
      case Op::And:
        return "(" + describe_node(*n.children[0]) + " & " + describe_node(*n.children[1]) + ")";
      case Op::Or:
        return "(" + describe_node(*n.children[0]) + " | " + describe_node(*n.children[1]) + ")";
      case Op::Not:
        return "!" + describe_node(*n.children[0]);
    }
    return "?";
  }

  std::shared_ptr<const Node> node_;

  friend class PairingStrategy;
};

namespace detail {

/// The engine-facing rule of a strategy: positives P and exclusions E from the keys, with the
/// anchor itself excluded when anchors and candidates are the same samples, and (optionally) the
/// matched pair (row i, column i) always positive.
class StrategyRule : public PairRule {
 public:
  StrategyRule(
      SampleKeys anchors,
      SampleKeys candidates,
      PairExpr positive,
      PairExpr exclusion,
      bool same_set,
      bool diagonal_positive,
      int64_t rows,
      int64_t cols,
      at::Device device,
      std::string what)
      : a_(std::move(anchors)),
        c_(std::move(candidates)),
        positive_(std::move(positive)),
        exclusion_(std::move(exclusion)),
        same_set_(same_set),
        diagonal_positive_(diagonal_positive),
        rows_(rows),
        cols_(cols),
        device_(device),
        what_(std::move(what)) {}

  int64_t rows() const override {
    return rows_;
  }
  int64_t cols() const override {
    return cols_;
  }

  PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override {
    PairTile t;
    t.positive = positive_.eval(a_, c_, r0, r1, c0, c1, device_);
    if ((same_set_ || diagonal_positive_) && r0 < c1 && c0 < r1) {
      auto opts = at::TensorOptions().dtype(at::kLong).device(device_);
      auto diag = at::arange(r0, r1, opts).unsqueeze(1).eq(at::arange(c0, c1, opts).unsqueeze(0));
      if (diagonal_positive_) {
        t.positive = t.positive.logical_or(diag);
      }
      if (same_set_) {
        t.excluded = diag;
      }
    }
    if (!exclusion_.is_never()) {
      // False-negative control never removes a positive.
      auto e =
          exclusion_.eval(a_, c_, r0, r1, c0, c1, device_).logical_and(t.positive.logical_not());
      t.excluded = t.excluded.defined() ? t.excluded.logical_or(e) : e;
    }
    return t;
  }

  std::optional<KeyClasses> key_classes() const override {
    if (positive_.op() != PairExpr::Op::Same || !exclusion_.is_never() || diagonal_positive_) {
      return std::nullopt;
    }
    const Key k = positive_.key();
    auto ka = a_.get(k);
    auto kc = c_.get(k);
    if (k == Key::Label) {
      // Unknown labels are never equal: give each its own class.
      auto ia = at::arange(ka.size(0), ka.options());
      auto ic = at::arange(kc.size(0), kc.options());
      ka = at::where(ka.ge(0), ka, -1 - ia);
      kc = at::where(kc.ge(0), kc, -1 - ka.size(0) - ic);
    }
    return KeyClasses{ka, kc};
  }
  std::optional<at::Tensor> excluded_cols() const override {
    if (!exclusion_.is_never()) {
      return std::nullopt;
    }
    auto opts = at::TensorOptions().dtype(at::kLong).device(device_);
    return same_set_ ? at::arange(rows_, opts) : at::full({rows_}, -1, opts);
  }

  std::string describe() const override {
    return what_;
  }

 private:
  SampleKeys a_;
  SampleKeys c_;
  PairExpr positive_;
  PairExpr exclusion_;
  bool same_set_;
  bool diagonal_positive_;
  int64_t rows_;
  int64_t cols_;
  at::Device device_;
  std::string what_;
};

} // namespace detail

/// A pairing strategy: the rule for positives and the false-negative control (which candidates
/// are kept out of the negatives), both from sample keys. Named constructors give the strategies
/// of the literature; `exclude_*`, `positives_across_sites` and the `&`, `|` composition refine
/// them. Excluded candidates are neither positives nor negatives; false-negative control never
/// removes a positive; an anchor is never its own positive or negative.
///
/// Example (PCLR with its patient's other records as positives, same-site negatives removed):
///   auto s = medcl::PairingStrategy::same_patient().exclude_same_site_negatives();
///   auto loss = F::supcon_loss(feats, keys, medcl::SupConLossOptions().pairing(s));
class PairingStrategy {
 public:
  /// No positives among the candidates (MoCo's queue: the positive is the query's own key);
  /// combine with exclude_* for false-negative control.
  static PairingStrategy none() {
    return PairingStrategy(PairExpr::never(), "no positives among candidates");
  }
  /// SimCLR: the other views of the same sample (key `instance`; filled in by the losses for
  /// stacked views when the batch does not carry it).
  static PairingStrategy instance() {
    return PairingStrategy(
        PairExpr::same(Key::Instance), "instance (other views of the same sample)");
  }
  /// SupCon: the same (known) label.
  static PairingStrategy same_label() {
    return PairingStrategy(PairExpr::same(Key::Label), "same label");
  }
  /// PCLR: recordings of the same patient are positives.
  static PairingStrategy same_patient() {
    return PairingStrategy(PairExpr::same(Key::Patient), "same patient (PCLR)");
  }
  /// CLOCS across segments and longitudinal visits: the same patient within `window` in time.
  static PairingStrategy temporal_neighbours(double window) {
    std::ostringstream s;
    s << "temporal neighbours (same patient, |Δtime| <= " << window << ")";
    return PairingStrategy(PairExpr::same(Key::Patient) & PairExpr::time_within(window), s.str());
  }
  /// CLOCS across leads: the same moment (key `instance`: the segment) seen by another lead.
  static PairingStrategy across_leads() {
    return PairingStrategy(
        PairExpr::same(Key::Instance) & !PairExpr::same(Key::Lead),
        "across leads (same segment, other lead)");
  }
  /// MICLe: different images (key `instance`) of the same study, or of the same patient.
  static PairingStrategy multi_instance(Key group = Key::Study) {
    TORCH_CHECK(
        group == Key::Study || group == Key::Patient,
        "PairingStrategy::multi_instance: group must be Key::Study or Key::Patient, got ",
        key_name(group));
    return PairingStrategy(
        PairExpr::same(group) & !PairExpr::same(Key::Instance),
        std::string("multi-instance (other images of the same ") + key_name(group) + ")");
  }
  /// Image and report: a report of the same study (several reports of one study are all
  /// positives). The matched pair of a batch (image i, report i) is always positive.
  static PairingStrategy cross_modal(Key group = Key::Study) {
    return PairingStrategy(
        PairExpr::same(group), std::string("cross-modal (same ") + key_name(group) + ")");
  }
  /// Any predicate as the positive rule.
  static PairingStrategy custom(PairExpr positive, std::string name) {
    return PairingStrategy(std::move(positive), std::move(name));
  }

  /// Adds a false-negative control rule: candidates matching `e` are kept out of the negatives.
  PairingStrategy exclude(const PairExpr& e, const std::string& what) const {
    PairingStrategy s = *this;
    s.exclusion_ = exclusion_.is_never() ? e : (exclusion_ | e);
    s.exclusion_names_.push_back(what);
    return s;
  }
  /// Another record of the anchor's patient is never a negative.
  PairingStrategy exclude_same_patient() const {
    return exclude(PairExpr::same(Key::Patient), "same patient");
  }
  /// Another image or report of the anchor's study is never a negative.
  PairingStrategy exclude_same_study() const {
    return exclude(PairExpr::same(Key::Study), "same study");
  }
  /// A sample with the anchor's (known) label is never a negative.
  PairingStrategy exclude_same_label() const {
    return exclude(PairExpr::same(Key::Label), "same label");
  }
  /// Negatives from the anchor's own site are removed (the site cannot be learned as a shortcut).
  PairingStrategy exclude_same_site_negatives() const {
    return exclude(PairExpr::same(Key::Site), "same site");
  }
  /// Positives only across sites: a positive pair from the same site no longer counts.
  PairingStrategy positives_across_sites() const {
    PairingStrategy s = *this;
    s.positive_ = positive_ & !PairExpr::same(Key::Site);
    s.name_ = name_ + ", across sites only";
    return s;
  }

  /// Both strategies' positives (AND); exclusions of either.
  friend PairingStrategy operator&(const PairingStrategy& a, const PairingStrategy& b) {
    return combine(a, b, a.positive_ & b.positive_, " AND ");
  }
  /// Either strategy's positives (OR); exclusions of either.
  friend PairingStrategy operator|(const PairingStrategy& a, const PairingStrategy& b) {
    return combine(a, b, a.positive_ | b.positive_, " OR ");
  }

  const PairExpr& positive() const {
    return positive_;
  }
  const PairExpr& exclusion() const {
    return exclusion_;
  }

  /// Keys the strategy reads.
  std::vector<Key> required_keys() const {
    std::vector<Key> k;
    positive_.required_keys(&k);
    exclusion_.required_keys(&k);
    return k;
  }

  /// "same patient (PCLR); excluded from negatives: same site", for reports.
  std::string describe() const {
    std::string s = name_;
    if (!exclusion_names_.empty()) {
      s += "; excluded from negatives: ";
      for (size_t i = 0; i < exclusion_names_.size(); ++i) {
        s += (i ? ", " : "") + exclusion_names_[i];
      }
    }
    return s;
  }

  /// The engine rule for anchors × candidates with these keys. `same_set`: anchors and
  /// candidates are the same samples (the anchor itself is excluded); `diagonal_positive`: row i
  /// and column i are a matched pair. Errors name the key a strategy needs and the batch lacks, and
  /// refuse a floating-point key the strategy compares for equality (every key but time).
  std::shared_ptr<const PairRule> rule(
      const SampleKeys& anchors,
      const SampleKeys& candidates,
      int64_t rows,
      int64_t cols,
      bool same_set,
      bool diagonal_positive,
      const at::Device& device,
      const char* fn) const {
    for (Key k : required_keys()) {
      TORCH_CHECK(
          anchors.has(k),
          fn,
          ": pairing strategy '",
          describe(),
          "' needs the key '",
          key_name(k),
          "', which the batch lacks (it carries: ",
          anchors.names(),
          ")");
      TORCH_CHECK(
          candidates.has(k),
          fn,
          ": pairing strategy '",
          describe(),
          "' needs the key '",
          key_name(k),
          "', which the candidates lack (they carry: ",
          candidates.names(),
          ")");
      if (is_identity_key(k)) {
        check_identity_dtype(fn, k, anchors.get(k), "batch's");
        check_identity_dtype(fn, k, candidates.get(k), "candidates'");
      }
    }
    check_masks(*positive_.node_, rows, cols, device, fn);
    check_masks(*exclusion_.node_, rows, cols, device, fn);
    return std::make_shared<detail::StrategyRule>(
        anchors,
        candidates,
        positive_,
        exclusion_,
        same_set,
        diagonal_positive,
        rows,
        cols,
        device,
        describe());
  }

 private:
  PairingStrategy(PairExpr positive, std::string name)
      : positive_(std::move(positive)), exclusion_(PairExpr::never()), name_(std::move(name)) {}

  static PairingStrategy combine(
      const PairingStrategy& a,
      const PairingStrategy& b,
      PairExpr positive,
      const char* joiner) {
    PairingStrategy s(std::move(positive), "(" + a.name_ + joiner + b.name_ + ")");
    s.exclusion_ = a.exclusion_.is_never() ? b.exclusion_
        : b.exclusion_.is_never()          ? a.exclusion_
                                           : (a.exclusion_ | b.exclusion_);
    s.exclusion_names_ = a.exclusion_names_;
    s.exclusion_names_.insert(
        s.exclusion_names_.end(), b.exclusion_names_.begin(), b.exclusion_names_.end());
    return s;
  }

  // A key compared for equality must hold ids: a floating-point one is refused, not truncated
  // (the engine's per-class sums read classes as int64, so {0.2, 0.7} would all be class 0).
  void check_identity_dtype(const char* fn, Key k, const at::Tensor& t, const char* side) const {
    const auto dtype = t.scalar_type();
    if (!at::isFloatingType(dtype) && !at::isComplexType(dtype)) {
      return;
    }
    TORCH_CHECK(
        false,
        fn,
        ": pairing strategy '",
        describe(),
        "' compares the key '",
        key_name(k),
        "' as a class identity, so it must be an integer tensor (int64), but the ",
        side,
        " key is ",
        dtype,
        ". Floating-point keys are refused rather than truncated (0.2 and 0.7 would both become "
        "0): give integer ids; only 'time' is floating point.");
  }

  static void check_masks(
      const PairExpr::Node& n,
      int64_t rows,
      int64_t cols,
      const at::Device& device,
      const char* fn) {
    if (n.op == PairExpr::Op::Mask) {
      TORCH_CHECK(
          n.mask.device() == device,
          fn,
          ": the pairing mask '",
          n.what,
          "' must be on the embeddings' device ",
          device,
          ", got ",
          n.mask.device());
      TORCH_CHECK(
          n.mask.size(0) == rows && n.mask.size(1) == cols,
          fn,
          ": the pairing mask '",
          n.what,
          "' must have shape [",
          rows,
          ", ",
          cols,
          "], got ",
          n.mask.sizes());
    }
    for (const auto& c : n.children) {
      check_masks(*c, rows, cols, device, fn);
    }
  }

  PairExpr positive_;
  PairExpr exclusion_;
  std::string name_;
  std::vector<std::string> exclusion_names_;
};

} // namespace medcl
