// medcl::dist: process groups on c10d/Gloo, gather_with_gradient and gather_keys, checked on
// 2, 3 and 4 real processes (the test runs itself again as workers, see launcher.h) against the
// one-process result on the concatenated batch, with a negative control, faults and bad input.

#include "catch.h"
#include "dist/launcher.h"
#include "dist/worker.h"
#include "support.h"

#include <medcl/dist/gather.h>
#include <medcl/dist/gather_keys.h>
#include <medcl/dist/process_group.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

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

// ---- The problem every rank and the one-process reference share -----------------------------

constexpr int64_t kInputDim = 5;
constexpr int64_t kEmbeddingDim = 4;

// Uneven on purpose, with an empty rank at 4.
std::vector<int64_t> rows_per_rank(int64_t world) {
  if (world == 2) {
    return {5, 3};
  }
  if (world == 4) {
    return {3, 0, 4, 2};
  }
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < world; ++r) {
    rows.push_back(2 + r % 3);
  }
  return rows;
}

struct Problem {
  at::Tensor x; // [N, kInputDim]
  at::Tensor w; // [kInputDim, kEmbeddingDim]
  medcl::SampleKeys keys;
};

// The same on every process (one seed, one build).
Problem make_problem(int64_t n, at::ScalarType dtype) {
  torch::manual_seed(1234);
  Problem p;
  p.x = torch::randn({n, kInputDim}, at::kDouble).to(dtype);
  p.w = torch::randn({kInputDim, kEmbeddingDim}, at::kDouble).to(dtype);
  const auto idx = torch::arange(n, at::kLong);
  p.keys.patient = idx.remainder(3); // patients spread over ranks
  p.keys.label = idx.remainder(2);
  p.keys.instance = idx + 100;
  p.keys.time = idx.to(at::kDouble) * 1.5;
  return p;
}

at::Tensor embed(const at::Tensor& x, const at::Tensor& w) {
  auto z = torch::tanh(x.mm(w));
  return z / z.norm(2, 1, true);
}

// A SupCon-style loss of the anchors `z` (global rows offset .. offset+n) against every row of
// `all` (the gathered batch), positives: the same patient, the anchor itself excluded. Divided by
// the global batch size, so that the sum over ranks is the one-process loss.
at::Tensor keyed_loss(
    const at::Tensor& z,
    const at::Tensor& all,
    const at::Tensor& patient_all,
    int64_t offset,
    int64_t n_total) {
  const int64_t n = z.size(0);
  if (n == 0) {
    return (all * 0).sum(); // keeps this rank in the graph (and in the backward's all-reduce)
  }
  const auto logits = z.mm(all.t()) / 0.5;
  const auto cols = torch::arange(all.size(0), at::kLong).unsqueeze(0);
  const auto rows = torch::arange(offset, offset + n, at::kLong).unsqueeze(1);
  const auto self = cols.eq(rows);
  const auto patient_local = patient_all.narrow(0, offset, n).unsqueeze(1);
  const auto positive = patient_local.eq(patient_all.unsqueeze(0)).logical_and(self.logical_not());
  const auto lse = torch::logsumexp(logits.masked_fill(self, -1e9), 1, true);
  const auto log_prob = logits - lse;
  const auto pos = positive.to(logits.scalar_type());
  const auto per_anchor = -(log_prob * pos).sum(1) / pos.sum(1);
  return per_anchor.sum() / static_cast<double>(n_total);
}

// ---- Workers --------------------------------------------------------------------------------

std::string message_of(const c10::Error& e) {
  return e.what_without_backtrace();
}

