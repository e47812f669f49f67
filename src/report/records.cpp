// Result records and report.json values, checked; the schema validator.
#include <medcl/eval/report.h>

#include "internal.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <locale>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {

namespace report_detail {

void check_finite(const char* fn, const std::string& what, double v) {
  TORCH_CHECK(std::isfinite(v), fn, ": ", what, " must be finite, got ", v);
}

Json estimate_json(const char* fn, const std::string& what, const Estimate& e) {
  check_finite(fn, what + " value", e.value);
  Json j = Json::object();
  j["value"] = e.value;
  if (!e.has_interval) {
    j["interval"] = Json();
    return j;
  }
  check_finite(fn, what + " lower bound", e.lower);
  check_finite(fn, what + " upper bound", e.upper);
  TORCH_CHECK(
      e.lower <= e.value && e.value <= e.upper,
      fn,
      ": ",
      what,
      ": expected lower <= value <= upper, got ",
      e.lower,
      " <= ",
      e.value,
      " <= ",
      e.upper);
  TORCH_CHECK(
      e.level > 0 && e.level < 1,
      fn,
      ": ",
      what,
      ": expected a confidence level in (0, 1), got ",
      e.level);
  Json i = Json::object();
  i["lower"] = e.lower;
  i["upper"] = e.upper;
  i["level"] = e.level;
  i["method"] = e.method;
  j["interval"] = std::move(i);
  return j;
}

const char* const kResultFields[] = {
    "task",
    "model",
    "metric",
    "value",
    "interval",
    "n",
    "patients",
    "fraction",
    "seed",
    "subgroup",
    "cohort",
    "reference_model",
    "detail"};

Json text_or_null(const std::string& s) {
  return s.empty() ? Json() : Json(s);
}

// The record of one result, checked (see Report::add_result).
Json result_json(const Result& r) {
  const char* fn = "Report::add_result";
  std::string what =
      "metric " + r.task() + "/" + (r.model().empty() ? "" : r.model() + "/") + r.metric();
  if (!r.subgroup_attribute().empty() || !r.subgroup().empty()) {
    what += " (" + r.subgroup_attribute() + "=" + r.subgroup() + ")";
  }
  if (!r.cohort().empty()) {
    what += " (cohort " + r.cohort() + ")";
  }
  TORCH_CHECK(
      !r.task().empty() && !r.metric().empty(),
      fn,
      ": expected a task and a metric name, got \"",
      r.task(),
      "\" and \"",
      r.metric(),
      "\"");
  TORCH_CHECK(
      r.subgroup_attribute().empty() == r.subgroup().empty(),
      fn,
      ": ",
      what,
      ": expected both a subgroup attribute and a group, or neither, got \"",
      r.subgroup_attribute(),
      "\" and \"",
      r.subgroup(),
      "\"");
  TORCH_CHECK(
      !r.n().has_value() || *r.n() > 0,
      fn,
      ": ",
      what,
      ": expected n > 0, got ",
      r.n().value_or(0));
  TORCH_CHECK(
      !r.patients().has_value() || *r.patients() > 0,
      fn,
      ": ",
      what,
      ": expected patients > 0, got ",
      r.patients().value_or(0));
  TORCH_CHECK(
      !r.fraction().has_value() ||
          (std::isfinite(*r.fraction()) && *r.fraction() > 0 && *r.fraction() <= 1),
      fn,
      ": ",
      what,
      ": expected a label fraction in (0, 1], got ",
      r.fraction().value_or(0));
  Json e = estimate_json(fn, what, r.value());
  Json j = Json::object();
  j["task"] = r.task();
  j["model"] = text_or_null(r.model());
  j["metric"] = r.metric();
  j["value"] = e.at("value");
  j["interval"] = e.at("interval");
  j["n"] = r.n().has_value() ? Json(*r.n()) : Json();
  j["patients"] = r.patients().has_value() ? Json(*r.patients()) : Json();
  j["fraction"] = r.fraction().has_value() ? Json(*r.fraction()) : Json();
  j["seed"] = r.seed().has_value() ? Json(*r.seed()) : Json();
  if (r.subgroup().empty()) {
    j["subgroup"] = Json();
  } else {
    Json g = Json::object();
    g["attribute"] = r.subgroup_attribute();
    g["group"] = r.subgroup();
    j["subgroup"] = std::move(g);
  }
  j["cohort"] = text_or_null(r.cohort());
  j["reference_model"] = text_or_null(r.reference_model());
  j["detail"] = text_or_null(r.detail());
  return j;
}

namespace {

/// The rows of `evaluation.label_efficiency` (task -> rows). The fields added with the patient and
/// record counts (seeds ... note) may be absent: a report written before them is still version 2.
void validate_label_efficiency(
    const Json& le,
    const std::function<void(const std::string&, const std::string&)>& bad) {
  auto got = [](const Json& j) { return std::string(", got ") + j.dump(); };
  const std::string base = "evaluation.label_efficiency";
  if (!le.is_object()) {
    bad(base, "expected an object (task -> rows)" + got(le));
    return;
  }
  auto finite = [](const Json& j) { return j.is_number() && std::isfinite(j.as_double()); };
  auto fraction_ok = [&](const Json& j) {
    return finite(j) && j.as_double() > 0 && j.as_double() <= 1;
  };
  for (const auto& task : le.items()) {
    const std::string at_task = base + "." + task.first;
    if (!task.second.is_array()) {
      bad(at_task, "expected an array of rows" + got(task.second));
      continue;
    }
    for (size_t i = 0; i < task.second.size(); ++i) {
      const Json& row = task.second[i];
      const std::string at = at_task + "[" + std::to_string(i) + "]";
      if (!row.is_object()) {
        bad(at, "expected an object" + got(row));
        continue;
      }
      bool complete = true;
      for (const char* f : {"model", "metric", "fraction", "repeats", "mean", "sd", "interval"}) {
        if (!row.contains(f)) {
          bad(at + "." + f, "missing");
          complete = false;
        }
      }
      if (!complete) {
        continue;
      }
      if (!row.at("model").is_string()) {
        bad(at + ".model", "expected a string" + got(row.at("model")));
      }
      if (!row.at("metric").is_string() || row.at("metric").as_string().empty()) {
        bad(at + ".metric", "expected a non-empty string" + got(row.at("metric")));
      }
      if (!fraction_ok(row.at("fraction"))) {
        bad(at + ".fraction", "expected a number in (0, 1]" + got(row.at("fraction")));
      }
      const Json& repeats = row.at("repeats");
      size_t n = 0;
      double sum = 0;
      bool repeats_ok = repeats.is_array() && repeats.size() > 0;
      for (size_t k = 0; repeats_ok && k < repeats.size(); ++k) {
        repeats_ok = finite(repeats[k]);
        sum += repeats_ok ? repeats[k].as_double() : 0;
      }
      if (!repeats_ok) {
        bad(at + ".repeats", "expected a non-empty array of finite numbers" + got(repeats));
      } else {
        n = repeats.size();
      }
      const Json& mean = row.at("mean");
      if (!finite(mean)) {
        bad(at + ".mean", "expected a finite number" + got(mean));
      } else if (
          n > 0 &&
          std::fabs(mean.as_double() - sum / static_cast<double>(n)) >
              1e-9 * std::max(1.0, std::fabs(mean.as_double()))) {
        bad(at + ".mean",
            "expected the mean of the repeats (" + std::to_string(sum / static_cast<double>(n)) +
                ")" + got(mean));
      }
      const Json& sd = row.at("sd");
      if (n == 1 && !sd.is_null()) {
        bad(at + ".sd", "expected null with one repeat" + got(sd));
      } else if (n > 1 && !(finite(sd) && sd.as_double() >= 0)) {
        bad(at + ".sd", "expected a finite number >= 0" + got(sd));
      }
      // Optional fields (see above).
      auto opt = [&](const char* f) { return row.contains(f) ? row.at(f) : Json(); };
      const bool fixed = opt("fixed_subset").is_bool() && opt("fixed_subset").as_bool();
      if (row.contains("fixed_subset") && !row.at("fixed_subset").is_bool()) {
        bad(at + ".fixed_subset", "expected true or false" + got(row.at("fixed_subset")));
      }
      const Json& iv = row.at("interval");
      if (!iv.is_null()) {
        bool ok = iv.is_object();
        for (const char* f : {"lower", "upper", "level"}) {
          ok = ok && iv.contains(f) && finite(iv.at(f));
        }
        ok = ok && iv.contains("method") && iv.at("method").is_string();
        if (!ok) {
          bad(at + ".interval",
              "expected null or {lower, upper, level: finite numbers, method: string}" + got(iv));
        } else {
          if (finite(mean) &&
              !(iv.at("lower").as_double() <= mean.as_double() &&
                mean.as_double() <= iv.at("upper").as_double())) {
            bad(at + ".interval", "expected lower <= mean <= upper");
          }
          if (!(iv.at("level").as_double() > 0 && iv.at("level").as_double() < 1)) {
            bad(at + ".interval.level", "expected a level in (0, 1)");
          }
        }
        if (n == 1) {
          bad(at + ".interval", "expected null with one repeat");
        }
        if (fixed) {
          bad(at + ".interval",
              "expected null: every repeat used the same patients (fixed_subset), so the repeats "
              "cannot vary with the label subset");
        }
      }
      const Json& seeds = opt("seeds");
      if (!seeds.is_null()) {
        bool ok = seeds.is_array() && seeds.size() == n;
        for (size_t k = 0; ok && k < seeds.size(); ++k) {
          ok = seeds[k].is_integer();
          for (size_t j = 0; ok && j < k; ++j) {
            ok = seeds[j].as_int64() != seeds[k].as_int64();
          }
        }
        if (!ok) {
          bad(at + ".seeds",
              "expected null or distinct integers, one per repeat (" + std::to_string(n) + ")" +
                  got(seeds));
        }
      }
      auto counts = [&](const char* f, const char* avail) {
        const Json& c = opt(f);
        const Json& a = opt(avail);
        if (!a.is_null() && !(a.is_integer() && a.as_int64() > 0)) {
          bad(at + "." + avail, "expected null or a positive integer" + got(a));
        }
        if (c.is_null()) {
          return true;
        }
        bool ok = c.is_array() && c.size() == n;
        for (size_t k = 0; ok && k < c.size(); ++k) {
          ok = c[k].is_integer() && c[k].as_int64() > 0 &&
              (!a.is_integer() || c[k].as_int64() <= a.as_int64());
        }
        if (!ok) {
          bad(at + "." + f,
              std::string("expected null or positive integers, one per repeat (") +
                  std::to_string(n) + "), none above " + avail + got(c));
        }
        return ok;
      };
      const bool patients_ok = counts("patients", "available_patients");
      const bool records_ok = counts("records", "available_records");
      const Json& p = opt("patients");
      const Json& r = opt("records");
      if (patients_ok && records_ok && p.is_array() && r.is_array()) {
        for (size_t k = 0; k < n; ++k) {
          if (r[k].as_int64() < p[k].as_int64()) {
            bad(at + ".records",
                "expected at least one record per patient, got " + r[k].dump() + " records of " +
                    p[k].dump() + " patients in repeat " + std::to_string(k));
            break;
          }
        }
      }
      for (const char* f : {"same_patients_as", "same_count_as"}) {
        const Json& list = opt(f);
        bool ok = list.is_null() || list.is_array();
        for (size_t k = 0; ok && list.is_array() && k < list.size(); ++k) {
          ok = fraction_ok(list[k]);
        }
        if (!ok) {
          bad(at + "." + f, "expected an array of fractions in (0, 1]" + got(list));
        }
      }
      const Json& note = opt("note");
      if (!note.is_null() && !(note.is_string() && !note.as_string().empty())) {
        bad(at + ".note", "expected a non-empty string or null" + got(note));
      }
    }
  }
}

} // namespace

} // namespace report_detail

