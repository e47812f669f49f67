// Methods with batch normalisation trained through medcl::train::Trainer on 2 real processes
// (tests/dist/launcher.h runs this executable again as the workers), in double, against one
// process trained on the concatenated global batches: SimCLR (an MLP encoder and a projection
// head with batch normalisation, patients spread over the ranks) and MoCo v2 (a queue, the same
// patient excluded). MethodBase::set_process_group (called by the trainer) synchronises the
// batch normalisation over the ranks; the negative control keeps it per rank and must fail the
// comparison.

#include "catch.h"
#include "dist/launcher.h"
#include "dist/worker.h"
#include "support.h"

#include <medcl/dist/process_group.h>
#include <medcl/dist/sync_batch_norm.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/simclr.h>
#include <medcl/pairing/strategy.h>
#include <medcl/train/optim.h>
#include <medcl/train/trainer.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

using medcl::dist::ProcessGroup;
using medcl::dist::ProcessGroupOptions;
using medcl::dist::Store;
using medcl_test::all_exited_ok;
using medcl_test::Contains;
using medcl_test::env_or;
using medcl_test::rel_err;
using medcl_test::worker_group;

constexpr const char* kWorker = "medcl-dist-training-worker";
constexpr int64_t kIn = 5;
constexpr int64_t kFeature = 6;
constexpr int64_t kSteps = 3;
constexpr int64_t kGlobal = 8;
// Each step's global batch of 8 rows: 5 on rank 0, 3 on rank 1.
const std::vector<int64_t> kRows{5, 3};

int64_t offset_of(int64_t rank) {
  return rank == 0 ? 0 : kRows[0];
}

// Rows [offset, offset + n) of step `step`'s global batch: two views already augmented (seeded,
// the same in every process) and patients 0, 1, 2 spread over the ranks.
medcl::MethodBatch batch_of(int64_t step, int64_t offset, int64_t n) {
  auto gen = at::detail::createCPUGenerator(300 + step);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const auto x = at::randn({kGlobal, kIn}, gen, opts);
  const auto v0 = x + 0.3 * at::randn({kGlobal, kIn}, gen, opts);
  const auto v1 = x + 0.3 * at::randn({kGlobal, kIn}, gen, opts);
  medcl::MethodBatch b;
  b.views = {v0.narrow(0, offset, n).clone(), v1.narrow(0, offset, n).clone()};
  b.keys.patient = at::arange(kGlobal, at::kLong).remainder(3).narrow(0, offset, n).clone();
  return b;
}

medcl::train::TrainerOptions trainer_options(const ProcessGroup& group) {
  return medcl::train::TrainerOptions(kSteps)
      .optimizer(medcl::train::OptimizerOptions().kind("adamw").lr(0.05).weight_decay(0.01))
      .progress(false)
      .process_group(group);
}

// An MLP encoder with batch normalisation. Its linear layers have no bias: a bias followed by
// batch normalisation (here, or in the projection head, whose first layer has no bias) has a
// gradient that is zero but for rounding, which AdamW divides by its eps (1e-8) and turns into
// updates of 1e-9 that are rounding too, 1e-8 apart between any two summation orders.
torch::nn::Sequential encoder() {
  return torch::nn::Sequential(
      torch::nn::Linear(torch::nn::LinearOptions(kIn, 8).bias(false)),
      torch::nn::BatchNorm1d(8),
      torch::nn::Functional(torch::relu),
      torch::nn::Linear(torch::nn::LinearOptions(8, kFeature).bias(false)));
}

// SimCLR: the encoder above and a projection head with batch normalisation, patients spread over
// the ranks, the same patient excluded.
std::unique_ptr<medcl::MethodBase> make_simclr() {
  auto pairing = medcl::PairingStrategy::instance().exclude_same_patient();
  auto m = std::make_unique<medcl::SimCLR<torch::nn::Sequential>>(
      encoder(),
      medcl::SimCLROptions(kFeature).hidden_dim(8).projection_dim(4).loss(
          medcl::NTXentLossOptions().temperature(0.5).pairing(pairing)));
  m->to(at::kDouble);
  return m;
}

