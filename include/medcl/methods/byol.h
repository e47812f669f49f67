#pragma once

/// \file
/// BYOL: online encoder + projector + predictor regressing an EMA target network.

#include <medcl/losses/negative_free.h>
#include <medcl/methods/method.h>
#include <medcl/nn/momentum.h>

namespace medcl {

/// Options of `BYOL` (defaults of the paper: projection 4096 -> 256, predictor 4096 -> 256,
/// momentum cosine from 0.996 to 1).
struct BYOLOptions {
  explicit BYOLOptions(int64_t feature_dim) : feature_dim_(feature_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, feature_dim);
  /// Width of the projector's and predictor's hidden layer. Default: 4096
  TORCH_ARG(int64_t, hidden_dim) = 4096;
  /// Size of the projection and prediction. Default: 256
  TORCH_ARG(int64_t, projection_dim) = 256;
  /// EMA momentum at step 0. Default: 0.996
  TORCH_ARG(double, momentum_start) = 0.996;
  /// EMA momentum at the last step (cosine schedule). Default: 1.0
  TORCH_ARG(double, momentum_end) = 1.0;
};

/// BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733): the online network (encoder,
/// projector g, predictor q) predicts the target network's projection of the other view; the target
/// is an EMA of the online encoder and projector and receives no gradient. Symmetric loss
/// \f[ \mathcal{L} = \tfrac1B\sum_i \big(2 - 2\cos(q(z_{0,i}), \mathrm{sg}(z'_{1,i}))\big)
///     + \tfrac1B\sum_i \big(2 - 2\cos(q(z_{1,i}), \mathrm{sg}(z'_{0,i}))\big) \f]
/// The EMA update follows every optimiser step with m on a cosine schedule.
///
/// Across the ranks of a process group (`set_process_group`) the loss is this rank's share: the
/// sums over its rows divided by the global batch size. The target network is an EMA of the
/// online one, so it stays identical on every rank as long as the online parameters are (the
/// gradients summed over the ranks, every rank taking the same optimiser step). Batch
/// normalisation in the heads (online and target alike) is synchronised over the group, so the
/// shares sum to the one-process loss (see MethodBase::set_process_group, and its
/// `sync_batch_norm(false)` for per-rank statistics).
///
/// Shape: batch.views 2 × [B, ...].
template <class Encoder>
class BYOL : public MethodBase {
 public:
  BYOL(Encoder encoder, BYOLOptions options) : options_(std::move(options)) {
    const auto& o = options_;
    detail::check_momentum("BYOL", o.momentum_start(), o.momentum_end());
    momentum_schedule_ = MomentumSchedule(o.momentum_start(), o.momentum_end());
    encoder_ = register_module("encoder", std::move(encoder));
    projector_ = register_module(
        "projector",
        ProjectionHead(ProjectionHeadOptions(o.feature_dim(), o.hidden_dim(), o.projection_dim())));
    predictor_ = register_module(
        "predictor",
        PredictionHead(
            ProjectionHeadOptions(o.projection_dim(), o.hidden_dim(), o.projection_dim())));
    target_encoder_ = register_module("target_encoder", detail::deep_copy(encoder_, "BYOL"));
    target_projector_ = register_module("target_projector", detail::deep_copy(projector_, "BYOL"));
    detail::freeze(*target_encoder_);
    detail::freeze(*target_projector_);
  }

  std::string name() const override {
    return "BYOL";
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    (void)ctx;
    detail::check_batch("BYOL", batch, 2, 2);
    detail::check_no_local_views("BYOL", batch);
    const int64_t b = batch.size();
    auto x = at::cat({batch.views[0], batch.views[1]}, 0);
    auto p = predictor_->forward(projector_->forward(encoder_->forward(x)));
    at::Tensor t;
    {
      c10::NoGradGuard no_grad;
      t = target_projector_->forward(target_encoder_->forward(x)).detach();
    }
    // With a process group, each term is this rank's share (divided by the global batch size).
    return functional::byol_loss(p.slice(0, 0, b), t.slice(0, b, 2 * b), group_) +
        functional::byol_loss(p.slice(0, b, 2 * b), t.slice(0, 0, b), group_);
  }

  void after_optimizer_step(const StepContext& ctx) override {
    momentum_schedule_.advance(ctx.step, ctx.total_steps);
    momentum_schedule_.update(*encoder_, *target_encoder_);
    momentum_schedule_.update(*projector_, *target_projector_);
  }

  at::Tensor backbone_features(const at::Tensor& x) override {
    return encoder_->forward(x);
  }

  /// The momentum of the last EMA update: the same on every rank.
  std::map<std::string, double> step_statistics() const override {
    return {{"momentum", momentum_schedule_.current()}};
  }

  Json describe() const override {
    const auto& o = options_;
    auto j = Json::object();
    j["method"] = name();
    j["feature_dim"] = o.feature_dim();
    j["projection_head"] = detail::describe_head(projector_->options);
    j["prediction_head"] = detail::describe_head(predictor_->options);
    j["momentum_schedule"] = momentum_schedule_.describe();
    j["loss"] = "2 - 2 cos(prediction, target projection), symmetrised";
    return j;
  }

  double momentum() const {
    return momentum_schedule_.current();
  }
  Encoder target_encoder() const {
    return target_encoder_;
  }
  Encoder encoder() const {
    return encoder_;
  }

 private:
  BYOLOptions options_;
  Encoder encoder_{nullptr};
  ProjectionHead projector_{nullptr};
  PredictionHead predictor_{nullptr};
  Encoder target_encoder_{nullptr};
  ProjectionHead target_projector_{nullptr};
  MomentumSchedule momentum_schedule_;
};

} // namespace medcl
