// The clinical-validity audits of an embedding (eval/subgroup_metrics.h,
// eval/external_validation.h, eval/site_audit.h, eval/invariance_audit.h) and its 2-D PCA
// (eval/pca.h).

#include <medcl/core/checks.h>
#include <medcl/data/samplers.h>
#include <medcl/data/splits.h>
#include <medcl/eval/external_validation.h>
#include <medcl/eval/invariance_audit.h>
#include <medcl/eval/linear_probe.h>
#include <medcl/eval/metrics.h>
#include <medcl/eval/pca.h>
#include <medcl/eval/site_audit.h>
#include <medcl/eval/subgroup_metrics.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {
namespace detail {
namespace {

void check_binary_labels(const char* fn, const std::vector<int64_t>& labels) {
  for (size_t i = 0; i < labels.size(); ++i) {
    TORCH_CHECK(
        labels[i] == 0 || labels[i] == 1,
        fn,
        ": labels must be 0 or 1, got ",
        labels[i],
        " at position ",
        i);
  }
}

void check_same_length(const char* fn, const char* name, size_t expected, size_t got) {
  TORCH_CHECK(
      expected == got, fn, ": expected ", expected, " ", name, " (one per sample), got ", got);
}

std::vector<int64_t> pick(const std::vector<int64_t>& v, const std::vector<int64_t>& idx) {
  std::vector<int64_t> out;
  out.reserve(idx.size());
  for (int64_t i : idx) {
    out.push_back(v[static_cast<size_t>(i)]);
  }
  return out;
}

at::Tensor rows_of(const at::Tensor& x, const std::vector<int64_t>& idx) {
  return x.index_select(0, at::tensor(idx, at::kLong).to(x.device()));
}

at::Tensor labels_tensor(const std::vector<int64_t>& v) {
  return at::tensor(v, at::kLong);
}

void check_embeddings_rows(const char* fn, const at::Tensor& x) {
  TORCH_CHECK(
      x.defined() && x.dim() == 2 && x.size(0) > 0 && x.size(1) > 0 &&
          at::isFloatingType(x.scalar_type()),
      fn,
      ": expected non-empty floating [N, D] embeddings, got ",
      x.defined() ? x.sizes() : at::IntArrayRef{});
  TORCH_CHECK(medcl::detail::all_finite(x), fn, ": embeddings contain NaN or Inf");
}

SubgroupResult subgroup_row(
    const std::string& name,
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double level) {
  SubgroupResult r;
  r.name = name;
  r.n = static_cast<int64_t>(labels.size());
  r.positives = std::count(labels.begin(), labels.end(), int64_t{1});
  r.brier = brier_score(scores, labels);
  if (r.positives < 2 || r.n - r.positives < 2) {
    r.auroc_defined = false;
    std::ostringstream s;
    s << (r.positives == 0 || r.positives == r.n ? "AUROC undefined: "
                                                 : "AUROC not estimated (its DeLong interval "
                                                   "needs two of each class): ")
      << r.positives << " positive(s) and " << (r.n - r.positives) << " negative(s)";
    r.note = s.str();
    r.auroc.level = level;
    r.auroc.method = "DeLong";
  } else {
    r.auroc_defined = true;
    r.auroc = auroc_delong(scores, labels, level);
    r.auprc = auprc(scores, labels);
  }
  return r;
}

ValidationResult validate_split(
    const char* fn,
    const at::Tensor& x,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& patients,
    const std::vector<int64_t>& pool,
    const std::vector<int64_t>& test,
    const ExternalValidationOptions& options) {
  // Patient-grouped, label-stratified validation part of the pool.
  const auto pool_patients = pick(patients, pool);
  const auto pool_labels = pick(labels, pool);
  const double vf = options.validation_fraction();
  auto split =
      patient_split(pool_patients, pool_labels, {{"train", 1 - vf}, {"val", vf}}, options.seed());
  std::vector<int64_t> tr;
  std::vector<int64_t> va;
  for (int64_t i : split.indices[0]) {
    tr.push_back(pool[static_cast<size_t>(i)]);
  }
  for (int64_t i : split.indices[1]) {
    va.push_back(pool[static_cast<size_t>(i)]);
  }
  TORCH_CHECK(
      !tr.empty() && !va.empty(),
      fn,
      ": too few patients to hold out a validation part (",
      tr.size(),
      " training and ",
      va.size(),
      " validation records)");
  auto probe = fit_linear_probe(
      rows_of(x, tr),
      labels_tensor(pick(labels, tr)),
      rows_of(x, va),
      labels_tensor(pick(labels, va)),
      2,
      options.probe());
  ValidationResult r;
  r.train_records = static_cast<int64_t>(tr.size());
  r.validation_records = static_cast<int64_t>(va.size());
  r.test_records = static_cast<int64_t>(test.size());
  r.l2 = probe.l2;
  const auto p = probe.scores(rows_of(x, test));
  const auto y = pick(labels, test);
  r.test_positives = std::count(y.begin(), y.end(), int64_t{1});
  r.brier = brier_score(p, y);
  r.ece = calibration(p, y, options.bins()).ece;
  r.auroc.level = options.level();
  r.auroc.method = "DeLong";
  if (r.test_positives < 2 || r.test_records - r.test_positives < 2) {
    std::ostringstream s;
    s << (r.test_positives == 0 || r.test_positives == r.test_records
              ? "AUROC undefined"
              : "AUROC not estimated (its DeLong interval needs two of each class)")
      << ": the test part holds " << r.test_positives << " positive(s) and "
      << (r.test_records - r.test_positives) << " negative(s)";
    r.note = s.str();
  } else {
    r.auroc_defined = true;
    r.auroc = auroc_delong(p, y, options.level());
  }
  return r;
}

// The positions of each group's records; every index must name one of the `names` groups.
std::vector<std::vector<size_t>>
group_members(const char* fn, const std::vector<int64_t>& groups, size_t names) {
  const auto g = static_cast<int64_t>(names);
  std::vector<std::vector<size_t>> members(names);
  for (size_t i = 0; i < groups.size(); ++i) {
    TORCH_CHECK(
        groups[i] >= 0 && groups[i] < g,
        fn,
        ": group indices must be in [0, ",
        g,
        "), got ",
        groups[i],
        " at position ",
        i);
    members[static_cast<size_t>(groups[i])].push_back(i);
  }
  return members;
}

// The metrics of a fairness audit, in the order of FairnessGap::metric's list.
constexpr size_t kFairnessMetrics = 6;
const char* const kFairnessMetricNames[kFairnessMetrics] = {
    "AUROC",
    "calibration slope",
    "calibration intercept",
    "calibration-in-the-large",
    "sensitivity",
    "specificity"};

struct FairnessValues {
  double value[kFairnessMetrics] = {0, 0, 0, 0, 0, 0};
  bool defined[kFairnessMetrics] = {false, false, false, false, false, false};
};

// The point values of one group's records (a resample's: any of them may be undefined there).
FairnessValues fairness_values(
    const std::vector<double>& s,
    const std::vector<int64_t>& l,
    double threshold,
    bool calibration_wanted) {
  FairnessValues v;
  if (s.empty()) {
    return v;
  }
  const auto pos = std::count(l.begin(), l.end(), int64_t{1});
  if (pos > 0 && pos < static_cast<int64_t>(l.size())) {
    v.value[0] = auroc(s, l);
    v.defined[0] = true;
    if (calibration_wanted) {
      try {
        const auto c = logistic_calibration(s, l);
        v.value[1] = c.slope.estimate;
        v.value[2] = c.intercept.estimate;
        v.value[3] = c.in_the_large.estimate;
        v.defined[1] = v.defined[2] = v.defined[3] = true;
      } catch (const c10::Error&) {
        // Separated outcomes in this resample: the slope is infinite; in-the-large stays defined.
        try {
          v.value[3] = calibration_in_the_large(s, l).estimate;
          v.defined[3] = true;
        } catch (const c10::Error&) {
        }
      }
    }
  }
  const auto op = operating_point(s, l, threshold);
  v.value[4] = op.sensitivity;
  v.defined[4] = op.has_sensitivity;
  v.value[5] = op.specificity;
  v.defined[5] = op.has_specificity;
  return v;
}

// Linear-interpolation quantile of sorted values (R's type 7), as patient_bootstrap.
double sorted_quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

// Percentile interval around `estimate` (which it always contains, as patient_bootstrap's).
Interval percentile_interval(double estimate, std::vector<double> values, double level, int64_t b) {
  Interval out;
  out.estimate = estimate;
  out.lower = estimate;
  out.upper = estimate;
  out.level = level;
  out.method = "patient bootstrap (" + std::to_string(values.size()) + " of " + std::to_string(b) +
      " resamples)";
  if (!values.empty()) {
    std::sort(values.begin(), values.end());
    out.lower = std::min(estimate, sorted_quantile(values, (1 - level) / 2));
    out.upper = std::max(estimate, sorted_quantile(values, 1 - (1 - level) / 2));
  }
  return out;
}

std::string error_text(const c10::Error& e) {
  return e.what_without_backtrace();
}

} // namespace
} // namespace detail

