// Data parallelism on medcl::dist: broadcast_parameters, GradientReducer, SyncBatchNorm1d and the
// trainer's process_group option, checked on 2 and 4 real processes (the test runs itself again as
// workers, see launcher.h) against one process on the concatenated batch, with negative
// controls, ranks that disagree, a checkpoint resumed on every rank and a rank killed mid-step.

#include "catch.h"
#include "dist/launcher.h"
#include "dist/worker.h"
#include "support.h"

#include <medcl/dist/data_parallel.h>
#include <medcl/dist/process_group.h>
#include <medcl/dist/sync_batch_norm.h>
#include <medcl/methods/method.h>
#include <medcl/nn/heads.h>
#include <medcl/train/trainer.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using medcl::dist::NamedTensors;
using medcl::dist::ProcessGroup;
using medcl::dist::ProcessGroupOptions;
using medcl::dist::Store;
using medcl_test::all_exited_ok;
using medcl_test::Contains;
using medcl_test::env_or;
using medcl_test::load_tensors;
using medcl_test::offset_of;
using medcl_test::rel_err;
using medcl_test::total;
using medcl_test::worker_group;
using medcl_test::write_text;

constexpr const char* kWorker = "medcl-dist-parallel-worker";

// ---- Shared by the workers and the one-process references -----------------------------------

// Uneven on purpose, with an empty rank at 4.
std::vector<int64_t> rows_per_rank(int64_t world) {
  if (world == 4) {
    return {3, 0, 4, 2};
  }
  return {5, 3};
}

at::Generator generator(uint64_t seed) {
  return at::detail::createCPUGenerator(seed);
}

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  return at::randn(shape, generator(seed), at::TensorOptions().dtype(at::kDouble));
}

std::vector<at::Tensor> values_of(const NamedTensors& named) {
  std::vector<at::Tensor> out;
  for (const auto& kv : named) {
    out.push_back(kv.second.detach().clone());
  }
  return out;
}

medcl_test::Launch make_launch(int world, const std::string& dir, const std::string& scenario) {
  medcl_test::Launch launch;
  launch.world_size = world;
  launch.dir = dir;
  launch.worker_test = kWorker;
  launch.deadline = std::chrono::seconds(120);
  launch.env["MEDCL_DIST_SCENARIO"] = scenario;
  launch.env["MEDCL_DIST_DIR"] = dir;
  return launch;
}

// ---- broadcast_parameters and GradientReducer -----------------------------------------------

// A model whose initialisation and running statistics depend on `seed` and `fill`.
torch::nn::Sequential make_model(uint64_t seed, double fill) {
  torch::manual_seed(seed);
  torch::nn::Sequential model(
      torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4), torch::nn::Linear(4, 2));
  model->to(at::kDouble);
  auto bn = model[1]->as<torch::nn::BatchNorm1d>();
  bn->running_mean.fill_(fill);
  bn->num_batches_tracked.fill_(fill);
  return model;
}

// A sum-decomposable loss of the model in eval mode on rows [offset, offset + n) of a batch of
// `n_total` rows: the sum over ranks is the one-process loss.
at::Tensor model_loss(torch::nn::Sequential& model, int64_t offset, int64_t n, int64_t n_total) {
  const auto x = randn({n_total, 3}, 77).narrow(0, offset, n);
  const auto z = model->forward(x);
  return (z.tanh() * z).sum() / static_cast<double>(n_total);
}

// The hand-made parameters of the reducer test: two dtypes, several buckets, and `d`, whose
// gradient rank 1 leaves undefined.
NamedTensors reducer_parameters() {
  return {
      {"a", torch::zeros({3, 4}, at::kDouble).requires_grad_(true)},
      {"b", torch::zeros({5}, at::kDouble).requires_grad_(true)},
      {"c", torch::zeros({2, 2}, at::kFloat).requires_grad_(true)},
      {"d", torch::zeros({7}, at::kDouble).requires_grad_(true)}};
}

// Integer-valued, so that sums in any order are exact.
at::Tensor rank_gradient(const at::Tensor& p, int64_t rank, size_t i) {
  return (torch::arange(p.numel(), at::kDouble).view(p.sizes()) +
          static_cast<double>((rank + 1) * (i + 1)))
      .to(p.scalar_type());
}

bool has_gradient(int64_t rank, size_t i) {
  return !(rank == 1 && i == 3);
}

void reduce_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  std::vector<at::Tensor> out;

  // Differently initialised replicas (rank 0's seed is 100).
  auto model = make_model(100 + rank, static_cast<double>(rank + 1));
  medcl::dist::broadcast_parameters(*model, group);
  for (const auto& t : values_of(medcl::dist::parameters_and_buffers(*model))) {
    out.push_back(t);
  }

  // Real gradients of a sum-decomposable loss, reduced.
  const auto rows = rows_per_rank(group.size());
  model->eval();
  medcl::dist::GradientReducer model_reducer(*model, group);
  model_loss(model, offset_of(rows, rank), rows[rank], total(rows)).backward();
  model_reducer.reduce();
  for (const auto& p : model->parameters()) {
    out.push_back(p.grad().clone());
  }

  // The same real gradients with the buckets reduced during backward (overlap, the default,
  // above) and after it, over two steps without zero_grad (the second backward adds to the
  // reduced gradients), with buckets small enough that several start during backward; `extra`
  // (last, so in overlap's first bucket) takes part on rank 0 only: on the other ranks its
  // bucket, and so every later one, starts in reduce().
  for (const bool overlap : {false, true}) {
    auto m = make_model(100, 1.0);
    m->eval();
    auto params = medcl::dist::trainable_parameters(*m);
    auto extra = torch::full({3}, 1.5, at::kDouble).requires_grad_(true);
    params.emplace_back("extra", extra);
    medcl::dist::GradientReducer r(
        params,
        group,
        medcl::dist::GradientReducerOptions().overlap(overlap).bucket_bytes(40).first_bucket_bytes(
            16));
    out.push_back(torch::tensor({r.num_buckets()}, at::kLong));
    for (int k = 0; k < 2; ++k) {
      auto loss = model_loss(m, offset_of(rows, rank), rows[rank], total(rows));
      if (rank == 0) {
        loss = loss + (extra * extra).sum();
      }
      loss.backward();
      r.reduce();
      for (const auto& kv : params) {
        out.push_back(kv.second.grad().clone());
      }
    }
  }

  // Hand-made gradients: the exact sum, several buckets, a gradient missing on rank 1.
  for (const bool average : {false, true}) {
    auto params = reducer_parameters();
    medcl::dist::GradientReducer reducer(
        params,
        group,
        medcl::dist::GradientReducerOptions().bucket_bytes(64).average(average).overlap(average));
    for (size_t i = 0; i < params.size(); ++i) {
      if (has_gradient(rank, i)) {
        params[i].second.mutable_grad() = rank_gradient(params[i].second, rank, i);
      }
    }
    reducer.reduce();
    for (const auto& kv : params) {
      out.push_back(kv.second.grad().clone());
    }
    out.push_back(torch::tensor({reducer.num_buckets(), reducer.bytes_last_step()}, at::kLong));
  }
  torch::save(out, dir + "/reduce." + std::to_string(rank) + ".pt");
}

