#pragma once

/// \file
/// Subgroup audit: AUROC (DeLong interval), AUPRC and Brier score within each subgroup of the
/// samples (sex, age band, scanner, ethnicity) and over all of them.

#include <medcl/eval/metrics.h>

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
/// silently); a subgroup with one class gets `auroc_defined = false` and a note instead of NaN.
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

} // namespace eval
} // namespace medcl
