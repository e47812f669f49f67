#pragma once

/// \file
/// The clinical evaluation of frozen embeddings, from patient-level splits to a filled report:
/// linear probe with every metric and its interval, calibration, ROC, label efficiency, subgroups,
/// external validation, site audit, 2-D map and retrieval examples.

#include <medcl/core/checks.h>
#include <medcl/data/splits.h>
#include <medcl/eval/audits.h>
#include <medcl/eval/fine_tune.h>
#include <medcl/eval/label_fractions.h>
#include <medcl/eval/linear_probe.h>
#include <medcl/eval/metrics.h>
#include <medcl/eval/report.h>
#include <medcl/eval/retrieval.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
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
  /// Label fractions of the training patients and the repeats (seeds) of each. Default: 1%, 10%,
  /// 100%; seeds 0..4
  TORCH_ARG(std::vector<double>, fractions) = std::vector<double>({0.01, 0.1, 1.0});
  TORCH_ARG(std::vector<uint64_t>, fraction_seeds) = std::vector<uint64_t>({0, 1, 2, 3, 4});
  /// The linear probe (L2 grid, selection). Default: LinearProbeOptions()
  TORCH_ARG(LinearProbeOptions, probe) = LinearProbeOptions();
  /// Leave-one-site-out validation and the site audit when the cohort has >= 2 sites.
  /// Default: true
  TORCH_ARG(bool, site_analyses) = true;
  /// A PCA map of the test embeddings. Default: true
  TORCH_ARG(bool, embedding_map) = true;
  /// Retrieval examples (test queries and their nearest training records). Default: 3
  TORCH_ARG(int64_t, retrieval_examples) = 3;
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
  /// Harrell's C on the test records (when the cohort has survival data), else -1.
  double c_index = -1;
  double l2 = 0;
  std::vector<LabelEfficiencyPoint> label_efficiency;
  SubgroupReport overall_subgroups;
  /// Filled when the cohort has >= 2 sites and site analyses are on.
  bool has_site_analyses = false;
  ExternalValidationResult external;
  SiteAuditResult site_audit;
};

/// Points (FPR, TPR) of the ROC curve over distinct thresholds, from (0, 0) to (1, 1).
inline std::pair<std::vector<double>, std::vector<double>> roc_curve(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels) {
  TORCH_CHECK(
      scores.size() == labels.size(),
      "roc_curve: ",
      scores.size(),
      " scores but ",
      labels.size(),
      " labels");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  const auto pos = static_cast<double>(std::count(labels.begin(), labels.end(), 1));
  const auto neg = static_cast<double>(labels.size()) - pos;
  TORCH_CHECK(pos > 0 && neg > 0, "roc_curve: needs both classes, got ", pos, " positive(s)");
  std::vector<double> fpr{0.0}, tpr{0.0};
  double tp = 0, fp = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    (labels[order[i]] == 1 ? tp : fp) += 1;
    if (i + 1 == order.size() || scores[order[i + 1]] != scores[order[i]]) {
      fpr.push_back(fp / neg);
      tpr.push_back(tp / pos);
    }
  }
  return {fpr, tpr};
}