void check_reduce_results(const std::string& dir, int64_t world) {
  std::vector<std::vector<at::Tensor>> results;
  for (int64_t r = 0; r < world; ++r) {
    results.push_back(load_tensors(dir + "/reduce." + std::to_string(r) + ".pt"));
  }
  // Every replica is rank 0's, bitwise (parameters and buffers).
  auto reference = make_model(100, 1.0);
  const auto expected = values_of(medcl::dist::parameters_and_buffers(*reference));
  const size_t n_tensors = expected.size();
  REQUIRE(n_tensors == 9); // 6 parameters, 3 buffers
  for (int64_t r = 0; r < world; ++r) {
    INFO("rank " << r);
    for (size_t i = 0; i < n_tensors; ++i) {
      CHECK(results[r][i].equal(expected[i]));
    }
  }
  // Reduced gradients of the real loss: the one-process gradient.
  reference->eval();
  const auto rows = rows_per_rank(world);
  model_loss(reference, 0, total(rows), total(rows)).backward();
  const auto ref_params = reference->parameters();
  for (int64_t r = 0; r < world; ++r) {
    INFO("rank " << r);
    for (size_t i = 0; i < ref_params.size(); ++i) {
      CHECK(rel_err(results[r][n_tensors + i], ref_params[i].grad()) < 1e-12);
    }
  }
  // Overlap off and on: the same gradients in both steps, the same on every rank. Buckets (6 model
  // parameters and `extra`): in order, at most 40 bytes, 6; with overlap last to first, closed
  // once they hold 16 bytes (the first) or 40: {extra}, {2.bias, 2.weight}, {1.bias, 1.weight},
  // {0.bias, 0.weight}, 4.
  size_t pos = n_tensors + ref_params.size();
  const size_t n_params = ref_params.size() + 1;
  const size_t per_run = 1 + 2 * n_params;
  for (int64_t r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK(results[r][pos].item<int64_t>() == 6);
    CHECK(results[r][pos + per_run].item<int64_t>() == 4);
    for (size_t i = 0; i < 2 * n_params; ++i) {
      INFO("tensor " << i);
      // Two ranks: a + b either way, bitwise; four: Gloo's ring adds in an order that follows
      // the bucket layout, so the last bits may differ.
      if (world == 2) {
        CHECK(results[r][pos + 1 + i].equal(results[r][pos + per_run + 1 + i]));
      } else {
        CHECK(rel_err(results[r][pos + 1 + i], results[r][pos + per_run + 1 + i]) < 1e-14);
      }
      CHECK(results[r][pos + per_run + 1 + i].equal(results[0][pos + per_run + 1 + i]));
    }
    // Step 1: the one-process gradient (extra: rank 0's 2 · 1.5); step 2 adds W times step 1's
    // to the new sum (extra: rank 0's second 3 only).
    for (size_t i = 0; i < n_params; ++i) {
      const auto step1 =
          i + 1 < n_params ? ref_params[i].grad() : torch::full({3}, 3.0, at::kDouble);
      CHECK(rel_err(results[r][pos + 1 + i], step1) < 1e-12);
      CHECK(
          rel_err(results[r][pos + 1 + n_params + i], step1 * static_cast<double>(world + 1)) <
          1e-12);
    }
  }
  pos += 2 * per_run;

  // Hand-made gradients: exact sums (and exact averages: the world size is a power of 2).
  const auto params = reducer_parameters();
  for (const bool average : {false, true}) {
    for (size_t i = 0; i < params.size(); ++i) {
      auto sum = torch::zeros_like(params[i].second);
      for (int64_t r = 0; r < world; ++r) {
        if (has_gradient(r, i)) {
          sum += rank_gradient(params[i].second, r, i);
        }
      }
      if (average) {
        sum /= static_cast<double>(world);
      }
      for (int64_t r = 0; r < world; ++r) {
        INFO("parameter " << params[i].first << ", rank " << r << ", average " << average);
        CHECK(results[r][pos + i].scalar_type() == params[i].second.scalar_type());
        CHECK(results[r][pos + i].equal(sum));
      }
    }
    // Buckets of at most 64 bytes: a (96 bytes, alone), b, d (doubles), c (float); with overlap
    // (average here) last to first, the first closed once it holds 256 KiB: {d, b, a}, {c}.
    for (int64_t r = 0; r < world; ++r) {
      const auto counts = results[r][pos + params.size()];
      CHECK(counts[0].item<int64_t>() == (average ? 2 : 4));
      CHECK(counts[1].item<int64_t>() == (12 + 5 + 7) * 8 + 4 * 4);
    }
    pos += params.size() + 1;
  }
}

// ---- SyncBatchNorm1d --------------------------------------------------------------------------

constexpr int64_t kFeatures = 3;

// The weights every rank and the reference use.
void set_affine(const at::Tensor& weight, const at::Tensor& bias) {
  torch::NoGradGuard no_grad;
  weight.copy_(torch::tensor({1.5, -0.5, 2.0}, at::kDouble));
  bias.copy_(torch::tensor({0.1, 0.2, -0.3}, at::kDouble));
}

struct BnProblem {
  at::Tensor x;  // [N, C]
  at::Tensor c;  // [N, C]
  at::Tensor d;  // [N, C]
  at::Tensor x3; // [N, C, 2]
  at::Tensor c3; // [N, C, 2]
};

