#pragma once

/// \file
/// MoCo v2 (momentum encoder + queue) and MoCo v3 (momentum encoder, predictor, symmetric in-batch
/// InfoNCE).

#include <medcl/dist/gather_keys.h>
#include <medcl/losses/info_nce.h>
#include <medcl/memory/memory_queue.h>
#include <medcl/methods/method.h>
#include <medcl/nn/momentum.h>

#include <vector>

namespace medcl {

/// Which MoCo.
enum class MoCoVersion {
  /// He et al. 2020 / Chen et al. 2020 (https://arxiv.org/abs/2003.04297): queue of keys.
  V2,
  /// Chen, Xie & He 2021 (https://arxiv.org/abs/2104.02057): predictor, symmetric, in-batch keys.
  V3
};

/// Options of `MoCo`. `MoCoOptions::v2(d)` and `MoCoOptions::v3(d)` give each paper's defaults.
struct MoCoOptions {
  explicit MoCoOptions(int64_t feature_dim) : feature_dim_(feature_dim) {}
  /// MoCo v2 defaults: 2-layer projection to 128 without BN, queue 65536, tau 0.2, m 0.999.
  static MoCoOptions v2(int64_t feature_dim) {
    return MoCoOptions(feature_dim);
  }
  /// MoCo v3 defaults: 3-layer BN projection to 256, 2-layer predictor (hidden 4096), tau 0.2,
  /// symmetric, no queue, momentum cosine from 0.99 to 1.
  static MoCoOptions v3(int64_t feature_dim) {
    return MoCoOptions(feature_dim)
        .version(MoCoVersion::V3)
        .hidden_dim(4096)
        .projection_dim(256)
        .projection_layers(3)
        .projection_batch_norm(true)
        .queue_size(0)
        .symmetric(true)
        .momentum_start(0.99)
        .momentum_end(1.0);
  }
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, feature_dim);
  /// v2 or v3. Default: MoCoVersion::V2
  TORCH_ARG(MoCoVersion, version) = MoCoVersion::V2;
  /// Width of the heads' hidden layers. Default: 2048
  TORCH_ARG(int64_t, hidden_dim) = 2048;
  /// Size of the projection. Default: 128
  TORCH_ARG(int64_t, projection_dim) = 128;
  /// Linear layers of the projection head. Default: 2
  TORCH_ARG(int64_t, projection_layers) = 2;
  /// Batch normalisation in the projection head. Default: false
  TORCH_ARG(bool, projection_batch_norm) = false;
  /// Entries of the key queue (0: in-batch keys only; v2 needs > 0). Default: 65536
  TORCH_ARG(int64_t, queue_size) = 65536;
  /// Symmetrise the loss over the two views. Default: false
  TORCH_ARG(bool, symmetric) = false;
  /// EMA momentum at step 0. Default: 0.999
  TORCH_ARG(double, momentum_start) = 0.999;
  /// EMA momentum at the last step (cosine schedule between them). Default: 0.999
  TORCH_ARG(double, momentum_end) = 0.999;
  /// The InfoNCE loss, its weighting and its pairing strategy. Default: temperature 0.2
  TORCH_ARG(InfoNCELossOptions, loss) = InfoNCELossOptions().temperature(0.2);
};

