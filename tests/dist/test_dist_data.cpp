// Data and evaluation across ranks: shard_range, map_shards, gather_rows and the evaluation
// embeddings (extract_embeddings of a callable, a module and a method with a process group) on 2
// and 3 real processes (the test runs itself again as workers, see launcher.h), equal to one
// process, with shards that do not divide evenly and an empty shard; sharded samplers driving
// real ranks step by step; ranks that disagree or fail stop together with a named error.

#include "catch.h"
#include "dist/launcher.h"
#include "dist/worker.h"
#include "support.h"

#include <medcl/data/samplers.h>
#include <medcl/dist/process_group.h>
#include <medcl/dist/shards.h>
#include <medcl/eval/embed_across_ranks.h>
#include <medcl/methods/simclr.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using medcl::dist::ProcessGroup;
using medcl::dist::ProcessGroupOptions;
using medcl::dist::Store;
using medcl_test::all_exited_ok;
using medcl_test::Contains;
using medcl_test::env_or;
using medcl_test::worker_group;
using medcl_test::write_text;

constexpr int64_t kInputDim = 5;
constexpr int64_t kEmbeddingDim = 4;
constexpr int64_t kRows = 7;        // not divisible by 2 or 3
constexpr int64_t kFewRows = 2;     // fewer rows than 3 ranks: an empty shard
constexpr size_t kSamplerBatch = 4; // per rank

// Small integers: every product and sum is exact in double and float32, whatever the order or
// the blocking of the matrix product, so that sharded and one-process embeddings must be equal
// bit for bit.
at::Tensor inputs(int64_t n) {
  torch::manual_seed(300 + n);
  return torch::randint(-4, 5, {n, kInputDim}, at::kLong).to(at::kDouble);
}

// Linear (integer weights) then dropout: dropout in training mode would change the result, so an
// extraction that left the module in training mode fails the comparison.
torch::nn::Sequential make_encoder() {
  torch::manual_seed(11);
  torch::nn::Linear linear(kInputDim, kEmbeddingDim);
  {
    torch::NoGradGuard no_grad;
    linear->weight.copy_(torch::randint(-3, 4, {kEmbeddingDim, kInputDim}, at::kLong));
    linear->bias.copy_(torch::randint(-3, 4, {kEmbeddingDim}, at::kLong));
  }
  torch::nn::Sequential encoder(linear, torch::nn::Dropout(0.5));
  encoder->to(at::kDouble);
  encoder->train();
  return encoder;
}

at::Tensor callable_weights() {
  torch::manual_seed(12);
  return torch::randint(-2, 3, {kInputDim, kEmbeddingDim}, at::kLong).to(at::kDouble);
}

std::shared_ptr<medcl::SimCLR<torch::nn::Sequential>> make_method() {
  auto m = std::make_shared<medcl::SimCLR<torch::nn::Sequential>>(
      make_encoder(), medcl::SimCLROptions(kEmbeddingDim).hidden_dim(8).projection_dim(4));
  m->to(at::kDouble);
  m->train();
  return m;
}

// A per-row function with an integer result of two columns: map_shards of it must give
// row_codes(inputs) whatever the shards.
at::Tensor row_codes(const at::Tensor& x) {
  const auto first = x.select(1, 0).to(at::kLong);
  return at::stack({first * 7 + x.select(1, 1).to(at::kLong), first.abs()}, 1);
}

std::vector<int64_t> sites() {
  std::vector<int64_t> s;
  for (int i = 0; i < 23; ++i) {
    s.push_back(i % 3 == 0 ? 1 : 0);
  }
  return s;
}

// ---- Workers --------------------------------------------------------------------------------