BnProblem bn_problem(int64_t n) {
  BnProblem p;
  p.x = randn({n, kFeatures}, 11) * 3.0 + 5.0; // an offset, as activations have
  p.c = randn({n, kFeatures}, 12);
  p.d = randn({n, kFeatures}, 13);
  p.x3 = randn({n, kFeatures, 2}, 14) - 2.0;
  p.c3 = randn({n, kFeatures, 2}, 15);
  return p;
}

// Two training passes of a 2D batch norm and one of a 3D one (no affine, cumulative average);
// returns {y1, y2, x1 grad, x2 grad, weight grad, bias grad, running mean, running var, batches,
// eval output, y3, x3 grad, running mean 3, running var 3}. `rows` of the global problem:
// [offset, offset + n).
template <class Bn2, class Bn3>
std::vector<at::Tensor>
run_batch_norm(Bn2& bn, Bn3& bn3, const BnProblem& p, int64_t offset, int64_t n) {
  const auto x1 = p.x.narrow(0, offset, n).clone().requires_grad_(true);
  const auto x2 = (p.x.narrow(0, offset, n) * 2.0 - 1.0).clone().requires_grad_(true);
  const auto c = p.c.narrow(0, offset, n);
  const auto d = p.d.narrow(0, offset, n);
  const auto y1 = bn->forward(x1);
  const auto y2 = bn->forward(x2);
  const auto loss = (y1 * c).sum() + 0.5 * (y1 * y1 * d).sum() + (y2 * d).sum();
  loss.backward();
  bn->eval();
  const auto eval_out = bn->forward(x1.detach());
  bn->train();

  const auto x3 = p.x3.narrow(0, offset, n).clone().requires_grad_(true);
  const auto y3 = bn3->forward(x3);
  (y3 * p.c3.narrow(0, offset, n)).sum().backward();
  return {
      y1.detach(),
      y2.detach(),
      x1.grad(),
      x2.grad(),
      bn->weight.grad(),
      bn->bias.grad(),
      bn->running_mean.clone(),
      bn->running_var.clone(),
      bn->num_batches_tracked.clone(),
      eval_out,
      y3.detach(),
      x3.grad(),
      bn3->running_mean.clone(),
      bn3->running_var.clone()};
}

void sync_bn_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  const auto rows = rows_per_rank(group.size());
  const auto p = bn_problem(total(rows));
  medcl::dist::SyncBatchNorm1d bn(
      medcl::dist::SyncBatchNorm1dOptions(kFeatures).process_group(group));
  bn->to(at::kDouble);
  set_affine(bn->weight, bn->bias);
  medcl::dist::SyncBatchNorm1d bn3(medcl::dist::SyncBatchNorm1dOptions(kFeatures)
                                       .affine(false)
                                       .momentum(std::nullopt)
                                       .process_group(group));
  bn3->to(at::kDouble);
  auto out = run_batch_norm(bn, bn3, p, offset_of(rows, rank), rows[rank]);

  // The negative control: BatchNorm1d on this rank's rows only.
  at::Tensor control = torch::zeros({0, kFeatures}, at::kDouble);
  if (rows[rank] >= 2) {
    torch::nn::BatchNorm1d local(kFeatures);
    local->to(at::kDouble);
    set_affine(local->weight, local->bias);
    control = local->forward(p.x.narrow(0, offset_of(rows, rank), rows[rank])).detach();
  }
  out.push_back(control);
  torch::save(out, dir + "/bn." + std::to_string(rank) + ".pt");
}

std::vector<at::Tensor> reference_batch_norm(int64_t n) {
  const auto p = bn_problem(n);
  torch::nn::BatchNorm1d bn(kFeatures);
  bn->to(at::kDouble);
  set_affine(bn->weight, bn->bias);
  torch::nn::BatchNorm1d bn3(
      torch::nn::BatchNorm1dOptions(kFeatures).affine(false).momentum(c10::nullopt));
  bn3->to(at::kDouble);
  return run_batch_norm(bn, bn3, p, 0, n);
}

void check_sync_bn_results(const std::string& dir, int64_t world) {
  const auto rows = rows_per_rank(world);
  const auto ref = reference_batch_norm(total(rows));
  std::vector<std::vector<at::Tensor>> results;
  for (int64_t r = 0; r < world; ++r) {
    results.push_back(load_tensors(dir + "/bn." + std::to_string(r) + ".pt"));
    REQUIRE(results.back().size() == 15);
  }
  auto concatenated = [&](size_t i) {
    std::vector<at::Tensor> parts;
    for (int64_t r = 0; r < world; ++r) {
      parts.push_back(results[r][i]);
    }
    return torch::cat(parts);
  };
  auto summed = [&](size_t i) {
    auto s = results[0][i].clone();
    for (int64_t r = 1; r < world; ++r) {
      s += results[r][i];
    }
    return s;
  };
  // Rows: outputs, input gradients and the eval output, in rank order.
  for (size_t i : {0, 1, 2, 3, 9, 10, 11}) {
    INFO("result " << i);
    CHECK(rel_err(concatenated(i), ref[i]) < 1e-12);
  }
  // Parameters: every rank's share, summed over ranks (what GradientReducer does).
  CHECK(rel_err(summed(4), ref[4]) < 1e-12);
  CHECK(rel_err(summed(5), ref[5]) < 1e-12);
  // Running statistics: the global ones, the same on every rank.
  for (int64_t r = 0; r < world; ++r) {
    INFO("rank " << r);
    for (size_t i : {6, 7, 12, 13}) {
      CHECK(rel_err(results[r][i], ref[i]) < 1e-12);
      CHECK(results[r][i].equal(results[0][i]));
    }
    CHECK(results[r][8].item<double>() == 2);
  }
  // The negative control, on the ranks with at least 2 rows: per-rank statistics differ.
  for (int64_t r = 0; r < world; ++r) {
    if (rows[r] < 2) {
      continue;
    }
    const auto control = results[r][14];
    const auto expected = ref[0].narrow(0, offset_of(rows, r), rows[r]);
    const double err = rel_err(control, expected);
    INFO("negative control on rank " << r << ": relative error " << err);
    CHECK(err > 1e-2);
  }
}

