#pragma once

/// \file
/// Patient-level splits (grouped by patient, stratified by label, seeded) and the leakage check
/// that reports patients, studies or identical samples shared between splits.

#include <medcl/data/samplers.h>
#include <medcl/pairing/sample_keys.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace medcl {
namespace data {

/// Record indices of each split, with the patients they hold.
struct PatientSplits {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> indices;  // records per split, ascending
  std::vector<std::vector<int64_t>> patients; // patient ids per split, ascending

  /// Index of the split called `name`.
  size_t at(const std::string& name) const {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) {
        return i;
      }
    }
    TORCH_CHECK(false, "PatientSplits: no split called '", name, "'");
  }
  /// "pretrain: 120 patients / 740 records; train: ..." for reports.
  std::string describe() const {
    std::ostringstream s;
    for (size_t i = 0; i < names.size(); ++i) {
      s << (i ? "; " : "") << names[i] << ": " << patients[i].size() << " patients / "
        << indices[i].size() << " records";
    }
    return s.str();
  }
};

/// Splits records by patient: every record of a patient lands in the same split. Patients are
/// stratified by their label (the most frequent label among their records; ties to the smaller
/// label) when `labels` is given, so each split keeps the label mix; within each stratum the
/// patients are shuffled with `seed` and shared out by largest remainder of `fractions`.
/// Fractions must be >= 0 and sum to 1.
///
/// Example:
///   auto s = medcl::patient_split(patients, outcome, {{"pretrain", 0.6}, {"train", 0.2},
///                                                     {"val", 0.1}, {"test", 0.1}}, 42);
inline PatientSplits patient_split(
    const std::vector<int64_t>& patients,
    const std::vector<int64_t>& labels,
    const std::vector<std::pair<std::string, double>>& fractions,
    uint64_t seed) {
  constexpr const char* fn = "patient_split";
  TORCH_CHECK(!patients.empty(), fn, ": no records");
  TORCH_CHECK(
      labels.empty() || labels.size() == patients.size(),
      fn,
      ": expected ",
      patients.size(),
      " labels (one per record) or none, got ",
      labels.size());
  TORCH_CHECK(!fractions.empty(), fn, ": no splits requested");
  double total = 0;
  std::set<std::string> seen;
  for (const auto& f : fractions) {
    TORCH_CHECK(!f.first.empty(), fn, ": a split has an empty name");
    TORCH_CHECK(seen.insert(f.first).second, fn, ": the split name '", f.first, "' is used twice");
    TORCH_CHECK(
        std::isfinite(f.second) && f.second >= 0,
        fn,
        ": fraction of '",
        f.first,
        "' must be >= 0, got ",
        f.second);
    total += f.second;
  }
  TORCH_CHECK(std::abs(total - 1.0) < 1e-9, fn, ": fractions must sum to 1, got ", total);

  // Patients and their stratum.
  auto groups = medcl::detail::group_by(patients);
  std::map<int64_t, std::vector<size_t>> strata; // label -> patient groups
  for (size_t g = 0; g < groups.size(); ++g) {
    int64_t label = 0;
    if (!labels.empty()) {
      std::map<int64_t, int64_t> count;
      for (size_t r : groups[g]) {
        ++count[labels[r]];
      }
      int64_t best = -1;
      for (const auto& kv : count) {
        if (kv.second > best) {
          best = kv.second;
          label = kv.first;
        }
      }
    }
    strata[label].push_back(g);
  }
  PatientSplits out;
  const size_t k = fractions.size();
  out.indices.resize(k);
  out.patients.resize(k);
  for (const auto& f : fractions) {
    out.names.push_back(f.first);
  }
  uint64_t stream = 0;
  for (auto& st : strata) {
    auto rng = medcl::detail::epoch_rng(seed, 0, stream++);
    auto& members = st.second;
    std::shuffle(members.begin(), members.end(), rng);
    // Largest remainder: floor of each share, then the leftovers to the largest remainders.
    const double n = static_cast<double>(members.size());
    std::vector<size_t> count(k);
    std::vector<std::pair<double, size_t>> rem;
    size_t assigned = 0;
    for (size_t i = 0; i < k; ++i) {
      const double exact = fractions[i].second * n;
      count[i] = static_cast<size_t>(std::floor(exact + 1e-9));
      assigned += count[i];
      rem.emplace_back(-(exact - static_cast<double>(count[i])), i);
    }
    std::stable_sort(rem.begin(), rem.end());
    for (size_t j = 0; assigned < members.size(); ++j, ++assigned) {
      ++count[rem[j % k].second];
    }
    size_t pos = 0;
    for (size_t i = 0; i < k; ++i) {
      for (size_t c = 0; c < count[i]; ++c, ++pos) {
        const auto& grp = groups[members[pos]];
        out.patients[i].push_back(patients[grp.front()]);
        for (size_t r : grp) {
          out.indices[i].push_back(static_cast<int64_t>(r));
        }
      }
    }
  }
  for (size_t i = 0; i < k; ++i) {
    std::sort(out.indices[i].begin(), out.indices[i].end());
    std::sort(out.patients[i].begin(), out.patients[i].end());
  }
  return out;
}

