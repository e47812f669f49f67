#pragma once

/// \file
/// Gathers the pairing keys of every rank's samples, so that positives and excluded negatives
/// can be decided on the global batch (a patient's record on rank 3 is a positive, or not a
/// negative, for the same patient's record on rank 0).

#include <medcl/dist/process_group.h>
#include <medcl/pairing/sample_keys.h>

#include <cstdint>
#include <vector>

namespace medcl {
namespace dist {

/// Every rank's `keys` concatenated in rank order: every defined key (instance, view, label,
/// patient, study, site, lead, time) of every rank, rows in the same order as
/// gather_with_gradient's. The ranks must define the same keys with the same dtypes; when they do
/// not, every rank throws a c10::Error naming the key and the ranks that differ (before any key is
/// sent). Keys are checked as SampleKeys::check does (1-D, one length, int64 except a floating
/// `time`, one device); a rank whose keys fail the check throws its own error and the others
/// throw one naming it. `counts`, when given, receives every rank's number of samples. A
/// one-process group returns `keys`.
///
/// Shape: every key [n_r] on rank r; result: every key [n_0 + ... + n_{W-1}].
///
/// Example:
///   medcl::SampleKeys local;
///   local.patient = patient_ids;                        // int64 [B]
///   auto global = medcl::dist::gather_keys(local, group); // patient: [sum of B over ranks]
SampleKeys gather_keys(
    const SampleKeys& keys,
    const ProcessGroup& group,
    std::vector<int64_t>* counts = nullptr);

} // namespace dist
} // namespace medcl
