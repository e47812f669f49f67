#pragma once

/// \file
/// Site audit: how well a linear probe reads the site (or batch, scanner) from an embedding, in
/// patient-grouped cross-validation.

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace eval {

/// Options of `site_audit`.
struct SiteAuditOptions {
  /// Patient-grouped cross-validation folds. Default: 5
  TORCH_ARG(int64_t, folds) = 5;
  /// Seed of the fold assignment. Default: 0
  TORCH_ARG(uint64_t, seed) = 0;
  /// L2 strength of the probe (fixed: the audit asks whether the site is recoverable, not how well
  /// a tuned model does). Default: 1e-2
  TORCH_ARG(double, l2) = 1e-2;
  /// Macro AUROC at or above which the verdict is "strong". Default: 0.8
  TORCH_ARG(double, strong) = 0.8;
  /// Macro AUROC at or above which the verdict is "moderate". Default: 0.65
  TORCH_ARG(double, moderate) = 0.65;
};

/// How well the site (or batch, scanner) can be read from the embedding.
struct SiteAuditResult {
  /// The site ids, ascending (class k of the probe is site_ids[k]).
  std::vector<int64_t> site_ids;
  int64_t folds = 0;
  /// Mean per-site recall of the out-of-fold predictions, and its chance level 1 / sites.
  double balanced_accuracy = 0;
  double chance = 0;
  /// One-vs-rest AUROC per site (out of fold) and their mean (chance: 0.5).
  std::vector<double> per_site_auroc;
  double macro_auroc = 0;
  /// "strong", "moderate" or "low", and a sentence for the report.
  std::string level;
  std::string verdict;
};

/// Site audit: a multinomial linear probe (fixed L2 `l2`) predicts the site from the embedding in
/// patient-grouped k-fold cross-validation (each patient's records in one fold; patients dealt to
/// folds within each site after a seeded shuffle). From the out-of-fold probabilities: balanced
/// accuracy (vs chance 1/S) and the macro one-vs-rest AUROC. A representation that encodes the site
/// invites shortcut learning. The verdict uses the macro AUROC, whose chance level (0.5) does not
/// depend on the number of sites: "strong" at >= `strong` (0.8), "moderate" at >= `moderate`
/// (0.65), "low" below.
///
/// Shape: embeddings [N, D]; sites and patients: N entries each.
///
/// Example:
///   auto a = medcl::eval::site_audit(z, hospital, patient);
///   std::cout << a.verdict << "\n";
SiteAuditResult site_audit(
    const at::Tensor& embeddings,
    const std::vector<int64_t>& sites,
    const std::vector<int64_t>& patients,
    const SiteAuditOptions& options = {});

} // namespace eval
} // namespace medcl