/// Percentile interval of `statistic` over `resamples` bootstrap resamples of patients (every
/// record of a drawn patient comes along, so correlated records are not treated as independent).
/// Resamples whose statistic throws (e.g. one class only) are skipped; at least half must succeed.
template <class Statistic>
Interval patient_bootstrap(
    Statistic&& statistic,
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& patients,
    int64_t resamples,
    uint64_t seed,
    double level) {
  constexpr const char* fn = "patient_bootstrap";
  TORCH_CHECK(resamples >= 10, fn, ": resamples must be >= 10, got ", resamples);
  TORCH_CHECK(level > 0 && level < 1, fn, ": level must be in (0, 1), got ", level);
  TORCH_CHECK(
      scores.size() == labels.size() && labels.size() == patients.size(),
      fn,
      ": scores, labels and patients differ in length (",
      scores.size(),
      ", ",
      labels.size(),
      ", ",
      patients.size(),
      ")");
  std::map<int64_t, std::vector<size_t>> by_patient;
  for (size_t i = 0; i < patients.size(); ++i) {
    by_patient[patients[i]].push_back(i);
  }
  std::vector<const std::vector<size_t>*> groups;
  for (const auto& kv : by_patient) {
    groups.push_back(&kv.second);
  }
  Interval out;
  out.estimate = statistic(scores, labels);
  out.level = level;
  out.method = "patient bootstrap (" + std::to_string(resamples) + ")";
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, groups.size() - 1);
  std::vector<double> values;
  std::vector<double> s;
  std::vector<int64_t> l;
  for (int64_t r = 0; r < resamples; ++r) {
    s.clear();
    l.clear();
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t i : *groups[pick(rng)]) {
        s.push_back(scores[i]);
        l.push_back(labels[i]);
      }
    }
    try {
      values.push_back(statistic(s, l));
    } catch (const c10::Error&) {
      // A resample with one class has no AUPRC: it is skipped, and counted below.
    }
  }
  TORCH_CHECK(
      static_cast<int64_t>(values.size()) * 2 >= resamples,
      fn,
      ": only ",
      values.size(),
      " of ",
      resamples,
      " resamples had a defined statistic (too few patients of one class)");
  std::sort(values.begin(), values.end());
  auto quantile = [&](double q) {
    const double pos = q * static_cast<double>(values.size() - 1);
    const auto lo = static_cast<size_t>(std::floor(pos));
    const auto hi = std::min(lo + 1, values.size() - 1);
    return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
  };
  out.lower = std::min(out.estimate, quantile((1 - level) / 2));
  out.upper = std::max(out.estimate, quantile(1 - (1 - level) / 2));
  return out;
}

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
  ClinicalEvaluation(EvaluationCohort cohort, EvaluationOptions options = {})
      : cohort_(std::move(cohort)), options_(std::move(options)) {
    constexpr const char* fn = "ClinicalEvaluation";
    const auto& c = cohort_;
    const auto& o = options_;
    const size_t n = c.labels.size();
    TORCH_CHECK(n > 0, fn, ": the cohort has no records");
    TORCH_CHECK(
        c.patients.size() == n, fn, ": ", n, " labels but ", c.patients.size(), " patient ids");
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(
          c.labels[i] == 0 || c.labels[i] == 1,
          fn,
          ": labels must be 0 or 1, got ",
          c.labels[i],
          " at record ",
          i);
    }
    TORCH_CHECK(
        c.sites.empty() || c.sites.size() == n,
        fn,
        ": ",
        n,
        " records but ",
        c.sites.size(),
        " sites");
    TORCH_CHECK(
        c.times.size() == c.events.size() && (c.times.empty() || c.times.size() == n),
        fn,
        ": times and events must both be empty or have one entry per record (",
        n,
        "), got ",
        c.times.size(),
        " and ",
        c.events.size());
    TORCH_CHECK(c.label_names.size() == 2, fn, ": label_names must hold two names");
    for (const auto& a : c.subgroups) {
      TORCH_CHECK(
          a.groups.size() == n,
          fn,
          ": subgroup attribute '",
          a.name,
          "' has ",
          a.groups.size(),
          " entries for ",
          n,
          " records");
    }
    TORCH_CHECK(
        o.validation_fraction() > 0 && o.test_fraction() > 0 &&
            o.validation_fraction() + o.test_fraction() < 1,
        fn,
        ": validation_fraction and test_fraction must be > 0 with a sum below 1, got ",
        o.validation_fraction(),
        " and ",
        o.test_fraction());
    splits_ = patient_split(
        c.patients,
        c.labels,
        {{"train", 1.0 - o.validation_fraction() - o.test_fraction()},
         {"val", o.validation_fraction()},
         {"test", o.test_fraction()}},
        o.seed());
    SampleKeys keys;
    keys.patient = at::tensor(c.patients, at::kLong);
    leakage_ = check_leakage(splits_, keys);
    require_no_leakage(leakage_);
    for (const char* s : {"train", "val", "test"}) {
      const auto& idx = splits_.indices[splits_.at(s)];
      int64_t pos = 0;
      for (int64_t i : idx) {
        pos += c.labels[static_cast<size_t>(i)];
      }
      TORCH_CHECK(
          pos > 0 && pos < static_cast<int64_t>(idx.size()),
          fn,
          ": the ",
          s,
          " split holds ",
          pos,
          " positive(s) among ",
          idx.size(),
          " records; every split needs both classes (more patients, or other fractions)");
    }
  }

  /// Writes the split rule, the per-split patient and record counts and the leakage check.
  void describe_data(Report& report) const {
    std::ostringstream rule;
    rule << "patient-level, stratified by " << options_.task()
         << " (each patient's majority label); "
         << "train/validation/test = "
         << 1.0 - options_.validation_fraction() - options_.test_fraction() << "/"
         << options_.validation_fraction() << "/" << options_.test_fraction()
         << " of patients, seed " << options_.seed();
    report.set_split_rule(rule.str());
    for (size_t s = 0; s < splits_.names.size(); ++s) {
      report.add_split(
          splits_.names[s],
          static_cast<int64_t>(splits_.patients[s].size()),
          static_cast<int64_t>(splits_.indices[s].size()));
    }
    report.set_leakage_check(leakage_.clean(), leakage_.describe());
  }

  /// Evaluates one model's embeddings [N, D] of every record (row i = record i). With `analyses`
  /// (the default) also subgroups, site analyses, the 2-D map and retrieval examples; baselines
  /// usually need only the metrics and the label-efficiency curve.
  ModelEvaluation evaluate(
      const std::string& model,
      const at::Tensor& embeddings,
      Report& report,
      bool analyses = true) const {
    constexpr const char* fn = "ClinicalEvaluation::evaluate";
    const auto n = static_cast<int64_t>(cohort_.labels.size());
    TORCH_CHECK(!model.empty(), fn, ": the model needs a name");
    TORCH_CHECK(
        embeddings.defined() && embeddings.dim() == 2 && embeddings.size(0) == n,
        fn,
        ": expected embeddings [",
        n,
        ", D], got ",
        embeddings.defined() ? embeddings.sizes() : at::IntArrayRef{});
    auto x = embeddings.detach().to(at::kCPU, at::kDouble).contiguous();
    TORCH_CHECK(
        medcl::detail::all_finite(x), fn, ": the embeddings of '", model, "' hold NaN or Inf");
    const auto& o = options_;
    const std::string& task = o.task();
    const auto tr = rows("train"), va = rows("val"), te = rows("test");
    auto y = at::tensor(cohort_.labels, at::kLong);
    auto xtr = x.index_select(0, tr), xva = x.index_select(0, va), xte = x.index_select(0, te);
    auto ytr = y.index_select(0, tr), yva = y.index_select(0, va);
    const auto yte = pick(cohort_.labels, "test");

    ModelEvaluation r;
    r.model = model;
    auto probe = fit_linear_probe(xtr, ytr, xva, yva, 2, o.probe());
    r.l2 = probe.l2;
    r.test_scores = probe.scores(xte);
    const auto& p = r.test_scores;
    score_test(r, report);
    report.add_result(
        Result(task, model, "probe L2", Estimate(r.l2)).detail("chosen on validation"));

    r.label_efficiency = label_efficiency(
        xtr,
        ytr,
        pick(cohort_.patients, "train"),
        xva,
        yva,
        xte,
        at::tensor(yte, at::kLong),
        LabelEfficiencyOptions()
            .fractions(o.fractions())
            .seeds(o.fraction_seeds())
            .level(o.level())
            .probe(o.probe()));
    for (const auto& pt : r.label_efficiency) {
      report.add_label_fraction(task, model, "AUROC", pt.fraction, pt.auroc);
    }
    if (!analyses) {
      return r;
    }

    for (const auto& a : cohort_.subgroups) {
      // Only groups with test records are measured (a group can be absent from the test split).
      const auto groups = pick(a.groups, "test");
      std::map<int64_t, int64_t> remap;
      std::vector<std::string> names;
      for (int64_t gi : groups) {
        TORCH_CHECK(
            gi >= 0 && gi < static_cast<int64_t>(a.group_names.size()),
            "ClinicalEvaluation::evaluate: subgroup attribute '",
            a.name,
            "' has group index ",
            gi,
            " but ",
            a.group_names.size(),
            " group names");
        if (remap.emplace(gi, static_cast<int64_t>(remap.size())).second) {
          names.push_back(a.group_names[static_cast<size_t>(gi)]);
        }
      }
      std::vector<int64_t> local;
      for (int64_t gi : groups) {
        local.push_back(remap.at(gi));
      }
      auto sg = subgroup_metrics(p, yte, local, names, o.level());
      for (const auto& g : sg.groups) {
        if (g.auroc_defined) {
          report.add_result(Result(task, model, "AUROC", Estimate(g.auroc))
                                .n(g.n)
                                .subgroup_attribute(a.name)
                                .subgroup(g.name));
        }
        report.add_result(Result(task, model, "Brier score", Estimate(g.brier))
                              .n(g.n)
                              .subgroup_attribute(a.name)
                              .subgroup(g.name));
      }
    }
    std::set<int64_t> site_set(cohort_.sites.begin(), cohort_.sites.end());
    if (o.site_analyses() && site_set.size() >= 2) {
      r.has_site_analyses = true;
      r.external = external_validation(
          x,
          cohort_.labels,
          cohort_.sites,
          cohort_.patients,
          ExternalValidationOptions().probe(o.probe()).seed(o.seed()).level(o.level()).bins(
              o.calibration_bins()));
      report.add_result(Result(task, model, "AUROC", Estimate(r.external.internal.auroc))
                            .n(r.external.internal.test_records)
                            .cohort("internal (random patient split)"));
      for (const auto& s : r.external.sites) {
        if (s.auroc_defined) {
          report.add_result(Result(task, model, "AUROC", Estimate(s.auroc))
                                .n(s.test_records)
                                .cohort(site_name(s.site) + " held out"));
        }
        report.add_result(Result(task, model, "ECE", Estimate(s.ece))
                              .n(s.test_records)
                              .cohort(site_name(s.site) + " held out"));
      }
      r.site_audit =
          eval::site_audit(x, cohort_.sites, cohort_.patients, SiteAuditOptions().seed(o.seed()));
      auto j = Json::object();
      j["model"] = model;
      j["question"] = "can a linear probe recover the site from the embedding? (confounding)";
      j["balanced_accuracy"] = r.site_audit.balanced_accuracy;
      j["chance"] = r.site_audit.chance;
      j["macro_auroc"] = r.site_audit.macro_auroc;
      j["per_site_auroc"] = Json::array_of(r.site_audit.per_site_auroc);
      j["folds"] = r.site_audit.folds;
      j["level"] = r.site_audit.level;
      j["verdict"] = r.site_audit.verdict;
      report.add_audit("site audit: " + model, j);
    }
    if (o.embedding_map()) {
      auto pca = pca_2d(xte);
      std::vector<std::string> label_text, site_text;
      for (int64_t l : yte) {
        label_text.push_back(cohort_.label_names[static_cast<size_t>(l)]);
      }
      if (!cohort_.sites.empty()) {
        for (int64_t s : pick(cohort_.sites, "test")) {
          site_text.push_back(site_name(s));
        }
      }
      report.add_embedding_map(slug(model) + "_pca", pca.pc1, pca.pc2, label_text, site_text);
    }
    if (o.retrieval_examples() > 0) {
      const int64_t q = std::min<int64_t>(o.retrieval_examples(), te.size(0));
      auto nb = nearest_neighbours(xte.slice(0, 0, q), xtr, 5);
      const auto train_rows = splits_.indices[splits_.at("train")];
      const auto test_rows = splits_.indices[splits_.at("test")];
      for (int64_t i = 0; i < q; ++i) {
        auto j = Json::object();
        const auto qi = static_cast<size_t>(test_rows[static_cast<size_t>(i)]);
        j["model"] = model;
        j["query_record"] = static_cast<int64_t>(qi);
        j["query_patient"] = cohort_.patients[qi];
        j["query_label"] = cohort_.label_names[static_cast<size_t>(cohort_.labels[qi])];
        auto list = Json::array();
        for (int64_t k = 0; k < nb.indices.size(1); ++k) {
          const auto ti = static_cast<size_t>(
              train_rows[static_cast<size_t>(nb.indices[i][k].item<int64_t>())]);
          auto e = Json::object();
          e["record"] = static_cast<int64_t>(ti);
          e["patient"] = cohort_.patients[ti];
          e["label"] = cohort_.label_names[static_cast<size_t>(cohort_.labels[ti])];
          e["cosine"] = nb.similarities[i][k].item<double>();
          list.push_back(e);
        }
        j["neighbours"] = list;
        report.add_retrieval_example(j);
      }
    }
    return r;
  }

  /// Records the test metrics of `r.test_scores` (probabilities of the positive class for this
  /// evaluation's test records): AUROC (DeLong), AUPRC, Brier and sensitivity at the chosen
  /// specificity (patient bootstrap), ECE with the reliability curve, ROC, C-index.
  void score_test(ModelEvaluation& r, Report& report) const {
    const auto& o = options_;
    const std::string& task = o.task();
    const auto yte = pick(cohort_.labels, "test");
    const auto pte = pick(cohort_.patients, "test");
    const auto& p = r.test_scores;
    const std::string& model = r.model;
    TORCH_CHECK(
        p.size() == yte.size(),
        "ClinicalEvaluation: expected ",
        yte.size(),
        " test scores, got ",
        p.size());
    for (double v : p) {
      TORCH_CHECK(
          std::isfinite(v) && v >= 0 && v <= 1,
          "ClinicalEvaluation: the test scores of '",
          model,
          "' must be probabilities in [0, 1], got ",
          v);
    }
    r.auroc = auroc_delong(p, yte, o.level());
    r.auprc = patient_bootstrap(
        [](const std::vector<double>& s, const std::vector<int64_t>& l) {
          return eval::auprc(s, l);
        },
        p,
        yte,
        pte,
        o.bootstrap(),
        o.seed(),
        o.level());
    r.brier = patient_bootstrap(
        [](const std::vector<double>& s, const std::vector<int64_t>& l) {
          return brier_score(s, l);
        },
        p,
        yte,
        pte,
        o.bootstrap(),
        o.seed() + 1,
        o.level());
    const double spec = o.specificity();
    r.sensitivity = patient_bootstrap(
        [spec](const std::vector<double>& s, const std::vector<int64_t>& l) {
          return sensitivity_at_specificity(s, l, spec);
        },
        p,
        yte,
        pte,
        o.bootstrap(),
        o.seed() + 2,
        o.level());
    r.calibration = calibration(p, yte, o.calibration_bins());
    const auto n_test = static_cast<int64_t>(yte.size());
    const auto n_patients = static_cast<int64_t>(std::set<int64_t>(pte.begin(), pte.end()).size());
    auto result = [&](const std::string& metric, const Estimate& value) {
      return Result(task, model, metric, value).n(n_test).patients(n_patients);
    };
    report.add_result(result("AUROC", Estimate(r.auroc)));
    report.add_result(result("AUPRC", Estimate(r.auprc)));
    report.add_result(result("Brier score", Estimate(r.brier)));
    report.add_result(
        result("sensitivity at specificity " + fixed(spec, 2), Estimate(r.sensitivity)));
    report.add_result(result("ECE", Estimate(r.calibration.ece)));
    report.add_calibration(task, model, r.calibration);
    auto roc = roc_curve(p, yte);
    report.add_roc_curve(task, model, roc.first, roc.second);
    if (!cohort_.times.empty()) {
      r.c_index = eval::c_index(pick(cohort_.times, "test"), pick(cohort_.events, "test"), p);
      report.add_result(result("C-index", Estimate(r.c_index)).detail("risk = probe probability"));
    }
  }

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
    for (const auto& pt : r.label_efficiency) {
      report.add_label_fraction(o.task(), model, "AUROC", pt.fraction, pt.auroc);
    }
    return r;
  }

  /// DeLong's paired test of two models evaluated on this cohort's test patients; the difference
  /// AUROC(a) - AUROC(b) with its interval and p-value go into the report.
  AurocComparison compare(const ModelEvaluation& a, const ModelEvaluation& b, Report& report)
      const {
    const auto yte = pick(cohort_.labels, "test");
    TORCH_CHECK(
        a.test_scores.size() == yte.size() && b.test_scores.size() == yte.size(),
        "ClinicalEvaluation::compare: both models must come from this evaluation's evaluate()");
    auto c = compare_auroc_delong(a.test_scores, b.test_scores, yte, options_.level());
    report.add_result(Result(options_.task(), a.model, "AUROC difference", Estimate(c.difference))
                          .reference_model(b.model)
                          .detail("paired DeLong test"));
    report.add_result(Result(options_.task(), a.model, "p-value", Estimate(c.p_value))
                          .reference_model(b.model)
                          .detail("paired DeLong test of the AUROC difference"));
    return c;
  }

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