FairnessReport subgroup_fairness(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& groups,
    const std::vector<std::string>& group_names,
    const std::vector<int64_t>& patients,
    const FairnessOptions& options) {
  constexpr const char* fn = "subgroup_fairness";
  TORCH_CHECK(!scores.empty(), fn, ": no records");
  detail::check_same_length(fn, "labels", scores.size(), labels.size());
  detail::check_same_length(fn, "group indices", scores.size(), groups.size());
  detail::check_same_length(fn, "patient ids", scores.size(), patients.size());
  TORCH_CHECK(!group_names.empty(), fn, ": no group names");
  detail::check_binary_labels(fn, labels);
  for (size_t i = 0; i < scores.size(); ++i) {
    TORCH_CHECK(
        std::isfinite(scores[i]) && scores[i] >= 0 && scores[i] <= 1,
        fn,
        ": scores must be probabilities in [0, 1], got ",
        scores[i],
        " at position ",
        i);
  }
  const double t = options.threshold();
  TORCH_CHECK(std::isfinite(t), fn, ": the threshold is not finite (", t, ")");
  TORCH_CHECK(
      options.min_positives() >= 2 && options.min_negatives() >= 2,
      fn,
      ": min_positives and min_negatives must be >= 2 (DeLong's interval needs two of each "
      "class), got ",
      options.min_positives(),
      " and ",
      options.min_negatives());
  TORCH_CHECK(
      options.bootstrap() >= 10, fn, ": bootstrap must be >= 10, got ", options.bootstrap());
  const double level = options.level();
  TORCH_CHECK(level > 0 && level < 1, fn, ": level must be in (0, 1), got ", level);
  const auto ng = group_names.size();
  const auto members = detail::group_members(fn, groups, ng);

  FairnessReport out;
  out.threshold = t;
  out.min_positives = options.min_positives();
  out.min_negatives = options.min_negatives();
  std::vector<detail::FairnessValues> point(ng);
  for (size_t k = 0; k < ng; ++k) {
    GroupFairness r;
    r.name = group_names[k];
    r.n = static_cast<int64_t>(members[k].size());
    std::vector<double> s;
    std::vector<int64_t> l;
    std::set<int64_t> distinct;
    for (size_t i : members[k]) {
      s.push_back(scores[i]);
      l.push_back(labels[i]);
      distinct.insert(patients[i]);
    }
    r.patients = static_cast<int64_t>(distinct.size());
    r.positives = std::count(l.begin(), l.end(), int64_t{1});
    const int64_t negatives = r.n - r.positives;
    r.estimable = r.positives >= options.min_positives() && negatives >= options.min_negatives();
    r.auroc.level = r.sensitivity.level = r.specificity.level = level;
    if (!r.estimable) {
      std::ostringstream note;
      if (r.n == 0) {
        note << "too small to estimate: no records";
      } else {
        note << "too small to estimate: " << r.positives << " positive(s) and " << negatives
             << " negative(s); at least " << options.min_positives() << " and "
             << options.min_negatives() << " needed";
      }
      r.note = note.str();
      out.groups.push_back(std::move(r));
      continue;
    }
    r.auroc = auroc_delong(s, l, level);
    try {
      r.calibration = logistic_calibration(s, l, level);
      r.has_calibration = true;
    } catch (const c10::Error& e) {
      r.calibration_note = detail::error_text(e);
    }
    r.operating_point = operating_point(s, l, t);
    // The point values the gaps compare, from what was just measured (not measured again).
    auto& v = point[k];
    v.value[0] = r.auroc.estimate;
    v.defined[0] = true;
    if (r.has_calibration) {
      v.value[1] = r.calibration.slope.estimate;
      v.value[2] = r.calibration.intercept.estimate;
      v.value[3] = r.calibration.in_the_large.estimate;
      v.defined[1] = v.defined[2] = v.defined[3] = true;
    }
    v.value[4] = r.operating_point.sensitivity;
    v.defined[4] = r.operating_point.has_sensitivity;
    v.value[5] = r.operating_point.specificity;
    v.defined[5] = r.operating_point.has_specificity;
    out.groups.push_back(std::move(r));
  }

  // The patient bootstrap: every resample measures every estimable group.
  std::map<int64_t, std::vector<size_t>> by_patient;
  for (size_t i = 0; i < patients.size(); ++i) {
    by_patient[patients[i]].push_back(i);
  }
  std::vector<const std::vector<size_t>*> drawn_from;
  for (const auto& kv : by_patient) {
    drawn_from.push_back(&kv.second);
  }
  const int64_t b = options.bootstrap();
  constexpr size_t m = detail::kFairnessMetrics;
  std::vector<std::vector<std::vector<double>>> per_group(ng, std::vector<std::vector<double>>(m));
  std::vector<std::vector<double>> gaps(m);
  // The groups each gap compares: those where the metric is estimated on the data.
  std::vector<std::vector<size_t>> compared(m);
  for (size_t k = 0; k < ng; ++k) {
    for (size_t j = 0; j < m; ++j) {
      if (out.groups[k].estimable && point[k].defined[j]) {
        compared[j].push_back(k);
      }
    }
  }
  // The groups with the highest and the lowest value of each metric on the data.
  std::vector<size_t> high(m, 0), low(m, 0);
  for (size_t j = 0; j < m; ++j) {
    if (compared[j].empty()) {
      continue;
    }
    high[j] = low[j] = compared[j].front();
    for (size_t k : compared[j]) {
      low[j] = point[k].value[j] < point[low[j]].value[j] ? k : low[j];
      high[j] = point[k].value[j] > point[high[j]].value[j] ? k : high[j];
    }
    if (high[j] == low[j] && compared[j].size() >= 2) { // every group equal: any two
      high[j] = compared[j][1];
    }
  }
  const bool any = std::any_of(
      out.groups.begin(), out.groups.end(), [](const GroupFairness& r) { return r.estimable; });
  if (any) {
    std::mt19937_64 rng(options.seed());
    std::uniform_int_distribution<size_t> pick(0, drawn_from.size() - 1);
    std::vector<std::vector<double>> s(ng);
    std::vector<std::vector<int64_t>> l(ng);
    for (int64_t r = 0; r < b; ++r) {
      for (size_t k = 0; k < ng; ++k) {
        s[k].clear();
        l[k].clear();
      }
      for (size_t d = 0; d < drawn_from.size(); ++d) {
        for (size_t i : *drawn_from[pick(rng)]) {
          const auto k = static_cast<size_t>(groups[i]);
          s[k].push_back(scores[i]);
          l[k].push_back(labels[i]);
        }
      }
      std::vector<detail::FairnessValues> v(ng);
      for (size_t k = 0; k < ng; ++k) {
        if (out.groups[k].estimable) {
          v[k] = detail::fairness_values(s[k], l[k], t, out.groups[k].has_calibration);
          for (size_t j = 0; j < m; ++j) {
            if (v[k].defined[j]) {
              per_group[k][j].push_back(v[k].value[j]);
            }
          }
        }
      }
      for (size_t j = 0; j < m; ++j) {
        // The difference between the two groups that the data name (signed: a resample may
        // reverse it, so an interval that includes 0 says that the data show no gap).
        if (compared[j].size() >= 2 && v[high[j]].defined[j] && v[low[j]].defined[j]) {
          gaps[j].push_back(v[high[j]].value[j] - v[low[j]].value[j]);
        }
      }
    }
  }
  for (size_t k = 0; k < ng; ++k) {
    auto& r = out.groups[k];
    if (r.estimable) {
      r.sensitivity = detail::percentile_interval(point[k].value[4], per_group[k][4], level, b);
      r.specificity = detail::percentile_interval(point[k].value[5], per_group[k][5], level, b);
    }
  }
  for (size_t j = 0; j < m; ++j) {
    FairnessGap gap;
    gap.metric = detail::kFairnessMetricNames[j];
    gap.gap.level = level;
    if (compared[j].size() < 2) {
      std::ostringstream note;
      note << "undefined: the metric is estimated in " << compared[j].size()
           << " group(s); a gap needs two";
      gap.note = note.str();
      out.gaps.push_back(std::move(gap));
      continue;
    }
    gap.defined = true;
    const size_t lo = low[j], hi = high[j];
    gap.highest = group_names[hi];
    gap.lowest = group_names[lo];
    gap.replicates = static_cast<int64_t>(gaps[j].size());
    const double estimate = point[hi].value[j] - point[lo].value[j];
    if (gap.replicates * 2 >= b) {
      gap.gap = detail::percentile_interval(estimate, gaps[j], level, b);
      gap.has_interval = true;
    } else {
      gap.gap = detail::percentile_interval(estimate, {}, level, b);
      std::ostringstream note;
      note << "no interval: only " << gap.replicates << " of " << b
           << " resamples had the metric in both groups";
      gap.note = note.str();
    }
    out.gaps.push_back(std::move(gap));
  }
  return out;
}

