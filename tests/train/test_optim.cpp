#include <medcl/train/optim.h>
#include <medcl/train/schedule.h>

#include <torch/torch.h>
#include "catch.h"

#include <cmath>
#include <sstream>
#include <vector>

using medcl::train::CosineSchedule;
using medcl::train::CosineScheduleOptions;
using medcl::train::LARS;
using medcl::train::LARSOptions;
using medcl::train::OptimizerOptions;
using medcl::train::ParameterGroups;
using medcl_test::Contains;

namespace {

// Reference LARS for one parameter, written independently with plain loops in double.
struct RefLars {
  std::vector<double> w, v;
  void step(
      const std::vector<double>& grad,
      double lr,
      double m,
      double wd,
      double eta,
      double eps,
      bool excluded) {
    std::vector<double> g(grad);
    double trust = 1.0;
    if (!excluded) {
      for (size_t i = 0; i < g.size(); ++i) {
        g[i] += wd * w[i];
      }
      double wn = 0, gn = 0;
      for (size_t i = 0; i < g.size(); ++i) {
        wn += w[i] * w[i];
        gn += g[i] * g[i];
      }
      wn = std::sqrt(wn);
      gn = std::sqrt(gn);
      if (wn > 0 && gn > 0) {
        trust = eta * wn / (gn + eps);
      }
    }
    if (v.empty()) {
      v.assign(w.size(), 0.0);
    }
    for (size_t i = 0; i < g.size(); ++i) {
      v[i] = m * v[i] + lr * trust * g[i];
      w[i] -= v[i];
    }
  }
};

std::vector<double> to_vec(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kDouble).contiguous().view(-1);
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double max_abs_diff(const torch::Tensor& t, const std::vector<double>& ref) {
  auto v = to_vec(t);
  REQUIRE(v.size() == ref.size());
  double d = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    d = std::max(d, std::abs(v[i] - ref[i]));
  }
  return d;
}

torch::Tensor leaf(torch::Tensor t) {
  return t.to(torch::kDouble).set_requires_grad(true);
}

} // namespace

TEST_CASE("LARS follows the documented update, computed by hand", "[train][optim][lars]") {
  torch::manual_seed(3);
  const double wd = 0.01, eta = 0.02, eps = 1e-8, m = 0.9;
  // Decay group: an ordinary weight, a zero weight (||w|| = 0) and one whose gradient is zero.
  auto w = leaf(torch::randn({3, 4}));
  auto w_zero = leaf(torch::zeros({2, 2}));
  auto w_nograd = leaf(torch::randn({5}));
  // Excluded group: has a weight decay in its options that must be ignored.
  auto b = leaf(torch::randn({4}));
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<torch::Tensor>{w, w_zero, w_nograd},
      std::make_unique<LARSOptions>(
          LARSOptions(0.5).momentum(m).weight_decay(wd).trust_coefficient(eta).eps(eps)));
  groups.emplace_back(
      std::vector<torch::Tensor>{b},
      std::make_unique<LARSOptions>(
          LARSOptions(0.5).momentum(m).weight_decay(0.5).exclude_from_adaptation(true)));
  LARS opt(std::move(groups), LARSOptions(0.5));

  RefLars rw{to_vec(w), {}}, rz{to_vec(w_zero), {}}, rn{to_vec(w_nograd), {}}, rb{to_vec(b), {}};
  const std::vector<double> lrs = {0.5, 0.2, 0.7};
  for (size_t s = 0; s < lrs.size(); ++s) {
    medcl::train::set_learning_rate(opt, lrs[s]);
    auto gw = torch::randn({3, 4}, torch::kDouble);
    auto gz = torch::randn({2, 2}, torch::kDouble);
    auto gb = torch::randn({4}, torch::kDouble);
    w.mutable_grad() = gw.clone();
    w_zero.mutable_grad() = gz.clone();
    w_nograd.mutable_grad() = torch::zeros({5}, torch::kDouble);
    b.mutable_grad() = gb.clone();
    opt.step();
    rw.step(to_vec(gw), lrs[s], m, wd, eta, eps, false);
    rz.step(to_vec(gz), lrs[s], m, wd, eta, eps, false);
    // ||g|| = ||wd * w|| > 0 here: the zero-gradient case needs wd = 0, checked below.
    rn.step(std::vector<double>(5, 0.0), lrs[s], m, wd, eta, eps, false);
    rb.step(to_vec(gb), lrs[s], m, wd, eta, eps, true);
    REQUIRE(max_abs_diff(w, rw.w) < 1e-12);
    REQUIRE(max_abs_diff(w_zero, rz.w) < 1e-12);
    REQUIRE(max_abs_diff(w_nograd, rn.w) < 1e-12);
    REQUIRE(max_abs_diff(b, rb.w) < 1e-12);
  }
  // The zero-norm weight moved with trust ratio 1 (not 0 and not NaN).
  REQUIRE(w_zero.abs().sum().item<double>() > 0.1);
  REQUIRE(torch::isfinite(w_zero).all().item<bool>());
  // The velocity is the state: one momentum buffer per parameter with a gradient.
  REQUIRE(opt.state().size() == 4);

  SECTION("zero gradient without weight decay: trust 1, nothing moves, no NaN") {
    auto p = leaf(torch::randn({3}));
    auto before = p.detach().clone();
    LARS z(std::vector<torch::Tensor>{p}, LARSOptions(1.0).momentum(0.0).eps(0.0));
    p.mutable_grad() = torch::zeros({3}, torch::kDouble);
    z.step();
    REQUIRE(torch::equal(p.detach(), before));
  }
  SECTION("momentum 0: w -= lr * trust * g") {
    auto p = leaf(torch::randn({6}));
    RefLars r{to_vec(p), {}};
    LARS z(std::vector<torch::Tensor>{p}, LARSOptions(0.3).momentum(0.0).weight_decay(0.1));
    auto g = torch::randn({6}, torch::kDouble);
    p.mutable_grad() = g.clone();
    z.step();
    r.step(to_vec(g), 0.3, 0.0, 0.1, 0.001, 1e-8, false);
    REQUIRE(max_abs_diff(p, r.w) < 1e-13);
    REQUIRE(z.state().empty());
  }
  SECTION("bad options") {
    auto p = leaf(torch::randn({2}));
    REQUIRE_THROWS_WITH(
        LARS(std::vector<torch::Tensor>{p}, LARSOptions(0.1).momentum(1.0)),
        Contains("momentum must be in [0, 1), got 1"));
    REQUIRE_THROWS_WITH(
        LARS(std::vector<torch::Tensor>{p}, LARSOptions(-1.0)),
        Contains("lr must be finite and >= 0, got -1"));
    REQUIRE_THROWS_WITH(
        LARS(std::vector<torch::Tensor>{p}, LARSOptions(0.1).trust_coefficient(0)),
        Contains("trust_coefficient must be finite and > 0"));
  }
}