// MoCo v2, symmetric, a queue that wraps around, the same patient excluded; batch normalisation
// in the encoder and the projection head (and so in the momentum copies).
std::unique_ptr<medcl::MethodBase> make_moco() {
  auto pairing = medcl::PairingStrategy::none().exclude_same_patient();
  auto m = std::make_unique<medcl::MoCo<torch::nn::Sequential>>(
      encoder(),
      medcl::MoCoOptions::v2(kFeature)
          .hidden_dim(8)
          .projection_dim(4)
          .projection_batch_norm(true)
          .queue_size(2 * kGlobal + 3)
          .symmetric(true)
          .momentum_start(0.9)
          .momentum_end(0.9)
          .loss(medcl::InfoNCELossOptions().temperature(0.5).pairing(pairing)));
  m->to(at::kDouble);
  return m;
}

std::unique_ptr<medcl::MethodBase> make_method(const std::string& kind) {
  return kind == "moco" ? make_moco() : make_simclr();
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

// What a run leaves: the logged losses, every named parameter and buffer (running statistics
// included), and the method's extra state (MoCo's queue).
struct RunResult {
  std::vector<double> losses;
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  std::vector<std::string> state_names;
  std::vector<at::Tensor> state;
};

RunResult run(
    medcl::MethodBase& method,
    const ProcessGroup& group,
    const std::vector<medcl::MethodBatch>& batches) {
  medcl::train::Trainer trainer(method, trainer_options(group));
  RunResult r;
  for (const auto& b : batches) {
    r.losses.push_back(trainer.step(b).loss);
  }
  for (const auto& kv : method.named_parameters(/*recurse=*/true)) {
    r.names.push_back("parameter " + kv.key());
    r.tensors.push_back(kv.value().detach().clone());
  }
  for (const auto& kv : method.named_buffers(/*recurse=*/true)) {
    r.names.push_back("buffer " + kv.key());
    r.tensors.push_back(kv.value().detach().clone());
  }
  for (const auto& kv : method.extra_state()) {
    r.state_names.push_back(kv.first);
    r.state.push_back(kv.second.clone());
  }
  return r;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) {
    s += n + "\n";
  }
  return s;
}

void save_result(const RunResult& r, const std::string& prefix) {
  std::vector<at::Tensor> all{torch::tensor(r.losses, at::kDouble)};
  all.insert(all.end(), r.tensors.begin(), r.tensors.end());
  all.insert(all.end(), r.state.begin(), r.state.end());
  torch::save(all, prefix + ".pt");
  std::ofstream(prefix + ".names.txt", std::ios::binary) << join(r.names) << "--\n"
                                                         << join(r.state_names);
}