// Every rank: the embeddings of kRows and kFewRows inputs by a module, a callable and a method;
// gathered per-record outputs; a sharded sampler's slices gathered step by step.
void embed_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  const int64_t world = group.size();
  std::vector<at::Tensor> out;
  const auto w = callable_weights();
  auto project = [&](const at::Tensor& x) { return x.mm(w) * 0.5; };
  for (int64_t n : {kRows, kFewRows}) {
    const auto x = inputs(n);
    auto encoder = make_encoder();
    out.push_back(medcl::eval::extract_embeddings(encoder, x, group, 2));
    TORCH_CHECK(encoder->is_training(), "the module's training mode was not restored");
    out.push_back(medcl::eval::extract_embeddings(project, x, group, 3));
    auto method = make_method();
    out.push_back(medcl::eval::extract_embeddings(*method, x, group, 1));
    TORCH_CHECK(method->is_training(), "the method's training mode was not restored");
    std::vector<int64_t> counts;
    out.push_back(medcl::dist::map_shards(row_codes, x, group, &counts));
    out.push_back(torch::tensor(counts, at::kLong));
  }
  // Per-record outputs of this rank's shard, gathered in input order.
  const auto mine = medcl::dist::shard_range(kRows, rank, world);
  std::vector<int64_t> counts;
  const auto labels = torch::arange(kRows, at::kLong) * 10;
  out.push_back(medcl::dist::gather_rows(labels.slice(0, mine.begin, mine.end), group, &counts));
  out.push_back(torch::tensor(counts, at::kLong));
  // A sharded sampler: every rank takes its slice of each global batch, for two epochs; the
  // slices are gathered at every step (a rank that ran out early would leave the others waiting).
  medcl::data::SiteStratifiedSampler sampler(sites(), 5);
  sampler.shard(rank, world);
  std::vector<at::Tensor> steps;
  for (int epoch = 0; epoch < 2; ++epoch) {
    if (epoch > 0) {
      sampler.reset();
    }
    while (auto batch = sampler.next(kSamplerBatch)) {
      std::vector<int64_t> idx(batch->begin(), batch->end());
      steps.push_back(medcl::dist::gather_rows(torch::tensor(idx, at::kLong), group));
    }
  }
  out.push_back(torch::cat(steps));
  out.push_back(torch::tensor({static_cast<int64_t>(steps.size())}, at::kLong));
  torch::save(out, dir + "/embed." + std::to_string(rank) + ".pt");
}

// Every step records its outcome on every rank: "ok" or the error's message.
void errors_scenario(const std::string& dir) {
  const auto group = worker_group(dir, std::chrono::seconds(60));
  const int64_t rank = group.rank();
  const bool odd = rank == group.size() - 1; // the rank that differs
  auto step = [&](const std::string& name, const std::function<void()>& f) {
    std::string outcome = "ok";
    try {
      f();
    } catch (const c10::Error& e) {
      outcome = e.what_without_backtrace();
    }
    write_text(dir + "/step." + name + "." + std::to_string(rank) + ".txt", outcome);
  };
  auto plain = [](const at::Tensor& x) { return x.narrow(1, 0, 3) * 2; };
  auto rows = [&]() { medcl::eval::extract_embeddings(plain, inputs(odd ? 8 : 7), group); };
  step("rows", rows);
  auto shape = [&]() {
    medcl::eval::extract_embeddings(plain, torch::zeros({7, odd ? 6 : 5}, at::kDouble), group);
  };
  step("shape", shape);
  step("nan", [&]() {
    auto fn = [&](const at::Tensor& x) {
      return odd ? x.narrow(1, 0, 3) * std::numeric_limits<double>::quiet_NaN() : plain(x);
    };
    medcl::eval::extract_embeddings(fn, inputs(7), group);
  });
  step("throws", [&]() {
    auto fn = [&](const at::Tensor& x) {
      if (rank == 1) {
        throw std::runtime_error("the encoder ran out of memory");
      }
      return plain(x);
    };
    medcl::eval::extract_embeddings(fn, inputs(7), group);
  });
  step("dim", [&]() {
    auto fn = [&](const at::Tensor& x) { return x.narrow(1, 0, odd ? 4 : 3); };
    medcl::eval::extract_embeddings(fn, inputs(7), group);
  });
  auto wrong_rows = [&]() {
    auto fn = [&](const at::Tensor& x) { return odd ? x.narrow(0, 0, 1) : x; };
    medcl::dist::map_shards(fn, inputs(7), group);
  };
  step("wrong_rows", wrong_rows);
  auto undefined = [&]() {
    medcl::eval::extract_embeddings(plain, odd ? at::Tensor() : inputs(7), group);
  };
  step("undefined", undefined);
  auto gather_dtype = [&]() {
    medcl::dist::gather_rows(torch::zeros({2, 3}, odd ? at::kFloat : at::kDouble), group);
  };
  step("gather_dtype", gather_dtype);
  // After all of these the group still works.
  step("after", [&]() {
    const auto z = medcl::eval::extract_embeddings(plain, inputs(7), group, 2);
    const auto ref = medcl::eval::extract_embeddings(plain, inputs(7), 2);
    TORCH_CHECK(z.equal(ref), "wrong embeddings after the errors");
  });
}

