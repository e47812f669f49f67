#pragma once

/// \file
/// External (leave-one-site-out) validation of a linear probe on frozen embeddings, compared with a
/// random patient-level split of all sites.

#include <medcl/eval/linear_probe.h>
#include <medcl/eval/metrics.h>

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace eval {

/// Options of `external_validation`.
struct ExternalValidationOptions {
  /// Linear probe options (L2 grid, selection). Default: LinearProbeOptions()
  TORCH_ARG(LinearProbeOptions, probe) = LinearProbeOptions();
  /// Share of the training patients held out to choose the L2 strength. Default: 0.2
  TORCH_ARG(double, validation_fraction) = 0.2;
  /// Share of the patients in the test part of the internal (random patient-level) split.
  /// Default: 0.2
  TORCH_ARG(double, internal_test_fraction) = 0.2;
  /// Seed of the patient-level splits. Default: 0
  TORCH_ARG(uint64_t, seed) = 0;
  /// Level of the DeLong intervals. Default: 0.95
  TORCH_ARG(double, level) = 0.95;
  /// Bins of the expected calibration error. Default: 10
  TORCH_ARG(int64_t, bins) = 10;
};

/// Test results of one train/test arrangement.
struct ValidationResult {
  /// "site 3" for a held-out site, "internal" for the random patient-level split.
  std::string name;
  /// The held-out site id (-1 for the internal split).
  int64_t site = -1;
  int64_t train_records = 0;
  int64_t validation_records = 0;
  int64_t test_records = 0;
  int64_t test_positives = 0;
  /// The L2 strength chosen on the validation patients.
  double l2 = 0;
  /// False when the test part holds one class (AUROC undefined; `note` says so).
  bool auroc_defined = false;
  std::string note;
  Interval auroc;
  double brier = 0;
  double ece = 0;
};

/// Leave-one-site-out results and the internal comparison.
struct ExternalValidationResult {
  ValidationResult internal;
  std::vector<ValidationResult> sites;
  /// Internal AUROC minus the mean external AUROC (over sites where it is defined): the optimism of
  /// an in-distribution evaluation.
  double auroc_drop = 0;
};

/// External validation by site: for each site, a linear probe (`fit_linear_probe`) is trained on
/// the other sites — its L2 strength chosen on a patient-grouped, label-stratified validation part
/// of them (`validation_fraction` of their patients) — and tested on the held-out site: AUROC with
/// DeLong interval, Brier score, ECE. For comparison, the same protocol on a random patient-level
/// split of all sites (`internal_test_fraction` of the patients as test). Each patient must belong
/// to one site (otherwise the held-out site would share patients with training).
///
/// Shape: embeddings [N, D]; labels (0/1), sites and patients: N entries each.
///
/// Example:
///   auto r = medcl::eval::external_validation(z, outcome, hospital, patient);
///   // r.internal.auroc.estimate vs r.sites[k].auroc.estimate, r.auroc_drop
ExternalValidationResult external_validation(
    const at::Tensor& embeddings,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& sites,
    const std::vector<int64_t>& patients,
    const ExternalValidationOptions& options = {});

} // namespace eval
} // namespace medcl
