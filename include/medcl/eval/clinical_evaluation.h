#pragma once

/// \file
/// ClinicalEvaluation: the patient-level split of one cohort, made once, and the evaluation of
/// each model's embeddings on it (linear probe, every metric with its interval, calibration, ROC,
/// label efficiency, subgroups, external validation, site audit, 2-D map, retrieval examples),
/// written into a Report. Non-template members are compiled in src/eval/evaluation.cpp.

#include <medcl/core/checks.h>
#include <medcl/data/splits.h>
#include <medcl/eval/audits.h>
#include <medcl/eval/fine_tune.h>
#include <medcl/eval/label_fractions.h>
#include <medcl/eval/linear_probe.h>
#include <medcl/eval/metrics.h>
#include <medcl/eval/report.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {

/// The labelled cohort an evaluation runs on: one entry per record.
///
/// Example:
///   medcl::eval::EvaluationCohort c;
///   c.labels = died_within_5y;      // 0/1
///   c.patients = patient_id;
///   c.sites = hospital;             // optional: external validation and site audit
///   c.subgroups.push_back({"sex", sex_index, {"female", "male"}});
struct EvaluationCohort {
  /// One subgroup attribute: the group index of every record and the groups' names.
  struct Attribute {
    std::string name;
    std::vector<int64_t> groups;
    std::vector<std::string> group_names;
  };
  std::vector<int64_t> labels;
  std::vector<int64_t> patients;
  /// Site, hospital or batch of each record (optional).
  std::vector<int64_t> sites;
  /// Names of the site ids (optional; "site <id>" otherwise).
  std::vector<std::string> site_names;
  std::vector<Attribute> subgroups;
  /// Survival follow-up of each record (optional): time and event (1) or censoring (0); the
  /// probe's probability is the risk of Harrell's C-index.
  std::vector<double> times;
  std::vector<int64_t> events;
  /// Names of label 0 and 1 for maps and examples. Default: {"negative", "positive"}
  std::vector<std::string> label_names{"negative", "positive"};
};

/// Options of `ClinicalEvaluation`.
struct EvaluationOptions {
  /// Name of the prediction task in the report. Default: "outcome"
  TORCH_ARG(std::string, task) = "outcome";
  /// Share of patients used as validation (probe L2 choice). Default: 0.2
  TORCH_ARG(double, validation_fraction) = 0.2;
  /// Share of patients held out as test. Default: 0.2
  TORCH_ARG(double, test_fraction) = 0.2;
  /// Seed of the patient-level split and the bootstrap. Default: 0
  TORCH_ARG(uint64_t, seed) = 0;
  /// Confidence level of every interval. Default: 0.95
  TORCH_ARG(double, level) = 0.95;
  /// Patient-level bootstrap resamples for AUPRC, Brier and sensitivity intervals. Default: 500
  TORCH_ARG(int64_t, bootstrap) = 500;
  /// Specificity at which sensitivity is reported. Default: 0.9
  TORCH_ARG(double, specificity) = 0.9;
  /// Bins of the reliability curve. Default: 10
  TORCH_ARG(int64_t, calibration_bins) = 10;
  /// Label fractions of the training patients and the repeats (seeds) of each; distinct values.
  /// A fraction of a small training split can draw as few patients as another (each stratum
  /// gets at least one): the report then flags the rows, with the patients and records each
  /// repeat used. Default: 1%, 10%, 100%; seeds 0..4
  TORCH_ARG(std::vector<double>, fractions) = std::vector<double>({0.01, 0.1, 1.0});
  TORCH_ARG(std::vector<uint64_t>, fraction_seeds) = std::vector<uint64_t>({0, 1, 2, 3, 4});
  /// The linear probe (L2 grid, selection). Default: LinearProbeOptions()
  TORCH_ARG(LinearProbeOptions, probe) = LinearProbeOptions();
  /// Leave-one-site-out validation and the site audit when the cohort has >= 2 sites.
  /// Default: true
  TORCH_ARG(bool, site_analyses) = true;
  /// A PCA map of the test embeddings. Default: true
  TORCH_ARG(bool, embedding_map) = true;
  /// Retrieval examples (test queries and their nearest training records); the queries come from
  /// distinct test patients spread evenly over the test set (`example_queries`). Default: 3
  TORCH_ARG(int64_t, retrieval_examples) = 3;
  /// With survival follow-up: the horizons (in the cohort's time unit) at which the time-dependent
  /// AUROC of the probe's risk is reported (cumulative/dynamic, censoring-weighted:
  /// `time_dependent_auroc`). A horizon with no test case or no test control is reported as
  /// undefined (a warning), not dropped silently. Default: none
  TORCH_ARG(std::vector<double>, survival_horizons) = {};
  /// Subgroup fairness (`subgroup_fairness`): a group of a subgroup attribute is estimated with at
  /// least these many test positives and negatives (>= 2); smaller ones are named as too small in
  /// the report (and a warning). Default: 10 and 10
  TORCH_ARG(int64_t, subgroup_min_positives) = 10;
  TORCH_ARG(int64_t, subgroup_min_negatives) = 10;
  /// Threshold probabilities of the decision curves (in (0, 1), increasing); empty: 0.01 to 0.99
  /// by 0.01. Default: empty
  TORCH_ARG(std::vector<double>, decision_thresholds) = {};
};

