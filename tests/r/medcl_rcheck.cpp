// What medcl computes for the cases tests/r/check_against_r.R generates, printed so that no digit
// is lost (C99 hexadecimal floats). Reads cases from a file, one per line:
//   binary <n> <scores_a x n> <scores_b x n> <labels x n>      (scores_a are probabilities in
//   (0,1)) survival <n> <h> <times x n> <events x n> <risk x n> <horizons x h>
// and writes one line per case: "<case> <name> <value>" for each statistic; an undefined statistic
// prints "error". Numbers in the input are hexadecimal floats too.
#include <medcl/eval/metrics.h>
#include <medcl/eval/subgroup_metrics.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace E = medcl::eval;

std::vector<double> read_doubles(std::istringstream& in, long n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) {
    std::string tok;
    in >> tok;
    x = std::strtod(tok.c_str(), nullptr);
  }
  return v;
}

std::vector<int64_t> to_labels(const std::vector<double>& v) {
  return std::vector<int64_t>(v.begin(), v.end());
}

void put(int id, const std::string& name, const std::function<double()>& f) {
  try {
    std::printf("%d %s %a\n", id, name.c_str(), f());
  } catch (const c10::Error&) {
    std::printf("%d %s error\n", id, name.c_str());
  }
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: medcl_rcheck cases.txt\n");
    return 2;
  }
  std::ifstream file(argv[1]);
  if (!file) {
    std::fprintf(stderr, "medcl_rcheck: cannot open %s\n", argv[1]);
    return 2;
  }
  std::string line;
  int id = 0;
  while (std::getline(file, line)) {
    if (line.empty()) {
      continue;
    }
    ++id;
    std::istringstream in(line);
    std::string kind;
    long n = 0;
    in >> kind >> n;
    if (kind == "binary") {
      const auto a = read_doubles(in, n);
      const auto b = read_doubles(in, n);
      const auto y = to_labels(read_doubles(in, n));
      put(id, "auroc", [&] { return E::auroc(a, y); });
      put(id, "delong_lower", [&] { return E::auroc_delong(a, y).lower; });
      put(id, "delong_upper", [&] { return E::auroc_delong(a, y).upper; });
      put(id, "paired_z", [&] { return E::compare_auroc_delong(a, b, y).z; });
      put(id, "paired_p", [&] { return E::compare_auroc_delong(a, b, y).p_value; });
      put(id, "brier", [&] { return E::brier_score(a, y); });
      put(id, "cal_intercept", [&] { return E::logistic_calibration(a, y).intercept.estimate; });
      put(id, "cal_intercept_lower", [&] { return E::logistic_calibration(a, y).intercept.lower; });
      put(id, "cal_slope", [&] { return E::logistic_calibration(a, y).slope.estimate; });
      put(id, "cal_slope_upper", [&] { return E::logistic_calibration(a, y).slope.upper; });
      put(id, "citl", [&] { return E::calibration_in_the_large(a, y).estimate; });
      put(id, "auprc", [&] { return E::auprc(a, y); });
      put(id, "sens_at_spec90", [&] { return E::sensitivity_at_specificity(a, y, 0.9); });
      // At a threshold equal to a score (the median's upper neighbour): ties decide the counts.
      auto sorted = a;
      std::sort(sorted.begin(), sorted.end());
      const double t = sorted[sorted.size() / 2];
      put(id, "op_sensitivity", [&] { return E::operating_point(a, y, t).sensitivity; });
      put(id, "op_specificity", [&] { return E::operating_point(a, y, t).specificity; });
      // The fairness audit with two groups (even and odd positions, each its own patient), at
      // the same threshold: every group's numbers are R's on that group's records.
      std::vector<int64_t> groups, patients;
      for (size_t i = 0; i < a.size(); ++i) {
        groups.push_back(static_cast<int64_t>(i % 2));
        patients.push_back(static_cast<int64_t>(i));
      }
      E::FairnessReport f;
      bool audited = true;
      try {
        f = E::subgroup_fairness(
            a,
            y,
            groups,
            {"even", "odd"},
            patients,
            E::FairnessOptions().threshold(t).min_positives(2).min_negatives(2).bootstrap(10));
      } catch (const c10::Error&) {
        audited = false;
      }
      for (size_t k = 0; k < 2; ++k) {
        const std::string g = "group" + std::to_string(k) + "_";
        auto group = [&]() -> const E::GroupFairness& {
          TORCH_CHECK(audited && f.groups[k].estimable, "not estimated");
          return f.groups[k];
        };
        put(id, g + "auroc", [&] { return group().auroc.estimate; });
        put(id, g + "delong_upper", [&] { return group().auroc.upper; });
        put(id, g + "cal_slope", [&] {
          TORCH_CHECK(group().has_calibration, "no calibration");
          return group().calibration.slope.estimate;
        });
        put(id, g + "citl", [&] {
          TORCH_CHECK(group().has_calibration, "no calibration");
          return group().calibration.in_the_large.estimate;
        });
        put(id, g + "sensitivity", [&] { return group().sensitivity.estimate; });
        put(id, g + "specificity", [&] { return group().specificity.estimate; });
      }
      put(id, "auroc_gap", [&] {
        TORCH_CHECK(audited && f.gaps[0].defined, "no gap");
        return f.gaps[0].gap.estimate;
      });
    } else if (kind == "survival") {
      long h = 0;
      in >> h;
      const auto t = read_doubles(in, n);
      const auto e = to_labels(read_doubles(in, n));
      const auto r = read_doubles(in, n);
      const auto horizons = read_doubles(in, h);
      put(id, "c_index", [&] { return E::c_index(t, e, r); });
      for (long k = 0; k < h; ++k) {
        put(id, "td_auroc_" + std::to_string(k + 1), [&] {
          return E::time_dependent_auroc(t, e, r, horizons[static_cast<size_t>(k)]);
        });
      }
    } else {
      std::fprintf(stderr, "medcl_rcheck: unknown case kind '%s' on line %d\n", kind.c_str(), id);
      return 2;
    }
  }
  return 0;
}
