#pragma once

/// \file
/// CLIP's symmetric image-text contrastive loss.

#include <medcl/losses/contrastive_common.h>

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
