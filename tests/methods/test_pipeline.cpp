// From pretraining to the report: SimCLR through the trainer on a planted cohort (patients with
// several records, three sites, a subgroup attribute, survival follow-up), the clinical evaluation
// of its embeddings against raw features, and a report that must hold every field.

#include "methods/planted.h"

#include <medcl/augment/tabular.h>
#include <medcl/eval/evaluation.h>
#include <medcl/methods/simclr.h>
#include <medcl/train/record.h>

#include <torch/torch.h>
#include "catch.h"
#include "support.h"

#include <filesystem>
#include <fstream>
#include <sstream>

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
      medcl::eval::EvaluationOptions().task("outcome").bootstrap(200).fraction_seeds({0, 1, 2}));
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
  CHECK(j.at("pretraining").at("method").as_string() == "SimCLR");
  CHECK(j.at("pretraining").at("pairing").as_string().find("patient") != std::string::npos);
  CHECK(j.at("pretraining").at("steps").as_int64() == 150);
  CHECK(j.at("pretraining").at("hyperparameters").contains("optimizer"));
  CHECK(j.at("pretraining").at("hyperparameters").contains("lr_schedule"));
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
  CHECK(find("outcome", "SimCLR", "AUROC difference", "reference_model"));
  CHECK(find("outcome", "SimCLR fine-tuned", "AUROC"));
  CHECK(find("outcome", "SimCLR", "AUROC", "subgroup"));
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
