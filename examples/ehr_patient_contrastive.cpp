// Flagship example: patient-aware contrastive pretraining on real longitudinal clinical records.
//
// Data: the Mayo Clinic PBC cohort from R's survival package (Debian r-cran-survival), fetched and
// exported by ./scripts/fetch-data pbcseq: 1,945 visits of 312 trial patients (labs and signs, with
// missing values) plus the baseline records of 106 patients who were not in the trial (an external
// cohort). Outcome: death or liver transplant within two years of a visit.
//
// The question a clinician would ask: does contrastive pretraining on unlabelled visits give a
// representation that needs fewer labelled patients, and does telling the loss which visits belong
// to one patient help? Compared, on the same patient-level split:
//   - raw features (standardised labs + missingness mask), linear probe;
//   - SimCLR with instance pairing (two augmentations of one visit);
//   - SimCLR with patient pairing (PCLR: a patient's visits are positives);
//   - SimCLR with temporal-neighbour pairing (visits of one patient within a year are positives;
//     the patient's other visits are excluded from the negatives);
//   - a supervised MLP trained from scratch on the labels.
// Each at 1%, 10% and 100% of the labelled training patients (five seeds), with AUROC intervals,
// calibration, C-index, subgroups by sex, validation on the held-out non-trial cohort, the site
// audit and a report (report.json, report.md, figures).
//
//   ehr_patient_contrastive [--data DIR] [--out DIR] [--steps N] [--smoke]

#include <medcl/augment/policy.h>
#include <medcl/augment/tabular.h>
#include <medcl/core/runtime.h>
#include <medcl/data/pbc.h>
#include <medcl/data/samplers.h>
#include <medcl/eval/evaluation.h>
#include <medcl/methods/simclr.h>
#include <medcl/train/record.h>

#include <torch/torch.h>

#include "example_common.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

