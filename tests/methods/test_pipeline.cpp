// From pretraining to the report: SimCLR through the trainer on a planted cohort (patients with
// several records, three sites, a subgroup attribute, survival follow-up), the clinical evaluation
// of its embeddings against raw features, and a report that must hold every field.

#include "methods/planted.h"

#include <medcl/augment/tabular.h>
#include <medcl/eval/embed.h>
#include <medcl/eval/evaluation.h>
#include <medcl/eval/retrieval.h>
#include <medcl/methods/byol.h>
#include <medcl/methods/dino.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/simclr.h>
#include <medcl/train/record.h>

#include <torch/torch.h>
#include "catch.h"
#include "support.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using medcl_test::Planted;
using medcl_test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Cohort {
  at::Tensor x; // [N, 32] one rendering per record
  Planted data;
  medcl::eval::EvaluationCohort cohort;
  explicit Cohort(int64_t n) : data(n, 31) {
    x = data.rendering(5);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    auto& c = cohort;
    c.labels.resize(static_cast<size_t>(n));
    c.patients.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      c.labels[static_cast<size_t>(i)] = data.labels[i].item<int64_t>();
      c.patients[static_cast<size_t>(i)] = data.patient[i].item<int64_t>();
      c.sites.push_back(data.patient[i].item<int64_t>() % 3);
    }
    c.site_names = {"hospital A", "hospital B", "hospital C"};
    medcl::eval::EvaluationCohort::Attribute sex{"sex", {}, {"female", "male"}};
    for (int64_t i = 0; i < n; ++i) {
      sex.groups.push_back((data.patient[i].item<int64_t>() / 3) % 2);
    }
    c.subgroups.push_back(sex);
    auto u = at::rand({n}, gen, at::kDouble);
    for (int64_t i = 0; i < n; ++i) {
      // Positives fail earlier: time ~ Exp with a higher hazard for label 1.
      const double rate = c.labels[static_cast<size_t>(i)] ? 2.0 : 0.5;
      c.times.push_back(-std::log(u[i].item<double>()) / rate);
      c.events.push_back(u[i].item<double>() > 0.2 ? 1 : 0);
    }
  }
};

} // namespace