// Runs gather_with_gradient (or the negative control) on this rank's share of the problem;
// returns {loss, x grad, w grad summed over ranks, gathered embeddings}.
std::vector<at::Tensor> distributed_step(
    const ProcessGroup& group,
    const Problem& p,
    const medcl::SampleKeys& keys_all,
    bool correct_gradient) {
  const auto rows = rows_per_rank(group.size());
  const int64_t offset = offset_of(rows, group.rank());
  auto x = p.x.narrow(0, offset, rows[group.rank()]).clone().requires_grad_(true);
  auto w = p.w.clone().requires_grad_(true);
  const auto z = embed(x, w);
  std::vector<int64_t> counts;
  const auto all = correct_gradient ? medcl::dist::gather_with_gradient(z, group, &counts)
                                    : medcl::dist::detail::gather_with_local_gradient(z, group);
  if (correct_gradient) {
    REQUIRE(counts == rows);
  }
  auto loss = keyed_loss(z, all, keys_all.patient, offset, total(rows));
  loss.backward();
  auto w_grad = w.grad().clone();
  group.all_reduce(w_grad); // the parameter all-reduce of data-parallel training
  return {loss.detach(), x.grad().clone(), w_grad, all.detach()};
}

void gather_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  const int64_t world = group.size();
  const auto rows = rows_per_rank(world);
  const int64_t offset = offset_of(rows, rank);
  std::vector<at::Tensor> out;

  // Keys: every defined key, in rank order.
  const auto p = make_problem(total(rows), at::kDouble);
  const auto idx = torch::arange(offset, offset + rows[rank], at::kLong);
  const auto local_keys = p.keys.index_select(idx);
  std::vector<int64_t> key_counts;
  const auto keys_all = medcl::dist::gather_keys(local_keys, group, &key_counts);
  REQUIRE(key_counts == rows);
  out.push_back(keys_all.patient);
  out.push_back(keys_all.label);
  out.push_back(keys_all.instance);
  out.push_back(keys_all.time);
  REQUIRE_FALSE(keys_all.has(medcl::Key::Study));

  // The gradient rule, in double and in float32, and the negative control (double).
  for (const auto& t : distributed_step(group, p, keys_all, true)) {
    out.push_back(t);
  }
  for (const auto& t : distributed_step(group, p, keys_all, false)) {
    out.push_back(t);
  }
  const auto pf = make_problem(total(rows), at::kFloat);
  for (const auto& t : distributed_step(group, pf, keys_all, true)) {
    out.push_back(t);
  }

  // The plain collectives.
  group.barrier();
  auto b = torch::full({2, 3}, static_cast<double>(rank), at::kDouble);
  group.broadcast(b, world - 1);
  out.push_back(b);
  auto s = torch::arange(6, at::kDouble) * static_cast<double>(rank + 1);
  group.all_reduce(s);
  out.push_back(s);
  auto si = torch::arange(6, at::kLong) * (rank + 1);
  group.all_reduce(si);
  out.push_back(si);
  auto nc = (torch::arange(6, at::kDouble).reshape({2, 3}) * static_cast<double>(rank + 1)).t();
  REQUIRE_FALSE(nc.is_contiguous());
  group.all_reduce(nc);
  out.push_back(nc);
  out.push_back(group.all_gather(torch::full({2, 3}, static_cast<double>(rank), at::kDouble)));
  // All ranks empty: an empty result of the right trailing shape.
  out.push_back(group.all_gather(torch::zeros({0, 7}, at::kFloat)));

  torch::save(out, dir + "/gather." + std::to_string(rank) + ".pt");
}