// The batch normalisations of a module, by kind: {torch::nn::BatchNorm1d, SyncBatchNorm1d}.
std::pair<int64_t, int64_t> count_batch_norms(const torch::nn::Module& module) {
  std::pair<int64_t, int64_t> n{0, 0};
  for (const auto& m : module.modules(/*include_self=*/false)) {
    n.first += dynamic_cast<torch::nn::BatchNorm1dImpl*>(m.get()) != nullptr ? 1 : 0;
    n.second += dynamic_cast<medcl::dist::SyncBatchNorm1dImpl*>(m.get()) != nullptr ? 1 : 0;
  }
  return n;
}

// ---- The trainer ------------------------------------------------------------------------------

// The trainer calls MethodBase::set_process_group.
static_assert(medcl::train::detail::HasSetProcessGroup<medcl::MethodBase>::value, "not wired");

constexpr int64_t kIn = 4;
constexpr int64_t kHidden = 6;
constexpr int64_t kOut = 3;
constexpr int64_t kSteps = 3;

// A projection head trained to regress targets: per rank, the sum over its rows of a per-row loss
// divided by the global batch size, so that the ranks' losses sum to the one-process loss.
class TinyMethod : public medcl::MethodBase {
 public:
  // `sync_group` of several ranks: the head's batch normalisation is synchronised over it.
  TinyMethod(int64_t global_rows, const ProcessGroup& sync_group, int64_t exit_at)
      : global_rows_(global_rows), exit_at_(exit_at) {
    head_ = register_module(
        "head",
        medcl::ProjectionHead(
            medcl::ProjectionHeadOptions(kIn, kHidden, kOut).sync_batch_norm(sync_group)));
    to(at::kDouble);
  }
  std::string name() const override {
    return "TinyMethod";
  }
  at::Tensor training_loss(const medcl::MethodBatch& batch, const medcl::StepContext& ctx)
      override {
    if (ctx.step == exit_at_) {
      std::_Exit(3); // a rank killed mid-step
    }
    const auto z = head_->forward(batch.views[0]);
    return (z - batch.views[1]).pow(2).sum() / static_cast<double>(global_rows_);
  }
  at::Tensor backbone_features(const at::Tensor& x) override {
    return head_->forward(x);
  }
  medcl::Json describe() const override {
    auto j = medcl::Json::object();
    j["method"] = name();
    return j;
  }
  medcl::ProjectionHead head_{nullptr};

 private:
  int64_t global_rows_;
  int64_t exit_at_;
};

medcl::train::TrainerOptions trainer_options(const ProcessGroup& group) {
  return medcl::train::TrainerOptions(kSteps)
      .optimizer(medcl::train::OptimizerOptions().kind("adamw").lr(0.05).weight_decay(0.01))
      .clip_grad_norm(0.5)
      .progress(false)
      .process_group(group);
}

// Rows [offset, offset + n) of step `step`'s global batch, the inputs moved by noise drawn from
// `augment` (each rank's own generator).
medcl::MethodBatch tiny_batch(int64_t step, int64_t offset, int64_t n, at::Generator& augment) {
  const int64_t n_total = 8;
  medcl::MethodBatch b;
  const auto noise = at::randn({n, kIn}, augment, at::TensorOptions().dtype(at::kDouble));
  b.views = {
      randn({n_total, kIn}, 500 + step).narrow(0, offset, n) + 0.1 * noise,
      randn({n_total, kOut}, 600 + step).narrow(0, offset, n)};
  return b;
}

std::vector<at::Tensor> parameters_of(TinyMethod& method) {
  std::vector<at::Tensor> out;
  for (const auto& t : medcl::dist::parameters_and_buffers(method)) {
    out.push_back(t.second.detach().clone());
  }
  return out;
}

void trainer_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  const auto rows = rows_per_rank(2);
  const int64_t offset = offset_of(rows, rank);
  const int64_t n = rows[rank];
  std::vector<at::Tensor> out;

  // Uninterrupted; every rank initialised differently (rank 0 with seed 7).
  {
    torch::manual_seed(7 + rank);
    TinyMethod method(8, group, -1);
    // The head's batch normalisation is synchronised over the ranks.
    REQUIRE(count_batch_norms(method) == std::pair<int64_t, int64_t>{0, 1});
    auto augment = generator(1000 + rank);
    medcl::train::Trainer trainer(
        method, trainer_options(group).log_path(dir + "/train." + std::to_string(rank) + ".jsonl"));
    trainer.track("augment", augment);
    // The trainer handed its group to the method (whose losses would gather across the ranks).
    REQUIRE(method.process_group().size() == 2);
    std::vector<double> losses;
    std::vector<double> samples;
    for (int64_t s = 0; s < kSteps; ++s) {
      const auto record = trainer.step(tiny_batch(s, offset, n, augment));
      losses.push_back(record.loss);
      samples.push_back(static_cast<double>(record.samples));
    }
    out.push_back(torch::tensor(losses, at::kDouble));
    out.push_back(torch::tensor(samples, at::kDouble));
    for (const auto& t : parameters_of(method)) {
      out.push_back(t);
    }
  }
  // Two steps, a checkpoint by rank 0 at step 2 ...
  const std::string ckpt = dir + "/run.ckpt";
  {
    torch::manual_seed(7 + rank); // the same run as the uninterrupted one
    TinyMethod method(8, group, -1);
    auto augment = generator(1000 + rank);
    medcl::train::Trainer trainer(method, trainer_options(group));
    trainer.track("augment", augment);
    for (int64_t s = 0; s < 2; ++s) {
      trainer.step(tiny_batch(s, offset, n, augment));
    }
    trainer.save(ckpt);
  }
  // ... resumed on every rank by fresh objects (other weights, other generator states).
  {
    torch::manual_seed(90 + rank);
    TinyMethod method(8, group, -1);
    auto augment = generator(4242);
    medcl::train::Trainer trainer(method, trainer_options(group));
    trainer.track("augment", augment);
    trainer.resume(ckpt);
    REQUIRE(trainer.current_step() == 2);
    trainer.step(tiny_batch(2, offset, n, augment));
    for (const auto& t : parameters_of(method)) {
      out.push_back(t);
    }
  }
  torch::save(out, dir + "/trainer." + std::to_string(rank) + ".pt");
}