SubgroupReport subgroup_metrics(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& groups,
    const std::vector<std::string>& group_names,
    double level) {
  constexpr const char* fn = "subgroup_metrics";
  TORCH_CHECK(!scores.empty(), fn, ": no samples");
  detail::check_same_length(fn, "labels", scores.size(), labels.size());
  detail::check_same_length(fn, "group indices", scores.size(), groups.size());
  TORCH_CHECK(!group_names.empty(), fn, ": no subgroup names");
  detail::check_binary_labels(fn, labels);
  std::vector<std::vector<double>> s(group_names.size());
  std::vector<std::vector<int64_t>> l(group_names.size());
  const auto members = detail::group_members(fn, groups, group_names.size());
  for (size_t k = 0; k < members.size(); ++k) {
    for (size_t i : members[k]) {
      s[k].push_back(scores[i]);
      l[k].push_back(labels[i]);
    }
  }
  for (size_t k = 0; k < group_names.size(); ++k) {
    TORCH_CHECK(
        !l[k].empty(), fn, ": subgroup '", group_names[k], "' (index ", k, ") has no samples");
  }
  SubgroupReport out;
  out.overall = detail::subgroup_row("all", scores, labels, level);
  double lo = 2;
  double hi = -1;
  int defined = 0;
  for (size_t k = 0; k < group_names.size(); ++k) {
    out.groups.push_back(detail::subgroup_row(group_names[k], s[k], l[k], level));
    if (out.groups.back().auroc_defined) {
      ++defined;
      lo = std::min(lo, out.groups.back().auroc.estimate);
      hi = std::max(hi, out.groups.back().auroc.estimate);
    }
  }
  out.auroc_gap = defined >= 2 ? hi - lo : 0.0;
  return out;
}

