// report.md, rendered from the report.json document.
#include <medcl/eval/report.h>

#include "internal.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <locale>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {

namespace report_detail {

std::string number_text(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) {
    std::ostringstream os;
    os.imbue(std::locale::classic());
    os << static_cast<int64_t>(v);
    return os.str();
  }
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os.precision(4);
  os << v;
  return os.str();
}

/// A Markdown table cell: no line breaks, '|' escaped.
std::string cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string value_text(const Json& j) {
  switch (j.type()) {
    case Json::Type::Null:
      return "—";
    case Json::Type::Bool:
      return j.as_bool() ? "yes" : "no";
    case Json::Type::Number:
      return j.is_integer() ? std::to_string(j.as_int64()) : number_text(j.as_double());
    case Json::Type::String:
      return j.as_string();
    default: {
      const std::string text = j.dump();
      return text.find('`') == std::string::npos ? "`" + text + "`" : "``" + text + "``";
    }
  }
}

std::string interval_text(const Json& entry) {
  const Json& i = entry.at("interval");
  if (i.is_null()) {
    return "—";
  }
  return number_text(i.at("lower").as_double()) + " – " + number_text(i.at("upper").as_double()) +
      " (" + number_text(100 * i.at("level").as_double()) + "%" +
      (i.at("method").as_string().empty() ? std::string() : ", " + i.at("method").as_string()) +
      ")";
}

/// Single-quoted POSIX shell word.
std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

/// What a label-efficiency row was trained on: "2 of 24 (8.3%)", "2–3 of 24 (10.4%)" (the
/// share is the mean over the repeats), "5–7 of 61", "—" when not recorded.
std::string used_text(const Json& counts, const Json& available, bool share) {
  if (!counts.is_array() || counts.size() == 0) {
    return "—";
  }
  int64_t lo = counts[0].as_int64();
  int64_t hi = lo;
  double sum = 0;
  for (const auto& c : counts.elements()) {
    lo = std::min(lo, c.as_int64());
    hi = std::max(hi, c.as_int64());
    sum += static_cast<double>(c.as_int64());
  }
  std::string out = std::to_string(lo) + (hi > lo ? "–" + std::to_string(hi) : std::string());
  if (available.is_integer()) {
    out += " of " + std::to_string(available.as_int64());
    if (share) {
      std::ostringstream os;
      os.imbue(std::locale::classic());
      os.setf(std::ios::fixed);
      const double pct = 100 * sum / static_cast<double>(counts.size()) /
          static_cast<double>(available.as_int64());
      os.precision(pct == std::floor(pct) ? 0 : 1);
      os << pct;
      out += " (" + os.str() + "%)";
    }
  }
  return out;
}

void md_figures(std::string& md, const Json& section, const std::string& kind) {
  if (!section.contains("figures")) {
    return;
  }
  for (const auto& f : section.at("figures").elements()) {
    if (f.at("kind").as_string() != kind) {
      continue;
    }
    const std::string& name = f.at("name").as_string();
    const bool drawn = !f.contains("drawn") || f.at("drawn").as_bool();
    // The title is free text: on one line, and brackets escaped so that it cannot end the link.
    std::string title;
    for (char c : one_line(f.at("title").as_string())) {
      if (c == '[' || c == ']' || c == '*' || c == '\\') {
        title += '\\';
      }
      title += c;
    }
    if (drawn) {
      md += "![" + title + "](" + f.at("image").as_string() + ")\n\n";
    } else {
      md +=
          "*Figure \"" + title + "\" not drawn: " + one_line(f.at("reason").as_string()) + "*\n\n";
    }
    md += "Data: [" + name + ".dat](" + name + ".dat), gnuplot script: [" + name + ".gp](" + name +
        ".gp)\n\n";
  }
}

/// Whether `j` reads on one line: a scalar, or an array of scalars.
bool flat(const Json& j) {
  if (j.is_object()) {
    return false;
  }
  if (j.is_array()) {
    for (const auto& e : j.elements()) {
      if (e.is_object() || e.is_array()) {
        return false;
      }
    }
  }
  return true;
}

