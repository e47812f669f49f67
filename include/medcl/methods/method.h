#pragma once

/// \file
/// The interface every self-supervised method implements: one training step (batch in, loss out)
/// and the updates that follow an optimiser step (EMA teachers, queues, prototypes, centres).

#include <medcl/core/json.h>
#include <medcl/dist/process_group.h>
#include <medcl/dist/sync_batch_norm.h>
#include <medcl/eval/embed.h>
#include <medcl/nn/heads.h>
#include <medcl/pairing/sample_keys.h>

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace medcl {

/// One training batch as a method sees it: V augmented views of B samples (the global views; the
/// first two are the ones that two-view methods use), optional small local views (multi-crop, for
/// DINO and SwAV), an optional second modality (CLIP: a report, region names, tokens) and the
/// per-sample keys the pairing strategy reads.
///
/// Example:
///   medcl::MethodBatch batch;
///   batch.views = {view0, view1};           // each [B, ...]
///   batch.keys.patient = patient_ids;        // [B] int64
struct MethodBatch {
  /// Global views, each [B, ...].
  std::vector<at::Tensor> views;
  /// Local (small) views for multi-crop, each [B, ...]; may be empty.
  std::vector<at::Tensor> local_views;
  /// Second modality for CLIP, [B, ...]; undefined otherwise.
  at::Tensor paired;
  /// Per-sample keys (size B) for pairing strategies and supervised labels.
  SampleKeys keys;

  /// Number of samples B.
  int64_t size() const {
    if (!views.empty() && views.front().defined()) {
      return views.front().size(0);
    }
    return paired.defined() ? paired.size(0) : 0;
  }
};

/// Where training is: the optimiser step about to be taken (0-based), the planned number of
/// steps, and the epoch (for schedules given in epochs, as DINO's teacher-temperature warm-up).
struct StepContext {
  int64_t step = 0;
  int64_t total_steps = 1;
  int64_t epoch = 0;
};

/// Base of SimCLR, MoCo, BYOL, SimSiam, DINO, SwAV, SupCon and CLIP. A method is a module that
/// owns the user's encoder, its heads and any momentum copies, queues or centres (as submodules
/// and buffers, so that a checkpoint of the module holds all of them).
///
/// The trainer calls, per step: `training_loss` (forward), backward, `before_optimizer_step`
/// (gradient changes such as frozen prototypes), the optimiser, then `after_optimizer_step`
/// (EMA updates, enqueueing). For evaluation, `embed(x)` gives the backbone's features in eval mode
/// without gradient; a method implements `backbone_features(x)`, which `embed` runs.
class MethodBase : public torch::nn::Module {
 public:
  /// "SimCLR", "MoCo v2", ... (also the kind recorded in checkpoints: "medcl." + name()).
  virtual std::string name() const = 0;
  /// The loss of one batch, with gradient to the trainable parameters.
  virtual at::Tensor training_loss(const MethodBatch& batch, const StepContext& ctx) = 0;
  /// Called after backward, before the optimiser step. Default: nothing.
  virtual void before_optimizer_step(const StepContext& ctx) {
    (void)ctx;
  }
  /// Called after the optimiser step. Default: nothing.
  virtual void after_optimizer_step(const StepContext& ctx) {
    (void)ctx;
  }
  /// Backbone features of the encoder for downstream evaluation (no head), [B, D], the safe way:
  /// the method is put in eval mode (batch normalisation uses its running statistics, which do not
  /// move; dropout is off) and run under `NoGradGuard` (the result does not require grad), and the
  /// training mode of the method and of each of its submodules is restored afterwards, also when an
  /// error is thrown. Calling it between training steps does not change training. For whole data
  /// sets in chunks, gathered on the CPU: `medcl::eval::extract_embeddings(method, x)`.
  ///
  /// Example:
  ///   trainer.fit(next_batch);
  ///   auto z = method.embed(x_test); // [N, D], eval mode, no gradient; method still training
  at::Tensor embed(const at::Tensor& x) {
    eval::detail::EvalModeGuard eval_mode(*this);
    c10::NoGradGuard no_grad;
    return backbone_features(x);
  }
  /// What `embed` runs, and what a method implements: the backbone's features of `x` (no head),
  /// [B, D], as the method is now, in its current training mode and with gradient when grad mode is
  /// on (for fine-tuning or an objective of one's own). For evaluation use `embed`.
  virtual at::Tensor backbone_features(const at::Tensor& x) = 0;
  /// Every option of the method, its heads and its loss, for reports.
  virtual Json describe() const = 0;
  /// Scalars of the last step worth logging (EMA momentum, temperature, ...). Default: none.
  virtual std::map<std::string, double> step_statistics() const {
    return {};
  }

  /// State that is neither a parameter nor a buffer (queues), for checkpoints. Default: none.
  virtual std::map<std::string, at::Tensor> extra_state() const {
    return {};
  }
  /// Restores what `extra_state` returned. Default: nothing to restore.
  virtual void load_extra_state(const std::map<std::string, at::Tensor>& state) {
    (void)state;
  }

  /// Data-parallel training: the process group whose ranks' batches form one global batch (the
  /// ranks' batches concatenated in rank order). The method passes it to its loss, which then
  /// returns this rank's share of the global loss (the shares summed over the ranks equal the
  /// one-process loss on the concatenated batch), and uses it for its own collectives (MoCo's and
  /// SwAV's queues gather every rank's keys, DINO's centre averages every rank's teacher outputs,
  /// SwAV's Sinkhorn-Knopp normalises over every rank's samples). The parameters' gradients are
  /// then summed over the ranks (the trainer's job). Every rank must call it with its own handle
  /// of the same group before the first step; momentum copies stay identical on every rank as
  /// long as the parameters are. A method overrides it to reach its loss, calling this one too.
  ///
  /// Batch normalisation: with a group of more than one rank (and `sync_batch_norm()`, the
  /// default), every `torch::nn::BatchNorm1d` of the method (in its heads, encoder and momentum
  /// copies) becomes a `dist::SyncBatchNorm1d` over the group that keeps its tensors and names
  /// (`dist::convert_sync_batch_norm`, child by child), and existing `SyncBatchNorm1d` layers are
  /// set to the group, so that training-mode statistics are those of the global batch, as in one
  /// process. A direct child whose BatchNorm1d cannot be replaced (a typed member outside a
  /// `torch::nn::Sequential`) keeps per-rank statistics, with one warning naming it. The
  /// one-process group changes nothing. See docs/distributed.md. Default: one process
  ///
  /// Example:
  ///   auto group = medcl::dist::init_from_env();
  ///   method.set_process_group(group);   // before the first training_loss, on every rank
  virtual void set_process_group(dist::ProcessGroup group) {
    group_ = std::move(group);
    if (group_.size() > 1 && sync_batch_norm_) {
      synchronise_batch_norm();
    }
  }
  /// Whether `set_process_group` synchronises the method's batch normalisation over the group
  /// (see there). `sync_batch_norm(false)` before `set_process_group` (or before building the
  /// trainer, which calls it) keeps per-rank batch statistics, as PyTorch's DDP without
  /// SyncBatchNorm. Layers converted already stay converted. Default: true
  MethodBase& sync_batch_norm(bool on) {
    sync_batch_norm_ = on;
    return *this;
  }
  bool sync_batch_norm() const {
    return sync_batch_norm_;
  }
  /// The process group set by `set_process_group` (the one-process group by default).
  const dist::ProcessGroup& process_group() const {
    return group_;
  }

  /// The parameters the optimiser updates (momentum copies and frozen parameters excluded).
  std::vector<at::Tensor> trainable_parameters() const {
    std::vector<at::Tensor> out;
    for (const auto& p : parameters(true)) {
      if (p.requires_grad()) {
        out.push_back(p);
      }
    }
    return out;
  }

 protected:
  /// The ranks that share a global batch (set_process_group); one process by default.
  dist::ProcessGroup group_;

 private:
  // Converts each direct child's BatchNorm1d layers to SyncBatchNorm1d over group_ (a child at a
  // time: one that cannot be converted keeps its layers, with a warning) and points every
  // SyncBatchNorm1d of the method at group_.
  void synchronise_batch_norm() {
    for (const auto& child : named_children()) {
      try {
        dist::convert_sync_batch_norm(*child.value(), group_);
      } catch (const c10::Error& e) {
        TORCH_WARN(
            name(),
            ": the batch normalisation of '",
            child.key(),
            "' stays per rank (each rank normalises with its own rows' statistics, as PyTorch's "
            "DDP without SyncBatchNorm), because it cannot be converted to SyncBatchNorm1d: ",
            e.what_without_backtrace());
      }
    }
    for (const auto& m : modules(/*include_self=*/false)) {
      if (auto* sync = dynamic_cast<dist::SyncBatchNorm1dImpl*>(m.get())) {
        sync->options.process_group(group_);
      }
    }
  }

  bool sync_batch_norm_ = true;
};

namespace detail {

/// A deep copy of a module held by `Holder` (a TORCH_MODULE type); the module must derive from
/// torch::nn::Cloneable.
template <class Holder>
Holder deep_copy(const Holder& module, const char* who) {
  TORCH_CHECK(!module.is_empty(), who, ": the encoder is empty (a null module holder)");
  auto copy = std::dynamic_pointer_cast<typename Holder::ContainedType>(module->clone());
  TORCH_CHECK(copy != nullptr, who, ": clone() of the encoder returned another type");
  return Holder(copy);
}

/// Turns off gradients of every parameter of `m` (momentum copies are updated by EMA only).
inline void freeze(torch::nn::Module& m) {
  for (auto& p : m.parameters(true)) {
    p.set_requires_grad(false);
  }
}

/// Checks that the batch has at least `min_views` global views of equal batch size, on one device.
inline void
check_batch(const char* who, const MethodBatch& batch, size_t min_views, size_t max_views) {
  TORCH_CHECK(
      batch.views.size() >= min_views && batch.views.size() <= max_views,
      who,
      ": expected ",
      min_views == max_views ? std::to_string(min_views)
                             : std::to_string(min_views) + " to " + std::to_string(max_views),
      " global view(s), got ",
      batch.views.size());
  for (size_t i = 0; i < batch.views.size(); ++i) {
    const auto& v = batch.views[i];
    TORCH_CHECK(v.defined() && v.dim() >= 1, who, ": view ", i, " is undefined or 0-dim");
    TORCH_CHECK(v.size(0) > 0, who, ": view ", i, " is empty");
    TORCH_CHECK(
        v.size(0) == batch.views[0].size(0),
        who,
        ": every view must hold the same samples; view 0 has ",
        batch.views[0].size(0),
        ", view ",
        i,
        " has ",
        v.size(0));
  }
  for (size_t i = 0; i < batch.local_views.size(); ++i) {
    const auto& v = batch.local_views[i];
    TORCH_CHECK(
        v.defined() && v.dim() >= 1 && v.size(0) == batch.views[0].size(0),
        who,
        ": local view ",
        i,
        " must hold the ",
        batch.views[0].size(0),
        " samples of the global views");
  }
}

/// Requires an EMA momentum schedule inside [0, 1] (MoCo, BYOL, DINO).
inline void check_momentum(const char* who, double start, double end) {
  TORCH_CHECK(
      start >= 0 && start <= 1 && end >= 0 && end <= 1,
      who,
      ": momentum_start and momentum_end must be in [0, 1], got ",
      start,
      " and ",
      end);
}

/// Refuses local views for methods that do not use them (they would be silently ignored).
inline void check_no_local_views(const char* who, const MethodBatch& batch) {
  TORCH_CHECK(
      batch.local_views.empty(),
      who,
      ": does not use local views (multi-crop); got ",
      batch.local_views.size(),
      " (use DINO or SwAV, or leave local_views empty)");
}

/// A head's options for reports.
inline Json describe_head(const ProjectionHeadOptions& o) {
  auto j = Json::object();
  j["input_dim"] = o.input_dim();
  j["hidden_dim"] = o.hidden_dim();
  j["output_dim"] = o.output_dim();
  j["num_layers"] = o.num_layers();
  j["batch_norm"] = o.batch_norm();
  j["last_batch_norm"] = o.last_batch_norm();
  return j;
}

/// The options shared by the contrastive losses, for reports: "pairing" is the pairing strategy's
/// description, or null when the loss has none.
template <class LossOptions>
Json describe_contrastive(const char* loss, const LossOptions& o) {
  auto j = Json::object();
  j["loss"] = loss;
  j["weighting"] = o.weighting().describe();
  j["pairing"] = o.pairing().has_value() ? Json(o.pairing()->describe()) : Json();
  j["eps"] = o.eps();
  return j;
}

} // namespace detail

namespace eval {

/// Embeddings of `inputs` by a self-supervised method (`medcl::MethodBase`: SimCLR, MoCo, ...), the
/// method's overload of `extract_embeddings` (`medcl/eval/embed.h`): its backbone features
/// (`backbone_features`, what `method.embed` returns; DINO's teacher) in chunks of `batch_size`, in
/// eval mode and without gradient, gathered as float32 on `device`. The training mode of the method
/// and of each submodule is restored afterwards, also when an error is thrown, so this can run
/// between training steps.
///
/// Shape: inputs [N, ...] -> [N, D] float32.
///
/// Example:
///   trainer.fit(next_batch);
///   auto z = medcl::eval::extract_embeddings(method, x_test);
///   ev.evaluate("SimCLR", z, report);
inline at::Tensor extract_embeddings(
    MethodBase& method,
    const at::Tensor& inputs,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  detail::EvalModeGuard guard(method);
  return extract_embeddings(
      [&](const at::Tensor& x) -> at::Tensor { return method.backbone_features(x); },
      inputs,
      batch_size,
      device);
}

} // namespace eval

} // namespace medcl
