#include "methods/planted.h"

#include <medcl/augment/tabular.h>
#include <medcl/memory/memory_queue.h>
#include <medcl/methods/byol.h>
#include <medcl/methods/clip.h>
#include <medcl/methods/dino.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/simclr.h>
#include <medcl/methods/simsiam.h>
#include <medcl/methods/supcon.h>
#include <medcl/methods/swav.h>
#include <medcl/pairing/strategy.h>
#include <medcl/train/record.h>
#include <medcl/train/trainer.h>

#include <torch/torch.h>
#include "catch.h"
#include "support.h"

#include <fstream>
#include <functional>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

using medcl_test::Planted;

namespace {

constexpr int64_t kN = 1024;
constexpr int64_t kBatch = 128;

struct Run {
  double first = 0, last = 0, before = 0, after = 0;
};

// Trains `method` with Adam on batches made by `make` and returns the mean loss of the first and
// last 10 steps and the kNN accuracy of its embedding before and after.
Run train(
    medcl::MethodBase& method,
    const Planted& data,
    int64_t steps,
    const std::function<medcl::MethodBatch(const at::Tensor& idx, at::Generator&)>& make,
    double lr = 2e-3) {
  auto eval_x = data.rendering(99);
  Run r;
  r.before = medcl_test::probe_accuracy(method, data, eval_x);
  torch::optim::Adam opt(method.trainable_parameters(), torch::optim::AdamOptions(lr));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  std::vector<double> losses;
  method.train();
  for (int64_t s = 0; s < steps; ++s) {
    auto idx = at::randperm(kN, gen, at::kLong).slice(0, 0, kBatch);
    auto batch = make(idx, gen);
    medcl::StepContext ctx{s, steps, s * kBatch / kN};
    auto loss = method.training_loss(batch, ctx);
    REQUIRE(std::isfinite(loss.item<double>()));
    opt.zero_grad();
    loss.backward();
    method.before_optimizer_step(ctx);
    opt.step();
    method.after_optimizer_step(ctx);
    losses.push_back(loss.item<double>());
  }
  r.first = std::accumulate(losses.begin(), losses.begin() + 10, 0.0) / 10;
  r.last = std::accumulate(losses.end() - 10, losses.end(), 0.0) / 10;
  r.after = medcl_test::probe_accuracy(method, data, eval_x);
  return r;
}

std::function<medcl::MethodBatch(const at::Tensor&, at::Generator&)>
two_views(const Planted& data, bool labels = false, int64_t local = 0) {
  return [&data, labels, local](const at::Tensor& idx, at::Generator& gen) {
    medcl::MethodBatch b;
    auto s = data.signal.index_select(0, idx);
    b.views = {Planted::view(s, gen), Planted::view(s, gen)};
    for (int64_t i = 0; i < local; ++i) {
      b.local_views.push_back(Planted::view(s, gen));
    }
    if (labels) {
      b.keys.label = data.labels.index_select(0, idx);
    }
    return b;
  };
}

void check_learns(const Run& r, const char* what) {
  INFO(
      what << ": loss " << r.first << " -> " << r.last << ", kNN accuracy " << r.before << " -> "
           << r.after);
  CHECK(r.last < r.first);
  CHECK(r.after > r.before + 0.1);
  CHECK(r.after > 0.85);
}

} // namespace

TEST_CASE("SimCLR lowers its loss and beats the random encoder's probe", "[methods]") {
  torch::manual_seed(1);
  Planted data(kN, 1);
  medcl::SimCLR<torch::nn::Sequential> m(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(64).projection_dim(16));
  check_learns(train(m, data, 200, two_views(data)), "SimCLR");
  auto d = m.describe();
  CHECK(d.at("method").as_string() == "SimCLR");
  CHECK(d.at("loss").at("temperature").as_double() == Approx(0.1));
  CHECK(d.at("projection_head").at("hidden_dim").as_int64() == 64);
}

