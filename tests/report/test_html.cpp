// report.html: the converter of report.md (src/report/html.cpp), and a real report's page opened in
// headless Chromium.
#include <medcl/core/files.h>
#include <medcl/core/json.h>
#include <medcl/eval/report.h>

#include "../src/report/internal.h"
#include "catch.h"
#include "support.h"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using medcl::Json;
using medcl::Report;
using medcl::ReportOptions;
using medcl::eval::report_detail::base64_encode;
using medcl::eval::report_detail::html_escape;
using medcl::eval::report_detail::markdown_to_html;
using medcl_test::Contains;
using medcl_test::TempDir;
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

/// The text between `before` and the next `after`, from `from` on ("" when absent).
std::string between(
    const std::string& s,
    const std::string& before,
    const std::string& after,
    size_t from = 0) {
  const size_t b = s.find(before, from);
  if (b == std::string::npos) {
    return "";
  }
  const size_t e = s.find(after, b + before.size());
  return e == std::string::npos ? "" : s.substr(b + before.size(), e - b - before.size());
}

/// Base64 decoding written independently of the encoder (RFC 4648: the standard alphabet, '='
/// padding); throws on anything else.
std::string base64_decode(const std::string& text) {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (text.size() % 4 != 0) {
    throw std::runtime_error("base64 of length " + std::to_string(text.size()));
  }
  std::string out;
  for (size_t i = 0; i < text.size(); i += 4) {
    unsigned v = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = text[i + k];
      unsigned d = 0;
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        ++pad;
      } else if (pad > 0 || alphabet.find(c) == std::string::npos) {
        throw std::runtime_error(std::string("bad base64 character '") + c + "'");
      } else {
        d = static_cast<unsigned>(alphabet.find(c));
      }
      v = v * 64 + d;
    }
    out += static_cast<char>((v >> 16) & 255);
    if (pad < 2) {
      out += static_cast<char>((v >> 8) & 255);
    }
    if (pad < 1) {
      out += static_cast<char>(v & 255);
    }
  }
  return out;
}