// ---- Checking -------------------------------------------------------------------------------

medcl_test::Launch data_launch(const std::string& dir, int world, const std::string& scenario) {
  medcl_test::Launch launch;
  launch.world_size = world;
  launch.dir = dir;
  launch.worker_test = "medcl-dist-data-worker";
  launch.env["MEDCL_DIST_SCENARIO"] = scenario;
  launch.env["MEDCL_DIST_DIR"] = dir;
  launch.deadline = std::chrono::seconds(90);
  return launch;
}

std::string read_step(const std::string& dir, const std::string& name, int rank) {
  return medcl_test::read_text_file(dir + "/step." + name + "." + std::to_string(rank) + ".txt");
}

} // namespace

// The workers: run only by the launcher (hidden from ctest and from a plain run).
TEST_CASE("medcl-dist-data-worker", "[.][dist-data-worker]") {
  const std::string scenario = env_or("MEDCL_DIST_SCENARIO", "");
  const std::string dir = env_or("MEDCL_DIST_DIR", "");
  REQUIRE_FALSE(scenario.empty());
  REQUIRE_FALSE(dir.empty());
  if (scenario == "embed") {
    embed_scenario(dir);
  } else if (scenario == "errors") {
    errors_scenario(dir);
  } else {
    FAIL("unknown scenario " << scenario);
  }
}

TEST_CASE("medcl::dist is available for the data tests exactly when CMake found it", "[dist]") {
#if defined(MEDCL_TEST_EXPECT_DIST)
  CHECK(medcl::dist::available());
#else
  CHECK_FALSE(medcl::dist::available());
#endif
}

TEST_CASE("shard_range: contiguous, as even as possible, larger shards first", "[dist]") {
  using medcl::dist::shard_range;
  auto sizes = [](int64_t n, int64_t world) {
    std::vector<int64_t> s;
    int64_t next = 0;
    for (int64_t r = 0; r < world; ++r) {
      const auto range = shard_range(n, r, world);
      CHECK(range.begin == next); // contiguous, in rank order
      next = range.end;
      s.push_back(range.size());
    }
    CHECK(next == n);
    return s;
  };
  CHECK(sizes(10, 3) == std::vector<int64_t>{4, 3, 3});
  CHECK(sizes(11, 3) == std::vector<int64_t>{4, 4, 3});
  CHECK(sizes(12, 3) == std::vector<int64_t>{4, 4, 4});
  CHECK(sizes(7, 2) == std::vector<int64_t>{4, 3});
  CHECK(sizes(2, 3) == std::vector<int64_t>{1, 1, 0});
  CHECK(sizes(0, 2) == std::vector<int64_t>{0, 0});
  CHECK(sizes(5, 1) == std::vector<int64_t>{5});
  CHECK(shard_range(10, 2, 3).begin == 7);
  CHECK_THROWS_WITH(
      shard_range(10, 3, 3),
      Contains("shard_range: rank must be in [0, world_size) = [0, 3), got 3"));
  CHECK_THROWS_WITH(
      shard_range(10, -1, 3), Contains("rank must be in [0, world_size) = [0, 3), got -1"));
  CHECK_THROWS_WITH(shard_range(10, 0, 0), Contains("shard_range: world_size must be >= 1, got 0"));
  CHECK_THROWS_WITH(
      shard_range(-1, 0, 2), Contains("shard_range: the number of rows must be >= 0, got -1"));
}