TEST_CASE("LARS state round-trips through its own save and load", "[train][optim][lars]") {
  torch::manual_seed(4);
  auto w = leaf(torch::randn({4, 3}));
  auto b = leaf(torch::randn({3}));
  auto make = [](torch::Tensor pw, torch::Tensor pb) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(
        std::vector<torch::Tensor>{pw},
        std::make_unique<LARSOptions>(LARSOptions(0.1).weight_decay(1e-4)));
    g.emplace_back(
        std::vector<torch::Tensor>{pb},
        std::make_unique<LARSOptions>(LARSOptions(0.1).exclude_from_adaptation(true)));
    return std::make_unique<LARS>(std::move(g), LARSOptions(0.1));
  };
  auto opt = make(w, b);
  for (int s = 0; s < 3; ++s) {
    w.mutable_grad() = torch::randn({4, 3}, torch::kDouble);
    b.mutable_grad() = torch::randn({3}, torch::kDouble);
    opt->step();
  }
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive out;
    opt->save(out);
    out.save_to(buffer);
  }
  // A copy of the parameters with a fresh optimiser that loads the saved velocity, and one that
  // does not: the same next gradient gives the original's update only with the loaded state.
  auto w2 = leaf(w.detach().clone()), b2 = leaf(b.detach().clone());
  auto w3 = leaf(w.detach().clone()), b3 = leaf(b.detach().clone());
  auto loaded = make(w2, b2);
  auto fresh = make(w3, b3);
  {
    torch::serialize::InputArchive in;
    in.load_from(buffer);
    loaded->load(in);
  }
  REQUIRE(loaded->state().size() == 2);
  auto gw = torch::randn({4, 3}, torch::kDouble), gb = torch::randn({3}, torch::kDouble);
  for (auto* p : {&w, &w2, &w3}) {
    p->mutable_grad() = gw.clone();
  }
  for (auto* p : {&b, &b2, &b3}) {
    p->mutable_grad() = gb.clone();
  }
  opt->step();
  loaded->step();
  fresh->step();
  REQUIRE(torch::equal(w.detach(), w2.detach()));
  REQUIRE(torch::equal(b.detach(), b2.detach()));
  REQUIRE_FALSE(torch::allclose(w.detach(), w3.detach()));
  // A saved state does not load into an optimiser with another group layout.
  auto other = std::make_unique<LARS>(
      std::vector<torch::Tensor>{leaf(torch::randn({4, 3}))}, LARSOptions(0.1));
  torch::serialize::InputArchive in;
  buffer.seekg(0);
  in.load_from(buffer);
  REQUIRE_THROWS_WITH(other->load(in), Contains("different number of parameter groups"));
}