/// A flat value as text: scalars as value_text, arrays of scalars joined with commas.
std::string flat_text(const Json& j) {
  if (!j.is_array()) {
    return value_text(j);
  }
  if (j.size() == 0) {
    return "none";
  }
  std::string out;
  for (const auto& e : j.elements()) {
    out += (out.empty() ? "" : ", ") + value_text(e);
  }
  return out;
}

/// A nested description (an augmentation policy, a loss's options, an optimiser) as a nested
/// Markdown list: "- **key**: value" for flat members, the key and an indented list for nested
/// ones; an array's object elements are labelled by their "name" when they have one.
void md_nested(std::string& md, const Json& j, int depth) {
  const std::string indent(static_cast<size_t>(2 * depth), ' ');
  if (j.is_object()) {
    for (const auto& kv : j.items()) {
      if (flat(kv.second)) {
        md += indent + "- **" + one_line(kv.first) + "**: " + one_line(flat_text(kv.second)) + "\n";
      } else {
        md += indent + "- **" + one_line(kv.first) + "**:\n";
        md_nested(md, kv.second, depth + 1);
      }
    }
    return;
  }
  if (j.is_array()) {
    size_t k = 0;
    for (const auto& e : j.elements()) {
      ++k;
      if (flat(e)) {
        md += indent + "- " + one_line(flat_text(e)) + "\n";
        continue;
      }
      std::string label = "[" + std::to_string(k) + "]";
      if (e.is_object() && e.contains("name") && e.at("name").is_string()) {
        label = e.at("name").as_string();
      }
      md += indent + "- **" + one_line(label) + "**:\n";
      if (e.is_object()) {
        Json rest = Json::object();
        for (const auto& kv : e.items()) {
          if (!(kv.first == "name" && kv.second.is_string())) {
            rest[kv.first] = kv.second;
          }
        }
        md_nested(md, rest, depth + 1);
      } else {
        md_nested(md, e, depth + 1);
      }
    }
    return;
  }
  md += indent + "- " + one_line(value_text(j)) + "\n";
}

/// The members of `section` not in `skip`: flat ones in a two-column table, nested ones after it,
/// each under its name as a nested list (never a JSON blob in a cell).
void md_members(std::string& md, const Json& section, const std::vector<std::string>& skip) {
  std::string rows;
  std::string nested;
  for (const auto& kv : section.items()) {
    if (std::find(skip.begin(), skip.end(), kv.first) != skip.end()) {
      continue;
    }
    if (flat(kv.second)) {
      rows += "| " + cell(kv.first) + " | " + cell(flat_text(kv.second)) + " |\n";
    } else if (kv.second.size() > 0) {
      nested += "**" + one_line(kv.first) + "**\n\n";
      md_nested(nested, kv.second, 0);
      nested += "\n";
    } else {
      rows += "| " + cell(kv.first) + " | none |\n";
    }
  }
  if (!rows.empty()) {
    md += "| field | value |\n| --- | --- |\n" + rows + "\n";
  }
  md += nested;
}

void md_none(std::string& md) {
  md += "_None recorded._\n\n";
}

} // namespace report_detail

using namespace report_detail;

