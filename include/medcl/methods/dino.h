#pragma once

/// \file
/// DINO: student and EMA teacher with DINO heads, centring, teacher-temperature warm-up,
/// multi-crop.

#include <medcl/losses/dino.h>
#include <medcl/methods/method.h>
#include <medcl/nn/momentum.h>

namespace medcl {

/// Options of `DINO` (defaults of the paper, except the output size K, which medical data sets
/// rarely need at 65536).
struct DINOOptions {
  explicit DINOOptions(int64_t feature_dim) : feature_dim_(feature_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, feature_dim);
  /// Output size K of the DINO head. Default: 4096
  TORCH_ARG(int64_t, output_dim) = 4096;
  /// Width of the head's hidden layers. Default: 2048
  TORCH_ARG(int64_t, hidden_dim) = 2048;
  /// Bottleneck before the weight-normalised layer. Default: 256
  TORCH_ARG(int64_t, bottleneck_dim) = 256;
  /// Keep the last layer's weight norm fixed to 1. Default: true
  TORCH_ARG(bool, norm_last_layer) = true;
  /// Optimiser steps during which the last layer's gradient is cancelled. Default: 0
  TORCH_ARG(int64_t, freeze_last_layer_steps) = 0;
  /// Teacher temperature at epoch 0. Default: 0.04
  TORCH_ARG(double, warmup_teacher_temperature) = 0.04;
  /// Teacher temperature after the warm-up. Default: 0.04
  TORCH_ARG(double, teacher_temperature) = 0.04;
  /// Epochs of the linear teacher-temperature warm-up. Default: 0
  TORCH_ARG(int64_t, warmup_teacher_temperature_epochs) = 0;
  /// Student temperature. Default: 0.1
  TORCH_ARG(double, student_temperature) = 0.1;
  /// Momentum of the centre. Default: 0.9
  TORCH_ARG(double, center_momentum) = 0.9;
  /// Teacher EMA momentum at step 0. Default: 0.996
  TORCH_ARG(double, momentum_start) = 0.996;
  /// Teacher EMA momentum at the last step (cosine schedule). Default: 1.0
  TORCH_ARG(double, momentum_end) = 1.0;
};

/// DINO (Caron et al. 2021, https://arxiv.org/abs/2104.14294): the student (encoder + DINO head)
/// sees every view, global and local; the teacher (an EMA of the student) sees the global views
/// only; the student's softmax at temperature τ_s is trained to match the teacher's centred and
/// sharpened softmax at τ_t over every pair of different views (see `functional::dino_loss`). The
/// centre is an EMA of the teacher's outputs; τ_t warms up linearly over the first epochs; the
/// weight-normalised last layer may be frozen for the first steps.
///
/// Shape: batch.views G × [B, ...] (G >= 1, G >= 2 without local views); batch.local_views L × [B,
/// ...].
template <class Encoder>
class DINO : public MethodBase {
 public:
  DINO(Encoder encoder, DINOOptions options) : options_(std::move(options)) {
    const auto& o = options_;
    detail::check_momentum("DINO", o.momentum_start(), o.momentum_end());
    momentum_schedule_ = MomentumSchedule(o.momentum_start(), o.momentum_end());
    TORCH_CHECK(
        o.freeze_last_layer_steps() >= 0,
        "DINO: freeze_last_layer_steps must be >= 0, got ",
        o.freeze_last_layer_steps());
    auto head = DINOHeadOptions(o.feature_dim(), o.output_dim())
                    .hidden_dim(o.hidden_dim())
                    .bottleneck_dim(o.bottleneck_dim())
                    .norm_last_layer(o.norm_last_layer());
    encoder_ = register_module("encoder", std::move(encoder));
    head_ = register_module("head", DINOHead(head));
    teacher_encoder_ = register_module("teacher_encoder", detail::deep_copy(encoder_, "DINO"));
    teacher_head_ = register_module("teacher_head", detail::deep_copy(head_, "DINO"));
    detail::freeze(*teacher_encoder_);
    detail::freeze(*teacher_head_);
    loss_ = register_module(
        "loss",
        DINOLoss(DINOLossOptions(o.output_dim())
                     .warmup_teacher_temperature(o.warmup_teacher_temperature())
                     .teacher_temperature(o.teacher_temperature())
                     .warmup_teacher_temperature_epochs(o.warmup_teacher_temperature_epochs())
                     .student_temperature(o.student_temperature())
                     .center_momentum(o.center_momentum())));
  }

