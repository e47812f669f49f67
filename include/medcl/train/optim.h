#pragma once

/// \file
/// Optimisers for self-supervised training: the split of parameters into a weight-decay group and
/// a no-decay group (biases, normalisation parameters, scalars), the LARS optimiser of SimCLR and
/// BYOL, a factory for AdamW / SGD / LARS, and helpers that drive them from schedules.

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/archive.h>

#include <medcl/core/json.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

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
  explicit ParameterGroups(const torch::nn::Module& module) {
    add(module);
  }

  /// Adds every parameter of `module` (recursively) that requires grad, by the dim() <= 1 rule;
  /// names are `prefix` + the parameter's name in the module.
  ParameterGroups& add(const torch::nn::Module& module, const std::string& prefix = "") {
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      if (item.value().requires_grad()) {
        insert(prefix + item.key(), item.value(), item.value().dim() >= 2);
      }
    }
    return *this;
  }

  /// Adds one parameter by the dim() <= 1 rule (e.g. a learnable temperature / logit scale).
  ParameterGroups& add(const std::string& name, const at::Tensor& parameter) {
    check(name, parameter);
    return insert(name, parameter, parameter.dim() >= 2);
  }

  /// Adds one parameter to the group chosen explicitly, whatever its dim().
  ParameterGroups& add(const std::string& name, const at::Tensor& parameter, bool decay) {
    check(name, parameter);
    return insert(name, parameter, decay);
  }

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
  int64_t numel() const {
    int64_t n = 0;
    for (const auto& p : decay_) {
      n += p.numel();
    }
    for (const auto& p : no_decay_) {
      n += p.numel();
    }
    return n;
  }

 private:
  static void check(const std::string& name, const at::Tensor& p) {
    TORCH_CHECK(p.defined(), "ParameterGroups::add: parameter '", name, "' is undefined");
    TORCH_CHECK(
        p.requires_grad() && p.is_leaf(),
        "ParameterGroups::add: parameter '",
        name,
        "' must be a leaf tensor that requires grad, got requires_grad=",
        p.requires_grad(),
        " is_leaf=",
        p.is_leaf());
    TORCH_CHECK(
        at::isFloatingType(p.scalar_type()),
        "ParameterGroups::add: parameter '",
        name,
        "' must be floating point, got ",
        p.scalar_type());
  }

  ParameterGroups& insert(const std::string& name, const at::Tensor& p, bool decay) {
    if (!seen_.insert(p.unsafeGetTensorImpl()).second) {
      return *this;
    }
    (decay ? decay_ : no_decay_).push_back(p);
    (decay ? decay_names_ : no_decay_names_).push_back(name);
    return *this;
  }

  std::vector<at::Tensor> decay_;
  std::vector<at::Tensor> no_decay_;
  std::vector<std::string> decay_names_;
  std::vector<std::string> no_decay_names_;
  std::unordered_set<const void*> seen_;
};