using namespace report_detail;

std::vector<std::string> validate_report(const Json& doc) {
  std::vector<std::string> problems;
  auto bad = [&](const std::string& where, const std::string& what) {
    problems.push_back(where + ": " + what);
  };
  auto got = [](const Json& j) { return std::string(", got ") + Json::type_name(j.type()); };
  if (!doc.is_object()) {
    bad("report", "expected an object" + got(doc));
    return problems;
  }
  const std::vector<std::string> sections = {
      "schema", "medcl", "data", "pretraining", "evaluation", "checklist"};
  std::vector<std::string> keys;
  for (const auto& kv : doc.items()) {
    keys.push_back(kv.first);
  }
  if (keys != sections) {
    std::string text;
    for (const auto& k : keys) {
      text += (text.empty() ? "" : ", ") + k;
    }
    bad("report",
        "expected the sections schema, medcl, data, pretraining, evaluation, checklist in this "
        "order, got " +
            (text.empty() ? std::string("none") : text));
  }
  if (doc.contains("schema")) {
    const Json& s = doc.at("schema");
    if (!s.is_object() || !s.contains("name") || !s.at("name").is_string() ||
        s.at("name").as_string() != kReportSchemaName) {
      bad("schema.name", std::string("expected \"") + kReportSchemaName + "\"");
    }
    if (!s.is_object() || !s.contains("version") || !s.at("version").is_integer() ||
        s.at("version").as_int64() != kReportSchemaVersion) {
      bad("schema.version",
          "expected " + std::to_string(kReportSchemaVersion) +
              (s.is_object() && s.contains("version") ? ", got " + s.at("version").dump()
                                                      : std::string(", got none")));
    }
  }
  for (const char* name : {"medcl", "data", "pretraining"}) {
    if (doc.contains(name) && !doc.at(name).is_object()) {
      bad(name, "expected an object" + got(doc.at(name)));
    }
  }
  if (doc.contains("evaluation")) {
    const Json& e = doc.at("evaluation");
    if (!e.is_object() || !e.contains("results") || !e.at("results").is_array()) {
      bad("evaluation.results", "expected an array of result records");
    } else {
      const auto& records = e.at("results").elements();
      for (size_t i = 0; i < records.size(); ++i) {
        const Json& r = records[i];
        const std::string at = "evaluation.results[" + std::to_string(i) + "]";
        if (!r.is_object()) {
          bad(at, "expected an object" + got(r));
          continue;
        }
        std::vector<std::string> fields;
        for (const auto& kv : r.items()) {
          fields.push_back(kv.first);
        }
        if (fields !=
            std::vector<std::string>(std::begin(kResultFields), std::end(kResultFields))) {
          std::string text;
          for (const auto& f : fields) {
            text += (text.empty() ? "" : ", ") + f;
          }
          bad(at,
              "expected the fields task, model, metric, value, interval, n, patients, "
              "fraction, seed, subgroup, cohort, reference_model, detail, got " +
                  text);
          continue;
        }
        auto text_field = [&](const char* f, bool nullable) {
          const Json& v = r.at(f);
          if (nullable && v.is_null()) {
            return;
          }
          if (!v.is_string() || v.as_string().empty()) {
            bad(at + "." + f,
                std::string("expected a non-empty string") + (nullable ? " or null" : "") +
                    (v.is_string() ? ", got an empty one" : got(v)));
          }
        };
        text_field("task", false);
        text_field("metric", false);
        text_field("model", true);
        text_field("cohort", true);
        text_field("reference_model", true);
        text_field("detail", true);
        const Json& value = r.at("value");
        const bool value_ok = value.is_number() && std::isfinite(value.as_double());
        if (!value_ok) {
          bad(at + ".value", "expected a finite number" + got(value));
        }
        const Json& iv = r.at("interval");
        if (!iv.is_null()) {
          bool ok = iv.is_object();
          for (const char* f : {"lower", "upper", "level"}) {
            if (ok &&
                !(iv.contains(f) && iv.at(f).is_number() && std::isfinite(iv.at(f).as_double()))) {
              bad(at + ".interval." + f, "expected a finite number");
              ok = false;
            }
          }
          if (ok && !(iv.contains("method") && iv.at("method").is_string())) {
            bad(at + ".interval.method", "expected a string");
            ok = false;
          }
          if (ok && value_ok &&
              !(iv.at("lower").as_double() <= value.as_double() &&
                value.as_double() <= iv.at("upper").as_double())) {
            bad(at + ".interval", "expected lower <= value <= upper");
          }
          if (ok && !(iv.at("level").as_double() > 0 && iv.at("level").as_double() < 1)) {
            bad(at + ".interval.level", "expected a level in (0, 1)");
          }
          if (!iv.is_object()) {
            bad(at + ".interval", "expected an object or null" + got(iv));
          }
        }
        for (const char* f : {"n", "patients"}) {
          const Json& v = r.at(f);
          if (!v.is_null() && !(v.is_integer() && v.as_int64() > 0)) {
            bad(at + "." + f, "expected a positive integer or null, got " + v.dump());
          }
        }
        const Json& fr = r.at("fraction");
        if (!fr.is_null() && !(fr.is_number() && fr.as_double() > 0 && fr.as_double() <= 1)) {
          bad(at + ".fraction", "expected a number in (0, 1] or null, got " + fr.dump());
        }
        if (!r.at("seed").is_null() && !r.at("seed").is_integer()) {
          bad(at + ".seed", "expected an integer or null, got " + r.at("seed").dump());
        }
        const Json& g = r.at("subgroup");
        if (!g.is_null() &&
            !(g.is_object() && g.size() == 2 && g.contains("attribute") && g.contains("group") &&
              g.at("attribute").is_string() && g.at("group").is_string() &&
              !g.at("attribute").as_string().empty() && !g.at("group").as_string().empty())) {
          bad(at + ".subgroup",
              "expected null or {\"attribute\": non-empty string, \"group\": non-empty string}");
        }
      }
    }
  }
  if (doc.contains("pretraining") && doc.at("pretraining").is_object() &&
      doc.at("pretraining").contains("runs")) {
    const Json& runs = doc.at("pretraining").at("runs");
    if (!runs.is_object()) {
      bad("pretraining.runs", "expected an object of runs" + got(runs));
    } else {
      for (const auto& run : runs.items()) {
        if (!run.second.is_object()) {
          bad("pretraining.runs." + run.first, "expected an object" + got(run.second));
        }
      }
    }
  }
  if (doc.contains("evaluation") && doc.at("evaluation").is_object() &&
      doc.at("evaluation").contains("models")) {
    const Json& models = doc.at("evaluation").at("models");
    const Json none = Json::object();
    const Json& runs = doc.contains("pretraining") && doc.at("pretraining").is_object() &&
            doc.at("pretraining").contains("runs") && doc.at("pretraining").at("runs").is_object()
        ? doc.at("pretraining").at("runs")
        : none;
    if (!models.is_object()) {
      bad("evaluation.models", "expected an object of models" + got(models));
    } else {
      for (const auto& m : models.items()) {
        const std::string at = "evaluation.models." + m.first;
        const Json& entry = m.second;
        if (!entry.is_object() || !entry.contains("pretraining") ||
            !entry.contains("pretraining_status") || !entry.at("pretraining_status").is_string()) {
          bad(at, "expected an object with pretraining and pretraining_status");
          continue;
        }
        const std::string status = entry.at("pretraining_status").as_string();
        const Json& link = entry.at("pretraining");
        if (status == "linked") {
          if (!link.is_string() || !runs.contains(link.as_string())) {
            bad(at + ".pretraining", "expected the name of a run in pretraining.runs" + got(link));
          }
        } else if (status == "none" || status == "not recorded") {
          if (!link.is_null()) {
            bad(at + ".pretraining", "expected null for status \"" + status + "\"" + got(link));
          }
        } else {
          bad(at + ".pretraining_status",
              "expected \"linked\", \"none\" or \"not recorded\", got \"" + status + "\"");
        }
      }
    }
  }
  if (doc.contains("evaluation") && doc.at("evaluation").is_object() &&
      doc.at("evaluation").contains("label_efficiency")) {
    validate_label_efficiency(doc.at("evaluation").at("label_efficiency"), bad);
  }
  if (doc.contains("checklist")) {
    const Json& c = doc.at("checklist");
    if (!c.is_array()) {
      bad("checklist", "expected an array" + got(c));
    } else {
      for (size_t i = 0; i < c.size(); ++i) {
        const Json& item = c[i];
        const std::string at = "checklist[" + std::to_string(i) + "]";
        bool ok = item.is_object();
        for (const char* f : {"id", "item", "status", "location"}) {
          ok = ok && item.contains(f) && item.at(f).is_string();
        }
        if (!ok) {
          bad(at, "expected {id, item, status, location} strings");
        } else if (
            item.at("status").as_string() != "present" &&
            item.at("status").as_string() != "missing") {
          bad(at + ".status",
              "expected \"present\" or \"missing\", got \"" + item.at("status").as_string() + "\"");
        }
      }
    }
  }
  return problems;
}

} // namespace eval
} // namespace medcl