TEST_CASE("SimCLR with a patient pairing strategy trains from keys", "[methods]") {
  torch::manual_seed(2);
  Planted data(kN, 2);
  medcl::SimCLR<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::SimCLROptions(16).hidden_dim(64).projection_dim(16).loss(
          medcl::NTXentLossOptions().temperature(0.1).pairing(
              medcl::PairingStrategy::instance().exclude_same_patient())));
  auto make = [&data](const at::Tensor& idx, at::Generator& gen) {
    auto b = two_views(data)(idx, gen);
    b.keys.patient = data.patient.index_select(0, idx);
    return b;
  };
  check_learns(train(m, data, 200, make), "SimCLR + exclude same patient");
  // The strategy needs patient keys: a batch without them is refused by the loss.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto b = two_views(data)(at::arange(8), gen);
  CHECK_THROWS_WITH(m.training_loss(b, {}), medcl_test::Contains("patient"));
  CHECK(m.describe().at("loss").at("pairing").as_string().find("patient") != std::string::npos);
}

TEST_CASE("MoCo v2 lowers its loss, fills its queue and beats the random encoder", "[methods]") {
  torch::manual_seed(3);
  Planted data(kN, 3);
  medcl::MoCo<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::MoCoOptions::v2(16)
          .hidden_dim(64)
          .projection_dim(16)
          .queue_size(512)
          .momentum_start(0.99)
          .momentum_end(0.99));
  auto r = train(m, data, 200, two_views(data));
  check_learns(r, "MoCo v2");
  REQUIRE(m.queue() != nullptr);
  CHECK(m.queue()->filled() == 512);
  CHECK(m.momentum() == Approx(0.99));
  CHECK(m.name() == "MoCo v2");
}

TEST_CASE(
    "A loss without a pairing strategy describes its pairing as null and the record falls back",
    "[methods][report]") {
  torch::manual_seed(12);
  Planted data(256, 12);
  medcl::SimCLR<torch::nn::Sequential> m(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  const auto d = m.describe();
  CHECK(d.at("loss").at("pairing").is_null());
  CHECK(medcl::Json::parse(d.dump()) == d);
  medcl::MoCo<torch::nn::Sequential> moco(
      medcl_test::small_encoder(),
      medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(64));
  CHECK(moco.describe().at("loss").at("pairing").is_null());

  medcl::train::Trainer trainer(m, medcl::train::TrainerOptions(2).progress(false));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto make = two_views(data);
  trainer.fit([&](int64_t) { return make(at::arange(32), gen); });
  medcl::augment::Policy policy(
      medcl::augment::Modality::Tabular, std::make_shared<medcl::augment::FeatureMask>(0.25), 3);
  medcl::Report given, fallback;
  medcl::train::record_pretraining(
      given, m, trainer, {policy.describe(), "MLP", "two views of one sample"});
  CHECK(given.get("pretraining", "pairing").as_string() == "two views of one sample");
  medcl::train::record_pretraining(fallback, m, trainer, {policy.describe(), "MLP", ""});
  CHECK(
      fallback.get("pretraining", "pairing").as_string().find("instance discrimination") !=
      std::string::npos);
  // The policy's description is stored as it is, its parameters typed.
  const auto& aug = fallback.get("pretraining", "augmentation");
  CHECK(aug == policy.describe());
  CHECK(aug.at("transform").at("params").at("p").as_double() == 0.25);
}

TEST_CASE("MoCo v3 lowers its loss and beats the random encoder", "[methods]") {
  torch::manual_seed(4);
  Planted data(kN, 4);
  medcl::MoCo<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::MoCoOptions::v3(16).hidden_dim(64).projection_dim(16).momentum_start(0.9));
  check_learns(train(m, data, 200, two_views(data)), "MoCo v3");
  CHECK(m.queue() == nullptr);
  CHECK(m.describe().at("prediction_head").at("last_batch_norm").as_bool());
}

