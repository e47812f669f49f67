// Parameter groups, LARS, the optimiser factory and the schedule helpers.
// Interface: include/medcl/train/optim.h.

#include <medcl/train/optim.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace medcl {
namespace train {

// ---------------------------------------------------------------------------------------------
// Parameter groups
// ---------------------------------------------------------------------------------------------

ParameterGroups::ParameterGroups(const torch::nn::Module& module) {
  add(module);
}

ParameterGroups& ParameterGroups::add(const torch::nn::Module& module, const std::string& prefix) {
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) {
      insert(prefix + item.key(), item.value(), item.value().dim() >= 2);
    }
  }
  return *this;
}

ParameterGroups& ParameterGroups::add(const std::string& name, const at::Tensor& parameter) {
  check(name, parameter);
  return insert(name, parameter, parameter.dim() >= 2);
}

ParameterGroups&
ParameterGroups::add(const std::string& name, const at::Tensor& parameter, bool decay) {
  check(name, parameter);
  return insert(name, parameter, decay);
}

int64_t ParameterGroups::numel() const {
  int64_t n = 0;
  for (const auto& p : decay_) {
    n += p.numel();
  }
  for (const auto& p : no_decay_) {
    n += p.numel();
  }
  return n;
}

void ParameterGroups::check(const std::string& name, const at::Tensor& p) {
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

ParameterGroups& ParameterGroups::insert(const std::string& name, const at::Tensor& p, bool decay) {
  if (!seen_.insert(p.unsafeGetTensorImpl()).second) {
    return *this;
  }
  (decay ? decay_ : no_decay_).push_back(p);
  (decay ? decay_names_ : no_decay_names_).push_back(name);
  return *this;
}

ParameterGroups parameter_groups(const torch::nn::Module& module) {
  return ParameterGroups(module);
}

// ---------------------------------------------------------------------------------------------
// LARS
// ---------------------------------------------------------------------------------------------

void LARSOptions::serialize(torch::serialize::InputArchive& archive) {
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

void LARSOptions::serialize(torch::serialize::OutputArchive& archive) const {
  archive.write("lr", c10::IValue(lr()));
  archive.write("momentum", c10::IValue(momentum()));
  archive.write("weight_decay", c10::IValue(weight_decay()));
  archive.write("trust_coefficient", c10::IValue(trust_coefficient()));
  archive.write("eps", c10::IValue(eps()));
  archive.write("exclude_from_adaptation", c10::IValue(exclude_from_adaptation()));
}

void LARSParamState::serialize(torch::serialize::InputArchive& archive) {
  at::Tensor buffer;
  if (archive.try_read("momentum_buffer", buffer, /*is_buffer=*/true)) {
    momentum_buffer(buffer);
  }
}

void LARSParamState::serialize(torch::serialize::OutputArchive& archive) const {
  if (momentum_buffer().defined()) {
    archive.write("momentum_buffer", momentum_buffer(), /*is_buffer=*/true);
  }
}

LARS::LARS(std::vector<torch::optim::OptimizerParamGroup> param_groups, LARSOptions defaults)
    : torch::optim::Optimizer(std::move(param_groups), std::make_unique<LARSOptions>(defaults)) {
  for (const auto& group : param_groups_) {
    check_options(static_cast<const LARSOptions&>(group.options()));
  }
}

LARS::LARS(std::vector<at::Tensor> params, LARSOptions defaults)
    : LARS(make_single_group(std::move(params)), defaults) {}

at::Tensor LARS::step(LossClosure closure) {
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
        auto trust =
            at::where(adapt, wn.mul(o.trust_coefficient()).div(gn.add(o.eps())), at::ones_like(wn));
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

void LARS::save(torch::serialize::OutputArchive& archive) const {
  torch::optim::serialize<LARSParamState, LARSOptions>(archive, *this);
}

void LARS::load(torch::serialize::InputArchive& archive) {
  torch::optim::serialize<LARSParamState, LARSOptions>(archive, *this);
}

std::vector<torch::optim::OptimizerParamGroup> LARS::make_single_group(
    std::vector<at::Tensor> params) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::move(params));
  return groups;
}

void LARS::check_options(const LARSOptions& o) {
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

// ---------------------------------------------------------------------------------------------
// Factory and helpers
// ---------------------------------------------------------------------------------------------

Json OptimizerOptions::describe() const {
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

std::unique_ptr<torch::optim::Optimizer> make_optimizer(
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

std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const torch::nn::Module& module,
    const OptimizerOptions& options) {
  return make_optimizer(ParameterGroups(module), options);
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  TORCH_CHECK(
      std::isfinite(lr) && lr >= 0, "set_learning_rate: lr must be finite and >= 0, got ", lr);
  for (auto& group : optimizer.param_groups()) {
    group.options().set_lr(lr);
  }
}

double learning_rate(const torch::optim::Optimizer& optimizer) {
  TORCH_CHECK(!optimizer.param_groups().empty(), "learning_rate: optimizer has no parameter group");
  return optimizer.param_groups().front().options().get_lr();
}

namespace {

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

bool weight_decay_access(torch::optim::OptimizerOptions& options, const double* set, double* get) {
  return try_weight_decay<LARSOptions>(options, set, get) ||
      try_weight_decay<torch::optim::AdamWOptions>(options, set, get) ||
      try_weight_decay<torch::optim::SGDOptions>(options, set, get);
}

} // namespace

void set_weight_decay(torch::optim::Optimizer& optimizer, double weight_decay) {
  TORCH_CHECK(
      std::isfinite(weight_decay) && weight_decay >= 0,
      "set_weight_decay: weight_decay must be finite and >= 0, got ",
      weight_decay);
  TORCH_CHECK(
      !optimizer.param_groups().empty(), "set_weight_decay: optimizer has no parameter group");
  TORCH_CHECK(
      weight_decay_access(optimizer.param_groups()[kDecayGroup].options(), &weight_decay, nullptr),
      "set_weight_decay: expected a LARS, AdamW or SGD optimizer");
}

double weight_decay(const torch::optim::Optimizer& optimizer, size_t group) {
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
      weight_decay_access(options, nullptr, &wd),
      "weight_decay: expected a LARS, AdamW or SGD optimizer");
  return wd;
}

} // namespace train
} // namespace medcl
