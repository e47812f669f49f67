// report.html: the Markdown that report.md holds, as one self-contained HTML page.
#include <medcl/eval/report.h>

#include "internal.h"

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {
namespace report_detail {

namespace {

namespace fs = std::filesystem;

// The page loads nothing and runs nothing: the browser enforces it too, and reports (in its
// console) anything the page tries to load.
const char* const kContentSecurityPolicy =
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'";

// Wide tables scroll sideways inside their frame instead of squeezing their columns.
const char* const kStyle = R"css(
:root { color-scheme: light; }
body {
  max-width: 76rem; margin: 0 auto; padding: 1rem 1.5rem 4rem;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans",
    "Liberation Sans", Arial, sans-serif;
  color: #1b1f24; background: #fff;
}
h1, h2, h3, h4, h5, h6 { line-height: 1.25; margin: 1.6em 0 0.6em; }
h1 { font-size: 2rem; }
h2 { font-size: 1.5rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.25em; }
h3 { font-size: 1.2rem; }
h4 { font-size: 1.05rem; }
a { color: #0a58b5; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas,
  monospace; font-size: 0.875em; }
code { background: #eff1f3; padding: 0.1em 0.3em; border-radius: 3px; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 4px; padding: 0.75em 1em;
  overflow: auto; max-height: 36rem; }
pre code { background: none; padding: 0; }
.table-wrap { overflow-x: auto; margin: 1em 0; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.875rem; }
th, td { border: 1px solid #c7ced6; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #e9edf1; white-space: nowrap; }
td { min-width: 3em; max-width: 32em; }
td code { overflow-wrap: anywhere; }
tbody tr:nth-child(even) { background: #f4f6f8; }
tbody tr:hover { background: #fff6cc; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
figcaption { font-size: 0.9rem; color: #57606a; }
.missing-figure { border: 1px dashed #b42318; color: #b42318; background: #fef3f2;
  padding: 0.5em 0.8em; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 4px;
  padding: 0.5em 1.5em; margin: 1em 0 2em; }
nav.toc ul { margin: 0.3em 0; padding-left: 1.2em; }
footer { margin-top: 3em; font-size: 0.85rem; color: #57606a; }
@media print { .table-wrap { overflow: visible; } pre { max-height: none; } }
)css";

// ---- text ----

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool is_alnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_ascii_punct(char c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
      (c >= '{' && c <= '~');
}

std::string trim(const std::string& s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && is_space(s[b])) {
    ++b;
  }
  while (e > b && is_space(s[e - 1])) {
    --e;
  }
  return s.substr(b, e - b);
}

size_t leading_spaces(const std::string& s) {
  size_t n = 0;
  while (n < s.size() && s[n] == ' ') {
    ++n;
  }
  return n;
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return s;
}

// ---- blocks ----

/// `#` to `######`, a space and the text: the level (0 when `line` is not a heading) and the text.
std::pair<int, std::string> heading(const std::string& line) {
  const size_t indent = leading_spaces(line);
  if (indent > 3) {
    return {0, ""};
  }
  size_t n = indent;
  while (n < line.size() && line[n] == '#') {
    ++n;
  }
  const int level = static_cast<int>(n - indent);
  if (level < 1 || level > 6 || (n < line.size() && line[n] != ' ' && line[n] != '\t')) {
    return {0, ""};
  }
  std::string text = trim(line.substr(n));
  // An optional closing sequence of '#'s after a space.
  size_t end = text.size();
  while (end > 0 && text[end - 1] == '#') {
    --end;
  }
  if (end == 0) {
    text.clear();
  } else if (end < text.size() && is_space(text[end - 1])) {
    text = trim(text.substr(0, end));
  }
  return {level, text};
}

/// The backticks of a code fence (0 when `line` does not open or close one).
size_t fence(const std::string& line) {
  const size_t indent = leading_spaces(line);
  if (indent > 3) {
    return 0;
  }
  size_t n = indent;
  while (n < line.size() && line[n] == '`') {
    ++n;
  }
  return n - indent >= 3 ? n - indent : 0;
}

/// A bullet list item ("- text", any indentation): its indentation, or npos.
size_t list_item(const std::string& line) {
  const size_t indent = leading_spaces(line);
  if (indent < line.size() && line[indent] == '-' &&
      (indent + 1 == line.size() || line[indent + 1] == ' ' || line[indent + 1] == '\t')) {
    return indent;
  }
  return std::string::npos;
}

/// The cells of a table row: split at the '|' not escaped, "\|" read as '|' (as GitHub does, before
/// the cells' inline Markdown, so that it holds inside code spans too).
std::vector<std::string> table_cells(const std::string& line) {
  std::string row = trim(line);
  if (!row.empty() && row.front() == '|') {
    row.erase(0, 1);
  }
  if (!row.empty() && row.back() == '|' && (row.size() < 2 || row[row.size() - 2] != '\\')) {
    row.pop_back();
  }
  std::vector<std::string> cells;
  std::string cur;
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] == '\\' && i + 1 < row.size() && row[i + 1] == '|') {
      cur += '|';
      ++i;
    } else if (row[i] == '|') {
      cells.push_back(trim(cur));
      cur.clear();
    } else {
      cur += row[i];
    }
  }
  cells.push_back(trim(cur));
  return cells;
}

/// The delimiter row under a table's header ("| --- | :-: |"): the cells' alignments ("", "left",
/// "center", "right"), or none when `line` is not one.
std::vector<std::string> table_rule(const std::string& line) {
  const std::string t = trim(line);
  if (t.empty() || t.find('-') == std::string::npos ||
      t.find_first_not_of("|-: \t") != std::string::npos || t.find('|') == std::string::npos) {
    return {};
  }
  std::vector<std::string> align;
  for (const auto& c : table_cells(t)) {
    if (c.empty() || c.find('-') == std::string::npos) {
      return {};
    }
    const bool left = c.front() == ':';
    const bool right = c.back() == ':';
    align.push_back(left && right ? "center" : right ? "right" : left ? "left" : "");
  }
  return align;
}

bool table_start(const std::vector<std::string>& lines, size_t i) {
  return trim(lines[i]).rfind('|', 0) == 0 && i + 1 < lines.size() &&
      !table_rule(lines[i + 1]).empty();
}

// ---- the page ----

struct Heading {
  int level;
  std::string id;
  std::string text; // as HTML
};

class Renderer {
 public:
  explicit Renderer(fs::path figure_dir) : figure_dir_(std::move(figure_dir)) {
    used_ids_.insert("contents");
  }

  /// The page's body (headings collected in headings_; the end of the first `#` heading at
  /// after_title_, where the table of contents goes).
  std::string blocks(const std::string& markdown);

  std::vector<Heading> headings_;
  size_t after_title_ = 0;

 private:
  std::string inline_html(const std::string& s) const;
  std::string image(const std::string& alt, const std::string& src, bool figure) const;
  std::string link(const std::string& text_html, const std::string& href) const;
  std::string slug(const std::string& text);
  /// Where the emphasis (n = 1) or strong span (n = 2) that the run of n '*' or '_' at `from`
  /// opens is closed, or npos.
  size_t closing(const std::string& s, size_t from, size_t n) const;
  /// The end of the "[text](destination)" whose '[' is at `open`: text, destination and the index
  /// after ')'; false when there is none.
  bool bracket(const std::string& s, size_t open, std::string& text, std::string& dest, size_t& end)
      const;

  fs::path figure_dir_;
  std::set<std::string> used_ids_;
};

std::string Renderer::slug(const std::string& text) {
  // The heading's words: ASCII letters and digits lowercased, other UTF-8 text kept, everything
  // else (spaces, punctuation, Markdown) a single '-'.
  std::string id;
  bool dash = false;
  for (char c : text) {
    if (is_alnum(c) || static_cast<unsigned char>(c) >= 0x80) {
      if (dash && !id.empty()) {
        id += '-';
      }
      dash = false;
      id += c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    } else {
      dash = true;
    }
  }
  if (id.empty()) {
    id = "section";
  }
  std::string unique = id;
  for (int k = 2; used_ids_.count(unique) > 0; ++k) {
    unique = id + "-" + std::to_string(k);
  }
  used_ids_.insert(unique);
  return unique;
}

size_t Renderer::closing(const std::string& s, size_t from, size_t n) const {
  const char delim = s[from];
  const bool underscore = delim == '_';
  if (n > 2 || from + n >= s.size() || is_space(s[from + n])) {
    return std::string::npos;
  }
  if (underscore && from > 0 && is_alnum(s[from - 1])) {
    return std::string::npos; // inside a word (snake_case names): not emphasis
  }
  for (size_t i = from + n; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\') {
      ++i;
      continue;
    }
    if (c == '`') {
      size_t ticks = 0;
      while (i + ticks < s.size() && s[i + ticks] == '`') {
        ++ticks;
      }
      const size_t close = s.find(std::string(ticks, '`'), i + ticks);
      i = (close != std::string::npos ? close : i) + ticks - 1;
      continue;
    }
    if (c != delim) {
      continue;
    }
    size_t m = 0;
    while (i + m < s.size() && s[i + m] == delim) {
      ++m;
    }
    if (m == n && !is_space(s[i - 1]) && !(underscore && i + m < s.size() && is_alnum(s[i + m]))) {
      return i;
    }
    i += m - 1; // a run of another length: a span inside this one, or literal
  }
  return std::string::npos;
}

bool Renderer::bracket(
    const std::string& s,
    size_t open,
    std::string& text,
    std::string& dest,
    size_t& end) const {
  int depth = 0;
  size_t close = std::string::npos;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '[') {
      ++depth;
    } else if (s[i] == ']' && --depth == 0) {
      close = i;
      break;
    }
  }
  if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != '(') {
    return false;
  }
  int parens = 0;
  for (size_t i = close + 2; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size() && is_ascii_punct(s[i + 1])) {
      dest += s[++i];
    } else if (c == '(') {
      ++parens;
      dest += c;
    } else if (c == ')' && parens > 0) {
      --parens;
      dest += c;
    } else if (c == ')') {
      text = s.substr(open + 1, close - open - 1);
      dest = trim(dest);
      end = i + 1;
      return dest.find_first_of(" \t\n") == std::string::npos;
    } else {
      dest += c;
    }
  }
  dest.clear();
  return false;
}

