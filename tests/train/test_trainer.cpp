#include "methods/planted.h"

#include <medcl/augment/compose.h>
#include <medcl/augment/policy.h>
#include <medcl/augment/tabular.h>
#include <medcl/methods/dino.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/simclr.h>
#include <medcl/methods/swav.h>
#include <medcl/train/trainer.h>

#include <torch/torch.h>
#include "catch.h"
#include "support.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

using medcl_test::Planted;
using medcl_test::TempDir;
namespace fs = std::filesystem;

namespace {

// Batches that depend only on the step and on `gen` (tracked by the trainer).
struct Batches {
  const Planted& data;
  at::Generator gen;
  int64_t batch = 64;
  int64_t local = 0;
  Batches(const Planted& d, uint64_t seed)
      : data(d), gen(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  medcl::MethodBatch operator()(int64_t) {
    auto idx = at::randperm(data.signal.size(0), gen, at::kLong).slice(0, 0, batch);
    auto s = data.signal.index_select(0, idx);
    medcl::MethodBatch b;
    b.views = {Planted::view(s, gen), Planted::view(s, gen)};
    for (int64_t i = 0; i < local; ++i) {
      b.local_views.push_back(Planted::view(s, gen));
    }
    b.keys.patient = data.patient.index_select(0, idx);
    return b;
  }
};

template <class Make>
std::vector<double> run_losses(
    Make make_method,
    int64_t total,
    int64_t stop_at,
    const std::string& ckpt,
    bool resume,
    int64_t local) {
  Planted data(512, 21);
  torch::manual_seed(resume ? 999 : 5); // a resumed run must not depend on its own initialisation
  auto method = make_method();
  Batches batches(data, resume ? 12345 : 77);
  batches.local = local;
  medcl::train::Trainer trainer(
      *method,
      medcl::train::TrainerOptions(total)
          .optimizer(medcl::train::OptimizerOptions().kind("adamw").lr(3e-3).weight_decay(0.05))
          .warmup_steps(3)
          .final_weight_decay(0.2)
          .clip_grad_norm(5.0)
          .steps_per_epoch(4)
          .progress(false));
  trainer.track("batches", batches.gen);
  if (resume) {
    trainer.resume(ckpt);
  }
  std::vector<double> out;
  while (trainer.current_step() < (resume ? total : stop_at)) {
    out.push_back(trainer.step(batches(trainer.current_step())).loss);
  }
  if (!resume && stop_at < total) {
    trainer.save(ckpt);
  }
  return out;
}

template <class Make>
void check_exact_resume(Make make_method, int64_t local = 0) {
  TempDir dir;
  const auto ckpt = dir.file("run.ckpt");
  auto whole = run_losses(make_method, 12, 12, ckpt, false, local);
  auto first = run_losses(make_method, 12, 5, ckpt, false, local);
  auto rest = run_losses(make_method, 12, 5, ckpt, true, local);
  REQUIRE(first.size() == 5);
  REQUIRE(rest.size() == 7);
  for (size_t i = 0; i < first.size(); ++i) {
    CHECK(first[i] == whole[i]);
  }
  for (size_t i = 0; i < rest.size(); ++i) {
    INFO("step " << i + 5);
    CHECK(rest[i] == whole[i + 5]); // bit for bit
  }
}

} // namespace

TEST_CASE(
    "Trainer trains SimCLR with scheduled lr and weight decay and logs every step",
    "[train]") {
  TempDir dir;
  torch::manual_seed(3);
  Planted data(1024, 3);
  medcl::SimCLR<torch::nn::Sequential> method(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(64).projection_dim(16));
  auto opts =
      medcl::train::TrainerOptions(120)
          .optimizer(medcl::train::OptimizerOptions().kind("lars").lr(0.5).weight_decay(1e-6))
          .warmup_steps(10)
          .final_lr(0.01)
          .log_path(dir.file("train.jsonl"))
          .progress(false)
          .checkpoint_path(dir.file("last.ckpt"))
          .checkpoint_every(50)
          .seed(4);
  medcl::train::Trainer trainer(method, opts);
  Batches batches(data, 8);
  batches.batch = 128;
  trainer.track("batches", batches.gen);
  const double before = medcl_test::probe_accuracy(method, data, data.rendering(1));
  trainer.fit([&](int64_t step) { return batches(step); });
  CHECK(trainer.current_step() == 120);
  const auto& l = trainer.losses();
  REQUIRE(l.size() == 120);
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) {
    first += l[i] / 10;
    last += l[l.size() - 1 - i] / 10;
  }
  CHECK(last < first);
  CHECK(medcl_test::probe_accuracy(method, data, data.rendering(1)) > before + 0.1);
  CHECK(trainer.lr_schedule().value(0) == 0.0);
  CHECK(trainer.lr_schedule().value(10) == Approx(0.5));
  CHECK(trainer.lr_schedule().value(119) == Approx(0.01));
  CHECK(
      medcl::train::learning_rate(trainer.optimizer()) == Approx(trainer.lr_schedule().value(119)));
  CHECK(fs::exists(dir.file("last.ckpt")));