/// A valid 2x1 PNG (red and blue pixels), as written by a PNG encoder.
std::string tiny_png() {
  const unsigned char bytes[] = {
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
      0x44, 0x52, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00,
      0x00, 0x7b, 0x40, 0xe8, 0xdd, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
      0xda, 0x63, 0xf8, 0xcf, 0x00, 0x04, 0xff, 0x01, 0x07, 0x00, 0x01, 0xff, 0x3d, 0x7d,
      0x8c, 0x49, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
  return std::string(reinterpret_cast<const char*>(bytes), sizeof(bytes));
}

/// The page of `markdown` alone, with figures looked up in `dir`.
std::string page(const std::string& markdown, const fs::path& dir = fs::path(".")) {
  return markdown_to_html(markdown, dir, "test");
}

/// The <main> part of the page: what the Markdown became.
std::string body(const std::string& markdown, const fs::path& dir = fs::path(".")) {
  return between(page(markdown, dir), "<main>\n", "</main>");
}

/// Every id="..." of a page.
std::vector<std::string> ids(const std::string& html) {
  std::vector<std::string> out;
  for (size_t at = html.find(" id=\""); at != std::string::npos; at = html.find(" id=\"", at + 1)) {
    out.push_back(between(html, " id=\"", "\"", at));
  }
  return out;
}

/// Single-quoted for the shell.
std::string sh(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return out + "'";
}

bool have_program(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

/// Runs headless Chromium on `url` with `args`, its profile, home and caches inside `dir`, at most
/// two minutes; stdout to `out`, stderr to `log`. The exit status (124: it was stopped).
int chromium(
    const fs::path& dir,
    const std::string& args,
    const std::string& url,
    const fs::path& out,
    const fs::path& log) {
  const std::string d = dir.string();
  const std::string command = "HOME=" + sh(d) + " XDG_CONFIG_HOME=" + sh(d + "/xdg") +
      " XDG_CACHE_HOME=" + sh(d + "/xdg") +
      " timeout -k 10 120 chromium --headless --disable-gpu --no-sandbox --user-data-dir=" +
      sh(d + "/profile") +
      " --no-first-run --no-default-browser-check --disable-extensions --disable-sync"
      " --disable-background-networking --disable-component-update --disable-dev-shm-usage"
      " --hide-scrollbars --window-size=1200,3000 " +
      args + " " + sh(url) + " >" + sh(out.string()) + " 2>" + sh(log.string()) + " </dev/null";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// The console messages that Chromium logged (its "CONSOLE" lines), one per line.
std::string console_lines(const std::string& log) {
  std::string out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(":CONSOLE") != std::string::npos) {
      out += line + "\n";
    }
  }
  return out;
}

const char* const kName = "<script>alert(1)</script> | SimCLR";

/// A report with a few results and figures, written into `dir`; the figures drawn where gnuplot
/// is installed.
medcl::ReportFiles write_report(const fs::path& dir, const std::string& terminal, bool draw) {
  Report r(ReportOptions().terminal(terminal).draw_figures(draw));
  Json corpus;
  corpus["name"] = "synthetic ECG — ± · ≥";
  corpus["records"] = 120;
  r.set_corpus(corpus);
  r.set_split_rule("by patient id, 70/30");
  r.add_split("train", 70, 840);
  r.add_split("test", 30, 360);
  r.set_method("SimCLR");
  Json loss_options;
  loss_options["temperature"] = 0.1;
  r.set_loss("NTXentLoss", loss_options);
  r.add_loss_curve({0, 1, 2, 3, 4}, {5.0, 4.6, 4.1, 3.7, 3.25});
  r.add_metric("af", "auroc", 0.912, 0.887, 0.937, "DeLong");
  r.add_result(medcl::eval::Result("af", kName, "AUROC", medcl::Estimate(0.8, 0.7, 0.9, "DeLong"))
                   .n(360)
                   .patients(30));
  r.add_roc_curve("af", "SimCLR", {0, 0.1, 0.3, 1}, {0, 0.6, 0.9, 1});
  r.add_roc_curve("af", "supervised", {0, 0.2, 1}, {0, 0.5, 1});
  medcl::eval::Calibration cal;
  cal.bin_lower = {0.0, 0.5};
  cal.bin_upper = {0.5, 1.0};
  cal.mean_probability = {0.2, 0.8};
  cal.observed_rate = {0.25, 0.7};
  cal.count = {60, 40};
  cal.ece = 0.07;
  r.add_calibration("af", "SimCLR", cal);
  return r.write(dir.string());
}

// Added to a copy of the page for the check only (the page itself has no script): when the page
// has loaded, writes what it found into the document, which --dump-dom prints.
const char* const kPageCheck = R"js(<script>
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-check', 'images=' + images.length + ' broken=' + broken.length +
      ' scripts=' + document.scripts.length + ' resources=' +
      performance.getEntriesByType('resource').length + ' height=' + document.body.scrollHeight);
});
</script>)js";

// A page that decodes the screenshot in a canvas and counts the pixels that differ from the first.
const char* const kShotCheckHead = R"(<!DOCTYPE html><html><head><meta charset="utf-8">
<title>screenshot check</title></head><body><img id="shot" alt="screenshot" src="data:image/png;base64,)";
const char* const kShotCheckTail = R"js("><script>
window.addEventListener('load', function () {
  var img = document.getElementById('shot');
  var canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  var g = canvas.getContext('2d');
  g.drawImage(img, 0, 0);
  var d = g.getImageData(0, 0, canvas.width, canvas.height).data;
  var differ = 0;
  var colours = new Set();
  for (var i = 0; i < d.length; i += 4) {
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) {
      ++differ;
    }
    if (colours.size < 1000) {
      colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
  }
  document.body.setAttribute('data-check', 'width=' + canvas.width + ' height=' + canvas.height +
      ' differ=' + differ + ' colours=' + colours.size);
});
</script></body></html>
)js";

/// The number after "key=" in a check's result (-1 when absent).
long check_value(const std::string& check, const std::string& key) {
  const std::string text = between(check + " ", key + "=", " ");
  return text.empty() ? -1 : std::stol(text);
}

} // namespace

TEST_CASE("HTML report: base64 follows RFC 4648 and round-trips every byte", "[report][html]") {
  CHECK(base64_encode("").empty());
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("foob") == "Zm9vYg==");
  CHECK(base64_encode("fooba") == "Zm9vYmE=");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  std::string all;
  for (int b = 0; b < 256; ++b) {
    all += static_cast<char>(b);
  }
  for (size_t n = 0; n <= all.size(); n += 37) {
    CHECK(base64_decode(base64_encode(all.substr(0, n))) == all.substr(0, n));
  }
  CHECK(base64_encode("\xff\xfe\xfd") == "//79");
}