// Every step records its outcome on every rank: "ok" or the error's message.
void mismatch_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  const bool odd = rank == group.size() - 1; // the rank that differs
  auto step = [&](const std::string& name, const std::function<void()>& f) {
    std::string outcome = "ok";
    try {
      f();
    } catch (const c10::Error& e) {
      outcome = message_of(e);
    }
    write_text(dir + "/step." + name + "." + std::to_string(rank) + ".txt", outcome);
  };
  step("dtype", [&]() { group.all_gather(torch::zeros({2, 3}, odd ? at::kFloat : at::kDouble)); });
  step("trailing", [&]() { group.all_gather(torch::zeros({2 + rank, odd ? 4 : 3}, at::kDouble)); });
  step("reduce_shape", [&]() {
    auto t = torch::zeros({odd ? 4 : 3}, at::kDouble);
    group.all_reduce(t);
  });
  step("root", [&]() {
    auto t = torch::zeros({3}, at::kDouble);
    group.broadcast(t, odd ? 1 : 0);
  });
  step("different_ops", [&]() {
    auto t = torch::zeros({3}, at::kDouble);
    if (odd) {
      group.broadcast(t, 0);
    } else {
      group.all_reduce(t);
    }
  });
  step("refused", [&]() {
    group.all_gather(odd ? torch::zeros({}, at::kDouble) : torch::zeros({2}, at::kDouble));
  });
  step("keys_defined", [&]() {
    medcl::SampleKeys k;
    k.patient = torch::arange(3, at::kLong);
    if (!odd) {
      k.time = torch::zeros({3}, at::kDouble);
    }
    medcl::dist::gather_keys(k, group);
  });
  step("keys_dtype", [&]() {
    medcl::SampleKeys k;
    k.patient = torch::arange(3, at::kLong);
    k.time = torch::zeros({3}, odd ? at::kFloat : at::kDouble);
    medcl::dist::gather_keys(k, group);
  });
  step("keys_refused", [&]() {
    medcl::SampleKeys k;
    k.patient = torch::arange(3, at::kLong);
    k.label = torch::zeros({3}, odd ? at::kDouble : at::kLong);
    medcl::dist::gather_keys(k, group);
  });
  step("gradient_dtype", [&]() {
    auto z = torch::ones({2, 3}, odd ? at::kFloat : at::kDouble).requires_grad_(true);
    medcl::dist::gather_with_gradient(z, group);
  });
  step("gradient_mode", [&]() {
    auto z = torch::ones({2, 3}, at::kDouble).requires_grad_(!odd);
    medcl::dist::gather_with_gradient(z, group);
  });
  // After all of these the group still works.
  step("after", [&]() {
    const auto all = group.all_gather(torch::full({1}, static_cast<double>(rank), at::kDouble));
    TORCH_CHECK(all.equal(torch::arange(group.size(), at::kDouble)), "wrong result ", all.sizes());
  });
}

// A rank that exits (or stalls) before an all_gather: the others record their error and how
// long they waited for it.
void fault_scenario(const std::string& dir, bool stall) {
  const auto timeout =
      std::chrono::milliseconds(std::stoll(env_or("MEDCL_DIST_TIMEOUT_MS", "3000")));
  const auto group = worker_group(dir, timeout);
  group.barrier();
  if (group.rank() == group.size() - 1) {
    if (stall) {
      std::this_thread::sleep_for(std::chrono::minutes(5)); // the launcher kills it
    }
    std::_Exit(3);
  }
  const auto start = std::chrono::steady_clock::now();
  std::string outcome = "no error";
  try {
    group.all_gather(torch::ones({2, 3}, at::kDouble));
  } catch (const c10::Error& e) {
    outcome = message_of(e);
  }
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  write_text(
      dir + "/fault." + std::to_string(group.rank()) + ".txt",
      std::to_string(waited.count()) + "\n" + outcome);
}

// ---- Launching and checking -----------------------------------------------------------------

