// The clinical evaluation's non-template members and the recorders.
// Interface: include/medcl/eval/clinical_evaluation.h and recorders.h.

#include <medcl/eval/evaluation.h>
#include <medcl/eval/retrieval.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {

ClinicalEvaluation::ClinicalEvaluation(EvaluationCohort cohort, EvaluationOptions options)
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
  TORCH_CHECK(
      o.survival_horizons().empty() || !c.times.empty(),
      fn,
      ": survival_horizons are given but the cohort has no survival follow-up (times, events)");
  for (double h : o.survival_horizons()) {
    TORCH_CHECK(
        std::isfinite(h) && h > 0, fn, ": survival horizons must be finite and > 0, got ", h);
  }
  TORCH_CHECK(
      o.subgroup_min_positives() >= 2 && o.subgroup_min_negatives() >= 2,
      fn,
      ": subgroup_min_positives and subgroup_min_negatives must be >= 2, got ",
      o.subgroup_min_positives(),
      " and ",
      o.subgroup_min_negatives());
  TORCH_CHECK(
      o.specificity() >= 0 && o.specificity() <= 1,
      fn,
      ": specificity must be in [0, 1], got ",
      o.specificity());
  if (!o.decision_thresholds().empty()) {
    decision_curve({0.5, 0.5}, {0, 1}, o.decision_thresholds()); // checks them, naming the value
  }
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
    // The test split's AUROC interval (DeLong) needs two records of each class.
    const int64_t need = std::string(s) == "test" ? 2 : 1;
    TORCH_CHECK(
        pos >= need && static_cast<int64_t>(idx.size()) - pos >= need,
        fn,
        ": the ",
        s,
        " split holds ",
        pos,
        " positive(s) among ",
        idx.size(),
        " records; every split needs both classes, the test split two records of each (more "
        "patients, or other fractions)");
  }
}

void ClinicalEvaluation::common_protocol(Json& protocol) const {
  const auto& o = options_;
  protocol["split_seed"] = static_cast<int64_t>(o.seed());
  protocol["validation_fraction"] = o.validation_fraction();
  protocol["test_fraction"] = o.test_fraction();
  protocol["label_fractions"] = Json::array_of(o.fractions());
  std::vector<int64_t> seeds;
  for (uint64_t seed : o.fraction_seeds()) {
    seeds.push_back(static_cast<int64_t>(seed));
  }
  protocol["label_fraction_seeds"] = Json::array_of(seeds);
  protocol["bootstrap_resamples"] = o.bootstrap();
  protocol["confidence_level"] = o.level();
}

Json ClinicalEvaluation::fine_tune_protocol(
    const FineTuneOptions& f,
    int64_t best_epoch,
    const char* start) const {
  Json protocol = Json::object();
  protocol["protocol"] = std::string("fine-tuning: ") + start +
      " and a linear head trained on the training patients' labels (AdamW), the epoch chosen "
      "on the validation patients";
  protocol["epochs"] = f.epochs();
  protocol["best_epoch"] = best_epoch;
  protocol["batch_size"] = f.batch_size();
  protocol["encoder_lr"] = f.encoder_lr();
  protocol["head_lr"] = f.head_lr();
  protocol["weight_decay"] = f.weight_decay();
  protocol["seed"] = static_cast<int64_t>(f.seed());
  common_protocol(protocol);
  return protocol;
}

void ClinicalEvaluation::describe_data(Report& report) const {
  std::ostringstream rule;
  rule << "patient-level, stratified by " << options_.task() << " (each patient's majority label); "
       << "train/validation/test = "
       << 1.0 - options_.validation_fraction() - options_.test_fraction() << "/"
       << options_.validation_fraction() << "/" << options_.test_fraction() << " of patients, seed "
       << options_.seed();
  report.set_split_rule(rule.str());
  for (size_t s = 0; s < splits_.names.size(); ++s) {
    report.add_split(
        splits_.names[s],
        static_cast<int64_t>(splits_.patients[s].size()),
        static_cast<int64_t>(splits_.indices[s].size()));
  }
  report.set_leakage_check(leakage_.clean(), leakage_.describe());
}