TEST_CASE("HTML report: a complete page, self-contained, with no script", "[report][html]") {
  const std::string html = markdown_to_html("# Title\n\nText.\n", ".", "run <1> & \"two\"");
  CHECK(
      html.rfind("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">", 0) == 0);
  CHECK_THAT(html, Contains("<title>run &lt;1&gt; &amp; &quot;two&quot;</title>"));
  CHECK_THAT(html, Contains("<style>"));
  CHECK_THAT(html, Contains("overflow-x: auto"));
  CHECK_THAT(html, Contains("nth-child(even)"));
  // The browser is told to load nothing and run nothing.
  CHECK_THAT(
      html,
      Contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
               "img-src data:; style-src 'unsafe-inline'\">"));
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("http:") == std::string::npos);
  CHECK(html.find("https:") == std::string::npos);
  CHECK(html.find(" src=") == std::string::npos);
  CHECK_THAT(html, Contains("<h1 id=\"title\">Title</h1>"));
  CHECK_THAT(html, Contains("<p>Text.</p>"));
  CHECK(html.substr(html.size() - 8) == "</html>\n");
  CHECK(markdown_to_html("", ".", "").find("<title>medcl report</title>") != std::string::npos);
}

TEST_CASE("HTML report: pipe tables with escaped bars, code and bold cells", "[report][html]") {
  const std::string html = body(
      "| model | value | notes |\n"
      "| --- | ---: | :-: |\n"
      "| a \\| b | **0.91** | `{\"k\":\"x\\|y\"}` and *tuned* |\n"
      "| short |\n"
      "\n"
      "After.\n");
  CHECK_THAT(html, Contains("<div class=\"table-wrap\"><table>"));
  CHECK_THAT(
      html,
      Contains("<tr><th>model</th><th style=\"text-align:right\">value</th>"
               "<th style=\"text-align:center\">notes</th></tr>"));
  CHECK_THAT(
      html,
      Contains("<tr><td>a | b</td><td style=\"text-align:right\"><strong>0.91</strong></td>"
               "<td style=\"text-align:center\"><code>{&quot;k&quot;:&quot;x|y&quot;}</code> and "
               "<em>tuned</em></td></tr>"));
  // A short row is filled up to the header's columns.
  CHECK_THAT(
      html,
      Contains("<tr><td>short</td><td style=\"text-align:right\"></td>"
               "<td style=\"text-align:center\"></td></tr>"));
  CHECK(count(html, "<tr>") == 3);
  CHECK_THAT(html, Contains("</table></div>\n<p>After.</p>"));
}

TEST_CASE(
    "HTML report: headings get unique ids and the sections a table of contents",
    "[report][html]") {
  const std::string html = page(
      "# medcl evaluation report\n\n"
      "## Run\n\ntext\n\n"
      "### Results · AUROC ≥ 0.5\n\n"
      "## Run\n\n"
      "#### death or transplant within 2 years · SimCLR (PCLR)\n\n"
      "## Reporting `checklist` ##\n\n"
      "## Contents\n");
  CHECK_THAT(html, Contains("<h1 id=\"medcl-evaluation-report\">medcl evaluation report</h1>"));
  CHECK_THAT(html, Contains("<h2 id=\"run\">Run</h2>"));
  CHECK_THAT(html, Contains("<h2 id=\"run-2\">Run</h2>"));
  CHECK_THAT(html, Contains("<h3 id=\"results-·-auroc-≥-0-5\">Results · AUROC ≥ 0.5</h3>"));
  CHECK_THAT(
      html,
      Contains("<h4 id=\"death-or-transplant-within-2-years-·-simclr-pclr\">death or transplant "
               "within 2 years · SimCLR (PCLR)</h4>"));
  CHECK_THAT(
      html, Contains("<h2 id=\"reporting-checklist\">Reporting <code>checklist</code></h2>"));
  CHECK_THAT(html, Contains("<h2 id=\"contents-2\">Contents</h2>"));
  // The table of contents: right after the title, the ## sections only, each link to its heading.
  const std::string toc = between(html, "<nav class=\"toc\" id=\"contents\"", "</nav>");
  REQUIRE_FALSE(toc.empty());
  CHECK(html.find("</h1>\n<nav class=\"toc\"") != std::string::npos);
  CHECK(count(toc, "<li>") == 4);
  CHECK_THAT(
      toc, Contains("<li><a href=\"#run\">Run</a></li>\n<li><a href=\"#run-2\">Run</a></li>"));
  CHECK_THAT(toc, Contains("<a href=\"#reporting-checklist\">Reporting checklist</a>"));
  CHECK(toc.find("results") == std::string::npos);
  const auto all = ids(html);
  CHECK(std::set<std::string>(all.begin(), all.end()).size() == all.size());
  for (size_t at = toc.find("href=\"#"); at != std::string::npos;
       at = toc.find("href=\"#", at + 1)) {
    const std::string target = between(toc, "href=\"#", "\"", at);
    INFO(target);
    CHECK(count(html, " id=\"" + target + "\"") == 1);
  }
  // No ## section, no table of contents.
  CHECK(page("# Only a title\n\n### Deeper\n").find("<nav") == std::string::npos);
}

