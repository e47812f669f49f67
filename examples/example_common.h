#pragma once

// What the examples on real data share: their command line and the check of the report they write.

#include <medcl/core/json.h>
#include <medcl/eval/label_fractions.h>
#include <medcl/eval/report.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>

namespace example {

/// One label fraction's cell for a console table: "0.712 ± 0.031, 3 pts"; without "± sd" when the
/// subset did not depend on the seed (every patient, or the same patients for every seed), and
/// "= 1%" when another fraction drew the same patients (report.md says the same at more length).
inline std::string fraction_cell(const medcl::eval::LabelEfficiencyPoint& p) {
  char buf[96];
  const long long pts = p.patients.empty() ? 0 : static_cast<long long>(p.patients.front());
  if (p.fixed_subset) {
    std::snprintf(buf, sizeof(buf), "%.3f, %lld pts", p.mean, pts);
  } else {
    std::snprintf(buf, sizeof(buf), "%.3f ± %.3f, %lld pts", p.mean, p.sd, pts);
  }
  std::string cell = buf;
  if (!p.same_patients_as.empty()) {
    std::snprintf(buf, sizeof(buf), " = %g%%", 100 * p.same_patients_as.front());
    cell += buf;
  }
  return cell;
}

struct Args {
  /// Where ./scripts/fetch-data put the data (default: $MEDCL_DATA_DIR, else build/data).
  std::string data;
  /// Where the report goes.
  std::string out;
  int64_t steps = 0;
  /// A reduced run for ctest.
  bool smoke = false;
};

// [--data DIR] [--out DIR] [--steps N] [--smoke]; --smoke caps the steps at `smoke_steps`.
inline Args parse_args(
    int argc,
    char** argv,
    const std::string& name,
    int64_t default_steps,
    int64_t smoke_steps) {
  Args a;
  const char* env = std::getenv("MEDCL_DATA_DIR");
  a.data = env != nullptr ? env : "build/data";
  a.out = name;
  a.steps = default_steps;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << name << ": " << s << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--data") {
      a.data = value();
    } else if (s == "--out") {
      a.out = value();
    } else if (s == "--steps") {
      a.steps = std::stoll(value());
    } else if (s == "--smoke") {
      a.smoke = true;
    } else {
      std::cerr << "usage: " << name << " [--data DIR] [--out DIR] [--steps N] [--smoke]\n";
      std::exit(2);
    }
  }
  if (a.smoke) {
    a.steps = std::min(a.steps, smoke_steps);
  }
  return a;
}

// Reads the report back and counts the checklist items that are missing, except those that do not
// apply to this example (e.g. "calibration" without a binary outcome), and every way the report
// departs from its schema (medcl::eval::validate_report); prints each.
inline int missing_checklist_items(
    const std::string& report_json,
    const std::set<std::string>& not_applicable = {}) {
  std::ifstream in(report_json);
  std::stringstream text;
  text << in.rdbuf();
  const auto doc = medcl::Json::parse(text.str());
  int missing = 0;
  // The report must follow its documented schema (docs/reporting.md).
  for (const auto& problem : medcl::eval::validate_report(doc)) {
    std::fprintf(stderr, "report.json does not follow its schema: %s\n", problem.c_str());
    ++missing;
  }
  // Every compared model points to its own record: a pretraining run, or none said.
  const auto& evaluation = doc.at("evaluation");
  if (evaluation.contains("models")) {
    for (const auto& model : evaluation.at("models").items()) {
      if (model.second.at("pretraining_status").as_string() == "not recorded") {
        std::fprintf(stderr, "model without a pretraining record: %s\n", model.first.c_str());
        ++missing;
      }
    }
  }
  for (const auto& item : doc.at("checklist").elements()) {
    if (item.at("status").as_string() != "present" &&
        not_applicable.count(item.at("id").as_string()) == 0) {
      std::fprintf(stderr, "checklist item missing: %s\n", item.at("item").as_string().c_str());
      ++missing;
    }
  }
  return missing;
}

} // namespace example