TEST_CASE(
    "extract_embeddings, map_shards and gather_rows in one process are the one-process ones",
    "[dist]") {
  const ProcessGroup group;
  const auto x = inputs(kRows);
  auto encoder = make_encoder();
  const auto z = medcl::eval::extract_embeddings(encoder, x, group, 3);
  CHECK(encoder->is_training());
  CHECK(z.scalar_type() == at::kFloat);
  CHECK(z.equal(medcl::eval::extract_embeddings(encoder, x, 3)));
  const auto w = callable_weights();
  auto project = [&](const at::Tensor& v) { return v.mm(w) * 0.5; };
  CHECK(medcl::eval::extract_embeddings(project, x, group)
            .equal(medcl::eval::extract_embeddings(project, x)));
  auto method = make_method();
  CHECK(medcl::eval::extract_embeddings(*method, x, group, 2)
            .equal(medcl::eval::extract_embeddings(*method, x, 2)));
  CHECK(method->is_training());
  // The one-process checks are eval's.
  CHECK_THROWS_WITH(
      medcl::eval::extract_embeddings(project, x, group, 0),
      Contains("batch_size must be >= 1, got 0"));

  std::vector<int64_t> shard_counts;
  CHECK(medcl::dist::map_shards(row_codes, x, group, &shard_counts).equal(row_codes(x)));
  CHECK(shard_counts == std::vector<int64_t>{kRows});
  auto first_row = [](const at::Tensor& v) { return v.narrow(0, 0, 1); };
  CHECK_THROWS_WITH(
      medcl::dist::map_shards(first_row, x, group),
      Contains(
          "medcl::dist::map_shards on rank 0: expected [7, ...] for the rows 0..6, got [1, 5]"));
  CHECK_THROWS_WITH(
      medcl::dist::map_shards(first_row, torch::zeros({0, 3}), group),
      Contains("medcl::dist::map_shards: expected inputs with at least one row, got shape [0, 3]"));

  auto rows = torch::arange(6, at::kLong).reshape({3, 2});
  std::vector<int64_t> counts;
  CHECK(medcl::dist::gather_rows(rows, group, &counts).equal(rows));
  CHECK(counts == std::vector<int64_t>{3});
  auto with_grad = torch::ones({2, 2}, at::kDouble).requires_grad_(true);
  CHECK_FALSE(medcl::dist::gather_rows(with_grad * 2, group).requires_grad());
  CHECK_THROWS_WITH(
      medcl::dist::gather_rows(torch::zeros({}, at::kDouble), group),
      Contains("medcl::dist::gather_rows: expected a tensor with at least one dimension"));
}

TEST_CASE(
    "extract_embeddings, map_shards and gather_rows on 2 and 3 ranks equal one process",
    "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  const int world = GENERATE(2, 3);
  INFO("world size " << world);
  medcl_test::TempDir dir;
  const auto launch = data_launch(dir.path.string(), world, "embed");
  const auto exits = medcl_test::launch_workers(launch);
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));

  // The one-process references.
  std::vector<at::Tensor> ref;
  const auto w = callable_weights();
  auto project = [&](const at::Tensor& x) { return x.mm(w) * 0.5; };
  for (int64_t n : {kRows, kFewRows}) {
    const auto x = inputs(n);
    auto encoder = make_encoder();
    ref.push_back(medcl::eval::extract_embeddings(encoder, x, 2));
    ref.push_back(medcl::eval::extract_embeddings(project, x, 3));
    auto method = make_method();
    ref.push_back(medcl::eval::extract_embeddings(*method, x, 1));
    ref.push_back(row_codes(x));
    std::vector<int64_t> shard_rows;
    for (int r = 0; r < world; ++r) {
      shard_rows.push_back(medcl::dist::shard_range(n, r, world).size());
    }
    ref.push_back(torch::tensor(shard_rows, at::kLong));
  }
  std::vector<int64_t> counts;
  for (int r = 0; r < world; ++r) {
    counts.push_back(medcl::dist::shard_range(kRows, r, world).size());
  }
  // The one-process sampler with the global batch size, for the same two epochs.
  medcl::data::SiteStratifiedSampler single(sites(), 5);
  std::vector<at::Tensor> steps;
  for (int epoch = 0; epoch < 2; ++epoch) {
    if (epoch > 0) {
      single.reset();
    }
    while (auto batch = single.next(kSamplerBatch * static_cast<size_t>(world))) {
      std::vector<int64_t> idx(batch->begin(), batch->end());
      steps.push_back(torch::tensor(idx, at::kLong));
    }
  }

  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    std::vector<at::Tensor> got;
    torch::load(got, launch.dir + "/embed." + std::to_string(r) + ".pt");
    REQUIRE(got.size() == ref.size() + 4);
    for (size_t i = 0; i < ref.size(); ++i) {
      INFO(
          "result " << i << " (module, callable, method, map_shards, its counts; " << kRows
                    << " then " << kFewRows << " rows)");
      CHECK(got[i].scalar_type() == (i % 5 < 3 ? at::kFloat : at::kLong));
      CHECK(got[i].equal(ref[i])); // bit for bit, every rank the whole set in input order
    }
    CHECK(got[ref.size()].equal(torch::arange(kRows, at::kLong) * 10));
    CHECK(got[ref.size() + 1].equal(torch::tensor(counts, at::kLong)));
    CHECK(got[ref.size() + 2].equal(torch::cat(steps)));
    CHECK(got[ref.size() + 3].item<int64_t>() == static_cast<int64_t>(steps.size()));
  }
  // The integer encoder gives distinct rows, so a wrong order could not go unnoticed.
  CHECK(std::get<0>(at::unique_dim(ref[0], 0)).size(0) == kRows);
}