ExternalValidationResult external_validation(
    const at::Tensor& embeddings,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& sites,
    const std::vector<int64_t>& patients,
    const ExternalValidationOptions& options) {
  constexpr const char* fn = "external_validation";
  detail::check_embeddings_rows(fn, embeddings);
  const auto n = static_cast<size_t>(embeddings.size(0));
  detail::check_same_length(fn, "labels", n, labels.size());
  detail::check_same_length(fn, "site ids", n, sites.size());
  detail::check_same_length(fn, "patient ids", n, patients.size());
  detail::check_binary_labels(fn, labels);
  TORCH_CHECK(
      options.validation_fraction() > 0 && options.validation_fraction() < 1,
      fn,
      ": validation_fraction must be in (0, 1), got ",
      options.validation_fraction());
  TORCH_CHECK(
      options.internal_test_fraction() > 0 && options.internal_test_fraction() < 1,
      fn,
      ": internal_test_fraction must be in (0, 1), got ",
      options.internal_test_fraction());
  std::map<int64_t, int64_t> site_of;
  for (size_t i = 0; i < n; ++i) {
    auto it = site_of.find(patients[i]);
    TORCH_CHECK(
        it == site_of.end() || it->second == sites[i],
        fn,
        ": patient ",
        patients[i],
        " has records at sites ",
        it == site_of.end() ? sites[i] : it->second,
        " and ",
        sites[i],
        "; each patient must belong to one site");
    site_of[patients[i]] = sites[i];
  }
  std::map<int64_t, std::vector<int64_t>> by_site;
  for (size_t i = 0; i < n; ++i) {
    by_site[sites[i]].push_back(static_cast<int64_t>(i));
  }
  TORCH_CHECK(by_site.size() >= 2, fn, ": needs at least two sites, got ", by_site.size());
  ExternalValidationResult out;
  double sum = 0;
  int defined = 0;
  for (const auto& kv : by_site) {
    std::vector<int64_t> pool;
    for (size_t i = 0; i < n; ++i) {
      if (sites[i] != kv.first) {
        pool.push_back(static_cast<int64_t>(i));
      }
    }
    auto r = detail::validate_split(fn, embeddings, labels, patients, pool, kv.second, options);
    r.name = "site " + std::to_string(kv.first);
    r.site = kv.first;
    if (r.auroc_defined) {
      sum += r.auroc.estimate;
      ++defined;
    }
    out.sites.push_back(r);
  }
  // Internal: a random patient-level split of everything, then the same protocol.
  const double tf = options.internal_test_fraction();
  auto split = patient_split(patients, labels, {{"pool", 1 - tf}, {"test", tf}}, options.seed());
  out.internal = detail::validate_split(
      fn, embeddings, labels, patients, split.indices[0], split.indices[1], options);
  out.internal.name = "internal";
  if (out.internal.auroc_defined && defined > 0) {
    out.auroc_drop = out.internal.auroc.estimate - sum / defined;
  }
  return out;
}