std::string Report::render_markdown(const Json& doc) const {
  std::string md = "# " + options_.title() + "\n\n";

  const Json& m = doc.at("medcl");
  md += "## Run\n\n";
  md_members(md, m, {"command_line"});
  if (m.contains("command_line")) {
    std::string line;
    for (const auto& a : m.at("command_line").elements()) {
      line += (line.empty() ? "" : " ") + sh_quote(a.as_string());
    }
    md += "Command line:\n\n```\n" + line + "\n```\n\n";
  }

  const Json& d = doc.at("data");
  md += "## Data\n\n";
  md_members(md, d, {"splits", "leakage_check", "files"});
  if (d.contains("files") && d.at("files").size() > 0) {
    md +=
        "Data files read (SHA-256, as `sha256sum` prints it):\n\n| file | bytes | sha256 |\n| --- "
        "| --- | --- |\n";
    for (const auto& f : d.at("files").elements()) {
      md += "| " + cell(f.at("name").as_string()) + " | " + value_text(f.at("bytes")) + " | `" +
          f.at("sha256").as_string() + "` |\n";
    }
    md += "\n";
  }
  if (d.contains("splits")) {
    md += "| split | patients | samples |\n| --- | --- | --- |\n";
    for (const auto& s : d.at("splits").items()) {
      md += "| " + cell(s.first) + " | " + value_text(s.second.at("patients")) + " | " +
          value_text(s.second.at("samples")) + " |\n";
    }
    md += "\n";
  }
  if (d.contains("leakage_check")) {
    const Json& l = d.at("leakage_check");
    md += std::string("Patient leakage check: **") +
        (l.at("passed").as_bool() ? "passed" : "FAILED") + "**" +
        (l.at("detail").as_string().empty() ? "" : " — " + l.at("detail").as_string()) + "\n\n";
  } else {
    md += "Patient leakage check: not recorded.\n\n";
  }

  const Json& p = doc.at("pretraining");
  md += "## Pretraining\n\n";
  const bool any_run = p.contains("runs") && p.at("runs").size() > 0;
  if (!any_run) {
    md_none(md);
  } else {
    for (const auto& run : p.at("runs").items()) {
      md += "### " + one_line(run.first) + "\n\n";
      md_members(md, run.second, {"hyperparameters", "seeds"});
      for (const char* group : {"hyperparameters", "seeds"}) {
        if (run.second.contains(group)) {
          md += std::string("#### ") + (group[0] == 'h' ? "Hyper-parameters" : "Seeds") + "\n\n";
          md_members(md, run.second.at(group), {});
        }
      }
    }
  }
  md_members(md, p, {"runs", "figures"});
  md_figures(md, p, "loss");

  const Json& e = doc.at("evaluation");
  md += "## Evaluation\n\n";
  if (e.contains("models")) {
    md += "### Models\n\n| model | pretraining | evaluation |\n| --- | --- | --- |\n";
    for (const auto& model : e.at("models").items()) {
      const Json& entry = model.second;
      const std::string status = entry.at("pretraining_status").as_string();
      std::string pre = status == "linked" ? "run \"" + entry.at("pretraining").as_string() + "\""
          : status == "none"               ? std::string("none (no pretraining)")
                                           : std::string("**not recorded**");
      std::string how = "—";
      if (entry.contains("evaluation") && entry.at("evaluation").is_object() &&
          entry.at("evaluation").contains("protocol")) {
        how = entry.at("evaluation").at("protocol").as_string();
      }
      md += "| " + cell(model.first) + " | " + cell(pre) + " | " + cell(how) + " |\n";
    }
    md += "\n";
    for (const auto& model : e.at("models").items()) {
      if (model.second.contains("evaluation") && model.second.at("evaluation").is_object()) {
        md += "#### " + one_line(model.first) + ": evaluation protocol\n\n";
        md_members(md, model.second.at("evaluation"), {"protocol"});
      }
    }
  }
  md += "### Results\n\n";
  const auto& records = e.at("results").elements();
  auto text = [](const Json& j) { return j.is_null() ? std::string() : j.as_string(); };
  // Qualifiers of a record that have no column of their own, in words.
  auto qualifiers = [&](const Json& r) {
    std::string q;
    auto add = [&](const std::string& t) { q += (q.empty() ? "" : "; ") + t; };
    if (!r.at("reference_model").is_null()) {
      add("difference to " + r.at("reference_model").as_string());
    }
    if (!r.at("fraction").is_null()) {
      add("label fraction " + value_text(r.at("fraction")));
    }
    if (!r.at("patients").is_null()) {
      add(value_text(r.at("patients")) + " patients");
    }
    if (!r.at("seed").is_null()) {
      add("seed " + value_text(r.at("seed")));
    }
    if (!r.at("detail").is_null()) {
      add(r.at("detail").as_string());
    }
    return q;
  };
  auto table = [&](const char* kind) {
    // kind: "" (internal, whole cohort), "subgroup" or "cohort".
    const std::string k = kind;
    std::string rows;
    for (const auto& r : records) {
      const bool sub = !r.at("subgroup").is_null();
      const bool ext = !r.at("cohort").is_null();
      if ((k == "subgroup") != sub || (k == "cohort") != (ext && !sub)) {
        continue;
      }
      rows += "| " + cell(r.at("task").as_string()) + " | " + cell(text(r.at("model"))) + " | ";
      if (k == "subgroup") {
        rows += cell(r.at("subgroup").at("attribute").as_string()) + " | " +
            cell(r.at("subgroup").at("group").as_string()) + " | ";
      } else if (k == "cohort") {
        rows += cell(r.at("cohort").as_string()) + " | ";
      }
      rows += cell(r.at("metric").as_string()) + " | " + value_text(r.at("value")) + " | " +
          cell(interval_text(r)) + " | " + value_text(r.at("n")) + " | " + cell(qualifiers(r)) +
          " |\n";
    }
    if (rows.empty()) {
      md_none(md);
      return;
    }
    if (k == "subgroup") {
      md +=
          "| task | model | attribute | group | metric | value | interval | n | notes |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    } else if (k == "cohort") {
      md +=
          "| task | model | cohort | metric | value | interval | n | notes |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    } else {
      md +=
          "| task | model | metric | value | interval | n | notes |\n"
          "| --- | --- | --- | --- | --- | --- | --- |\n";
    }
    md += rows + "\n";
  };
  table("");
  md_figures(md, e, "roc");

  md += "### Calibration\n\n";
  if (e.contains("calibration")) {
    md +=
        "| task | model | ECE | bins | slope | intercept | in-the-large |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n";
    auto fit = [](const Json& entry, const char* key) -> std::string {
      if (!entry.contains(key)) {
        return "—";
      }
      const auto& i = entry.at(key);
      return number_text(i.at("value").as_double()) + " [" +
          number_text(i.at("lower").as_double()) + ", " + number_text(i.at("upper").as_double()) +
          "]";
    };
    for (const auto& task : e.at("calibration").items()) {
      for (const auto& model : task.second.items()) {
        md += "| " + cell(task.first) + " | " + cell(model.first) + " | " +
            number_text(model.second.at("ece").as_double()) + " | " +
            std::to_string(model.second.at("bins").size()) + " | " + fit(model.second, "slope") +
            " | " + fit(model.second, "intercept") + " | " + fit(model.second, "in_the_large") +
            " |\n";
      }
    }
    md += "\n";
  } else {
    md_none(md);
  }
  md_figures(md, e, "reliability");

  if (e.contains("decision_curves")) {
    md += "### Decision curves\n\n";
    md +=
        "Net benefit of treating the patients whose predicted probability reaches each threshold "
        "(TP/n − FP/n · t/(1 − t)), beside treating everyone; treating no one is 0.\n\n";
    const std::vector<double> shown = {0.05, 0.1, 0.2, 0.3, 0.5};
    for (const auto& task : e.at("decision_curves").items()) {
      // The shown thresholds that the curves have (compared with a tolerance: 0.1 may be stored
      // as 0.1 or as 10 / 100).
      auto column = [](const Json& curve, double t) -> int64_t {
        const auto& th = curve.at("thresholds");
        for (size_t i = 0; i < th.size(); ++i) {
          if (std::abs(th[i].as_double() - t) < 1e-9) {
            return static_cast<int64_t>(i);
          }
        }
        return -1;
      };
      const Json* first = nullptr;
      for (const auto& model : task.second.items()) {
        first = &model.second;
        break;
      }
      std::vector<double> cols;
      for (double t : shown) {
        if (first != nullptr && column(*first, t) >= 0) {
          cols.push_back(t);
        }
      }
      md += "| task | model |";
      std::string rule = "| --- | --- |";
      for (double t : cols) {
        md += " t = " + number_text(t) + " |";
        rule += " --- |";
      }
      md += "\n" + rule + "\n";
      for (const auto& model : task.second.items()) {
        md += "| " + cell(task.first) + " | " + cell(model.first) + " |";
        for (double t : cols) {
          const auto i = column(model.second, t);
          md += " " +
              (i >= 0
                   ? number_text(model.second.at("net_benefit")[static_cast<size_t>(i)].as_double())
                   : std::string("—")) +
              " |";
        }
        md += "\n";
      }
      if (first != nullptr) {
        md += "| " + cell(task.first) + " | treat all |";
        for (double t : cols) {
          md += " " +
              number_text(
                    first->at("treat_all")[static_cast<size_t>(column(*first, t))].as_double()) +
              " |";
        }
        md += "\n";
      }
      md += "\n";
    }
    md_figures(md, e, "decision_curve");
  }

  md += "### Label efficiency\n\n";
  if (e.contains("label_efficiency")) {
    md +=
        "| task | model | metric | fraction | patients used | records used | repeats | mean | sd | "
        "interval | notes |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    bool collapsed = false;
    bool fixed = false;
    for (const auto& task : e.at("label_efficiency").items()) {
      for (const auto& row : task.second.elements()) {
        auto field = [&](const char* key) { return row.contains(key) ? row.at(key) : Json(); };
        collapsed = collapsed ||
            (field("same_count_as").is_array() && field("same_count_as").size() > 0) ||
            (field("same_patients_as").is_array() && field("same_patients_as").size() > 0);
        fixed = fixed || (field("fixed_subset").is_bool() && field("fixed_subset").as_bool());
        md += "| " + cell(task.first) + " | " + cell(row.at("model").as_string()) + " | " +
            cell(row.at("metric").as_string()) + " | " + value_text(row.at("fraction")) + " | " +
            used_text(field("patients"), field("available_patients"), true) + " | " +
            used_text(field("records"), field("available_records"), false) + " | " +
            std::to_string(row.at("repeats").size()) + " | " + value_text(row.at("mean")) + " | " +
            value_text(row.at("sd")) + " | " + cell(interval_text(row)) + " | " +
            cell(field("note").is_string() ? field("note").as_string() : std::string()) + " |\n";
      }
    }
    md += "\n";
    if (collapsed) {
      md +=
          "**Note:** some requested fractions collapse onto the same subset size for this cohort "
          "(see the notes: each stratum gets at least one patient, so small fractions of a small "
          "cohort draw the same few patients). Read such rows as one point of the curve, not as "
          "a flat stretch of it.\n\n";
    }
    if (fixed) {
      md +=
          "Rows without an interval whose repeats were all trained on the same patients (a "
          "fraction of 1 uses every patient whatever the seed) differ at most by the probe's own "
          "randomness: their spread says nothing about the choice of labelled patients.\n\n";
    }
  } else {
    md_none(md);
  }
  md_figures(md, e, "label_efficiency");

  md += "### Subgroups\n\n";
  table("subgroup");

  if (e.contains("fairness")) {
    md += "### Subgroup fairness\n\n";
    md +=
        "Each group's discrimination, calibration and operating point, at one threshold shared by "
        "every group; the largest gap of each metric between the groups estimated, with a "
        "patient-bootstrap interval of the difference between the two groups named (an interval "
        "that includes 0: the data show no gap). The two groups are picked on the data, so a gap "
        "leans upward when groups are many and small: read it with its interval and the groups' "
        "sizes.\n\n";
    // "0.81 [0.74, 0.88]" or "—"
    auto with_interval = [](const Json& g, const char* key) -> std::string {
      if (!g.contains(key) || g.at(key).is_null()) {
        return "—";
      }
      const Json& v = g.at(key);
      std::string shown = number_text(v.at("value").as_double());
      if (!v.at("interval").is_null()) {
        shown += " [" + number_text(v.at("interval").at("lower").as_double()) + ", " +
            number_text(v.at("interval").at("upper").as_double()) + "]";
      }
      return shown;
    };
    for (const auto& task : e.at("fairness").items()) {
      for (const auto& model : task.second.items()) {
        for (const auto& attribute : model.second.items()) {
          const Json& a = attribute.second;
          md += "#### " + task.first + " · " + model.first + " · by " + attribute.first + "\n\n";
          md += "Threshold " + number_text(a.at("threshold").as_double()) + " (" +
              a.at("threshold_rule").as_string() + "); a group is estimated with at least " +
              std::to_string(a.at("min_positives").as_int64()) + " positives and " +
              std::to_string(a.at("min_negatives").as_int64()) + " negatives.\n\n";
          md +=
              "| group | records | positives | patients | AUROC | calibration slope | "
              "calibration intercept | calibration-in-the-large | sensitivity | specificity | "
              "notes |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
          for (const auto& g : a.at("groups").elements()) {
            std::string note = g.contains("note") ? g.at("note").as_string() : std::string();
            if (g.contains("calibration_note")) {
              note += (note.empty() ? "" : "; ") + g.at("calibration_note").as_string();
            }
            md += "| " + cell(g.at("group").as_string()) + " | " + value_text(g.at("n")) + " | " +
                value_text(g.at("positives")) + " | " + value_text(g.at("patients")) + " | " +
                with_interval(g, "auroc") + " | " + with_interval(g, "calibration_slope") + " | " +
                with_interval(g, "calibration_intercept") + " | " +
                with_interval(g, "calibration_in_the_large") + " | " +
                with_interval(g, "sensitivity") + " | " + with_interval(g, "specificity") + " | " +
                cell(note) + " |\n";
          }
          md +=
              "\n| metric | largest gap | highest | lowest | resamples | notes |\n"
              "| --- | --- | --- | --- | --- | --- |\n";
          for (const auto& gap : a.at("gaps").elements()) {
            const bool defined = !gap.at("gap").is_null();
            md += "| " + cell(gap.at("metric").as_string()) + " | " + with_interval(gap, "gap") +
                " | " + (defined ? cell(gap.at("highest").as_string()) : std::string("—")) + " | " +
                (defined ? cell(gap.at("lowest").as_string()) : std::string("—")) + " | " +
                (defined ? value_text(gap.at("resamples")) : std::string("—")) + " | " +
                cell(gap.contains("note") ? gap.at("note").as_string() : std::string()) + " |\n";
          }
          md += "\n";
        }
      }
    }
    md_figures(md, e, "fairness");
  }

  md += "### External validation\n\n";
  table("cohort");

  md += "### Audits\n\n";
  if (e.contains("audits")) {
    for (const auto& a : e.at("audits").items()) {
      md += "#### " + a.first + "\n\n";
      if (a.second.is_object()) {
        md_members(md, a.second, {});
      } else {
        md += value_text(a.second) + "\n\n";
      }
    }
  } else {
    md_none(md);
  }

  if (e.contains("retrieval_examples")) {
    md += "### Retrieval examples\n\n```json\n" + e.at("retrieval_examples").dump(2) + "\n```\n\n";
  }

  bool maps = false;
  if (e.contains("figures")) {
    for (const auto& f : e.at("figures").elements()) {
      maps = maps || f.at("kind").as_string() == "scatter";
    }
  }
  if (maps) {
    md += "### Embedding maps\n\n";
    md_figures(md, e, "scatter");
  }

  const std::vector<std::string> known = {
      "results",
      "calibration",
      "models",
      "decision_curves",
      "fairness",
      "label_efficiency",
      "audits",
      "retrieval_examples",
      "figures"};
  bool other = false;
  for (const auto& kv : e.items()) {
    other = other || std::find(known.begin(), known.end(), kv.first) == known.end();
  }
  if (other) {
    md += "### Other results\n\n";
    md_members(md, e, known);
  }

  md +=
      "## Reporting checklist\n\n| item | status | where in report.json | detail |\n"
      "| --- | --- | --- | --- |\n";
  for (const auto& item : doc.at("checklist").elements()) {
    const bool present = item.at("status").as_string() == "present";
    md += "| " + item.at("item").as_string() + " | " + (present ? "present" : "**missing**") +
        " | `" + item.at("location").as_string() + "` | " +
        cell(item.contains("detail") ? item.at("detail").as_string() : std::string()) + " |\n";
  }
  md += "\n";
  return md;
}

std::string Report::markdown() const {
  return render_markdown(build(nullptr));
}

} // namespace eval
} // namespace medcl
