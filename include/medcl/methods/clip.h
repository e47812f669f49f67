#pragma once

/// \file
/// CLIP-style alignment of two modalities: two encoders, linear projections, learnable scale.

#include <medcl/losses/clip.h>
#include <medcl/methods/method.h>

#include <torch/nn/modules/linear.h>

namespace medcl {

/// Options of `CLIP`.
struct CLIPOptions {
  CLIPOptions(int64_t image_feature_dim, int64_t text_feature_dim)
      : image_feature_dim_(image_feature_dim), text_feature_dim_(text_feature_dim) {}
  /// Size of the first (image, signal...) encoder's output. Required.
  TORCH_ARG(int64_t, image_feature_dim);
  /// Size of the second (text) encoder's output. Required.
  TORCH_ARG(int64_t, text_feature_dim);
  /// Size of the joint embedding. Default: 256
  TORCH_ARG(int64_t, embed_dim) = 256;
  /// The CLIP loss: initial and maximal log-scale, weighting, pairing. Default: CLIPLossOptions()
  TORCH_ARG(CLIPLossOptions, loss) = {};
};

/// CLIP (Radford et al. 2021, https://arxiv.org/abs/2103.00020; ConVIRT, Zhang et al. 2020, for
/// images and reports): an image encoder and a text encoder, each followed by a linear projection
/// without bias to a joint space, trained with the symmetric cross-entropy over the B × B cosine
/// similarities scaled by a learnable \f$e^{s}\f$ (clamped at 100):
/// \f[ \mathcal{L} = \tfrac12\big(\mathrm{CE}(e^{s} I T^\top, \mathrm{id}) +
///     \mathrm{CE}(e^{s} T I^\top, \mathrm{id})\big) \f]
/// With `batch.keys` (e.g. study) the pairing strategy decides which image-text pairs are positives
/// (several reports of one study) and which are excluded.
///
/// Shape: batch.views 1 × [B, ...] (image), batch.paired [B, ...] (text).
template <class ImageEncoder, class TextEncoder>
class CLIP : public MethodBase {
 public:
  CLIP(ImageEncoder image_encoder, TextEncoder text_encoder, CLIPOptions options)
      : options_(std::move(options)) {
    const auto& o = options_;
    TORCH_CHECK(
        o.image_feature_dim() > 0,
        "CLIP: image_feature_dim must be > 0, got ",
        o.image_feature_dim());
    TORCH_CHECK(
        o.text_feature_dim() > 0, "CLIP: text_feature_dim must be > 0, got ", o.text_feature_dim());
    TORCH_CHECK(o.embed_dim() > 0, "CLIP: embed_dim must be > 0, got ", o.embed_dim());
    image_encoder_ = register_module("image_encoder", std::move(image_encoder));
    text_encoder_ = register_module("text_encoder", std::move(text_encoder));
    image_projection_ = register_module(
        "image_projection",
        torch::nn::Linear(
            torch::nn::LinearOptions(o.image_feature_dim(), o.embed_dim()).bias(false)));
    text_projection_ = register_module(
        "text_projection",
        torch::nn::Linear(
            torch::nn::LinearOptions(o.text_feature_dim(), o.embed_dim()).bias(false)));
    loss_ = register_module("loss", CLIPLoss(o.loss()));
  }

  std::string name() const override {
    return "CLIP";
  }

  /// Also gives the group to the CLIP loss: each rank's images are contrasted with every rank's
  /// texts and the reverse, and the loss is this rank's share (see
  /// MethodBase::set_process_group). The logit scale is a parameter, the same on every rank.
  void set_process_group(dist::ProcessGroup group) override {
    options_.loss().group(group);
    loss_->options.group(group);
    MethodBase::set_process_group(std::move(group));
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    (void)ctx;
    detail::check_batch("CLIP", batch, 1, 1);
    detail::check_no_local_views("CLIP", batch);
    TORCH_CHECK(
        batch.paired.defined() && batch.paired.dim() >= 1 &&
            batch.paired.size(0) == batch.views[0].size(0),
        "CLIP: batch.paired must hold the other modality of the ",
        batch.views[0].size(0),
        " samples, got ",
        batch.paired.defined() ? batch.paired.sizes() : at::IntArrayRef{});
    auto image = embed_image(batch.views[0]);
    auto text = embed_text(batch.paired);
    if (batch.keys.size() > 0 || options_.loss().pairing().has_value()) {
      return loss_->forward_keyed(image, text, batch.keys, batch.keys);
    }
    return loss_->forward(image, text);
  }

  /// Joint-space embedding of the first modality (not normalised), [B, embed_dim], as the method is
  /// now (the training path: current mode, gradient when grad mode is on). For evaluation, call it
  /// after `eval()` under `NoGradGuard`, as `embed` does for the backbone.
  at::Tensor embed_image(const at::Tensor& x) {
    return image_projection_->forward(image_encoder_->forward(x));
  }
  /// Joint-space embedding of the second modality (not normalised), [B, embed_dim]; as
  /// `embed_image`, the training path.
  at::Tensor embed_text(const at::Tensor& t) {
    return text_projection_->forward(text_encoder_->forward(t));
  }

  /// The image encoder's features (for probes on the first modality); `embed` runs it in eval mode.
  at::Tensor backbone_features(const at::Tensor& x) override {
    return image_encoder_->forward(x);
  }

  std::map<std::string, double> step_statistics() const override {
    return {{"logit_scale", loss_->logit_scale().item<double>()}};
  }

  Json describe() const override {
    const auto& o = options_;
    auto j = Json::object();
    j["method"] = name();
    j["image_feature_dim"] = o.image_feature_dim();
    j["text_feature_dim"] = o.text_feature_dim();
    j["embed_dim"] = o.embed_dim();
    auto l = detail::describe_contrastive("CLIP symmetric cross-entropy", o.loss());
    l["init_log_scale"] = o.loss().init_log_scale();
    l["max_log_scale"] = o.loss().max_log_scale();
    j["loss"] = l;
    return j;
  }

  CLIPLoss loss() const {
    return loss_;
  }

 private:
  CLIPOptions options_;
  ImageEncoder image_encoder_{nullptr};
  TextEncoder text_encoder_{nullptr};
  torch::nn::Linear image_projection_{nullptr};
  torch::nn::Linear text_projection_{nullptr};
  CLIPLoss loss_{nullptr};
};

} // namespace medcl
