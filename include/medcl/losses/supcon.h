#pragma once

/// \file
/// Supervised contrastive loss (SupCon).

#include <medcl/losses/contrastive_common.h>
#include <medcl/losses/distributed.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <optional>

namespace medcl {

/// Options of `supcon_loss` and `SupConLoss`.
struct SupConLossOptions {
  /// Softmax temperature tau. Default: 0.07
  TORCH_ARG(double, temperature) = 0.07;
  /// The loss is multiplied by temperature / base_temperature. Default: 0.07
  TORCH_ARG(double, base_temperature) = 0.07;
  /// How negatives are weighted. Default: NegativeWeighting::uniform()
  TORCH_ARG(NegativeWeighting, weighting) = NegativeWeighting::uniform();
  /// Dense or tiled similarity path. Default: SimilarityEngineOptions() (automatic)
  TORCH_ARG(SimilarityEngineOptions, engine) = {};
  /// Epsilon of the L2 normalisation. Default: 1e-12
  TORCH_ARG(double, eps) = 1e-12;
  /// Pairing strategy deciding positives and excluded negatives from sample keys (the keyed
  /// overload's `keys`). Default: none (same label with labels, else the other views)
  TORCH_ARG(std::optional<PairingStrategy>, pairing) = std::nullopt;
  /// Refuse NaN/Inf embeddings. Default: true
  TORCH_ARG(bool, check_finite) = true;
  /// Data-parallel training: the process group whose ranks' batches form one global batch.
  /// Each rank's anchors are contrasted with every rank's candidates (gathered with gradient),
  /// positives and exclusions are decided on every rank's sample keys, and the loss returned is
  /// this rank's share: the shares summed over the ranks equal the one-process loss on the
  /// concatenated batch (see docs/distributed.md). Default: one process
  TORCH_ARG(dist::ProcessGroup, group) = {};
};

namespace detail {

/// The argument checks shared by both forms of supcon_loss.
inline void
check_supcon_inputs(const char* fn, const at::Tensor& features, const SupConLossOptions& options) {
  check_embedding(fn, "features", features, 3);
  check_temperature(fn, "temperature", options.temperature());
  check_temperature(fn, "base_temperature", options.base_temperature());
  if (options.check_finite()) {
    check_finite(fn, "features", features);
  }
}

/// Refuses floating-point labels, naming the pairing strategy that would read them: they are
/// class ids, and casting them would truncate ({0.2, 0.7, ...} would all become class 0). A float
/// tensor of whole numbers is refused too (see check_identity_key): convert it with
/// `.to(at::kLong)`.
inline void
check_label_ids(const char* fn, const at::Tensor& labels, const SupConLossOptions& options) {
  const auto dtype = labels.scalar_type();
  if (!at::isFloatingType(dtype) && !at::isComplexType(dtype)) {
    return;
  }
  TORCH_CHECK(
      false,
      fn,
      ": labels must be class ids of dtype int64 or int32, got the floating-point dtype ",
      dtype,
      options.pairing().has_value() ? " (read as the key 'label' by the pairing strategy '" +
              options.pairing()->describe() + "')"
                                    : std::string(),
      ". Floating-point labels are refused rather than truncated (0.2 and 0.7 would both become "
      "class 0): give integer class ids.");
}

/// The engine call shared by both forms: the B·V normalised views, in view-major order as the
/// reference implementation's torch.cat(torch.unbind(features, 1)), against themselves.
inline at::Tensor supcon_engine(
    const char* fn,
    const at::Tensor& features,
    std::shared_ptr<const PairRule> rule,
    const SupConLossOptions& options) {
  const int64_t b = features.size(0);
  const int64_t v = features.size(1);
  auto flat =
      l2_normalize(features.transpose(0, 1).reshape({v * b, features.size(2)}), options.eps());
  auto p = make_contrast_problem(
      fn,
      flat,
      flat,
      std::move(rule),
      options.temperature(),
      options.weighting(),
      options.engine(),
      matmul_dtype(features));
  p.loss_scale = options.temperature() / options.base_temperature();
  return contrast_loss(std::move(p));
}

/// SupCon across the ranks of `options.group()`: this rank's b·V views against every rank's
/// (gathered with gradient). `keys` null: positives by `labels` (or, undefined, the other views
/// of the sample); else by the pairing strategy on every rank's keys. Returns this rank's share.
inline at::Tensor supcon_distributed(
    const char* fn,
    const at::Tensor& features,
    const at::Tensor& labels,
    const SampleKeys* keys,
    const SupConLossOptions& options) {
  const auto& g = options.group();
  const bool has_labels = keys != nullptr ? keys->has(Key::Label) : labels.defined();
  const auto strategy = options.pairing().value_or(
      has_labels ? PairingStrategy::same_label() : PairingStrategy::instance());
  const auto error = local_check_error([&]() {
    check_rank_embedding(fn, "features", features, 3);
    check_temperature(fn, "temperature", options.temperature());
    check_temperature(fn, "base_temperature", options.base_temperature());
    if (options.check_finite() && features.numel() > 0) {
      check_finite(fn, "features", features);
    }
    if (keys != nullptr) {
      keys->check(fn, "sample", features.size(0), features.device());
    } else if (labels.defined()) {
      check_label_ids(fn, labels, options);
      TORCH_CHECK(
          labels.dim() == 1 && labels.size(0) == features.size(0),
          fn,
          ": labels must be [B] with B = ",
          features.size(0),
          ", got shape ",
          labels.sizes());
      TORCH_CHECK(
          labels.device() == features.device(),
          fn,
          ": labels must be on the features' device ",
          features.device(),
          ", got ",
          labels.device());
    } else {
      TORCH_CHECK(
          features.size(1) >= 2,
          fn,
          ": without labels SupCon needs at least 2 views per sample, got features of shape ",
          features.sizes());
    }
  });
  const bool shaped = features.defined() && features.dim() == 3;
  at::Tensor flat;
  if (error.empty()) {
    flat = l2_normalize(
        features.transpose(0, 1).reshape({features.size(1) * features.size(0), features.size(2)}),
        options.eps());
  }
  auto global = agree_and_gather(
      fn,
      g,
      {agreed_gradient(features),
       agreed_int("embedding size", shaped ? features.size(2) : -1),
       agreed_int("number of views", shaped ? features.size(1) : -1),
       agreed_text(
           "dtype", features.defined() ? std::string(c10::toString(features.scalar_type())) : ""),
       agreed_double("temperature", options.temperature()),
       agreed_double("base_temperature", options.base_temperature()),
       agreed_double("eps", options.eps()),
       agreed_text("negative weighting", options.weighting().describe()),
       agreed_text(
           "pairing strategy",
           keys != nullptr ? strategy.describe()
                           : (has_labels ? "same label" : "the other views of the sample")),
       agreed_text(
           "sample keys",
           keys != nullptr ? keys->names() : (has_labels ? "labels" : std::string("none")))},
      error,
      flat,
      shaped ? features.size(1) : 1,
      shaped ? features.size(2) * (features.scalar_type() == at::kDouble ? 8 : 4) : 0,
      features.defined() ? features.device() : at::Device(at::kCPU));
  const int64_t b = features.size(0);
  const int64_t v = features.size(1);
  const int64_t m = global.all.size(0);
  const auto lo = features.options().dtype(at::kLong);
  std::shared_ptr<const PairRule> rule;
  if (keys != nullptr) {
    auto all = gather_view_keys(*keys, b, v, global.sample_offset, features.device(), g);
    auto full = strategy.rule(
        all, all, m, m, /*same_set=*/true, /*diagonal_positive=*/false, features.device(), fn);
    rule = std::make_shared<RowBlockRule>(std::move(full), global.row0, v * b);
  } else if (!has_labels && v == 2) {
    auto local = at::arange(2 * b, lo);
    rule = std::make_shared<IndexRule>(
        (local + b).remainder(std::max<int64_t>(2 * b, 1)) + global.row0,
        local + global.row0,
        m,
        "instance: the other view of the same sample");
  } else {
    auto ids = has_labels ? labels.to(at::kLong)
                          : at::arange(global.sample_offset, global.sample_offset + b, lo);
    auto all = g.all_gather(ids.repeat({v}));
    auto full = std::make_shared<KeyMatchRule>(
        all, all, /*exclude_diagonal=*/true, has_labels ? "same label" : "same instance");
    rule = std::make_shared<RowBlockRule>(std::move(full), global.row0, v * b);
  }
  auto p = make_contrast_problem(
      fn,
      flat,
      global.all,
      std::move(rule),
      options.temperature(),
      options.weighting(),
      options.engine(),
      matmul_dtype(features));
  p.loss_scale = options.temperature() / options.base_temperature();
  return distributed_contrast(std::move(p), g, global.all);
}

} // namespace detail

namespace functional {

/// Supervised contrastive loss of Khosla et al. 2020 (https://arxiv.org/abs/2004.11362), contrast
/// mode "all", the \f$\mathcal{L}^{sup}_{out}\f$ form, on L2-normalised features: every one of
/// the B·V views is an anchor; its positives P(i) are the other views with the same label and
/// its denominator runs over every view but itself:
/// \f[ \mathcal{L} = \frac{\tau}{\tau_b}\,\frac{1}{|I|}\sum_{i\in I} \frac{-1}{|P(i)|}
///     \sum_{p\in P(i)} \log\frac{e^{z_i\cdot z_p/\tau}}{\sum_{a\ne i} e^{z_i\cdot z_a/\tau}} \f]
/// Without labels each sample is its own class: SimCLR over V views. Anchors without a positive
/// (a label seen once with V = 1) are left out of the mean (the reference code would give NaN
/// or count them as 0); if none is left the loss is 0 with a warning.
///
/// Shape: features [B, V, D], labels [B] int64/int32 or undefined -> 0-dim tensor. Floating-point
/// labels are refused, with or without a pairing strategy (never truncated to class ids).
///
/// Example:
///   auto feats = at::stack({proj(view0), proj(view1)}, 1);  // [B, 2, D]
///   auto loss = F::supcon_loss(feats, diagnosis);
inline at::Tensor supcon_loss(
    const at::Tensor& features,
    const SampleKeys& keys,
    const SupConLossOptions& options = {});

inline at::Tensor supcon_loss(
    const at::Tensor& features,
    const at::Tensor& labels = {},
    const SupConLossOptions& options = {}) {
  constexpr const char* fn = "supcon_loss";
  if (options.group().size() > 1) {
    if (!options.pairing().has_value()) {
      return detail::supcon_distributed(fn, features, labels, nullptr, options);
    }
    // Checked on every rank together (a floating-point label is refused there, not truncated).
    SampleKeys keys;
    keys.label = labels.defined() && !at::isFloatingType(labels.scalar_type())
        ? labels.to(at::kLong)
        : labels;
    return detail::supcon_distributed(fn, features, at::Tensor(), &keys, options);
  }
  detail::check_supcon_inputs(fn, features, options);
  const int64_t b = features.size(0);
  const int64_t v = features.size(1);
  if (labels.defined()) {
    // The same refusal with and without a pairing strategy: labels are class ids, and a
    // floating-point tensor is refused, never truncated ({0.2, 0.7} would all be class 0).
    detail::check_label_ids(fn, labels, options);
    detail::check_labels(fn, "labels", labels, b, features.device());
  }
  if (options.pairing().has_value()) {
    SampleKeys keys;
    keys.label = labels.defined() ? labels.to(at::kLong) : labels;
    return supcon_loss(features, keys, options);
  }
  if (!labels.defined()) {
    TORCH_CHECK(
        v >= 2,
        fn,
        ": without labels SupCon needs at least 2 views per sample, got features of shape ",
        features.sizes());
  }
  auto long_opts = features.options().dtype(at::kLong);
  std::shared_ptr<const PairRule> rule;
  if (!labels.defined() && v == 2) {
    rule = std::make_shared<TwoViewRule>(b, long_opts);
  } else {
    auto keys =
        labels.defined() ? labels.to(at::kLong).repeat({v}) : at::arange(b, long_opts).repeat({v});
    rule = std::make_shared<KeyMatchRule>(
        keys, keys, /*exclude_diagonal=*/true, labels.defined() ? "same label" : "same instance");
  }
  return detail::supcon_engine(fn, features, std::move(rule), options);
}

/// SupCon with sample keys: the B·V views' positives and excluded negatives follow
/// `options.pairing()` (default: PairingStrategy::same_label() when `keys.label` is defined, else
/// PairingStrategy::instance()). Negative labels mean "unknown" here (never a label positive).
/// `supcon_loss(features, patient_ids)` equals this with PairingStrategy::same_patient().
///
/// Shape: features [B, V, D]; every defined key [B] -> 0-dim tensor.
///
/// Example:
///   auto opts =
///   medcl::SupConLossOptions().pairing(medcl::PairingStrategy::temporal_neighbours(90.0)); auto
///   loss = F::supcon_loss(at::stack({z0, z1}, 1), keys, opts);
inline at::Tensor
supcon_loss(const at::Tensor& features, const SampleKeys& keys, const SupConLossOptions& options) {
  constexpr const char* fn = "supcon_loss";
  if (options.group().size() > 1) {
    return detail::supcon_distributed(fn, features, at::Tensor(), &keys, options);
  }
  detail::check_supcon_inputs(fn, features, options);
  const int64_t b = features.size(0);
  const int64_t v = features.size(1);
  auto all = detail::stacked_view_keys(fn, keys, b, v, features.device());
  auto strategy = options.pairing().value_or(
      keys.has(Key::Label) ? PairingStrategy::same_label() : PairingStrategy::instance());
  auto rule = strategy.rule(
      all,
      all,
      v * b,
      v * b,
      /*same_set=*/true,
      /*diagonal_positive=*/false,
      features.device(),
      fn);
  return detail::supcon_engine(fn, features, std::move(rule), options);
}

} // namespace functional

/// Module form of `functional::supcon_loss`.
class SupConLossImpl : public torch::nn::Cloneable<SupConLossImpl> {
 public:
  explicit SupConLossImpl(SupConLossOptions opts = {}) : options(std::move(opts)) {
    reset();
  }
  /// Checks the options (nothing to allocate).
  void reset() override {
    detail::check_contrastive_options(
        "SupConLoss", options.temperature(), options.eps(), options.engine());
    detail::check_temperature("SupConLoss", "base_temperature", options.base_temperature());
  }
  at::Tensor forward(const at::Tensor& features, const at::Tensor& labels = {}) {
    return functional::supcon_loss(features, labels, options);
  }
  /// forward() with sample keys (a module has one `forward`; TORCH_MODULE needs it unique).
  at::Tensor forward_keyed(const at::Tensor& features, const SampleKeys& keys) {
    return functional::supcon_loss(features, keys, options);
  }
  SupConLossOptions options;
};
TORCH_MODULE(SupConLoss);

} // namespace medcl
