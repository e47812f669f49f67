#pragma once

/// \file
/// CLIP's symmetric image-text contrastive loss.

#include <medcl/losses/contrastive_common.h>
#include <medcl/losses/distributed.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <optional>

namespace medcl {

/// Options of `clip_loss` and `CLIPLoss`.
struct CLIPLossOptions {
  /// How negatives are weighted. Default: NegativeWeighting::uniform()
  TORCH_ARG(NegativeWeighting, weighting) = NegativeWeighting::uniform();
  /// Dense or tiled similarity path. Default: SimilarityEngineOptions() (automatic)
  TORCH_ARG(SimilarityEngineOptions, engine) = {};
  /// Epsilon of the L2 normalisation. Default: 1e-12
  TORCH_ARG(double, eps) = 1e-12;
  /// Pairing strategy deciding positives and excluded negatives from sample keys (the keyed
  /// overload's `keys`). Default: none (the matched pair; with keys, the same study)
  TORCH_ARG(std::optional<PairingStrategy>, pairing) = std::nullopt;
  /// Refuse NaN/Inf embeddings. Default: true
  TORCH_ARG(bool, check_finite) = true;
  /// Data-parallel training: the process group whose ranks' batches form one global batch.
  /// Each rank's anchors are contrasted with every rank's candidates (gathered with gradient),
  /// positives and exclusions are decided on every rank's sample keys, and the loss returned is
  /// this rank's share: the shares summed over the ranks equal the one-process loss on the
  /// concatenated batch (see docs/distributed.md). Default: one process
  TORCH_ARG(dist::ProcessGroup, group) = {};
  /// CLIPLoss only: initial log of the logit scale. Default: ln(1/0.07)
  TORCH_ARG(double, init_log_scale) = std::log(1.0 / 0.07);
  /// CLIPLoss only: the log-scale is clamped to at most this. Default: ln(100)
  TORCH_ARG(double, max_log_scale) = std::log(100.0);
};

namespace detail {

inline at::Tensor clip_with_rule(
    const char* fn,
    const at::Tensor& image,
    const at::Tensor& text,
    const at::Tensor& logit_scale,
    std::shared_ptr<const PairRule> rule,
    const CLIPLossOptions& options) {
  detail::check_embedding(fn, "image", image, 2);
  detail::check_embedding(fn, "text", text, 2);
  TORCH_CHECK(
      image.size(0) == text.size(0),
      fn,
      ": image and text must have the same batch size, got ",
      image.size(0),
      " and ",
      text.size(0));
  TORCH_CHECK(
      image.size(1) == text.size(1),
      fn,
      ": image and text must have the same embedding size, got ",
      image.size(1),
      " and ",
      text.size(1));
  detail::check_same_device_dtype(fn, "image", image, "text", text);
  TORCH_CHECK(
      logit_scale.defined() && logit_scale.numel() == 1,
      fn,
      ": logit_scale must hold one value, got ",
      logit_scale.defined() ? logit_scale.sizes() : at::IntArrayRef{});
  const double scale = logit_scale.item<double>();
  TORCH_CHECK(
      std::isfinite(scale) && scale > 0.0, fn, ": logit_scale must be finite and > 0, got ", scale);
  if (options.check_finite()) {
    detail::check_finite(fn, "image", image);
    detail::check_finite(fn, "text", text);
  }
  auto x = detail::l2_normalize(image, options.eps());
  auto t = detail::l2_normalize(text, options.eps());
  auto p = make_contrast_problem(
      fn,
      x,
      t,
      std::move(rule),
      1.0 / scale,
      options.weighting(),
      options.engine(),
      detail::matmul_dtype(image));
  p.symmetric = true;
  p.scale_tensor = logit_scale;
  return detail::contrast_loss(std::move(p));
}

/// CLIP across the ranks of `options.group()`: this rank's images against every rank's texts and
/// this rank's texts against every rank's images (one gather with gradient of both), each
/// direction's mean taken over every rank's rows. `keyed`: pairs follow the pairing strategy on
/// every rank's image and text keys (the text direction reads the rule by columns). Returns this
/// rank's share.
inline at::Tensor clip_distributed(
    const char* fn,
    const at::Tensor& image,
    const at::Tensor& text,
    const at::Tensor& logit_scale,
    const SampleKeys& image_keys,
    const SampleKeys& text_keys,
    bool keyed,
    const CLIPLossOptions& options) {
  const auto& g = options.group();
  const auto strategy = options.pairing().value_or(PairingStrategy::cross_modal(Key::Study));
  double scale = 0.0;
  const auto error = local_check_error([&]() {
    check_rank_embedding(fn, "image", image, 2);
    check_rank_embedding(fn, "text", text, 2);
    TORCH_CHECK(
        image.sizes() == text.sizes(),
        fn,
        ": image and text must have the same shape, got ",
        image.sizes(),
        " and ",
        text.sizes());
    check_same_device_dtype(fn, "image", image, "text", text);
    TORCH_CHECK(
        logit_scale.defined() && logit_scale.numel() == 1,
        fn,
        ": logit_scale must hold one value, got ",
        logit_scale.defined() ? logit_scale.sizes() : at::IntArrayRef{});
    scale = logit_scale.item<double>();
    TORCH_CHECK(
        std::isfinite(scale) && scale > 0.0,
        fn,
        ": logit_scale must be finite and > 0, got ",
        scale);
    if (options.check_finite() && image.numel() > 0) {
      check_finite(fn, "image", image);
      check_finite(fn, "text", text);
    }
    if (keyed) {
      image_keys.check(fn, "image", image.size(0), image.device());
      text_keys.check(fn, "text", text.size(0), text.device());
    }
  });
  const bool shaped = image.defined() && image.dim() == 2;
  at::Tensor x;
  at::Tensor t;
  at::Tensor rows;
  if (error.empty()) {
    x = l2_normalize(image, options.eps());
    t = l2_normalize(text, options.eps());
    rows = at::cat({x, t}, 1);
  }
  auto global = agree_and_gather(
      fn,
      g,
      {agreed_gradient(image, text),
       agreed_int("embedding size", shaped ? image.size(1) : -1),
       agreed_text("dtype", image.defined() ? std::string(c10::toString(image.scalar_type())) : ""),
       agreed_double("logit scale", scale),
       agreed_double("eps", options.eps()),
       agreed_text("negative weighting", options.weighting().describe()),
       agreed_text("pairing strategy", keyed ? strategy.describe() : std::string("matched pair")),
       agreed_text("image keys", keyed ? image_keys.names() : std::string("none")),
       agreed_text("text keys", keyed ? text_keys.names() : std::string("none"))},
      error,
      rows,
      1,
      shaped ? 2 * image.size(1) * (image.scalar_type() == at::kDouble ? 8 : 4) : 0,
      image.defined() ? image.device() : at::Device(at::kCPU));
  const int64_t b = image.size(0);
  const int64_t d = image.size(1);
  const auto lo = image.options().dtype(at::kLong);
  const int64_t m = global.all.size(0);
  auto all_x = global.all.narrow(1, 0, d);
  auto all_t = global.all.narrow(1, d, d);
  std::shared_ptr<const PairRule> to_text;
  std::shared_ptr<const PairRule> to_image;
  if (!keyed) {
    to_text = std::make_shared<IndexRule>(
        at::arange(b, lo) + global.row0,
        at::full({b}, -1, lo),
        m,
        "matched pair (row i with column i)");
    to_image = to_text;
  } else {
    auto ik = image_keys.size() < 0 ? image_keys : dist::gather_keys(image_keys, g);
    auto tk = text_keys.size() < 0 ? text_keys : dist::gather_keys(text_keys, g);
    std::shared_ptr<const PairRule> full = strategy.rule(
        ik, tk, m, m, /*same_set=*/false, /*diagonal_positive=*/true, image.device(), fn);
    to_text = std::make_shared<RowBlockRule>(full, global.row0, b);
    to_image =
        std::make_shared<RowBlockRule>(std::make_shared<TransposedRule>(full), global.row0, b);
  }
  auto direction = [&](const at::Tensor& anchors,
                       const at::Tensor& candidates,
                       std::shared_ptr<const PairRule> rule) {
    auto p = make_contrast_problem(
        fn,
        anchors,
        candidates,
        std::move(rule),
        1.0 / scale,
        options.weighting(),
        options.engine(),
        detail::matmul_dtype(image));
    p.scale_tensor = logit_scale;
    p.loss_scale = 0.5;
    if (!keyed) {
      // Every row's positive is its own pair, with negatives once there are two pairs in all:
      // the global count is known here, no all-reduce.
      return distributed_contrast(
          std::move(p), g, global.all, 1, known_row_counter(m > 1 ? b : 0, m > 1 ? m : 0));
    }
    return distributed_contrast(std::move(p), g, global.all);
  };
  auto image_to_text = direction(x, all_t, std::move(to_text));
  return image_to_text + direction(t, all_x, std::move(to_image));
}

} // namespace detail

namespace functional {

inline at::Tensor clip_loss(
    const at::Tensor& image,
    const at::Tensor& text,
    const at::Tensor& logit_scale,
    const SampleKeys& image_keys,
    const SampleKeys& text_keys,
    const CLIPLossOptions& options = {});

/// CLIP loss (Radford et al. 2021, https://arxiv.org/abs/2103.00020) as open_clip's `ClipLoss`
/// computes it, on L2-normalised features: with logits \f$s\,\hat{x}_i\cdot\hat{t}_j\f$ where s
/// is `logit_scale` (the multiplier, already exponentiated), the mean of the cross-entropy from
/// images to texts and from texts to images, the matched pair being the target:
/// \f[ \mathcal{L} = \tfrac12\big(\mathrm{CE}(S, I) + \mathrm{CE}(S^\top, I)\big) \f]
/// `logit_scale` may require grad (a learnable temperature); it receives its gradient.
///
/// Shape: image [B, D], text [B, D], logit_scale 0-dim or [1] -> 0-dim tensor.
///
/// Example:
///   auto loss = F::clip_loss(img_emb, txt_emb, log_scale.exp());
inline at::Tensor clip_loss(
    const at::Tensor& image,
    const at::Tensor& text,
    const at::Tensor& logit_scale,
    const CLIPLossOptions& options = {}) {
  if (options.pairing().has_value()) {
    return clip_loss(image, text, logit_scale, SampleKeys{}, SampleKeys{}, options);
  }
  if (options.group().size() > 1) {
    return detail::clip_distributed(
        "clip_loss", image, text, logit_scale, SampleKeys{}, SampleKeys{}, false, options);
  }
  const auto lo = at::TensorOptions().dtype(at::kLong).device(image.device());
  return detail::clip_with_rule(
      "clip_loss",
      image,
      text,
      logit_scale,
      std::make_shared<DiagonalRule>(image.size(0), lo),
      options);
}

/// CLIP with sample keys of both sides: pairs follow `options.pairing()` (default
/// PairingStrategy::cross_modal(Key::Study): several reports or images of one study are all
/// positives); the matched pair (image i, text i) is always positive.
///
/// Shape: image [B, D], text [B, D], logit_scale 0-dim or [1]; image_keys, text_keys [B] each.
inline at::Tensor clip_loss(
    const at::Tensor& image,
    const at::Tensor& text,
    const at::Tensor& logit_scale,
    const SampleKeys& image_keys,
    const SampleKeys& text_keys,
    const CLIPLossOptions& options) {
  constexpr const char* fn = "clip_loss";
  if (options.group().size() > 1) {
    return detail::clip_distributed(
        fn, image, text, logit_scale, image_keys, text_keys, true, options);
  }
  detail::check_embedding(fn, "image", image, 2);
  detail::check_embedding(fn, "text", text, 2);
  TORCH_CHECK(
      image.size(0) == text.size(0),
      fn,
      ": image and text must have the same batch size, got ",
      image.size(0),
      " and ",
      text.size(0));
  const int64_t b = image.size(0);
  image_keys.check(fn, "image", b, image.device());
  text_keys.check(fn, "text", b, text.device());
  auto strategy = options.pairing().value_or(PairingStrategy::cross_modal(Key::Study));
  auto rule = strategy.rule(
      image_keys,
      text_keys,
      b,
      b,
      /*same_set=*/false,
      /*diagonal_positive=*/true,
      image.device(),
      fn);
  return detail::clip_with_rule(fn, image, text, logit_scale, std::move(rule), options);
}

/// `clip_loss` with a fixed scale.
inline at::Tensor clip_loss(
    const at::Tensor& image,
    const at::Tensor& text,
    double logit_scale,
    const CLIPLossOptions& options = {}) {
  return clip_loss(
      image, text, at::scalar_tensor(logit_scale, image.options().dtype(at::kDouble)), options);
}

} // namespace functional

/// CLIP loss with a learnable temperature: owns `log_scale`, initialised to ln(1/0.07), and uses
/// `exp(min(log_scale, ln 100))` as the logit scale.
///
/// Example:
///   medcl::CLIPLoss criterion;
///   auto loss = criterion(image_encoder(x), text_encoder(t));
class CLIPLossImpl : public torch::nn::Cloneable<CLIPLossImpl> {
 public:
  explicit CLIPLossImpl(CLIPLossOptions opts = {}) : options(std::move(opts)) {
    reset();
  }
  void reset() override {
    TORCH_CHECK(
        std::isfinite(options.init_log_scale()),
        "CLIPLoss: init_log_scale must be finite, got ",
        options.init_log_scale());
    log_scale =
        register_parameter("log_scale", torch::tensor(options.init_log_scale(), torch::kFloat));
  }
  /// The logit scale in use: exp(min(log_scale, max_log_scale)).
  at::Tensor logit_scale() const {
    return log_scale.clamp_max(options.max_log_scale()).exp();
  }
  at::Tensor forward(const at::Tensor& image, const at::Tensor& text) {
    return functional::clip_loss(image, text, logit_scale().to(log_scale.device()), options);
  }
  /// forward() with sample keys (a module has one `forward`; TORCH_MODULE needs it unique).
  at::Tensor forward_keyed(
      const at::Tensor& image,
      const at::Tensor& text,
      const SampleKeys& image_keys,
      const SampleKeys& text_keys) {
    return functional::clip_loss(
        image, text, logit_scale().to(log_scale.device()), image_keys, text_keys, options);
  }
  CLIPLossOptions options;
  at::Tensor log_scale;
};
TORCH_MODULE(CLIPLoss);

} // namespace medcl
