// The report model: sections, adders, figures' data, the checklist and the atomic write.
#include <medcl/core/files.h>
#include <medcl/core/runtime.h>
#include <medcl/eval/report.h>

#include "internal.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <locale>
#include <map>
#include <sstream>
#include <utility>

#if defined(_WIN32)
#include <process.h>
#else
#include <unistd.h>
#endif

namespace medcl {
namespace eval {

namespace fs = std::filesystem;
using namespace report_detail;

namespace {

const char* const kSections[] = {"medcl", "data", "pretraining", "evaluation"};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
#if defined(_WIN32)
  gmtime_s(&tm, &t);
#else
  gmtime_r(&t, &tm);
#endif
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void check_xy(
    const char* fn,
    const std::string& what,
    const std::vector<double>& x,
    const std::vector<double>& y) {
  TORCH_CHECK(!x.empty(), fn, ": ", what, ": expected at least one point, got empty data");
  TORCH_CHECK(
      x.size() == y.size(),
      fn,
      ": ",
      what,
      ": expected x and y of the same length, got ",
      x.size(),
      " and ",
      y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    TORCH_CHECK(
        std::isfinite(x[i]) && std::isfinite(y[i]),
        fn,
        ": ",
        what,
        ": point ",
        i,
        " is not finite (",
        x[i],
        ", ",
        y[i],
        ")");
  }
}

/// A file name made of [A-Za-z0-9_-] (other characters become '_').
std::string file_stem(const std::string& name) {
  std::string s;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        c == '_' || c == '-';
    s += ok ? c : '_';
  }
  return s.empty() ? std::string("figure") : s;
}

/// Non-empty: not null, not "", not [] and not {}.
bool has_content(const Json& j) {
  switch (j.type()) {
    case Json::Type::Null:
      return false;
    case Json::Type::String:
      return !j.as_string().empty();
    case Json::Type::Array:
    case Json::Type::Object:
      return j.size() > 0;
    default:
      return true;
  }
}

const Json* lookup(const Json& doc, const std::string& section, const std::string& key) {
  if (!doc.contains(section) || !doc.at(section).contains(key)) {
    return nullptr;
  }
  return &doc.at(section).at(key);
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TORCH_CHECK(out.is_open(), "Report::write: cannot open ", path.string(), " for writing");
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  TORCH_CHECK(!out.fail(), "Report::write: writing ", path.string(), " failed");
}

/// "0.01", "0.01 and 0.1", "0.01, 0.05 and 0.1".
std::string fraction_list(const std::vector<double>& fractions) {
  std::string out;
  for (size_t i = 0; i < fractions.size(); ++i) {
    out += (i == 0 ? "" : i + 1 == fractions.size() ? " and " : ", ") + number_text(fractions[i]);
  }
  return out;
}

std::vector<double> doubles(const Json& a) {
  std::vector<double> out;
  for (const auto& v : a.elements()) {
    out.push_back(v.as_double());
  }
  return out;
}

/// The parts of a label-efficiency row that depend on the other rows of its task (`same_count_as`:
/// the fractions of the same model and metric whose repeats, seed for seed, used as many patients)
/// and the row's note, in words: why it has no interval, which fractions it collapses with.
void refresh_label_rows(Json& rows) {
  // Rows put there through Report::set may lack fields: they are left as they are.
  static const Json null_value;
  auto field = [](const Json& row, const char* key) -> const Json& {
    return row.is_object() && row.contains(key) ? row.at(key) : null_value;
  };
  auto ours = [&](const Json& row) {
    return row.is_object() && field(row, "model").is_string() && field(row, "metric").is_string() &&
        field(row, "fraction").is_number() && field(row, "repeats").is_array() &&
        field(row, "fixed_subset").is_bool() && field(row, "same_patients_as").is_array();
  };
  for (size_t a = 0; a < rows.size(); ++a) {
    Json& row = rows[a];
    if (!ours(row)) {
      continue;
    }
    std::vector<double> same_count;
    for (size_t b = 0; b < rows.size(); ++b) {
      const Json& other = rows[b];
      if (a != b && ours(other) && !field(row, "patients").is_null() &&
          other.at("model").as_string() == row.at("model").as_string() &&
          other.at("metric").as_string() == row.at("metric").as_string() &&
          field(other, "seeds") == field(row, "seeds") &&
          field(other, "patients") == field(row, "patients")) {
        same_count.push_back(other.at("fraction").as_double());
      }
    }
    std::sort(same_count.begin(), same_count.end());
    row["same_count_as"] = Json::array_of(same_count);

    const size_t n = row.at("repeats").size();
    const Json& patients = field(row, "patients");
    const Json& available = field(row, "available_patients");
    std::vector<std::string> notes;
    if (n == 1) {
      notes.push_back("one repeat: no interval");
    } else if (row.at("fixed_subset").as_bool()) {
      std::string who = "the same patients";
      if (!patients.is_null()) {
        const int64_t p = patients[0].as_int64();
        who = !available.is_null() && p == available.as_int64()
            ? "all " + std::to_string(p) + " training patients"
            : "the same " + std::to_string(p) + " patient" + (p == 1 ? "" : "s");
      }
      notes.push_back(
          "no interval: every repeat was trained on " + who +
          ", so the repeats cannot vary with the label subset");
    } else if (row.at("interval").is_null()) {
      notes.push_back("no interval: all " + std::to_string(n) + " repeats gave the same value");
    }
    const auto same_patients = doubles(row.at("same_patients_as"));
    std::vector<double> count_only;
    for (double f : same_count) {
      if (std::find(same_patients.begin(), same_patients.end(), f) == same_patients.end()) {
        count_only.push_back(f);
      }
    }
    if (!same_patients.empty()) {
      notes.push_back(
          std::string("same patients as fraction") + (same_patients.size() > 1 ? "s " : " ") +
          fraction_list(same_patients) + " in every repeat: these rows measure the same subsets");
    }
    if (!count_only.empty()) {
      notes.push_back(
          std::string("as many patients as fraction") + (count_only.size() > 1 ? "s " : " ") +
          fraction_list(count_only) + " in every repeat");
    }
    std::string note;
    for (const auto& t : notes) {
      note += (note.empty() ? "" : "; ") + t;
    }
    row["note"] = note.empty() ? Json() : Json(note);
  }
}

} // namespace

Report::Report(ReportOptions options) : options_(std::move(options)) {
  TORCH_CHECK(
      options_.terminal() == "pngcairo" || options_.terminal() == "png" ||
          options_.terminal() == "svg",
      "Report: expected terminal \"pngcairo\", \"png\" or \"svg\", got \"",
      options_.terminal(),
      "\"");
  TORCH_CHECK(
      options_.width() > 0 && options_.height() > 0,
      "Report: expected a positive picture size, got ",
      options_.width(),
      "x",
      options_.height());
  doc_ = Json::object();
  for (const char* s : kSections) {
    doc_[s] = Json::object();
  }
  const RuntimeInfo info = runtime_info();
  Json& m = doc_["medcl"];
  m["version"] = info.medcl_version;
  m["libtorch"] = info.torch_version;
  // What the LibTorch was built with, device or not: CUDA runtime (null when CPU only) and NCCL.
  m["libtorch_cuda"] = info.cuda_built ? Json(info.cuda_runtime) : Json();
  m["libtorch_nccl"] = info.nccl_built;
  m["device"] = info.cuda_available
      ? "CUDA (" + std::to_string(info.cuda_device_count) + " device(s) visible)"
      : "CPU (" + std::to_string(info.cpu_threads) + " threads)";
  m["compiler"] = info.compiler;
  m["date_utc"] = utc_now();
}

Json& Report::section(const std::string& name, const char* fn) {
  return const_cast<Json&>(static_cast<const Report&>(*this).section(name, fn));
}

const Json& Report::section(const std::string& name, const char* fn) const {
  TORCH_CHECK(
      doc_.contains(name),
      fn,
      ": expected a section \"medcl\", \"data\", \"pretraining\" or \"evaluation\", got \"",
      name,
      "\"",
      name == "checklist" ? " (the checklist is computed from the other sections)" : "");
  return doc_.at(name);
}

void Report::begin_pretraining(const std::string& name) {
  TORCH_CHECK(!name.empty(), "Report::begin_pretraining: expected a run name, got an empty one");
  Json& runs = doc_["pretraining"]["runs"];
  if (!runs.contains(name)) {
    runs[name] = Json::object();
  }
  run_ = name;
}

std::vector<std::string> Report::pretraining_runs() const {
  std::vector<std::string> out;
  const Json& p = doc_.at("pretraining");
  if (p.contains("runs")) {
    for (const auto& kv : p.at("runs").items()) {
      out.push_back(kv.first);
    }
  }
  return out;
}

Json& Report::run_entry() {
  if (run_.empty()) {
    begin_pretraining("pretraining");
  }
  return doc_["pretraining"]["runs"][run_];
}

void Report::set_model_pretraining(const std::string& model, const std::string& run) {
  const char* fn = "Report::set_model_pretraining";
  TORCH_CHECK(!model.empty(), fn, ": expected a model name, got an empty one");
  if (!run.empty()) {
    const auto runs = pretraining_runs();
    std::string known;
    for (const auto& r : runs) {
      known += (known.empty() ? "\"" : ", \"") + r + "\"";
    }
    TORCH_CHECK(
        std::find(runs.begin(), runs.end(), run) != runs.end(),
        fn,
        ": model \"",
        model,
        "\": no pretraining run \"",
        run,
        "\" (runs: ",
        known.empty() ? std::string("none") : known,
        ")");
  }
  doc_["evaluation"]["models"][model]["pretraining"] = run.empty() ? Json() : Json(run);
}

void Report::describe_model(const std::string& model, const std::string& key, Json value) {
  TORCH_CHECK(!model.empty(), "Report::describe_model: expected a model name, got an empty one");
  TORCH_CHECK(
      !key.empty() && key != "pretraining" && key != "pretraining_status",
      "Report::describe_model: expected a key other than \"pretraining\" (set_model_pretraining) "
      "and \"pretraining_status\", got \"",
      key,
      "\"");
  doc_["evaluation"]["models"][model][key] = std::move(value);
}

Json Report::models_json() const {
  const Json& e = doc_.at("evaluation");
  const Json none = Json::object();
  const Json& given = e.contains("models") ? e.at("models") : none;
  std::vector<std::string> names;
  auto add = [&](const std::string& m) {
    if (!m.empty() && std::find(names.begin(), names.end(), m) == names.end()) {
      names.push_back(m);
    }
  };
  for (const auto& r : results_) {
    add(r.model());
  }
  for (const auto& kv : given.items()) {
    add(kv.first);
  }
  const auto runs = pretraining_runs();
  Json out = Json::object();
  for (const auto& m : names) {
    Json entry = Json::object();
    const bool described = given.contains(m);
    if (described && given.at(m).contains("pretraining")) {
      const Json& link = given.at(m).at("pretraining");
      entry["pretraining"] = link;
      entry["pretraining_status"] = link.is_null() ? "none" : "linked";
    } else if (std::find(runs.begin(), runs.end(), m) != runs.end()) {
      entry["pretraining"] = m; // a run of the model's name
      entry["pretraining_status"] = "linked";
    } else {
      entry["pretraining"] = Json();
      entry["pretraining_status"] = "not recorded";
    }
    if (described) {
      for (const auto& kv : given.at(m).items()) {
        if (kv.first != "pretraining") {
          entry[kv.first] = kv.second;
        }
      }
    }
    out[m] = std::move(entry);
  }
  return out;
}

void Report::set(const std::string& section_name, const std::string& key, Json value) {
  if (section_name == "pretraining") {
    TORCH_CHECK(!key.empty(), "Report::set: expected a non-empty key in section pretraining");
    TORCH_CHECK(
        key != "figures" && key != "runs",
        "Report::set: \"pretraining.",
        key,
        "\" is kept by the report (add_loss_curve, begin_pretraining)");
    run_entry()[key] = std::move(value);
    return;
  }
  TORCH_CHECK(
      !(section_name == "evaluation" && key == "models"),
      "Report::set: \"evaluation.models\" is kept by set_model_pretraining and describe_model");
  Json& s = section(section_name, "Report::set");
  TORCH_CHECK(!key.empty(), "Report::set: expected a non-empty key in section ", section_name);
  TORCH_CHECK(
      key != "figures",
      "Report::set: \"",
      section_name,
      ".figures\" is kept by the figure adders (add_roc_curve, add_loss_curve...)");
  TORCH_CHECK(
      !(section_name == "evaluation" && key == "results"),
      "Report::set: \"evaluation.results\" is kept by add_result (and add_metric, add_subgroup, "
      "add_external_validation)");
  s[key] = std::move(value);
}

const Json& Report::get(const std::string& section_name, const std::string& key) const {
  if (section_name == "pretraining" && key != "runs" && key != "figures") {
    // The current run's value.
    TORCH_CHECK(
        !run_.empty(),
        "Report::get: no pretraining run has been recorded (looking for pretraining.",
        key,
        ")");
    const Json& run = doc_.at("pretraining").at("runs").at(run_);
    TORCH_CHECK(
        run.contains(key), "Report::get: pretraining run \"", run_, "\" has no \"", key, "\"");
    return run.at(key);
  }
  return section(section_name, "Report::get").at(key);
}

void Report::set_command_line(int argc, const char* const* argv) {
  TORCH_CHECK(argc >= 0, "Report::set_command_line: expected argc >= 0, got ", argc);
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    args.emplace_back(argv[i] != nullptr ? argv[i] : "");
  }
  set_command_line(std::move(args));
}