TEST_CASE("BYOL lowers its loss and beats the random encoder", "[methods]") {
  torch::manual_seed(5);
  Planted data(kN, 5);
  medcl::BYOL<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::BYOLOptions(16).hidden_dim(64).projection_dim(16).momentum_start(0.9));
  check_learns(train(m, data, 200, two_views(data)), "BYOL");
}

TEST_CASE("SimSiam lowers its loss and beats the random encoder", "[methods]") {
  // Seed 6 starts on SimSiam's early plateau, where the step at which training leaves it depends
  // on rounding: LibTorch 1.13 had left it by step 200 (loss -0.55), 2.6 had not (-0.20). Seeds
  // 1-5, 7 and 8 reach -0.86 to -0.91 and kNN accuracy >= 0.99 by step 200 on both.
  torch::manual_seed(1);
  Planted data(kN, 1);
  medcl::SimSiam<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::SimSiamOptions(16).projection_dim(32).prediction_hidden_dim(8));
  check_learns(train(m, data, 200, two_views(data)), "SimSiam");
}

TEST_CASE(
    "DINO with local views learns to predict its teacher and beats the random encoder",
    "[methods]") {
  // DINO's loss is measured against a moving target (the teacher starts as a copy of the student,
  // so the first losses are low): "lowers its loss" is checked against the final teacher and
  // centre, for the trained student and for the student as initialised (rebuilt from the same
  // seed). On this small problem DINO collapses to the uniform output (loss ln K) unless the
  // teacher is sharp: hence teacher temperatures of 0.01.
  auto options = medcl::DINOOptions(16)
                     .output_dim(256)
                     .hidden_dim(64)
                     .bottleneck_dim(16)
                     .momentum_start(0.99)
                     .warmup_teacher_temperature(0.005)
                     .teacher_temperature(0.01)
                     .warmup_teacher_temperature_epochs(5)
                     .freeze_last_layer_steps(3);
  torch::manual_seed(7);
  medcl::DINO<torch::nn::Sequential> initial(medcl_test::small_encoder(), options);
  torch::manual_seed(7);
  medcl::DINO<torch::nn::Sequential> m(medcl_test::small_encoder(), options);
  Planted data(kN, 7);
  auto r = train(m, data, 300, two_views(data, false, 2), 5e-3);
  INFO("DINO: kNN accuracy " << r.before << " -> " << r.after);
  CHECK(r.after > r.before + 0.1);
  CHECK(r.after > 0.75);
  CHECK(m.loss()->teacher_temperature(0) == Approx(0.005));
  CHECK(m.loss()->teacher_temperature(5) == Approx(0.01));
  CHECK(m.step_statistics().at("teacher_temperature") == Approx(0.01));
  CHECK(m.loss()->center.abs().sum().item<double>() > 0);

  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto batch = two_views(data)(at::arange(256), gen);
  torch::NoGradGuard no_grad;
  m.eval();
  initial.eval();
  auto x = at::cat(batch.views, 0);
  auto teacher = m.embed(x); // teacher backbone
  (void)teacher;
  auto final_loss = [&](medcl::DINO<torch::nn::Sequential>& student) {
    auto s = student.head()->forward(student.encoder()->forward(x)).split(256, 0);
    auto t = m.teacher_head()->forward(m.teacher_encoder()->forward(x)).split(256, 0);
    return medcl::functional::dino_loss(
               s,
               t,
               m.loss()->center,
               medcl::DINOLossOptions().teacher_temperature(0.01).student_temperature(0.1))
        .item<double>();
  };
  const double trained = final_loss(m);
  const double untrained = final_loss(initial);
  INFO("loss against the final teacher: initial student " << untrained << ", trained " << trained);
  CHECK(trained < untrained - 0.1);
  CHECK(trained < std::log(256.0) - 0.1); // not the uniform collapse
}