/// The trainable parameters of `module` split by the dim() <= 1 rule (see `ParameterGroups`).
inline ParameterGroups parameter_groups(const torch::nn::Module& module) {
  return ParameterGroups(module);
}

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
  void serialize(torch::serialize::InputArchive& archive) override {
    c10::IValue v;
    archive.read("lr", v);
    lr(v.toDouble());
    archive.read("momentum", v);
    momentum(v.toDouble());
    archive.read("weight_decay", v);
    weight_decay(v.toDouble());
    archive.read("trust_coefficient", v);
    trust_coefficient(v.toDouble());
    archive.read("eps", v);
    eps(v.toDouble());
    archive.read("exclude_from_adaptation", v);
    exclude_from_adaptation(v.toBool());
  }
  void serialize(torch::serialize::OutputArchive& archive) const override {
    archive.write("lr", c10::IValue(lr()));
    archive.write("momentum", c10::IValue(momentum()));
    archive.write("weight_decay", c10::IValue(weight_decay()));
    archive.write("trust_coefficient", c10::IValue(trust_coefficient()));
    archive.write("eps", c10::IValue(eps()));
    archive.write("exclude_from_adaptation", c10::IValue(exclude_from_adaptation()));
  }
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
  void serialize(torch::serialize::InputArchive& archive) override {
    at::Tensor buffer;
    if (archive.try_read("momentum_buffer", buffer, /*is_buffer=*/true)) {
      momentum_buffer(buffer);
    }
  }
  void serialize(torch::serialize::OutputArchive& archive) const override {
    if (momentum_buffer().defined()) {
      archive.write("momentum_buffer", momentum_buffer(), /*is_buffer=*/true);
    }
  }
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
  explicit LARS(std::vector<torch::optim::OptimizerParamGroup> param_groups, LARSOptions defaults)
      : torch::optim::Optimizer(std::move(param_groups), std::make_unique<LARSOptions>(defaults)) {
    for (const auto& group : param_groups_) {
      check_options(static_cast<const LARSOptions&>(group.options()));
    }
  }

  explicit LARS(std::vector<at::Tensor> params, LARSOptions defaults)
      : LARS(make_single_group(std::move(params)), defaults) {}

  at::Tensor step(LossClosure closure = nullptr) override {
    c10::NoGradGuard no_grad;
    at::Tensor loss;
    if (closure != nullptr) {
      at::AutoGradMode enable_grad(true);
      loss = closure();
    }
    using Key = typename std::decay<decltype(state_)>::type::key_type;
    for (auto& group : param_groups_) {
      const auto& o = static_cast<const LARSOptions&>(group.options());
      for (auto& p : group.params()) {
        if (!p.grad().defined()) {
          continue;
        }
        TORCH_CHECK(!p.grad().is_sparse(), "LARS::step: sparse gradients are not supported");
        at::Tensor g = p.grad();
        if (!o.exclude_from_adaptation()) {
          if (o.weight_decay() != 0) {
            g = g.add(p, o.weight_decay());
          }
          // The trust ratio stays a 0-dim tensor: no device-to-host synchronisation per layer.
          auto wn = p.norm();
          auto gn = g.norm();
          auto adapt = wn.gt(0).logical_and(gn.gt(0));
          auto trust = at::where(
              adapt, wn.mul(o.trust_coefficient()).div(gn.add(o.eps())), at::ones_like(wn));
          g = g.mul(trust);
        }
        if (o.momentum() == 0) {
          p.add_(g, -o.lr());
          continue;
        }
        const Key key = detail::optimizer_state_key<Key>(p);
        auto it = state_.find(key);
        if (it == state_.end()) {
          auto st = std::make_unique<LARSParamState>();
          st->momentum_buffer(at::zeros_like(p, at::MemoryFormat::Preserve));
          it = state_.emplace(key, std::move(st)).first;
        }
        auto& st = static_cast<LARSParamState&>(*it->second);
        if (!st.momentum_buffer().defined()) {
          st.momentum_buffer(at::zeros_like(p, at::MemoryFormat::Preserve));
        }
        auto& v = st.momentum_buffer();
        v.mul_(o.momentum()).add_(g, o.lr());
        p.sub_(v);
      }
    }
    return loss;
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    torch::optim::serialize<LARSParamState, LARSOptions>(archive, *this);
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::optim::serialize<LARSParamState, LARSOptions>(archive, *this);
  }

 private:
  static std::vector<torch::optim::OptimizerParamGroup> make_single_group(
      std::vector<at::Tensor> params) {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::move(params));
    return groups;
  }

  static void check_options(const LARSOptions& o) {
    TORCH_CHECK(
        std::isfinite(o.lr()) && o.lr() >= 0, "LARS: lr must be finite and >= 0, got ", o.lr());
    TORCH_CHECK(
        o.momentum() >= 0 && o.momentum() < 1,
        "LARS: momentum must be in [0, 1), got ",
        o.momentum());
    TORCH_CHECK(
        std::isfinite(o.weight_decay()) && o.weight_decay() >= 0,
        "LARS: weight_decay must be finite and >= 0, got ",
        o.weight_decay());
    TORCH_CHECK(
        std::isfinite(o.trust_coefficient()) && o.trust_coefficient() > 0,
        "LARS: trust_coefficient must be finite and > 0, got ",
        o.trust_coefficient());
    TORCH_CHECK(
        std::isfinite(o.eps()) && o.eps() >= 0, "LARS: eps must be finite and >= 0, got ", o.eps());
  }
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
  Json describe() const {
    Json j = Json::object();
    j["kind"] = kind();
    j["lr"] = lr();
    j["weight_decay"] = weight_decay();
    if (kind() == "adamw") {
      j["beta1"] = beta1();
      j["beta2"] = beta2();
      j["eps"] = eps();
    } else if (kind() == "sgd") {
      j["momentum"] = momentum();
      j["nesterov"] = nesterov();
    } else if (kind() == "lars") {
      j["momentum"] = momentum();
      j["eps"] = eps();
      j["trust_coefficient"] = trust_coefficient();
    }
    j["no_decay_group"] = "dim <= 1: no weight decay, no LARS adaptation";
    return j;
  }
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
inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const ParameterGroups& groups,
    const OptimizerOptions& options) {
  constexpr const char* fn = "make_optimizer";
  const auto& o = options;
  TORCH_CHECK(groups.size() > 0, fn, ": no trainable parameters");
  TORCH_CHECK(
      std::isfinite(o.lr()) && o.lr() >= 0, fn, ": lr must be finite and >= 0, got ", o.lr());
  TORCH_CHECK(
      std::isfinite(o.weight_decay()) && o.weight_decay() >= 0,
      fn,
      ": weight_decay must be finite and >= 0, got ",
      o.weight_decay());
  using torch::optim::OptimizerParamGroup;
  std::vector<OptimizerParamGroup> pg;
  if (o.kind() == "adamw") {
    TORCH_CHECK(
        o.beta1() >= 0 && o.beta1() < 1 && o.beta2() >= 0 && o.beta2() < 1,
        fn,
        ": betas must be in [0, 1), got (",
        o.beta1(),
        ", ",
        o.beta2(),
        ")");
    TORCH_CHECK(o.eps() > 0, fn, ": eps must be > 0, got ", o.eps());
    auto base = torch::optim::AdamWOptions(o.lr())
                    .betas(std::make_tuple(o.beta1(), o.beta2()))
                    .eps(o.eps())
                    .weight_decay(o.weight_decay());
    pg.emplace_back(groups.decay(), std::make_unique<torch::optim::AdamWOptions>(base));
    auto nd = base;
    nd.weight_decay(0.0);
    pg.emplace_back(groups.no_decay(), std::make_unique<torch::optim::AdamWOptions>(nd));
    return std::make_unique<torch::optim::AdamW>(std::move(pg), base);
  }
  if (o.kind() == "sgd") {
    TORCH_CHECK(
        o.momentum() >= 0 && o.momentum() < 1,
        fn,
        ": momentum must be in [0, 1), got ",
        o.momentum());
    TORCH_CHECK(!o.nesterov() || o.momentum() > 0, fn, ": nesterov needs momentum > 0");
    auto base = torch::optim::SGDOptions(o.lr())
                    .momentum(o.momentum())
                    .nesterov(o.nesterov())
                    .weight_decay(o.weight_decay());
    pg.emplace_back(groups.decay(), std::make_unique<torch::optim::SGDOptions>(base));
    auto nd = base;
    nd.weight_decay(0.0);
    pg.emplace_back(groups.no_decay(), std::make_unique<torch::optim::SGDOptions>(nd));
    return std::make_unique<torch::optim::SGD>(std::move(pg), base);
  }
  if (o.kind() == "lars") {
    auto base = LARSOptions(o.lr())
                    .momentum(o.momentum())
                    .weight_decay(o.weight_decay())
                    .trust_coefficient(o.trust_coefficient())
                    .eps(o.eps());
    pg.emplace_back(groups.decay(), std::make_unique<LARSOptions>(base));
    auto nd = base;
    nd.weight_decay(0.0).exclude_from_adaptation(true);
    pg.emplace_back(groups.no_decay(), std::make_unique<LARSOptions>(nd));
    return std::make_unique<LARS>(std::move(pg), base);
  }
  TORCH_CHECK(false, fn, ": kind must be \"adamw\", \"sgd\" or \"lars\", got \"", o.kind(), "\"");
  return nullptr; // not reached: TORCH_CHECK(false) throws (some compilers cannot tell)
}