SiteAuditResult site_audit(
    const at::Tensor& embeddings,
    const std::vector<int64_t>& sites,
    const std::vector<int64_t>& patients,
    const SiteAuditOptions& options) {
  constexpr const char* fn = "site_audit";
  detail::check_embeddings_rows(fn, embeddings);
  const auto n = static_cast<size_t>(embeddings.size(0));
  detail::check_same_length(fn, "site ids", n, sites.size());
  detail::check_same_length(fn, "patient ids", n, patients.size());
  TORCH_CHECK(options.folds() >= 2, fn, ": folds must be >= 2, got ", options.folds());
  TORCH_CHECK(
      options.moderate() <= options.strong(),
      fn,
      ": expected moderate <= strong cut-offs, got ",
      options.moderate(),
      " and ",
      options.strong());
  SiteAuditResult out;
  std::map<int64_t, int64_t> cls;
  for (int64_t s : sites) {
    cls[s] = 0;
  }
  TORCH_CHECK(cls.size() >= 2, fn, ": needs at least two sites, got ", cls.size());
  for (auto& kv : cls) {
    kv.second = static_cast<int64_t>(out.site_ids.size());
    out.site_ids.push_back(kv.first);
  }
  const auto num_sites = static_cast<int64_t>(cls.size());
  std::vector<int64_t> y(n);
  for (size_t i = 0; i < n; ++i) {
    y[i] = cls[sites[i]];
  }
  // Folds: patients stratified by their (first record's) site, shuffled, dealt round-robin.
  auto groups = medcl::detail::group_by(patients);
  TORCH_CHECK(
      static_cast<int64_t>(groups.size()) >= options.folds(),
      fn,
      ": needs at least as many patients as folds, got ",
      groups.size(),
      " patient(s) for ",
      options.folds(),
      " folds");
  std::map<int64_t, std::vector<size_t>> strata;
  for (size_t g = 0; g < groups.size(); ++g) {
    strata[y[groups[g].front()]].push_back(g);
  }
  std::vector<int64_t> fold_of(n);
  int64_t next = 0;
  for (auto& st : strata) {
    auto rng = medcl::detail::epoch_rng(options.seed(), 0, static_cast<uint64_t>(st.first));
    std::shuffle(st.second.begin(), st.second.end(), rng);
    for (size_t g : st.second) {
      for (size_t r : groups[g]) {
        fold_of[r] = next;
      }
      next = (next + 1) % options.folds();
    }
  }
  auto probs = at::zeros({static_cast<int64_t>(n), num_sites}, at::kDouble);
  for (int64_t f = 0; f < options.folds(); ++f) {
    std::vector<int64_t> tr;
    std::vector<int64_t> te;
    for (size_t i = 0; i < n; ++i) {
      (fold_of[i] == f ? te : tr).push_back(static_cast<int64_t>(i));
    }
    if (te.empty()) {
      continue;
    }
    auto probe = fit_linear_probe(
        detail::rows_of(embeddings, tr),
        detail::labels_tensor(detail::pick(y, tr)),
        num_sites,
        LinearProbeOptions().l2_grid({options.l2()}));
    probs.index_copy_(
        0, at::tensor(te, at::kLong), probe.predict_proba(detail::rows_of(embeddings, te)));
  }
  // Out-of-fold balanced accuracy and one-vs-rest AUROCs.
  auto pred = probs.argmax(1).contiguous();
  const auto* pp = pred.data_ptr<int64_t>();
  std::vector<int64_t> hit(static_cast<size_t>(num_sites), 0);
  std::vector<int64_t> count(static_cast<size_t>(num_sites), 0);
  for (size_t i = 0; i < n; ++i) {
    ++count[static_cast<size_t>(y[i])];
    hit[static_cast<size_t>(y[i])] += pp[i] == y[i] ? 1 : 0;
  }
  double bacc = 0;
  double macro = 0;
  for (int64_t k = 0; k < num_sites; ++k) {
    bacc += static_cast<double>(hit[static_cast<size_t>(k)]) /
        static_cast<double>(count[static_cast<size_t>(k)]);
    auto col = probs.select(1, k).contiguous();
    std::vector<double> sc(col.data_ptr<double>(), col.data_ptr<double>() + n);
    std::vector<int64_t> is(n);
    for (size_t i = 0; i < n; ++i) {
      is[i] = y[i] == k ? 1 : 0;
    }
    out.per_site_auroc.push_back(auroc(sc, is));
    macro += out.per_site_auroc.back();
  }
  out.folds = options.folds();
  out.balanced_accuracy = bacc / static_cast<double>(num_sites);
  out.chance = 1.0 / static_cast<double>(num_sites);
  out.macro_auroc = macro / static_cast<double>(num_sites);
  std::ostringstream s;
  s.precision(3);
  if (out.macro_auroc >= options.strong()) {
    out.level = "strong";
    s << "strong site signal: a linear probe recovers the site (macro AUROC " << out.macro_auroc
      << " >= " << options.strong() << ", balanced accuracy " << out.balanced_accuracy
      << " vs chance " << out.chance
      << "); the embedding encodes the site, so confounding and shortcut learning are likely";
  } else if (out.macro_auroc >= options.moderate()) {
    out.level = "moderate";
    s << "moderate site signal: macro AUROC " << out.macro_auroc << " >= " << options.moderate()
      << " (balanced accuracy " << out.balanced_accuracy << " vs chance " << out.chance
      << "); check subgroup and external validation";
  } else {
    out.level = "low";
    s << "low site signal: macro AUROC " << out.macro_auroc << " < " << options.moderate()
      << " (balanced accuracy " << out.balanced_accuracy << " vs chance " << out.chance << ")";
  }
  out.verdict = s.str();
  return out;
}