void check_trainer_results(const std::string& dir) {
  const auto rows = rows_per_rank(2);
  // One process on the concatenated batches, rank 0's initialisation, each rank's noise drawn
  // from its own generator.
  torch::manual_seed(7);
  TinyMethod method(8, ProcessGroup(), -1);
  medcl::train::Trainer trainer(method, trainer_options(ProcessGroup()));
  std::vector<at::Generator> augment{generator(1000), generator(1001)};
  std::vector<double> losses;
  for (int64_t s = 0; s < kSteps; ++s) {
    std::vector<at::Tensor> x;
    std::vector<at::Tensor> y;
    for (int64_t r = 0; r < 2; ++r) {
      const auto b = tiny_batch(s, offset_of(rows, r), rows[r], augment[r]);
      x.push_back(b.views[0]);
      y.push_back(b.views[1]);
    }
    medcl::MethodBatch batch;
    batch.views = {torch::cat(x), torch::cat(y)};
    const auto record = trainer.step(batch);
    CHECK(record.samples == 8);
    losses.push_back(record.loss);
  }
  const auto expected = parameters_of(method);
  const size_t n_tensors = expected.size();

  for (int64_t r = 0; r < 2; ++r) {
    INFO("rank " << r);
    const auto results = load_tensors(dir + "/trainer." + std::to_string(r) + ".pt");
    REQUIRE(results.size() == 2 + 2 * n_tensors);
    // The logged loss is the global loss, the samples the global batch.
    CHECK(rel_err(results[0], torch::tensor(losses, at::kDouble)) < 1e-12);
    CHECK(results[1].equal(torch::full({kSteps}, 8.0, at::kDouble)));
    for (size_t i = 0; i < n_tensors; ++i) {
      INFO("tensor " << i);
      // Parameters and the synchronised running statistics: the one-process ones.
      CHECK(rel_err(results[2 + i], expected[i]) < 1e-12);
      // Resumed from rank 0's checkpoint at step 2: the uninterrupted run, bit for bit.
      CHECK(results[2 + n_tensors + i].equal(results[2 + i]));
    }
  }
  // The JSON-lines log is rank 0's only.
  CHECK(std::filesystem::exists(dir + "/train.0.jsonl"));
  CHECK_FALSE(std::filesystem::exists(dir + "/train.1.jsonl"));
  CHECK_THAT(medcl_test::read_text_file(dir + "/train.0.jsonl"), Contains("\"samples\":8"));
}

// Rank 1 dies inside step 1; rank 0 records its error and how long it waited.
void trainer_fault_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::milliseconds(3000));
  const int64_t rank = group.rank();
  const auto rows = rows_per_rank(2);
  torch::manual_seed(7);
  TinyMethod method(8, ProcessGroup(), rank == 1 ? 1 : -1);
  // Per-rank batch norm: the first collective of a step is then the trainer's own (the one this
  // test names); with a synchronised head the batch norm's would see the dead rank first.
  method.sync_batch_norm(false);
  auto augment = generator(1000 + rank);
  medcl::train::Trainer trainer(method, trainer_options(group));
  trainer.step(tiny_batch(0, offset_of(rows, rank), rows[rank], augment));
  const auto start = std::chrono::steady_clock::now();
  std::string outcome = "no error";
  try {
    trainer.step(tiny_batch(1, offset_of(rows, rank), rows[rank], augment));
  } catch (const c10::Error& e) {
    outcome = e.what_without_backtrace();
  }
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  write_text(
      dir + "/fault." + std::to_string(rank) + ".txt",
      std::to_string(waited.count()) + "\n" + outcome);
}

// ---- Ranks that disagree ----------------------------------------------------------------------

// Every step records its outcome on every rank ("ok" or the error's message) and how long it took.
void mismatch_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  const bool odd = rank == group.size() - 1; // the rank that differs
  auto step = [&](const std::string& name, const std::function<void()>& f) {
    const auto start = std::chrono::steady_clock::now();
    std::string outcome = "ok";
    try {
      f();
    } catch (const c10::Error& e) {
      outcome = e.what_without_backtrace();
    }
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    write_text(
        dir + "/step." + name + "." + std::to_string(rank) + ".txt",
        std::to_string(took.count()) + "\n" + outcome);
  };
  step("broadcast_shape", [&]() {
    torch::nn::Sequential model(torch::nn::Linear(3, odd ? 5 : 4));
    medcl::dist::broadcast_parameters(*model, group);
  });
  step("broadcast_count", [&]() {
    torch::nn::Sequential model(torch::nn::Linear(3, 4));
    if (odd) {
      model->push_back(torch::nn::Linear(4, 2));
    }
    medcl::dist::broadcast_parameters(*model, group);
  });
  step("reducer_dtype", [&]() {
    NamedTensors params{{"w", torch::zeros({3}, odd ? at::kFloat : at::kDouble)}};
    params[0].second.requires_grad_(true);
    medcl::dist::GradientReducer reducer(params, group);
  });
  step("bn_features", [&]() {
    medcl::dist::SyncBatchNorm1d bn(
        medcl::dist::SyncBatchNorm1dOptions(kFeatures).process_group(group));
    bn->forward(torch::randn({4, odd ? 4 : 3}));
  });
  step("bn_one_value", [&]() {
    medcl::dist::SyncBatchNorm1d bn(
        medcl::dist::SyncBatchNorm1dOptions(kFeatures).process_group(group));
    bn->forward(torch::randn({odd ? 0 : 1, 3}));
  });
  step("bn_gradient", [&]() {
    medcl::dist::SyncBatchNorm1d bn(
        medcl::dist::SyncBatchNorm1dOptions(kFeatures).process_group(group));
    std::optional<torch::NoGradGuard> no_grad;
    if (odd) {
      no_grad.emplace();
    }
    bn->forward(torch::randn({4, 3}));
  });
  step("reducer_options", [&]() {
    NamedTensors params{{"w", torch::zeros({3}, at::kDouble)}};
    params[0].second.requires_grad_(true);
    medcl::dist::GradientReducer reducer(
        params, group, medcl::dist::GradientReducerOptions().overlap(!odd));
  });
  step("reducer_twice", [&]() {
    NamedTensors params{{"w", torch::zeros({3}, at::kDouble)}};
    params[0].second.requires_grad_(true);
    medcl::dist::GradientReducer reducer(params, group);
    (params[0].second * 2.0).sum().backward();
    try {
      (params[0].second * 3.0).sum().backward();
    } catch (...) {
      reducer.reduce(); // the first step's bucket is done: every rank completes it
      throw;
    }
  });
  // After all of these the group still works.
  step("after", [&]() {
    torch::nn::Sequential model(torch::nn::Linear(3, 4));
    medcl::dist::broadcast_parameters(*model, group);
  });
}