  std::string name() const override {
    return "DINO";
  }

  /// Also gives the group to the DINO loss: the loss is this rank's share and the centre moves
  /// towards the mean of every rank's teacher outputs, so it stays the same on every rank (see
  /// MethodBase::set_process_group). The teacher is an EMA of the student, identical on every
  /// rank as long as the student's parameters are.
  void set_process_group(dist::ProcessGroup group) override {
    loss_->options.group(group);
    MethodBase::set_process_group(std::move(group));
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    detail::check_batch("DINO", batch, 1, 64);
    const int64_t b = batch.size();
    const auto g = static_cast<int64_t>(batch.views.size());
    auto student_global = head_->forward(encoder_->forward(at::cat(batch.views, 0)));
    std::vector<at::Tensor> student = student_global.split(b, 0);
    if (!batch.local_views.empty()) {
      // Local crops are smaller than global ones: one encoder call for all of them.
      auto local = head_->forward(encoder_->forward(at::cat(batch.local_views, 0)));
      for (auto& t : local.split(b, 0)) {
        student.push_back(t);
      }
    }
    std::vector<at::Tensor> teacher;
    {
      c10::NoGradGuard no_grad;
      auto t = teacher_head_->forward(teacher_encoder_->forward(at::cat(batch.views, 0))).detach();
      teacher = t.split(b, 0);
    }
    TORCH_INTERNAL_ASSERT(static_cast<int64_t>(teacher.size()) == g);
    teacher_temperature_ = loss_->teacher_temperature(ctx.epoch);
    return loss_->forward(student, teacher, ctx.epoch);
  }

  void before_optimizer_step(const StepContext& ctx) override {
    if (ctx.step < options_.freeze_last_layer_steps()) {
      for (auto& p : head_->last_layer_parameters()) {
        if (p.grad().defined()) {
          p.mutable_grad() = at::Tensor();
        }
      }
    }
  }

  void after_optimizer_step(const StepContext& ctx) override {
    momentum_schedule_.advance(ctx.step, ctx.total_steps);
    momentum_schedule_.update(*encoder_, *teacher_encoder_);
    momentum_schedule_.update(*head_, *teacher_head_);
  }

  /// The teacher's backbone features are DINO's usual evaluation embedding (what `embed` returns).
  at::Tensor backbone_features(const at::Tensor& x) override {
    return teacher_encoder_->forward(x);
  }

  /// The momentum and teacher temperature of the last step: the same on every rank.
  std::map<std::string, double> step_statistics() const override {
    return {
        {"momentum", momentum_schedule_.current()}, {"teacher_temperature", teacher_temperature_}};
  }

  Json describe() const override {
    const auto& o = options_;
    auto j = Json::object();
    j["method"] = name();
    j["feature_dim"] = o.feature_dim();
    auto h = Json::object();
    h["output_dim"] = o.output_dim();
    h["hidden_dim"] = o.hidden_dim();
    h["bottleneck_dim"] = o.bottleneck_dim();
    h["norm_last_layer"] = o.norm_last_layer();
    h["freeze_last_layer_steps"] = o.freeze_last_layer_steps();
    j["head"] = h;
    auto l = Json::object();
    l["loss"] = "DINO cross-entropy over pairs of different views";
    l["warmup_teacher_temperature"] = o.warmup_teacher_temperature();
    l["teacher_temperature"] = o.teacher_temperature();
    l["warmup_teacher_temperature_epochs"] = o.warmup_teacher_temperature_epochs();
    l["student_temperature"] = o.student_temperature();
    l["center_momentum"] = o.center_momentum();
    j["loss"] = l;
    j["momentum_schedule"] = momentum_schedule_.describe();
    j["embedding"] = "teacher backbone";
    return j;
  }

  Encoder encoder() const {
    return encoder_;
  }
  DINOHead head() const {
    return head_;
  }
  Encoder teacher_encoder() const {
    return teacher_encoder_;
  }
  DINOHead teacher_head() const {
    return teacher_head_;
  }
  DINOLoss loss() const {
    return loss_;
  }
  double momentum() const {
    return momentum_schedule_.current();
  }

 private:
  DINOOptions options_;
  Encoder encoder_{nullptr};
  DINOHead head_{nullptr};
  Encoder teacher_encoder_{nullptr};
  DINOHead teacher_head_{nullptr};
  DINOLoss loss_{nullptr};
  MomentumSchedule momentum_schedule_;
  double teacher_temperature_ = 0.0;
};

} // namespace medcl