/// One kind of overlap between two splits.
struct LeakageFinding {
  std::string split_a;
  std::string split_b;
  /// "patient", "study" or "identical sample".
  std::string kind;
  /// The shared patient or study ids; for identical samples, pairs (record in a, record in b).
  std::vector<int64_t> shared;
};

/// What check_leakage found.
struct LeakageReport {
  std::vector<LeakageFinding> findings;
  /// Which checks ran ("patient", "study", "identical sample").
  std::vector<std::string> checked;

  bool clean() const {
    return findings.empty();
  }
  /// One line per finding ("train/test share 3 patient(s): 10, 12, 40"), or "no leakage (...)".
  std::string describe() const {
    std::ostringstream s;
    if (findings.empty()) {
      s << "no leakage between splits (checked:";
      for (const auto& c : checked) {
        s << " " << c << (c == checked.back() ? "" : ",");
      }
      s << ")";
      return s.str();
    }
    for (size_t i = 0; i < findings.size(); ++i) {
      const auto& f = findings[i];
      const bool pairs = f.kind == "identical sample";
      const size_t n = pairs ? f.shared.size() / 2 : f.shared.size();
      s << (i ? "\n" : "") << f.split_a << "/" << f.split_b << " share " << n << " " << f.kind
        << "(s): ";
      const size_t show = std::min<size_t>(n, 10);
      for (size_t j = 0; j < show; ++j) {
        if (pairs) {
          s << (j ? ", " : "") << "records " << f.shared[2 * j] << "~" << f.shared[2 * j + 1];
        } else {
          s << (j ? ", " : "") << f.shared[j];
        }
      }
      if (n > show) {
        s << ", ...";
      }
    }
    return s.str();
  }
};

namespace detail {

inline std::vector<int64_t> key_values(const at::Tensor& t, const char* name, size_t n) {
  TORCH_CHECK(
      t.dim() == 1 && static_cast<size_t>(t.size(0)) == n && t.scalar_type() == at::kLong,
      "check_leakage: key '",
      name,
      "' must be int64 of shape [",
      n,
      "], got ",
      t.sizes(),
      " ",
      t.scalar_type());
  auto c = t.to(at::kCPU).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + n);
}

} // namespace detail