TEST_CASE("SwAV with a queue lowers its loss and beats the random encoder", "[methods]") {
  torch::manual_seed(8);
  Planted data(kN, 8);
  medcl::SwAV<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::SwAVOptions(16)
          .hidden_dim(64)
          .projection_dim(16)
          .num_prototypes(32)
          .queue_size(256)
          .queue_start_step(20)
          .freeze_prototypes_steps(5));
  check_learns(train(m, data, 200, two_views(data, false, 2)), "SwAV");
  CHECK(m.step_statistics().at("queue_filled") == 256);
  auto norms = m.prototypes()->weight.norm(2, 1);
  m.prototypes()->weight.data().mul_(3.0);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  (void)m.training_loss(two_views(data)(at::arange(16), gen), {});
  // Every step starts by renormalising the prototypes.
  CHECK(at::allclose(m.prototypes()->weight.norm(2, 1), at::ones_like(norms), 1e-5, 1e-6));
}

TEST_CASE("SupCon uses labels and beats the random encoder", "[methods]") {
  torch::manual_seed(9);
  Planted data(kN, 9);
  medcl::SupCon<torch::nn::Sequential> m(
      medcl_test::small_encoder(), medcl::SupConOptions(16).hidden_dim(64).projection_dim(16));
  auto r = train(m, data, 150, two_views(data, true));
  check_learns(r, "SupCon");
  CHECK(r.after > 0.9);
}

TEST_CASE("CLIP aligns two modalities and its scale learns", "[methods]") {
  torch::manual_seed(10);
  Planted data(kN, 10);
  medcl::CLIP<torch::nn::Sequential, torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl_test::small_encoder(),
      medcl::CLIPOptions(16, 16).embed_dim(16));
  auto make = [&data](const at::Tensor& idx, at::Generator& gen) {
    medcl::MethodBatch b;
    auto s = data.signal.index_select(0, idx);
    b.views = {Planted::view(s, gen)};
    b.paired = Planted::view(s, gen).flip(1); // another "modality": same content, other layout
    return b;
  };
  const double scale0 = m.loss()->logit_scale().item<double>();
  check_learns(train(m, data, 200, make), "CLIP");
  CHECK(m.loss()->logit_scale().item<double>() != Approx(scale0));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto b = make(at::arange(8), gen);
  b.paired = at::Tensor();
  CHECK_THROWS_WITH(m.training_loss(b, {}), medcl_test::Contains("batch.paired"));
}

TEST_CASE("EMA updates follow the formula and the cosine momentum schedule", "[methods]") {
  torch::manual_seed(11);
  medcl::BYOL<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::BYOLOptions(16).hidden_dim(32).projection_dim(8).momentum_start(0.5).momentum_end(
          1.0));
  // Make online and target differ, then apply one update at step 3 of 7.
  {
    torch::NoGradGuard g;
    for (auto& p : m.encoder()->parameters()) {
      p.add_(1.0);
    }
  }
  std::vector<at::Tensor> online, target;
  for (auto& p : m.encoder()->parameters()) {
    online.push_back(p.detach().clone());
  }
  for (auto& p : m.target_encoder()->parameters()) {
    target.push_back(p.detach().clone());
  }
  m.after_optimizer_step({3, 7, 0});
  const double pi = std::acos(-1.0);
  const double expected_m = 1.0 - (1.0 - 0.5) * (std::cos(pi * 3.0 / 6.0) + 1.0) / 2.0;
  CHECK(m.momentum() == Approx(expected_m));
  auto after = m.target_encoder()->parameters();
  for (size_t i = 0; i < after.size(); ++i) {
    auto expected = expected_m * target[i] + (1.0 - expected_m) * online[i];
    CHECK(at::allclose(after[i], expected, 1e-6, 1e-6));
    CHECK_FALSE(after[i].requires_grad());
  }
  // The target never reaches the optimiser.
  for (auto& p : m.trainable_parameters()) {
    for (auto& t : m.target_encoder()->parameters()) {
      CHECK_FALSE(p.is_same(t));
    }
  }
}