/// Same as `make_optimizer(parameter_groups(module), options)`.
inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const torch::nn::Module& module,
    const OptimizerOptions& options) {
  return make_optimizer(ParameterGroups(module), options);
}

/// Sets the learning rate of every parameter group (call it every step with a schedule's value).
inline void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  TORCH_CHECK(
      std::isfinite(lr) && lr >= 0, "set_learning_rate: lr must be finite and >= 0, got ", lr);
  for (auto& group : optimizer.param_groups()) {
    group.options().set_lr(lr);
  }
}

/// The learning rate of the first parameter group.
inline double learning_rate(const torch::optim::Optimizer& optimizer) {
  TORCH_CHECK(!optimizer.param_groups().empty(), "learning_rate: optimizer has no parameter group");
  return optimizer.param_groups().front().options().get_lr();
}

namespace detail {

template <typename Options>
bool try_weight_decay(torch::optim::OptimizerOptions& options, const double* set, double* get) {
  auto* o = dynamic_cast<Options*>(&options);
  if (o == nullptr) {
    return false;
  }
  if (set != nullptr) {
    o->weight_decay(*set);
  }
  if (get != nullptr) {
    *get = o->weight_decay();
  }
  return true;
}

inline bool
weight_decay_access(torch::optim::OptimizerOptions& options, const double* set, double* get) {
  return try_weight_decay<LARSOptions>(options, set, get) ||
      try_weight_decay<torch::optim::AdamWOptions>(options, set, get) ||
      try_weight_decay<torch::optim::SGDOptions>(options, set, get);
}

} // namespace detail

