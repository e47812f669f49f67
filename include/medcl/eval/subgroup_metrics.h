#pragma once

/// \file
/// Subgroup audit: AUROC (DeLong interval), AUPRC and Brier score within each subgroup of the
/// samples (sex, age band, scanner, ethnicity) and over all of them; and the fairness audit
/// (`subgroup_fairness`): discrimination, calibration and the operating point per group, with the
/// largest gap between groups and its patient-bootstrap interval.

#include <medcl/eval/metrics.h>

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace eval {

/// Metrics of one subgroup (or of all samples).
struct SubgroupResult {
  std::string name;
  int64_t n = 0;
  int64_t positives = 0;
  /// False when the subgroup holds one class only: AUROC and AUPRC are then undefined (left 0) and
  /// `note` says why.
  bool auroc_defined = false;
  std::string note;
  /// AUROC with its DeLong interval, and AUPRC (when defined).
  Interval auroc;
  double auprc = 0;
  /// Brier score (always defined).
  double brier = 0;
};

/// Per-subgroup results and the overall row.
struct SubgroupReport {
  SubgroupResult overall;
  std::vector<SubgroupResult> groups;
  /// Largest minus smallest AUROC among the subgroups where it is defined (0 with fewer than two).
  double auroc_gap = 0;
};

/// AUROC (DeLong interval at `level`), AUPRC and Brier score of probabilities `scores` within each
/// subgroup (e.g. sex, age band, scanner, ethnicity), and over all samples. `groups[i]` indexes
/// `group_names`. A name with no sample is an error (a typo or a missing subgroup should not pass
/// silently); a subgroup with fewer than two positives or two negatives gets `auroc_defined =
/// false` and a note instead of NaN or an interval of zero width.
///
/// Shape: scores (probabilities in [0, 1]), labels (0/1) and groups: one entry per sample.
///
/// Example:
///   auto r = medcl::eval::subgroup_metrics(p_test, y_test, sex, {"female", "male"});
///   for (const auto& g : r.groups) { std::cout << g.name << " " << g.auroc.estimate << "\n"; }
SubgroupReport subgroup_metrics(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& groups,
    const std::vector<std::string>& group_names,
    double level = 0.95);

/// Options of `subgroup_fairness`.
struct FairnessOptions {
  /// The operating threshold on the probability ("positive when p >= threshold") at which every
  /// group's sensitivity and specificity are measured: one threshold for all groups, chosen on a
  /// validation split (`threshold_at_specificity`), not on the groups measured. Default: 0.5
  TORCH_ARG(double, threshold) = 0.5;
  /// A group with fewer positives or fewer negatives than these is named as too small to
  /// estimate (no metric, no part in the gaps); at least 2 (DeLong's interval needs two of
  /// each class). Default: 10 and 10
  TORCH_ARG(int64_t, min_positives) = 10;
  TORCH_ARG(int64_t, min_negatives) = 10;
  /// Patient-bootstrap resamples for the gaps' and the rates' intervals (>= 10). Default: 500
  TORCH_ARG(int64_t, bootstrap) = 500;
  /// Seed of the bootstrap. Default: 0
  TORCH_ARG(uint64_t, seed) = 0;
  /// Confidence level of every interval. Default: 0.95
  TORCH_ARG(double, level) = 0.95;
};

/// One group of a fairness audit.
struct GroupFairness {
  std::string name;
  /// Records, positives among them, and distinct patients.
  int64_t n = 0;
  int64_t positives = 0;
  int64_t patients = 0;
  /// False when the group has too few positives or negatives (`FairnessOptions`); `note` then
  /// says what it has and what is needed, and nothing below is estimated.
  bool estimable = false;
  std::string note;
  /// AUROC with its DeLong interval.
  Interval auroc;
  /// Calibration slope, intercept and calibration-in-the-large (Wald intervals), where the
  /// logistic recalibration is defined (no probability of exactly 0 or 1, outcomes not separated
  /// perfectly); otherwise `has_calibration` is false and `calibration_note` says why.
  bool has_calibration = false;
  std::string calibration_note;
  LogisticCalibration calibration;
  /// Counts at the threshold, and sensitivity and specificity with patient-bootstrap percentile
  /// intervals.
  OperatingPoint operating_point;
  Interval sensitivity;
  Interval specificity;
};

/// The largest difference of one metric between the estimable groups.
struct FairnessGap {
  /// "AUROC", "calibration slope", "calibration intercept", "calibration-in-the-large",
  /// "sensitivity" or "specificity".
  std::string metric;
  /// False with fewer than two groups where the metric is estimated (`note` says why).
  bool defined = false;
  std::string note;
  /// Highest minus lowest group value on the data, between the groups named `highest` and
  /// `lowest`; its interval is the percentile interval of the difference between those two groups
  /// over patient-bootstrap resamples (signed: a resample may reverse it, so an interval that
  /// includes 0 says that the data show no gap). Resamples where either group's metric is
  /// undefined are skipped; `replicates` counts those that served. With fewer than half serving
  /// there is no interval (`has_interval` false, equal to the estimate; `note` says why).
  Interval gap;
  bool has_interval = false;
  std::string highest;
  std::string lowest;
  int64_t replicates = 0;
};

/// A fairness audit of one attribute.
struct FairnessReport {
  double threshold = 0;
  int64_t min_positives = 0;
  int64_t min_negatives = 0;
  /// Every group named, in the order of the names, estimable or not.
  std::vector<GroupFairness> groups;
  /// One per metric, in the order of `FairnessGap::metric`'s list.
  std::vector<FairnessGap> gaps;
};

/// The fairness audit that clinical prediction-model guidelines (TRIPOD+AI, CLAIM) ask for: per
/// group of one attribute (sex, age band, site, scanner, any key of the cohort), AUROC (DeLong),
/// calibration slope, intercept and calibration-in-the-large (`logistic_calibration`), and
/// sensitivity and specificity at one operating threshold shared by every group; then for each
/// metric the largest gap between groups (highest minus lowest) with a patient-bootstrap
/// interval (patients are resampled with all their records, each record keeping its own group).
/// Groups with too few positives or negatives, and groups with no record, are kept and named as
/// too small rather than dropped. The two groups of a gap are picked on the data, so with many
/// small groups the estimate leans upward (noise alone makes some groups differ): read a gap
/// against its interval and the groups' sizes.
///
/// Shape: scores (probabilities in [0, 1]), labels (0/1), groups (indices into `group_names`) and
/// patients: one entry per record.
/// Errors: lengths that differ, no record, a group index outside the names, a probability outside
/// [0, 1] or not finite, labels other than 0/1, a non-finite threshold, minimum counts below 2,
/// fewer than 10 resamples, a level outside (0, 1).
///
/// Example:
///   const double t = medcl::eval::threshold_at_specificity(p_val, y_val, 0.9);
///   auto f = medcl::eval::subgroup_fairness(
///       p_test, y_test, sex, {"female", "male"}, patient_test,
///       medcl::eval::FairnessOptions().threshold(t));
///   for (const auto& g : f.gaps) { std::cout << g.metric << " gap " << g.gap.estimate << "\n"; }
FairnessReport subgroup_fairness(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& groups,
    const std::vector<std::string>& group_names,
    const std::vector<int64_t>& patients,
    const FairnessOptions& options = {});

} // namespace eval
} // namespace medcl