void Report::set_command_line(std::vector<std::string> arguments) {
  doc_["medcl"]["command_line"] = Json::array_of(arguments);
}

void Report::set_device(std::string device) {
  doc_["medcl"]["device"] = std::move(device);
}

void Report::set_corpus(Json description) {
  doc_["data"]["corpus"] = std::move(description);
}

void Report::add_data_file(const std::string& path, const std::string& name) {
  TORCH_CHECK(!path.empty(), "Report::add_data_file: expected a path, got an empty one");
  std::uintmax_t bytes = 0;
  const std::string digest = sha256_file(path, &bytes);
  const std::string shown = name.empty() ? fs::path(path).filename().string() : name;
  Json entry = Json::object();
  entry["name"] = shown;
  entry["bytes"] = static_cast<int64_t>(bytes);
  entry["sha256"] = digest;
  Json& files = doc_["data"]["files"];
  if (!files.is_array()) {
    files = Json::array();
  }
  Json kept = Json::array();
  for (const auto& f : files.elements()) {
    if (f.at("name").as_string() != shown) {
      kept.push_back(f);
    }
  }
  kept.push_back(std::move(entry));
  files = std::move(kept);
}

void Report::set_split_rule(std::string rule) {
  doc_["data"]["split_rule"] = std::move(rule);
}