// Checks every rank's results of gather_scenario against the one-process computation.
void check_gather_results(const std::string& dir, int64_t world) {
  const auto rows = rows_per_rank(world);
  const int64_t n = total(rows);
  std::vector<std::vector<at::Tensor>> results;
  for (int64_t r = 0; r < world; ++r) {
    results.push_back(load_tensors(dir + "/gather." + std::to_string(r) + ".pt"));
    REQUIRE(results.back().size() == 22);
  }

  // The one-process reference on the concatenated batch.
  auto reference = [&](at::ScalarType dtype) {
    const auto p = make_problem(n, dtype);
    auto x = p.x.clone().requires_grad_(true);
    auto w = p.w.clone().requires_grad_(true);
    const auto z = embed(x, w);
    auto loss = keyed_loss(z, z, p.keys.patient, 0, n);
    loss.backward();
    return std::vector<at::Tensor>{loss.detach(), x.grad(), w.grad(), z.detach()};
  };
  const auto ref = reference(at::kDouble);
  const auto ref_f = reference(at::kFloat);
  const auto keys = make_problem(n, at::kDouble).keys;

  // Keys: every rank holds every rank's keys in rank order.
  for (int64_t r = 0; r < world; ++r) {
    CHECK(results[r][0].equal(keys.patient));
    CHECK(results[r][1].equal(keys.label));
    CHECK(results[r][2].equal(keys.instance));
    CHECK(results[r][3].equal(keys.time));
  }

  // Indices of {loss, x grad, w grad, gathered} of the correct double, control and float steps.
  const size_t good = 4;
  const size_t control = 8;
  const size_t single = 12;
  auto summed_loss = [&](size_t at) {
    auto s = results[0][at].clone();
    for (int64_t r = 1; r < world; ++r) {
      s += results[r][at];
    }
    return s;
  };
  auto x_grads = [&](size_t at) {
    std::vector<at::Tensor> g;
    for (int64_t r = 0; r < world; ++r) {
      g.push_back(results[r][at + 1]);
    }
    return torch::cat(g);
  };

  // Sum over ranks of the losses, and every gradient, equal the one-process ones (double).
  CHECK(rel_err(summed_loss(good), ref[0]) < 1e-12);
  CHECK(rel_err(x_grads(good), ref[1]) < 1e-12);
  for (int64_t r = 0; r < world; ++r) {
    CHECK(rel_err(results[r][good + 2], ref[2]) < 1e-12);
    CHECK(rel_err(results[r][good + 3], ref[3]) < 1e-13);
  }
  // float32 within 1e-5.
  CHECK(rel_err(summed_loss(single), ref_f[0]) < 1e-5);
  CHECK(rel_err(x_grads(single), ref_f[1]) < 1e-5);
  for (int64_t r = 0; r < world; ++r) {
    CHECK(results[r][single + 2].scalar_type() == at::kFloat);
    CHECK(rel_err(results[r][single + 2], ref_f[2]) < 1e-5);
  }
  // The negative control: the same forward, but without the sum over ranks the gradients are
  // not the one-process ones (the check above would fail on them).
  CHECK(rel_err(summed_loss(control), ref[0]) < 1e-12);
  const double control_x = rel_err(x_grads(control), ref[1]);
  const double control_w = rel_err(results[0][control + 2], ref[2]);
  INFO("negative control: relative error of x grad " << control_x << ", of w grad " << control_w);
  CHECK(control_x > 1e-2);
  CHECK(control_w > 1e-2);

  // The plain collectives against values computed here.
  double rank_sum = 0;
  for (int64_t r = 0; r < world; ++r) {
    rank_sum += static_cast<double>(r + 1);
  }
  std::vector<at::Tensor> gathered;
  for (int64_t r = 0; r < world; ++r) {
    gathered.push_back(torch::full({2, 3}, static_cast<double>(r), at::kDouble));
  }
  const auto gathered_ref = torch::cat(gathered);
  for (int64_t r = 0; r < world; ++r) {
    const auto& t = results[r];
    CHECK(t[16].equal(torch::full({2, 3}, static_cast<double>(world - 1), at::kDouble)));
    CHECK(t[17].equal(torch::arange(6, at::kDouble) * rank_sum));
    CHECK(t[18].equal(torch::arange(6, at::kLong) * static_cast<int64_t>(rank_sum)));
    CHECK(t[19].equal((torch::arange(6, at::kDouble).reshape({2, 3}) * rank_sum).t()));
    CHECK(t[20].equal(gathered_ref));
    CHECK(t[21].sizes() == at::IntArrayRef({0, 7}));
    CHECK(t[21].scalar_type() == at::kFloat);
  }
}

void run_gather_launch(int world, const std::string& store, bool agent_store) {
  medcl_test::TempDir dir;
  medcl_test::Launch launch;
  launch.world_size = world;
  launch.dir = dir.path.string();
  launch.env["MEDCL_DIST_SCENARIO"] = "gather";
  launch.env["MEDCL_DIST_DIR"] = launch.dir;
  launch.env["MEDCL_DIST_STORE"] = store;
  Store agent;
  if (store == "tcp") {
    // These ranks poll before they sleep in a wait (ProcessGroupOptions::poll).
    launch.env["MEDCL_TEST_POLL_US"] = "2000";
    launch.env["MASTER_ADDR"] = "127.0.0.1";
    if (agent_store) {
      // This process plays torchrun's agent: it hosts the store, every rank connects to it.
      agent = Store::tcp("127.0.0.1", 0, true, 0, std::chrono::seconds(60));
      launch.env["MASTER_PORT"] = std::to_string(agent.port());
      launch.env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
      launch.env["TORCHELASTIC_RESTART_COUNT"] = "2";
    } else {
      launch.env["MASTER_PORT"] = std::to_string(medcl_test::free_loopback_port());
    }
  }
  const auto exits = medcl_test::launch_workers(launch);
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  check_gather_results(launch.dir, world);
}