TEST_CASE(
    "Pretraining, clinical evaluation and report: every field is there",
    "[methods][report]") {
  Cohort co(1200);
  torch::manual_seed(1);
  medcl::SimCLR<torch::nn::Sequential> method(
      medcl_test::small_encoder(),
      medcl::SimCLROptions(16).hidden_dim(64).projection_dim(16).loss(
          medcl::NTXentLossOptions().temperature(0.1).pairing(
              medcl::PairingStrategy::instance().exclude_same_patient())));
  medcl::train::Trainer trainer(
      method,
      medcl::train::TrainerOptions(150)
          .optimizer(medcl::train::OptimizerOptions().lr(2e-3))
          .warmup_steps(10)
          .seed(11)
          .progress(false));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  trainer.track("batches", gen);
  trainer.fit([&](int64_t) {
    auto idx = at::randperm(co.x.size(0), gen, at::kLong).slice(0, 0, 128);
    auto s = co.data.signal.index_select(0, idx);
    medcl::MethodBatch b;
    b.views = {Planted::view(s, gen), Planted::view(s, gen)};
    b.keys.patient = co.data.patient.index_select(0, idx);
    return b;
  });

  medcl::eval::ClinicalEvaluation ev(
      co.cohort,
      medcl::eval::EvaluationOptions()
          .task("outcome")
          .bootstrap(200)
          .fraction_seeds({0, 1, 2})
          .survival_horizons({0.5, 1.0}));
  medcl::Report report(
      medcl::ReportOptions().draw_figures(std::system("gnuplot --version >/dev/null 2>&1") == 0));
  report.set_command_line({"test_pipeline"});
  auto corpus = medcl::Json::object();
  corpus["name"] = "planted cohort";
  corpus["records"] = static_cast<int64_t>(co.cohort.labels.size());
  report.set_corpus(corpus);
  ev.describe_data(report);
  auto aug = medcl::Json::object();
  aug["transform"] = "redraw nuisance, jitter signal (sd 0.1)";
  medcl::train::record_pretraining(report, method, trainer, {aug, "MLP 32-64-16", ""});

  torch::NoGradGuard no_grad;
  method.eval();
  auto z = method.embed(co.x);
  auto a = ev.evaluate("SimCLR", z, report);
  auto b = ev.evaluate("raw features", co.x, report, false);
  report.set_model_pretraining("raw features", ""); // a baseline: no pretraining
  auto cmp = ev.compare(a, b, report);
  {
    // Fine-tuning the pretrained encoder (a copy) on the raw inputs.
    torch::GradMode::set_enabled(true);
    auto ft = ev.evaluate_fine_tuned(
        "SimCLR fine-tuned",
        method.encoder(),
        co.x,
        report,
        medcl::eval::FineTuneOptions().epochs(3).batch_size(64));
    report.set_model_pretraining("SimCLR fine-tuned", "SimCLR");
    torch::GradMode::set_enabled(false);
    CHECK(ft.auroc.estimate > 0.9);
  }
  {
    // Representation quality of two views, and the invariance audit of two augmentations: light
    // feature noise keeps the embedding, heavy noise moves it as much as a change of label.
    auto g2 = at::make_generator<at::CPUGeneratorImpl>(4);
    auto s = co.data.signal.slice(0, 0, 256);
    medcl::eval::record_representation(
        report,
        "representation",
        "SimCLR",
        method.embed(Planted::view(s, g2)),
        method.embed(Planted::view(s, g2)));
    std::vector<int64_t> labels(co.cohort.labels.begin(), co.cohort.labels.begin() + 256);
    auto audit = medcl::eval::invariance_audit(
        [&](const medcl::augment::Batch& x) { return method.embed(x.values); },
        medcl::augment::Modality::Tabular,
        {std::make_shared<medcl::augment::FeatureNoise>(at::ones({Planted::kDim}), 0.05),
         std::make_shared<medcl::augment::FeatureNoise>(at::ones({Planted::kDim}), 200.0)},
        medcl::augment::Batch(co.x.slice(0, 0, 256)),
        labels,
        3);
    REQUIRE(audit.transforms.size() == 2);
    CHECK_FALSE(audit.transforms[0].flagged);
    INFO(
        "light " << audit.transforms[0].mean_cosine << " heavy " << audit.transforms[1].mean_cosine
                 << " same " << audit.same_label_cosine << " diff " << audit.different_label_cosine
                 << " all " << audit.random_pair_cosine);
    CHECK(audit.transforms[1].flagged);
    medcl::eval::record_invariance_audit(report, "SimCLR", audit);
  }
  INFO("AUROC SimCLR " << a.auroc.estimate << " raw " << b.auroc.estimate);
  CHECK(a.auroc.estimate > 0.9);
  CHECK(a.auroc.lower <= a.auroc.estimate);
  CHECK(a.auroc.upper >= a.auroc.estimate);
  CHECK(a.auprc.lower <= a.auprc.estimate);
  CHECK(a.c_index > 0.6);
  CHECK(a.label_efficiency.size() == 3);
  CHECK(a.has_site_analyses);
  CHECK(a.site_audit.level == "low"); // sites carry no signal in this cohort
  CHECK(std::isfinite(cmp.p_value));

  TempDir dir;
  report.write(dir.path.string());
  std::ifstream in(dir.path / "report.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = medcl::Json::parse(ss.str());
  for (const char* s : {"medcl", "data", "pretraining", "evaluation", "checklist"}) {
    CHECK(j.contains(s));
  }
  CHECK(j.at("data").at("split_rule").as_string().find("patient-level") != std::string::npos);
  CHECK(j.at("data").at("leakage_check").at("passed").as_bool());
  const auto& run = j.at("pretraining").at("runs").at("SimCLR");
  CHECK(run.at("method").as_string() == "SimCLR");
  CHECK(run.at("pairing").as_string().find("patient") != std::string::npos);
  CHECK(run.at("steps").as_int64() == 150);
  CHECK(run.at("hyperparameters").contains("optimizer"));
  CHECK(run.at("hyperparameters").contains("lr_schedule"));
  // Every compared model points to its record: the probe's protocol, and its pretraining.
  const auto& models = j.at("evaluation").at("models");
  CHECK(models.at("SimCLR").at("pretraining").as_string() == "SimCLR");
  CHECK(models.at("SimCLR").at("evaluation").at("l2").as_double() == a.l2);
  CHECK(models.at("raw features").at("pretraining_status").as_string() == "none");
  CHECK(models.at("SimCLR fine-tuned").at("pretraining").as_string() == "SimCLR");
  CHECK(models.at("SimCLR fine-tuned").at("evaluation").at("epochs").as_int64() == 3);
  CHECK(medcl::eval::validate_report(j).empty());
  const auto& e = j.at("evaluation");
  for (const char* k :
       {"results", "calibration", "label_efficiency", "audits", "retrieval_examples"}) {
    INFO(k);
    CHECK(e.contains(k));
  }
  // Results are records selected by field, not by parsing names.
  auto find = [&](const std::string& task,
                  const std::string& model,
                  const std::string& metric,
                  const char* qualifier = nullptr) {
    for (const auto& r : e.at("results").elements()) {
      if (r.at("task").as_string() == task && !r.at("model").is_null() &&
          r.at("model").as_string() == model && r.at("metric").as_string() == metric &&
          (qualifier == nullptr || !r.at(qualifier).is_null())) {
        return true;
      }
    }
    return false;
  };
  CHECK(find("outcome", "SimCLR", "AUROC"));
  CHECK(find("outcome", "raw features", "AUROC"));
  CHECK(find("outcome", "SimCLR", "C-index", "detail"));
  CHECK(find("outcome", "SimCLR", "time-dependent AUROC", "detail"));
  REQUIRE(e.contains("decision_curves"));
  const auto& dc = e.at("decision_curves").at("outcome").at("SimCLR");
  CHECK(dc.at("thresholds").size() == 99);
  CHECK(a.decision_curve.net_benefit.size() == 99);
  CHECK(dc.at("net_benefit")[9].as_double() == a.decision_curve.net_benefit[9]);
  // The planted cohort separates perfectly (AUROC 1): the calibration slope is then undefined
  // and absent, calibration-in-the-large stays.
  CHECK(find("outcome", "SimCLR", "calibration-in-the-large", "interval"));
  CHECK(a.has_calibration_in_the_large);
  CHECK(find("outcome", "SimCLR", "calibration slope") == a.has_logistic_calibration);
  REQUIRE(a.time_dependent_auroc.size() == 2);
  CHECK(a.time_dependent_auroc[0].first == 0.5);
  CHECK(a.time_dependent_auroc[0].second > 0.6); // positives fail earlier in this cohort
  if (a.auroc.estimate < 1) {
    CHECK(a.has_logistic_calibration);
    CHECK(a.logistic_calibration.slope.lower < a.logistic_calibration.slope.upper);
  }
  CHECK(find("outcome", "SimCLR", "AUROC difference", "reference_model"));
  CHECK(find("outcome", "SimCLR fine-tuned", "AUROC"));
  CHECK(find("outcome", "SimCLR", "AUROC", "subgroup"));
  // The fairness audit by sex, at the threshold chosen on the validation patients.
  REQUIRE(e.contains("fairness"));
  const auto& fair = e.at("fairness").at("outcome").at("SimCLR").at("sex");
  CHECK(fair.at("threshold").as_double() == a.operating_threshold);
  CHECK(
      fair.at("threshold_rule").as_string().find("on the validation patients") !=
      std::string::npos);
  REQUIRE(a.fairness.count("sex") == 1);
  const auto& audit = a.fairness.at("sex");
  REQUIRE(audit.groups.size() == 2);
  CHECK(audit.gaps.size() == 6);
  for (const auto& g : audit.groups) {
    INFO(g.name);
    CHECK(g.estimable);
    CHECK(find("outcome", "SimCLR", "sensitivity", "subgroup"));
  }
  CHECK(!e.at("fairness").at("outcome").contains("raw features")); // analyses off for it
  CHECK(find("outcome", "SimCLR", "AUROC", "cohort"));
  CHECK(find("representation", "SimCLR", "Recall@1"));
  CHECK(find("representation", "SimCLR", "uniformity"));
  CHECK(e.at("audits").contains("invariance audit: SimCLR"));
  CHECK(e.at("audits").contains("site audit: SimCLR"));
  for (const auto& item : j.at("checklist").elements()) {
    INFO(item.dump());
    CHECK(item.at("status").as_string() == "present");
  }
  CHECK(fs::exists(dir.path / "report.md"));
  std::ifstream md_in(dir.path / "report.md");
  const std::string md((std::istreambuf_iterator<char>(md_in)), std::istreambuf_iterator<char>());
  CHECK(md.find("### Decision curves") != std::string::npos);
  CHECK(md.find("### Subgroup fairness") != std::string::npos);
  // The PCA map says what it shows: the model, the components and their share of variance.
  CHECK(md.find("![PCA of the test embeddings of SimCLR, coloured by label]") != std::string::npos);
  std::ifstream gp_in(dir.path / "simclr_pca_by_label.gp");
  const std::string gp((std::istreambuf_iterator<char>(gp_in)), std::istreambuf_iterator<char>());
  CHECK(gp.find("set xlabel \"PC1 (") != std::string::npos);
  CHECK(gp.find("% of variance)\"") != std::string::npos);
  CHECK(md.find("#### outcome · SimCLR · by sex") != std::string::npos);
  CHECK(md.find("| outcome | treat all |") != std::string::npos);
}

TEST_CASE("The clinical evaluation refuses bad cohorts and embeddings", "[methods][report]") {
  medcl::eval::EvaluationCohort c;
  CHECK_THROWS_WITH(medcl::eval::ClinicalEvaluation(c), medcl_test::Contains("no records"));
  c.labels = {0, 1, 0, 1};
  c.patients = {1, 2, 3};
  CHECK_THROWS_WITH(
      medcl::eval::ClinicalEvaluation(c), medcl_test::Contains("4 labels but 3 patient ids"));
  c.patients = {1, 2, 3, 4};
  c.labels = {0, 2, 0, 1};
  CHECK_THROWS_WITH(
      medcl::eval::ClinicalEvaluation(c), medcl_test::Contains("labels must be 0 or 1, got 2"));
  c.labels = {0, 0, 0, 0};
  CHECK_THROWS_WITH(medcl::eval::ClinicalEvaluation(c), medcl_test::Contains("both classes"));

  Cohort co(300);
  CHECK_THROWS_WITH(
      medcl::eval::ClinicalEvaluation(
          co.cohort, medcl::eval::EvaluationOptions().survival_horizons({1.0, -2.0})),
      medcl_test::Contains("survival horizons must be finite and > 0, got -2"));
  auto no_follow_up = co.cohort;
  no_follow_up.times.clear();
  no_follow_up.events.clear();
  CHECK_THROWS_WITH(
      medcl::eval::ClinicalEvaluation(
          no_follow_up, medcl::eval::EvaluationOptions().survival_horizons({1.0})),
      medcl_test::Contains("survival_horizons are given but the cohort has no survival follow-up"));
  CHECK_THROWS_WITH(
      medcl::eval::ClinicalEvaluation(
          co.cohort, medcl::eval::EvaluationOptions().decision_thresholds({0.2, 1.5})),
      medcl_test::Contains("threshold 1 is 1.5; thresholds must be in (0, 1)"));
  medcl::eval::ClinicalEvaluation ev(co.cohort);
  medcl::Report report;
  CHECK_THROWS_WITH(
      ev.evaluate("m", at::randn({10, 4}), report),
      medcl_test::Contains("expected embeddings [300, D]"));
  auto bad = co.x.clone();
  bad[3][2] = std::nan("");
  CHECK_THROWS_WITH(ev.evaluate("m", bad, report), medcl_test::Contains("NaN"));
  CHECK_THROWS_WITH(
      medcl::eval::roc_curve({0.1, 0.2}, {1, 1}), medcl_test::Contains("both classes"));
}

TEST_CASE("ROC points and the patient bootstrap", "[methods][report]") {
  auto roc = medcl::eval::roc_curve({0.9, 0.8, 0.8, 0.3}, {1, 0, 1, 0});
  // Thresholds 0.9, 0.8 (tie: one positive, one negative), 0.3.
  CHECK(roc.first == std::vector<double>{0.0, 0.0, 0.5, 1.0});
  CHECK(roc.second == std::vector<double>{0.0, 0.5, 1.0, 1.0});
  std::vector<double> s;
  std::vector<int64_t> l, p;
  for (int i = 0; i < 200; ++i) {
    s.push_back(i % 2 ? 0.7 : 0.3);
    l.push_back(i % 2);
    p.push_back(i / 2); // both records of a patient share... nothing: one positive, one negative
  }
  auto iv = medcl::eval::patient_bootstrap(
      [](const std::vector<double>& a, const std::vector<int64_t>& b) {
        return medcl::eval::brier_score(a, b);
      },
      s,
      l,
      p,
      100,
      1,
      0.95);
  // Every patient contributes (0.3 - 0)^2 and (0.7 - 1)^2: the Brier score is 0.09 in every
  // resample.
  CHECK(iv.estimate == Approx(0.09));
  CHECK(iv.lower == Approx(0.09));
  CHECK(iv.upper == Approx(0.09));
  CHECK_THROWS_WITH(
      medcl::eval::patient_bootstrap(
          [](const std::vector<double>& a, const std::vector<int64_t>& b) {
            return medcl::eval::brier_score(a, b);
          },
          s,
          l,
          p,
          5,
          1,
          0.95),
      medcl_test::Contains("resamples must be >= 10"));
}

namespace {

// An encoder whose output depends on the mode: batch normalisation (batch statistics and moving
// running statistics in training) and dropout.
torch::nn::Sequential bn_encoder() {
  return torch::nn::Sequential(
      torch::nn::Linear(Planted::kDim, 32),
      torch::nn::BatchNorm1d(32),
      torch::nn::ReLU(),
      torch::nn::Dropout(0.5),
      torch::nn::Linear(32, 16));
}

// The training flag of the module and of each submodule, in order.
std::vector<bool> modes(torch::nn::Module& m) {
  std::vector<bool> out{m.is_training()};
  for (const auto& sub : m.modules(/*include_self=*/false)) {
    out.push_back(sub->is_training());
  }
  return out;
}

std::map<std::string, at::Tensor> buffers(const torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& b : m.named_buffers(true)) {
    out[b.key()] = b.value().clone();
  }
  return out;
}

bool same_buffers(const std::map<std::string, at::Tensor>& before, const torch::nn::Module& m) {
  const auto now = buffers(m);
  if (now.size() != before.size()) {
    return false;
  }
  for (const auto& [name, t] : before) {
    if (!at::equal(t, now.at(name))) {
      return false;
    }
  }
  return true;
}

// What the examples do by hand: eval(), no gradient, the backbone, then training mode again.
at::Tensor backbone_in_eval_mode(medcl::MethodBase& m, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  m.eval();
  auto z = m.backbone_features(x);
  m.train();
  return z;
}

// `embed` and `extract_embeddings(method, ...)` between training steps: the method's buffers
// (batch-norm running statistics) do not move, the result needs no gradient, each module's mode
// comes back (training, eval, mixed, and after an error) and the result is the backbone's in eval
// mode.
void check_safe_embed(medcl::MethodBase& m, const char* who) {
  INFO(who);
  REQUIRE(torch::GradMode::is_enabled());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  auto x = at::randn({40, Planted::kDim}, gen, at::kFloat);
  const auto expected = backbone_in_eval_mode(m, x);

  m.train();
  const auto state = buffers(m);
  const auto training = modes(m);
  auto z = m.embed(x);
  CHECK_FALSE(z.requires_grad());
  CHECK(same_buffers(state, m));
  CHECK(modes(m) == training);
  CHECK(at::allclose(z, expected, 1e-5, 1e-6));
  auto chunked = medcl::eval::extract_embeddings(m, x, 7);
  CHECK_FALSE(chunked.requires_grad());
  CHECK(chunked.scalar_type() == at::kFloat);
  CHECK(at::allclose(chunked, expected, 1e-5, 1e-6));
  CHECK(same_buffers(state, m));
  CHECK(modes(m) == training);

  // Called in eval mode, it stays there.
  m.eval();
  const auto evaluating = modes(m);
  CHECK(at::allclose(m.embed(x), expected, 1e-5, 1e-6));
  CHECK(modes(m) == evaluating);

  // A module kept in eval mode inside a training method stays in eval mode.
  m.train();
  auto subs = m.modules(/*include_self=*/false);
  REQUIRE(subs.size() >= 2);
  subs[1]->eval();
  const auto mixed = modes(m);
  m.embed(x);
  CHECK(modes(m) == mixed);
  (void)medcl::eval::extract_embeddings(m, x);
  CHECK(modes(m) == mixed);

  // Errors (the encoder refuses 5 features) restore the mode too.
  auto bad = at::randn({4, 5});
  for (bool train : {true, false}) {
    m.train(train);
    const auto before = modes(m);
    CHECK_THROWS(m.embed(bad));
    CHECK(modes(m) == before);
    CHECK_THROWS(medcl::eval::extract_embeddings(m, bad));
    CHECK(modes(m) == before);
  }
  CHECK(same_buffers(state, m));
  m.train();
}

} // namespace

