#pragma once

/// \file
/// A JSON-lines log of a training run: one JSON object per line (step records, evaluation
/// records), appended and flushed line by line so that a crash loses at most the line being written
/// and the file can be read while the run goes on.

#include <c10/util/Exception.h>

#include <medcl/core/json.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace train {

/// Appends JSON objects to a file, one per line (https://jsonlines.org). Each `write` dumps the
/// record on one line (`Json::dump(-1)`), adds '\n' and flushes. Records are objects; by
/// convention they carry a "type" ("step", "eval", ...) and the "step" they belong to.
///
/// Example:
///   medcl::train::JsonLinesLog log("run/log.jsonl");
///   log.step_record(step, loss.item<double>(), lr);
///   medcl::Json e = medcl::Json::object();
///   e["knn_top1"] = 0.83;
///   log.record("eval", step, e);
///   // each line reads back with medcl::Json::parse(line)
class JsonLinesLog {
 public:
  /// Opens `path` for appending (`append`, default) or truncates it. Error: the file cannot be
  /// opened (missing directory, no permission), naming the path.
  explicit JsonLinesLog(std::string path, bool append = true) : path_(std::move(path)) {
    out_.open(path_, append ? std::ios::app : std::ios::trunc);
    TORCH_CHECK(
        out_.is_open(),
        "JsonLinesLog: cannot open '",
        path_,
        "' for writing: ",
        std::strerror(errno),
        " (does its directory exist?)");
  }

  /// Writes `record` (a JSON object) as one line and flushes it.
  void write(const Json& record) {
    TORCH_CHECK(
        record.is_object(),
        "JsonLinesLog::write: expected a JSON object, got ",
        Json::type_name(record.type()));
    const std::string line = record.dump(-1);
    out_ << line << '\n';
    out_.flush();
    TORCH_CHECK(out_.good(), "JsonLinesLog::write: writing to '", path_, "' failed");
    ++lines_;
  }

  /// Writes {"type": type, "step": step, ...fields} (fields must be an object or null).
  void record(const std::string& type, int64_t step, const Json& fields = Json()) {
    TORCH_CHECK(
        fields.is_object() || fields.is_null(),
        "JsonLinesLog::record: expected fields as a JSON object, got ",
        Json::type_name(fields.type()));
    Json j = Json::object();
    j["type"] = type;
    j["step"] = step;
    if (fields.is_object()) {
      for (const auto& item : fields.items()) {
        TORCH_CHECK(
            item.first != "type" && item.first != "step",
            "JsonLinesLog::record: field '",
            item.first,
            "' is reserved");
        j[item.first] = item.second;
      }
    }
    write(j);
  }

  /// Writes a step record {"type":"step","step":step,"loss":loss,"lr":lr, ...extra}. JSON has no
  /// NaN or Inf: a non-finite loss is written as null with "loss_nonfinite": "nan", "inf" or
  /// "-inf", so a diverging run still logs.
  void step_record(int64_t step, double loss, double lr, const Json& extra = Json()) {
    Json j = extra.is_null() ? Json::object() : extra;
    TORCH_CHECK(
        j.is_object(),
        "JsonLinesLog::step_record: expected extra as a JSON object, got ",
        Json::type_name(j.type()));
    Json fields = Json::object();
    if (std::isfinite(loss)) {
      fields["loss"] = loss;
    } else {
      fields["loss"] = nullptr;
      fields["loss_nonfinite"] = std::isnan(loss) ? "nan" : (loss > 0 ? "inf" : "-inf");
    }
    fields["lr"] = lr;
    for (const auto& item : j.items()) {
      fields[item.first] = item.second;
    }
    record("step", step, fields);
  }

  /// Reads a log back, one object per line, as a reader of a resumed run wants it: a
  /// {"type":"resume","step":s} record (the trainer writes one when it resumes from a checkpoint
  /// of step s) supersedes every earlier record of a step >= s, which the crashed or stopped run
  /// wrote after its checkpoint; those are dropped unless `keep_superseded`. So each step keeps
  /// the records of the run that the checkpoints continue. A last line without its newline that
  /// does not parse (a crash while writing it) is dropped; any other line that does not parse is
  /// an error naming the file and the line.
  static std::vector<Json> read(const std::string& path, bool keep_superseded = false) {
    std::ifstream in(path, std::ios::binary);
    TORCH_CHECK(
        in.is_open(), "JsonLinesLog::read: cannot open '", path, "': ", std::strerror(errno));
    std::vector<Json> out;
    std::string line;
    int64_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty()) {
        continue;
      }
      const bool complete = !in.eof(); // getline stopped at a newline
      Json j;
      try {
        j = Json::parse(line);
      } catch (const c10::Error& e) {
        if (!complete) {
          break; // the line a crash cut short
        }
        TORCH_CHECK(
            false,
            "JsonLinesLog::read: line ",
            number,
            " of '",
            path,
            "' is not JSON: ",
            e.what_without_backtrace());
      }
      TORCH_CHECK(
          j.is_object(), "JsonLinesLog::read: line ", number, " of '", path, "' is not an object");
      const bool resume = j.contains("type") && j.at("type").is_string() &&
          j.at("type").as_string() == "resume" && j.contains("step") && j.at("step").is_integer();
      if (resume && !keep_superseded) {
        const int64_t from = j.at("step").as_int64();
        std::vector<Json> kept;
        for (auto& r : out) {
          const bool superseded = r.contains("step") && r.at("step").is_integer() &&
              r.at("step").as_int64() >= from &&
              !(r.contains("type") && r.at("type").is_string() &&
                r.at("type").as_string() == "resume");
          if (!superseded) {
            kept.push_back(std::move(r));
          }
        }
        out = std::move(kept);
      }
      out.push_back(std::move(j));
    }
    return out;
  }

  /// The file written to.
  const std::string& path() const {
    return path_;
  }
  /// Lines written by this object.
  int64_t lines() const {
    return lines_;
  }

 private:
  std::string path_;
  std::ofstream out_;
  int64_t lines_ = 0;
};

} // namespace train
} // namespace medcl