std::string read_step(const std::string& dir, const std::string& name, int rank) {
  return medcl_test::read_text_file(dir + "/step." + name + "." + std::to_string(rank) + ".txt");
}

// Sets environment variables for one test and restores them afterwards.
struct EnvGuard {
  std::map<std::string, std::pair<bool, std::string>> saved;
  void set(const std::string& name, const std::string& value) {
    remember(name);
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  void unset(const std::string& name) {
    remember(name);
    ::unsetenv(name.c_str());
  }
  void remember(const std::string& name) {
    if (saved.count(name) == 0) {
      const char* v = std::getenv(name.c_str());
      saved[name] = {v != nullptr, v != nullptr ? v : ""};
    }
  }
  ~EnvGuard() {
    for (const auto& kv : saved) {
      if (kv.second.first) {
        ::setenv(kv.first.c_str(), kv.second.second.c_str(), 1);
      } else {
        ::unsetenv(kv.first.c_str());
      }
    }
  }
};

void clear_launch_env(EnvGuard& env) {
  for (const char* name :
       {"RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_USE_AGENT_STORE",
        "TORCHELASTIC_RESTART_COUNT"}) {
    env.unset(name);
  }
}

} // namespace

// The workers: run only by the launcher (hidden from ctest and from a plain run).
TEST_CASE("medcl-dist-worker", "[.][dist-worker]") {
  const std::string scenario = env_or("MEDCL_DIST_SCENARIO", "");
  const std::string dir = env_or("MEDCL_DIST_DIR", "");
  REQUIRE_FALSE(scenario.empty());
  REQUIRE_FALSE(dir.empty());
  if (scenario == "gather") {
    gather_scenario(dir);
  } else if (scenario == "mismatch") {
    mismatch_scenario(dir);
  } else if (scenario == "exit" || scenario == "stall") {
    fault_scenario(dir, scenario == "stall");
  } else {
    FAIL("unknown scenario " << scenario);
  }
}

TEST_CASE("medcl::dist is available exactly when CMake found c10d with Gloo", "[dist]") {
#if defined(MEDCL_TEST_EXPECT_DIST)
  CHECK(medcl::dist::available());
#else
  CHECK_FALSE(medcl::dist::available());
  CHECK_THROWS_WITH(Store::file("unused", 1), Contains("medcl was built without medcl::dist"));
#endif
}

TEST_CASE("the one-process group: collectives return their input", "[dist]") {
  const ProcessGroup group;
  CHECK(group.rank() == 0);
  CHECK(group.size() == 1);
  CHECK(group.backend() == "none");
  group.barrier();
  auto t = torch::arange(6, at::kDouble).reshape({2, 3});
  const auto before = t.clone();
  group.all_reduce(t);
  group.broadcast(t, 0);
  CHECK(t.equal(before));
  std::vector<int64_t> counts;
  CHECK(group.all_gather(t, &counts).equal(before));
  CHECK(counts == std::vector<int64_t>{2});
  CHECK_THROWS_WITH(group.broadcast(t, 1), Contains("root must be a rank in [0, 1), got 1"));
  CHECK_THROWS_WITH(
      group.all_gather(torch::zeros({}, at::kDouble)), Contains("at least one dimension"));

  medcl::SampleKeys keys;
  keys.patient = torch::arange(4, at::kLong);
  const auto gathered = medcl::dist::gather_keys(keys, group, &counts);
  CHECK(gathered.patient.is_same(keys.patient));
  CHECK(counts == std::vector<int64_t>{4});
  keys.label = torch::zeros({4}, at::kDouble);
  CHECK_THROWS_WITH(
      medcl::dist::gather_keys(keys, group), Contains("sample key 'label' must be int64"));
}