  std::ifstream in(dir.file("train.jsonl"));
  std::string line;
  int64_t steps = 0, checkpoints = 0;
  while (std::getline(in, line)) {
    auto j = medcl::Json::parse(line);
    if (j.at("type").as_string() == "step") {
      CHECK(j.at("step").as_int64() == steps);
      CHECK(j.at("loss").as_double() == Approx(l[static_cast<size_t>(steps)]));
      CHECK(j.contains("lr"));
      CHECK(j.contains("weight_decay"));
      ++steps;
    } else if (j.at("type").as_string() == "checkpoint") {
      ++checkpoints;
    }
  }
  CHECK(steps == 120);
  CHECK(checkpoints == 3); // steps 50, 100 and the end

  auto d = trainer.describe();
  CHECK(d.at("optimizer").at("kind").as_string() == "lars");
  CHECK(d.at("lr_schedule").at("warmup_steps").as_int64() == 10);
  CHECK(d.at("seed").as_int64() == 4);
  CHECK(d.at("tracked_generators")[0].as_string() == "batches");
  CHECK_THROWS_WITH(trainer.step(batches(0)), medcl_test::Contains("all are done"));
}

TEST_CASE("A resumed run reproduces the uninterrupted run's losses exactly", "[train]") {
  SECTION("MoCo v2: EMA, queue with sample keys, pairing") {
    check_exact_resume([] {
      return std::make_unique<medcl::MoCo<torch::nn::Sequential>>(
          medcl_test::small_encoder(),
          medcl::MoCoOptions::v2(16)
              .hidden_dim(32)
              .projection_dim(8)
              .queue_size(100)
              .momentum_start(0.9)
              .momentum_end(1.0)
              .loss(medcl::InfoNCELossOptions().temperature(0.2).pairing(
                  medcl::PairingStrategy::none().exclude_same_patient())));
    });
  }
  SECTION("DINO: teacher, centre, temperature warm-up, multi-crop") {
    check_exact_resume(
        [] {
          return std::make_unique<medcl::DINO<torch::nn::Sequential>>(
              medcl_test::small_encoder(),
              medcl::DINOOptions(16)
                  .output_dim(32)
                  .hidden_dim(32)
                  .bottleneck_dim(8)
                  .warmup_teacher_temperature_epochs(2)
                  .freeze_last_layer_steps(2));
        },
        2);
  }
  SECTION("SwAV: prototypes and queue") {
    check_exact_resume([] {
      return std::make_unique<medcl::SwAV<torch::nn::Sequential>>(
          medcl_test::small_encoder(),
          medcl::SwAVOptions(16)
              .hidden_dim(32)
              .projection_dim(8)
              .num_prototypes(16)
              .queue_size(128)
              .queue_start_step(3));
    });
  }
}