void Report::add_split(const std::string& split, int64_t patients, int64_t samples) {
  TORCH_CHECK(!split.empty(), "Report::add_split: expected a split name, got an empty one");
  TORCH_CHECK(
      patients >= 0 && samples >= patients,
      "Report::add_split: split \"",
      split,
      "\": expected 0 <= patients <= samples, got ",
      patients,
      " patient(s) and ",
      samples,
      " sample(s)");
  Json& row = doc_["data"]["splits"][split];
  row["patients"] = patients;
  row["samples"] = samples;
}

void Report::set_leakage_check(bool passed, std::string detail) {
  Json j = Json::object();
  j["passed"] = passed;
  j["detail"] = std::move(detail);
  doc_["data"]["leakage_check"] = std::move(j);
}

void Report::set_method(std::string method) {
  run_entry()["method"] = std::move(method);
}

void Report::set_loss(std::string name, Json options) {
  Json j = Json::object();
  j["name"] = std::move(name);
  j["options"] = std::move(options);
  run_entry()["loss"] = std::move(j);
}

void Report::set_pairing_rule(std::string rule) {
  run_entry()["pairing"] = std::move(rule);
}

void Report::set_augmentation(Json policy) {
  run_entry()["augmentation"] = std::move(policy);
}

void Report::set_hyperparameter(const std::string& name, Json value) {
  TORCH_CHECK(!name.empty(), "Report::set_hyperparameter: expected a name, got an empty one");
  if (value.is_number() && !value.is_integer()) {
    check_finite(
        "Report::set_hyperparameter", "hyper-parameter \"" + name + "\"", value.as_double());
  }
  run_entry()["hyperparameters"][name] = std::move(value);
}

void Report::set_seed(const std::string& name, int64_t seed) {
  TORCH_CHECK(!name.empty(), "Report::set_seed: expected a name, got an empty one");
  run_entry()["seeds"][name] = seed;
}

void Report::set_training_result(int64_t steps, double final_loss) {
  TORCH_CHECK(steps >= 0, "Report::set_training_result: expected steps >= 0, got ", steps);
  check_finite("Report::set_training_result", "final loss", final_loss);
  run_entry()["steps"] = steps;
  run_entry()["final_loss"] = final_loss;
}

void Report::add_result(const Result& result) {
  result_json(result); // checks; the record is built again when the report is
  results_.push_back(result);
}

std::vector<Result> Report::results() const {
  return results_;
}

void Report::add_metric(const std::string& task, const std::string& name, const Estimate& value) {
  add_result(Result(task, "", name, value));
}

void Report::add_metric(
    const std::string& task,
    const std::string& name,
    double value,
    double lower,
    double upper,
    const std::string& method_of_interval,
    double level) {
  add_metric(task, name, Estimate(value, lower, upper, method_of_interval, level));
}

void Report::add_decision_curve(
    const std::string& task,
    const std::string& model,
    const eval::DecisionCurve& d) {
  const char* fn = "Report::add_decision_curve";
  const std::string what = "decision curve " + task + "/" + model;
  const size_t n = d.thresholds.size();
  TORCH_CHECK(n > 0, fn, ": ", what, ": expected at least one threshold, got none");
  TORCH_CHECK(
      d.net_benefit.size() == n && d.treat_all.size() == n,
      fn,
      ": ",
      what,
      ": expected thresholds, net_benefit and treat_all of one length, got ",
      n,
      ", ",
      d.net_benefit.size(),
      " and ",
      d.treat_all.size());
  Json t = Json::array(), nb = Json::array(), all = Json::array();
  for (size_t i = 0; i < n; ++i) {
    check_finite(fn, what + " threshold " + std::to_string(i), d.thresholds[i]);
    TORCH_CHECK(
        d.thresholds[i] > 0 && d.thresholds[i] < 1,
        fn,
        ": ",
        what,
        ": threshold ",
        i,
        " is ",
        d.thresholds[i],
        "; thresholds are probabilities in (0, 1)");
    check_finite(fn, what + " net benefit " + std::to_string(i), d.net_benefit[i]);
    check_finite(fn, what + " treat-all " + std::to_string(i), d.treat_all[i]);
    t.push_back(d.thresholds[i]);
    nb.push_back(d.net_benefit[i]);
    all.push_back(d.treat_all[i]);
  }
  Json entry = Json::object();
  entry["thresholds"] = std::move(t);
  entry["net_benefit"] = std::move(nb);
  entry["treat_all"] = std::move(all);
  doc_["evaluation"]["decision_curves"][task][model] = std::move(entry);
}