ModelEvaluation ClinicalEvaluation::evaluate(
    const std::string& model,
    const at::Tensor& embeddings,
    Report& report,
    bool analyses) const {
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
  {
    // One operating threshold for the test and its subgroups, chosen on the validation patients.
    const auto yva_v = pick(cohort_.labels, "val");
    r.operating_threshold = threshold_at_specificity(probe.scores(xva), yva_v, o.specificity());
  }
  const auto& p = r.test_scores;
  score_test(r, report);
  report.add_result(Result(task, model, "probe L2", Estimate(r.l2)).detail("chosen on validation"));
  {
    Json protocol = Json::object();
    protocol["protocol"] =
        "linear probe on frozen embeddings: logistic regression on the training patients, L2 "
        "chosen on the validation patients";
    protocol["embedding_dim"] = x.size(1);
    protocol["l2_grid"] = Json::array_of(o.probe().l2_grid());
    protocol["selection"] = o.probe().selection() == ProbeSelection::LogLoss
        ? "lowest validation log-loss"
        : "highest validation AUROC";
    protocol["l2"] = r.l2;
    protocol["max_iter"] = o.probe().max_iter();
    common_protocol(protocol);
    report.describe_model(model, "evaluation", std::move(protocol));
  }

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
  record_label_efficiency(report, task, model, r.label_efficiency);
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
    // The fairness audit over every named group (those without test records are named as too
    // small), at the threshold chosen on the validation patients.
    auto audit = subgroup_fairness(
        p,
        yte,
        groups,
        a.group_names,
        pick(cohort_.patients, "test"),
        FairnessOptions()
            .threshold(r.operating_threshold)
            .min_positives(o.subgroup_min_positives())
            .min_negatives(o.subgroup_min_negatives())
            .bootstrap(o.bootstrap())
            .seed(o.seed())
            .level(o.level()));
    const std::string at_threshold = "at threshold " + fixed(r.operating_threshold, 3) +
        " (specificity " + fixed(o.specificity(), 2) + " on validation)";
    std::string too_small; // one warning per model and attribute, naming every such group
    for (const auto& g : audit.groups) {
      if (!g.estimable) {
        too_small += (too_small.empty() ? "" : "; ") + g.name + " (" + std::to_string(g.positives) +
            " positive(s), " + std::to_string(g.n - g.positives) + " negative(s))";
        continue;
      }
      auto add = [&](const char* metric, const Interval& i, const std::string& detail) {
        report.add_result(Result(task, model, metric, Estimate(i))
                              .n(g.n)
                              .patients(g.patients)
                              .subgroup_attribute(a.name)
                              .subgroup(g.name)
                              .detail(detail));
      };
      if (g.has_calibration) {
        add("calibration slope", g.calibration.slope, "");
        add("calibration intercept", g.calibration.intercept, "");
        add("calibration-in-the-large", g.calibration.in_the_large, "");
      }
      add("sensitivity", g.sensitivity, at_threshold);
      add("specificity", g.specificity, at_threshold);
    }
    if (!too_small.empty()) {
      TORCH_WARN(
          fn,
          ": '",
          model,
          "', ",
          a.name,
          ": too small to estimate (at least ",
          o.subgroup_min_positives(),
          " positives and ",
          o.subgroup_min_negatives(),
          " negatives needed): ",
          too_small,
          "; named in the report");
    }
    report.add_fairness(
        task,
        model,
        a.name,
        audit,
        "the most permissive with specificity ≥ " + fixed(o.specificity(), 2) +
            " on the validation patients");
    r.fairness.emplace(a.name, std::move(audit));
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
    auto axis = [&](size_t k) {
      const double share =
          k < pca.explained_variance_ratio.size() ? 100 * pca.explained_variance_ratio[k] : 0;
      return "PC" + std::to_string(k + 1) + " (" + fixed(share, 1) + "% of variance)";
    };
    report.add_embedding_map(
        slug(model) + "_pca",
        pca.pc1,
        pca.pc2,
        label_text,
        site_text,
        "PCA of the test embeddings of " + model,
        axis(0),
        axis(1));
  }
  if (o.retrieval_examples() > 0) {
    // Queries from distinct test patients spread over the test set (not its first records, which
    // are often one patient's).
    const auto queries = example_queries(pick(cohort_.patients, "test"), o.retrieval_examples());
    const auto q = static_cast<int64_t>(queries.size());
    auto nb = nearest_neighbours(xte.index_select(0, at::tensor(queries, at::kLong)), xtr, 5);
    const auto train_rows = splits_.indices[splits_.at("train")];
    const auto test_rows = splits_.indices[splits_.at("test")];
    for (int64_t i = 0; i < q; ++i) {
      auto j = Json::object();
      const auto qi =
          static_cast<size_t>(test_rows[static_cast<size_t>(queries[static_cast<size_t>(i)])]);
      j["model"] = model;
      j["query_record"] = static_cast<int64_t>(qi);
      j["query_patient"] = cohort_.patients[qi];
      j["query_label"] = cohort_.label_names[static_cast<size_t>(cohort_.labels[qi])];
      auto list = Json::array();
      for (int64_t k = 0; k < nb.indices.size(1); ++k) {
        const auto ti =
            static_cast<size_t>(train_rows[static_cast<size_t>(nb.indices[i][k].item<int64_t>())]);
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

void ClinicalEvaluation::score_test(ModelEvaluation& r, Report& report) const {
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
      [](const std::vector<double>& s, const std::vector<int64_t>& l) { return eval::auprc(s, l); },
      p,
      yte,
      pte,
      o.bootstrap(),
      o.seed(),
      o.level());
  r.brier = patient_bootstrap(
      [](const std::vector<double>& s, const std::vector<int64_t>& l) { return brier_score(s, l); },
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
  try {
    r.logistic_calibration.in_the_large = calibration_in_the_large(p, yte, o.level());
    r.has_calibration_in_the_large = true;
    r.logistic_calibration = logistic_calibration(p, yte, o.level());
    r.has_logistic_calibration = true;
  } catch (const c10::Error& e) {
    TORCH_WARN(
        "ClinicalEvaluation: ",
        model,
        ": no calibration ",
        r.has_calibration_in_the_large ? "slope or intercept" : "slope, intercept or in-the-large",
        " (",
        e.what_without_backtrace(),
        ")");
  }
  if (r.has_logistic_calibration) {
    report.add_result(result("calibration slope", Estimate(r.logistic_calibration.slope))
                          .detail("y ~ a + b logit(p), Wald interval"));
    report.add_result(result("calibration intercept", Estimate(r.logistic_calibration.intercept))
                          .detail("y ~ a + b logit(p), Wald interval"));
  }
  if (r.has_calibration_in_the_large) {
    report.add_result(
        result("calibration-in-the-large", Estimate(r.logistic_calibration.in_the_large))
            .detail("y ~ a + offset(logit(p)), Wald interval"));
  }
  if (r.has_logistic_calibration) {
    report.add_calibration(task, model, r.calibration, r.logistic_calibration);
  } else {
    report.add_calibration(task, model, r.calibration);
  }
  r.decision_curve = decision_curve(p, yte, o.decision_thresholds());
  report.add_decision_curve(task, model, r.decision_curve);
  auto roc = roc_curve(p, yte);
  report.add_roc_curve(task, model, roc.first, roc.second);
  if (!cohort_.times.empty()) {
    r.c_index = eval::c_index(pick(cohort_.times, "test"), pick(cohort_.events, "test"), p);
    report.add_result(result("C-index", Estimate(r.c_index)).detail("risk = probe probability"));
    const auto t_test = pick(cohort_.times, "test");
    const auto e_test = pick(cohort_.events, "test");
    for (double h : o.survival_horizons()) {
      try {
        const double auc = time_dependent_auroc(t_test, e_test, p, h);
        r.time_dependent_auroc.emplace_back(h, auc);
        report.add_result(result("time-dependent AUROC", Estimate(auc))
                              .detail(
                                  "at horizon " + fixed(h, 3) +
                                  " (cumulative/dynamic, Kaplan-Meier censoring weights; risk = "
                                  "probe probability)"));
      } catch (const c10::Error& e) {
        TORCH_WARN(
            "ClinicalEvaluation: ",
            model,
            ": no time-dependent AUROC at horizon ",
            h,
            " (",
            e.what_without_backtrace(),
            ")");
      }
    }
  }
}

AurocComparison ClinicalEvaluation::compare(
    const ModelEvaluation& a,
    const ModelEvaluation& b,
    Report& report) const {
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

void record_label_efficiency(
    Report& report,
    const std::string& task,
    const std::string& model,
    const std::vector<LabelEfficiencyPoint>& curve,
    const std::string& metric) {
  for (const auto& pt : curve) {
    std::vector<int64_t> seeds;
    for (uint64_t s : pt.seeds) {
      TORCH_CHECK(
          s <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
          "record_label_efficiency: ",
          task,
          "/",
          model,
          " at fraction ",
          pt.fraction,
          ": seed ",
          s,
          " does not fit report.json's int64 integers");
      seeds.push_back(static_cast<int64_t>(s));
    }
    LabelFractionResult row(task, model, metric, pt.fraction, pt.auroc);
    row.seeds(seeds)
        .patients(pt.patients)
        .records(pt.records)
        .fixed_subset(pt.fixed_subset)
        .same_patients_as(pt.same_patients_as);
    if (pt.available_patients > 0) {
      row.available_patients(pt.available_patients);
    }
    if (pt.available_records > 0) {
      row.available_records(pt.available_records);
    }
    report.add_label_fraction(row);
  }
}

void record_representation(
    Report& report,
    const std::string& task,
    const std::string& model,
    const at::Tensor& view0,
    const at::Tensor& view1,
    const std::vector<int64_t>& ks) {
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

void record_invariance_audit(
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