TEST_CASE("HTML report: free text is escaped, never markup", "[report][html]") {
  const std::string evil = "<script>alert('x')</script>";
  const std::string html = page(
      "# Report for " + evil + "\n\n## " + evil + "\n\n" + "| model | value |\n| --- | --- |\n| " +
      evil + " & <img src=x onerror=alert(1)> | `" + evil + "` |\n\n" + "Text " + evil +
      " and [link " + evil + "](javascript:alert(1)) and [data](" +
      "data:text/html,x) and [fine](loss.dat) and [web](https://example.org/a?b=1&c=\"2\").\n\n" +
      "- item " + evil + "\n\n```\n" + evil + "\n```\n\n![" + evil + "](missing.png)\n");
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  CHECK(html.find("javascript:") == std::string::npos);
  CHECK(html.find("href=\"data:") == std::string::npos);
  const std::string escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;";
  CHECK(count(html, escaped) >= 9);
  CHECK_THAT(html, Contains("<title>test</title>"));
  CHECK_THAT(html, Contains("<td>" + escaped + " &amp; &lt;img src=x onerror=alert(1)&gt;</td>"));
  CHECK_THAT(html, Contains("<td><code>" + escaped + "</code></td>"));
  // A link to a script or data is shown as its text; relative and web links stay links.
  CHECK_THAT(html, Contains(" and link " + escaped + " and data and "));
  CHECK_THAT(html, Contains("<a href=\"loss.dat\">fine</a>"));
  CHECK_THAT(html, Contains("<a href=\"https://example.org/a?b=1&amp;c=&quot;2&quot;\">web</a>"));
  CHECK_THAT(html, Contains("<li>item " + escaped + "</li>"));
  CHECK_THAT(html, Contains("<pre><code>" + escaped + "\n</code></pre>"));
  // Control characters cannot reach the page.
  CHECK(html_escape(std::string("a\0b\x1b\x7f\tc\n", 8)) == "a b  \tc\n");
}

TEST_CASE("HTML report: an image is embedded, its bytes unchanged", "[report][html]") {
  TempDir dir;
  const std::string png = tiny_png();
  write_text(dir.path / "roc_af.png", png);
  const std::string svg =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\"><rect width=\"4\" "
      "height=\"4\" fill=\"#0072b2\"/></svg>\n";
  write_text(dir.path / "map.svg", svg);
  const std::string html = body(
      "![ROC curve: af \\[test\\]](roc_af.png)\n\n"
      "Data: [roc_af.dat](roc_af.dat), gnuplot script: [roc_af.gp](roc_af.gp)\n\n"
      "![Map](map.svg)\n\n"
      "Inline ![small](roc_af.png) picture.\n",
      dir.path);
  // A picture alone in its paragraph is a figure with its title as the caption.
  CHECK_THAT(html, Contains("<figure><img src=\"data:image/png;base64,"));
  CHECK_THAT(
      html,
      Contains("\" alt=\"ROC curve: af [test]\"><figcaption>ROC curve: af "
               "[test]</figcaption></figure>"));
  const std::string b64 = between(html, "src=\"data:image/png;base64,", "\"");
  REQUIRE_FALSE(b64.empty());
  CHECK(base64_decode(b64) == png);
  const std::string svg64 = between(html, "src=\"data:image/svg+xml;base64,", "\"");
  REQUIRE_FALSE(svg64.empty());
  CHECK(base64_decode(svg64) == svg);
  CHECK_THAT(
      html,
      Contains(
          "<p>Inline <img src=\"data:image/png;base64," + b64 + "\" alt=\"small\"> picture.</p>"));
  // The data and the script stay links to the files next to the page.
  CHECK_THAT(
      html,
      Contains("<p>Data: <a href=\"roc_af.dat\">roc_af.dat</a>, gnuplot script: "
               "<a href=\"roc_af.gp\">roc_af.gp</a></p>"));
  CHECK(count(html, "<img ") == 3);
}

