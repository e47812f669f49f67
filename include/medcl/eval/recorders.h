#pragma once

/// \file
/// Recorders that put a representation's measurements and an invariance audit into a Report.
/// Compiled in src/eval/evaluation.cpp.

#include <medcl/eval/invariance_audit.h>
#include <medcl/eval/report.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace eval {

/// Records the representation's alignment and uniformity (Wang & Isola 2020) of two views'
/// embeddings and, when `ids` are given, Recall@K of retrieving the other view (query: view 0,
/// gallery: view 1).
void record_representation(
    Report& report,
    const std::string& task,
    const std::string& model,
    const at::Tensor& view0,
    const at::Tensor& view1,
    const std::vector<int64_t>& ks = {1, 5, 10});

/// Records an invariance audit: per augmentation the embedding's stability (mean cosine) against
/// the stability across a change of label, and which augmentations are flagged.
void record_invariance_audit(
    Report& report,
    const std::string& model,
    const InvarianceAuditResult& audit);

} // namespace eval
} // namespace medcl