TEST_CASE("gather_with_gradient in one process is the identity, gradient included", "[dist]") {
  const ProcessGroup group;
  auto x = torch::randn({3, 4}, at::kDouble).requires_grad_(true);
  std::vector<int64_t> counts;
  const auto y = medcl::dist::gather_with_gradient(x, group, &counts);
  CHECK(y.is_same(x));
  CHECK(counts == std::vector<int64_t>{3});
  const auto weights = torch::randn({3, 4}, at::kDouble);
  (y * weights).sum().backward();
  CHECK(x.grad().equal(weights));
  CHECK_THROWS_WITH(
      medcl::dist::gather_with_gradient(torch::ones({}, at::kDouble), group),
      Contains("gather_with_gradient: expected a tensor with at least one dimension"));
}

TEST_CASE("a Gloo group of one process takes the one-process paths", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  medcl_test::TempDir dir;
  auto store = Store::file(dir.file("store"), 1, std::chrono::seconds(30));
  store.set("key", "value");
  CHECK(store.get("key") == "value");
  CHECK(store.port() == -1);
  CHECK_THAT(store.describe(), Contains("FileStore at "));
  const auto group = medcl::dist::new_group(
      store, 0, 1, ProcessGroupOptions().timeout(std::chrono::seconds(30)).hostname("127.0.0.1"));
  CHECK(group.backend() == "gloo");
  CHECK(group.size() == 1);
  CHECK_THAT(group.describe(), Contains("gloo rank 0 of 1"));
  group.barrier();
  auto x = torch::randn({2, 3}, at::kDouble).requires_grad_(true);
  CHECK(medcl::dist::gather_with_gradient(x, group).is_same(x));
  CHECK(group.all_gather(x.detach()).equal(x.detach()));
  CHECK_THROWS_WITH(
      medcl::dist::new_group(store, 1, 1), Contains("rank must be in [0, world_size) = [0, 1)"));
  CHECK_THROWS_WITH(
      medcl::dist::new_group(
          store, 0, 1, ProcessGroupOptions().poll(std::chrono::microseconds(-1))),
      Contains("ProcessGroupOptions::poll must be in [0, the timeout), got -1 us"));
  CHECK_THROWS_WITH(
      medcl::dist::new_group(
          store,
          0,
          1,
          ProcessGroupOptions().timeout(std::chrono::seconds(1)).poll(std::chrono::seconds(2))),
      Contains("ProcessGroupOptions::poll must be in [0, the timeout), got 2000000 us"));
}

TEST_CASE("gather_with_gradient and the collectives on 2 and 4 ranks (FileStore)", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  const int world = GENERATE(2, 4);
  INFO("world size " << world);
  run_gather_launch(world, "file", false);
}

TEST_CASE(
    "gather_with_gradient on 2 and 4 ranks (loopback TCPStore, env://, polled waits)",
    "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  const int world = GENERATE(2, 4);
  INFO("world size " << world);
  run_gather_launch(world, "tcp", false);
}

TEST_CASE("ranks meet through torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE)", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  run_gather_launch(2, "tcp", true);
}