/// What one model's evaluation measured (the same numbers go into the report).
struct ModelEvaluation {
  std::string model;
  /// Test-set probabilities of the positive class (same order as the test records).
  std::vector<double> test_scores;
  Interval auroc;
  Interval auprc;
  Interval brier;
  Interval sensitivity;
  Calibration calibration;
  /// Calibration slope, intercept and calibration-in-the-large of the test probabilities
  /// (`logistic_calibration`); `has_logistic_calibration` is false where the slope is undefined
  /// (a probability of exactly 0 or 1, outcomes that the probabilities separate perfectly), and
  /// `has_calibration_in_the_large` where even that is (a probability of 0 or 1). Each undefined
  /// one is named in a warning.
  LogisticCalibration logistic_calibration;
  bool has_logistic_calibration = false;
  /// Net benefit of the test probabilities against treat-all and treat-none (`decision_curve`).
  DecisionCurve decision_curve;
  bool has_calibration_in_the_large = false;
  /// Harrell's C on the test records (when the cohort has survival data), else -1.
  double c_index = -1;
  /// (horizon, time-dependent AUROC) for each of `EvaluationOptions::survival_horizons` where it
  /// is defined.
  std::vector<std::pair<double, double>> time_dependent_auroc;
  double l2 = 0;
  std::vector<LabelEfficiencyPoint> label_efficiency;
  SubgroupReport overall_subgroups;
  /// The operating threshold on the probability: the most permissive one with specificity >=
  /// `EvaluationOptions::specificity` on the validation patients (`threshold_at_specificity`);
  /// the subgroups' sensitivity and specificity are measured at it.
  double operating_threshold = 0.5;
  /// The fairness audit of each subgroup attribute (by name), with `analyses`.
  std::map<std::string, FairnessReport> fairness;
  /// Filled when the cohort has >= 2 sites and site analyses are on.
  bool has_site_analyses = false;
  ExternalValidationResult external;
  SiteAuditResult site_audit;
};

/// Writes a label-efficiency curve into the report: one row per fraction (`add_label_fraction`)
/// with the metric of each seed, the seeds, the training patients and records each seed used, the
/// patients and records available, whether the subset depended on the seed (`fixed_subset`: then
/// no interval) and the fractions that drew the same patients (`same_patients_as`). Seeds above
/// INT64_MAX are an error (report.json keeps int64 integers).
///
/// Example:
///   auto curve = medcl::eval::label_efficiency(z_tr, y_tr, patients_tr, z_va, y_va, z_te, y_te);
///   medcl::eval::record_label_efficiency(report, "death", "SimCLR", curve);
void record_label_efficiency(
    Report& report,
    const std::string& task,
    const std::string& model,
    const std::vector<LabelEfficiencyPoint>& curve,
    const std::string& metric = "AUROC");

