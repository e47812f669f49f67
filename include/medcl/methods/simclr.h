#pragma once

/// \file
/// SimCLR: encoder + projection head + NT-Xent over two views.

#include <medcl/losses/nt_xent.h>
#include <medcl/methods/method.h>

namespace medcl {

/// Options of `SimCLR`.
///
/// Example:
///   auto opts = medcl::SimCLROptions(512).projection_dim(128).loss(
///       medcl::NTXentLossOptions().temperature(0.1).pairing(
///           medcl::PairingStrategy::same_patient().exclude_same_patient()));
struct SimCLROptions {
  explicit SimCLROptions(int64_t feature_dim) : feature_dim_(feature_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, feature_dim);
  /// Width of the projection head's hidden layers. Default: 2048
  TORCH_ARG(int64_t, hidden_dim) = 2048;
  /// Size of the projection the loss sees. Default: 128
  TORCH_ARG(int64_t, projection_dim) = 128;
  /// Linear layers of the projection head (SimCLR v1: 2, v2: 3). Default: 2
  TORCH_ARG(int64_t, projection_layers) = 2;
  /// The NT-Xent loss, its weighting and its pairing strategy. Default: temperature 0.1
  TORCH_ARG(NTXentLossOptions, loss) = NTXentLossOptions().temperature(0.1);
};

/// SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709): both views pass through one
/// encoder f and projection head g, and NT-Xent contrasts z = g(f(x)) across the 2B views,
/// \f[ \mathcal{L} = -\frac{1}{2B}\sum_i \log
///     \frac{e^{s(z_i, z_{i^+})/\tau}}{\sum_{k\ne i} e^{s(z_i, z_k)/\tau}} \f]
/// With a pairing strategy (patient, study, time...) the positives and excluded negatives come from
/// `batch.keys` (PCLR, CLOCS, MICLe-style variants). The two views go through the encoder as one
/// batch of 2B (batch-norm statistics over both views, as SimCLR's global BN).
///
/// Shape: batch.views 2 × [B, ...]; the encoder maps [B, ...] -> [B, feature_dim].
///
/// Example:
///   medcl::SimCLR<torch::nn::Sequential> method(encoder, medcl::SimCLROptions(64));
///   auto loss = method.training_loss(batch, ctx);
template <class Encoder>
class SimCLR : public MethodBase {
 public:
  SimCLR(Encoder encoder, SimCLROptions options)
      : options_(std::move(options)),
        encoder_(register_module("encoder", std::move(encoder))),
        projector_(register_module(
            "projector",
            ProjectionHead(ProjectionHeadOptions(
                               options_.feature_dim(),
                               options_.hidden_dim(),
                               options_.projection_dim())
                               .num_layers(options_.projection_layers())))),
        loss_(register_module("loss", NTXentLoss(options_.loss()))) {}

  std::string name() const override {
    return "SimCLR";
  }

  /// Also gives the group to the NT-Xent loss: each rank's views are contrasted with every rank's
  /// and the loss is this rank's share (see MethodBase::set_process_group).
  void set_process_group(dist::ProcessGroup group) override {
    options_.loss().group(group);
    loss_->options.group(group);
    MethodBase::set_process_group(std::move(group));
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    (void)ctx;
    detail::check_batch("SimCLR", batch, 2, 2);
    detail::check_no_local_views("SimCLR", batch);
    const int64_t b = batch.size();
    auto z = projector_->forward(encoder_->forward(at::cat({batch.views[0], batch.views[1]}, 0)));
    auto z0 = z.slice(0, 0, b);
    auto z1 = z.slice(0, b, 2 * b);
    if (batch.keys.size() > 0 || options_.loss().pairing().has_value()) {
      return loss_->forward_keyed(z0, z1, batch.keys);
    }
    return loss_->forward(z0, z1);
  }

  at::Tensor backbone_features(const at::Tensor& x) override {
    return encoder_->forward(x);
  }

  Json describe() const override {
    auto j = Json::object();
    j["method"] = name();
    j["feature_dim"] = options_.feature_dim();
    j["projection_head"] = detail::describe_head(projector_->options);
    auto l = detail::describe_contrastive("NT-Xent", options_.loss());
    l["temperature"] = options_.loss().temperature();
    j["loss"] = l;
    return j;
  }

  Encoder encoder() const {
    return encoder_;
  }
  const SimCLROptions& options() const {
    return options_;
  }

 private:
  SimCLROptions options_;
  Encoder encoder_;
  ProjectionHead projector_;
  NTXentLoss loss_;
};

} // namespace medcl