TEST_CASE("extract_embeddings: ranks that disagree or fail stop together, named", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  medcl_test::TempDir dir;
  const auto launch = data_launch(dir.path.string(), 3, "errors");
  const auto exits = medcl_test::launch_workers(launch);
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  const std::string d = launch.dir;
  for (int r = 0; r < 3; ++r) {
    INFO("rank " << r);
    CHECK_THAT(
        read_step(d, "rows", r),
        Contains("medcl::eval::extract_embeddings: ranks disagree on the number of inputs: rank 0 "
                 "has 7, rank 2 has 8"));
    CHECK_THAT(
        read_step(d, "shape", r),
        Contains("ranks disagree on the inputs beyond their number of rows: rank 0 has [*, 5] "
                 "Double, rank 2 has [*, 6] Double"));
    CHECK_THAT(
        read_step(d, "dim", r),
        Contains("medcl::eval::extract_embeddings: ranks disagree on their results beyond the "
                 "number of rows: rank 0 has [*, 3] Float, rank 2 has [*, 4] Float"));
    CHECK_THAT(
        read_step(d, "gather_dtype", r),
        Contains("medcl::dist::gather_rows: ranks disagree on the dtype: rank 0 has Double, rank "
                 "2 has Float"));
    CHECK(read_step(d, "after", r) == "ok");
  }
  // A rank whose own extraction fails says why; the others name it.
  CHECK_THAT(
      read_step(d, "nan", 2),
      Contains("extract_embeddings: the encoder returned NaN or Inf for rows"));
  CHECK_THAT(
      read_step(d, "throws", 1),
      Contains("medcl::eval::extract_embeddings on rank 1: the encoder ran out of memory"));
  CHECK_THAT(
      read_step(d, "undefined", 2),
      Contains("medcl::eval::extract_embeddings: the inputs are an undefined tensor"));
  CHECK_THAT(
      read_step(d, "wrong_rows", 2),
      Contains("medcl::dist::map_shards on rank 2: expected [2, ...] for the rows 5..6, got [1, "
               "5]"));
  for (int r = 0; r < 2; ++r) {
    CHECK_THAT(
        read_step(d, "nan", r),
        Contains("medcl::eval::extract_embeddings: rank 2 refused its input"));
    CHECK_THAT(read_step(d, "undefined", r), Contains("rank 2 refused its input"));
    CHECK_THAT(
        read_step(d, "wrong_rows", r),
        Contains("medcl::dist::map_shards: rank 2 refused its input"));
  }
  for (int r : {0, 2}) {
    CHECK_THAT(
        read_step(d, "throws", r),
        Contains("medcl::eval::extract_embeddings: rank 1 refused its input"));
  }
}