/// Markdown text without its markup: backslash escapes resolved, '*', '_' and '`' dropped.
std::string plain_text(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && is_ascii_punct(s[i + 1])) {
      out += s[++i];
    } else if (s[i] != '*' && s[i] != '`') {
      out += s[i];
    }
  }
  return out;
}

std::string Renderer::link(const std::string& text_html, const std::string& href) const {
  // Relative links (the figures' data and scripts lie next to the page), in-page anchors and
  // web or mail addresses; any other scheme (javascript:, data:, file:) is shown as text only.
  const size_t colon = href.find(':');
  const size_t slash = href.find_first_of("/?#");
  const std::string scheme =
      colon != std::string::npos && (slash == std::string::npos || colon < slash)
      ? lower(href.substr(0, colon))
      : "";
  if (href.empty() ||
      !(scheme.empty() || scheme == "http" || scheme == "https" || scheme == "mailto")) {
    return text_html;
  }
  return "<a href=\"" + html_escape(href) + "\">" + text_html + "</a>";
}

std::string Renderer::image(const std::string& alt, const std::string& src, bool figure) const {
  const std::string ext = lower(fs::path(src).extension().string());
  std::string mime;
  if (ext == ".png") {
    mime = "image/png";
  } else if (ext == ".svg") {
    mime = "image/svg+xml";
  } else if (ext == ".jpg" || ext == ".jpeg") {
    mime = "image/jpeg";
  } else if (ext == ".gif") {
    mime = "image/gif";
  }
  std::string problem;
  std::string bytes;
  const fs::path rel(src);
  bool inside = !src.empty() && rel.is_relative() && !rel.has_root_name() &&
      src.find(':') == std::string::npos;
  for (const auto& part : rel) {
    inside = inside && part != "..";
  }
  if (!inside) {
    problem = "not embedded: " + src + " is not a file next to the report";
  } else if (mime.empty()) {
    problem = "not embedded: " + src + " is not a PNG, SVG, JPEG or GIF image";
  } else {
    std::ifstream in(figure_dir_ / rel, std::ios::binary);
    if (!in) {
      problem = "missing: " + src + " was not found next to the report";
    } else {
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      // A browser shows a broken picture for a file that is not the image its name says.
      const bool png = bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
      const bool svg = bytes.find("<svg") != std::string::npos;
      if (in.bad() || bytes.empty()) {
        problem = "missing: " + src + " could not be read";
      } else if ((mime == "image/png" && !png) || (mime == "image/svg+xml" && !svg)) {
        problem = "not embedded: " + src + " is not a valid " +
            (mime == "image/png" ? "PNG" : "SVG") + " file";
      }
    }
  }
  if (!problem.empty()) {
    const std::string note = "Figure \u201c" + html_escape(alt) + "\u201d " + html_escape(problem);
    return figure ? "<p class=\"missing-figure\">" + note + "</p>\n"
                  : "<span class=\"missing-figure\">" + note + "</span>";
  }
  const std::string img = "<img src=\"data:" + mime + ";base64," + base64_encode(bytes) +
      "\" alt=\"" + html_escape(alt) + "\">";
  if (!figure) {
    return img;
  }
  return "<figure>" + img + "<figcaption>" + html_escape(alt) + "</figcaption></figure>\n";
}