TEST_CASE(
    "parameter groups split biases and normalisation parameters from weights",
    "[train][optim]") {
  torch::nn::Sequential net(
      torch::nn::Linear(4, 8),
      torch::nn::BatchNorm1d(8),
      torch::nn::ReLU(),
      torch::nn::Linear(8, 2));
  auto groups = medcl::train::parameter_groups(*net);
  REQUIRE(groups.decay_names() == std::vector<std::string>{"0.weight", "3.weight"});
  REQUIRE(
      groups.no_decay_names() ==
      std::vector<std::string>{"0.bias", "1.weight", "1.bias", "3.bias"});
  REQUIRE(groups.size() == 6);
  REQUIRE(groups.numel() == 4 * 8 + 8 + 8 + 8 + 8 * 2 + 2);

  // Frozen parameters (a teacher) are skipped; a module added twice is kept once; an extra scalar
  // goes to no-decay, and an explicit choice overrides the rule.
  torch::nn::Linear frozen(3, 3);
  for (auto& p : frozen->parameters()) {
    p.set_requires_grad(false);
  }
  auto scale = torch::zeros({}, torch::requires_grad());
  auto table = torch::randn({5}, torch::requires_grad());
  ParameterGroups g2;
  g2.add(*net, "student.")
      .add(*net, "again.")
      .add(*frozen, "teacher.")
      .add("logit_scale", scale)
      .add("table", table, true);
  REQUIRE(g2.size() == 8);
  REQUIRE(g2.no_decay_names().back() == "logit_scale");
  REQUIRE(
      g2.decay_names() ==
      std::vector<std::string>{"student.0.weight", "student.3.weight", "table"});
  REQUIRE_THROWS_WITH(
      ParameterGroups().add("w", torch::randn({2, 2})),
      Contains("must be a leaf tensor that requires grad"));
  REQUIRE_THROWS_WITH(
      medcl::train::make_optimizer(ParameterGroups(), OptimizerOptions()),
      Contains("no trainable parameters"));
}

TEST_CASE(
    "make_optimizer builds decay and no-decay groups, helpers set lr and weight decay",
    "[train][optim]") {
  torch::manual_seed(5);
  torch::nn::Sequential net(
      torch::nn::Linear(4, 8), torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})));
  auto groups = medcl::train::parameter_groups(*net);
  for (const std::string kind : {"adamw", "sgd", "lars"}) {
    auto opt = medcl::train::make_optimizer(
        groups, OptimizerOptions().kind(kind).lr(0.2).weight_decay(0.05));
    REQUIRE(opt->param_groups().size() == 2);
    REQUIRE(opt->param_groups()[medcl::train::kDecayGroup].params().size() == 1);
    REQUIRE(opt->param_groups()[medcl::train::kNoDecayGroup].params().size() == 3);
    REQUIRE(medcl::train::weight_decay(*opt) == 0.05);
    REQUIRE(medcl::train::weight_decay(*opt, medcl::train::kNoDecayGroup) == 0.0);
    medcl::train::set_learning_rate(*opt, 0.01);
    for (const auto& g : opt->param_groups()) {
      REQUIRE(g.options().get_lr() == 0.01);
    }
    REQUIRE(medcl::train::learning_rate(*opt) == 0.01);
    medcl::train::set_weight_decay(*opt, 0.4);
    REQUIRE(medcl::train::weight_decay(*opt) == 0.4);
    REQUIRE(medcl::train::weight_decay(*opt, medcl::train::kNoDecayGroup) == 0.0);
    if (kind == "lars") {
      auto& nd = static_cast<LARSOptions&>(opt->param_groups()[1].options());
      REQUIRE(nd.exclude_from_adaptation());
      REQUIRE_FALSE(
          static_cast<LARSOptions&>(opt->param_groups()[0].options()).exclude_from_adaptation());
      REQUIRE(dynamic_cast<LARS*>(opt.get()) != nullptr);
    }
    auto d = OptimizerOptions().kind(kind).describe();
    REQUIRE(d.at("kind").as_string() == kind);
    REQUIRE(d.contains("lr"));
    REQUIRE(d.contains("trust_coefficient") == (kind == "lars"));
    REQUIRE(d.contains("beta2") == (kind == "adamw"));
  }
  // AdamW's decoupled decay acts on the decay group only: with zero gradients, weights shrink by
  // (1 - lr * wd) and biases and LayerNorm parameters do not move.
  auto opt = medcl::train::make_optimizer(
      groups, OptimizerOptions().kind("adamw").lr(0.1).weight_decay(0.5));
  std::vector<torch::Tensor> before;
  for (const auto& p : net->parameters()) {
    before.push_back(p.detach().clone());
    p.mutable_grad() = torch::zeros_like(p);
  }
  opt->step();
  auto params = net->parameters();
  REQUIRE(torch::allclose(params[0], before[0] * (1 - 0.1 * 0.5), 1e-6, 1e-7));
  for (size_t i = 1; i < params.size(); ++i) {
    REQUIRE(torch::equal(params[i].detach(), before[i]));
  }
  REQUIRE_THROWS_WITH(
      medcl::train::make_optimizer(groups, OptimizerOptions().kind("adam")),
      Contains("kind must be \"adamw\", \"sgd\" or \"lars\", got \"adam\""));
  REQUIRE_THROWS_WITH(
      medcl::train::make_optimizer(groups, OptimizerOptions().weight_decay(-1)),
      Contains("weight_decay must be finite and >= 0, got -1"));
  REQUIRE_THROWS_WITH(
      medcl::train::set_learning_rate(*opt, std::nan("")),
      Contains("set_learning_rate: lr must be finite"));
  REQUIRE_THROWS_WITH(
      medcl::train::set_weight_decay(*opt, -0.1),
      Contains("set_weight_decay: weight_decay must be finite and >= 0"));
  torch::optim::Adam adam(net->parameters());
  REQUIRE_THROWS_WITH(
      medcl::train::set_weight_decay(adam, 0.1),
      Contains("expected a LARS, AdamW or SGD optimizer"));
}