torch::nn::Sequential make_encoder(int64_t in, int64_t out) {
  return torch::nn::Sequential(
      torch::nn::Linear(in, 128),
      torch::nn::BatchNorm1d(128),
      torch::nn::ReLU(),
      torch::nn::Linear(128, 128),
      torch::nn::BatchNorm1d(128),
      torch::nn::ReLU(),
      torch::nn::Linear(128, out));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

int main(int argc, char** argv) {
  const auto args = example::parse_args(argc, argv, "ehr_patient_contrastive", 600, 40);
  const auto t_start = std::chrono::steady_clock::now();
  std::printf("%s\n", medcl::runtime_info().summary().c_str());

  // ---- data ----
  // --data is the pbcseq folder, or the data root that holds it.
  const std::string set_dir =
      std::ifstream(args.data + "/pbcseq.csv").good() ? args.data : args.data + "/pbcseq";
  const std::string pbcseq = set_dir + "/pbcseq.csv";
  const std::string pbc = set_dir + "/pbc.csv";
  if (!std::ifstream(pbcseq).good()) {
    std::cerr << "ehr_patient_contrastive: " << pbcseq
              << " not found; run ./scripts/fetch-data pbcseq (or pass --data DIR)\n";
    return 3;
  }
  const auto visits =
      medcl::data::load_pbc_visits(pbcseq, std::ifstream(pbc).good() ? pbc : "", 730);
  std::printf("data: %s\n", visits.describe().c_str());

  // Labelled visits form the evaluation cohort; its patient-level split decides who may be used
  // for pretraining (never a test patient, never the external cohort).
  const auto labelled = visits.labelled_rows();
  medcl::eval::EvaluationCohort cohort;
  medcl::eval::EvaluationCohort::Attribute sex{"sex", {}, {"female", "male"}};
  for (int64_t r : labelled) {
    const auto i = static_cast<size_t>(r);
    cohort.labels.push_back(visits.label[i]);
    cohort.patients.push_back(visits.patient[i]);
    cohort.sites.push_back(visits.site[i]);
    cohort.times.push_back(visits.time_to_event[i]);
    cohort.events.push_back(visits.event[i]);
    sex.groups.push_back(visits.sex[i]);
  }
  cohort.site_names = visits.site_names;
  cohort.subgroups.push_back(sex);
  cohort.label_names = {"no event within 2 y", "death/transplant within 2 y"};
  // Beside the fixed two-year outcome, the probe's risk is scored against the follow-up itself:
  // the time-dependent AUROC at 1, 2 and 5 years (days, as the data count them).
  auto eval_options = medcl::eval::EvaluationOptions()
                          .task("death or transplant within 2 years")
                          .seed(1)
                          .survival_horizons({365.25, 730.5, 1826.25});
  if (args.smoke) {
    eval_options.fraction_seeds({0, 1}).bootstrap(50).retrieval_examples(2);
  }
  medcl::eval::ClinicalEvaluation ev(cohort, eval_options);
  std::set<int64_t> test_patients(
      ev.splits().patients[ev.splits().at("test")].begin(),
      ev.splits().patients[ev.splits().at("test")].end());
  std::vector<int64_t> pretrain_rows, fit_rows;
  for (int64_t i = 0; i < visits.size(); ++i) {
    const auto k = static_cast<size_t>(i);
    if (visits.site[k] == 0 && test_patients.count(visits.patient[k]) == 0) {
      pretrain_rows.push_back(i); // every visit, labelled or not, of trial patients not in test
    }
  }
  for (size_t j = 0; j < labelled.size(); ++j) {
    if (test_patients.count(cohort.patients[j]) == 0) {
      fit_rows.push_back(labelled[j]);
    }
  }
  const auto scaler =
      medcl::data::TabularStandardizer::fit(visits.values, visits.mask, pretrain_rows);
  const auto features = scaler.transform(visits.values, visits.mask); // [N, F], missing = 0
  const auto inputs = scaler.with_mask(visits.values, visits.mask);   // [N, 2F]
  const int64_t f = features.size(1);
  auto lab_idx = at::tensor(labelled, at::kLong);
  std::printf(
      "pretraining corpus: %zu visits of trial patients outside the test split; evaluation: %zu "
      "labelled visits (%s)\n",
      pretrain_rows.size(),
      labelled.size(),
      ev.splits().describe().c_str());

  medcl::Report report;
  report.set_command_line(argc, argv);
  auto corpus = medcl::Json::object();
  corpus["name"] =
      "Mayo Clinic primary biliary cholangitis (PBC) cohort, R package survival: pbcseq + pbc";
  corpus["source"] = "Debian package r-cran-survival (exported by scripts/fetch-data)";
  corpus["modality"] = "longitudinal EHR: labs and clinical signs per visit, with missing values";
  corpus["description"] = visits.describe();
  corpus["pretraining_visits"] = static_cast<int64_t>(pretrain_rows.size());
  corpus["pretraining_rule"] =
      "all visits (labelled or not) of trial patients outside the test split";
  corpus["features"] = medcl::Json::array_of(visits.features);
  report.set_corpus(corpus);
  report.add_data_file(pbcseq, "pbcseq/pbcseq.csv");
  if (std::ifstream(pbc).good()) {
    report.add_data_file(pbc, "pbcseq/pbc.csv");
  }
  ev.describe_data(report);

  // ---- augmentation: hide recorded values (as a missed lab would) and add measurement noise ----
  using namespace medcl::augment;
  auto make_policy = [&](uint64_t seed) {
    return Policy(
        Modality::Tabular,
        std::make_shared<Sequence>(std::vector<TransformPtr>{
            std::make_shared<FeatureMask>(0.25),
            std::make_shared<FeatureNoise>(at::ones({f}), 0.2)}),
        seed);
  };

  // ---- pretraining: three pairing strategies ----
  struct Variant {
    std::string name;
    std::optional<medcl::PairingStrategy> pairing;
    int64_t records_per_patient;
  };
  const std::vector<Variant> variants{
      {"SimCLR instance", medcl::PairingStrategy::instance(), 1},
      {"SimCLR patient (PCLR)", medcl::PairingStrategy::same_patient(), 4},
      {"SimCLR temporal (1 year)",
       medcl::PairingStrategy::temporal_neighbours(365.0).exclude_same_patient(),
       4}};
  const int64_t batch = 256, dim = 64;
  std::vector<std::pair<std::string, at::Tensor>> embeddings;
  std::vector<int64_t> pretrain_patients;
  for (int64_t r : pretrain_rows) {
    pretrain_patients.push_back(visits.patient[static_cast<size_t>(r)]);
  }
  const auto keys = visits.keys();
  for (const auto& v : variants) {
    const auto t0 = std::chrono::steady_clock::now();
    medcl::train::seed_everything(7);
    medcl::SimCLR<torch::nn::Sequential> method(
        make_encoder(2 * f, dim),
        medcl::SimCLROptions(dim).hidden_dim(128).projection_dim(32).loss(
            medcl::NTXentLossOptions().temperature(0.2).pairing(v.pairing)));
    medcl::train::Trainer trainer(
        method,
        medcl::train::TrainerOptions(args.steps)
            .optimizer(medcl::train::OptimizerOptions().kind("adamw").lr(2e-3).weight_decay(1e-4))
            .warmup_steps(std::max<int64_t>(1, args.steps / 20))
            .progress(!args.smoke)
            .progress_every(200)
            .seed(7));
    auto policy = make_policy(11);
    medcl::PatientGroupedSampler sampler(pretrain_patients, v.records_per_patient, 3);
    trainer.fit([&](int64_t) {
      auto next = sampler.next(static_cast<size_t>(batch));
      if (!next || next->size() < static_cast<size_t>(batch)) {
        sampler.reset(); // next epoch: a new plan from (seed, epoch)
        next = sampler.next(static_cast<size_t>(batch));
      }
      std::vector<int64_t> rows;
      for (size_t j : *next) {
        rows.push_back(pretrain_rows[j]);
      }
      auto idx = at::tensor(rows, at::kLong);
      auto views =
          policy.views(Batch(features.index_select(0, idx), visits.mask.index_select(0, idx)), 2);
      medcl::MethodBatch b;
      for (const auto& view : views) {
        b.views.push_back(at::cat({view.values, view.mask.to(at::kFloat)}, 1));
      }
      b.keys = keys.index_select(idx); // patient, visit day, site
      return b;
    });
    method.eval();
    torch::NoGradGuard no_grad;
    embeddings.emplace_back(v.name, method.embed(inputs).index_select(0, lab_idx));
    std::printf(
        "pretrained %-26s %lld steps, loss %.3f -> %.3f (%.1f s)\n",
        v.name.c_str(),
        static_cast<long long>(args.steps),
        trainer.losses().front(),
        trainer.losses().back(),
        seconds_since(t0));
    // Each variant's own record, named as its model in the evaluation (the report links them).
    medcl::train::record_pretraining(
        report,
        method,
        trainer,
        {policy.describe(),
         "MLP " + std::to_string(2 * f) + "-128-128-" + std::to_string(dim) +
             " (batch norm, ReLU) on standardised features + missingness mask",
         ""},
        v.name);
    report.set_hyperparameter("batch_size", batch);
    report.set_hyperparameter(
        "sampler",
        "patient-grouped, " + std::to_string(v.records_per_patient) + " visit(s) per patient");
  }

  // ---- evaluation ----
  const auto t_eval = std::chrono::steady_clock::now();
  auto raw = ev.evaluate("raw features", inputs.index_select(0, lab_idx), report, false);
  report.set_model_pretraining("raw features", ""); // a baseline: no pretraining
  std::vector<medcl::eval::ModelEvaluation> results{raw};
  for (const auto& e : embeddings) {
    results.push_back(ev.evaluate(e.first, e.second, report, e.first == "SimCLR patient (PCLR)"));
  }
  auto ft_options = medcl::eval::FineTuneOptions()
                        .epochs(args.smoke ? 3 : 30)
                        .batch_size(64)
                        .encoder_lr(1e-3)
                        .head_lr(1e-2)
                        .seed(5);
  results.push_back(ev.evaluate_supervised(
      "supervised MLP from scratch",
      [&] {
        medcl::train::seed_everything(13);
        return make_encoder(2 * f, dim);
      },
      inputs.index_select(0, lab_idx),
      report,
      ft_options));
  ev.compare(results[2], results[1], report); // patient pairing vs instance pairing
  ev.compare(results[2], results[0], report); // patient pairing vs raw features
  std::printf("evaluation: %.1f s\n", seconds_since(t_eval));

  // ---- summary ----
  std::printf(
      "\n%-30s %-28s %-28s %-22s %-8s %-6s\n",
      "model",
      "AUROC 1% labels",
      "AUROC 10% labels",
      "AUROC 100% [95% CI]",
      "C-index",
      "ECE");
  for (const auto& r : results) {
    std::string cells[3];
    for (size_t k = 0; k < r.label_efficiency.size() && k < 3; ++k) {
      cells[k] = example::fraction_cell(r.label_efficiency[k]);
    }
    char full[64];
    std::snprintf(
        full, sizeof(full), "%.3f [%.3f, %.3f]", r.auroc.estimate, r.auroc.lower, r.auroc.upper);
    std::printf(
        "%-30s %-28s %-28s %-22s %-8.3f %-6.3f\n",
        r.model.c_str(),
        cells[0].c_str(),
        cells[1].c_str(),
        full,
        r.c_index,
        r.calibration.ece);
  }
  std::printf(
      "\ntime-dependent AUROC of the probe's risk (cumulative/dynamic, censoring-weighted):\n");
  for (const auto& r : results) {
    std::printf("%-30s", r.model.c_str());
    for (const auto& h : r.time_dependent_auroc) {
      std::printf("  %.0f y: %.3f", h.first / 365.25, h.second);
    }
    std::printf("\n");
  }
  const auto& pclr = results[2];
  if (pclr.has_site_analyses) {
    for (const auto& s : pclr.external.sites) {
      if (s.site == 1 && s.auroc_defined) {
        std::printf(
            "external validation (%s held out), %s: AUROC %.3f [%.3f, %.3f], ECE %.3f\n",
            visits.site_names[1].c_str(),
            pclr.model.c_str(),
            s.auroc.estimate,
            s.auroc.lower,
            s.auroc.upper,
            s.ece);
      }
    }
    std::printf("site audit (%s): %s\n", pclr.model.c_str(), pclr.site_audit.verdict.c_str());
  }

  const auto files = report.write(args.out + "/report");
  std::printf(
      "report: %s, %s\none page to share: %s\n",
      files.json_path.c_str(),
      files.markdown_path.c_str(),
      files.html_path.c_str());

  // The example checks its own report: every checklist item present, every metric finite.
  int missing = example::missing_checklist_items(files.json_path);
  for (const auto& r : results) {
    for (double v :
         {r.auroc.estimate,
          r.auroc.lower,
          r.auroc.upper,
          r.brier.estimate,
          r.calibration.ece,
          r.c_index}) {
      if (!std::isfinite(v)) {
        std::fprintf(stderr, "non-finite metric for %s\n", r.model.c_str());
        ++missing;
      }
    }
  }
  std::printf("total time %.1f s\n", seconds_since(t_start));
  if (missing > 0) {
    return 1;
  }
  std::printf("ehr_patient_contrastive ok\n");
  return 0;
}