void Report::add_fairness(
    const std::string& task,
    const std::string& model,
    const std::string& attribute,
    const eval::FairnessReport& audit,
    const std::string& threshold_rule) {
  const char* fn = "Report::add_fairness";
  const std::string what = "fairness " + task + "/" + model + "/" + attribute;
  TORCH_CHECK(
      !task.empty() && !model.empty() && !attribute.empty(),
      fn,
      ": expected a task, a model and an attribute, got \"",
      task,
      "\", \"",
      model,
      "\" and \"",
      attribute,
      "\"");
  TORCH_CHECK(!audit.groups.empty(), fn, ": ", what, ": expected at least one group, got none");
  check_finite(fn, what + " threshold", audit.threshold);
  auto interval = [&](const std::string& name, const eval::Interval& i) {
    return estimate_json(fn, what + " " + name, Estimate(i));
  };
  Json groups = Json::array(), too_small = Json::array();
  for (const auto& g : audit.groups) {
    Json j = Json::object();
    j["group"] = g.name;
    j["n"] = g.n;
    j["positives"] = g.positives;
    j["patients"] = g.patients;
    j["estimable"] = g.estimable;
    if (!g.estimable) {
      j["note"] = g.note;
      too_small.push_back(g.name);
      groups.push_back(std::move(j));
      continue;
    }
    const std::string at = "group '" + g.name + "'";
    j["auroc"] = interval(at + " AUROC", g.auroc);
    if (g.has_calibration) {
      j["calibration_slope"] = interval(at + " calibration slope", g.calibration.slope);
      j["calibration_intercept"] = interval(at + " calibration intercept", g.calibration.intercept);
      j["calibration_in_the_large"] =
          interval(at + " calibration-in-the-large", g.calibration.in_the_large);
    } else {
      j["calibration_slope"] = Json();
      j["calibration_intercept"] = Json();
      j["calibration_in_the_large"] = Json();
      j["calibration_note"] = g.calibration_note;
    }
    j["sensitivity"] = interval(at + " sensitivity", g.sensitivity);
    j["specificity"] = interval(at + " specificity", g.specificity);
    Json counts = Json::object();
    counts["true_positives"] = g.operating_point.true_positives;
    counts["false_negatives"] = g.operating_point.false_negatives;
    counts["true_negatives"] = g.operating_point.true_negatives;
    counts["false_positives"] = g.operating_point.false_positives;
    j["counts"] = std::move(counts);
    groups.push_back(std::move(j));
  }
  Json gaps = Json::array();
  for (const auto& gap : audit.gaps) {
    Json j = Json::object();
    j["metric"] = gap.metric;
    if (gap.defined) {
      Estimate e(gap.gap);
      e.has_interval = gap.has_interval;
      j["gap"] = estimate_json(fn, what + " " + gap.metric + " gap", e);
      j["highest"] = gap.highest;
      j["lowest"] = gap.lowest;
      j["resamples"] = gap.replicates;
    } else {
      j["gap"] = Json();
    }
    if (!gap.note.empty()) {
      j["note"] = gap.note;
    }
    gaps.push_back(std::move(j));
  }
  Json entry = Json::object();
  entry["threshold"] = audit.threshold;
  entry["threshold_rule"] = threshold_rule.empty() ? std::string("given") : threshold_rule;
  entry["min_positives"] = audit.min_positives;
  entry["min_negatives"] = audit.min_negatives;
  entry["groups"] = std::move(groups);
  entry["too_small"] = std::move(too_small);
  entry["gaps"] = std::move(gaps);
  doc_["evaluation"]["fairness"][task][model][attribute] = std::move(entry);
}

void Report::add_calibration(
    const std::string& task,
    const std::string& model,
    const eval::Calibration& c) {
  const char* fn = "Report::add_calibration";
  const std::string what = "calibration " + task + "/" + model;
  const size_t n = c.mean_probability.size();
  TORCH_CHECK(n > 0, fn, ": ", what, ": expected at least one bin, got none");
  TORCH_CHECK(
      c.observed_rate.size() == n && c.bin_lower.size() == n && c.bin_upper.size() == n &&
          c.count.size() == n,
      fn,
      ": ",
      what,
      ": expected bin_lower, bin_upper, mean_probability, observed_rate and count of one length, "
      "got ",
      c.bin_lower.size(),
      ", ",
      c.bin_upper.size(),
      ", ",
      n,
      ", ",
      c.observed_rate.size(),
      " and ",
      c.count.size());
  check_finite(fn, what + " ECE", c.ece);
  Json bins = Json::array();
  for (size_t i = 0; i < n; ++i) {
    for (double v : {c.bin_lower[i], c.bin_upper[i], c.mean_probability[i], c.observed_rate[i]}) {
      check_finite(fn, what + " bin " + std::to_string(i), v);
    }
    Json b = Json::object();
    b["lower"] = c.bin_lower[i];
    b["upper"] = c.bin_upper[i];
    b["mean_probability"] = c.mean_probability[i];
    b["observed_rate"] = c.observed_rate[i];
    b["count"] = c.count[i];
    bins.push_back(std::move(b));
  }
  Json entry = Json::object();
  entry["ece"] = c.ece;
  entry["bins"] = std::move(bins);
  doc_["evaluation"]["calibration"][task][model] = std::move(entry);
}

void Report::add_calibration(
    const std::string& task,
    const std::string& model,
    const eval::Calibration& c,
    const eval::LogisticCalibration& fit) {
  const char* fn = "Report::add_calibration";
  const std::string what = "calibration " + task + "/" + model;
  auto interval = [&](const char* name, const eval::Interval& i) {
    for (double v : {i.estimate, i.lower, i.upper}) {
      check_finite(fn, what + " " + name, v);
    }
    Json j = Json::object();
    j["value"] = i.estimate;
    j["lower"] = i.lower;
    j["upper"] = i.upper;
    j["level"] = i.level;
    j["method"] = i.method;
    return j;
  };
  Json slope = interval("slope", fit.slope);
  Json intercept = interval("intercept", fit.intercept);
  Json in_the_large = interval("in-the-large", fit.in_the_large);
  add_calibration(task, model, c);
  auto& entry = doc_["evaluation"]["calibration"][task][model];
  entry["slope"] = std::move(slope);
  entry["intercept"] = std::move(intercept);
  entry["in_the_large"] = std::move(in_the_large);
}

void Report::add_label_fraction(
    const std::string& task,
    const std::string& model,
    const std::string& metric,
    double fraction,
    const std::vector<double>& repeats) {
  add_label_fraction(LabelFractionResult(task, model, metric, fraction, repeats));
}

