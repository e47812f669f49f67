#pragma once

// What the parts of the report share (src/report/): checks and records (records.cpp), text for
// report.md (markdown.cpp), figure data and gnuplot (gnuplot.cpp), report.html (html.cpp). Not
// installed.

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

// ---- html.cpp ----
/// Text for HTML content or a quoted attribute value: & < > " ' escaped, control characters other
/// than tab and line feed replaced by spaces.
std::string html_escape(const std::string& text);
/// Base64 (RFC 4648, standard alphabet, '=' padding) of `bytes`.
std::string base64_encode(const std::string& bytes);
/// report.html: the Markdown that report.md holds (`markdown`) as one self-contained HTML5 page
/// titled `title`: a table of contents of the `##` sections, each image embedded as a data: URI
/// read from `figure_dir` (an image that is missing there, or not a file next to the report,
/// becomes a visible note), no script and nothing loaded from elsewhere (a Content-Security-Policy
/// says so to the browser). Links stay as they are (the figures' .dat and .gp lie next to the
/// page); any other scheme than http, https or mailto is shown as text only. Free text is escaped:
/// raw HTML in the Markdown reads as text. Supports what render_markdown writes: ATX headings,
/// paragraphs, pipe tables ("\|" in cells), fenced code, "- " lists nested by indentation, code
/// spans, **strong**, *emphasis* and _emphasis_, images and links.
std::string markdown_to_html(
    const std::string& markdown,
    const std::filesystem::path& figure_dir,
    const std::string& title);

} // namespace report_detail
} // namespace eval
} // namespace medcl