InvarianceAuditResult invariance_audit(
    const std::function<at::Tensor(const augment::Batch&)>& encoder,
    augment::Modality modality,
    const std::vector<augment::TransformPtr>& transforms,
    const augment::Batch& batch,
    const std::vector<int64_t>& labels,
    uint64_t seed,
    int64_t repeats) {
  constexpr const char* fn = "invariance_audit";
  TORCH_CHECK(batch.values.defined() && batch.values.dim() >= 1, fn, ": the batch has no values");
  detail::check_same_length(fn, "labels", static_cast<size_t>(batch.values.size(0)), labels.size());
  std::vector<int64_t> distinct(labels);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  TORCH_CHECK(
      distinct.size() >= 2,
      fn,
      ": needs samples with at least two different labels to measure clinically meaningful change, "
      "got only label ",
      distinct.empty() ? int64_t{-1} : distinct[0]);
  auto probe = augment::invariance_probe(encoder, modality, transforms, batch, seed, repeats);
  InvarianceAuditResult out;
  {
    c10::NoGradGuard no_grad;
    auto z = encoder(batch).to(at::kCPU, at::kDouble);
    TORCH_CHECK(medcl::detail::all_finite(z), fn, ": the encoder returned NaN or Inf embeddings");
    z = z / z.norm(2, 1, true).clamp_min(1e-12);
    auto cos = z.mm(z.t());
    auto lab = at::tensor(labels, at::kLong);
    const int64_t b = z.size(0);
    auto upper = at::ones({b, b}, at::kBool).triu(1);
    auto same = lab.unsqueeze(1).eq(lab.unsqueeze(0)) & upper;
    auto diff = lab.unsqueeze(1).ne(lab.unsqueeze(0)) & upper;
    out.same_label_pairs = same.sum().item<int64_t>();
    out.different_label_pairs = diff.sum().item<int64_t>();
    if (out.same_label_pairs > 0) {
      out.same_label_cosine = cos.masked_select(same).mean().item<double>();
    }
    out.different_label_cosine = cos.masked_select(diff).mean().item<double>();
    out.random_pair_cosine = cos.masked_select(upper).mean().item<double>();
  }
  for (const auto& r : probe) {
    InvarianceAuditEntry e;
    e.transform = r.transform;
    e.mean_cosine = r.mean_cosine;
    e.std_cosine = r.std_cosine;
    e.samples = r.samples;
    e.margin = r.mean_cosine - out.different_label_cosine;
    const double scrambled = out.same_label_pairs > 0
        ? 0.5 * (out.random_pair_cosine + out.same_label_cosine)
        : out.random_pair_cosine;
    e.flagged = e.margin <= 0 || r.mean_cosine <= scrambled;
    if (e.flagged) {
      out.flagged.push_back(e.transform);
    }
    out.transforms.push_back(e);
  }
  return out;
}