std::string read_step(const std::string& dir, const std::string& name, int rank) {
  return medcl_test::read_text_file(dir + "/step." + name + "." + std::to_string(rank) + ".txt");
}

// "took\nmessage" -> {took, message}.
std::pair<int64_t, std::string> split_outcome(const std::string& text) {
  REQUIRE_FALSE(text.empty());
  const auto nl = text.find('\n');
  return {std::stoll(text.substr(0, nl)), text.substr(nl + 1)};
}

// The options of torch::nn::BatchNorm1d as SyncBatchNorm1dOptions.
medcl::dist::SyncBatchNorm1dOptions sync_options(const torch::nn::BatchNorm1dOptions& o) {
  auto s = medcl::dist::SyncBatchNorm1dOptions(o.num_features())
               .eps(o.eps())
               .affine(o.affine())
               .track_running_stats(o.track_running_stats());
  s.momentum(o.momentum().has_value() ? std::optional<double>(*o.momentum()) : std::nullopt);
  return s;
}

} // namespace

// The workers: run only by the launcher (hidden from ctest and from a plain run).
TEST_CASE("medcl-dist-parallel-worker", "[.][dist-worker]") {
  const std::string scenario = env_or("MEDCL_DIST_SCENARIO", "");
  const std::string dir = env_or("MEDCL_DIST_DIR", "");
  REQUIRE_FALSE(scenario.empty());
  REQUIRE_FALSE(dir.empty());
  if (scenario == "reduce") {
    reduce_scenario(dir);
  } else if (scenario == "sync_bn") {
    sync_bn_scenario(dir);
  } else if (scenario == "trainer") {
    trainer_scenario(dir);
  } else if (scenario == "trainer_fault") {
    trainer_fault_scenario(dir);
  } else if (scenario == "mismatch") {
    mismatch_scenario(dir);
  } else {
    FAIL("unknown scenario " << scenario);
  }
}

// ---- One process --------------------------------------------------------------------------------

TEST_CASE("broadcast_parameters and GradientReducer in one process change nothing", "[dist]") {
  const ProcessGroup group;
  auto model = make_model(3, 0.5);
  const auto before = values_of(medcl::dist::parameters_and_buffers(*model));
  medcl::dist::broadcast_parameters(*model, group);
  const auto after = values_of(medcl::dist::parameters_and_buffers(*model));
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    CHECK(after[i].equal(before[i]));
  }
  CHECK_THROWS_WITH(
      medcl::dist::broadcast_parameters(*model, group, 1),
      Contains("broadcast_parameters: root must be a rank in [0, 1), got 1"));

  auto params = reducer_parameters();
  params[0].second.mutable_grad() = rank_gradient(params[0].second, 0, 0);
  medcl::dist::GradientReducer reducer(params, group);
  reducer.reduce();
  CHECK(params[0].second.grad().equal(rank_gradient(params[0].second, 0, 0)));
  CHECK_FALSE(params[1].second.grad().defined());
  CHECK(reducer.bytes_last_step() == 0);
  CHECK(reducer.num_buckets() == 2); // one per dtype at 25 MiB

  CHECK_THROWS_WITH(
      medcl::dist::GradientReducer(
          params, group, medcl::dist::GradientReducerOptions().bucket_bytes(0)),
      Contains("GradientReducer: bucket_bytes must be > 0, got 0"));
  NamedTensors frozen{{"frozen", torch::zeros({2})}};
  CHECK_THROWS_WITH(
      medcl::dist::GradientReducer(frozen, group),
      Contains("GradientReducer: the parameter 'frozen' does not require grad"));
  // From a module: its parameters that require grad, by name.
  model[0]->as<torch::nn::Linear>()->bias.set_requires_grad(false);
  medcl::dist::GradientReducer from_module(*model, group);
  std::vector<std::string> names;
  for (const auto& kv : from_module.parameters()) {
    names.push_back(kv.first);
  }
  CHECK(names == std::vector<std::string>{"0.weight", "1.weight", "1.bias", "2.weight", "2.bias"});
}

TEST_CASE("SyncBatchNorm1d in one process is torch::nn::BatchNorm1d, bit for bit", "[dist]") {
  const bool affine = GENERATE(true, false);
  const bool track = GENERATE(true, false);
  const bool cumulative = GENERATE(false, true);
  const bool three_d = GENERATE(false, true);
  INFO(
      "affine " << affine << ", track " << track << ", cumulative " << cumulative << ", 3D "
                << three_d);
  auto o = torch::nn::BatchNorm1dOptions(kFeatures).affine(affine).track_running_stats(track);
  if (cumulative) {
    o.momentum(c10::nullopt);
  }
  torch::nn::BatchNorm1d ref(o);
  medcl::dist::SyncBatchNorm1d bn(sync_options(o));
  if (affine) {
    set_affine(ref->weight, ref->bias);
    set_affine(bn->weight, bn->bias);
  }
  const auto shape = three_d ? std::vector<int64_t>{6, kFeatures, 2} : std::vector<int64_t>{6, 3};
  for (int pass = 0; pass < 2; ++pass) {
    const auto x = torch::randn(shape) * 2 + 1;
    const auto w = torch::randn(shape);
    auto xa = x.clone().requires_grad_(true);
    auto xb = x.clone().requires_grad_(true);
    const auto ya = ref->forward(xa);
    const auto yb = bn->forward(xb);
    CHECK(yb.equal(ya));
    (ya * w).sum().backward();
    (yb * w).sum().backward();
    CHECK(xb.grad().equal(xa.grad()));
    if (affine) {
      CHECK(bn->weight.grad().equal(ref->weight.grad()));
      CHECK(bn->bias.grad().equal(ref->bias.grad()));
    }
    if (track) {
      CHECK(bn->running_mean.equal(ref->running_mean));
      CHECK(bn->running_var.equal(ref->running_var));
      CHECK(bn->num_batches_tracked.equal(ref->num_batches_tracked));
    }
  }
  ref->eval();
  bn->eval();
  const auto x = torch::randn(shape);
  CHECK(bn->forward(x).equal(ref->forward(x)));
  // clone() gives an independent copy with the same state.
  auto copy = std::dynamic_pointer_cast<medcl::dist::SyncBatchNorm1dImpl>(bn->clone());
  REQUIRE(copy != nullptr);
  CHECK(copy->forward(x).equal(bn->forward(x)));
}