TEST_CASE("ranks that disagree fail together, with errors naming what differs", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  medcl_test::TempDir dir;
  medcl_test::Launch launch;
  launch.world_size = 3;
  launch.dir = dir.path.string();
  launch.env["MEDCL_DIST_SCENARIO"] = "mismatch";
  launch.env["MEDCL_DIST_DIR"] = launch.dir;
  const auto exits = medcl_test::launch_workers(launch);
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  const std::string d = launch.dir;

  for (int r = 0; r < 3; ++r) {
    INFO("rank " << r);
    CHECK_THAT(
        read_step(d, "dtype", r),
        Contains("all_gather: ranks disagree on the dtype: rank 0 has Double, rank 2 has Float"));
    CHECK_THAT(
        read_step(d, "trailing", r),
        Contains("ranks disagree on the shape beyond the first dimension: rank 0 has [*, 3], "
                 "rank 2 has [*, 4]"));
    CHECK_THAT(
        read_step(d, "reduce_shape", r),
        Contains("all_reduce: ranks disagree on the shape: rank 0 has [3], rank 2 has [4]"));
    CHECK_THAT(
        read_step(d, "root", r),
        Contains("broadcast: ranks disagree on the root: rank 0 says 0, rank 2 says 1"));
    CHECK_THAT(
        read_step(d, "different_ops", r), Contains("the ranks called different collectives"));
    CHECK_THAT(
        read_step(d, "keys_defined", r),
        Contains("gather_keys: ranks disagree on which sample keys are defined: rank 0 has "
                 "patient, time, rank 2 has patient"));
    CHECK_THAT(
        read_step(d, "keys_dtype", r),
        Contains("ranks disagree on the dtype of sample key 'time': rank 0 has Double, rank 2 "
                 "has Float"));
    CHECK_THAT(
        read_step(d, "gradient_dtype", r),
        Contains("gather_with_gradient: ranks disagree on the dtype"));
    CHECK_THAT(
        read_step(d, "gradient_mode", r),
        Contains("gather_with_gradient: ranks disagree on whether the result records a gradient: "
                 "on rank 0 it does, on rank 2 it does not"));
    CHECK(read_step(d, "after", r) == "ok");
  }
  // Which collective each side was in.
  CHECK_THAT(
      read_step(d, "different_ops", 0),
      Contains("rank 0 called all_reduce, rank 2 called broadcast"));
  CHECK_THAT(
      read_step(d, "different_ops", 2),
      Contains("rank 2 called broadcast, rank 0 called all_reduce"));
  // A rank whose own input is refused says why; the others name it.
  CHECK_THAT(read_step(d, "refused", 2), Contains("expected a tensor with at least one dimension"));
  CHECK_THAT(read_step(d, "keys_refused", 2), Contains("sample key 'label' must be int64"));
  for (int r = 0; r < 2; ++r) {
    CHECK_THAT(
        read_step(d, "refused", r), Contains("all_gather: rank 2 refused its input to all_gather"));
    CHECK_THAT(read_step(d, "keys_refused", r), Contains("gather_keys: rank 2 refused its input"));
  }
}

TEST_CASE("a rank that exits or stalls mid-collective makes the others fail in time", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  const bool stall = GENERATE(false, true);
  INFO((stall ? "the rank stalls" : "the rank exits"));
  medcl_test::TempDir dir;
  medcl_test::Launch launch;
  launch.world_size = 3;
  launch.dir = dir.path.string();
  launch.env["MEDCL_DIST_SCENARIO"] = stall ? "stall" : "exit";
  launch.env["MEDCL_DIST_DIR"] = launch.dir;
  const int64_t timeout_ms = 3000;
  launch.env["MEDCL_DIST_TIMEOUT_MS"] = std::to_string(timeout_ms);
  launch.deadline = std::chrono::seconds(90);
  if (stall) {
    launch.kill_after_others = {2};
  }
  const auto started = std::chrono::steady_clock::now();
  const auto exits = medcl_test::launch_workers(launch);
  const auto took = std::chrono::steady_clock::now() - started;
  INFO(medcl_test::all_logs(exits));
  // The survivors end by themselves, with the error, well before the launch's deadline.
  CHECK(took < std::chrono::seconds(60));
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    CHECK(exits[r].code == 0);
    CHECK_FALSE(exits[r].killed);
    const auto text =
        medcl_test::read_text_file(launch.dir + "/fault." + std::to_string(r) + ".txt");
    REQUIRE_FALSE(text.empty());
    const int64_t waited_ms = std::stoll(text.substr(0, text.find('\n')));
    const std::string message = text.substr(text.find('\n') + 1);
    CHECK_THAT(message, Contains("medcl::dist::all_gather: "));
    CHECK_THAT(
        message, Contains("failed on rank " + std::to_string(r) + " of 3 (gloo, timeout 3000 ms)"));
    // Bounded by the timeout (plus scheduling slack on a loaded machine); a stalled rank is
    // only noticed at the timeout.
    CHECK(waited_ms < timeout_ms + 10000);
    if (stall) {
      CHECK(waited_ms >= timeout_ms - 500);
    }
  }
  if (stall) {
    CHECK(exits[2].killed);
  } else {
    CHECK(exits[2].code == 3);
  }
}