/// MoCo: a query encoder f_q (+ projection, + predictor in v3) trained by InfoNCE against keys
/// from a momentum copy f_k, \f$\theta_k \leftarrow m\theta_k + (1-m)\theta_q\f$ after every
/// optimiser step, with m on a cosine schedule from `momentum_start` to `momentum_end`:
/// \f[ \mathcal{L} = -\frac1B\sum_i \log \frac{e^{q_i\cdot k_i/\tau}}
///     {e^{q_i\cdot k_i/\tau} + \sum_{n} e^{q_i\cdot k_n/\tau}} \f]
/// v2: negatives are the queue (the keys of earlier batches; the queue keeps each key's sample keys
/// so that a pairing strategy can exclude, say, the same patient's earlier records); until the
/// first keys are enqueued the other keys of the batch serve. v3: negatives are the batch's other
/// keys, the loss is symmetric and multiplied by 2τ as in the paper. Keys are enqueued after the
/// optimiser step (the loss's backward may still read the queue).
///
/// Across the ranks of a process group (`set_process_group`), the InfoNCE loss gets the group
/// (this rank's queries against the queue, or in-batch against every rank's keys; this rank's
/// share of the loss), and every rank enqueues every rank's keys and sample keys in rank order,
/// so that all ranks hold the same queue, the one-process queue of the concatenated batches. The
/// momentum encoder is an EMA of the query encoder, identical on every rank as long as the
/// parameters are. Batch normalisation in the heads (v3) is synchronised over the group, in the
/// momentum copies too (see MethodBase::set_process_group).
///
/// Shape: batch.views 2 × [B, ...]; the encoder maps [B, ...] -> [B, feature_dim].
template <class Encoder>
class MoCo : public MethodBase {
 public:
  MoCo(Encoder encoder, MoCoOptions options) : options_(std::move(options)) {
    const auto& o = options_;
    detail::check_momentum("MoCo", o.momentum_start(), o.momentum_end());
    momentum_schedule_ = MomentumSchedule(o.momentum_start(), o.momentum_end());
    TORCH_CHECK(o.queue_size() >= 0, "MoCo: queue_size must be >= 0, got ", o.queue_size());
    TORCH_CHECK(
        o.version() == MoCoVersion::V3 || o.queue_size() > 0,
        "MoCo: v2 needs a queue (queue_size > 0), got ",
        o.queue_size());
    auto head = ProjectionHeadOptions(o.feature_dim(), o.hidden_dim(), o.projection_dim())
                    .num_layers(o.projection_layers())
                    .batch_norm(o.projection_batch_norm())
                    .last_batch_norm(o.version() == MoCoVersion::V3);
    encoder_ = register_module("encoder", std::move(encoder));
    projector_ = register_module("projector", ProjectionHead(head));
    if (o.version() == MoCoVersion::V3) {
      predictor_ = register_module(
          "predictor",
          PredictionHead(
              ProjectionHeadOptions(o.projection_dim(), o.hidden_dim(), o.projection_dim())
                  .last_batch_norm(true)));
    }
    momentum_encoder_ = register_module("momentum_encoder", detail::deep_copy(encoder_, "MoCo"));
    momentum_projector_ =
        register_module("momentum_projector", detail::deep_copy(projector_, "MoCo"));
    detail::freeze(*momentum_encoder_);
    detail::freeze(*momentum_projector_);
    loss_ = register_module("loss", InfoNCELoss(o.loss()));
    if (o.queue_size() > 0) {
      queue_ = std::make_unique<MemoryQueue>(o.queue_size(), o.projection_dim());
    }
  }

  std::string name() const override {
    return options_.version() == MoCoVersion::V2 ? "MoCo v2" : "MoCo v3";
  }

  /// Also gives the group to the InfoNCE loss and to the queue, which then enqueues every rank's
  /// keys (see MethodBase::set_process_group).
  void set_process_group(dist::ProcessGroup group) override {
    options_.loss().group(group);
    loss_->options.group(group);
    MethodBase::set_process_group(std::move(group));
  }