TEST_CASE(
    "embed gives the backbone in eval mode without gradient and restores the mode",
    "[methods]") {
  torch::manual_seed(3);
  auto encoder = bn_encoder();
  medcl::SimCLR<torch::nn::Sequential> simclr(
      encoder, medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  check_safe_embed(simclr, "SimCLR");

  // The same numbers as extract_embeddings of the encoder (put in eval mode by it).
  auto x = at::randn({30, Planted::kDim});
  simclr.train();
  CHECK(at::allclose(simclr.embed(x), medcl::eval::extract_embeddings(encoder, x), 1e-5, 1e-6));
  CHECK(simclr.is_training());
  CHECK(encoder->is_training());

  // What embed used to do, and backbone_features still does for training: the training mode's
  // batch statistics and dropout, running statistics moved, a result with gradient.
  auto bn = encoder->ptr(1)->as<torch::nn::BatchNorm1d>();
  REQUIRE(bn != nullptr);
  const auto mean = bn->running_mean.clone();
  auto raw = simclr.backbone_features(x);
  CHECK(raw.requires_grad());
  CHECK_FALSE(at::equal(bn->running_mean, mean));
  CHECK_FALSE(at::allclose(raw, simclr.embed(x), 1e-3, 1e-3));

  medcl::MoCo<torch::nn::Sequential> moco(
      bn_encoder(), medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(64));
  check_safe_embed(moco, "MoCo v2");
  medcl::BYOL<torch::nn::Sequential> byol(
      bn_encoder(), medcl::BYOLOptions(16).hidden_dim(32).projection_dim(8));
  check_safe_embed(byol, "BYOL");
  medcl::DINO<torch::nn::Sequential> dino(
      bn_encoder(), medcl::DINOOptions(16).output_dim(32).hidden_dim(32).bottleneck_dim(8));
  check_safe_embed(dino, "DINO");
  // DINO's embedding is the teacher's backbone.
  dino.train();
  CHECK(at::allclose(
      dino.embed(x), medcl::eval::extract_embeddings(dino.teacher_encoder(), x), 1e-5, 1e-6));
}

TEST_CASE(
    "Retrieval example queries come from distinct patients spread evenly",
    "[methods][report]") {
  namespace E = medcl::eval;
  // Patients by first appearance: 7 (records 0-2), 3 (3-4), 9 (5-6), 1 (7-9).
  const std::vector<int64_t> patients{7, 7, 7, 3, 3, 9, 9, 1, 1, 1};
  CHECK(E::example_queries(patients, 0).empty());
  CHECK(E::example_queries({}, 3).empty());
  CHECK(E::example_queries(patients, 1) == std::vector<int64_t>{5});       // patient 2 of 4
  CHECK(E::example_queries(patients, 2) == std::vector<int64_t>{3, 7});    // patients 1 and 3 of 4
  CHECK(E::example_queries(patients, 3) == std::vector<int64_t>{0, 5, 7}); // 1, 3, 4 of 4
  CHECK(E::example_queries(patients, 4) == std::vector<int64_t>{0, 3, 5, 7});
  // More examples than patients: each patient's next record, round by round.
  CHECK(E::example_queries(patients, 6) == std::vector<int64_t>{0, 3, 5, 7, 1, 4});
  CHECK(E::example_queries(patients, 50) == std::vector<int64_t>{0, 3, 5, 7, 1, 4, 6, 8, 2, 9});
  CHECK_THROWS_WITH(E::example_queries(patients, -1), medcl_test::Contains("count must be >= 0"));
  // One patient per example across a large set, in ascending record order.
  std::vector<int64_t> many;
  for (int64_t i = 0; i < 1000; ++i) {
    many.push_back(i / 4);
  }
  const auto q = E::example_queries(many, 10);
  REQUIRE(q.size() == 10);
  std::set<int64_t> distinct;
  for (size_t i = 0; i < q.size(); ++i) {
    distinct.insert(many[static_cast<size_t>(q[i])]);
    if (i > 0) {
      CHECK(q[i] > q[i - 1]);
    }
  }
  CHECK(distinct.size() == 10);
  CHECK(q.front() >= 40); // not the first records
  CHECK(q.back() >= 900); // spread to the end

  // The clinical evaluation's examples: each patient has two consecutive records, so the first
  // test records came from the same patients.
  Cohort co(300);
  E::ClinicalEvaluation ev(
      co.cohort,
      E::EvaluationOptions()
          .bootstrap(20)
          .fractions({1.0})
          .fraction_seeds({0})
          .site_analyses(false)
          .embedding_map(false)
          .retrieval_examples(4));
  const auto& test_rows = ev.splits().indices[ev.splits().at("test")];
  REQUIRE(test_rows.size() >= 8);
  std::set<int64_t> first_four;
  for (size_t i = 0; i < 4; ++i) {
    first_four.insert(co.cohort.patients[static_cast<size_t>(test_rows[i])]);
  }
  CHECK(first_four.size() < 4); // what the examples used to show
  medcl::Report report;
  ev.evaluate("raw features", co.x, report);
  const auto examples = report.json().at("evaluation").at("retrieval_examples").elements();
  REQUIRE(examples.size() == 4);
  std::set<int64_t> shown, test_set(test_rows.begin(), test_rows.end());
  std::vector<int64_t> test_patients;
  for (int64_t r : test_rows) {
    test_patients.push_back(co.cohort.patients[static_cast<size_t>(r)]);
  }
  const auto expected = E::example_queries(test_patients, 4);
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& e = examples[i];
    const int64_t record = e.at("query_record").as_int64();
    CHECK(test_set.count(record) == 1);
    CHECK(record == test_rows[static_cast<size_t>(expected[i])]);
    CHECK(e.at("query_patient").as_int64() == co.cohort.patients[static_cast<size_t>(record)]);
    shown.insert(e.at("query_patient").as_int64());
    CHECK(e.at("neighbours").elements().size() == 5);
  }
  CHECK(shown.size() == 4);
}