/// A clinical evaluation of frozen embeddings on one cohort: the patient-level split (train /
/// validation / test, stratified by outcome, checked for leakage) is made once, so that every model
/// evaluated with `evaluate` (a pretrained encoder, raw features, a random encoder, a supervised
/// baseline) is measured on the same test patients, and `compare` can test differences with
/// DeLong's paired test. Everything measured is written into the `Report`.
///
/// Example:
///   medcl::eval::ClinicalEvaluation ev(cohort, medcl::eval::EvaluationOptions().task("death"));
///   medcl::Report report;
///   ev.describe_data(report);
///   auto a = ev.evaluate("SimCLR + patient pairing", z_pretrained, report);
///   auto b = ev.evaluate("raw features", x_raw, report, /*analyses=*/false);
///   ev.compare(a, b, report);
///   report.write("run/report");
class ClinicalEvaluation {
 public:
  ClinicalEvaluation(EvaluationCohort cohort, EvaluationOptions options = {});

  /// Writes the split rule, the per-split patient and record counts and the leakage check.
  void describe_data(Report& report) const;

  /// Evaluates one model's embeddings [N, D] of every record (row i = record i). With `analyses`
  /// (the default) also subgroups, site analyses, the 2-D map and retrieval examples; baselines
  /// usually need only the metrics and the label-efficiency curve.
  ModelEvaluation evaluate(
      const std::string& model,
      const at::Tensor& embeddings,
      Report& report,
      bool analyses = true) const;

  /// Records the test metrics of `r.test_scores` (probabilities of the positive class for this
  /// evaluation's test records): AUROC (DeLong), AUPRC, Brier and sensitivity at the chosen
  /// specificity (patient bootstrap), ECE with the reliability curve, ROC, C-index.
  void score_test(ModelEvaluation& r, Report& report) const;

  /// Fine-tunes `encoder` (a copy; the caller's stays untouched) with a linear head on the training
  /// patients' `inputs` (early stopping on the validation patients) and records its test metrics
  /// as model `model`. Rows of `inputs` are records, as the cohort's.
  template <class Encoder>
  ModelEvaluation evaluate_fine_tuned(
      const std::string& model,
      const Encoder& encoder,
      const at::Tensor& inputs,
      Report& report,
      const FineTuneOptions& options = {}) const {
    const auto n = static_cast<int64_t>(cohort_.labels.size());
    TORCH_CHECK(
        inputs.defined() && inputs.dim() >= 1 && inputs.size(0) == n,
        "ClinicalEvaluation::evaluate_fine_tuned: expected inputs with ",
        n,
        " rows, got ",
        inputs.defined() ? inputs.sizes() : at::IntArrayRef{});
    auto y = at::tensor(cohort_.labels, at::kLong);
    const auto tr = rows("train"), va = rows("val"), te = rows("test");
    FineTuneResult ft = fine_tune(
        encoder,
        inputs.index_select(0, tr),
        y.index_select(0, tr),
        inputs.index_select(0, va),
        y.index_select(0, va),
        inputs.index_select(0, te),
        2,
        options);
    ModelEvaluation r;
    r.model = model;
    r.test_scores = positive_class(ft);
    score_test(r, report);
    report.describe_model(
        model, "evaluation", fine_tune_protocol(options, ft.best_epoch, "pretrained encoder"));
    report.add_result(Result(
        options_.task(),
        model,
        "fine-tuning best epoch",
        Estimate(static_cast<double>(ft.best_epoch))));
    return r;
  }