Pca2d pca_2d(const at::Tensor& embeddings) {
  constexpr const char* fn = "pca_2d";
  TORCH_CHECK(
      embeddings.defined() && embeddings.dim() == 2 && embeddings.size(0) >= 2 &&
          embeddings.size(1) >= 2,
      fn,
      ": expected [N, D] embeddings with N >= 2 and D >= 2, got ",
      embeddings.defined() ? embeddings.sizes() : at::IntArrayRef{});
  TORCH_CHECK(medcl::detail::all_finite(embeddings), fn, ": embeddings contain NaN or Inf");
  c10::NoGradGuard no_grad;
  auto x = embeddings.detach().to(at::kCPU, at::kDouble);
  Pca2d out;
  out.mean = x.mean(0);
  x = x - out.mean;
  const int64_t n = x.size(0);
  const int64_t d = x.size(1);
  at::Tensor vectors; // [D, 2]
  at::Tensor values;  // variances of the two components
  double total = 0;
  if (n >= d) {
    auto cov = x.t().mm(x) / static_cast<double>(n - 1);
    auto eig = at::linalg_eigh(cov);
    auto ev = std::get<0>(eig).clamp_min(0);
    total = ev.sum().item<double>();
    values = ev.slice(0, d - 2, d).flip({0});
    vectors = std::get<1>(eig).slice(1, d - 2, d).flip({1});
  } else {
    auto gram = x.mm(x.t());
    auto eig = at::linalg_eigh(gram);
    auto mu = std::get<0>(eig).clamp_min(0);
    total = mu.sum().item<double>() / static_cast<double>(n - 1);
    auto m = mu.slice(0, n - 2, n).flip({0});
    auto u = std::get<1>(eig).slice(1, n - 2, n).flip({1});
    values = m / static_cast<double>(n - 1);
    auto sv = m.sqrt();
    vectors = x.t().mm(u) / at::where(sv > 0, sv, at::ones_like(sv));
  }
  TORCH_CHECK(total > 0, fn, ": the embeddings have zero variance (all rows are equal)");
  // Zero-variance components (rank < 2) become zeros; signs: largest-magnitude entry positive.
  auto tiny = values.select(0, 0).item<double>() * 1e-12;
  for (int64_t k = 0; k < 2; ++k) {
    auto v = vectors.select(1, k);
    if (values[k].item<double>() <= tiny) {
      v.zero_();
      continue;
    }
    v.div_(v.norm());
    const auto i = v.abs().argmax().item<int64_t>();
    if (v[i].item<double>() < 0) {
      v.neg_();
    }
  }
  out.components = vectors.t().contiguous();
  auto coords = x.mm(vectors).contiguous(); // [N, 2]
  auto c0 = coords.select(1, 0).contiguous();
  auto c1 = coords.select(1, 1).contiguous();
  out.pc1.assign(c0.data_ptr<double>(), c0.data_ptr<double>() + n);
  out.pc2.assign(c1.data_ptr<double>(), c1.data_ptr<double>() + n);
  for (int64_t k = 0; k < 2; ++k) {
    out.explained_variance_ratio.push_back(
        values[k].item<double>() <= tiny ? 0.0 : values[k].item<double>() / total);
  }
  return out;
}

} // namespace eval
} // namespace medcl