void Report::add_label_fraction(const LabelFractionResult& r) {
  const char* fn = "Report::add_label_fraction";
  const std::string what = "label fraction " + r.task() + "/" + r.model() + "/" + r.metric() +
      " at " + number_text(r.fraction());
  TORCH_CHECK(
      !r.task().empty() && !r.metric().empty(),
      fn,
      ": ",
      what,
      ": expected a task and a metric name, got \"",
      r.task(),
      "\" and \"",
      r.metric(),
      "\"");
  TORCH_CHECK(
      std::isfinite(r.fraction()) && r.fraction() > 0 && r.fraction() <= 1,
      fn,
      ": ",
      what,
      ": expected a fraction in (0, 1], got ",
      r.fraction());
  const auto& repeats = r.repeats();
  TORCH_CHECK(!repeats.empty(), fn, ": ", what, ": expected at least one repeat, got none");
  double mean = 0;
  for (size_t i = 0; i < repeats.size(); ++i) {
    check_finite(fn, what + " repeat " + std::to_string(i), repeats[i]);
    mean += repeats[i];
  }
  const auto n = static_cast<int64_t>(repeats.size());
  mean /= static_cast<double>(n);
  auto one_per_repeat = [&](const char* name, size_t size) {
    TORCH_CHECK(
        size == 0 || size == repeats.size(),
        fn,
        ": ",
        what,
        ": expected one ",
        name,
        " per repeat (",
        repeats.size(),
        ") or none, got ",
        size);
  };
  one_per_repeat("seed", r.seeds().size());
  one_per_repeat("patient count", r.patients().size());
  one_per_repeat("record count", r.records().size());
  for (size_t i = 0; i < r.seeds().size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      TORCH_CHECK(
          r.seeds()[i] != r.seeds()[j],
          fn,
          ": ",
          what,
          ": seed ",
          r.seeds()[i],
          " appears twice (a repeated seed draws the same subset: not a repeat)");
    }
  }
  auto positive = [&](const char* name, int64_t v) {
    TORCH_CHECK(v > 0, fn, ": ", what, ": expected ", name, " >= 1, got ", v);
  };
  const auto& ap = r.available_patients();
  const auto& ar = r.available_records();
  if (ap) {
    positive("available patients", *ap);
  }
  if (ar) {
    positive("available records", *ar);
    TORCH_CHECK(
        !ap || *ar >= *ap,
        fn,
        ": ",
        what,
        ": expected available records >= available patients, got ",
        *ar,
        " and ",
        *ap);
  }
  for (size_t i = 0; i < r.patients().size(); ++i) {
    const int64_t p = r.patients()[i];
    positive("patients", p);
    TORCH_CHECK(
        !ap || p <= *ap,
        fn,
        ": ",
        what,
        ": repeat ",
        i,
        " used ",
        p,
        " patients, more than the ",
        ap.value_or(0),
        " available");
  }
  for (size_t i = 0; i < r.records().size(); ++i) {
    const int64_t c = r.records()[i];
    positive("records", c);
    TORCH_CHECK(
        r.patients().empty() || c >= r.patients()[i],
        fn,
        ": ",
        what,
        ": repeat ",
        i,
        " used ",
        c,
        " records of ",
        r.patients().empty() ? 0 : r.patients()[i],
        " patients (each patient has at least one record)");
    TORCH_CHECK(
        !ar || c <= *ar,
        fn,
        ": ",
        what,
        ": repeat ",
        i,
        " used ",
        c,
        " records, more than the ",
        ar.value_or(0),
        " available");
  }
  for (double f : r.same_patients_as()) {
    TORCH_CHECK(
        std::isfinite(f) && f > 0 && f <= 1 && f != r.fraction(),
        fn,
        ": ",
        what,
        ": expected same_patients_as to list other fractions in (0, 1], got ",
        f);
  }
  const bool equal =
      std::all_of(repeats.begin(), repeats.end(), [&](double v) { return v == repeats.front(); });
  Json row = Json::object();
  row["model"] = r.model();
  row["metric"] = r.metric();
  row["fraction"] = r.fraction();
  row["repeats"] = Json::array_of(repeats);
  row["mean"] = mean;
  if (n > 1) {
    double ss = 0;
    for (double v : repeats) {
      ss += (v - mean) * (v - mean);
    }
    row["sd"] = std::sqrt(ss / static_cast<double>(n - 1));
  } else {
    row["sd"] = Json();
  }
  // No interval where the repeats could not vary: a t interval of identical values has width 0
  // and would read as certainty.
  if (n > 1 && !r.fixed_subset() && !equal) {
    const Interval iv = mean_interval(repeats, 0.95);
    Json i = Json::object();
    i["lower"] = iv.lower;
    i["upper"] = iv.upper;
    i["level"] = iv.level;
    i["method"] = "t interval of the mean over " + std::to_string(n) + " repeats";
    row["interval"] = std::move(i);
  } else {
    row["interval"] = Json();
  }
  auto list_or_null = [](const std::vector<int64_t>& v) {
    return v.empty() ? Json() : Json::array_of(v);
  };
  row["seeds"] = list_or_null(r.seeds());
  row["patients"] = list_or_null(r.patients());
  row["records"] = list_or_null(r.records());
  row["available_patients"] = ap ? Json(*ap) : Json();
  row["available_records"] = ar ? Json(*ar) : Json();
  row["fixed_subset"] = r.fixed_subset();
  std::vector<double> same = r.same_patients_as();
  std::sort(same.begin(), same.end());
  same.erase(std::unique(same.begin(), same.end()), same.end());
  row["same_patients_as"] = Json::array_of(same);
  row["same_count_as"] = Json::array();
  row["note"] = Json();
  Json& rows = doc_["evaluation"]["label_efficiency"][r.task()];
  if (rows.is_null()) {
    rows = Json::array();
  }
  bool replaced = false;
  for (size_t k = 0; k < rows.size() && !replaced; ++k) {
    const Json& old = rows[k];
    if (old.is_object() && old.contains("model") && old.contains("metric") &&
        old.contains("fraction") && old.at("model") == Json(r.model()) &&
        old.at("metric") == Json(r.metric()) && old.at("fraction") == Json(r.fraction())) {
      rows[k] = std::move(row);
      replaced = true;
    }
  }
  if (!replaced) {
    rows.push_back(std::move(row));
  }
  refresh_label_rows(rows);
}

void Report::add_subgroup(
    const std::string& task,
    const std::string& attribute,
    const std::string& group,
    const std::string& metric,
    int64_t n,
    const Estimate& value) {
  const std::string what = "subgroup " + task + "/" + attribute + "=" + group + "/" + metric;
  TORCH_CHECK(n > 0, "Report::add_subgroup: ", what, ": expected n > 0, got ", n);
  TORCH_CHECK(
      !attribute.empty() && !group.empty(),
      "Report::add_subgroup: ",
      what,
      ": expected a subgroup attribute and a group, got \"",
      attribute,
      "\" and \"",
      group,
      "\"");
  add_result(Result(task, "", metric, value).n(n).subgroup_attribute(attribute).subgroup(group));
}

void Report::add_external_validation(
    const std::string& task,
    const std::string& cohort,
    const std::string& metric,
    int64_t n,
    const Estimate& value) {
  const std::string what = "external validation " + task + "/" + cohort + "/" + metric;
  TORCH_CHECK(n > 0, "Report::add_external_validation: ", what, ": expected n > 0, got ", n);
  TORCH_CHECK(
      !cohort.empty(),
      "Report::add_external_validation: ",
      what,
      ": expected the name of the external cohort, got an empty one");
  add_result(Result(task, "", metric, value).n(n).cohort(cohort));
}

void Report::add_audit(const std::string& name, Json result) {
  TORCH_CHECK(!name.empty(), "Report::add_audit: expected an audit name, got an empty one");
  doc_["evaluation"]["audits"][name] = std::move(result);
}

void Report::add_retrieval_example(Json example) {
  doc_["evaluation"]["retrieval_examples"].push_back(std::move(example));
}

Report::Figure& Report::figure(
    const std::string& name,
    const std::string& kind,
    const std::string& section_name,
    const std::string& title,
    const std::string& xlabel,
    const std::string& ylabel) {
  for (auto& f : figures_) {
    if (f.name == name && f.kind == kind) {
      return f;
    }
  }
  figures_.push_back(Figure{name, kind, section_name, title, xlabel, ylabel, {}, {}});
  return figures_.back();
}

void Report::add_roc_curve(
    const std::string& task,
    const std::string& model,
    const std::vector<double>& fpr,
    const std::vector<double>& tpr) {
  const std::string what = "ROC curve " + task + "/" + model;
  check_xy("Report::add_roc_curve", what, fpr, tpr);
  for (size_t i = 0; i < fpr.size(); ++i) {
    TORCH_CHECK(
        fpr[i] >= 0 && fpr[i] <= 1 && tpr[i] >= 0 && tpr[i] <= 1,
        "Report::add_roc_curve: ",
        what,
        ": expected rates in [0, 1], got (",
        fpr[i],
        ", ",
        tpr[i],
        ") at point ",
        i);
  }
  Figure& f = figure(
      "roc_" + task,
      "roc",
      "evaluation",
      "ROC curve: " + task,
      "false positive rate (1 - specificity)",
      "true positive rate (sensitivity)");
  f.series.push_back(Series{model, fpr, tpr, {}, {}});
}