TEST_CASE(
    "cosine schedule with warm-up gives the documented value at every step",
    "[train][schedule]") {
  const double pi = std::acos(-1.0);
  // W = 10 warm-up steps from 0 to 1, cosine from 1 to 0.1 over steps 10..109.
  CosineSchedule s(CosineScheduleOptions(1.0, 0.1, 110).warmup_steps(10).warmup_start(0.0));
  REQUIRE(s(0) == 0.0);                        // warm-up start
  REQUIRE(s(5) == Approx(0.5).epsilon(1e-15)); // linear
  REQUIRE(s(9) == Approx(0.9).epsilon(1e-15));
  REQUIRE(s(10) == 1.0);           // end of warm-up = base
  const int64_t mid = 10 + 99 / 2; // (s - W) / (T - 1 - W) = 49 / 99
  REQUIRE(s(mid) == Approx(0.1 + 0.9 * (1 + std::cos(pi * 49.0 / 99.0)) / 2).epsilon(1e-14));
  CosineSchedule even({2.0, 0.0, 101}); // midpoint exactly at step 50
  REQUIRE(even(50) == Approx(1.0).epsilon(1e-14));
  REQUIRE(s(108) > 0.1);
  REQUIRE(s(109) == 0.1); // last step
  REQUIRE(s(110) == 0.1); // beyond
  REQUIRE(s(1000000) == 0.1);
  for (int64_t t = 11; t < 110; ++t) {
    REQUIRE(s(t) < s(t - 1)); // monotone decay
  }
  // Increasing schedules (EMA momentum 0.996 -> 1) and no warm-up: step 0 is the base.
  CosineSchedule ema({0.996, 1.0, 1000});
  REQUIRE(ema(0) == 0.996);
  REQUIRE(ema(999) == 1.0);
  REQUIRE(ema(500) > 0.998);
  // Constant, one-step, all-warm-up schedules.
  auto c = CosineSchedule::constant(0.04);
  REQUIRE(c(0) == 0.04);
  REQUIRE(c(12345) == 0.04);
  REQUIRE(c.describe().at("type").as_string() == "constant");
  CosineSchedule all_warm(CosineScheduleOptions(1.0, 0.5, 4).warmup_steps(4).warmup_start(0.2));
  REQUIRE(all_warm(0) == 0.2);
  REQUIRE(all_warm(3) == Approx(0.2 + 0.8 * 3 / 4.0));
  REQUIRE(all_warm(4) == 0.5);
  auto d = s.describe();
  REQUIRE(d.at("type").as_string() == "cosine");
  REQUIRE(d.at("warmup_steps").as_int64() == 10);
  REQUIRE(d.at("final_value").as_double() == 0.1);

  REQUIRE_THROWS_WITH(CosineSchedule({1.0, 0.0, 0}), Contains("total_steps must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(
      CosineSchedule(CosineScheduleOptions(1.0, 0.0, 10).warmup_steps(11)),
      Contains("warmup_steps must be in [0, total_steps = 10], got 11"));
  REQUIRE_THROWS_WITH(CosineSchedule({std::nan(""), 0.0, 10}), Contains("values must be finite"));
  REQUIRE_THROWS_WITH(s(-1), Contains("step must be >= 0, got -1"));
}
