#include <medcl/train/checkpoint.h>
#include <medcl/train/log.h>
#include <medcl/train/optim.h>
#include <medcl/train/progress.h>
#include <medcl/train/schedule.h>

#include <torch/torch.h>
#include "catch.h"
#include "support.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using medcl_test::Contains;
using medcl_test::TempDir;
namespace fs = std::filesystem;
namespace mt = medcl::train;

namespace {

// A tiny model with every kind of state a method has: parameters, batch-norm statistics, dropout
// (default CPU generator) and a queue buffer updated outside autograd.
struct TinyImpl : torch::nn::Module {
  explicit TinyImpl(int64_t hidden = 16) {
    fc1 = register_module("fc1", torch::nn::Linear(6, hidden));
    bn = register_module("bn", torch::nn::BatchNorm1d(hidden));
    drop = register_module("drop", torch::nn::Dropout(0.3));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 3));
    queue = register_buffer("queue", torch::zeros({4, 3}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc2(drop(torch::relu(bn(fc1(x)))));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::Tensor queue;
};
TORCH_MODULE(Tiny);

struct Run {
  Tiny model;
  std::unique_ptr<torch::optim::Optimizer> body, head;
  at::Generator data;
  mt::CosineSchedule lr{mt::CosineScheduleOptions(0.5, 0.01, 10).warmup_steps(2).warmup_start(0.1)};

  Run(uint64_t init_seed, uint64_t data_seed) : model(nullptr) {
    torch::manual_seed(init_seed);
    model = Tiny();
    body = mt::make_optimizer(
        mt::ParameterGroups().add(*model->fc1).add(*model->bn),
        mt::OptimizerOptions().kind("lars").weight_decay(1e-4));
    head = mt::make_optimizer(*model->fc2, mt::OptimizerOptions().kind("adamw"));
    data = at::detail::createCPUGenerator(data_seed);
  }

  mt::Checkpoint checkpoint() {
    mt::Checkpoint c("medcl.Test");
    c.module(*model).optimizer("body", *body).optimizer("head", *head).generator("data", data);
    return c;
  }

  double step(int64_t s) {
    auto x = torch::randn({8, 6}, data);
    auto y = torch::randint(0, 3, {8}, data);
    mt::set_learning_rate(*body, lr(s));
    mt::set_learning_rate(*head, lr(s) / 10);
    auto out = model->forward(x);
    auto loss = torch::nn::functional::cross_entropy(out, y) +
        0.1 * (out.mean(0) - model->queue.mean(0)).pow(2).sum();
    body->zero_grad();
    head->zero_grad();
    loss.backward();
    body->step();
    head->step();
    torch::NoGradGuard no_grad;
    model->queue.copy_(torch::roll(model->queue, 1, 0));
    model->queue[0].copy_(out.detach().mean(0));
    return loss.item<double>();
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

} // namespace

TEST_CASE(
    "a resumed run reproduces the losses of an uninterrupted one bit for bit",
    "[train][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("run.ckpt");
  const int64_t total = 10, cut = 5;
  std::vector<double> uninterrupted;
  std::vector<torch::Tensor> final_params;
  {
    Run a(7, 11);
    for (int64_t s = 0; s < total; ++s) {
      if (s == cut) {
        auto c = a.checkpoint();
        c.step(s).metadata("{\"lr\":0.5}").tensor("best", torch::tensor({1.5, 2.5}));
        c.save(path);
      }
      uninterrupted.push_back(a.step(s));
    }
    for (const auto& p : a.model->parameters()) {
      final_params.push_back(p.detach().clone());
    }
    final_params.push_back(a.model->bn->running_mean.clone());
    final_params.push_back(a.model->queue.clone());
  }
  REQUIRE(dir.listing() == std::vector<std::string>{"run.ckpt"});

  auto info = mt::Checkpoint::peek(path);
  REQUIRE(info.kind == "medcl.Test");
  REQUIRE(info.step == cut);
  REQUIRE(info.metadata == "{\"lr\":0.5}");
  REQUIRE(info.medcl_version == MEDCL_VERSION_STRING);
  REQUIRE(info.optimizers == std::vector<std::string>{"body", "head"});
  std::vector<std::string> generators{"data", "default_cpu"};
  if (torch::cuda::is_available()) { // each device's default generator is saved too
    for (size_t d = 0; d < torch::cuda::device_count(); ++d) {
      generators.push_back("default_cuda" + std::to_string(d));
    }
  }
  REQUIRE(info.generators == generators);
  REQUIRE(info.tensors == std::vector<std::string>{"best"});

  // Other initial weights, data seed and default generator: everything must come from the file.
  Run b(99, 123);
  auto c = b.checkpoint();
  c.load(path);
  REQUIRE(c.step() == cut);
  REQUIRE(c.metadata() == "{\"lr\":0.5}");
  REQUIRE(c.loaded_version() == MEDCL_VERSION_STRING);
  REQUIRE(torch::equal(c.tensor("best"), torch::tensor({1.5, 2.5})));
  for (int64_t s = c.step(); s < total; ++s) {
    const double loss = b.step(s);
    REQUIRE(loss == uninterrupted[static_cast<size_t>(s)]);
  }
  std::vector<torch::Tensor> resumed;
  for (const auto& p : b.model->parameters()) {
    resumed.push_back(p.detach());
  }
  resumed.push_back(b.model->bn->running_mean);
  resumed.push_back(b.model->queue);
  REQUIRE(resumed.size() == final_params.size());
  for (size_t i = 0; i < resumed.size(); ++i) {
    REQUIRE(torch::equal(resumed[i], final_params[i]));
  }

  SECTION("without the default CPU generator the dropout masks, hence the losses, differ") {
    Run d(99, 123);
    auto cd = d.checkpoint();
    cd.default_generators(false).load(path);
    bool all_equal = true;
    for (int64_t s = cut; s < total; ++s) {
      all_equal = all_equal && d.step(s) == uninterrupted[static_cast<size_t>(s)];
    }
    REQUIRE_FALSE(all_equal);
  }
  SECTION("without the optimiser state the losses differ") {
    Run d(99, 123);
    mt::Checkpoint cd("medcl.Test");
    cd.module(*d.model).generator("data", d.data).load(path);
    d.step(cut);
    REQUIRE(d.step(cut + 1) != uninterrupted[cut + 1]);
  }
}

TEST_CASE(
    "checkpoint load refuses another kind, other shapes and missing state",
    "[train][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("a.ckpt");
  Run a(1, 2);
  a.checkpoint().save(path);

  Run b(3, 4);
  auto before = b.model->fc1->weight.detach().clone();
  mt::Checkpoint other("medcl.MoCo");
  other.module(*b.model);
  REQUIRE_THROWS_WITH(
      other.load(path),
      Contains("is a checkpoint of kind 'medcl.Test', expected kind 'medcl.MoCo'") &&
          Contains(path));

  Tiny wide(17);
  mt::Checkpoint shape("medcl.Test");
  shape.module(*wide).default_generators(false);
  REQUIRE_THROWS_WITH(
      shape.load(path),
      Contains("parameter 'fc1.weight' of module 'model' has shape [17, 6] but [16, 6]"));

  torch::nn::Sequential extra(Tiny(), torch::nn::Linear(2, 2));
  mt::Checkpoint missing("medcl.Test");
  missing.module(*extra);
  REQUIRE_THROWS_WITH(
      missing.load(path), Contains("has no parameter '0.fc1.weight' in module 'model'"));

  // A module with only part of the saved state.
  struct Part : torch::nn::Module {
    Part() {
      register_module("fc1", torch::nn::Linear(6, 16));
    }
  };
  Part part;
  mt::Checkpoint unexpected("medcl.Test");
  unexpected.module(part);
  REQUIRE_THROWS_WITH(unexpected.load(path), Contains("that module 'model' does not have"));

  auto c = b.checkpoint();
  c.optimizer("teacher", *b.head);
  REQUIRE_THROWS_WITH(c.load(path), Contains("has no optimizer 'teacher'"));
  auto g = b.checkpoint();
  g.generator("augment", at::detail::createCPUGenerator(5));
  REQUIRE_THROWS_WITH(g.load(path), Contains("has no generator 'augment'"));
  // None of the failed loads changed the model.
  REQUIRE(torch::equal(b.model->fc1->weight.detach(), before));

  REQUIRE_THROWS_WITH(b.checkpoint().module(*b.model), Contains("module 'model' registered twice"));
  REQUIRE_THROWS_WITH(
      mt::Checkpoint("x").generator("default_cpu", at::detail::createCPUGenerator(1)),
      Contains("names starting with 'default_' are reserved"));
  REQUIRE_THROWS_WITH(mt::Checkpoint("x").tensor("missing"), Contains("no tensor 'missing'"));
}

TEST_CASE(
    "corrupt, truncated, foreign and missing checkpoint files are clear errors",
    "[train][checkpoint]") {
  TempDir dir;
  const std::string good = dir.file("good.ckpt");
  Run a(1, 2);
  a.checkpoint().step(3).save(good);
  const std::string bytes = read_file(good);
  REQUIRE(bytes.size() > 1000);

  const std::string truncated = dir.file("truncated.ckpt");
  write_file(truncated, bytes.substr(0, bytes.size() / 2));
  Run b(1, 2);
  auto c = b.checkpoint();
  REQUIRE_THROWS_WITH(
      c.load(truncated), Contains("Checkpoint::load: '" + truncated + "' is truncated or damaged"));
  REQUIRE_THROWS_WITH(mt::Checkpoint::peek(truncated), Contains(truncated));

  const std::string corrupt = dir.file("corrupt.ckpt");
  std::string noise(4096, '\0');
  std::mt19937 rng(1);
  for (auto& ch : noise) {
    ch = static_cast<char>(rng() & 0xff);
  }
  write_file(corrupt, noise);
  REQUIRE_THROWS_WITH(c.load(corrupt), Contains("'" + corrupt + "' is not a medcl checkpoint"));

  // Flipping bytes anywhere in a valid file (here in the middle, inside the stored tensors,
  // which LibTorch 1.13's reader would load silently) is caught by the checksum.
  for (size_t at : {bytes.size() / 3, bytes.size() - 100}) {
    std::string flipped = bytes;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x10);
    const std::string damaged = dir.file("damaged.ckpt");
    write_file(damaged, flipped);
    REQUIRE_THROWS_WITH(
        c.load(damaged),
        Contains("'" + damaged + "' is corrupt: its checksum does not match its contents"));
  }

  // A well-formed header over data that is not an archive: the archive reader's error, named.
  const std::string garbage = dir.file("garbage.ckpt");
  mt::detail::Checksum sum;
  sum.update(noise.data(), noise.size());
  std::string header(mt::detail::kMagic, sizeof(mt::detail::kMagic));
  header.resize(mt::detail::kHeaderSize);
  mt::detail::put_u64(&header[sizeof(mt::detail::kMagic)], noise.size());
  mt::detail::put_u64(&header[sizeof(mt::detail::kMagic) + 8], sum.digest());
  write_file(garbage, header + noise);
  REQUIRE_THROWS_WITH(
      c.load(garbage),
      Contains("'" + garbage + "' is not a readable checkpoint (corrupt or truncated file?)"));

  const std::string foreign = dir.file("tensor.pt");
  torch::save(torch::ones({3}), foreign);
  REQUIRE_THROWS_WITH(c.load(foreign), Contains("'" + foreign + "' is not a medcl checkpoint"));

  REQUIRE_THROWS_WITH(
      c.load(dir.file("absent.ckpt")), Contains("cannot open '" + dir.file("absent.ckpt") + "'"));
  // The good file still loads.
  c.load(good);
  REQUIRE(c.step() == 3);
}

TEST_CASE(
    "checkpoint writes are atomic: a failed write leaves nothing behind",
    "[train][checkpoint]") {
  TempDir dir;
  Run a(1, 2);
  auto c = a.checkpoint();
  const std::string nowhere = (dir.path / "missing" / "x.ckpt").string();
  REQUIRE_THROWS_WITH(
      c.save(nowhere), Contains("cannot write '" + nowhere + "'") && Contains("does not exist"));
  REQUIRE(dir.listing().empty());

  // The destination is a directory: the temporary file is written, the rename fails, and the
  // temporary file is removed.
  fs::create_directories(dir.path / "taken.ckpt" / "inside");
  const std::string taken = dir.file("taken.ckpt");
  REQUIRE_THROWS_WITH(
      c.save(taken), Contains("cannot write '" + taken + "'") && Contains("rename"));
  REQUIRE(dir.listing() == std::vector<std::string>{"taken.ckpt"});

  // Overwriting an existing checkpoint replaces it whole.
  const std::string path = dir.file("last.ckpt");
  c.step(1).save(path);
  c.step(2).save(path);
  REQUIRE(mt::Checkpoint::peek(path).step == 2);
  REQUIRE(dir.listing() == std::vector<std::string>{"last.ckpt", "taken.ckpt"});
}

TEST_CASE("progress writes step, loss, lr, throughput and ETA", "[train][progress]") {
  double t = 0;
  int loss_calls = 0;
  auto loss_fn = [&] {
    ++loss_calls;
    return 1.5;
  };
  SECTION("plain lines every N steps and at the end") {
    std::ostringstream out;
    {
      mt::Progress p(
          mt::ProgressOptions(4).mode(mt::ProgressMode::Plain).every(2).clock([&] { return t; }),
          out);
      REQUIRE_FALSE(p.terminal());
      for (int64_t s = 1; s <= 4; ++s) {
        t = static_cast<double>(s);
        p.update(s, loss_fn, 0.1 / static_cast<double>(s), 32);
      }
      t = 5;
    } // the destructor finishes
    const std::string text = out.str();
    INFO(text);
    REQUIRE(loss_calls == 2); // the loss is evaluated only for the two lines written
    REQUIRE(text.find('\r') == std::string::npos);
    REQUIRE(
        text ==
        "[train] step 2/4 (50.0%)  loss 1.5000 (smoothed 1.5000)  lr 5.000e-02  32.0 samples/s  "
        "ETA 0:00:02\n"
        "[train] step 4/4 (100.0%)  loss 1.5000 (smoothed 1.5000)  lr 2.500e-02  32.0 samples/s  "
        "ETA 0:00:00\n"
        "[train] done: 4 steps in 0:00:05, 25.6 samples/s\n");
  }
  SECTION("terminal mode rewrites one line and throttles redraws") {
    std::ostringstream out;
    mt::Progress p(
        mt::ProgressOptions(100).mode(mt::ProgressMode::Terminal).color(false).clock([&] {
          return t;
        }),
        out);
    REQUIRE(p.terminal());
    for (int64_t s = 1; s <= 50; ++s) {
      t = 0.01 * static_cast<double>(s); // 100 steps per second: at most 10 redraws per second
      p.update(s, loss_fn, 0.1, 8);
    }
    p.finish();
    const std::string text = out.str();
    const auto redraws = std::count(text.begin(), text.end(), '\r');
    REQUIRE(redraws >= 4);
    REQUIRE(redraws <= 6);
    // Every redraw by update evaluates the loss; finish may redraw the last step without it.
    REQUIRE(loss_calls >= redraws - 1);
    REQUIRE(loss_calls <= redraws);
    REQUIRE(text.find("\x1b[K") != std::string::npos);
    REQUIRE(text.find("step 50/100 (50.0%)") != std::string::npos); // finish draws the last step
    REQUIRE(text.find("800.0 samples/s") != std::string::npos);
    // 50 of 100 steps: not "done".
    REQUIRE(text.find("\n[train] stopped at step 50 of 100 after 0:00:01") != std::string::npos);
    REQUIRE(text.find("done") == std::string::npos);
  }
  SECTION("a resumed run: ETA from this process's steps, the summary says which steps ran") {
    std::ostringstream out;
    {
      mt::Progress p(
          mt::ProgressOptions(100)
              .start_step(50)
              .mode(mt::ProgressMode::Plain)
              .every(10)
              .smoothing(0)
              .clock([&] { return t; }),
          out);
      for (int64_t s = 51; s <= 100; ++s) {
        t = 0.1 * static_cast<double>(s - 50); // 0.1 s per step in this process
        p.update(s, 2.0, 0.1, 4);
      }
    }
    const std::string text = out.str();
    INFO(text);
    // At step 60: 1 s for 10 steps here, 40 left: 4 s (the absolute step would give 0:00:01).
    REQUIRE(text.find("step 60/100 (60.0%)  loss 2.0000  lr") != std::string::npos);
    REQUIRE(text.find("ETA 0:00:04\n") != std::string::npos);
    REQUIRE(
        text.find("[train] done: steps 51-100 of 100 (50 in this process) in 0:00:05") !=
        std::string::npos);
  }
  SECTION("an exception that ends the run is not reported as done") {
    std::ostringstream out;
    try {
      mt::Progress p(
          mt::ProgressOptions(100).mode(mt::ProgressMode::Plain).every(100).clock([&] {
            return t;
          }),
          out);
      for (int64_t s = 1; s <= 60; ++s) {
        t = 0.1 * static_cast<double>(s);
        p.update(s, 1.0, 0.1, 4);
      }
      throw std::runtime_error("diverged");
    } catch (const std::runtime_error&) {
    }
    const std::string text = out.str();
    INFO(text);
    REQUIRE(
        text.find("[train] stopped at step 60 of 100 after 0:00:06 (an exception ended the run)") !=
        std::string::npos);
    REQUIRE(text.find("done") == std::string::npos);
  }
  SECTION("the smoothed loss is a bias-corrected moving average of every step's loss") {
    std::ostringstream out;
    mt::Progress p(
        mt::ProgressOptions(3).mode(mt::ProgressMode::Plain).every(3).smoothing(0.5).clock([&] {
          return t;
        }),
        out);
    p.update(1, 4.0, 0.1, 1);
    p.update(2, 2.0, 0.1, 1);
    p.update(3, 1.0, 0.1, 1); // (0.25·4 + 0.5·2 + 1)·0.5 / (1 − 0.125) = 1.5/0.875
    char expected[64];
    std::snprintf(expected, sizeof(expected), "loss 1.0000 (smoothed %.4f)", 1.5 / 0.875);
    REQUIRE(out.str().find(expected) != std::string::npos);
  }
  SECTION("bad options") {
    std::ostringstream out;
    REQUIRE_THROWS_WITH(
        mt::Progress(mt::ProgressOptions(10).every(0), out), Contains("every must be >= 1, got 0"));
    REQUIRE_THROWS_WITH(
        mt::Progress(mt::ProgressOptions(-1), out), Contains("total_steps must be >= 0, got -1"));
    REQUIRE_THROWS_WITH(
        mt::Progress(mt::ProgressOptions(10).start_step(11), out),
        Contains("start_step must be in [0, total_steps = 10], got 11"));
    REQUIRE_THROWS_WITH(
        mt::Progress(mt::ProgressOptions(10).smoothing(1), out),
        Contains("smoothing must be in [0, 1), got 1"));
  }
}

TEST_CASE("JSON-lines log appends records that parse back", "[train][log]") {
  TempDir dir;
  const std::string path = dir.file("log.jsonl");
  {
    mt::JsonLinesLog log(path);
    log.step_record(1, 2.5, 0.1);
    medcl::Json e = medcl::Json::object();
    e["knn_top1"] = 0.83;
    e["split"] = "val";
    log.record("eval", 1, e);
    log.step_record(2, std::nan(""), 0.1, medcl::Json::object());
    REQUIRE(log.lines() == 3);
    REQUIRE_THROWS_WITH(
        log.write(medcl::Json::array()), Contains("expected a JSON object, got array"));
    REQUIRE_THROWS_WITH(
        log.record(
            "eval",
            1,
            [] {
              medcl::Json j = medcl::Json::object();
              j["step"] = 3;
              return j;
            }()),
        Contains("field 'step' is reserved"));
  }
  {
    mt::JsonLinesLog log(path); // appends
    log.record("end", 2);
  }
  std::ifstream in(path);
  std::vector<medcl::Json> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(medcl::Json::parse(line));
  }
  REQUIRE(lines.size() == 4);
  REQUIRE(lines[0].at("type").as_string() == "step");
  REQUIRE(lines[0].at("step").as_int64() == 1);
  REQUIRE(lines[0].at("loss").as_double() == 2.5);
  REQUIRE(lines[0].at("lr").as_double() == 0.1);
  REQUIRE(lines[1].at("type").as_string() == "eval");
  REQUIRE(lines[1].at("knn_top1").as_double() == 0.83);
  REQUIRE(lines[1].at("split").as_string() == "val");
  REQUIRE(lines[2].at("loss").is_null());
  REQUIRE(lines[2].at("loss_nonfinite").as_string() == "nan");
  REQUIRE(lines[3].at("type").as_string() == "end");

  const std::string missing = (dir.path / "no" / "log.jsonl").string();
  REQUIRE_THROWS_WITH(mt::JsonLinesLog(missing), Contains("cannot open '" + missing + "'"));
}

TEST_CASE("JSON-lines log read back drops what a resume superseded", "[train][log]") {
  TempDir dir;
  const std::string path = dir.file("log.jsonl");
  {
    mt::JsonLinesLog log(path);
    for (int64_t s = 0; s < 6; ++s) { // the first run: checkpoint after step 3, crash after 5
      log.step_record(s, 10.0 + static_cast<double>(s), 0.1);
      if (s == 3) {
        log.record("checkpoint", 4);
      }
    }
    log.record("resume", 4); // the second run restarts at step 4
    log.step_record(4, 24.0, 0.1);
    log.step_record(5, 25.0, 0.1);
  }
  {
    std::ofstream(path, std::ios::app) << "{\"type\":\"step\",\"st"; // a crash mid-line
  }
  const auto all = mt::JsonLinesLog::read(path, true);
  REQUIRE(all.size() == 10);
  const auto kept = mt::JsonLinesLog::read(path);
  std::vector<std::string> seen;
  for (const auto& r : kept) {
    seen.push_back(r.at("type").as_string() + std::to_string(r.at("step").as_int64()));
  }
  // The first run's checkpoint record is at step 4 too: the resume supersedes it as well.
  REQUIRE(
      seen ==
      std::vector<std::string>{"step0", "step1", "step2", "step3", "resume4", "step4", "step5"});
  REQUIRE(kept[5].at("loss").as_double() == 24.0);

  std::ofstream(path, std::ios::app) << "\nnot json\n{}\n";
  REQUIRE_THROWS_WITH(
      mt::JsonLinesLog::read(path), Contains("line 11 of '" + path + "' is not JSON"));
  REQUIRE_THROWS_WITH(
      mt::JsonLinesLog::read(dir.file("none.jsonl")),
      Contains("cannot open '" + dir.file("none.jsonl")));
}
