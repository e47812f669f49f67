#pragma once

/// \file
/// The trainer: one optimiser over a method's trainable parameters, learning-rate and
/// weight-decay schedules, gradient clipping, mixed precision, checkpoints with exact resume,
/// seeds, progress, a JSON-lines log, and data-parallel training over a process group.

#include <medcl/core/json.h>
#include <medcl/dist/data_parallel.h>
#include <medcl/dist/process_group.h>
#include <medcl/methods/method.h>
#include <medcl/train/checkpoint.h>
#include <medcl/train/log.h>
#include <medcl/train/optim.h>
#include <medcl/train/progress.h>
#include <medcl/train/schedule.h>

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace medcl {
namespace train {

/// Arithmetic of the forward pass.
enum class Precision {
  /// float32 everywhere.
  Float32,
  /// Autocast to bfloat16 on the batch's device (CPU or CUDA); parameters, gradients and the
  /// losses' similarity accumulation stay float32. bfloat16 has float32's range, so no loss
  /// scaling is needed (LibTorch has no C++ GradScaler for float16).
  BFloat16
};

/// Options of `Trainer`.
///
/// Example:
///   auto opts = medcl::train::TrainerOptions(10000)
///                   .optimizer(medcl::train::OptimizerOptions().kind("lars").lr(0.3).weight_decay(1e-6))
///                   .warmup_steps(500)
///                   .log_path("run/train.jsonl")
///                   .checkpoint_path("run/last.ckpt")
///                   .checkpoint_every(1000);
struct TrainerOptions {
  explicit TrainerOptions(int64_t total_steps) : total_steps_(total_steps) {}
  /// Number of optimiser steps of the whole run. Required.
  TORCH_ARG(int64_t, total_steps);
  /// Steps per epoch (epoch-based schedules such as DINO's teacher temperature read
  /// step / steps_per_epoch); 0 keeps the epoch at 0. Default: 0
  TORCH_ARG(int64_t, steps_per_epoch) = 0;
  /// Optimiser kind and hyper-parameters; `lr` and `weight_decay` are the schedules' base values.
  /// Default: AdamW, lr 1e-3, weight decay 0.05
  TORCH_ARG(OptimizerOptions, optimizer) = {};
  /// Linear learning-rate warm-up from 0 over these steps. Default: 0
  TORCH_ARG(int64_t, warmup_steps) = 0;
  /// Learning rate at the last step (cosine from optimizer.lr). Default: 0
  TORCH_ARG(double, final_lr) = 0.0;
  /// Weight decay at the last step (cosine from optimizer.weight_decay; DINO: 0.04 -> 0.4).
  /// Default: none (constant)
  TORCH_ARG(std::optional<double>, final_weight_decay) = std::nullopt;
  /// Clip the global gradient norm to this (0: no clipping). Default: 0
  TORCH_ARG(double, clip_grad_norm) = 0.0;
  /// Arithmetic of the forward pass. Default: Precision::Float32
  TORCH_ARG(Precision, precision) = Precision::Float32;
  /// Seed of the default generators (CPU and CUDA), set when the trainer is built; none leaves
  /// them alone (seed them before building the model: see `seed_everything`). Default: none
  TORCH_ARG(std::optional<uint64_t>, seed) = std::nullopt;
  /// JSON-lines log of every step ("" for none). Default: ""
  TORCH_ARG(std::string, log_path) = "";
  /// Progress on stderr (a rewritten line on a terminal, plain lines otherwise). Default: true
  TORCH_ARG(bool, progress) = true;
  /// Plain progress lines every this many steps. Default: 50
  TORCH_ARG(int64_t, progress_every) = 50;
  /// Checkpoint file written every `checkpoint_every` steps and at the end ("" for none).
  /// Default: ""
  TORCH_ARG(std::string, checkpoint_path) = "";
  /// Steps between checkpoints (0: only at the end of `fit`). Default: 0
  TORCH_ARG(int64_t, checkpoint_every) = 0;
  /// Data-parallel training over the ranks of this group: every rank builds the same method and
  /// trainer and steps on its own share of the global batch. With more than one rank the method's
  /// parameters and buffers are broadcast from rank 0 when the trainer is built, the gradients
  /// are summed over ranks after each backward (`medcl::dist::GradientReducer`, before clipping),
  /// the logged loss and sample count are the global ones, the log and progress are rank 0's,
  /// and checkpoints are written by rank 0 (see `Trainer`). Default: the one-process group
  TORCH_ARG(dist::ProcessGroup, process_group) = {};
};

/// What one step did. With a process group of several ranks, `loss` and `samples` are the global
/// ones (summed over ranks: medcl's losses return each rank's share of the global loss), the
/// statistics are averaged over ranks, and `grad_norm` is the norm of the summed gradient (the
/// same on every rank); `seconds` is this rank's.
struct StepRecord {
  int64_t step = 0;
  double loss = 0.0;
  double lr = 0.0;
  double weight_decay = 0.0;
  /// Global gradient norm before clipping (only computed when clipping; else -1).
  double grad_norm = -1.0;
  int64_t samples = 0;
  double seconds = 0.0;
  std::map<std::string, double> statistics;
};

/// Seeds the default CPU and CUDA generators (model initialisation, dropout, torch::randperm...).
inline void seed_everything(uint64_t seed) {
  at::manual_seed(seed);
}

namespace detail {

// LibTorch 2.4 replaced the per-device autocast functions (is_cpu_enabled, set_autocast_gpu_dtype,
// ...) with ones that take the device type, and deprecated the old ones; these two hide that.

/// Whether autocast is on for `device` (kCPU or kCUDA), and with which dtype.
inline std::pair<bool, at::ScalarType> autocast_state(at::DeviceType device) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return {at::autocast::is_autocast_enabled(device), at::autocast::get_autocast_dtype(device)};
#else
  if (device == at::kCPU) {
    return {at::autocast::is_cpu_enabled(), at::autocast::get_autocast_cpu_dtype()};
  }
  return {at::autocast::is_enabled(), at::autocast::get_autocast_gpu_dtype()};
#endif
}

/// Sets autocast on or off for `device` (kCPU or kCUDA), with `dtype`.
inline void set_autocast_state(at::DeviceType device, bool enabled, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(device, dtype);
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == at::kCPU) {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  } else {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  }
#endif
}

/// Turns autocast on for one device type while alive, restoring the previous state.
class AutocastGuard {
 public:
  AutocastGuard(at::DeviceType device, bool enabled) : device_(device), active_(enabled) {
    if (!active_) {
      return;
    }
    TORCH_CHECK(
        device == at::kCPU || device == at::kCUDA,
        "Trainer: bfloat16 autocast is available on CPU and CUDA, got device type ",
        device);
    std::tie(was_enabled_, old_dtype_) = autocast_state(device_);
    set_autocast_state(device_, true, at::kBFloat16);
  }
  ~AutocastGuard() {
    if (!active_) {
      return;
    }
    set_autocast_state(device_, was_enabled_, old_dtype_);
    // Casted weights are cached while autocast is on; drop them so the next step sees updates.
    at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  at::DeviceType device_;
  bool active_;
  bool was_enabled_ = false;
  at::ScalarType old_dtype_ = at::kBFloat16;
};

/// The places where two descriptions differ, as "path: A in the checkpoint, B here" (numbers
/// compared exactly, as written).
inline void json_differences(
    const Json& a,
    const Json& b,
    const std::string& where,
    std::vector<std::string>& out) {
  if (a.is_object() && b.is_object()) {
    for (const auto& kv : a.items()) {
      const std::string at = where.empty() ? kv.first : where + "." + kv.first;
      if (!b.contains(kv.first)) {
        out.push_back(at + ": " + kv.second.dump() + " in the checkpoint, absent here");
      } else {
        json_differences(kv.second, b.at(kv.first), at, out);
      }
    }
    for (const auto& kv : b.items()) {
      if (!a.contains(kv.first)) {
        const std::string at = where.empty() ? kv.first : where + "." + kv.first;
        out.push_back(at + ": absent in the checkpoint, " + kv.second.dump() + " here");
      }
    }
  } else if (a != b) {
    out.push_back(
        (where.empty() ? std::string("the description") : where) + ": " + a.dump() +
        " in the checkpoint, " + b.dump() + " here");
  }
}

inline std::vector<std::string> json_differences(const Json& checkpoint, const Json& here) {
  std::vector<std::string> out;
  json_differences(checkpoint, here, "", out);
  return out;
}

inline std::string join_differences(const std::vector<std::string>& diffs) {
  std::string s;
  for (const auto& d : diffs) {
    s += (s.empty() ? "" : "; ") + d;
  }
  return s;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Whether a method has `set_process_group` (MethodBase gains it with the distributed losses);
// the trainer calls it when there is one.
template <class M, class = void>
struct HasSetProcessGroup : std::false_type {};
template <class M>
struct HasSetProcessGroup<
    M,
    std::void_t<decltype(std::declval<M&>().set_process_group(
        std::declval<const dist::ProcessGroup&>()))>> : std::true_type {};

/// Hands the trainer's process group to the method (its losses then gather across ranks), when
/// the method type has `set_process_group`.
template <class M>
void set_method_process_group(M& method, const dist::ProcessGroup& group) {
  if constexpr (HasSetProcessGroup<M>::value) {
    method.set_process_group(group);
  } else {
    (void)method;
    (void)group;
  }
}

/// The message of an exception without LibTorch's backtrace.
inline std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

/// Every rank learns whether a rank failed `what` (an empty `error`: this rank did not); every
/// rank then throws: this rank its own error, the others one naming the first rank that failed.
/// One all-gather of one number per rank. Collective.
inline void agree_or_throw(
    const dist::ProcessGroup& group,
    const char* fn,
    const std::string& what,
    const std::string& error) {
  auto flag = at::full({1, 1}, error.empty() ? int64_t{0} : int64_t{1}, at::kLong);
  const auto all =
      dist::detail::all_gather(group, fn, dist::detail::Collective::AllGather, flag, nullptr);
  TORCH_CHECK(error.empty(), error);
  for (int64_t r = 0; r < all.size(0); ++r) {
    TORCH_CHECK(
        all[r][0].item<int64_t>() == 0,
        fn,
        ": rank ",
        r,
        " failed ",
        what,
        " (its own error says why); every rank stops here");
  }
}

} // namespace detail

/// Trains a method: per step it sets the scheduled learning rate and weight decay, runs the
/// method's loss (under bfloat16 autocast when asked), backpropagates, clips the gradient norm,
/// lets the method adjust gradients, steps the optimiser, runs the method's after-step updates
/// (EMA, queues), then logs and reports progress. The optimiser sees the method's trainable
/// parameters in two groups: weights, and biases/normalisation parameters (no weight decay, no
/// LARS adaptation).
///
/// Exact resume: a checkpoint holds the method (parameters, buffers, queues), the optimiser state,
/// the step, the loss history, the default generators and every generator registered with
/// `track`. A run resumed from step s reproduces the losses of an uninterrupted run bit for bit
/// when the batch of each step is a function of the step and of tracked generators (medcl's
/// samplers and augmentation policies are).
///
/// Data parallelism (`TrainerOptions::process_group` of several ranks): every rank builds the same
/// method and trainer and steps on its share of each global batch. The trainer hands the group to
/// the method (`set_process_group`: its loss returns this rank's share of the global loss),
/// broadcasts the method's parameters and buffers from rank 0, sums the gradients over the ranks
/// after backward and before clipping (`medcl::dist::GradientReducer`), and logs the global loss
/// and batch size (rank 0 writes the log and shows progress). Rank 0 writes checkpoints, holding
/// every rank's generator states, while the others wait; every rank resumes from the same file,
/// each with its own generators. Every rank must call `step`, `fit`, `save` and `resume` together.
/// See docs/distributed.md.
///
/// Example:
///   medcl::SimCLR<torch::nn::Sequential> method(encoder, medcl::SimCLROptions(64));
///   medcl::train::Trainer trainer(method, medcl::train::TrainerOptions(1000).warmup_steps(50));
///   trainer.track("augment", policy.generator());
///   trainer.fit([&](int64_t step) { return make_batch(step); });
class Trainer {
 public:
  Trainer(MethodBase& method, TrainerOptions options)
      : method_(method), options_(std::move(options)) {
    constexpr const char* fn = "Trainer";
    const auto& o = options_;
    TORCH_CHECK(o.total_steps() >= 1, fn, ": total_steps must be >= 1, got ", o.total_steps());
    TORCH_CHECK(
        o.steps_per_epoch() >= 0, fn, ": steps_per_epoch must be >= 0, got ", o.steps_per_epoch());
    TORCH_CHECK(
        std::isfinite(o.clip_grad_norm()) && o.clip_grad_norm() >= 0,
        fn,
        ": clip_grad_norm must be finite and >= 0, got ",
        o.clip_grad_norm());
    TORCH_CHECK(
        o.checkpoint_every() >= 0,
        fn,
        ": checkpoint_every must be >= 0, got ",
        o.checkpoint_every());
    TORCH_CHECK(
        o.progress_every() >= 1, fn, ": progress_every must be >= 1, got ", o.progress_every());
    TORCH_CHECK(
        std::isfinite(o.final_lr()) && o.final_lr() >= 0,
        fn,
        ": final_lr must be finite and >= 0, got ",
        o.final_lr());
    if (o.seed().has_value()) {
      seed_everything(*o.seed());
    }
    const auto& group = o.process_group();
    if (group.size() > 1) {
      // The method's losses gather across the ranks; then every rank starts from rank 0's
      // parameters and buffers (the ranks check that they built the same method).
      detail::set_method_process_group(method_, group);
      dist::broadcast_parameters(method_, group, 0);
    }
    lr_ = std::make_unique<CosineSchedule>(
        CosineScheduleOptions(o.optimizer().lr(), o.final_lr(), o.total_steps())
            .warmup_steps(o.warmup_steps()));
    const double wd = o.optimizer().weight_decay();
    wd_ = std::make_unique<CosineSchedule>(
        CosineScheduleOptions(wd, o.final_weight_decay().value_or(wd), o.total_steps()));
    groups_ = ParameterGroups(method_);
    TORCH_CHECK(groups_.size() > 0, fn, ": the method has no trainable parameters");
    optimizer_ = make_optimizer(groups_, o.optimizer());
    parameters_ = groups_.decay();
    parameters_.insert(parameters_.end(), groups_.no_decay().begin(), groups_.no_decay().end());
    TORCH_CHECK(
        o.checkpoint_every() == 0 || !o.checkpoint_path().empty(),
        fn,
        ": checkpoint_every is ",
        o.checkpoint_every(),
        " but no checkpoint_path is set, so no checkpoint would be written");
    if (!o.checkpoint_path().empty() && group.rank() == 0) {
      // Found out now rather than at the first save, perhaps hours into the run.
      check_checkpoint_path(o.checkpoint_path(), "Trainer: checkpoint_path");
    }
    if (!o.log_path().empty() && group.rank() == 0) {
      log_ = std::make_unique<JsonLinesLog>(o.log_path());
    }
    if (group.size() > 1) {
      reducer_ =
          std::make_unique<dist::GradientReducer>(dist::trainable_parameters(method_), group);
    }
  }

  /// Saves and restores `generator` (an augmentation policy's, a sampler's) with checkpoints.
  Trainer& track(const std::string& name, const at::Generator& generator) {
    for (const auto& g : generators_) {
      TORCH_CHECK(g.first != name, "Trainer::track: a generator named '", name, "' is tracked");
    }
    generators_.emplace_back(name, generator);
    return *this;
  }

  /// One optimiser step on `batch`.
  StepRecord step(const MethodBatch& batch) {
    TORCH_CHECK(
        step_ < options_.total_steps(),
        "Trainer::step: the run has ",
        options_.total_steps(),
        " steps and all are done");
    const auto t0 = std::chrono::steady_clock::now();
    StepContext ctx{step_, options_.total_steps(), epoch_of(step_)};
    StepRecord r;
    r.step = step_;
    r.samples = batch.size();
    r.lr = lr_->value(step_);
    r.weight_decay = wd_->value(step_);
    set_learning_rate(*optimizer_, r.lr);
    set_weight_decay(*optimizer_, r.weight_decay);
    method_.train();
    at::Tensor loss;
    {
      const auto device = batch.views.empty() ? at::kCPU : batch.views.front().device().type();
      detail::AutocastGuard autocast(device, options_.precision() == Precision::BFloat16);
      loss = method_.training_loss(batch, ctx);
    }
    TORCH_CHECK(
        loss.defined() && loss.numel() == 1,
        "Trainer::step: ",
        method_.name(),
        " returned a loss that is not a scalar");
    r.loss = loss.item<double>();
    const auto& group = options_.process_group();
    if (group.size() > 1) {
      // The global loss and batch size; every rank then decides alike whether to go on.
      auto sums = at::tensor({r.loss, static_cast<double>(r.samples)}, at::kDouble);
      dist::detail::all_reduce(
          group,
          "medcl::train::Trainer::step (the sum of the ranks' losses)",
          dist::detail::Collective::AllReduce,
          sums);
      r.loss = sums[0].item<double>();
      r.samples = static_cast<int64_t>(std::llround(sums[1].item<double>()));
    }
    TORCH_CHECK(
        std::isfinite(r.loss),
        "Trainer::step: ",
        method_.name(),
        " gave a non-finite loss (",
        r.loss,
        group.size() > 1 ? ", summed over the ranks" : "",
        ") at step ",
        step_,
        "; lower the learning rate (now ",
        r.lr,
        ") or check the inputs");
    optimizer_->zero_grad();
    loss.backward();
    if (reducer_) {
      // Every rank's loss is its share of the global loss: the sum is the global gradient.
      reducer_->reduce();
    }
    if (options_.clip_grad_norm() > 0) {
      r.grad_norm = torch::nn::utils::clip_grad_norm_(parameters_, options_.clip_grad_norm());
    }
    method_.before_optimizer_step(ctx);
    optimizer_->step();
    method_.after_optimizer_step(ctx);
    r.statistics = method_.step_statistics();
    if (group.size() > 1 && !r.statistics.empty()) {
      std::vector<double> values;
      for (const auto& kv : r.statistics) {
        values.push_back(kv.second);
      }
      auto t = at::tensor(values, at::kDouble);
      dist::detail::all_reduce(
          group,
          "medcl::train::Trainer::step (the ranks' step statistics)",
          dist::detail::Collective::AllReduce,
          t);
      t.div_(static_cast<double>(group.size()));
      int64_t i = 0;
      for (auto& kv : r.statistics) {
        kv.second = t[i++].item<double>();
      }
    }
    losses_.push_back(r.loss);
    ++step_;
    r.seconds = detail::seconds_since(t0);
    if (log_) {
      auto f = Json::object();
      f["loss"] = r.loss;
      f["lr"] = r.lr;
      f["weight_decay"] = r.weight_decay;
      if (r.grad_norm >= 0) {
        f["grad_norm"] = r.grad_norm;
      }
      f["samples"] = r.samples;
      f["seconds"] = r.seconds;
      for (const auto& kv : r.statistics) {
        f[kv.first] = kv.second;
      }
      log_->record("step", r.step, f);
    }
    if (progress_) {
      progress_->update(step_, r.loss, r.lr, r.samples);
    }
    return r;
  }

  /// Runs the remaining steps; `next_batch(step)` gives the batch of each step. Writes checkpoints
  /// as configured and one at the end.
  template <class NextBatch>
  void fit(NextBatch&& next_batch) {
    if (options_.progress() && !progress_ && options_.process_group().rank() == 0) {
      progress_ = std::make_unique<Progress>(ProgressOptions()
                                                 .total_steps(options_.total_steps())
                                                 .every(options_.progress_every())
                                                 .start_step(step_));
    }
    while (step_ < options_.total_steps()) {
      step(next_batch(step_));
      if (!options_.checkpoint_path().empty() && options_.checkpoint_every() > 0 &&
          step_ % options_.checkpoint_every() == 0 && step_ < options_.total_steps()) {
        save(options_.checkpoint_path());
      }
    }
    if (progress_) {
      progress_->finish();
      progress_.reset();
    }
    if (!options_.checkpoint_path().empty()) {
      save(options_.checkpoint_path());
    }
  }

  /// Writes a checkpoint (atomically) to `path`.
  ///
  /// With a process group of several ranks, every rank must call it (`fit` does): the ranks'
  /// generator states (tracked and default ones, which differ per rank) are gathered, rank 0
  /// writes the one file (the method and optimiser are the same on every rank; buffers that are
  /// not, such as the running statistics of a per-rank BatchNorm1d, are rank 0's), then every
  /// rank waits until it is complete, so that none can resume from a half-written file. Rank 0's
  /// failure to write is every rank's error.
  void save(const std::string& path) const {
    const auto& group = options_.process_group();
    // Collective: every rank's generator states, for rank 0 to write.
    const auto rank_states = gather_generator_states();
    if (group.size() > 1) {
      std::string error;
      if (group.rank() == 0) {
        try {
          write_checkpoint(path, rank_states);
        } catch (const std::exception& e) {
          error = detail::message_of(e);
        }
      }
      // Also the barrier: no rank goes on before the file is complete.
      detail::agree_or_throw(
          group, "medcl::train::Trainer::save", "to write the checkpoint '" + path + "'", error);
    } else {
      write_checkpoint(path, rank_states);
    }
    if (log_) {
      auto f = Json::object();
      f["path"] = path;
      log_->record("checkpoint", step_, f);
    }
  }

  /// Restores a checkpoint written by `save` for the same method. Everything in the file is read
  /// and checked against this trainer first: another method or corrupt file, a step beyond this
  /// run, a method built with other options (each differing option is named, with its value in
  /// the checkpoint and here), a method state (queue, centre) of another shape. Should restoring
  /// still fail, the weights, optimiser, generators and method state are put back: on any error
  /// the trainer is left as it was. Trainer options that differ (more steps, another learning
  /// rate) are allowed, with a warning naming them, since the run then no longer reproduces the
  /// uninterrupted one. With a log, a {"type":"resume"} record marks where the log's later steps
  /// supersede earlier ones (`JsonLinesLog::read`).
  ///
  /// With a process group of several ranks, every rank calls it with the same file (rank 0's
  /// checkpoint, on a file system every rank sees): each restores the method, optimiser and step,
  /// and its own generator states (rank r's as rank r saved them); the ranks check together that
  /// each could read and restore the file at the same step, and otherwise all fail, each left as
  /// it was. A checkpoint of another number of ranks restores the model and optimiser; ranks that
  /// have no generator states of their own in it keep their current ones, with a warning.
  void resume(const std::string& path) {
    constexpr const char* fn = "Trainer::resume";
    const auto& group = options_.process_group();
    // 1. Read the file without restoring anything.
    Checkpoint probe("medcl." + method_.name());
    std::map<std::string, at::Tensor> extra;
    const auto live = method_.extra_state();
    const auto read = [&]() {
      probe.default_generators(false);
      probe.load(path);
      TORCH_CHECK(
          probe.step() <= options_.total_steps(),
          fn,
          ": the checkpoint '",
          path,
          "' is at step ",
          probe.step(),
          ", beyond this run's ",
          options_.total_steps(),
          " steps");
      const auto meta = Json::parse(probe.metadata());
      if (meta.contains("method")) {
        const auto diffs = detail::json_differences(meta.at("method"), method_.describe());
        TORCH_CHECK(
            diffs.empty(),
            fn,
            ": the checkpoint '",
            path,
            "' was written by a ",
            method_.name(),
            " built with other options: ",
            detail::join_differences(diffs),
            ". Build the method as that run did, or start a new run; the trainer is left as it "
            "was");
      }
      if (meta.contains("trainer") && group.rank() == 0) {
        const auto diffs = detail::json_differences(meta.at("trainer"), describe());
        if (!diffs.empty()) {
          TORCH_WARN(
              fn,
              ": resuming '",
              path,
              "' with other trainer options (",
              detail::join_differences(diffs),
              "); the run will not reproduce an uninterrupted one");
        }
      }
      if (meta.contains("extra_state")) {
        const auto& names = meta.at("extra_state");
        for (size_t i = 0; i < names.size(); ++i) {
          const auto& n = names[i].as_string();
          TORCH_CHECK(
              probe.has_tensor("extra." + n),
              fn,
              ": the checkpoint '",
              path,
              "' lists the method state '",
              n,
              "' but does not hold it");
          extra[n] = probe.tensor("extra." + n);
          // A state this method does not hold yet (a queue's keys before its first entry) is
          // checked by the method when it loads; one it holds must have the same shape.
          const auto it = live.find(n);
          if (it == live.end()) {
            continue;
          }
          TORCH_CHECK(
              it->second.sizes() == extra[n].sizes(),
              fn,
              ": the method state '",
              n,
              "' has shape ",
              extra[n].sizes(),
              " in the checkpoint '",
              path,
              "' and ",
              it->second.sizes(),
              " here; the trainer is left as it was");
        }
      }
    };
    if (group.size() == 1) {
      read();
    } else {
      std::string error;
      try {
        read();
      } catch (const std::exception& e) {
        error = detail::message_of(e);
      }
      detail::agree_or_throw(
          group, "medcl::train::Trainer::resume", "to read the checkpoint '" + path + "'", error);
    }

    // 2. Restore, putting everything back should anything still fail (on any rank).
    auto ck = make_checkpoint();
    const CheckpointSnapshot before = ck.snapshot();
    std::map<std::string, at::Tensor> extra_before;
    for (const auto& kv : live) {
      extra_before[kv.first] = kv.second.detach().clone();
    }
    const auto put_back = [&]() {
      before.restore();
      if (!extra_before.empty()) {
        method_.load_extra_state(extra_before);
      }
    };
    std::string error;
    try {
      const auto own_states = generator_states();
      ck.load(path);
      if (!extra.empty()) {
        method_.load_extra_state(extra);
      }
      if (group.size() > 1) {
        restore_rank_generators(ck, path, own_states);
      }
    } catch (const c10::Error& e) {
      put_back();
      error = e.what_without_backtrace();
    }
    if (group.size() == 1) {
      TORCH_CHECK(
          error.empty(),
          fn,
          ": cannot resume from '",
          path,
          "': ",
          error,
          " (the trainer is left as it was)");
    } else {
      // Every rank at the same step, or none resumed.
      if (error.empty() && ck.step() != probe.step()) {
        error = std::string(fn) + ": the checkpoint '" + path + "' changed while it was read";
      }
      auto steps = at::full({1, 1}, error.empty() ? ck.step() : int64_t{-1}, at::kLong);
      const auto all = dist::detail::all_gather(
          group,
          "medcl::train::Trainer::resume",
          dist::detail::Collective::AllGather,
          steps,
          nullptr);
      bool same = true;
      std::string steps_text;
      for (int64_t r = 0; r < all.size(0); ++r) {
        const int64_t s = all[r][0].item<int64_t>();
        same = same && s == all[0][0].item<int64_t>() && s >= 0;
        steps_text += (r ? ", " : "") + std::to_string(s);
      }
      if (!same && error.empty()) {
        put_back();
      }
      TORCH_CHECK(
          error.empty(),
          fn,
          ": cannot resume from '",
          path,
          "': ",
          error,
          " (the trainer is left as it was)");
      TORCH_CHECK(
          same,
          fn,
          ": the ranks could not all resume from '",
          path,
          "' at the same step (a rank's own error says why; step by rank, -1 for a failure: ",
          steps_text,
          "); every rank is left as it was");
    }
    const auto n = ck.tensor("loss_history_size").item<int64_t>();
    auto h = ck.tensor("loss_history").to(at::kDouble).contiguous();
    losses_.assign(h.data_ptr<double>(), h.data_ptr<double>() + n);
    step_ = ck.step();
    if (log_) {
      auto f = Json::object();
      f["path"] = path;
      log_->record("resume", step_, f);
    }
  }

  /// Every choice of the run, for reports.
  Json describe() const {
    const auto& o = options_;
    auto j = Json::object();
    j["total_steps"] = o.total_steps();
    j["steps_per_epoch"] = o.steps_per_epoch();
    j["optimizer"] = o.optimizer().describe();
    j["lr_schedule"] = lr_->describe();
    j["weight_decay_schedule"] = wd_->describe();
    j["clip_grad_norm"] = o.clip_grad_norm();
    j["precision"] = o.precision() == Precision::BFloat16 ? "bfloat16 autocast" : "float32";
    j["seed"] = o.seed().has_value() ? Json(static_cast<int64_t>(*o.seed())) : Json();
    j["trainable_parameters"] = groups_.numel();
    auto gens = Json::array();
    for (const auto& g : generators_) {
      gens.push_back(g.first);
    }
    j["tracked_generators"] = gens;
    if (o.process_group().size() > 1) {
      j["world_size"] = o.process_group().size();
    }
    return j;
  }

  /// The next step to run (0-based; equals the number of steps done).
  int64_t current_step() const {
    return step_;
  }
  /// The loss of every step done (restored by `resume`).
  const std::vector<double>& losses() const {
    return losses_;
  }
  torch::optim::Optimizer& optimizer() {
    return *optimizer_;
  }
  const TrainerOptions& options() const {
    return options_;
  }
  const CosineSchedule& lr_schedule() const {
    return *lr_;
  }
  /// The gradient reducer of a run over several ranks (bytes per step, buckets); null in one
  /// process.
  const dist::GradientReducer* gradient_reducer() const {
    return reducer_.get();
  }

 private:
  int64_t epoch_of(int64_t step) const {
    return options_.steps_per_epoch() > 0 ? step / options_.steps_per_epoch() : 0;
  }

  Checkpoint make_checkpoint() const {
    Checkpoint ck("medcl." + method_.name());
    ck.module("method", method_);
    ck.optimizer("optimizer", *optimizer_);
    for (const auto& g : generators_) {
      ck.generator(g.first, g.second);
    }
    return ck;
  }

  void write_checkpoint(
      const std::string& path,
      const std::vector<std::pair<std::string, at::Tensor>>& rank_states) const {
    auto ck = make_checkpoint();
    ck.step(step_);
    auto meta = Json::object();
    meta["method"] = method_.describe();
    meta["trainer"] = describe();
    auto names = Json::array();
    for (const auto& kv : method_.extra_state()) {
      ck.tensor("extra." + kv.first, kv.second);
      names.push_back(kv.first);
    }
    meta["extra_state"] = names;
    if (options_.process_group().size() > 1) {
      meta["world_size"] = options_.process_group().size();
    }
    ck.metadata(meta.dump());
    ck.tensor(
        "loss_history",
        at::tensor(losses_.empty() ? std::vector<double>{0.0} : losses_, at::kDouble));
    ck.tensor("loss_history_size", at::tensor(static_cast<int64_t>(losses_.size())));
    for (const auto& kv : rank_states) {
      ck.tensor(kv.first, kv.second);
    }
    ck.save(path);
  }

  // Every generator whose state differs per rank: the tracked ones and the default CPU and CUDA
  // generators (named as Checkpoint names them).
  std::vector<std::pair<std::string, at::Generator>> rank_generators() const {
    auto all = generators_;
    all.emplace_back("default_cpu", at::detail::getDefaultCPUGenerator());
    if (torch::cuda::is_available()) {
      const auto n = static_cast<int64_t>(torch::cuda::device_count());
      for (int64_t d = 0; d < n; ++d) {
        all.emplace_back(
            "default_cuda" + std::to_string(d),
            at::globalContext().defaultGenerator(
                c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(d))));
      }
    }
    return all;
  }

  std::vector<at::Tensor> generator_states() const {
    std::vector<at::Tensor> states;
    for (const auto& g : rank_generators()) {
      at::Generator gen = g.second;
      std::lock_guard<std::mutex> lock(gen.mutex());
      states.push_back(gen.get_state());
    }
    return states;
  }

  // With several ranks: every rank's generator states, as "rank<r>.generator.<name>" for ranks
  // 1.. (rank 0's are the checkpoint's own generators). Collective; empty in one process.
  std::vector<std::pair<std::string, at::Tensor>> gather_generator_states() const {
    std::vector<std::pair<std::string, at::Tensor>> out;
    const auto& group = options_.process_group();
    if (group.size() == 1) {
      return out;
    }
    const auto gens = rank_generators();
    const auto states = generator_states();
    for (size_t i = 0; i < gens.size(); ++i) {
      std::vector<int64_t> counts;
      // As int64: every dtype Gloo gathers.
      const auto all = dist::detail::all_gather(
          group,
          "medcl::train::Trainer::save (the ranks' generator states)",
          dist::detail::Collective::AllGather,
          states[i].to(at::kLong),
          &counts);
      int64_t offset = counts[0];
      for (int64_t r = 1; r < group.size(); ++r) {
        out.emplace_back(
            "rank" + std::to_string(r) + ".generator." + gens[i].first,
            all.narrow(0, offset, counts[r]).to(at::kByte));
        offset += counts[r];
      }
    }
    return out;
  }

  // After Checkpoint::load set every rank's generators to rank 0's states: rank r's own.
  void restore_rank_generators(
      const Checkpoint& ck,
      const std::string& path,
      const std::vector<at::Tensor>& own_states) {
    const auto& group = options_.process_group();
    if (group.rank() == 0) {
      return;
    }
    const auto gens = rank_generators();
    std::vector<std::string> kept;
    for (size_t i = 0; i < gens.size(); ++i) {
      const std::string key = "rank" + std::to_string(group.rank()) + ".generator." + gens[i].first;
      at::Generator gen = gens[i].second;
      std::lock_guard<std::mutex> lock(gen.mutex());
      if (ck.has_tensor(key)) {
        gen.set_state(ck.tensor(key));
      } else {
        gen.set_state(own_states[i]);
        kept.push_back(gens[i].first);
      }
    }
    if (!kept.empty()) {
      std::string names;
      for (const auto& k : kept) {
        names += (names.empty() ? "" : ", ") + k;
      }
      TORCH_WARN(
          "Trainer::resume: the checkpoint '",
          path,
          "' holds no state of rank ",
          group.rank(),
          "'s generators ",
          names,
          " (it was written by fewer ranks); they keep their current states, so the run will "
          "not reproduce an uninterrupted one");
    }
  }

  MethodBase& method_;
  TrainerOptions options_;
  std::unique_ptr<CosineSchedule> lr_;
  std::unique_ptr<CosineSchedule> wd_;
  ParameterGroups groups_;
  std::vector<at::Tensor> parameters_; // every parameter the optimiser updates (for clipping)
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<JsonLinesLog> log_;
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<dist::GradientReducer> reducer_;
  std::vector<std::pair<std::string, at::Generator>> generators_;
  std::vector<double> losses_;
  int64_t step_ = 0;
};

} // namespace train
} // namespace medcl
