#pragma once

/// \file
/// Label efficiency: probes trained on 1 %, 10 %, 100 % of the labelled training patients (whole
/// patients, stratified, seeded), with the test AUROC per fraction and seed.

#include <medcl/data/samplers.h>
#include <medcl/eval/linear_probe.h>
#include <medcl/eval/metrics.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <vector>

namespace medcl {
namespace eval {

/// The records of a sampled fraction of the training patients.
struct LabelFraction {
  double fraction = 1;
  uint64_t seed = 0;
  /// Indices into the training records, ascending; every record of a chosen patient is in.
  std::vector<int64_t> indices;
  /// The chosen patients, ascending.
  std::vector<int64_t> patients;
  /// Training patients the fraction was taken of.
  int64_t available_patients = 0;
  /// round(fraction · available_patients), at least 1: what the fraction asked for. `patients`
  /// can hold more (at least one patient per stratum, one more per class held only as a
  /// minority label), e.g. 2 patients for 1 % of 24.
  int64_t target_patients = 0;
};

/// Samples `fraction` (in (0, 1]) of the training patients — not records: all records of a chosen
/// patient come together. Patients are stratified by their label (the most frequent label among
/// their records; ties to the smaller), round(fraction · P) patients shared among the strata by
/// largest remainder, at least one patient per non-empty stratum; then, for any class in
/// [0, num_classes) still absent from the chosen records, one more patient who has it. A class that
/// no training record has is an error. Within a stratum patients are drawn in an order shuffled by
/// `seed`, so different seeds give different subsets and a fraction of 1 gives every patient.
///
/// Shape: patients and labels: one entry per training record.
///
/// Example:
///   auto f = medcl::eval::sample_label_fraction(train_patients, train_labels, 2, 0.01, 3);
///   auto x1 = z_train.index_select(0, torch::tensor(f.indices));
inline LabelFraction sample_label_fraction(
    const std::vector<int64_t>& patients,
    const std::vector<int64_t>& labels,
    int64_t num_classes,
    double fraction,
    uint64_t seed) {
  constexpr const char* fn = "sample_label_fraction";
  TORCH_CHECK(!patients.empty(), fn, ": no training records");
  TORCH_CHECK(
      labels.size() == patients.size(),
      fn,
      ": expected ",
      patients.size(),
      " labels (one per record), got ",
      labels.size());
  TORCH_CHECK(
      std::isfinite(fraction) && fraction > 0 && fraction <= 1,
      fn,
      ": fraction must be in (0, 1], got ",
      fraction);
  TORCH_CHECK(num_classes >= 1, fn, ": num_classes must be >= 1, got ", num_classes);
  for (int64_t l : labels) {
    TORCH_CHECK(
        l >= 0 && l < num_classes, fn, ": labels must be in [0, ", num_classes, "), got ", l);
  }
  auto groups = medcl::detail::group_by(patients);
  // Per patient: majority label and the set of labels it holds.
  std::vector<int64_t> major(groups.size());
  std::vector<std::set<int64_t>> has(groups.size());
  std::map<int64_t, std::vector<size_t>> strata;
  for (size_t g = 0; g < groups.size(); ++g) {
    std::map<int64_t, int64_t> count;
    for (size_t r : groups[g]) {
      ++count[labels[r]];
      has[g].insert(labels[r]);
    }
    int64_t best = -1;
    for (const auto& kv : count) {
      if (kv.second > best) {
        best = kv.second;
        major[g] = kv.first;
      }
    }
    strata[major[g]].push_back(g);
  }
  for (int64_t c = 0; c < num_classes; ++c) {
    bool present = false;
    for (const auto& h : has) {
      present = present || h.count(c) > 0;
    }
    TORCH_CHECK(
        present,
        fn,
        ": class ",
        c,
        " has no labelled training record, so no subset can hold every class");
  }
  // Shuffle each stratum, allocate the target by largest remainder, at least one per stratum.
  const double total = static_cast<double>(groups.size());
  const auto target = std::max<int64_t>(1, static_cast<int64_t>(std::llround(fraction * total)));
  std::vector<std::vector<size_t>*> order;
  std::vector<int64_t> take;
  std::vector<std::pair<double, size_t>> rem;
  int64_t assigned = 0;
  for (auto& st : strata) {
    auto rng = medcl::detail::epoch_rng(seed, 0, static_cast<uint64_t>(st.first));
    std::shuffle(st.second.begin(), st.second.end(), rng);
    const double exact = fraction * static_cast<double>(st.second.size());
    const auto k = static_cast<int64_t>(std::floor(exact + 1e-9));
    rem.emplace_back(-(exact - static_cast<double>(k)), order.size());
    order.push_back(&st.second);
    take.push_back(k);
    assigned += k;
  }
  std::stable_sort(rem.begin(), rem.end());
  for (size_t j = 0; assigned < target && j < rem.size(); ++j, ++assigned) {
    ++take[rem[j].second];
  }
  std::vector<bool> chosen(groups.size(), false);
  std::set<int64_t> covered;
  for (size_t s = 0; s < order.size(); ++s) {
    const int64_t k =
        std::min<int64_t>(std::max<int64_t>(take[s], 1), static_cast<int64_t>(order[s]->size()));
    for (int64_t i = 0; i < k; ++i) {
      const size_t g = (*order[s])[static_cast<size_t>(i)];
      chosen[g] = true;
      covered.insert(has[g].begin(), has[g].end());
    }
  }
  // A class held only as a minority label: add the first patient (in shuffled order) holding it.
  for (int64_t c = 0; c < num_classes; ++c) {
    if (covered.count(c) > 0) {
      continue;
    }
    for (size_t s = 0; s < order.size() && covered.count(c) == 0; ++s) {
      for (size_t g : *order[s]) {
        if (!chosen[g] && has[g].count(c) > 0) {
          chosen[g] = true;
          covered.insert(has[g].begin(), has[g].end());
          break;
        }
      }
    }
  }
  LabelFraction out;
  out.fraction = fraction;
  out.seed = seed;
  out.available_patients = static_cast<int64_t>(groups.size());
  out.target_patients = target;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (chosen[g]) {
      out.patients.push_back(patients[groups[g].front()]);
      for (size_t r : groups[g]) {
        out.indices.push_back(static_cast<int64_t>(r));
      }
    }
  }
  std::sort(out.indices.begin(), out.indices.end());
  std::sort(out.patients.begin(), out.patients.end());
  return out;
}

/// A probe for `label_efficiency`: fitted on (train_x, train_y), returns the class-1 score of each
/// row of test_x.
using ProbeScorer = std::function<std::vector<
    double>(const at::Tensor& train_x, const at::Tensor& train_y, const at::Tensor& test_x)>;

/// Options of `label_efficiency`.
struct LabelEfficiencyOptions {
  /// Fractions of the training patients. Default: {0.01, 0.1, 1.0}
  TORCH_ARG(std::vector<double>, fractions) = std::vector<double>({0.01, 0.1, 1.0});
  /// One subset (and one fit) per seed and fraction. Default: {0, 1, 2, 3, 4}
  TORCH_ARG(std::vector<uint64_t>, seeds) = std::vector<uint64_t>({0, 1, 2, 3, 4});
  /// Level of the DeLong intervals. Default: 0.95
  TORCH_ARG(double, level) = 0.95;
  /// Options of the default probe (the linear probe, L2 chosen on the validation rows).
  /// Default: LinearProbeOptions()
  TORCH_ARG(LinearProbeOptions, probe) = LinearProbeOptions();
};

/// Test AUROC at one fraction of the training patients.
struct LabelEfficiencyPoint {
  /// The fraction requested (what the subset sizes came from; see `patients` for what was used).
  double fraction = 0;
  /// Mean and sample standard deviation (n - 1; 0 with one seed) of the per-seed AUROCs.
  double mean = 0;
  double sd = 0;
  /// Per seed (in the order of `seeds`): the seed, the AUROC with its DeLong interval, and how many
  /// training patients and records the subset held (what the probe was actually trained on).
  std::vector<uint64_t> seeds;
  std::vector<double> auroc;
  std::vector<Interval> intervals;
  std::vector<int64_t> patients;
  std::vector<int64_t> records;
  /// Training patients and records the fractions were taken of.
  int64_t available_patients = 0;
  int64_t available_records = 0;
  /// Whether the subset did not depend on the seed: every training patient was drawn, or two or
  /// more seeds all drew the same patients. The repeats then differ at most by the probe's own
  /// randomness, not by the label subset: the report gives such a fraction no interval.
  bool fixed_subset = false;
  /// The other requested fractions whose subsets held the same patients as this one for every
  /// seed (e.g. 0.01 and 0.1 of 24 patients both draw one patient per class): their rows measure
  /// the same thing. In the order of `fractions`.
  std::vector<double> same_patients_as;
  /// The other requested fractions whose subsets held as many patients as this one for every seed
  /// (a superset of `same_patients_as`).
  std::vector<double> same_count_as;
};

/// For every fraction × seed: samples the training patients (`sample_label_fraction`, two classes),
/// fits a probe on their records, scores the test rows and computes the test AUROC with its DeLong
/// interval. The probe is `scorer` when given; otherwise the linear probe with its L2 strength
/// chosen on the validation rows (which then must be given; they stay whole at every fraction).
/// Each point records what was drawn: the patients and records per seed, whether the subset
/// depended on the seed at all (`fixed_subset`), and which other fractions collapsed onto the same
/// patients or the same count (`same_patients_as`, `same_count_as`) — small cohorts make 1 % and
/// 10 % draw the same one patient per class. Fractions and seeds must be distinct.
///
/// Shape: train_x [N, D], train_y [N] int64 0/1, train_patients N entries; val_x [V, D], val_y [V];
/// test_x [M, D], test_y [M] holding both classes.
///
/// Example:
///   auto curve = medcl::eval::label_efficiency(z_tr, y_tr, patients_tr, z_val, y_val, z_te, y_te);
///   // curve[0].fraction == 0.01, curve[0].mean, curve[0].sd, curve[0].auroc (per seed)
inline std::vector<LabelEfficiencyPoint> label_efficiency(
    const at::Tensor& train_x,
    const at::Tensor& train_y,
    const std::vector<int64_t>& train_patients,
    const at::Tensor& val_x,
    const at::Tensor& val_y,
    const at::Tensor& test_x,
    const at::Tensor& test_y,
    const LabelEfficiencyOptions& options = {},
    const ProbeScorer& scorer = nullptr) {
  constexpr const char* fn = "label_efficiency";
  detail::check_probe_rows(fn, "training", train_x, train_y, 2);
  detail::check_probe_rows(fn, "test", test_x, test_y, 2);
  TORCH_CHECK(
      static_cast<int64_t>(train_patients.size()) == train_x.size(0),
      fn,
      ": expected ",
      train_x.size(0),
      " patient ids (one per training row), got ",
      train_patients.size());
  TORCH_CHECK(!options.fractions().empty(), fn, ": no fractions requested");
  TORCH_CHECK(!options.seeds().empty(), fn, ": no seeds requested");
  const auto& fractions = options.fractions();
  const auto& seeds = options.seeds();
  for (size_t i = 0; i < fractions.size(); ++i) {
    TORCH_CHECK(
        std::isfinite(fractions[i]) && fractions[i] > 0 && fractions[i] <= 1,
        fn,
        ": fractions must be in (0, 1], got ",
        fractions[i]);
    for (size_t j = 0; j < i; ++j) {
      TORCH_CHECK(
          fractions[j] != fractions[i],
          fn,
          ": fraction ",
          fractions[i],
          " is requested twice (each fraction is one row of the curve)");
    }
  }
  for (size_t i = 0; i < seeds.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      TORCH_CHECK(
          seeds[j] != seeds[i],
          fn,
          ": seed ",
          seeds[i],
          " is requested twice (a repeated seed draws the same subset: not a repeat)");
    }
  }
  if (!scorer) {
    TORCH_CHECK(
        val_x.defined() && val_y.defined(),
        fn,
        ": the default linear probe chooses its L2 strength on validation rows; give val_x and "
        "val_y (or pass a scorer)");
  }
  auto to_vec = [](const at::Tensor& t) {
    auto c = t.to(at::kCPU).contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  };
  const auto ytr = to_vec(train_y);
  const auto yte = to_vec(test_y);
  const auto pos = std::count(yte.begin(), yte.end(), int64_t{1});
  TORCH_CHECK(
      pos > 0 && pos < static_cast<int64_t>(yte.size()),
      fn,
      ": the test labels need both classes, got ",
      pos,
      " positive(s) and ",
      static_cast<int64_t>(yte.size()) - pos,
      " negative(s)");
  std::vector<LabelEfficiencyPoint> out;
  // The patients drawn per fraction and seed, to find the fractions that collapse together.
  std::vector<std::vector<std::vector<int64_t>>> drawn(fractions.size());
  const auto available_records = static_cast<int64_t>(train_patients.size());
  const auto available_patients =
      static_cast<int64_t>(std::set<int64_t>(train_patients.begin(), train_patients.end()).size());
  for (size_t fi = 0; fi < fractions.size(); ++fi) {
    const double f = fractions[fi];
    LabelEfficiencyPoint point;
    point.fraction = f;
    point.available_patients = available_patients;
    point.available_records = available_records;
    for (uint64_t seed : seeds) {
      auto sub = sample_label_fraction(train_patients, ytr, 2, f, seed);
      drawn[fi].push_back(sub.patients);
      auto idx = at::tensor(sub.indices, at::kLong).to(train_x.device());
      auto xs = train_x.index_select(0, idx);
      auto ys = train_y.index_select(0, idx.to(train_y.device()));
      std::vector<double> scores;
      if (scorer) {
        scores = scorer(xs, ys, test_x);
      } else {
        scores = fit_linear_probe(xs, ys, val_x, val_y, 2, options.probe()).scores(test_x);
      }
      TORCH_CHECK(
          scores.size() == yte.size(),
          fn,
          ": the probe returned ",
          scores.size(),
          " scores for ",
          yte.size(),
          " test rows");
      auto iv = auroc_delong(scores, yte, options.level());
      point.seeds.push_back(seed);
      point.auroc.push_back(iv.estimate);
      point.intervals.push_back(iv);
      point.patients.push_back(static_cast<int64_t>(sub.patients.size()));
      point.records.push_back(static_cast<int64_t>(sub.indices.size()));
    }
    double m = 0;
    for (double a : point.auroc) {
      m += a;
    }
    m /= static_cast<double>(point.auroc.size());
    double v = 0;
    for (double a : point.auroc) {
      v += (a - m) * (a - m);
    }
    point.mean = m;
    point.sd =
        point.auroc.size() > 1 ? std::sqrt(v / static_cast<double>(point.auroc.size() - 1)) : 0.0;
    const auto& d = drawn[fi];
    const bool all_patients = static_cast<int64_t>(d.front().size()) == available_patients;
    point.fixed_subset = all_patients ||
        (d.size() > 1 && std::all_of(d.begin(), d.end(), [&](const std::vector<int64_t>& p) {
                           return p == d.front();
                         }));
    out.push_back(point);
  }
  for (size_t a = 0; a < out.size(); ++a) {
    for (size_t b = 0; b < out.size(); ++b) {
      if (a == b) {
        continue;
      }
      if (out[a].patients == out[b].patients) {
        out[a].same_count_as.push_back(out[b].fraction);
      }
      if (drawn[a] == drawn[b]) {
        out[a].same_patients_as.push_back(out[b].fraction);
      }
    }
  }
  return out;
}

} // namespace eval
} // namespace medcl