// An encoder whose batch normalisation is a typed member (not in a Sequential): it cannot be
// converted, and keeps per-rank statistics.
class TypedBatchNormEncoderImpl : public torch::nn::Cloneable<TypedBatchNormEncoderImpl> {
 public:
  TypedBatchNormEncoderImpl() {
    reset();
  }
  void reset() override {
    linear = register_module("linear", torch::nn::Linear(kIn, kFeature));
    bn = register_module("bn", torch::nn::BatchNorm1d(kFeature));
  }
  at::Tensor forward(const at::Tensor& x) {
    return bn->forward(linear->forward(x));
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};
TORCH_MODULE(TypedBatchNormEncoder);

// The worker: scenario "simclr", "simclr_per_rank" (the negative control), "moco" or "typed".
void worker(const std::string& scenario, const std::string& dir) {
  const auto group = worker_group(dir);
  const int64_t rank = group.rank();
  const std::string prefix = dir + "/" + scenario + "." + std::to_string(rank);
  if (scenario == "typed") {
    medcl::SimCLR<TypedBatchNormEncoder> m(
        TypedBatchNormEncoder(), medcl::SimCLROptions(kFeature).hidden_dim(8).projection_dim(4));
    m.set_process_group(group);
    const auto n = count_batch_norms(m);
    std::ofstream(prefix + ".txt", std::ios::binary)
        << n.first << " " << n.second << " "
        << count_batch_norms(*m.named_children()["encoder"]).first;
    return;
  }
  std::vector<medcl::MethodBatch> batches;
  for (int64_t s = 0; s < kSteps; ++s) {
    batches.push_back(batch_of(s, offset_of(rank), kRows[rank]));
  }
  // Every rank initialised differently: the trainer broadcasts rank 0's (seed 7).
  torch::manual_seed(7 + rank);
  auto method = make_method(scenario == "moco" ? "moco" : "simclr");
  if (scenario == "simclr_per_rank") {
    method->sync_batch_norm(false);
  }
  const auto before = count_batch_norms(*method);
  const auto r = run(*method, group, batches);
  const auto after = count_batch_norms(*method);
  std::ofstream(prefix + ".txt", std::ios::binary)
      << before.first << " " << before.second << " " << after.first << " " << after.second;
  save_result(r, prefix);
}

// One process trained on the concatenated global batches, from rank 0's initialisation.
RunResult one_process(const std::string& kind) {
  std::vector<medcl::MethodBatch> batches;
  for (int64_t s = 0; s < kSteps; ++s) {
    batches.push_back(batch_of(s, 0, kGlobal));
  }
  torch::manual_seed(7);
  auto method = make_method(kind);
  return run(*method, ProcessGroup(), batches);
}

std::vector<medcl_test::WorkerExit> launch(const std::string& dir, const std::string& scenario) {
  medcl_test::Launch l;
  l.world_size = 2;
  l.dir = dir;
  l.worker_test = kWorker;
  l.deadline = std::chrono::seconds(120);
  l.env["MEDCL_DIST_SCENARIO"] = scenario;
  l.env["MEDCL_DIST_DIR"] = dir;
  return medcl_test::launch_workers(l);
}

// A rank's results, laid out as the one-process `ref`.
struct RankResult {
  at::Tensor losses;
  std::vector<at::Tensor> tensors;
  std::vector<at::Tensor> state;
  std::string names;
  std::string counts;
};

RankResult load_rank(const std::string& prefix, const RunResult& ref) {
  std::vector<at::Tensor> all;
  torch::load(all, prefix + ".pt");
  REQUIRE(all.size() == 1 + ref.tensors.size() + ref.state.size());
  RankResult r;
  r.losses = all[0];
  r.tensors.assign(all.begin() + 1, all.begin() + 1 + static_cast<int64_t>(ref.tensors.size()));
  r.state.assign(all.begin() + 1 + static_cast<int64_t>(ref.tensors.size()), all.end());
  r.names = medcl_test::read_text_file(prefix + ".names.txt");
  r.counts = medcl_test::read_text_file(prefix + ".txt");
  return r;
}

// The largest relative error of a rank's parameters and buffers against one process (integer
// buffers, the batch counters, must be equal).
double parameter_error(const RankResult& r, const RunResult& ref) {
  double worst = 0;
  for (size_t i = 0; i < ref.tensors.size(); ++i) {
    INFO(ref.names[i]);
    if (!at::isFloatingType(ref.tensors[i].scalar_type())) {
      CHECK(r.tensors[i].equal(ref.tensors[i]));
      continue;
    }
    worst = std::max(worst, rel_err(r.tensors[i], ref.tensors[i]));
  }
  return worst;
}

} // namespace

// The workers: run only by the launcher (hidden from ctest and from a plain run).
TEST_CASE("medcl-dist-training-worker", "[.][dist-worker]") {
  const std::string scenario = env_or("MEDCL_DIST_SCENARIO", "");
  const std::string dir = env_or("MEDCL_DIST_DIR", "");
  REQUIRE_FALSE(scenario.empty());
  REQUIRE_FALSE(dir.empty());
  worker(scenario, dir);
}

TEST_CASE("set_process_group of one process leaves the batch normalisation alone", "[dist]") {
  torch::manual_seed(7);
  auto m = make_simclr();
  CHECK(m->sync_batch_norm());
  const auto before = count_batch_norms(*m);
  CHECK(before == std::pair<int64_t, int64_t>{2, 0});
  m->set_process_group(ProcessGroup());
  CHECK(count_batch_norms(*m) == before);
}