std::string Renderer::inline_html(const std::string& s) const {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size() && is_ascii_punct(s[i + 1])) {
      out += html_escape(std::string(1, s[++i]));
      continue;
    }
    if (c == '`') {
      size_t n = 0;
      while (i + n < s.size() && s[i + n] == '`') {
        ++n;
      }
      // The closing run has exactly as many backticks.
      size_t close = s.find(std::string(n, '`'), i + n);
      while (close != std::string::npos && close + n < s.size() && s[close + n] == '`') {
        size_t run = close;
        while (run < s.size() && s[run] == '`') {
          ++run;
        }
        close = s.find(std::string(n, '`'), run);
      }
      if (close == std::string::npos) {
        out += std::string(n, '`');
        i += n - 1;
        continue;
      }
      std::string code = s.substr(i + n, close - i - n);
      std::replace(code.begin(), code.end(), '\n', ' ');
      if (code.size() >= 2 && code.front() == ' ' && code.back() == ' ' &&
          code.find_first_not_of(' ') != std::string::npos) {
        code = code.substr(1, code.size() - 2);
      }
      out += "<code>" + html_escape(code) + "</code>";
      i = close + n - 1;
      continue;
    }
    if ((c == '!' && i + 1 < s.size() && s[i + 1] == '[') || c == '[') {
      const size_t open = c == '!' ? i + 1 : i;
      std::string text;
      std::string dest;
      size_t end = 0;
      if (bracket(s, open, text, dest, end)) {
        out += c == '!' ? image(plain_text(text), dest, false) : link(inline_html(text), dest);
        i = end - 1;
        continue;
      }
    }
    if (c == '*' || c == '_') {
      size_t n = 0;
      while (i + n < s.size() && s[i + n] == c) {
        ++n;
      }
      const size_t close = closing(s, i, n);
      if (close != std::string::npos) {
        const std::string tag = n == 2 ? "strong" : "em";
        out += "<" + tag + ">" + inline_html(s.substr(i + n, close - i - n)) + "</" + tag + ">";
        i = close + n - 1;
        continue;
      }
      out += std::string(n, c);
      i += n - 1;
      continue;
    }
    out += html_escape(std::string(1, c));
  }
  return out;
}