  /// A supervised model trained from scratch on the labels: `make_encoder()` builds a fresh
  /// encoder (a ModuleHolder) that is fine-tuned with a linear head on `inputs` (early stopping on
  /// the validation patients) for the test metrics, and again from scratch on every label fraction
  /// and seed for the label-efficiency curve, so that it is compared with the frozen-encoder
  /// probes on equal labels.
  template <class MakeEncoder>
  ModelEvaluation evaluate_supervised(
      const std::string& model,
      MakeEncoder&& make_encoder,
      const at::Tensor& inputs,
      Report& report,
      const FineTuneOptions& options = {}) const {
    auto r = evaluate_fine_tuned(model, make_encoder(), inputs, report, options);
    {
      // Trained from scratch: no pretraining; the protocol says so.
      Json protocol = report.get("evaluation", "models").at(model).at("evaluation");
      protocol["protocol"] =
          "encoder trained from scratch with a linear head on the training patients' labels "
          "(AdamW, early stopping on the validation patients); again from scratch on every label "
          "fraction and seed";
      report.describe_model(model, "evaluation", protocol);
      report.set_model_pretraining(model, "");
    }
    auto y = at::tensor(cohort_.labels, at::kLong);
    const auto tr = rows("train"), va = rows("val"), te = rows("test");
    const auto x_va = inputs.index_select(0, va);
    const auto y_va = y.index_select(0, va);
    ProbeScorer scorer = [&](const at::Tensor& x_tr,
                             const at::Tensor& y_tr,
                             const at::Tensor& x_te) {
      return positive_class(fine_tune(make_encoder(), x_tr, y_tr, x_va, y_va, x_te, 2, options));
    };
    const auto& o = options_;
    r.label_efficiency = label_efficiency(
        inputs.index_select(0, tr),
        y.index_select(0, tr),
        pick(cohort_.patients, "train"),
        x_va,
        y_va,
        inputs.index_select(0, te),
        at::tensor(pick(cohort_.labels, "test"), at::kLong),
        LabelEfficiencyOptions()
            .fractions(o.fractions())
            .seeds(o.fraction_seeds())
            .level(o.level()),
        scorer);
    record_label_efficiency(report, o.task(), model, r.label_efficiency);
    return r;
  }

  /// The evaluation protocol of a fine-tuned model, as report.json's evaluation.models records it.
  Json fine_tune_protocol(const FineTuneOptions& o, int64_t best_epoch, const char* start) const;

  /// DeLong's paired test of two models evaluated on this cohort's test patients; the difference
  /// AUROC(a) - AUROC(b) with its interval and p-value go into the report.
  AurocComparison compare(const ModelEvaluation& a, const ModelEvaluation& b, Report& report) const;

  const PatientSplits& splits() const {
    return splits_;
  }
  const LeakageReport& leakage() const {
    return leakage_;
  }
  const EvaluationOptions& options() const {
    return options_;
  }

 private:
  /// The split, label-fraction and interval settings every model's protocol records.
  void common_protocol(Json& protocol) const;
  /// Probabilities of class 1 of a fine-tuned model.
  static std::vector<double> positive_class(const FineTuneResult& ft) {
    const at::Tensor p1 = ft.probabilities.select(1, 1).to(at::kDouble).contiguous();
    return std::vector<double>(p1.data_ptr<double>(), p1.data_ptr<double>() + p1.numel());
  }
  at::Tensor rows(const char* split) const {
    return at::tensor(splits_.indices[splits_.at(split)], at::kLong);
  }
  template <class T>
  std::vector<T> pick(const std::vector<T>& v, const char* split) const {
    std::vector<T> out;
    for (int64_t i : splits_.indices[splits_.at(split)]) {
      out.push_back(v[static_cast<size_t>(i)]);
    }
    return out;
  }
  std::string site_name(int64_t id) const {
    if (id >= 0 && static_cast<size_t>(id) < cohort_.site_names.size()) {
      return cohort_.site_names[static_cast<size_t>(id)];
    }
    return "site " + std::to_string(id);
  }
  static std::string fixed(double v, int digits) {
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(digits);
    s << v;
    return s.str();
  }
  static std::string slug(const std::string& s) {
    std::string out;
    for (char ch : s) {
      out +=
          std::isalnum(static_cast<unsigned char>(ch)) ? static_cast<char>(std::tolower(ch)) : '_';
    }
    return out;
  }

  EvaluationCohort cohort_;
  EvaluationOptions options_;
  PatientSplits splits_;
  LeakageReport leakage_;
};

} // namespace eval
} // namespace medcl
