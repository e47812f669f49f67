// The methods and the non-InfoNCE losses across processes (tests/dist/launcher.h runs this
// executable again as the workers): on 2, 3 and 4 real ranks with uneven rows, in double, every
// rank's loss share, gradient, DINO centre, SwAV codes and queue, MoCo queue and parameters
// against the one-process run on the concatenated batch.

#include "catch.h"
#include "dist/launcher.h"
#include "dist/worker.h"
#include "support.h"

#include <medcl/dist/process_group.h>
#include <medcl/losses/dino.h>
#include <medcl/losses/negative_free.h>
#include <medcl/losses/swav.h>
#include <medcl/methods/byol.h>
#include <medcl/methods/clip.h>
#include <medcl/methods/dino.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/simclr.h>
#include <medcl/methods/simsiam.h>
#include <medcl/methods/supcon.h>
#include <medcl/methods/swav.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace F = medcl::functional;
using medcl::dist::ProcessGroup;
using medcl::dist::ProcessGroupOptions;
using medcl::dist::Store;
using medcl_test::Contains;
using medcl_test::env_or;
using medcl_test::load_tensors;
using medcl_test::offset_of;
using medcl_test::rel_err;
using medcl_test::total;
using medcl_test::worker_group;
using medcl_test::write_text;

constexpr const char* kWorker = "medcl-dist-methods-worker";
constexpr int64_t kInputDim = 5;
constexpr int64_t kFeatureDim = 6;

// Uneven on purpose; the methods need rows on every rank, the losses accept a rank with none.
std::vector<int64_t> method_rows(int64_t world) {
  return world == 4 ? std::vector<int64_t>{3, 1, 4, 2} : std::vector<int64_t>{5, 3};
}
std::vector<int64_t> loss_rows(int64_t world) {
  return world == 3 ? std::vector<int64_t>{3, 0, 4} : method_rows(world);
}

// This process's share of a batch: rows [offset, offset + n) of the global batch of `total` rows.
struct Share {
  int64_t offset = 0;
  int64_t n = 0;
  int64_t total = 0;
  at::Tensor take(const at::Tensor& all) const {
    return all.narrow(0, offset, n).clone();
  }
};

Share whole(int64_t n) {
  return Share{0, n, n};
}

// How the ranks' values compare with the one-process value.
enum class Kind {
  // Summed over the ranks (loss shares, gradients).
  Sum,
  // The same on every rank, to the tolerance (centres).
  Same,
  // Byte-identical on every rank, and equal to the one-process value to the tolerance (queues,
  // parameters).
  Identical,
  // The ranks' rows in rank order (codes, input gradients).
  Rows,
};

struct Entry {
  std::string name;
  at::Tensor value;
  Kind kind;
  double tolerance;
};

// The global inputs of a step, the same in every process (one seed).
struct Data {
  at::Tensor v0, v1, v2, text; // [N, kInputDim] each
  at::Tensor patient, label;   // [N] int64
};

Data make_data(int64_t n, int64_t seed) {
  torch::manual_seed(seed);
  Data d;
  d.v0 = torch::randn({n, kInputDim}, at::kDouble);
  d.v1 = torch::randn({n, kInputDim}, at::kDouble);
  d.v2 = torch::randn({n, kInputDim}, at::kDouble);
  d.text = torch::randn({n, kInputDim}, at::kDouble);
  const auto idx = torch::arange(n, at::kLong);
  d.patient = idx.remainder(3); // patients spread over ranks
  d.label = idx.remainder(2);
  return d;
}

// An encoder without batch normalisation (its rows do not depend on the other rows).
torch::nn::Sequential encoder() {
  return torch::nn::Sequential(
      torch::nn::Linear(kInputDim, kFeatureDim), torch::nn::Functional(torch::tanh));
}

// Every trainable parameter's gradient (zeros where none), flattened and concatenated.
at::Tensor flat_grads(medcl::MethodBase& m) {
  std::vector<at::Tensor> g;
  for (const auto& p : m.trainable_parameters()) {
    g.push_back(p.grad().defined() ? p.grad().flatten() : torch::zeros({p.numel()}, p.options()));
  }
  return torch::cat(g);
}

// Every parameter, frozen momentum copies included, flattened and concatenated.
at::Tensor flat_params(medcl::MethodBase& m) {
  std::vector<at::Tensor> v;
  for (const auto& p : m.parameters(true)) {
    v.push_back(p.detach().flatten());
  }
  return torch::cat(v);
}

