#pragma once

// What the README's C++ snippets assume of the program they sit in: the user's data. Synthetic
// and seeded: 48 patients with 4 visits each, 28 features per visit, an outcome per patient that
// shows in four of the features. cmake/extract_readme_snippets.cmake opens every snippet with
// MEDCL_README_ASSUMED, which binds the names the snippets use; `records(step)` and
// `patient_ids(step)` are the user's data loader.

#include <medcl/medcl.h>

#include <cstdint>
#include <vector>

namespace medcl_readme {

constexpr int64_t kPatients = 48;
constexpr int64_t kVisits = 4;
constexpr int64_t kRecords = kPatients * kVisits;
constexpr int64_t kFeatures = 28;
constexpr int64_t kBatch = 64;

struct Assumed {
  at::Tensor x;        // [N, 28] every record's features
  at::Tensor patients; // [N] the patient of each record
  medcl::eval::EvaluationCohort cohort;
  // One batch of embeddings for the loss snippet: two views z0, z1 [256, 128]; MoCo's queries q
  // and keys k; and the patient of each row.
  at::Tensor z0, z1, q, k, batch_patients;

  Assumed() {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(2026);
    auto outcome = at::arange(kPatients, at::kLong).remainder(2); // balanced
    patients = at::arange(kRecords, at::kLong).div(kVisits, "floor");
    auto y = outcome.index_select(0, patients);
    auto patient_effect =
        at::randn({kPatients, kFeatures}, gen, at::kFloat).index_select(0, patients);
    x = 0.5 * patient_effect + at::randn({kRecords, kFeatures}, gen, at::kFloat);
    x.slice(1, 0, 4).add_((2 * y.to(at::kFloat) - 1).unsqueeze(1));
    auto labels = y.contiguous();
    auto pats = patients.contiguous();
    cohort.labels.assign(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + kRecords);
    cohort.patients.assign(pats.data_ptr<int64_t>(), pats.data_ptr<int64_t>() + kRecords);

    z0 = at::randn({256, 128}, gen, at::kFloat);
    z1 = z0 + 0.1 * at::randn({256, 128}, gen, at::kFloat);
    q = at::randn({256, 128}, gen, at::kFloat).requires_grad_();
    k = q.detach() + 0.1 * at::randn({256, 128}, gen, at::kFloat);
    batch_patients = at::arange(256, at::kLong).div(2, "floor");
  }
};

inline Assumed& assumed() {
  static Assumed a;
  return a;
}

} // namespace medcl_readme

/// The records of one training step: kBatch rows chosen by the step (a user's data loader).
inline at::Tensor records(int64_t step) {
  const auto rows = (at::arange(medcl_readme::kBatch, at::kLong) + step * medcl_readme::kBatch)
                        .remainder(medcl_readme::kRecords);
  return medcl_readme::assumed().x.index_select(0, rows);
}

/// The patient of each of those records.
inline at::Tensor patient_ids(int64_t step) {
  const auto rows = (at::arange(medcl_readme::kBatch, at::kLong) + step * medcl_readme::kBatch)
                        .remainder(medcl_readme::kRecords);
  return medcl_readme::assumed().patients.index_select(0, rows);
}

// NOLINTNEXTLINE(cppcoreguidelines-macro-usage): a snippet's free names, bound once per snippet.
#define MEDCL_README_ASSUMED                                      \
  [[maybe_unused]] auto& x = medcl_readme::assumed().x;           \
  [[maybe_unused]] auto& cohort = medcl_readme::assumed().cohort; \
  [[maybe_unused]] auto& z0 = medcl_readme::assumed().z0;         \
  [[maybe_unused]] auto& z1 = medcl_readme::assumed().z1;         \
  [[maybe_unused]] auto& q = medcl_readme::assumed().q;           \
  [[maybe_unused]] auto& k = medcl_readme::assumed().k;           \
  [[maybe_unused]] auto& batch_patients = medcl_readme::assumed().batch_patients;