/// Sets the weight decay of the decay group (`kDecayGroup`, the first group) only: the no-decay
/// group and any further group keep theirs (0 for the no-decay group of `make_optimizer`), so a
/// weight-decay schedule (DINO: 0.04 → 0.4) never decays biases or normalisation parameters.
/// Supports LARS, AdamW and SGD.
inline void set_weight_decay(torch::optim::Optimizer& optimizer, double weight_decay) {
  TORCH_CHECK(
      std::isfinite(weight_decay) && weight_decay >= 0,
      "set_weight_decay: weight_decay must be finite and >= 0, got ",
      weight_decay);
  TORCH_CHECK(
      !optimizer.param_groups().empty(), "set_weight_decay: optimizer has no parameter group");
  TORCH_CHECK(
      detail::weight_decay_access(
          optimizer.param_groups()[kDecayGroup].options(), &weight_decay, nullptr),
      "set_weight_decay: expected a LARS, AdamW or SGD optimizer");
}

/// The weight decay of parameter group `group` (LARS, AdamW or SGD).
inline double weight_decay(const torch::optim::Optimizer& optimizer, size_t group = kDecayGroup) {
  TORCH_CHECK(
      group < optimizer.param_groups().size(),
      "weight_decay: group ",
      group,
      " out of range, optimizer has ",
      optimizer.param_groups().size(),
      " groups");
  double wd = 0;
  auto& options =
      const_cast<torch::optim::OptimizerOptions&>(optimizer.param_groups()[group].options());
  TORCH_CHECK(
      detail::weight_decay_access(options, nullptr, &wd),
      "weight_decay: expected a LARS, AdamW or SGD optimizer");
  return wd;
}

} // namespace train
} // namespace medcl