// ---- The runs: each one the same in a worker (its share, a group) and in the one-process
// reference (the whole batch, no group) ---------------------------------------------------------

std::vector<Entry> run_dino(const ProcessGroup& g, const Share& s) {
  const auto d = make_data(s.total, 11);
  torch::manual_seed(1);
  medcl::DINO<torch::nn::Sequential> m(
      encoder(), medcl::DINOOptions(kFeatureDim).output_dim(7).hidden_dim(8).bottleneck_dim(4));
  m.to(at::kDouble);
  m.set_process_group(g);
  medcl::MethodBatch batch;
  batch.views = {s.take(d.v0), s.take(d.v1)};
  batch.local_views = {s.take(d.v2)};
  std::vector<Entry> out;
  // Two steps: the second loss uses the centre the first one moved.
  for (int64_t step = 0; step < 2; ++step) {
    medcl::StepContext ctx;
    ctx.step = step;
    auto loss = m.training_loss(batch, ctx);
    loss.backward();
    const auto tag = "DINO step " + std::to_string(step);
    out.push_back({tag + " loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back({tag + " centre", m.loss()->center.clone(), Kind::Same, 1e-12});
  }
  out.push_back({"DINO gradient", flat_grads(m), Kind::Sum, 1e-12});
  return out;
}

// In eval mode: the projection head's batch normalisation then uses its running statistics (in
// training mode each rank normalises with its own batch's, as PyTorch's DDP does without
// SyncBatchNorm).
std::vector<Entry> run_swav(const ProcessGroup& g, const Share& s) {
  const auto d = make_data(s.total, 12);
  torch::manual_seed(2);
  medcl::SwAV<torch::nn::Sequential> m(
      encoder(),
      medcl::SwAVOptions(kFeatureDim)
          .hidden_dim(8)
          .projection_dim(4)
          .num_prototypes(5)
          .queue_size(2 * s.total - 3)); // wraps around on the second enqueue
  m.to(at::kDouble);
  m.eval();
  m.set_process_group(g);
  medcl::MethodBatch batch;
  batch.views = {s.take(d.v0), s.take(d.v1)};
  batch.local_views = {s.take(d.v2)};
  std::vector<Entry> out;
  // Step 0 fills the queues, step 1 uses them.
  for (int64_t step = 0; step < 3; ++step) {
    medcl::StepContext ctx;
    ctx.step = step;
    auto loss = m.training_loss(batch, ctx);
    loss.backward();
    m.after_optimizer_step(ctx);
    out.push_back({"SwAV step " + std::to_string(step) + " loss", loss.detach(), Kind::Sum, 1e-12});
  }
  out.push_back({"SwAV gradient", flat_grads(m), Kind::Sum, 1e-12});
  const auto state = m.extra_state();
  for (const char* name : {"queue0.buffer", "queue0.position", "queue1.buffer"}) {
    // The queues keep float32 projections.
    out.push_back({std::string("SwAV ") + name, state.at(name), Kind::Identical, 1e-6});
  }
  return out;
}

std::vector<Entry> run_byol(const ProcessGroup& g, const Share& s) {
  const auto d = make_data(s.total, 13);
  torch::manual_seed(3);
  medcl::BYOL<torch::nn::Sequential> m(
      encoder(), medcl::BYOLOptions(kFeatureDim).hidden_dim(8).projection_dim(4));
  m.to(at::kDouble);
  m.eval(); // batch normalisation in the heads: see run_swav
  m.set_process_group(g);
  medcl::MethodBatch batch;
  batch.views = {s.take(d.v0), s.take(d.v1)};
  auto loss = m.training_loss(batch, {});
  loss.backward();
  return {
      {"BYOL loss", loss.detach(), Kind::Sum, 1e-12},
      {"BYOL gradient", flat_grads(m), Kind::Sum, 1e-12}};
}

std::vector<Entry> run_simsiam(const ProcessGroup& g, const Share& s) {
  const auto d = make_data(s.total, 14);
  torch::manual_seed(4);
  medcl::SimSiam<torch::nn::Sequential> m(
      encoder(), medcl::SimSiamOptions(kFeatureDim).projection_dim(8).prediction_hidden_dim(4));
  m.to(at::kDouble);
  m.eval();
  m.set_process_group(g);
  medcl::MethodBatch batch;
  batch.views = {s.take(d.v0), s.take(d.v1)};
  auto loss = m.training_loss(batch, {});
  loss.backward();
  return {
      {"SimSiam loss", loss.detach(), Kind::Sum, 1e-12},
      {"SimSiam gradient", flat_grads(m), Kind::Sum, 1e-12}};
}

// The methods whose loss is of the InfoNCE family: they pass it the group.
std::vector<Entry> run_infonce_methods(const ProcessGroup& g, const Share& s) {
  const auto d = make_data(s.total, 15);
  std::vector<Entry> out;
  medcl::MethodBatch two;
  two.views = {s.take(d.v0), s.take(d.v1)};
  two.keys.patient = s.take(d.patient);
  {
    torch::manual_seed(5);
    medcl::SimCLR<torch::nn::Sequential> m(
        encoder(),
        medcl::SimCLROptions(kFeatureDim)
            .hidden_dim(8)
            .projection_dim(4)
            .loss(medcl::NTXentLossOptions().temperature(0.5).pairing(
                medcl::PairingStrategy::instance().exclude_same_patient())));
    m.to(at::kDouble);
    m.eval();
    m.set_process_group(g);
    auto loss = m.training_loss(two, {});
    loss.backward();
    out.push_back({"SimCLR loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back({"SimCLR gradient", flat_grads(m), Kind::Sum, 1e-12});
  }
  {
    torch::manual_seed(6);
    medcl::SupCon<torch::nn::Sequential> m(
        encoder(), medcl::SupConOptions(kFeatureDim).hidden_dim(8).projection_dim(4));
    m.to(at::kDouble);
    m.eval();
    m.set_process_group(g);
    medcl::MethodBatch batch;
    batch.views = two.views;
    batch.keys.label = s.take(d.label);
    auto loss = m.training_loss(batch, {});
    loss.backward();
    out.push_back({"SupCon loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back({"SupCon gradient", flat_grads(m), Kind::Sum, 1e-12});
  }
  {
    // MoCo v3: in-batch keys through the InfoNCE loss's group (its heads have batch
    // normalisation: eval mode).
    torch::manual_seed(9);
    medcl::MoCo<torch::nn::Sequential> m(
        encoder(), medcl::MoCoOptions::v3(kFeatureDim).hidden_dim(8).projection_dim(4));
    m.to(at::kDouble);
    m.eval();
    m.set_process_group(g);
    medcl::MethodBatch batch;
    batch.views = two.views;
    auto loss = m.training_loss(batch, {});
    loss.backward();
    out.push_back({"MoCo v3 loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back({"MoCo v3 gradient", flat_grads(m), Kind::Sum, 1e-12});
  }
  {
    torch::manual_seed(7);
    medcl::CLIP<torch::nn::Sequential, torch::nn::Sequential> m(
        encoder(), encoder(), medcl::CLIPOptions(kFeatureDim, kFeatureDim).embed_dim(4));
    m.to(at::kDouble);
    m.set_process_group(g);
    medcl::MethodBatch batch;
    batch.views = {s.take(d.v0)};
    batch.paired = s.take(d.text);
    auto loss = m.training_loss(batch, {});
    loss.backward();
    out.push_back({"CLIP loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back({"CLIP gradient", flat_grads(m), Kind::Sum, 1e-12});
  }
  return out;
}

// MoCo v2, symmetric, with patient keys, K = 3 optimiser steps of the data-parallel loop: forward,
// backward, gradients summed over the ranks, SGD, after_optimizer_step (momentum update,
// enqueue). `with_parameters`: also the parameters after the steps and the later queues, which
// need the InfoNCE loss's group (the first queue holds the initial momentum encoder's keys and
// does not).
std::vector<Entry> run_moco(const ProcessGroup& g, const Share& s) {
  torch::manual_seed(8);
  medcl::MoCo<torch::nn::Sequential> m(
      encoder(),
      medcl::MoCoOptions::v2(kFeatureDim)
          .hidden_dim(8)
          .projection_dim(4)
          .queue_size(3 * s.total + 1) // wraps around on the second enqueue
          .symmetric(true)
          .momentum_start(0.9)
          .momentum_end(0.9)
          .loss(medcl::InfoNCELossOptions().temperature(0.5).pairing(
              medcl::PairingStrategy::none().exclude_same_patient())));
  m.to(at::kDouble);
  m.set_process_group(g);
  torch::optim::SGD opt(m.trainable_parameters(), torch::optim::SGDOptions(0.5));
  std::vector<Entry> out;
  constexpr int64_t kSteps = 3;
  for (int64_t step = 0; step < kSteps; ++step) {
    const auto d = make_data(s.total, 100 + step);
    medcl::MethodBatch batch;
    batch.views = {s.take(d.v0), s.take(d.v1)};
    batch.keys.patient = s.take(d.patient);
    medcl::StepContext ctx;
    ctx.step = step;
    ctx.total_steps = kSteps;
    opt.zero_grad();
    auto loss = m.training_loss(batch, ctx);
    loss.backward();
    for (auto& p : m.trainable_parameters()) {
      if (p.grad().defined()) {
        g.all_reduce(p.mutable_grad());
      }
    }
    opt.step();
    m.after_optimizer_step(ctx);
    const auto tag = "MoCo step " + std::to_string(step);
    out.push_back({tag + " loss", loss.detach(), Kind::Sum, 1e-12});
    const auto state = m.extra_state();
    // The queue keeps float32 keys.
    out.push_back({tag + " queue", state.at("queue.buffer"), Kind::Identical, 1e-6});
    out.push_back({tag + " queue position", state.at("queue.position"), Kind::Identical, 0});
    out.push_back({tag + " queue patients", state.at("queue.key.patient"), Kind::Identical, 0});
  }
  out.push_back({"MoCo parameters", flat_params(m), Kind::Identical, 1e-12});
  return out;
}

// The losses' functional forms and DINO's centre, with a rank that may hold no rows.
std::vector<Entry> run_losses(const ProcessGroup& g, const Share& s) {
  torch::manual_seed(21);
  const int64_t n = s.total;
  const int64_t k = 5;
  const auto a0 = torch::randn({n, k}, at::kDouble);
  const auto a1 = torch::randn({n, k}, at::kDouble);
  const auto a2 = torch::randn({n, k}, at::kDouble);
  const auto a3 = torch::randn({n, k}, at::kDouble);
  const auto queue0 = torch::randn({4, k}, at::kDouble); // the same on every rank
  const auto queue1 = torch::randn({4, k}, at::kDouble);
  std::vector<Entry> out;
  auto leaf = [&](const at::Tensor& all) { return s.take(all).requires_grad_(true); };

  {
    auto p = leaf(a0);
    auto z = leaf(a1);
    auto loss = F::byol_loss(p, z, g);
    loss.backward();
    out.push_back({"byol_loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back({"byol_loss gradient", p.grad().clone(), Kind::Rows, 1e-12});
    medcl::BYOLLoss module(g);
    out.push_back({"BYOLLoss", module(p, z).detach(), Kind::Sum, 1e-12});
  }
  {
    auto p0 = leaf(a0);
    auto p1 = leaf(a1);
    auto loss =
        F::simsiam_loss(p0, p1, a2.narrow(0, s.offset, s.n), a3.narrow(0, s.offset, s.n), g);
    loss.backward();
    out.push_back({"simsiam_loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back(
        {"simsiam_loss gradient", torch::cat({p0.grad(), p1.grad()}, 1), Kind::Rows, 1e-12});
  }
  {
    auto s0 = leaf(a0);
    auto s1 = leaf(a1);
    const auto center = torch::randn({1, k}, at::kDouble);
    const auto opts = medcl::DINOLossOptions().teacher_temperature(0.07).group(g);
    auto loss = F::dino_loss({s0, s1, s.take(a2)}, {s.take(a3), s.take(a2)}, center, opts);
    loss.backward();
    out.push_back({"dino_loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back({"dino_loss gradient", torch::cat({s0.grad(), s1.grad()}, 1), Kind::Rows, 1e-12});
    medcl::DINOLoss module(medcl::DINOLossOptions(k).center_momentum(0.8).group(g));
    module->to(at::kDouble);
    module->update_center({s.take(a0), s.take(a1)});
    module->update_center({s.take(a2), s.take(a3)});
    out.push_back({"DINOLoss centre", module->center.clone(), Kind::Same, 1e-12});
  }
  {
    const auto opts = medcl::SinkhornOptions().iterations(4).epsilon(0.3);
    out.push_back({"sinkhorn_knopp", F::sinkhorn_knopp(s.take(a0), opts, g), Kind::Rows, 1e-12});
    out.push_back(
        {"sinkhorn_knopp with shared rows",
         F::sinkhorn_knopp(s.take(a1), opts, g, queue0),
         Kind::Rows,
         1e-12});
  }
  {
    auto h0 = leaf(a0);
    auto h1 = leaf(a1);
    auto l0 = leaf(a2);
    const auto opts = medcl::SwAVLossOptions()
                          .temperature(0.2)
                          .sinkhorn(medcl::SinkhornOptions().epsilon(0.5))
                          .group(g);
    auto loss = F::swav_loss({h0, h1}, {l0}, {queue0, queue1}, opts);
    loss.backward();
    out.push_back({"swav_loss", loss.detach(), Kind::Sum, 1e-12});
    out.push_back(
        {"swav_loss gradient",
         torch::cat({h0.grad(), h1.grad(), l0.grad()}, 1),
         Kind::Rows,
         1e-12});
    auto plain = F::swav_loss({s.take(a0), s.take(a1)}, {}, {}, opts);
    out.push_back({"swav_loss without queue", plain.detach(), Kind::Sum, 1e-12});
  }
  return out;
}

using Run = std::function<std::vector<Entry>(const ProcessGroup&, const Share&)>;

const std::vector<std::pair<std::string, Run>>& runs() {
  static const std::vector<std::pair<std::string, Run>> all{
      {"dino", run_dino},
      {"swav", run_swav},
      {"byol", run_byol},
      {"simsiam", run_simsiam},
      {"infonce_methods", run_infonce_methods},
      {"moco", run_moco},
      {"losses", run_losses}};
  return all;
}

const Run& find_run(const std::string& name) {
  for (const auto& r : runs()) {
    if (r.first == name) {
      return r.second;
    }
  }
  throw std::runtime_error("unknown run " + name);
}

std::vector<int64_t> rows_of(const std::string& run, int64_t world) {
  return run == "losses" ? loss_rows(world) : method_rows(world);
}

// ---- Workers ----------------------------------------------------------------------------------

// Runs the runs named in MEDCL_DIST_RUNS (comma-separated) on this rank's share; saves every
// value to <dir>/<run>.<rank>.pt.
void runs_scenario(const std::string& dir, const ProcessGroup& group) {
  std::string list = env_or("MEDCL_DIST_RUNS", "");
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string name = list.substr(start, comma - start);
    start = comma + 1;
    if (name.empty()) {
      continue;
    }
    const auto rows = rows_of(name, group.size());
    const Share share{offset_of(rows, group.rank()), rows[group.rank()], total(rows)};
    std::vector<at::Tensor> values;
    for (const auto& e : find_run(name)(group, share)) {
      values.push_back(e.value);
    }
    torch::save(values, dir + "/" + name + "." + std::to_string(group.rank()) + ".pt");
  }
}

// Ranks that disagree, or one whose input is refused: every rank records its outcome per step.
void mismatch_scenario(const std::string& dir, const ProcessGroup& group) {
  const int64_t rank = group.rank();
  const bool odd = rank == group.size() - 1;
  auto step = [&](const std::string& name, const std::function<void()>& f) {
    std::string outcome = "ok";
    try {
      f();
    } catch (const c10::Error& e) {
      outcome = e.what_without_backtrace();
    }
    write_text(dir + "/step." + name + "." + std::to_string(rank) + ".txt", outcome);
  };
  const auto x = torch::randn({3, 4}, at::kDouble);
  step("dino_output_size", [&]() {
    const auto s = odd ? torch::randn({3, 5}, at::kDouble) : x;
    F::dino_loss(
        {s, s}, {s}, torch::zeros({s.size(1)}, at::kDouble), medcl::DINOLossOptions().group(group));
  });
  step("byol_nan", [&]() {
    auto p = x.clone();
    if (odd) {
      p[0][0] = std::nan("");
    }
    F::byol_loss(p, x, group);
  });
  const auto sinkhorn_epsilon = [&]() {
    F::sinkhorn_knopp(x, medcl::SinkhornOptions().epsilon(odd ? 0.1 : 0.05), group);
  };
  step("sinkhorn_epsilon", sinkhorn_epsilon);
  step("swav_queue", [&]() {
    const auto queue = torch::randn({odd ? 3 : 2, 4}, at::kDouble);
    F::swav_loss({x, x}, {}, {queue, queue}, medcl::SwAVLossOptions().group(group));
  });
  step("center_momentum", [&]() {
    medcl::DINOLoss module(medcl::DINOLossOptions(4).center_momentum(odd ? 0.5 : 0.9).group(group));
    module->update_center({x.to(at::kFloat)});
  });
  step("after", [&]() {
    const auto l = F::simsiam_loss(x, x, x, x, group);
    const auto all = group.all_gather(l.reshape({1}));
    TORCH_CHECK(all.size(0) == group.size(), "wrong result ", all.sizes());
  });
}

// ---- Launching and checking -------------------------------------------------------------------

std::vector<medcl_test::WorkerExit> launch(
    const std::string& dir,
    int world,
    const std::string& scenario,
    const std::string& run_list) {
  medcl_test::Launch l;
  l.world_size = world;
  l.dir = dir;
  l.worker_test = kWorker;
  l.env["MEDCL_DIST_SCENARIO"] = scenario;
  l.env["MEDCL_DIST_DIR"] = dir;
  l.env["MEDCL_DIST_RUNS"] = run_list;
  l.deadline = std::chrono::seconds(240);
  return medcl_test::launch_workers(l);
}

// Launches `world` ranks on the runs `names`, then compares every value with the one-process run.
void check_runs(int world, const std::vector<std::string>& names) {
  medcl_test::TempDir dir;
  std::string list;
  for (const auto& n : names) {
    list += (list.empty() ? "" : ",") + n;
  }
  const auto exits = launch(dir.path.string(), world, "runs", list);
  {
    INFO(medcl_test::all_logs(exits));
    for (const auto& e : exits) {
      REQUIRE(e.code == 0);
    }
  }
  for (const auto& name : names) {
    const auto rows = rows_of(name, world);
    const auto reference = find_run(name)(ProcessGroup(), whole(total(rows)));
    std::vector<std::vector<at::Tensor>> ranks;
    for (int r = 0; r < world; ++r) {
      ranks.push_back(load_tensors(dir.file(name + "." + std::to_string(r) + ".pt")));
      REQUIRE(ranks.back().size() == reference.size());
    }
    for (size_t i = 0; i < reference.size(); ++i) {
      const auto& ref = reference[i];
      INFO(world << " ranks: " << ref.name);
      std::vector<at::Tensor> values;
      for (int r = 0; r < world; ++r) {
        values.push_back(ranks[r][i]);
      }
      switch (ref.kind) {
        case Kind::Sum: {
          auto sum = values[0].clone();
          for (int r = 1; r < world; ++r) {
            sum += values[r];
          }
          const double err = rel_err(sum, ref.value);
          INFO("relative error of the sum over ranks " << err);
          CHECK(err <= ref.tolerance);
          break;
        }
        case Kind::Same:
        case Kind::Identical:
          for (int r = 0; r < world; ++r) {
            INFO("rank " << r);
            if (ref.kind == Kind::Identical) {
              CHECK(values[r].equal(values[0]));
            }
            const double err = rel_err(values[r], ref.value);
            INFO("relative error " << err);
            CHECK(err <= ref.tolerance);
          }
          break;
        case Kind::Rows: {
          const auto all = torch::cat(values);
          REQUIRE(all.sizes() == ref.value.sizes());
          const double err = rel_err(all, ref.value);
          INFO("relative error of the ranks' rows " << err);
          CHECK(err <= ref.tolerance);
          break;
        }
      }
    }
  }
}

// Whether the multi-process tests cannot run here. Where CMake found c10d with Gloo they must
// run: a build that lost medcl::dist then fails them instead of skipping them.
bool skip_without_dist() {
#if defined(MEDCL_TEST_EXPECT_DIST)
  return false;
#else
  return !medcl::dist::available();
#endif
}

} // namespace

// The workers: run only by the launcher (hidden from ctest and from a plain run).
TEST_CASE("medcl-dist-methods-worker", "[.][dist-worker]") {
  const std::string scenario = env_or("MEDCL_DIST_SCENARIO", "");
  const std::string dir = env_or("MEDCL_DIST_DIR", "");
  REQUIRE_FALSE(dir.empty());
  const auto group = worker_group(dir);
  if (scenario == "runs") {
    runs_scenario(dir, group);
  } else if (scenario == "mismatch") {
    mismatch_scenario(dir, group);
  } else {
    FAIL("unknown scenario " << scenario);
  }
}

TEST_CASE("the methods' process group is one process by default and reaches the loss", "[dist]") {
  torch::manual_seed(1);
  medcl::DINO<torch::nn::Sequential> dino(
      encoder(), medcl::DINOOptions(kFeatureDim).output_dim(7).hidden_dim(8).bottleneck_dim(4));
  CHECK(dino.process_group().size() == 1);
  CHECK(dino.loss()->options.group().size() == 1);
  // One process: the group-taking forms are the one-process losses, bit for bit.
  const auto p = torch::randn({4, 3}, at::kDouble);
  const auto z = torch::randn({4, 3}, at::kDouble);
  CHECK(F::byol_loss(p, z, ProcessGroup()).equal(F::byol_loss(p, z)));
  CHECK(F::simsiam_loss(p, z, z, p, ProcessGroup()).equal(F::simsiam_loss(p, z, z, p)));
  const auto q = torch::randn({2, 3}, at::kDouble);
  CHECK(F::sinkhorn_knopp(p, {}, ProcessGroup(), q)
            .equal(F::sinkhorn_knopp(torch::cat({p, q}), {}).slice(0, 0, 4)));
  CHECK_THROWS_WITH(
      F::sinkhorn_knopp(p, {}, ProcessGroup(), torch::randn({2, 4}, at::kDouble)),
      Contains("sinkhorn_knopp: shared_scores must have 3 columns, got shape [2, 4]"));
}

TEST_CASE("DINO, SwAV, BYOL and SimSiam on 2 ranks equal one process (double)", "[dist]") {
  if (skip_without_dist()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_runs(2, {"dino", "swav", "byol", "simsiam"});
}

TEST_CASE("DINO, SwAV, BYOL and SimSiam on 4 ranks equal one process (double)", "[dist]") {
  if (skip_without_dist()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_runs(4, {"dino", "swav", "byol", "simsiam"});
}

TEST_CASE("SimCLR, SupCon, MoCo v3 and CLIP on 2 ranks equal one process (double)", "[dist]") {
  if (skip_without_dist()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_runs(2, {"infonce_methods"});
}

TEST_CASE(
    "MoCo on 2 ranks: 3 steps give every rank the one-process queue and parameters",
    "[dist]") {
  if (skip_without_dist()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_runs(2, {"moco"});
}

TEST_CASE(
    "the negative-free, DINO and SwAV losses on 3 ranks, one empty, equal one process",
    "[dist]") {
  if (skip_without_dist()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_runs(3, {"losses"});
}

TEST_CASE("DINO, SwAV and BYOL losses whose ranks disagree fail together, naming it", "[dist]") {
  if (skip_without_dist()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  medcl_test::TempDir dir;
  const auto exits = launch(dir.path.string(), 2, "mismatch", "");
  INFO(medcl_test::all_logs(exits));
  for (const auto& e : exits) {
    REQUIRE(e.code == 0);
  }
  auto outcome = [&](const std::string& step, int rank) {
    return medcl_test::read_text_file(
        dir.file("step." + step + "." + std::to_string(rank) + ".txt"));
  };
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    CHECK_THAT(
        outcome("dino_output_size", r),
        Contains("dino_loss: the ranks disagree on the output size: rank 0 has 4, rank 1 has 5"));
    CHECK_THAT(
        outcome("sinkhorn_epsilon", r),
        Contains("sinkhorn_knopp: the ranks disagree on the epsilon: rank 0 has 0.05, rank 1 has "
                 "0.1"));
    CHECK_THAT(
        outcome("swav_queue", r),
        Contains("swav_loss: the ranks disagree on the number of queue rows: rank 0 has 2, rank 1 "
                 "has 3"));
    CHECK_THAT(
        outcome("center_momentum", r),
        Contains("DINOLoss::update_center: the ranks disagree on the center momentum"));
    CHECK(outcome("after", r) == "ok");
  }
  CHECK_THAT(outcome("byol_nan", 1), Contains("byol_loss: online_prediction contains NaN or Inf"));
  CHECK_THAT(outcome("byol_nan", 0), Contains("rank 1 refused its input"));
}