TEST_CASE("MoCo v2 enqueues the key view after the step and keeps sample keys", "[methods]") {
  torch::manual_seed(12);
  Planted data(64, 12);
  medcl::MoCo<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(40).loss(
          medcl::InfoNCELossOptions().temperature(0.2).pairing(
              medcl::PairingStrategy::none().exclude_same_patient())));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  medcl::MethodBatch b;
  auto idx = at::arange(16);
  auto s = data.signal.index_select(0, idx);
  b.views = {Planted::view(s, gen), Planted::view(s, gen)};
  b.keys.patient = data.patient.index_select(0, idx);
  auto loss = m.training_loss(b, {0, 10, 0});
  CHECK(m.queue()->filled() == 0); // not before the step
  loss.backward();
  m.after_optimizer_step({0, 10, 0});
  REQUIRE(m.queue()->filled() == 16);
  CHECK(at::equal(m.queue()->pairing_key("patient"), b.keys.patient));
  // The enqueued keys are the momentum branch's projections of view 1 (taken before the EMA step).
  auto state = m.extra_state();
  REQUIRE(state.count("queue.buffer") == 1);
  medcl::MoCo<torch::nn::Sequential> other(
      medcl_test::small_encoder(),
      medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(40));
  other.load_extra_state(state);
  CHECK(other.queue()->filled() == 16);
  CHECK(at::equal(other.queue()->keys(), m.queue()->keys()));
  CHECK(at::equal(other.queue()->pairing_key("patient"), b.keys.patient));
  // The queue keeps them as SampleKeys, checkpointed under their names.
  CHECK(state.count("queue.key.patient") == 1);
  CHECK(other.queue()->sample_keys().names() == "patient");
  CHECK(at::equal(other.queue()->sample_keys().patient, b.keys.patient));
}