/// Records the representation's alignment and uniformity (Wang & Isola 2020) of two views'
/// embeddings and, when `ids` are given, Recall@K of retrieving the other view (query: view 0,
/// gallery: view 1).
inline void record_representation(
    Report& report,
    const std::string& task,
    const std::string& model,
    const at::Tensor& view0,
    const at::Tensor& view1,
    const std::vector<int64_t>& ks = {1, 5, 10}) {
  const auto n = view0.size(0);
  report.add_result(Result(task, model, "alignment", Estimate(alignment(view0, view1)))
                        .n(n)
                        .detail("lower: positives closer"));
  report.add_result(Result(task, model, "uniformity", Estimate(uniformity(view0)))
                        .n(n)
                        .detail("lower: more uniform"));
  auto ids = at::arange(view0.size(0), at::kLong);
  auto recall = recall_at_k(view0, view1, ids, ids, ks);
  for (size_t i = 0; i < ks.size(); ++i) {
    report.add_result(
        Result(task, model, "Recall@" + std::to_string(ks[i]), Estimate(recall[i])).n(n));
  }
  report.add_result(
      Result(task, model, "median rank", Estimate(median_rank(view0, view1, ids, ids))).n(n));
}

/// Records an invariance audit: per augmentation the embedding's stability (mean cosine) against
/// the stability across a change of label, and which augmentations are flagged.
inline void record_invariance_audit(
    Report& report,
    const std::string& model,
    const InvarianceAuditResult& audit) {
  auto j = Json::object();
  j["model"] = model;
  j["question"] =
      "does the embedding move less under each augmentation than under a change of label?";
  j["same_label_cosine"] = audit.same_label_cosine;
  j["different_label_cosine"] = audit.different_label_cosine;
  j["same_label_pairs"] = audit.same_label_pairs;
  j["different_label_pairs"] = audit.different_label_pairs;
  j["random_pair_cosine"] = audit.random_pair_cosine;
  auto list = Json::array();
  for (const auto& e : audit.transforms) {
    auto t = Json::object();
    t["transform"] = e.transform;
    t["mean_cosine"] = e.mean_cosine;
    t["std_cosine"] = e.std_cosine;
    t["samples"] = e.samples;
    t["margin_over_label_change"] = e.margin;
    t["flagged"] = e.flagged;
    list.push_back(t);
  }
  j["transforms"] = list;
  auto flagged = Json::array();
  for (const auto& f : audit.flagged) {
    flagged.push_back(f);
  }
  j["flagged"] = flagged;
  report.add_audit("invariance audit: " + model, j);
}

} // namespace eval
} // namespace medcl