void Report::add_loss_curve(
    const std::vector<double>& steps,
    const std::vector<double>& losses,
    const std::string& series) {
  check_xy("Report::add_loss_curve", "loss curve \"" + series + "\"", steps, losses);
  Figure& f =
      figure("loss", "loss", "pretraining", "Pretraining loss per step", "training step", "loss");
  f.series.push_back(Series{series, steps, losses, {}, {}});
}

void Report::add_embedding_map(
    const std::string& name,
    const std::vector<double>& x,
    const std::vector<double>& y,
    const std::vector<std::string>& labels,
    const std::vector<std::string>& sites,
    const std::string& title,
    const std::string& xlabel,
    const std::string& ylabel) {
  const char* fn = "Report::add_embedding_map";
  const std::string what = "embedding map \"" + name + "\"";
  TORCH_CHECK(!name.empty(), fn, ": expected a map name, got an empty one");
  check_xy(fn, what, x, y);
  TORCH_CHECK(
      labels.size() == x.size(),
      fn,
      ": ",
      what,
      ": expected one label per point (",
      x.size(),
      "), got ",
      labels.size());
  TORCH_CHECK(
      sites.empty() || sites.size() == x.size(),
      fn,
      ": ",
      what,
      ": expected one site per point (",
      x.size(),
      ") or none, got ",
      sites.size());
  auto add = [&](const std::string& suffix, const std::vector<std::string>& groups) {
    Figure& f = figure(
        name + "_by_" + suffix,
        "scatter",
        "evaluation",
        (title.empty() ? name : title) + ", coloured by " + suffix,
        xlabel,
        ylabel);
    f.series.clear();
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < x.size(); ++i) {
      auto it = index.find(groups[i]);
      if (it == index.end()) {
        it = index.emplace(groups[i], f.series.size()).first;
        f.series.push_back(Series{suffix + " " + groups[i], {}, {}, {}, {}});
      }
      f.series[it->second].x.push_back(x[i]);
      f.series[it->second].y.push_back(y[i]);
    }
  };
  add("label", labels);
  if (!sites.empty()) {
    add("site", sites);
  }
}

std::vector<Report::Figure> Report::figures() const {
  std::vector<Figure> all = figures_;
  const Json& ev = doc_.at("evaluation");
  if (ev.contains("calibration")) {
    for (const auto& task : ev.at("calibration").items()) {
      Figure f{
          "reliability_" + task.first,
          "reliability",
          "evaluation",
          "Reliability diagram: " + task.first,
          "mean predicted probability (per bin)",
          "observed rate of the outcome",
          {},
          {}};
      for (const auto& model : task.second.items()) {
        std::string label = model.first;
        if (model.second.contains("slope")) {
          char buf[96];
          std::snprintf(
              buf,
              sizeof(buf),
              " (slope %.2f, intercept %.2f)",
              model.second.at("slope").at("value").as_double(),
              model.second.at("intercept").at("value").as_double());
          label += buf;
        }
        Series s{label, {}, {}, {}, {}};
        for (const auto& b : model.second.at("bins").elements()) {
          s.x.push_back(b.at("mean_probability").as_double());
          s.y.push_back(b.at("observed_rate").as_double());
        }
        f.series.push_back(std::move(s));
      }
      all.push_back(std::move(f));
    }
  }
  if (ev.contains("decision_curves")) {
    for (const auto& task : ev.at("decision_curves").items()) {
      Figure f{
          "decision_curve_" + task.first,
          "decision_curve",
          "evaluation",
          "Decision curve: " + task.first,
          "threshold probability",
          "net benefit (true positives per patient, net of harms)",
          {},
          {}};
      const Json* any = nullptr;
      for (const auto& model : task.second.items()) {
        Series s{model.first, {}, {}, {}, {}};
        for (size_t i = 0; i < model.second.at("thresholds").size(); ++i) {
          s.x.push_back(model.second.at("thresholds")[i].as_double());
          s.y.push_back(model.second.at("net_benefit")[i].as_double());
        }
        f.series.push_back(std::move(s));
        any = &model.second;
      }
      if (any != nullptr) { // treat-all and treat-none depend on the cohort, not the model
        Series treat_all{"treat all", {}, {}, {}, {}};
        Series treat_none{"treat none", {}, {}, {}, {}};
        for (size_t i = 0; i < any->at("thresholds").size(); ++i) {
          treat_all.x.push_back(any->at("thresholds")[i].as_double());
          treat_all.y.push_back(any->at("treat_all")[i].as_double());
          treat_none.x.push_back(treat_all.x.back());
          treat_none.y.push_back(0.0);
        }
        f.series.push_back(std::move(treat_all));
        f.series.push_back(std::move(treat_none));
      }
      all.push_back(std::move(f));
    }
  }
  if (ev.contains("fairness")) {
    // One figure per task and attribute: each model's AUROC per group with its interval, the
    // models side by side at each group; groups too small to estimate are named on the axis.
    for (const auto& task : ev.at("fairness").items()) {
      std::vector<std::string> attributes;
      for (const auto& model : task.second.items()) {
        for (const auto& a : model.second.items()) {
          if (std::find(attributes.begin(), attributes.end(), a.first) == attributes.end()) {
            attributes.push_back(a.first);
          }
        }
      }
      for (const auto& attribute : attributes) {
        Figure f{
            "fairness_" + task.first + "_" + attribute,
            "fairness",
            "evaluation",
            "AUROC by " + attribute + ": " + task.first,
            attribute,
            "AUROC (interval)",
            {},
            {}};
        std::vector<const Json*> audits;
        std::vector<std::string> models;
        for (const auto& model : task.second.items()) {
          if (model.second.contains(attribute)) {
            audits.push_back(&model.second.at(attribute));
            models.push_back(model.first);
          }
        }
        std::map<std::string, bool> small;
        for (const auto* a : audits) {
          for (const auto& g : a->at("groups").elements()) {
            const std::string name = g.at("group").as_string();
            if (std::find(f.categories.begin(), f.categories.end(), name) == f.categories.end()) {
              f.categories.push_back(name);
              small[name] = true;
            }
            small[name] = small[name] && !g.at("estimable").as_bool();
          }
        }
        const double width = audits.size() > 1 ? 0.5 / static_cast<double>(audits.size()) : 0;
        for (size_t m = 0; m < audits.size(); ++m) {
          Series s{models[m], {}, {}, {}, {}};
          const double shift =
              (static_cast<double>(m) - 0.5 * static_cast<double>(audits.size() - 1)) * width;
          for (const auto& g : audits[m]->at("groups").elements()) {
            if (!g.at("estimable").as_bool()) {
              continue;
            }
            const auto k = static_cast<size_t>(
                std::find(f.categories.begin(), f.categories.end(), g.at("group").as_string()) -
                f.categories.begin());
            const Json& a = g.at("auroc");
            s.x.push_back(static_cast<double>(k + 1) + shift);
            s.y.push_back(a.at("value").as_double());
            const bool bars = a.contains("interval") && !a.at("interval").is_null();
            s.lower.push_back(bars ? a.at("interval").at("lower").as_double() : s.y.back());
            s.upper.push_back(bars ? a.at("interval").at("upper").as_double() : s.y.back());
          }
          f.series.push_back(std::move(s));
        }
        for (auto& c : f.categories) {
          if (small[c]) {
            c += " (too small)";
          }
        }
        all.push_back(std::move(f));
      }
    }
  }
  if (ev.contains("label_efficiency")) {
    for (const auto& task : ev.at("label_efficiency").items()) {
      // Against the share of the training patients the repeats actually used when every row
      // says (fractions that collapse onto one subset size then share a point), else against the
      // fraction requested.
      bool counted = true;
      for (const auto& row : task.second.elements()) {
        counted = counted && row.contains("patients") && !row.at("patients").is_null() &&
            row.contains("available_patients") && !row.at("available_patients").is_null();
      }
      Figure f{
          "label_efficiency_" + task.first,
          "label_efficiency",
          "evaluation",
          "Label efficiency: " + task.first,
          counted ? "share of training patients used (mean over repeats)" : "fraction of labels",
          "metric (mean over repeats, 95% interval)",
          {},
          {}};
      std::map<std::string, size_t> index;
      for (const auto& row : task.second.elements()) {
        const std::string key =
            row.at("model").as_string() + " (" + row.at("metric").as_string() + ")";
        auto it = index.find(key);
        if (it == index.end()) {
          it = index.emplace(key, f.series.size()).first;
          f.series.push_back(Series{key, {}, {}, {}, {}});
        }
        Series& s = f.series[it->second];
        const double mean = row.at("mean").as_double();
        const Json& i = row.at("interval");
        double x = row.at("fraction").as_double();
        if (counted) {
          double used = 0;
          for (const auto& p : row.at("patients").elements()) {
            used += static_cast<double>(p.as_int64());
          }
          x = used / static_cast<double>(row.at("patients").size()) /
              static_cast<double>(row.at("available_patients").as_int64());
        }
        s.x.push_back(x);
        s.y.push_back(mean);
        s.lower.push_back(i.is_null() ? mean : i.at("lower").as_double());
        s.upper.push_back(i.is_null() ? mean : i.at("upper").as_double());
      }
      for (auto& s : f.series) {
        std::vector<size_t> order(s.x.size());
        for (size_t k = 0; k < order.size(); ++k) {
          order[k] = k;
        }
        std::stable_sort(
            order.begin(), order.end(), [&](size_t a, size_t b) { return s.x[a] < s.x[b]; });
        Series sorted{s.name, {}, {}, {}, {}};
        for (size_t k : order) {
          sorted.x.push_back(s.x[k]);
          sorted.y.push_back(s.y[k]);
          sorted.lower.push_back(s.lower[k]);
          sorted.upper.push_back(s.upper[k]);
        }
        s = std::move(sorted);
      }
      all.push_back(std::move(f));
    }
  }
  // File stems: safe characters, unique.
  std::map<std::string, int> used;
  for (auto& f : all) {
    std::string stem = file_stem(f.name);
    const int count = used[stem]++;
    if (count > 0) {
      stem += "_" + std::to_string(count + 1);
    }
    f.name = stem;
  }
  return all;
}