TEST_CASE(
    "MemoryQueue keeps SampleKeys by name, other names and its state round trip",
    "[memory]") {
  medcl::MemoryQueue q(4, 2, torch::kDouble);
  medcl::SampleKeys k;
  k.patient = torch::tensor({1, 2, 3}, torch::kLong);
  k.time = torch::tensor({0.5, 1.5, 2.5}, torch::kDouble);
  q.enqueue(torch::ones({3, 2}, torch::kDouble), k);
  REQUIRE(q.has_pairing_key("patient"));
  REQUIRE(q.has_pairing_key("time"));
  REQUIRE_FALSE(q.has_pairing_key("study"));
  REQUIRE(q.sample_keys().names() == "patient, time");
  REQUIRE(q.sample_keys().patient.equal(k.patient));
  REQUIRE(q.sample_keys().time.equal(k.time));
  // The same keys by name (time stays floating point).
  q.enqueue(
      torch::zeros({2, 2}, torch::kDouble),
      {{"patient", torch::tensor({4, 5}, torch::kLong)},
       {"time", torch::tensor({3.5, 4.5}, torch::kDouble)}});
  REQUIRE(q.pairing_key("patient").equal(torch::tensor({5, 2, 3, 4}, torch::kLong)));
  REQUIRE(q.pairing_key("time").equal(torch::tensor({4.5, 1.5, 2.5, 3.5}, torch::kDouble)));
  REQUIRE_THROWS_WITH(
      q.enqueue(torch::ones({1, 2}), {{"patient", torch::tensor({9}, torch::kLong)}}),
      medcl_test::Contains("keeps 2 pairing key(s) (patient, time), got 1"));
  REQUIRE_THROWS_WITH(
      q.enqueue(torch::ones({1, 2}), {{"patient", at::Tensor()}}),
      medcl_test::Contains("undefined"));
  // The state keeps its names, so earlier checkpoints load.
  const auto state = q.state();
  std::vector<std::string> names;
  for (const auto& kv : state) {
    names.push_back(kv.first);
  }
  REQUIRE(names == std::vector<std::string>{"buffer", "key.patient", "key.time", "position"});
  medcl::MemoryQueue r(4, 2, torch::kDouble);
  r.load_state(state);
  REQUIRE(r.filled() == 4);
  REQUIRE(r.keys().equal(q.keys()));
  REQUIRE(r.sample_keys().names() == "patient, time");
  REQUIRE(r.sample_keys().patient.equal(q.sample_keys().patient));
  REQUIRE(r.sample_keys().time.equal(q.sample_keys().time));
  r.enqueue(torch::ones({1, 2}, torch::kDouble), k.index_select(torch::tensor({2})));
  REQUIRE(r.pairing_key("patient").equal(torch::tensor({5, 3, 3, 4}, torch::kLong)));
  // A name that is no standard key is kept by name (not in sample_keys()), and checkpointed.
  medcl::MemoryQueue c(3, 2);
  c.enqueue(
      torch::ones({2, 2}),
      {{"patient", torch::tensor({7, 8}, torch::kLong)},
       {"ward", torch::tensor({1, 2}, torch::kLong)}});
  REQUIRE(c.pairing_key("ward").equal(torch::tensor({1, 2}, torch::kLong)));
  REQUIRE(c.sample_keys().names() == "patient");
  REQUIRE_THROWS_WITH(
      c.enqueue(
          torch::ones({1, 2}),
          {{"patient", torch::tensor({9}, torch::kLong)},
           {"wards", torch::tensor({1}, torch::kLong)}}),
      medcl_test::Contains("unknown pairing key 'wards'") &&
          medcl_test::Contains("keeps patient, ward"));
  REQUIRE_THROWS_WITH(
      c.enqueue(torch::ones({1, 2}), k.index_select(torch::tensor({0}))),
      medcl_test::Contains("unknown pairing key 'time'"));
  medcl::MemoryQueue c2(3, 2);
  c2.load_state(c.state());
  REQUIRE(c2.pairing_key("ward").equal(torch::tensor({1, 2}, torch::kLong)));
  REQUIRE(c2.pairing_key("patient").equal(torch::tensor({7, 8}, torch::kLong)));
  c2.reset();
  REQUIRE_FALSE(c2.has_pairing_key("ward"));
  REQUIRE(c2.sample_keys().size() == -1);
  REQUIRE_THROWS_WITH(c2.pairing_key("patient"), medcl_test::Contains("keeps none"));
}

TEST_CASE("DINO freezes its last layer for the first steps", "[methods]") {
  torch::manual_seed(13);
  Planted data(64, 13);
  medcl::DINO<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::DINOOptions(16)
          .output_dim(16)
          .hidden_dim(32)
          .bottleneck_dim(8)
          .freeze_last_layer_steps(2));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto b = two_views(data)(at::arange(32), gen);
  for (int64_t step : {1, 2}) {
    m.zero_grad();
    m.training_loss(b, {step, 10, 0}).backward();
    REQUIRE(m.head()->last_v.grad().defined());
    m.before_optimizer_step({step, 10, 0});
    CHECK(m.head()->last_v.grad().defined() == (step >= 2));
  }
  // With norm_last_layer the weight norm g is fixed at 1 and outputs are bounded cosines.
  CHECK_FALSE(m.head()->last_g.requires_grad());
  auto out = m.head()->forward(at::randn({5, 16}));
  CHECK(out.abs().max().item<double>() <= 1.0 + 1e-5);
}

TEST_CASE("SwAV cancels the prototypes' gradient while frozen", "[methods]") {
  torch::manual_seed(14);
  Planted data(64, 14);
  medcl::SwAV<torch::nn::Sequential> m(
      medcl_test::small_encoder(),
      medcl::SwAVOptions(16)
          .hidden_dim(32)
          .projection_dim(8)
          .num_prototypes(8)
          .freeze_prototypes_steps(1));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto b = two_views(data)(at::arange(32), gen);
  m.training_loss(b, {0, 10, 0}).backward();
  m.before_optimizer_step({0, 10, 0});
  CHECK_FALSE(m.prototypes()->weight.grad().defined());
  m.zero_grad();
  m.training_loss(b, {1, 10, 0}).backward();
  m.before_optimizer_step({1, 10, 0});
  CHECK(m.prototypes()->weight.grad().defined());
}

