#pragma once

/// \file
/// SwAV: encoder + projection head + prototypes, Sinkhorn-Knopp codes, optional queue, multi-crop.

#include <medcl/losses/swav.h>
#include <medcl/memory/memory_queue.h>
#include <medcl/methods/method.h>

namespace medcl {

/// Options of `SwAV`.
struct SwAVOptions {
  explicit SwAVOptions(int64_t feature_dim) : feature_dim_(feature_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, feature_dim);
  /// Width of the projection head's hidden layer. Default: 2048
  TORCH_ARG(int64_t, hidden_dim) = 2048;
  /// Size of the projection. Default: 128
  TORCH_ARG(int64_t, projection_dim) = 128;
  /// Number of prototypes K. Default: 3000
  TORCH_ARG(int64_t, num_prototypes) = 3000;
  /// Entries of the projection queue per high-resolution view (0: no queue). SwAV uses one when
  /// batches are small (B < 256) so that Sinkhorn sees enough samples. Default: 0
  TORCH_ARG(int64_t, queue_size) = 0;
  /// Optimiser step from which the queue's entries join the Sinkhorn input. Default: 0
  TORCH_ARG(int64_t, queue_start_step) = 0;
  /// Steps during which the prototypes get no update. Default: 0
  TORCH_ARG(int64_t, freeze_prototypes_steps) = 0;
  /// Temperature, Sinkhorn iterations and epsilon. Default: SwAVLossOptions()
  TORCH_ARG(SwAVLossOptions, loss) = {};
};

/// SwAV (Caron et al. 2020, https://arxiv.org/abs/2006.09882): the prototypes are renormalised to
/// unit length before every step; the codes q of each global view come from Sinkhorn-Knopp on its
/// prototype scores (with the queue's projections scored by the current prototypes appended once
/// the queue is in use) and every other view predicts them (see `functional::swav_loss`). The
/// prototypes' gradient is cancelled for the first `freeze_prototypes_steps` steps.
///
/// Across the ranks of a process group (`set_process_group`), Sinkhorn-Knopp normalises over
/// every rank's samples (the codes of this rank's rows are the one-process codes' rows), the loss
/// is this rank's share, and the queue enqueues every rank's projections in rank order, so that
/// every rank holds the same queue, the one-process queue of the concatenated batches. Batch
/// normalisation in the projection head is synchronised over the group (see
/// MethodBase::set_process_group).
///
/// Shape: batch.views H × [B, ...] (H >= 1); batch.local_views L × [B, ...]; H + L >= 2.
template <class Encoder>
class SwAV : public MethodBase {
 public:
  SwAV(Encoder encoder, SwAVOptions options) : options_(std::move(options)) {
    const auto& o = options_;
    TORCH_CHECK(o.queue_size() >= 0, "SwAV: queue_size must be >= 0, got ", o.queue_size());
    TORCH_CHECK(
        o.queue_start_step() >= 0,
        "SwAV: queue_start_step must be >= 0, got ",
        o.queue_start_step());
    TORCH_CHECK(
        o.freeze_prototypes_steps() >= 0,
        "SwAV: freeze_prototypes_steps must be >= 0, got ",
        o.freeze_prototypes_steps());
    encoder_ = register_module("encoder", std::move(encoder));
    projector_ = register_module(
        "projector",
        ProjectionHead(ProjectionHeadOptions(o.feature_dim(), o.hidden_dim(), o.projection_dim())));
    prototypes_ = register_module("prototypes", Prototypes(o.projection_dim(), o.num_prototypes()));
  }

  std::string name() const override {
    return "SwAV";
  }

  /// Also gives the group to the SwAV loss (Sinkhorn-Knopp over every rank's samples, this rank's
  /// share of the loss) and to the queue, which then enqueues every rank's projections (see
  /// MethodBase::set_process_group).
  void set_process_group(dist::ProcessGroup group) override {
    options_.loss().group(group);
    MethodBase::set_process_group(std::move(group));
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    detail::check_batch("SwAV", batch, 1, 64);
    const int64_t b = batch.size();
    const size_t h = batch.views.size();
    prototypes_->normalize();
    auto z = projector_->forward(encoder_->forward(at::cat(batch.views, 0)));
    z = z / z.norm(2, 1, true).clamp_min(1e-12);
    auto high = prototypes_->forward(z).split(b, 0);
    std::vector<at::Tensor> low;
    if (!batch.local_views.empty()) {
      auto zl = projector_->forward(encoder_->forward(at::cat(batch.local_views, 0)));
      low = prototypes_->forward(zl).split(b, 0);
    }
    if (options_.queue_size() > 0 && queues_.size() != h) {
      queues_.clear();
      for (size_t i = 0; i < h; ++i) {
        queues_.emplace_back(
            options_.queue_size(), options_.projection_dim(), z.options().dtype(at::kFloat));
      }
    }
    std::vector<at::Tensor> queue_scores;
    const bool use_queue = options_.queue_size() > 0 && ctx.step >= options_.queue_start_step() &&
        queues_.front().filled() > 0;
    if (use_queue) {
      c10::NoGradGuard no_grad;
      for (auto& q : queues_) {
        queue_scores.push_back(
            prototypes_->forward(q.keys().to(z.device()).to(z.scalar_type())).detach());
      }
    }
    pending_ = z.detach().split(b, 0);
    return functional::swav_loss(high, low, queue_scores, options_.loss());
  }