void Report::pretraining_item(ChecklistItem& item, const std::string& key) const {
  // Answered per model: present only when every model that the report compares and that was
  // pretrained has the item in its own run; a model without a pretraining record lacks it; models
  // without pretraining (raw features, trained from scratch) do not count. Without any such model,
  // every run must have it.
  item.location = "pretraining.runs.<run>." + key;
  const Json& p = doc_.at("pretraining");
  const Json none = Json::object();
  const Json& runs = p.contains("runs") ? p.at("runs") : none;
  auto has = [&](const std::string& run) {
    return runs.contains(run) && runs.at(run).contains(key) && has_content(runs.at(run).at(key));
  };
  std::vector<std::string> lacking;
  int64_t checked = 0;
  int64_t baselines = 0;
  const Json models = models_json();
  for (const auto& m : models.items()) {
    const std::string status = m.second.at("pretraining_status").as_string();
    if (status == "none") {
      ++baselines;
    } else if (status == "not recorded") {
      lacking.push_back(m.first + " (no pretraining record)");
    } else {
      ++checked;
      const std::string run = m.second.at("pretraining").as_string();
      if (!has(run)) {
        lacking.push_back(m.first + " (run \"" + run + "\" has no " + key + ")");
      }
    }
  }
  if (checked == 0 && lacking.empty()) {
    for (const auto& r : runs.items()) {
      ++checked;
      if (!has(r.first)) {
        lacking.push_back("run \"" + r.first + "\"");
      }
    }
  }
  item.present = checked > 0 && lacking.empty();
  if (!lacking.empty()) {
    std::string text;
    for (const auto& l : lacking) {
      text += (text.empty() ? "" : "; ") + l;
    }
    item.detail = "missing for " + text;
  } else if (checked == 0) {
    item.detail = "no pretraining recorded";
  } else {
    item.detail = "present for all " + std::to_string(checked) + " pretrained";
    if (baselines > 0) {
      item.detail += "; " + std::to_string(baselines) + " model(s) without pretraining";
    }
  }
}

std::vector<ChecklistItem> Report::checklist() const {
  struct Spec {
    const char* id;
    const char* label;
    const char* section;
    const char* key;
  };
  static const Spec kItems[] = {
      {"patient_level_split", "Patient-level split rule", "data", "split_rule"},
      {"pretraining_corpus", "Pretraining corpus", "data", "corpus"},
      {"pairing_heuristic", "Pairing heuristic", "pretraining", "pairing"},
      {"augmentation_policy", "Augmentation policy", "pretraining", "augmentation"},
      {"hyperparameters", "Key hyper-parameters", "pretraining", "hyperparameters"},
      {"external_validation", "External validation", "evaluation", "results"},
      {"calibration", "Calibration", "evaluation", "calibration"},
      {"subgroups", "Subgroup analyses", "evaluation", "results"},
  };
  std::vector<ChecklistItem> items;
  for (const auto& spec : kItems) {
    ChecklistItem item;
    item.id = spec.id;
    item.label = spec.label;
    item.location = std::string(spec.section) + "." + spec.key;
    if (item.id == "external_validation" || item.id == "subgroups") {
      // Results with a cohort, or with a subgroup.
      const bool cohort = item.id == "external_validation";
      item.location += cohort ? " (records with a cohort)" : " (records with a subgroup)";
      item.present = std::any_of(results_.begin(), results_.end(), [&](const Result& r) {
        return cohort ? !r.cohort().empty() : !r.subgroup().empty();
      });
    } else if (std::string(spec.section) == "pretraining") {
      pretraining_item(item, spec.key);
    } else {
      const Json* v = lookup(doc_, spec.section, spec.key);
      item.present = v != nullptr && has_content(*v);
    }
    items.push_back(std::move(item));
  }
  return items;
}