std::string Renderer::blocks(const std::string& markdown) {
  std::vector<std::string> lines;
  {
    std::istringstream in(markdown);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') {
        line.pop_back();
      }
      lines.push_back(line);
    }
  }
  std::string out;
  size_t i = 0;
  const auto starts_block = [&](size_t k) {
    return heading(lines[k]).first > 0 || fence(lines[k]) > 0 ||
        list_item(lines[k]) != std::string::npos || table_start(lines, k);
  };
  while (i < lines.size()) {
    const std::string& line = lines[i];
    if (trim(line).empty()) {
      ++i;
      continue;
    }
    if (const size_t ticks = fence(line)) {
      const std::string info = trim(line.substr(line.find('`') + ticks));
      const std::string lang = info.substr(0, info.find_first_of(" \t"));
      std::string code;
      for (++i; i < lines.size(); ++i) {
        const size_t close = fence(lines[i]);
        if (close >= ticks && trim(lines[i]).find_first_not_of('`') == std::string::npos) {
          ++i;
          break;
        }
        code += lines[i] + "\n";
      }
      out += "<pre><code" +
          (lang.empty() ? std::string() : " class=\"language-" + html_escape(lang) + "\"") + ">" +
          html_escape(code) + "</code></pre>\n";
      continue;
    }
    const auto h = heading(line);
    if (h.first > 0) {
      const std::string id = slug(plain_text(h.second));
      const std::string text = inline_html(h.second);
      const std::string tag = "h" + std::to_string(h.first);
      out += "<" + tag + " id=\"" + id + "\">" + text + "</" + tag + ">\n";
      headings_.push_back({h.first, id, html_escape(plain_text(h.second))});
      if (h.first == 1 && headings_.size() == 1) {
        after_title_ = out.size();
      }
      ++i;
      continue;
    }
    if (table_start(lines, i)) {
      const auto align = table_rule(lines[i + 1]);
      const auto header = table_cells(lines[i]);
      const auto row_html = [&](const std::vector<std::string>& cells, const char* tag) {
        std::string row = "<tr>";
        for (size_t k = 0; k < align.size(); ++k) {
          row += std::string("<") + tag +
              (align[k].empty() ? std::string() : " style=\"text-align:" + align[k] + "\"") + ">" +
              (k < cells.size() ? inline_html(cells[k]) : std::string()) + "</" + tag + ">";
        }
        return row + "</tr>\n";
      };
      out += "<div class=\"table-wrap\"><table>\n<thead>\n" + row_html(header, "th") +
          "</thead>\n<tbody>\n";
      for (i += 2; i < lines.size() && trim(lines[i]).rfind('|', 0) == 0; ++i) {
        out += row_html(table_cells(lines[i]), "td");
      }
      out += "</tbody>\n</table></div>\n";
      continue;
    }
    if (list_item(line) != std::string::npos) {
      // Nested by indentation: one <ul> per deeper level, inside the item above it.
      std::vector<size_t> open;
      for (; i < lines.size() && list_item(lines[i]) != std::string::npos; ++i) {
        const size_t indent = list_item(lines[i]);
        if (open.empty() || indent > open.back()) {
          out += "<ul>\n";
          open.push_back(indent);
        } else {
          while (open.size() > 1 && indent < open.back()) {
            out += "</li>\n</ul>\n";
            open.pop_back();
          }
          out += "</li>\n";
        }
        out += "<li>" + inline_html(trim(lines[i].substr(indent + 1)));
      }
      for (size_t k = 0; k < open.size(); ++k) {
        out += "</li>\n</ul>\n";
      }
      continue;
    }
    // A paragraph: its lines up to a blank line or another block.
    std::string text = trim(line);
    for (++i; i < lines.size() && !trim(lines[i]).empty() && !starts_block(i); ++i) {
      text += "\n" + trim(lines[i]);
    }
    std::string dest;
    std::string alt;
    size_t end = 0;
    if (text.rfind("![", 0) == 0 && bracket(text, 1, alt, dest, end) && end == text.size()) {
      out += image(plain_text(alt), dest, true);
    } else {
      out += "<p>" + inline_html(text) + "</p>\n";
    }
  }
  return out;
}

} // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        // Control characters other than tab and line feed are not allowed in HTML text.
        if ((static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') || c == 0x7f) {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string base64_encode(const std::string& bytes) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned v = static_cast<unsigned char>(bytes[i]) << 16 |
        static_cast<unsigned char>(bytes[i + 1]) << 8 | static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) {
      v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    }
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string markdown_to_html(
    const std::string& markdown,
    const std::filesystem::path& figure_dir,
    const std::string& title) {
  Renderer r(figure_dir);
  std::string body = r.blocks(markdown);
  std::string toc;
  for (const auto& h : r.headings_) {
    if (h.level == 2) {
      toc += "<li><a href=\"#" + h.id + "\">" + h.text + "</a></li>\n";
    }
  }
  if (!toc.empty()) {
    body.insert(
        r.after_title_,
        "<nav class=\"toc\" id=\"contents\" aria-label=\"Contents\">\n<strong>Contents</strong>\n"
        "<ul>\n" +
            toc + "</ul>\n</nav>\n");
  }
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta http-equiv=\"Content-Security-Policy\" content=\"" +
      std::string(kContentSecurityPolicy) +
      "\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<meta name=\"generator\" content=\"medcl\">\n<title>" +
      html_escape(title.empty() ? std::string("medcl report") : title) + "</title>\n<style>" +
      kStyle + "</style>\n</head>\n<body>\n<main>\n" + body +
      "</main>\n<footer>Written by medcl from report.md. The figures are embedded; the data files "
      "(.dat) and gnuplot scripts (.gp) they link to lie next to this page.</footer>\n"
      "</body>\n</html>\n";
}

} // namespace report_detail
} // namespace eval
} // namespace medcl
