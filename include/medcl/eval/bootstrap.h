#pragma once

/// \file
/// Patient-level bootstrap intervals of any metric.

#include <medcl/eval/metrics.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace medcl {
namespace eval {

/// Percentile interval of `statistic` over `resamples` bootstrap resamples of patients (every
/// record of a drawn patient comes along, so correlated records are not treated as independent).
/// Resamples whose statistic throws (e.g. one class only) are skipped; at least half must succeed.
template <class Statistic>
Interval patient_bootstrap(
    Statistic&& statistic,
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& patients,
    int64_t resamples,
    uint64_t seed,
    double level) {
  constexpr const char* fn = "patient_bootstrap";
  TORCH_CHECK(resamples >= 10, fn, ": resamples must be >= 10, got ", resamples);
  TORCH_CHECK(level > 0 && level < 1, fn, ": level must be in (0, 1), got ", level);
  TORCH_CHECK(
      scores.size() == labels.size() && labels.size() == patients.size(),
      fn,
      ": scores, labels and patients differ in length (",
      scores.size(),
      ", ",
      labels.size(),
      ", ",
      patients.size(),
      ")");
  std::map<int64_t, std::vector<size_t>> by_patient;
  for (size_t i = 0; i < patients.size(); ++i) {
    by_patient[patients[i]].push_back(i);
  }
  std::vector<const std::vector<size_t>*> groups;
  for (const auto& kv : by_patient) {
    groups.push_back(&kv.second);
  }
  Interval out;
  out.estimate = statistic(scores, labels);
  out.level = level;
  out.method = "patient bootstrap (" + std::to_string(resamples) + ")";
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, groups.size() - 1);
  std::vector<double> values;
  std::vector<double> s;
  std::vector<int64_t> l;
  for (int64_t r = 0; r < resamples; ++r) {
    s.clear();
    l.clear();
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t i : *groups[pick(rng)]) {
        s.push_back(scores[i]);
        l.push_back(labels[i]);
      }
    }
    try {
      values.push_back(statistic(s, l));
    } catch (const c10::Error&) {
      // A resample with one class has no AUPRC: it is skipped, and counted below.
    }
  }
  TORCH_CHECK(
      static_cast<int64_t>(values.size()) * 2 >= resamples,
      fn,
      ": only ",
      values.size(),
      " of ",
      resamples,
      " resamples had a defined statistic (too few patients of one class)");
  std::sort(values.begin(), values.end());
  auto quantile = [&](double q) {
    const double pos = q * static_cast<double>(values.size() - 1);
    const auto lo = static_cast<size_t>(std::floor(pos));
    const auto hi = std::min(lo + 1, values.size() - 1);
    return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
  };
  out.lower = std::min(out.estimate, quantile((1 - level) / 2));
  out.upper = std::max(out.estimate, quantile(1 - (1 - level) / 2));
  return out;
}

} // namespace eval
} // namespace medcl