  at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) override {
    (void)ctx;
    detail::check_batch(name().c_str(), batch, 2, 2);
    detail::check_no_local_views(name().c_str(), batch);
    const int64_t b = batch.size();
    auto x = at::cat({batch.views[0], batch.views[1]}, 0);
    auto q = projector_->forward(encoder_->forward(x));
    if (!predictor_.is_empty()) {
      q = predictor_->forward(q);
    }
    at::Tensor k;
    {
      c10::NoGradGuard no_grad;
      k = momentum_projector_->forward(momentum_encoder_->forward(x)).detach();
    }
    auto q0 = q.slice(0, 0, b), q1 = q.slice(0, b, 2 * b);
    auto k0 = k.slice(0, 0, b), k1 = k.slice(0, b, 2 * b);
    const bool keyed = batch.keys.size() > 0 || options_.loss().pairing().has_value();
    if (queue_ && queue_->device() != q.device()) {
      queue_->to(q.device());
    }
    auto one = [&](const at::Tensor& query, const at::Tensor& key) {
      const bool use_queue = queue_ && queue_->filled() > 0;
      at::Tensor negatives = use_queue ? queue_->keys() : at::Tensor();
      // The queue keeps float32 keys; under autocast the query is bfloat16 or half, and the
      // similarities are taken in the query's precision, as autocast would for the product.
      if (negatives.defined() && negatives.scalar_type() != query.scalar_type()) {
        negatives = negatives.to(query.scalar_type());
      }
      if (keyed) {
        return loss_->forward_keyed(
            query, key, negatives, batch.keys, use_queue ? queue_->sample_keys() : SampleKeys());
      }
      return loss_->forward(query, key, negatives);
    };
    at::Tensor loss;
    if (options_.symmetric()) {
      loss = 0.5 * (one(q0, k1) + one(q1, k0));
    } else {
      loss = one(q0, k1);
    }
    if (options_.version() == MoCoVersion::V3) {
      loss = loss * (2.0 * options_.loss().temperature());
    }
    pending_keys_ =
        options_.symmetric() ? std::vector<at::Tensor>{k1, k0} : std::vector<at::Tensor>{k1};
    pending_sample_keys_ = batch.keys;
    return loss;
  }

  void after_optimizer_step(const StepContext& ctx) override {
    momentum_schedule_.advance(ctx.step, ctx.total_steps);
    momentum_schedule_.update(*encoder_, *momentum_encoder_);
    momentum_schedule_.update(*projector_, *momentum_projector_);
    if (queue_ && !pending_keys_.empty()) {
      enqueue_pending();
    }
    pending_keys_.clear();
    pending_sample_keys_ = SampleKeys();
  }

  at::Tensor backbone_features(const at::Tensor& x) override {
    return encoder_->forward(x);
  }

  /// The momentum of the last EMA update and the queue's filling: the same on every rank.
  std::map<std::string, double> step_statistics() const override {
    std::map<std::string, double> s{{"momentum", momentum_schedule_.current()}};
    if (queue_) {
      s["queue_filled"] = static_cast<double>(queue_->filled());
    }
    return s;
  }

  std::map<std::string, at::Tensor> extra_state() const override {
    std::map<std::string, at::Tensor> out;
    if (queue_) {
      for (const auto& kv : queue_->state()) {
        out["queue." + kv.first] = kv.second;
      }
    }
    return out;
  }

  void load_extra_state(const std::map<std::string, at::Tensor>& state) override {
    if (!queue_) {
      return;
    }
    std::map<std::string, at::Tensor> q;
    for (const auto& kv : state) {
      if (kv.first.rfind("queue.", 0) == 0) {
        q[kv.first.substr(6)] = kv.second;
      }
    }
    queue_->load_state(q);
  }

  Json describe() const override {
    const auto& o = options_;
    auto j = Json::object();
    j["method"] = name();
    j["feature_dim"] = o.feature_dim();
    j["projection_head"] = detail::describe_head(projector_->options);
    if (!predictor_.is_empty()) {
      j["prediction_head"] = detail::describe_head(predictor_->options);
    }
    j["queue_size"] = o.queue_size();
    j["symmetric"] = o.symmetric();
    j["momentum_schedule"] = momentum_schedule_.describe();
    auto l = detail::describe_contrastive("InfoNCE", o.loss());
    l["temperature"] = o.loss().temperature();
    j["loss"] = l;
    return j;
  }

  /// The momentum used by the last EMA update.
  double momentum() const {
    return momentum_schedule_.current();
  }
  const MemoryQueue* queue() const {
    return queue_.get();
  }

 private:
  // Enqueues the last batch's keys (k1, then k0 when symmetric) with their sample keys; across
  // ranks, every rank's keys of each view in rank order, so that every rank enqueues the rows the
  // one process would enqueue for the concatenated batch: [k1 of every rank; k0 of every rank].
  void enqueue_pending() {
    std::vector<at::Tensor> keys;
    SampleKeys sample_keys = pending_sample_keys_;
    if (group_.size() > 1) {
      for (const auto& k : pending_keys_) {
        keys.push_back(group_.all_gather(k));
      }
      sample_keys = dist::gather_keys(sample_keys, group_);
    } else {
      keys = pending_keys_;
    }
    const auto views = static_cast<int64_t>(keys.size());
    auto repeat = [views](const at::Tensor& t) { return t.repeat({views}); };
    queue_->enqueue(
        views == 1 ? keys.front() : at::cat(keys, 0),
        views == 1 ? sample_keys : sample_keys.map(repeat));
  }

  MoCoOptions options_;
  Encoder encoder_{nullptr};
  ProjectionHead projector_{nullptr};
  PredictionHead predictor_{nullptr};
  Encoder momentum_encoder_{nullptr};
  ProjectionHead momentum_projector_{nullptr};
  InfoNCELoss loss_{nullptr};
  std::unique_ptr<MemoryQueue> queue_;
  std::vector<at::Tensor> pending_keys_;
  SampleKeys pending_sample_keys_;
  MomentumSchedule momentum_schedule_;
};

} // namespace medcl
