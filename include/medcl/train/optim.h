#pragma once

/// \file
/// Optimisers for self-supervised training: the split of parameters into a weight-decay group and
/// a no-decay group (biases, normalisation parameters, scalars), the LARS optimiser of SimCLR and
/// BYOL, a factory for AdamW / SGD / LARS, and helpers that drive them from schedules. Compiled in
/// src/train/optim.cpp.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include <medcl/core/json.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <vector>

namespace torch {
namespace nn {
class Module;
} // namespace nn
} // namespace torch

namespace medcl {
namespace train {

// ---------------------------------------------------------------------------------------------
// Parameter groups
// ---------------------------------------------------------------------------------------------

/// Index of the group with weight decay (and LARS adaptation) in the optimisers `make_optimizer`
/// builds.
constexpr size_t kDecayGroup = 0;
/// Index of the group without weight decay (and without LARS adaptation) in the optimisers
/// `make_optimizer` builds. It is present even when empty, so the layout is always the same.
constexpr size_t kNoDecayGroup = 1;

/// Trainable parameters split into a group that gets weight decay (and LARS's trust ratio) and a
/// group that does not: every parameter with dim() <= 1, i.e. biases, the scale and shift of
/// batch/layer normalisation, and scalars such as CLIP's learnable logit scale. This is the split
/// of SimCLR, BYOL, MoCo v3 and DINO (whose `get_params_groups` uses the same rule).
///
/// Parameters that do not require grad (frozen encoders, momentum/teacher copies) are skipped by
/// `add(module)`; a parameter added twice (a module shared by two parents, or listed twice) is kept
/// once. Names are recorded for reports and error messages.
///
/// Example:
///   auto groups = medcl::train::ParameterGroups()
///                     .add(*encoder, "encoder.")
///                     .add(*head, "head.")
///                     .add("logit_scale", logit_scale);  // dim 0: no decay
///   auto opt = medcl::train::make_optimizer(groups, OptimizerOptions().kind("lars").lr(0.3));
class ParameterGroups {
 public:
  ParameterGroups() = default;
  /// Every trainable parameter of `module`.
  explicit ParameterGroups(const torch::nn::Module& module);

  /// Adds every parameter of `module` (recursively) that requires grad, by the dim() <= 1 rule;
  /// names are `prefix` + the parameter's name in the module.
  ParameterGroups& add(const torch::nn::Module& module, const std::string& prefix = "");

  /// Adds one parameter by the dim() <= 1 rule (e.g. a learnable temperature / logit scale).
  ParameterGroups& add(const std::string& name, const at::Tensor& parameter);

  /// Adds one parameter to the group chosen explicitly, whatever its dim().
  ParameterGroups& add(const std::string& name, const at::Tensor& parameter, bool decay);

  /// Parameters with weight decay (and LARS adaptation).
  const std::vector<at::Tensor>& decay() const {
    return decay_;
  }
  /// Parameters without weight decay (nor LARS adaptation).
  const std::vector<at::Tensor>& no_decay() const {
    return no_decay_;
  }
  /// Names of `decay()`, in the same order.
  const std::vector<std::string>& decay_names() const {
    return decay_names_;
  }
  /// Names of `no_decay()`, in the same order.
  const std::vector<std::string>& no_decay_names() const {
    return no_decay_names_;
  }
  /// Number of parameters (tensors) in both groups.
  size_t size() const {
    return decay_.size() + no_decay_.size();
  }
  /// Number of scalar values in both groups.
  int64_t numel() const;

 private:
  static void check(const std::string& name, const at::Tensor& p);
  ParameterGroups& insert(const std::string& name, const at::Tensor& p, bool decay);