TEST_CASE("SyncBatchNorm1d's own forward and backward match BatchNorm1d (one process)", "[dist]") {
  // The collective path (gathered statistics, its own backward) taken by a one-process group.
  const bool three_d = GENERATE(false, true);
  INFO("3D " << three_d);
  const auto shape = three_d ? std::vector<int64_t>{7, kFeatures, 2} : std::vector<int64_t>{7, 3};
  const auto x = randn(shape, 21) * 3.0 + 4.0;
  const auto w = randn(shape, 22);
  auto run = [&](bool ours, at::ScalarType dtype) {
    auto weight = torch::tensor({1.5, -0.5, 2.0}, at::kDouble).to(dtype).requires_grad_(true);
    auto bias = torch::tensor({0.1, 0.2, -0.3}, at::kDouble).to(dtype).requires_grad_(true);
    auto mean = torch::zeros({kFeatures}, dtype);
    auto var = torch::ones({kFeatures}, dtype);
    auto xi = x.to(dtype).detach().clone().requires_grad_(true);
    const auto y = ours ? medcl::dist::detail::sync_batch_norm_collective_path(
                              xi, mean, var, weight, bias, true, 0.1, 1e-5, ProcessGroup())
                        : torch::batch_norm(xi, weight, bias, mean, var, true, 0.1, 1e-5, false);
    (y * y * w.to(dtype)).sum().backward();
    return std::vector<at::Tensor>{y.detach(), xi.grad(), weight.grad(), bias.grad(), mean, var};
  };
  const auto ours = run(true, at::kDouble);
  const auto ref = run(false, at::kDouble);
  const auto ours_f = run(true, at::kFloat);
  const auto ref_f = run(false, at::kFloat);
  for (size_t i = 0; i < ref.size(); ++i) {
    INFO("result " << i);
    CHECK(rel_err(ours[i], ref[i]) < 1e-12);
    CHECK(ours_f[i].scalar_type() == at::kFloat);
    CHECK(rel_err(ours_f[i], ref_f[i]) < 1e-5);
  }
}

TEST_CASE("SyncBatchNorm1d refuses bad input with the reason", "[dist]") {
  medcl::dist::SyncBatchNorm1d bn(kFeatures);
  CHECK_THROWS_WITH(
      bn->forward(torch::zeros({2, 3, 4, 5})),
      Contains("SyncBatchNorm1d: expected a 2D [N, C] or 3D [N, C, L] input, got 4D input"));
  CHECK_THROWS_WITH(
      bn->forward(torch::zeros({2, 4})),
      Contains("SyncBatchNorm1d: expected weight of shape [4] (the input's number of features"));
  CHECK_THROWS_WITH(
      medcl::dist::detail::sync_batch_norm_collective_path(
          torch::zeros({1, 3}), {}, {}, {}, {}, true, 0.1, 1e-5, ProcessGroup()),
      Contains("expected more than 1 value per channel over all ranks when training, got 1"));
  CHECK_THROWS_WITH(
      medcl::dist::SyncBatchNorm1d(0),
      Contains("SyncBatchNorm1d: num_features must be > 0, got 0"));
}

TEST_CASE("convert_sync_batch_norm swaps BatchNorm1d layers and keeps their tensors", "[dist]") {
  torch::manual_seed(3);
  medcl::ProjectionHead head(medcl::ProjectionHeadOptions(4, 6, 3).last_batch_norm(true));
  head->train();
  const auto x = torch::randn({5, 4});
  const auto y_before = head->forward(x);
  const auto params_before = head->parameters();
  std::vector<std::string> names_before;
  for (const auto& kv : head->named_parameters()) {
    names_before.push_back(kv.key());
  }

  CHECK(medcl::dist::convert_sync_batch_norm(*head, ProcessGroup()) == 2);
  const auto bn1 =
      std::dynamic_pointer_cast<medcl::dist::SyncBatchNorm1dImpl>(head->layers->ptr(1));
  const auto bn4 =
      std::dynamic_pointer_cast<medcl::dist::SyncBatchNorm1dImpl>(head->layers->ptr(4));
  REQUIRE(bn1 != nullptr);
  REQUIRE(bn4 != nullptr);
  CHECK(bn1->options.affine());
  CHECK_FALSE(bn4->options.affine());
  // The very tensors (an optimiser over them stays valid), under the same names.
  const auto params_after = head->parameters();
  REQUIRE(params_after.size() == params_before.size());
  for (size_t i = 0; i < params_before.size(); ++i) {
    CHECK(params_after[i].is_same(params_before[i]));
  }
  std::vector<std::string> names_after;
  for (const auto& kv : head->named_parameters()) {
    names_after.push_back(kv.key());
  }
  CHECK(names_after == names_before);
  // The same head in one process (running statistics moved once more, which does not matter).
  CHECK(head->forward(x).equal(y_before));
  CHECK(medcl::dist::convert_sync_batch_norm(*head, ProcessGroup()) == 0);

  // A BatchNorm1d that is a typed member of another module cannot be swapped.
  struct Holder : torch::nn::Module {
    Holder() {
      bn = register_module("bn", torch::nn::BatchNorm1d(3));
      seq = register_module("seq", torch::nn::Sequential(torch::nn::BatchNorm1d(3)));
    }
    torch::nn::BatchNorm1d bn{nullptr};
    torch::nn::Sequential seq{nullptr};
  };
  Holder holder;
  CHECK_THROWS_WITH(
      medcl::dist::convert_sync_batch_norm(holder, ProcessGroup()),
      Contains("the BatchNorm1d layer(s) 'bn' are members of a module that is not a "
               "torch::nn::Sequential"));
  CHECK(
      std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(holder.seq->ptr(0)) !=
      nullptr); // nothing was replaced
  torch::nn::BatchNorm1d lone(3);
  CHECK_THROWS_WITH(
      medcl::dist::convert_sync_batch_norm(*lone, ProcessGroup()),
      Contains("the module is itself a BatchNorm1d"));
}