TEST_CASE("launch environment errors name the variable", "[dist]") {
  EnvGuard env;
  clear_launch_env(env);
  CHECK_THROWS_WITH(medcl::dist::launch_env(), Contains("launch_env: WORLD_SIZE is not set"));
  CHECK_THROWS_WITH(
      medcl::dist::init_from_env(), Contains("WORLD_SIZE is not set (launch with torchrun"));
  env.set("WORLD_SIZE", "two");
  CHECK_THROWS_WITH(
      medcl::dist::launch_env(), Contains("WORLD_SIZE must be an integer, got 'two'"));
  env.set("WORLD_SIZE", "0");
  CHECK_THROWS_WITH(medcl::dist::launch_env(), Contains("WORLD_SIZE must be at least 1, got 0"));
  env.set("WORLD_SIZE", "2");
  CHECK_THROWS_WITH(medcl::dist::launch_env(), Contains("RANK is not set"));
  env.set("RANK", "2");
  CHECK_THROWS_WITH(
      medcl::dist::launch_env(),
      Contains("RANK must be in [0, WORLD_SIZE) = [0, 2), got RANK=2 with WORLD_SIZE=2"));
  env.set("RANK", "1");
  CHECK_THROWS_WITH(medcl::dist::launch_env(), Contains("MASTER_ADDR is not set"));
  env.set("MASTER_ADDR", "127.0.0.1");
  CHECK_THROWS_WITH(medcl::dist::launch_env(), Contains("MASTER_PORT is not set"));
  env.set("MASTER_PORT", "70000");
  CHECK_THROWS_WITH(
      medcl::dist::launch_env(), Contains("MASTER_PORT must be in [1, 65535], got 70000"));
  env.set("MASTER_PORT", "29500");
  env.set("LOCAL_RANK", "1");
  env.set("TORCHELASTIC_USE_AGENT_STORE", "True");
  env.set("TORCHELASTIC_RESTART_COUNT", "3");
  const auto e = medcl::dist::launch_env();
  CHECK(e.rank == 1);
  CHECK(e.world_size == 2);
  CHECK(e.local_rank == 1);
  CHECK(e.master_addr == "127.0.0.1");
  CHECK(e.master_port == 29500);
  CHECK(e.use_agent_store);
  CHECK(e.restart_count == 3);
  env.set("TORCHELASTIC_USE_AGENT_STORE", "False");
  CHECK_FALSE(medcl::dist::launch_env().use_agent_store);
}

TEST_CASE("an unreachable master, or ranks that never come, fail within the timeout", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  EnvGuard env;
  clear_launch_env(env);
  const int port = medcl_test::free_loopback_port();
  env.set("WORLD_SIZE", "2");
  env.set("MASTER_ADDR", "127.0.0.1");
  env.set("MASTER_PORT", std::to_string(port));
  const auto opts = ProcessGroupOptions().timeout(std::chrono::milliseconds(2000));
  const std::string address = "127.0.0.1:" + std::to_string(port);

  // Rank 1: nobody hosts the store.
  env.set("RANK", "1");
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(
      medcl::dist::init_from_env(opts),
      Contains("could not reach the TCPStore at " + address + " within 2000 ms"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));

  // Rank 0: hosts the store, but rank 1 never joins.
  env.set("RANK", "0");
  start = std::chrono::steady_clock::now();
  // LibTorch 2.x's store says that rank 1 never joined; 1.13's stops waiting silently and the
  // Gloo rendezvous says it.
  std::string message;
  try {
    medcl::dist::init_from_env(opts);
  } catch (const c10::Error& e) {
    message = e.what_without_backtrace();
  }
  CHECK_THAT(message, Contains("TCPStore at " + address));
  CHECK_THAT(message, Contains("within 2000 ms"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
}