  std::vector<at::Tensor> decay_;
  std::vector<at::Tensor> no_decay_;
  std::vector<std::string> decay_names_;
  std::vector<std::string> no_decay_names_;
  std::unordered_set<const void*> seen_;
};

/// The trainable parameters of `module` split by the dim() <= 1 rule (see `ParameterGroups`).
ParameterGroups parameter_groups(const torch::nn::Module& module);

// ---------------------------------------------------------------------------------------------
// LARS
// ---------------------------------------------------------------------------------------------

/// Options of `LARS`, per parameter group.
struct LARSOptions : public torch::optim::OptimizerCloneableOptions<LARSOptions> {
  /* implicit */ LARSOptions(double lr = 0.1) : lr_(lr) {}
  /// Learning rate (SimCLR: 0.3 × batch / 256). Default: 0.1
  TORCH_ARG(double, lr) = 0.1;
  /// Momentum m of the velocity. Default: 0.9
  TORCH_ARG(double, momentum) = 0.9;
  /// Weight decay added to the gradient before the trust ratio. Default: 0
  TORCH_ARG(double, weight_decay) = 0.0;
  /// Trust coefficient η. Default: 0.001
  TORCH_ARG(double, trust_coefficient) = 0.001;
  /// Added to ||g|| in the trust ratio's denominator. Default: 1e-8
  TORCH_ARG(double, eps) = 1e-8;
  /// Skip both the trust ratio and the weight decay for this group (biases, normalisation).
  /// Default: false
  TORCH_ARG(bool, exclude_from_adaptation) = false;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override {
    return lr();
  }
  void set_lr(const double lr) override {
    this->lr(lr);
  }
};

/// Per-parameter state of `LARS`: the velocity v (undefined until the first step, as if zero).
struct LARSParamState : public torch::optim::OptimizerCloneableParamState<LARSParamState> {
  /// Velocity v, same shape as the parameter.
  TORCH_ARG(at::Tensor, momentum_buffer);

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

namespace detail {

// LibTorch 1.13 keys optimiser state by the parameter's TensorImpl address written as text, 2.x by
// the address itself; the key type of the map tells which.
template <typename Key>
Key optimizer_state_key(const at::Tensor& p) {
  if constexpr (std::is_same<Key, std::string>::value) {
    std::ostringstream s;
    s << static_cast<const void*>(p.unsafeGetTensorImpl());
    return s.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

} // namespace detail

/// Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017,
/// https://arxiv.org/abs/1708.03888), the optimiser of SimCLR and BYOL for large batches. For each
/// parameter w with gradient ∇ in a group with learning rate γ, momentum m, weight decay λ, trust
/// coefficient η: \f[
///   g = \nabla + \lambda w, \qquad
///   \tau = \begin{cases} \eta\,\frac{\lVert w\rVert}{\lVert g\rVert + \epsilon} &
///          \lVert w\rVert > 0 \text{ and } \lVert g\rVert > 0 \\ 1 & \text{otherwise}\end{cases}
///   \qquad v \leftarrow m\,v + \gamma\,\tau\,g, \qquad w \leftarrow w - v
/// \f]
/// with v = 0 before the first step (so the first step moves w by γτg). The learning rate is inside
/// the velocity, as in SimCLR's TensorFlow LARS: a learning-rate change acts on new gradients only.
/// In a group with `exclude_from_adaptation` (biases, normalisation) λ = 0 and τ = 1, i.e. plain
/// momentum SGD. With m = 0, w ← w − γτg. Norms are over the whole parameter tensor (one "layer").
/// Parameters without a gradient are skipped. The velocity is saved and loaded by `save`/`load`.
///
/// Shape: any parameter shapes; the update runs on the parameter's device and dtype.
///
/// Example:
///   auto groups = medcl::train::parameter_groups(*model);
///   std::vector<torch::optim::OptimizerParamGroup> pg;
///   pg.emplace_back(groups.decay(),
///   std::make_unique<LARSOptions>(LARSOptions(0.3).weight_decay(1e-6)));
///   pg.emplace_back(groups.no_decay(),
///   std::make_unique<LARSOptions>(LARSOptions(0.3).exclude_from_adaptation(true)));
///   medcl::train::LARS opt(std::move(pg), LARSOptions(0.3));
///   // or: auto opt = make_optimizer(groups,
///   OptimizerOptions().kind("lars").lr(0.3).weight_decay(1e-6));
class LARS : public torch::optim::Optimizer {
 public:
  explicit LARS(std::vector<torch::optim::OptimizerParamGroup> param_groups, LARSOptions defaults);

  explicit LARS(std::vector<at::Tensor> params, LARSOptions defaults);

  at::Tensor step(LossClosure closure = nullptr) override;

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  static std::vector<torch::optim::OptimizerParamGroup> make_single_group(
      std::vector<at::Tensor> params);
  static void check_options(const LARSOptions& o);
};

// ---------------------------------------------------------------------------------------------
// Factory and helpers
// ---------------------------------------------------------------------------------------------

/// Hyper-parameters of `make_optimizer`; each optimiser reads the ones it uses.
struct OptimizerOptions {
  /// "adamw", "sgd" or "lars". Default: "adamw"
  TORCH_ARG(std::string, kind) = "adamw";
  /// Learning rate (usually overwritten every step from a schedule). Default: 1e-3
  TORCH_ARG(double, lr) = 1e-3;
  /// Weight decay of the decay group; the no-decay group always has 0. Default: 0.05
  TORCH_ARG(double, weight_decay) = 0.05;
  /// Momentum (sgd, lars). Default: 0.9
  TORCH_ARG(double, momentum) = 0.9;
  /// Nesterov momentum (sgd). Default: false
  TORCH_ARG(bool, nesterov) = false;
  /// Adam's β1 (adamw). Default: 0.9
  TORCH_ARG(double, beta1) = 0.9;
  /// Adam's β2 (adamw). Default: 0.999
  TORCH_ARG(double, beta2) = 0.999;
  /// Adam's ε (adamw) or the trust-ratio ε (lars). Default: 1e-8
  TORCH_ARG(double, eps) = 1e-8;
  /// LARS trust coefficient η (lars). Default: 0.001
  TORCH_ARG(double, trust_coefficient) = 0.001;

 public:
  /// Every hyper-parameter of `kind` as a JSON object (for logs and reports), e.g.
  /// {"kind":"lars","lr":0.3,"weight_decay":1e-06,"momentum":0.9,"eps":1e-08,"trust_coefficient":0.001}.
  Json describe() const;
};

/// Builds an AdamW (Loshchilov & Hutter 2019), SGD or LARS optimiser over `groups` with two
/// parameter groups: `kDecayGroup` (0) with `weight_decay` (and, for LARS, the trust ratio) and
/// `kNoDecayGroup` (1) with weight decay 0 (and, for LARS, `exclude_from_adaptation`). Both groups
/// exist even when one is empty.
///
/// Example:
///   auto opt = medcl::train::make_optimizer(
///       medcl::train::parameter_groups(*model),
///       medcl::train::OptimizerOptions().kind("lars").lr(0.3).weight_decay(1e-6));
///   medcl::train::set_learning_rate(*opt, lr_schedule(step));
std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const ParameterGroups& groups,
    const OptimizerOptions& options);

/// Same as `make_optimizer(parameter_groups(module), options)`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const torch::nn::Module& module,
    const OptimizerOptions& options);

/// Sets the learning rate of every parameter group (call it every step with a schedule's value).
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

/// The learning rate of the first parameter group.
double learning_rate(const torch::optim::Optimizer& optimizer);

/// Sets the weight decay of the decay group (`kDecayGroup`, the first group) only: the no-decay
/// group and any further group keep theirs (0 for the no-decay group of `make_optimizer`), so a
/// weight-decay schedule (DINO: 0.04 → 0.4) never decays biases or normalisation parameters.
/// Supports LARS, AdamW and SGD.
void set_weight_decay(torch::optim::Optimizer& optimizer, double weight_decay);

/// The weight decay of parameter group `group` (LARS, AdamW or SGD).
double weight_decay(const torch::optim::Optimizer& optimizer, size_t group = kDecayGroup);

} // namespace train
} // namespace medcl