TEST_CASE(
    "HTML report: a missing or unusable image is a visible note, never a broken picture",
    "[report][html]") {
  TempDir dir;
  write_text(dir.path / "fake.png", "not a png");
  fs::create_directories(dir.path / "sub");
  write_text(dir.path / "sub" / "ok.png", tiny_png());
  const std::string absolute = "![Absolute](" + (dir.path / "sub" / "ok.png").string() + ")\n\n";
  const std::string html = body(
      "![ROC curve: af](roc_af.png)\n\n"
      "![Fake](fake.png)\n\n"
      "![Outside](../outside.png)\n\n"
      "![Web](http://example.org/x.png)\n\n"
      "![Data](data.dat)\n\n"
      "![In a folder](sub/ok.png)\n\n" +
          absolute,
      dir.path);
  CHECK_THAT(
      html,
      Contains("<p class=\"missing-figure\">Figure “ROC curve: af” missing: roc_af.png was not "
               "found next to the report</p>"));
  CHECK_THAT(html, Contains("Figure “Fake” not embedded: fake.png is not a valid PNG file"));
  CHECK_THAT(
      html,
      Contains("Figure “Outside” not embedded: ../outside.png is not a file next to the report"));
  CHECK_THAT(html, Contains("Figure “Absolute” not embedded: "));
  CHECK_THAT(html, Contains("Figure “Web” not embedded: http://example.org/x.png is not a file"));
  CHECK_THAT(
      html, Contains("Figure “Data” not embedded: data.dat is not a PNG, SVG, JPEG or GIF image"));
  CHECK(count(html, "class=\"missing-figure\"") == 6);
  // Only the picture inside the report's folder is embedded.
  CHECK(count(html, "<img ") == 1);
  CHECK_THAT(html, Contains("alt=\"In a folder\""));
}

TEST_CASE("HTML report: fenced code is kept verbatim and escaped", "[report][html]") {
  const std::string html = body(
      "### Retrieval examples\n\n"
      "```json\n"
      "[\n"
      "  {\"model\": \"<b>A</b> & B\", \"note\": \"*not emphasis* `no code` | no cell\"},\n"
      "\n"
      "  # not a heading\n"
      "  - not a list\n"
      "]\n"
      "```\n"
      "After the code.\n");
  CHECK_THAT(
      html,
      Contains("<pre><code class=\"language-json\">[\n"
               "  {&quot;model&quot;: &quot;&lt;b&gt;A&lt;/b&gt; &amp; B&quot;, &quot;note&quot;: "
               "&quot;*not emphasis* `no code` | no cell&quot;},\n"
               "\n"
               "  # not a heading\n"
               "  - not a list\n"
               "]\n"
               "</code></pre>\n<p>After the code.</p>"));
  // An unclosed fence runs to the end.
  CHECK_THAT(body("```\nx <y>\n"), Contains("<pre><code>x &lt;y&gt;\n</code></pre>"));
}

