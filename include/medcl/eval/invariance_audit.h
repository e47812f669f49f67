#pragma once

/// \file
/// Invariance audit: the stability of an embedding under each augmentation, against its stability
/// under clinically meaningful change (a change of label).

#include <medcl/augment/probe.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace medcl {
namespace eval {

/// Stability of the embedding under one augmentation, against clinically meaningful change.
struct InvarianceAuditEntry {
  std::string transform;
  /// Mean and standard deviation of cos(f(x), f(t(x))) (from `augment::invariance_probe`).
  double mean_cosine = 0;
  double std_cosine = 0;
  int64_t samples = 0;
  /// mean_cosine - different_label_cosine: how much more stable the embedding is under the
  /// augmentation than across a change of label.
  double margin = 0;
  /// True when the augmented view is no closer to its source than a sample of the other label is
  /// (margin <= 0), or when it is nearer a random sample of the batch than a typical sample of the
  /// same label (mean_cosine <= (random_pair_cosine + same_label_cosine) / 2): the augmentation
  /// moves the embedding as much as a change of diagnosis, or scrambles the sample.
  bool flagged = false;
};

/// What `invariance_audit` found.
struct InvarianceAuditResult {
  std::vector<InvarianceAuditEntry> transforms;
  /// Mean cosine between the embeddings of the batch's pairs with the same label (0 when there are
  /// no such pairs) and with different labels, and how many pairs each.
  double same_label_cosine = 0;
  double different_label_cosine = 0;
  /// Mean cosine over all pairs i < j of the batch (a random other sample).
  double random_pair_cosine = 0;
  int64_t same_label_pairs = 0;
  int64_t different_label_pairs = 0;
  /// Names of the flagged augmentations.
  std::vector<std::string> flagged;
};

/// Invariance audit: for each transform, the stability of the embedding under it
/// (`augment::invariance_probe`, mean cos(f(x), f(t(x))) over the batch and `repeats` draws),
/// compared with the stability under clinically meaningful change: the mean cosine over the batch's
/// pairs (i < j) whose labels differ, and, for reference, over pairs with the same label and over
/// all pairs. An augmentation is flagged when its mean cosine is no higher than the different-label
/// cosine — the representation moves as much under the augmentation as under a change of diagnosis
/// — or than the midpoint between the all-pairs and the same-label cosines — the augmented view
/// lies nearer a random sample than a typical sample of the same label. Either way the augmentation
/// may erase what matters (or the label is not encoded).
///
/// Shape: batch of B samples in the modality's layout; labels: B entries with at least two values.
///
/// Example:
///   auto a = medcl::eval::invariance_audit(
///       [&](const augment::Batch& b) { return encoder->forward(b.values); }, Modality::ECG,
///       {std::make_shared<augment::GaussianJitter>(0.05)}, batch, diagnosis, 7);
InvarianceAuditResult invariance_audit(
    const std::function<at::Tensor(const augment::Batch&)>& encoder,
    augment::Modality modality,
    const std::vector<augment::TransformPtr>& transforms,
    const augment::Batch& batch,
    const std::vector<int64_t>& labels,
    uint64_t seed,
    int64_t repeats = 1);

} // namespace eval
} // namespace medcl