Json Report::build(const std::vector<ReportFigureStatus>* status) const {
  Json doc = Json::object();
  Json& schema = doc["schema"];
  schema["name"] = kReportSchemaName;
  schema["version"] = kReportSchemaVersion;
  for (const auto& kv : doc_.items()) {
    if (kv.first != "evaluation") {
      doc[kv.first] = kv.second;
      continue;
    }
    // The results first, then what was set.
    Json& e = doc["evaluation"];
    e = Json::object();
    Json records = Json::array();
    for (const auto& r : results_) {
      records.push_back(result_json(r));
    }
    e["results"] = std::move(records);
    const Json models = models_json();
    if (models.size() > 0) {
      e["models"] = models;
    }
    for (const auto& m : kv.second.items()) {
      if (m.first != "models") {
        e[m.first] = m.second;
      }
    }
  }
  const auto figs = figures();
  for (size_t k = 0; k < figs.size(); ++k) {
    const Figure& f = figs[k];
    Json entry = Json::object();
    entry["name"] = f.name;
    entry["kind"] = f.kind;
    entry["title"] = f.title;
    entry["image"] = f.name + image_extension(options_.terminal());
    entry["data"] = f.name + ".dat";
    entry["script"] = f.name + ".gp";
    if (status != nullptr) {
      entry["drawn"] = (*status)[k].drawn;
      entry["reason"] = (*status)[k].drawn ? Json() : Json((*status)[k].reason);
    }
    entry["xlabel"] = f.xlabel;
    entry["ylabel"] = f.ylabel;
    Json series = Json::array();
    for (const auto& s : f.series) {
      Json js = Json::object();
      js["name"] = s.name;
      js["x"] = Json::array_of(s.x);
      js["y"] = Json::array_of(s.y);
      if (!s.lower.empty()) {
        js["lower"] = Json::array_of(s.lower);
        js["upper"] = Json::array_of(s.upper);
      }
      series.push_back(std::move(js));
    }
    entry["series"] = std::move(series);
    doc[f.section]["figures"].push_back(std::move(entry));
  }
  Json items = Json::array();
  for (const auto& item : checklist()) {
    Json j = Json::object();
    j["id"] = item.id;
    j["item"] = item.label;
    j["status"] = item.present ? "present" : "missing";
    j["location"] = item.location;
    if (!item.detail.empty()) {
      j["detail"] = item.detail;
    }
    items.push_back(std::move(j));
  }
  doc["checklist"] = std::move(items);
  return doc;
}

Json Report::json() const {
  return build(nullptr);
}

ReportFiles Report::write(const std::string& directory) const {
  TORCH_CHECK(!directory.empty(), "Report::write: expected a directory, got an empty path");
  const fs::path dir(directory);
  std::error_code ec;
  fs::create_directories(dir, ec);
  TORCH_CHECK(
      !ec && fs::is_directory(dir),
      "Report::write: cannot create the directory ",
      dir.string(),
      ec ? ": " + ec.message() : std::string(": a file of that name exists"));

  static std::atomic<int> counter{0};
#if defined(_WIN32)
  const long pid = static_cast<long>(_getpid());
#else
  const long pid = static_cast<long>(::getpid());
#endif
  const fs::path tmp = dir /
      (".medcl-report-tmp-" + std::to_string(pid) + "-" + std::to_string(counter.fetch_add(1)));
  remove_tree(tmp.string(), ec);
  ec.clear();
  fs::create_directory(tmp, ec);
  TORCH_CHECK(
      !ec,
      "Report::write: cannot write into ",
      dir.string(),
      " (creating ",
      tmp.string(),
      " failed: ",
      ec.message(),
      ")");

  const fs::path json_path = dir / "report.json";
  const fs::path md_path = dir / "report.md";
  bool placed_md = false;
  bool placed_json = false;
  ReportFiles result;
  try {
    const auto figs = figures();
    std::vector<std::string> files;
    std::string gnuplot;
    std::string missing_reason;
    if (!options_.draw_figures()) {
      missing_reason = "drawing disabled (ReportOptions::draw_figures)";
    } else if (!figs.empty()) {
      gnuplot = find_program(options_.gnuplot());
      if (gnuplot.empty()) {
        missing_reason = "gnuplot not found (\"" + options_.gnuplot() + "\")";
      }
    }
    size_t not_drawn = 0;
    std::string first_reason;
    for (const auto& f : figs) {
      const std::string image = f.name + image_extension(options_.terminal());
      write_file(tmp / (f.name + ".dat"), data_file(f));
      write_file(tmp / (f.name + ".gp"), gnuplot_script(f, options_));
      files.push_back(f.name + ".dat");
      files.push_back(f.name + ".gp");
      ReportFigureStatus st;
      st.name = f.name;
      st.image = image;
      st.reason = missing_reason.empty() ? run_gnuplot(gnuplot, tmp, f.name + ".gp", image)
                                         : missing_reason;
      st.drawn = st.reason.empty();
      if (st.drawn) {
        files.push_back(image);
      } else {
        std::error_code ignored;
        fs::remove(tmp / image, ignored); // a half-drawn picture is worse than none
        if (not_drawn++ == 0) {
          first_reason = st.reason;
        }
      }
      result.figures.push_back(std::move(st));
    }
    const Json doc = build(&result.figures);
    write_file(tmp / "report.json", doc.dump(2) + "\n");
    const std::string markdown = render_markdown(doc);
    write_file(tmp / "report.md", markdown);
    // report.html: the same text as one page with the figures just drawn embedded.
    write_file(tmp / "report.html", markdown_to_html(markdown, tmp, options_.title()));
    files.push_back("report.html");

    // Move into place: the old report.json goes first (so an old report.json never sits beside a
    // new report.md), the new one comes last (its presence marks a complete report).
    fs::remove(json_path, ec);
    TORCH_CHECK(!ec, "Report::write: cannot replace ", json_path.string(), ": ", ec.message());
    for (const auto& name : files) {
      fs::rename(tmp / name, dir / name, ec);
      TORCH_CHECK(!ec, "Report::write: cannot write ", (dir / name).string(), ": ", ec.message());
    }
    fs::rename(tmp / "report.md", md_path, ec);
    TORCH_CHECK(!ec, "Report::write: cannot write ", md_path.string(), ": ", ec.message());
    placed_md = true;
    fs::rename(tmp / "report.json", json_path, ec);
    TORCH_CHECK(!ec, "Report::write: cannot write ", json_path.string(), ": ", ec.message());
    placed_json = true;
    remove_tree(tmp.string(), ec);
    if (not_drawn > 0 && options_.draw_figures()) {
      TORCH_WARN(
          "Report::write: ",
          not_drawn,
          " of ",
          figs.size(),
          " figure(s) not drawn in ",
          dir.string(),
          " (",
          first_reason,
          "); the report lists them as not drawn and keeps their data and scripts");
    }
  } catch (...) {
    std::error_code ignored;
    remove_tree(tmp.string(), ignored);
    if (placed_md && !placed_json) {
      fs::remove(md_path, ignored);
    }
    throw;
  }
  result.json_path = json_path.string();
  result.markdown_path = md_path.string();
  result.html_path = (dir / "report.html").string();
  return result;
}

} // namespace eval
} // namespace medcl