TEST_CASE("Methods refuse malformed batches and options", "[methods]") {
  torch::manual_seed(15);
  Planted data(64, 15);
  medcl::SimCLR<torch::nn::Sequential> simclr(
      medcl_test::small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto b = two_views(data)(at::arange(8), gen);
  auto one = b;
  one.views.pop_back();
  CHECK_THROWS_WITH(
      simclr.training_loss(one, {}),
      medcl_test::Contains("SimCLR: expected 2 global view(s), got 1"));
  auto local = b;
  local.local_views = {b.views[0]};
  CHECK_THROWS_WITH(
      simclr.training_loss(local, {}), medcl_test::Contains("does not use local views"));
  auto uneven = b;
  uneven.views[1] = uneven.views[1].slice(0, 0, 4);
  CHECK_THROWS_WITH(simclr.training_loss(uneven, {}), medcl_test::Contains("same samples"));
  auto wrong_dim = b;
  wrong_dim.views = {at::randn({8, 5}), at::randn({8, 5})};
  CHECK_THROWS(simclr.training_loss(wrong_dim, {}));
  CHECK_THROWS_WITH(
      medcl::MoCo<torch::nn::Sequential>(
          medcl_test::small_encoder(), medcl::MoCoOptions::v2(16).queue_size(0)),
      medcl_test::Contains("v2 needs a queue"));
  CHECK_THROWS_WITH(
      medcl::BYOL<torch::nn::Sequential>(
          medcl_test::small_encoder(), medcl::BYOLOptions(16).momentum_start(1.5)),
      medcl_test::Contains("momentum_start"));
  CHECK_THROWS_WITH(
      medcl::ProjectionHead(medcl::ProjectionHeadOptions(0, 8, 8)),
      medcl_test::Contains("input_dim must be > 0"));
  medcl::ProjectionHead head(medcl::ProjectionHeadOptions(16, 8, 4));
  CHECK_THROWS_WITH(
      head(at::randn({3, 15})), medcl_test::Contains("expected input of shape [B, 16]"));
  medcl::DINO<torch::nn::Sequential> dino(
      medcl_test::small_encoder(),
      medcl::DINOOptions(16).output_dim(8).hidden_dim(16).bottleneck_dim(4));
  auto single = b;
  single.views.pop_back();
  CHECK_THROWS_WITH(
      dino.training_loss(single, {}), medcl_test::Contains("pair of different views"));
}

TEST_CASE(
    "An encoder that cannot be cloned gives a clear error for momentum methods",
    "[methods]") {
  struct Plain : torch::nn::Module {
    Plain() {
      fc = register_module("fc", torch::nn::Linear(Planted::kDim, 16));
    }
    at::Tensor forward(const at::Tensor& x) {
      return fc(x);
    }
    torch::nn::Linear fc{nullptr};
  };
  struct PlainHolder : torch::nn::ModuleHolder<Plain> {
    using torch::nn::ModuleHolder<Plain>::ModuleHolder;
  };
  CHECK_THROWS_WITH(
      medcl::BYOL<PlainHolder>(PlainHolder(), medcl::BYOLOptions(16)),
      medcl_test::Contains("Cloneable"));
}

namespace {

torch::nn::Sequential small_encoder() {
  return torch::nn::Sequential(
      torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Linear(64, 16));
}

// Three bfloat16-autocast steps of `method` on the CPU: each loss finite, the parameters float32.
// Queues, centres and prototypes kept in float32 meet bfloat16 activations here.
void autocast_steps(medcl::MethodBase& method, int64_t local = 0, bool paired = false) {
  medcl::train::Trainer t(
      method,
      medcl::train::TrainerOptions(3).precision(medcl::train::Precision::BFloat16).progress(false));
  for (int i = 0; i < 3; ++i) {
    medcl::MethodBatch b;
    b.views = {torch::randn({32, 32}), torch::randn({32, 32})};
    for (int64_t v = 0; v < local; ++v) {
      b.local_views.push_back(torch::randn({32, 32}));
    }
    b.keys.label = torch::randint(0, 3, {32}, torch::kLong);
    b.keys.patient = torch::arange(32, torch::kLong).div(2, "floor");
    if (paired) {
      b.views.pop_back();
      b.paired = torch::randn({32, 32});
      b.keys.study = b.keys.patient.clone();
    }
    const auto r = t.step(b);
    CHECK(std::isfinite(r.loss));
  }
  for (const auto& p : method.parameters()) {
    CHECK(p.scalar_type() == torch::kFloat);
  }
}

} // namespace

TEST_CASE("Every method trains under bfloat16 autocast on the CPU", "[methods]") {
  torch::manual_seed(0);
  medcl::SimCLR<torch::nn::Sequential> simclr(
      small_encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  autocast_steps(simclr);
  SECTION("MoCo v2: a float32 queue against bfloat16 queries") {
    medcl::MoCo<torch::nn::Sequential> moco(
        small_encoder(),
        medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(64));
    autocast_steps(moco);
    REQUIRE(moco.queue()->filled() == 64);
    REQUIRE(moco.queue()->keys().scalar_type() == torch::kFloat);
  }
  SECTION("the other methods") {
    medcl::MoCo<torch::nn::Sequential> moco3(
        small_encoder(), medcl::MoCoOptions::v3(16).hidden_dim(32).projection_dim(8));
    autocast_steps(moco3);
    medcl::BYOL<torch::nn::Sequential> byol(
        small_encoder(), medcl::BYOLOptions(16).hidden_dim(32).projection_dim(8));
    autocast_steps(byol);
    medcl::SimSiam<torch::nn::Sequential> simsiam(
        small_encoder(), medcl::SimSiamOptions(16).projection_dim(16).prediction_hidden_dim(4));
    autocast_steps(simsiam);
    medcl::DINO<torch::nn::Sequential> dino(
        small_encoder(), medcl::DINOOptions(16).output_dim(32).hidden_dim(32).bottleneck_dim(8));
    autocast_steps(dino, 2);
    medcl::SwAV<torch::nn::Sequential> swav(
        small_encoder(),
        medcl::SwAVOptions(16).hidden_dim(32).projection_dim(8).num_prototypes(16).queue_size(64));
    autocast_steps(swav, 2);
    medcl::SupCon<torch::nn::Sequential> supcon(
        small_encoder(), medcl::SupConOptions(16).hidden_dim(32).projection_dim(8));
    autocast_steps(supcon);
    medcl::CLIP<torch::nn::Sequential, torch::nn::Sequential> clip(
        small_encoder(), small_encoder(), medcl::CLIPOptions(16, 16).embed_dim(8));
    autocast_steps(clip, 0, true);
  }
}

TEST_CASE(
    "The loss curve of a method with a queue says that the loss rises while it fills",
    "[methods][report]") {
  torch::manual_seed(13);
  Planted data(256, 13);
  medcl::MoCo<torch::nn::Sequential> moco(
      medcl_test::small_encoder(),
      medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(64));
  medcl::train::Trainer trainer(moco, medcl::train::TrainerOptions(2).progress(false));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto make = two_views(data);
  trainer.fit([&](int64_t) { return make(at::arange(32), gen); });
  medcl::Report report(medcl::ReportOptions().draw_figures(false));
  medcl::train::record_pretraining(report, moco, trainer, {medcl::Json(), "MLP", ""});
  medcl_test::TempDir dir;
  const auto files = report.write(dir.path.string());
  std::ifstream in(files.json_path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO(text);
  CHECK(
      text.find("MoCo v2 (the loss rises while its queue of 64 keys fills)") != std::string::npos);
}