  void before_optimizer_step(const StepContext& ctx) override {
    if (ctx.step < options_.freeze_prototypes_steps() && prototypes_->weight.grad().defined()) {
      prototypes_->weight.mutable_grad() = at::Tensor();
    }
  }

  void after_optimizer_step(const StepContext& ctx) override {
    (void)ctx;
    if (!queues_.empty() && pending_.size() == queues_.size()) {
      for (size_t i = 0; i < queues_.size(); ++i) {
        if (queues_[i].device() != pending_[i].device()) {
          queues_[i].to(pending_[i].device());
        }
        // Every rank enqueues every rank's projections, in rank order: the queues stay the same
        // on every rank (Sinkhorn-Knopp counts the queue once).
        queues_[i].enqueue(group_.size() > 1 ? group_.all_gather(pending_[i]) : pending_[i]);
      }
    }
    pending_.clear();
  }

  at::Tensor backbone_features(const at::Tensor& x) override {
    return encoder_->forward(x);
  }

  /// The queue's filling: the same on every rank.
  std::map<std::string, double> step_statistics() const override {
    if (queues_.empty()) {
      return {};
    }
    return {{"queue_filled", static_cast<double>(queues_.front().filled())}};
  }

  std::map<std::string, at::Tensor> extra_state() const override {
    std::map<std::string, at::Tensor> out;
    for (size_t i = 0; i < queues_.size(); ++i) {
      for (const auto& kv : queues_[i].state()) {
        out["queue" + std::to_string(i) + "." + kv.first] = kv.second;
      }
    }
    return out;
  }

  void load_extra_state(const std::map<std::string, at::Tensor>& state) override {
    std::vector<std::map<std::string, at::Tensor>> per;
    for (const auto& kv : state) {
      if (kv.first.rfind("queue", 0) != 0) {
        continue;
      }
      const auto dot = kv.first.find('.');
      TORCH_CHECK(dot != std::string::npos, "SwAV::load_extra_state: bad entry '", kv.first, "'");
      const auto i = static_cast<size_t>(std::stoul(kv.first.substr(5, dot - 5)));
      if (per.size() <= i) {
        per.resize(i + 1);
      }
      per[i][kv.first.substr(dot + 1)] = kv.second;
    }
    queues_.clear();
    for (const auto& s : per) {
      queues_.emplace_back(options_.queue_size(), options_.projection_dim());
      queues_.back().load_state(s);
    }
  }

  Json describe() const override {
    const auto& o = options_;
    auto j = Json::object();
    j["method"] = name();
    j["feature_dim"] = o.feature_dim();
    j["projection_head"] = detail::describe_head(projector_->options);
    j["num_prototypes"] = o.num_prototypes();
    j["queue_size"] = o.queue_size();
    j["queue_start_step"] = o.queue_start_step();
    j["freeze_prototypes_steps"] = o.freeze_prototypes_steps();
    auto l = Json::object();
    l["loss"] = "SwAV swapped prediction of Sinkhorn-Knopp codes";
    l["temperature"] = o.loss().temperature();
    auto sinkhorn = Json::object();
    sinkhorn["iterations"] = o.loss().sinkhorn().iterations();
    sinkhorn["epsilon"] = o.loss().sinkhorn().epsilon();
    l["sinkhorn"] = sinkhorn;
    j["loss"] = l;
    return j;
  }

  Prototypes prototypes() const {
    return prototypes_;
  }

 private:
  SwAVOptions options_;
  Encoder encoder_{nullptr};
  ProjectionHead projector_{nullptr};
  Prototypes prototypes_{nullptr};
  std::vector<MemoryQueue> queues_;
  std::vector<at::Tensor> pending_;
};

} // namespace medcl