TEST_CASE("Trainer refuses another method's checkpoint and corrupt files", "[train]") {
  TempDir dir;
  torch::manual_seed(1);
  Planted data(128, 1);
  medcl::SimCLR<torch::nn::Sequential> simclr(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  medcl::train::Trainer a(simclr, medcl::train::TrainerOptions(5).progress(false));
  Batches batches(data, 1);
  a.step(batches(0));
  a.save(dir.file("simclr.ckpt"));

  medcl::MoCo<torch::nn::Sequential> moco(
      medcl_test::small_encoder(),
      medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(16));
  medcl::train::Trainer b(moco, medcl::train::TrainerOptions(5).progress(false));
  CHECK_THROWS_WITH(
      b.resume(dir.file("simclr.ckpt")),
      medcl_test::Contains("medcl.SimCLR") && medcl_test::Contains("medcl.MoCo v2"));
  CHECK(b.current_step() == 0);

  {
    std::ifstream in(dir.file("simclr.ckpt"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream out(dir.file("truncated.ckpt"), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  medcl::train::Trainer c(simclr, medcl::train::TrainerOptions(5).progress(false));
  CHECK_THROWS_WITH(c.resume(dir.file("truncated.ckpt")), medcl_test::Contains("truncated.ckpt"));
  CHECK_THROWS_WITH(c.resume(dir.file("missing.ckpt")), medcl_test::Contains("missing.ckpt"));
  medcl::train::Trainer longer(simclr, medcl::train::TrainerOptions(5).progress(false));
  longer.resume(dir.file("simclr.ckpt"));
  CHECK(longer.current_step() == 1);
  CHECK(longer.losses().size() == 1);
}

TEST_CASE("Trainer clips the gradient norm and runs under bfloat16 autocast", "[train]") {
  torch::manual_seed(2);
  Planted data(256, 2);
  Batches batches(data, 3);
  SECTION("clipping bounds the SGD update by lr * clip") {
    medcl::SimCLR<torch::nn::Sequential> m(
        medcl_test::small_encoder(),
        medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8).projection_layers(1));
    medcl::train::Trainer t(
        m,
        medcl::train::TrainerOptions(3)
            .optimizer(
                medcl::train::OptimizerOptions().kind("sgd").lr(0.1).momentum(0.0).weight_decay(
                    0.0))
            .final_lr(0.1)
            .clip_grad_norm(1e-3)
            .progress(false));
    std::vector<at::Tensor> before;
    for (auto& p : m.trainable_parameters()) {
      before.push_back(p.detach().clone());
    }
    auto r = t.step(batches(0));
    CHECK(r.grad_norm > 1e-3);
    double moved = 0;
    auto after = m.trainable_parameters();
    for (size_t i = 0; i < after.size(); ++i) {
      moved += (after[i] - before[i]).pow(2).sum().item<double>();
    }
    CHECK(std::sqrt(moved) == Approx(0.1 * 1e-3).epsilon(1e-3));
  }
  SECTION("bfloat16 autocast gives a finite loss close to float32's and restores the state") {
    auto make = [] {
      torch::manual_seed(9);
      return std::make_unique<medcl::SimCLR<torch::nn::Sequential>>(
          medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
    };
    auto batch = batches(0);
    auto m32 = make();
    auto m16 = make();
    medcl::train::Trainer t32(*m32, medcl::train::TrainerOptions(2).progress(false));
    medcl::train::Trainer t16(
        *m16,
        medcl::train::TrainerOptions(2)
            .precision(medcl::train::Precision::BFloat16)
            .progress(false));
    const double l32 = t32.step(batch).loss;
    const double l16 = t16.step(batch).loss;
    CHECK(std::isfinite(l16));
    CHECK(l16 == Approx(l32).epsilon(0.05));
    CHECK(l16 != l32); // the forward really ran in bfloat16
    CHECK_FALSE(medcl::train::detail::autocast_state(at::kCPU).first);
    for (auto& p : m16->parameters()) {
      CHECK(p.scalar_type() == at::kFloat);
    }
  }
}

TEST_CASE("AutocastGuard turns bfloat16 autocast on and restores what was there", "[train]") {
  using medcl::train::detail::autocast_state;
  using medcl::train::detail::AutocastGuard;
  using medcl::train::detail::set_autocast_state;
  const auto before = autocast_state(at::kCPU);
  REQUIRE_FALSE(before.first);
  {
    AutocastGuard guard(at::kCPU, true);
    CHECK(autocast_state(at::kCPU) == std::make_pair(true, at::kBFloat16));
    // Under autocast a CPU matrix product runs in bfloat16.
    CHECK(at::ones({2, 2}).mm(at::ones({2, 2})).scalar_type() == at::kBFloat16);
  }
  CHECK(autocast_state(at::kCPU) == before);
  CHECK(at::ones({2, 2}).mm(at::ones({2, 2})).scalar_type() == at::kFloat);
  {
    AutocastGuard off(at::kCPU, false); // does nothing
    CHECK(autocast_state(at::kCPU) == before);
  }
  // Autocast that the caller had turned on stays on (LibTorch 1.13's CPU autocast knows only
  // bfloat16, so the dtype cannot differ here).
  set_autocast_state(at::kCPU, true, at::kBFloat16);
  {
    AutocastGuard guard(at::kCPU, true);
    CHECK(autocast_state(at::kCPU) == std::make_pair(true, at::kBFloat16));
  }
  CHECK(autocast_state(at::kCPU).first);
  set_autocast_state(at::kCPU, before.first, before.second);
  CHECK(autocast_state(at::kCPU) == before);
  REQUIRE_THROWS_WITH(
      AutocastGuard(at::kMeta, true),
      medcl_test::Contains(
          "Trainer: bfloat16 autocast is available on CPU and CUDA, got device type"));
}

TEST_CASE("Trainer refuses bad options and non-finite losses", "[train]") {
  torch::manual_seed(4);
  medcl::SimCLR<torch::nn::Sequential> m(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  CHECK_THROWS_WITH(
      medcl::train::Trainer(m, medcl::train::TrainerOptions(0)),
      medcl_test::Contains("total_steps must be >= 1"));
  CHECK_THROWS_WITH(
      medcl::train::Trainer(m, medcl::train::TrainerOptions(5).clip_grad_norm(-1)),
      medcl_test::Contains("clip_grad_norm"));
  CHECK_THROWS_WITH(
      medcl::train::Trainer(m, medcl::train::TrainerOptions(5).warmup_steps(6)),
      medcl_test::Contains("warmup_steps"));
  CHECK_THROWS_WITH(
      medcl::train::Trainer(
          m,
          medcl::train::TrainerOptions(5).optimizer(medcl::train::OptimizerOptions().kind("adam"))),
      medcl_test::Contains("kind"));
  medcl::train::Trainer t(m, medcl::train::TrainerOptions(5).progress(false));
  t.track("g", at::make_generator<at::CPUGeneratorImpl>(1));
  CHECK_THROWS_WITH(
      t.track("g", at::make_generator<at::CPUGeneratorImpl>(2)),
      medcl_test::Contains("is tracked"));
  medcl::MethodBatch bad;
  bad.views = {
      at::full({4, Planted::kDim}, std::nan("")), at::full({4, Planted::kDim}, std::nan(""))};
  CHECK_THROWS_WITH(t.step(bad), medcl_test::Contains("NaN") || medcl_test::Contains("non-finite"));
}

namespace {

// Losses of a SimCLR run whose only randomness after initialisation is an augmentation policy:
// each step's rows are fixed by the step, the views come from the policy's generator.
std::vector<double>
augmented_run(int64_t total, int64_t stop_at, const std::string& ckpt, bool resume, bool track) {
  namespace A = medcl::augment;
  Planted data(256, 4);
  const auto rows = data.rendering(2);
  torch::manual_seed(resume ? 999 : 5);
  medcl::SimCLR<torch::nn::Sequential> method(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  A::Policy policy(
      A::Modality::Tabular,
      std::make_shared<A::Sequence>(std::vector<A::TransformPtr>{
          std::make_shared<A::FeatureMask>(0.2),
          std::make_shared<A::FeatureNoise>(at::ones({Planted::kDim}), 0.3)}),
      resume ? 31337 : 11); // the resumed run's own seed must not matter
  medcl::train::Trainer trainer(method, medcl::train::TrainerOptions(total).progress(false));
  if (track) {
    trainer.track("augment", policy.generator()); // as documented: a handle to the policy's
  }
  if (resume) {
    trainer.resume(ckpt);
  }
  std::vector<double> out;
  while (trainer.current_step() < (resume ? total : stop_at)) {
    const int64_t s = trainer.current_step();
    auto x = rows.slice(0, (s * 32) % 224, (s * 32) % 224 + 32);
    auto v = policy.views(A::Batch(x), 2);
    medcl::MethodBatch b;
    b.views = {v[0].values, v[1].values};
    out.push_back(trainer.step(b).loss);
  }
  if (!resume && stop_at < total) {
    trainer.save(ckpt);
  }
  return out;
}

} // namespace

TEST_CASE("A resumed run that augments reproduces the uninterrupted run bit for bit", "[train]") {
  TempDir dir;
  const auto ckpt = dir.file("aug.ckpt");
  const auto whole = augmented_run(10, 10, ckpt, false, true);
  const auto first = augmented_run(10, 4, ckpt, false, true);
  const auto rest = augmented_run(10, 4, ckpt, true, true);
  REQUIRE(first.size() == 4);
  REQUIRE(rest.size() == 6);
  for (size_t i = 0; i < first.size(); ++i) {
    CHECK(first[i] == whole[i]);
  }
  for (size_t i = 0; i < rest.size(); ++i) {
    INFO("step " << i + 4);
    CHECK(rest[i] == whole[i + 4]);
  }
  // Untracked, the resumed run's views come from its own seed: the losses differ.
  augmented_run(10, 4, ckpt, false, false);
  const auto untracked = augmented_run(10, 4, ckpt, true, false);
  CHECK(untracked[0] != whole[4]);
}

TEST_CASE("A resume that does not fit leaves the trainer as it was", "[train]") {
  TempDir dir;
  Planted data(128, 2);
  auto moco_with_queue = [](int64_t queue) {
    return medcl::MoCo<torch::nn::Sequential>(
        medcl_test::small_encoder(),
        medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(queue));
  };
  torch::manual_seed(1);
  auto a = moco_with_queue(64);
  medcl::train::Trainer ta(a, medcl::train::TrainerOptions(6).progress(false));
  Batches batches(data, 3);
  for (int i = 0; i < 3; ++i) {
    ta.step(batches(i));
  }
  ta.save(dir.file("q64.ckpt"));

  torch::manual_seed(2);
  auto b = moco_with_queue(128);
  medcl::train::Trainer tb(
      b, medcl::train::TrainerOptions(6).progress(false).log_path(dir.file("b.jsonl")));
  Batches b_batches(data, 4);
  tb.track("batches", b_batches.gen);
  tb.step(b_batches(0));
  std::vector<at::Tensor> params;
  for (const auto& p : b.parameters()) {
    params.push_back(p.detach().clone());
  }
  const auto queue = b.queue()->keys().clone();
  const auto cpu_state = at::detail::getDefaultCPUGenerator().get_state();
  const auto batch_state = b_batches.gen.get_state();
  const auto lr = medcl::train::learning_rate(tb.optimizer());

  CHECK_THROWS_WITH(
      tb.resume(dir.file("q64.ckpt")),
      medcl_test::Contains(dir.file("q64.ckpt")) &&
          medcl_test::Contains("queue_size: 64 in the checkpoint, 128 here") &&
          medcl_test::Contains("the trainer is left as it was"));
  CHECK(tb.current_step() == 1);
  CHECK(tb.losses().size() == 1);
  size_t i = 0;
  for (const auto& p : b.parameters()) {
    CHECK(at::equal(p, params[i++]));
  }
  CHECK(at::equal(b.queue()->keys(), queue));
  CHECK(at::equal(at::detail::getDefaultCPUGenerator().get_state(), cpu_state));
  CHECK(at::equal(b_batches.gen.get_state(), batch_state));
  CHECK(medcl::train::learning_rate(tb.optimizer()) == lr);
  tb.step(b_batches(1)); // and it trains on
  CHECK(tb.current_step() == 2);

  // Other trainer options are allowed (the run then differs from an uninterrupted one).
  torch::manual_seed(3);
  auto c = moco_with_queue(64);
  medcl::train::Trainer tc(c, medcl::train::TrainerOptions(12).progress(false));
  tc.resume(dir.file("q64.ckpt"));
  CHECK(tc.current_step() == 3);
}

TEST_CASE("A resumed run's log marks the resume so that each step reads once", "[train]") {
  TempDir dir;
  Planted data(128, 5);
  const auto log = dir.file("run.jsonl");
  const auto ckpt = dir.file("run.ckpt");
  auto opts = [&] {
    return medcl::train::TrainerOptions(6).progress(false).log_path(log).checkpoint_path(ckpt);
  };
  {
    torch::manual_seed(1);
    medcl::SimCLR<torch::nn::Sequential> m(
        medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
    medcl::train::Trainer t(m, opts());
    Batches batches(data, 1);
    for (int i = 0; i < 3; ++i) {
      t.step(batches(i));
    }
    t.save(ckpt);
    t.step(batches(3)); // then a crash: step 3 is logged but not in the checkpoint
  }
  torch::manual_seed(1);
  medcl::SimCLR<torch::nn::Sequential> m(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  medcl::train::Trainer t(m, opts());
  Batches batches(data, 1);
  t.resume(ckpt);
  t.fit([&](int64_t s) { return batches(s); });
  std::vector<int64_t> steps;
  int resumes = 0;
  for (const auto& r : medcl::train::JsonLinesLog::read(log)) {
    if (r.at("type").as_string() == "step") {
      steps.push_back(r.at("step").as_int64());
    }
    resumes += r.at("type").as_string() == "resume" ? 1 : 0;
  }
  CHECK(steps == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  CHECK(resumes == 1);
  int64_t raw_steps = 0;
  for (const auto& r : medcl::train::JsonLinesLog::read(log, true)) {
    raw_steps += r.at("type").as_string() == "step" ? 1 : 0;
  }
  CHECK(raw_steps == 7);
}

TEST_CASE("Trainer finds an unwritable checkpoint path before the run", "[train]") {
  TempDir dir;
  medcl::SimCLR<torch::nn::Sequential> m(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  const auto missing = dir.file("run") + "/last.ckpt";
  CHECK_THROWS_WITH(
      medcl::train::Trainer(m, medcl::train::TrainerOptions(5).checkpoint_path(missing)),
      medcl_test::Contains(
          "checkpoint_path '" + missing + "': the directory '" + dir.file("run") +
          "' does not exist"));
  CHECK_THROWS_WITH(
      medcl::train::Trainer(m, medcl::train::TrainerOptions(5).checkpoint_path(dir.path.string())),
      medcl_test::Contains("is a directory"));
  CHECK_THROWS_WITH(
      medcl::train::Trainer(m, medcl::train::TrainerOptions(5).checkpoint_every(100)),
      medcl_test::Contains("checkpoint_every is 100 but no checkpoint_path is set"));
  medcl::train::Trainer ok(m, medcl::train::TrainerOptions(5).checkpoint_path(dir.file("x.ckpt")));
  CHECK(ok.current_step() == 0);
}
