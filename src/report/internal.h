#pragma once

// What the parts of the report share (src/report/): checks and records (records.cpp), text for
// report.md (markdown.cpp), figure data and gnuplot (gnuplot.cpp). Not installed.

#include <medcl/core/json.h>
#include <medcl/eval/report.h>

#include <filesystem>
#include <string>

namespace medcl {
namespace eval {
namespace report_detail {

// ---- records.cpp ----
void check_finite(const char* fn, const std::string& what, double v);
/// {"value": v, "interval": {...} or null}, checked (finite, lower <= value <= upper, level).
Json estimate_json(const char* fn, const std::string& what, const Estimate& e);
/// The record of one result, checked (see Report::add_result).
Json result_json(const Result& r);

// ---- markdown.cpp ----
/// A number as report.md shows it (shortest text that reads back, C locale).
std::string number_text(double v);
/// Single-quoted for a POSIX shell.
std::string sh_quote(const std::string& s);

// ---- gnuplot.cpp ----
/// Free text (a title, a series name) on one line: every control character (line breaks, tabs,
/// NUL) becomes a space, so that it cannot end a comment or a quoted string early.
std::string one_line(const std::string& s);
/// ".png" or ".svg" for a gnuplot terminal.
std::string image_extension(const std::string& terminal);
/// A gnuplot program's path ("" when not found).
std::string find_program(const std::string& name);
/// The figure's data file (.dat) text.
std::string data_file(const Report::Figure& f);
/// The figure's gnuplot script (.gp) text.
std::string gnuplot_script(const Report::Figure& f, const ReportOptions& o);
/// Runs gnuplot on `script` in `dir`; "" when it drew `image`, else why not.
std::string run_gnuplot(
    const std::string& gnuplot,
    const std::filesystem::path& dir,
    const std::string& script,
    const std::string& image);

} // namespace report_detail
} // namespace eval
} // namespace medcl