TEST_CASE(
    "SimCLR with batch norm through the Trainer on 2 ranks equals one process (double)",
    "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  medcl_test::TempDir dir;
  const auto exits = launch(dir.path.string(), "simclr");
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  const auto ref = one_process("simclr");
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    const auto got = load_rank(dir.file("simclr." + std::to_string(r)), ref);
    // The encoder's and the head's BatchNorm1d became SyncBatchNorm1d, names unchanged.
    CHECK(got.counts == "2 0 0 2");
    CHECK(got.names == join(ref.names) + "--\n" + join(ref.state_names));
    // The logged loss is the global loss of every step.
    CHECK(rel_err(got.losses, torch::tensor(ref.losses, at::kDouble)) < 1e-12);
    const double err = parameter_error(got, ref);
    INFO("largest relative error of the parameters and buffers " << err);
    CHECK(err < 1e-12);
  }
}

TEST_CASE("SimCLR with per-rank batch norm differs from one process (negative control)", "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  medcl_test::TempDir dir;
  const auto exits = launch(dir.path.string(), "simclr_per_rank");
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  const auto ref = one_process("simclr");
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    const auto got = load_rank(dir.file("simclr_per_rank." + std::to_string(r)), ref);
    // sync_batch_norm(false): the layers stay torch::nn::BatchNorm1d.
    CHECK(got.counts == "2 0 2 0");
    double worst = 0;
    for (size_t i = 0; i < ref.tensors.size(); ++i) {
      if (at::isFloatingType(ref.tensors[i].scalar_type())) {
        worst = std::max(worst, rel_err(got.tensors[i], ref.tensors[i]));
      }
    }
    INFO("largest relative error of the parameters and buffers " << worst);
    // What the comparison of the synchronised run would catch.
    CHECK(worst > 1e-6);
  }
}

TEST_CASE(
    "MoCo v2 through the Trainer on 2 ranks gives the one-process queue and parameters",
    "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  medcl_test::TempDir dir;
  const auto exits = launch(dir.path.string(), "moco");
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  const auto ref = one_process("moco");
  REQUIRE(ref.state_names.size() >= 2);
  std::vector<RankResult> got;
  for (int r = 0; r < 2; ++r) {
    got.push_back(load_rank(dir.file("moco." + std::to_string(r)), ref));
  }
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    // Encoder, projector and their momentum copies: 4 BatchNorm1d, all converted.
    CHECK(got[r].counts == "4 0 0 4");
    CHECK(got[r].names == join(ref.names) + "--\n" + join(ref.state_names));
    CHECK(rel_err(got[r].losses, torch::tensor(ref.losses, at::kDouble)) < 1e-12);
    const double err = parameter_error(got[r], ref);
    INFO("largest relative error of the parameters and buffers " << err);
    CHECK(err < 1e-12);
    for (size_t i = 0; i < ref.state.size(); ++i) {
      INFO(ref.state_names[i]);
      // Byte-identical on both ranks; the one-process queue (float32 keys: rounding allowed).
      CHECK(got[r].state[i].equal(got[0].state[i]));
      if (at::isFloatingType(ref.state[i].scalar_type())) {
        CHECK(rel_err(got[r].state[i], ref.state[i]) <= 1e-6);
      } else {
        CHECK(got[r].state[i].equal(ref.state[i]));
      }
    }
  }
}

TEST_CASE(
    "a batch norm that cannot be converted stays per rank with one warning naming it",
    "[dist]") {
  MEDCL_TEST_REQUIRE_DIST();
  medcl_test::TempDir dir;
  const auto exits = launch(dir.path.string(), "typed");
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  const std::string warning = "SimCLR: the batch normalisation of 'encoder' stays per rank";
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    // The encoder's typed member stays a BatchNorm1d, the projection head's is converted.
    CHECK(medcl_test::read_text_file(dir.file("typed." + std::to_string(r) + ".txt")) == "1 1 1");
    const auto& log = exits[r].log;
    CHECK_THAT(log, Contains(warning));
    CHECK(log.find(warning) == log.rfind(warning));
  }
}