TEST_CASE("ProjectionHead keeps BatchNorm1d in one process, converted ones agree", "[dist]") {
  const auto opts = medcl::ProjectionHeadOptions(4, 6, 3).num_layers(3).last_batch_norm(true);
  torch::manual_seed(5);
  medcl::ProjectionHead plain(opts);
  torch::manual_seed(5);
  medcl::ProjectionHead one(medcl::ProjectionHeadOptions(opts).sync_batch_norm(ProcessGroup()));
  // (With a group of several ranks the head is built with SyncBatchNorm1d: see the trainer's
  // test on 2 ranks.)
  CHECK(count_batch_norms(*plain) == std::pair<int64_t, int64_t>{3, 0});
  CHECK(count_batch_norms(*one) == std::pair<int64_t, int64_t>{3, 0});
  CHECK(medcl::dist::convert_sync_batch_norm(*one, ProcessGroup()) == 3);
  CHECK(count_batch_norms(*one) == std::pair<int64_t, int64_t>{0, 3});
  const auto x = torch::randn({6, 4});
  CHECK(one->forward(x).equal(plain->forward(x)));
  const auto a = plain->parameters();
  const auto b = one->parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].equal(b[i]));
  }
}

// ---- Several processes --------------------------------------------------------------------------

TEST_CASE(
    "broadcast_parameters and GradientReducer on 2 and 4 ranks, polled waits on 2",
    "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  const int world = GENERATE(2, 4);
  INFO("world size " << world);
  medcl_test::TempDir dir;
  auto launch = make_launch(world, dir.path.string(), "reduce");
  if (world == 2) {
    // The buckets' waits (and every blocking one) poll before they sleep.
    launch.env["MEDCL_TEST_POLL_US"] = "2000";
  }
  const auto exits = medcl_test::launch_workers(launch);
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  check_reduce_results(dir.path.string(), world);
}

TEST_CASE("SyncBatchNorm1d on 2 and 4 ranks equals BatchNorm1d on the whole batch", "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  const int world = GENERATE(2, 4);
  INFO("world size " << world);
  medcl_test::TempDir dir;
  const auto exits = medcl_test::launch_workers(make_launch(world, dir.path.string(), "sync_bn"));
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  check_sync_bn_results(dir.path.string(), world);
}

TEST_CASE("Trainer on 2 ranks equals one process, and resumes from rank 0's checkpoint", "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  medcl_test::TempDir dir;
  const auto exits = medcl_test::launch_workers(make_launch(2, dir.path.string(), "trainer"));
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  check_trainer_results(dir.path.string());
}

TEST_CASE("a rank killed mid-step makes the other rank's Trainer fail in time", "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  medcl_test::TempDir dir;
  auto launch = make_launch(2, dir.path.string(), "trainer_fault");
  launch.deadline = std::chrono::seconds(90);
  const auto started = std::chrono::steady_clock::now();
  const auto exits = medcl_test::launch_workers(launch);
  INFO(medcl_test::all_logs(exits));
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(60));
  CHECK(exits[1].code == 3);
  REQUIRE(exits[0].code == 0);
  const auto outcome =
      split_outcome(medcl_test::read_text_file(dir.path.string() + "/fault.0.txt"));
  CHECK_THAT(
      outcome.second, Contains("medcl::train::Trainer::step (the sum of the ranks' losses)"));
  CHECK_THAT(outcome.second, Contains("failed on rank 0 of 2 (gloo, timeout 3000 ms)"));
  CHECK(outcome.first < 3000 + 10000);
}

TEST_CASE(
    "ranks with different parameters or inputs fail together, naming the difference",
    "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  medcl_test::TempDir dir;
  const auto exits = medcl_test::launch_workers(make_launch(2, dir.path.string(), "mismatch"));
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  const std::string d = dir.path.string();
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    const auto shape = split_outcome(read_step(d, "broadcast_shape", r));
    CHECK_THAT(
        shape.second,
        Contains("broadcast_parameters: the ranks hold different parameters: at position 0, rank "
                 "0 has '0.weight' [4, 3] Float, rank 1 has '0.weight' [5, 3] Float"));
    // Bounded: every rank fails at once, far from the 60 s timeout.
    CHECK(shape.first < 20000);
    CHECK_THAT(
        split_outcome(read_step(d, "broadcast_count", r)).second,
        Contains("at position 2, rank 0 has nothing, rank 1 has '1.weight' [2, 4] Float (rank 0 "
                 "has 2 tensors, rank 1 has 4"));
    CHECK_THAT(
        split_outcome(read_step(d, "reducer_dtype", r)).second,
        Contains("GradientReducer: the ranks hold different parameters: at position 0, rank 0 "
                 "has 'w' [3] Double, rank 1 has 'w' [3] Float"));
    CHECK_THAT(
        split_outcome(read_step(d, "reducer_options", r)).second,
        Contains("GradientReducer: the ranks disagree on the options: rank 0 has overlap 1, "
                 "bucket_bytes 26214400, first_bucket_bytes 262144; rank 1 has overlap 0"));
    CHECK_THAT(
        split_outcome(read_step(d, "reducer_twice", r)).second,
        Contains("GradientReducer::reduce: the gradient of 'w' arrived twice before reduce()"));
    CHECK_THAT(
        split_outcome(read_step(d, "bn_one_value", r)).second,
        Contains("expected more than 1 value per channel over all ranks when training, got 1 "
                 "(values per channel on each rank: 1, 0)"));
    CHECK_THAT(
        split_outcome(read_step(d, "bn_gradient", r)).second,
        Contains("SyncBatchNorm1d: ranks disagree on whether the output records a gradient: on "
                 "rank 0 it does, on rank 1 it does not"));
    CHECK(split_outcome(read_step(d, "after", r)).second == "ok");
  }
  // A rank whose input is refused says why; the other names it.
  CHECK_THAT(
      split_outcome(read_step(d, "bn_features", 1)).second,
      Contains("expected weight of shape [4]"));
  CHECK_THAT(
      split_outcome(read_step(d, "bn_features", 0)).second,
      Contains("SyncBatchNorm1d: rank 1 refused its input"));
}
