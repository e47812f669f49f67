#pragma once

/// \file
/// Supervised contrastive learning: encoder + projection head + SupCon over V views.

#include <medcl/losses/supcon.h>
#include <medcl/methods/method.h>

namespace medcl {

/// Options of `SupCon`.
struct SupConOptions {
  explicit SupConOptions(int64_t feature_dim) : feature_dim_(feature_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, feature_dim);
  /// Width of the projection head's hidden layer. Default: 2048
  TORCH_ARG(int64_t, hidden_dim) = 2048;
  /// Size of the projection the loss sees. Default: 128
  TORCH_ARG(int64_t, projection_dim) = 128;
  /// Linear layers of the projection head. Default: 2
  TORCH_ARG(int64_t, projection_layers) = 2;
  /// The SupCon loss, its weighting and its pairing strategy. Default: temperature 0.07
  TORCH_ARG(SupConLossOptions, loss) = {};
};

/// SupCon (Khosla et al. 2020, https://arxiv.org/abs/2004.11362): the V views of every sample and
/// every other sample of the same label (`batch.keys.label`, negative = unknown) are positives,
/// \f[ \mathcal{L} = \frac{1}{|A|}\sum_{i\in A} \frac{-\tau/\tau_b}{|P(i)|}\sum_{p\in P(i)} \log
///     \frac{e^{s(z_i, z_p)/\tau}}{\sum_{k\ne i} e^{s(z_i, z_k)/\tau}} \f]
/// Without labels (and without a pairing strategy) it is SimCLR over V views. A pairing strategy in
/// the loss options replaces the label rule (e.g. same label, same-patient negatives excluded).
///
/// Shape: batch.views V × [B, ...] (V >= 1); keys.label [B].
template <class Encoder>
class SupCon : public MethodBase {
 public:
  SupCon(Encoder encoder, SupConOptions options)
      : options_(std::move(options)),
        encoder_(register_module("encoder", std::move(encoder))),
        projector_(register_module(
            "projector",
            ProjectionHead(ProjectionHeadOptions(
                               options_.feature_dim(),
                               options_.hidden_dim(),
                               options_.projection_dim())
                               .num_layers(options_.projection_layers())))),
        loss_(register_module("loss", SupConLoss(options_.loss()))) {}

  std::string name() const override {
    return "SupCon";
  }

  /// Also gives the group to the SupCon loss: each rank's views are contrasted with every rank's,
  /// labels and pairing keys included, and the loss is this rank's share (see
  /// MethodBase::set_process_group).
  void set_process_group(dist::ProcessGroup group) override {
    options_.loss().group(group);
    loss_->options.group(group);
    MethodBase::set_process_group(std::move(group));
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    (void)ctx;
    detail::check_batch("SupCon", batch, 1, 64);
    detail::check_no_local_views("SupCon", batch);
    const int64_t b = batch.size();
    const int64_t v = static_cast<int64_t>(batch.views.size());
    auto z = projector_->forward(encoder_->forward(at::cat(batch.views, 0))); // [V*B, P]
    auto features = z.reshape({v, b, z.size(1)}).transpose(0, 1);             // [B, V, P]
    if (batch.keys.size() > 0 || options_.loss().pairing().has_value()) {
      return loss_->forward_keyed(features, batch.keys);
    }
    TORCH_CHECK(
        v >= 2,
        "SupCon: without labels or a pairing strategy the loss needs at least two views, got ",
        v);
    return loss_->forward(features, at::Tensor());
  }

  at::Tensor backbone_features(const at::Tensor& x) override {
    return encoder_->forward(x);
  }

  Json describe() const override {
    auto j = Json::object();
    j["method"] = name();
    j["feature_dim"] = options_.feature_dim();
    j["projection_head"] = detail::describe_head(projector_->options);
    auto l = detail::describe_contrastive("SupCon", options_.loss());
    l["temperature"] = options_.loss().temperature();
    l["base_temperature"] = options_.loss().base_temperature();
    j["loss"] = l;
    return j;
  }

  Encoder encoder() const {
    return encoder_;
  }

 private:
  SupConOptions options_;
  Encoder encoder_;
  ProjectionHead projector_;
  SupConLoss loss_;
};

} // namespace medcl