/// Finds patients, studies (when the keys carry them) and identical samples (when `features`
/// [N, ...] is given: byte-identical rows) shared between any two splits. `keys` hold the keys of
/// all N records; split indices refer to them.
///
/// Example:
///   auto report = medcl::check_leakage(splits, keys, features);
///   medcl::require_no_leakage(report);  // throws, listing what is shared
inline LeakageReport check_leakage(
    const PatientSplits& splits,
    const SampleKeys& keys,
    const at::Tensor& features = {}) {
  int64_t n = keys.size();
  if (n < 0 && features.defined()) {
    n = features.size(0);
  }
  TORCH_CHECK(n >= 0, "check_leakage: give keys (patient, study) or features to compare");
  for (size_t s = 0; s < splits.indices.size(); ++s) {
    for (int64_t r : splits.indices[s]) {
      TORCH_CHECK(
          r >= 0 && r < n,
          "check_leakage: split '",
          splits.names[s],
          "' holds record ",
          r,
          ", outside [0, ",
          n,
          ")");
    }
  }
  LeakageReport report;
  auto by_key = [&](const at::Tensor& t, const char* kind) {
    report.checked.push_back(kind);
    auto v = detail::key_values(t, kind, static_cast<size_t>(n));
    std::vector<std::set<int64_t>> sets(splits.indices.size());
    for (size_t s = 0; s < sets.size(); ++s) {
      for (int64_t r : splits.indices[s]) {
        sets[s].insert(v[static_cast<size_t>(r)]);
      }
    }
    for (size_t a = 0; a < sets.size(); ++a) {
      for (size_t b = a + 1; b < sets.size(); ++b) {
        std::vector<int64_t> shared;
        std::set_intersection(
            sets[a].begin(),
            sets[a].end(),
            sets[b].begin(),
            sets[b].end(),
            std::back_inserter(shared));
        if (!shared.empty()) {
          report.findings.push_back({splits.names[a], splits.names[b], kind, shared});
        }
      }
    }
  };
  if (keys.has(Key::Patient)) {
    by_key(keys.patient, "patient");
  }
  if (keys.has(Key::Study)) {
    by_key(keys.study, "study");
  }
  if (features.defined()) {
    report.checked.push_back("identical sample");
    TORCH_CHECK(
        features.dim() >= 1 && features.size(0) == n,
        "check_leakage: features must have ",
        n,
        " rows, got shape ",
        features.sizes());
    auto rows = features.to(at::kCPU).contiguous().reshape({n, -1});
    const size_t bytes = static_cast<size_t>(rows.size(1)) * rows.element_size();
    const auto* base = static_cast<const char*>(rows.data_ptr());
    auto row_hash = [&](int64_t r) {
      // FNV-1a over the row's bytes: identical rows hash alike; candidates are then compared.
      uint64_t h = 1469598103934665603ULL;
      const char* p = base + static_cast<size_t>(r) * bytes;
      for (size_t i = 0; i < bytes; ++i) {
        h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ULL;
      }
      return h;
    };
    std::vector<std::unordered_multimap<uint64_t, int64_t>> tables(splits.indices.size());
    for (size_t s = 0; s < tables.size(); ++s) {
      for (int64_t r : splits.indices[s]) {
        tables[s].emplace(row_hash(r), r);
      }
    }
    for (size_t a = 0; a < tables.size(); ++a) {
      for (size_t b = a + 1; b < tables.size(); ++b) {
        std::vector<int64_t> pairs;
        for (int64_t r : splits.indices[a]) {
          auto range = tables[b].equal_range(row_hash(r));
          for (auto it = range.first; it != range.second; ++it) {
            if (std::memcmp(
                    base + static_cast<size_t>(r) * bytes,
                    base + static_cast<size_t>(it->second) * bytes,
                    bytes) == 0) {
              pairs.push_back(r);
              pairs.push_back(it->second);
            }
          }
        }
        if (!pairs.empty()) {
          report.findings.push_back({splits.names[a], splits.names[b], "identical sample", pairs});
        }
      }
    }
  }
  return report;
}

/// Throws a c10::Error listing every overlap when the report is not clean.
inline void require_no_leakage(const LeakageReport& report) {
  TORCH_CHECK(report.clean(), "leakage between splits:\n", report.describe());
}

} // namespace data

// Earlier names in medcl::, kept for one release.
using data::check_leakage;
using data::LeakageFinding;
using data::LeakageReport;
using data::patient_split;
using data::PatientSplits;
using data::require_no_leakage;

} // namespace medcl