TEST_CASE("HTML report: lists, emphasis, names with underscores and UTF-8 text", "[report][html]") {
  const std::string html = body(
      "**augmentation**\n\n"
      "- **modality**: tabular\n"
      "- **transform**:\n"
      "  - **feature_mask**:\n"
      "    - **p**: 0.25\n"
      "  - **feature_noise**: scale 0.2\n"
      "- **seed**: 11\n"
      "\n"
      "_None recorded._ and *Figure \"a\\*b\" not drawn: no gnuplot* and 2 * 3 * 4\n"
      "simclr_patient__pclr__pca_by_site and per_site_auroc and __strong__\n"
      "\n"
      "Net benefit (TP/n − FP/n · t/(1 − t)), 0.91 ± 0.02, AUROC ≥ 0.8 — fine.\n");
  CHECK_THAT(
      html,
      Contains("<p><strong>augmentation</strong></p>\n"
               "<ul>\n<li><strong>modality</strong>: tabular</li>\n"
               "<li><strong>transform</strong>:<ul>\n"
               "<li><strong>feature_mask</strong>:<ul>\n"
               "<li><strong>p</strong>: 0.25</li>\n</ul>\n</li>\n"
               "<li><strong>feature_noise</strong>: scale 0.2</li>\n</ul>\n</li>\n"
               "<li><strong>seed</strong>: 11</li>\n</ul>\n"));
  CHECK(count(html, "<ul>") == count(html, "</ul>"));
  CHECK(count(html, "<li>") == count(html, "</li>"));
  CHECK_THAT(
      html,
      Contains("<p><em>None recorded.</em> and <em>Figure &quot;a*b&quot; not drawn: no "
               "gnuplot</em> and 2 * 3 * 4\nsimclr_patient__pclr__pca_by_site and "
               "per_site_auroc and <strong>strong</strong></p>"));
  CHECK_THAT(
      html,
      Contains("<p>Net benefit (TP/n − FP/n · t/(1 − t)), 0.91 ± 0.02, AUROC ≥ 0.8 — fine.</p>"));
}

// Renders `page_path` (whose figures are embedded; `drawn` of them) in headless Chromium, working
// in `dir`: a screenshot that is not blank, no console message, every image loaded, no other
// script and nothing fetched. Returns the DOM of the rendered page.
std::string check_in_chromium(
    const fs::path& dir,
    const fs::path& page_path,
    const std::string& html,
    size_t drawn) {
  // The page as it is: a screenshot, and not one message in the console (the page has no
  // script: a message would be the browser's, about something it could not load or run).
  const fs::path shot = dir / "shot.png";
  const fs::path log = dir / "chromium.log";
  const int rc = chromium(
      dir,
      "--enable-logging=stderr --v=0 --screenshot=" + sh(shot.string()),
      "file://" + page_path.string(),
      dir / "chromium.out",
      log);
  INFO("chromium log:\n" << read_text(log));
  REQUIRE(rc == 0);
  CHECK(console_lines(read_text(log)).empty());
  REQUIRE(fs::exists(shot));
  const std::string png = read_text(shot);
  REQUIRE(png.size() > 24);
  CHECK(png.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);

  // The screenshot is not blank: decoded in a canvas, many pixels differ from the first one.
  const fs::path shot_check = dir / "shot_check.html";
  write_text(shot_check, kShotCheckHead + base64_encode(png) + kShotCheckTail);
  const fs::path shot_dom = dir / "shot_dom.html";
  REQUIRE(
      chromium(
          dir,
          "--virtual-time-budget=10000 --dump-dom",
          "file://" + shot_check.string(),
          shot_dom,
          dir / "shot_check.log") == 0);
  const std::string shot_result = between(read_text(shot_dom), "data-check=\"", "\"");
  INFO("screenshot: " << shot_result);
  CHECK(check_value(shot_result, "width") == 1200);
  CHECK(check_value(shot_result, "height") == 3000);
  CHECK(check_value(shot_result, "differ") > 1200 * 3000 / 50);
  CHECK(check_value(shot_result, "colours") >= 16);

  // Every picture loaded: a copy of the page, allowed one inline script that looks.
  std::string copy = html;
  const std::string csp = "default-src 'none';";
  REQUIRE(copy.find(csp) != std::string::npos);
  copy.replace(copy.find(csp), csp.size(), csp + " script-src 'unsafe-inline';");
  copy.insert(copy.rfind("</body>"), kPageCheck);
  const fs::path check_page = dir / "report_check.html";
  write_text(check_page, copy);
  const fs::path dom = dir / "dom.html";
  const fs::path check_log = dir / "check.log";
  REQUIRE(
      chromium(
          dir,
          "--virtual-time-budget=10000 --enable-logging=stderr --v=0 --dump-dom",
          "file://" + check_page.string(),
          dom,
          check_log) == 0);
  const std::string dumped = read_text(dom);
  const std::string result = between(dumped, "data-check=\"", "\"");
  INFO("page: " << result << "\ncheck log:\n" << read_text(check_log));
  REQUIRE_FALSE(result.empty());
  CHECK(check_value(result, "images") == static_cast<long>(drawn));
  CHECK(check_value(result, "broken") == 0);
  CHECK(check_value(result, "scripts") == 1);   // the check's own
  CHECK(check_value(result, "resources") == 0); // nothing fetched: everything is in the page
  CHECK(check_value(result, "height") > 1000);
  CHECK(console_lines(read_text(check_log)).empty());
  return dumped;
}

