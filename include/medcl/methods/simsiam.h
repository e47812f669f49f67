#pragma once

/// \file
/// SimSiam: encoder + projector + predictor, stop-gradient, no momentum encoder.

#include <medcl/losses/negative_free.h>
#include <medcl/methods/method.h>

namespace medcl {

/// Options of `SimSiam` (paper defaults: 3-layer projector 2048 with BN on its output, predictor
/// 2048 -> 512 -> 2048).
struct SimSiamOptions {
  explicit SimSiamOptions(int64_t feature_dim) : feature_dim_(feature_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, feature_dim);
  /// Width of the projector's hidden layers and of its output. Default: 2048
  TORCH_ARG(int64_t, projection_dim) = 2048;
  /// Linear layers of the projector. Default: 3
  TORCH_ARG(int64_t, projection_layers) = 3;
  /// Bottleneck width of the predictor. Default: 512
  TORCH_ARG(int64_t, prediction_hidden_dim) = 512;
};

/// SimSiam (Chen & He 2021, https://arxiv.org/abs/2011.10566): z = g(f(x)), p = h(z),
/// \f[ \mathcal{L} = -\tfrac12\cos(p_0, \mathrm{sg}(z_1)) - \tfrac12\cos(p_1, \mathrm{sg}(z_0)) \f]
/// averaged over the batch; minimum -1. No negatives, no momentum encoder: the stop-gradient and
/// the predictor prevent collapse.
///
/// Across the ranks of a process group (`set_process_group`) the loss is this rank's share: the
/// sum over its rows divided by the global batch size. Batch normalisation in the heads is
/// synchronised over the group, so the shares sum to the one-process loss (see
/// MethodBase::set_process_group).
///
/// Shape: batch.views 2 × [B, ...].
template <class Encoder>
class SimSiam : public MethodBase {
 public:
  SimSiam(Encoder encoder, SimSiamOptions options) : options_(std::move(options)) {
    const auto& o = options_;
    encoder_ = register_module("encoder", std::move(encoder));
    projector_ = register_module(
        "projector",
        ProjectionHead(
            ProjectionHeadOptions(o.feature_dim(), o.projection_dim(), o.projection_dim())
                .num_layers(o.projection_layers())
                .last_batch_norm(true)));
    predictor_ = register_module(
        "predictor",
        PredictionHead(ProjectionHeadOptions(
            o.projection_dim(), o.prediction_hidden_dim(), o.projection_dim())));
  }

  std::string name() const override {
    return "SimSiam";
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    (void)ctx;
    detail::check_batch("SimSiam", batch, 2, 2);
    detail::check_no_local_views("SimSiam", batch);
    const int64_t b = batch.size();
    auto z = projector_->forward(encoder_->forward(at::cat({batch.views[0], batch.views[1]}, 0)));
    auto p = predictor_->forward(z);
    // With a process group, this rank's share (divided by the global batch size).
    return functional::simsiam_loss(
        p.slice(0, 0, b), p.slice(0, b, 2 * b), z.slice(0, 0, b), z.slice(0, b, 2 * b), group_);
  }

  at::Tensor backbone_features(const at::Tensor& x) override {
    return encoder_->forward(x);
  }

  Json describe() const override {
    auto j = Json::object();
    j["method"] = name();
    j["feature_dim"] = options_.feature_dim();
    j["projection_head"] = detail::describe_head(projector_->options);
    j["prediction_head"] = detail::describe_head(predictor_->options);
    j["loss"] = "negative cosine with stop-gradient, symmetrised";
    return j;
  }

 private:
  SimSiamOptions options_;
  Encoder encoder_{nullptr};
  ProjectionHead projector_{nullptr};
  PredictionHead predictor_{nullptr};
};

} // namespace medcl