TEST_CASE(
    "HTML report: a real report's page renders in headless Chromium",
    "[report][html][chromium]") {
  if (!have_program("chromium")) {
    MEDCL_SKIP("chromium is not installed (Debian's chromium package): report.html not rendered");
  }
  const bool gnuplot = have_program("gnuplot");
  if (!gnuplot) {
    WARN("gnuplot is not installed: the page is checked without figures");
  }
  for (const char* terminal : {"pngcairo", "svg"}) {
    INFO("terminal " << terminal);
    TempDir dir;
    const auto files = write_report(dir.path, terminal, gnuplot);
    const std::string markdown = read_text(files.markdown_path);
    const std::string html = markdown_to_html(markdown, dir.path, "medcl evaluation report");
    const fs::path page_path = dir.path / "report.html";
    write_text(page_path, html);
    size_t drawn = 0;
    for (const auto& f : files.figures) {
      drawn += f.drawn ? 1 : 0;
    }
    CHECK(count(html, "<img ") == drawn);
    CHECK(count(html, "class=\"missing-figure\"") == 0);
    CHECK_THAT(html, Contains("&lt;script&gt;alert(1)&lt;/script&gt; | SimCLR"));
    if (gnuplot) {
      CHECK(drawn == files.figures.size());
      CHECK(drawn >= 3);
    }

    const std::string dumped = check_in_chromium(dir.path, page_path, html, drawn);
    // The name with a script in it is text in the rendered document.
    CHECK_THAT(dumped, Contains("&lt;script&gt;alert(1)&lt;/script&gt; | SimCLR"));
    CHECK_THAT(dumped, Contains("synthetic ECG — ± · ≥"));
  }
}

TEST_CASE(
    "HTML report: every example's page renders in headless Chromium",
    "[.][report][html][chromium][examples]") {
  // Hidden: the ctest entry example.reports_html runs it after the examples' smoke runs, with
  // MEDCL_EXAMPLE_REPORTS naming where they wrote their reports.
  const char* root = std::getenv("MEDCL_EXAMPLE_REPORTS");
  if (root == nullptr || !fs::is_directory(root)) {
    MEDCL_SKIP("MEDCL_EXAMPLE_REPORTS names no folder: the examples' reports are not checked here");
  }
  if (!have_program("chromium")) {
    MEDCL_SKIP("chromium is not installed (Debian's chromium package): report.html not rendered");
  }
  std::vector<std::string> pages;
  for (const auto& entry : medcl::list_tree(root)) {
    if (fs::path(entry).filename() == "report.html") {
      pages.push_back(entry);
    }
  }
  if (pages.empty()) {
    MEDCL_SKIP("no report.html under " << root << " (the examples did not run: no data?)");
  }
  for (const auto& page : pages) {
    INFO(page);
    const fs::path report_dir = fs::path(page).parent_path();
    const medcl::Json doc = medcl::Json::parse(read_text(report_dir / "report.json"));
    CHECK(medcl::eval::validate_report(doc).empty());
    size_t drawn = 0;
    for (const char* section : {"pretraining", "evaluation"}) {
      if (doc.at(section).contains("figures")) {
        for (const auto& f : doc.at(section).at("figures").elements()) {
          drawn += f.at("drawn").as_bool() ? 1 : 0;
        }
      }
    }
    const std::string html = read_text(page);
    CHECK(count(html, "<img ") == drawn);
    CHECK(count(html, "class=\"missing-figure\"") == 0);
    TempDir work;
    const fs::path copy = work.path / "report.html"; // Chromium writes beside the page it reads
    write_text(copy, html);
    const std::string dumped = check_in_chromium(work.path, copy, html, drawn);
    CHECK_THAT(dumped, Contains("Reporting checklist"));
  }
}
