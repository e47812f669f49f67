// Figure data files, gnuplot scripts and running gnuplot.
#include <medcl/eval/report.h>

#include "internal.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <locale>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <io.h>
#define MEDCL_POPEN _popen
#define MEDCL_PCLOSE _pclose
#else
#include <sys/wait.h>
#define MEDCL_POPEN popen
#define MEDCL_PCLOSE pclose
#endif

namespace medcl {
namespace eval {

namespace fs = std::filesystem;

namespace report_detail {

std::string data_number(double v) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os.precision(17);
  os << v;
  return os.str();
}

std::string one_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  return out;
}

/// A double-quoted gnuplot string on one line. Not single-quoted: gnuplot 5.4 misreads a doubled
/// quote next to another ('it''''s' is a syntax error), so a name with quotes could not be written
/// there. In double quotes backslash and '"' are escaped, and the backquote, which would run a
/// shell command there, is written as its octal escape \140; '@' (macros) stays literal.
std::string gp_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : one_line(s)) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '`') {
      out += "\\140";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

/// The gnuplot program as a path, or "" when it cannot be found or run.
std::string find_program(const std::string& name) {
#if defined(_WIN32)
  return name;
#else
  if (name.empty()) {
    return "";
  }
  if (name.find('/') != std::string::npos) {
    return ::access(name.c_str(), X_OK) == 0 ? name : "";
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string d;
  while (std::getline(dirs, d, ':')) {
    const std::string candidate = (d.empty() ? std::string(".") : d) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
#endif
}

std::string image_extension(const std::string& terminal) {
  return terminal == "svg" ? ".svg" : ".png";
}

std::string data_file(const Report::Figure& f) {
  // Names and titles are free text: in a comment they must stay on its line (a line break would
  // start a line of "data" that gnuplot refuses).
  std::string out = "# " + one_line(f.title) + " (medcl report figure '" + f.name + "')\n";
  for (size_t c = 0; c < f.categories.size(); ++c) {
    out += "# x = " + std::to_string(c + 1) + ": " + one_line(f.categories[c]) + "\n";
  }
  for (size_t s = 0; s < f.series.size(); ++s) {
    const auto& series = f.series[s];
    if (s > 0) {
      out += "\n\n"; // gnuplot's index separator
    }
    out += "# series " + std::to_string(s) + ": " + one_line(series.name) + "\n";
    const bool bars = !series.lower.empty();
    out += bars ? "# x y lower upper\n" : "# x y\n";
    for (size_t i = 0; i < series.x.size(); ++i) {
      out += data_number(series.x[i]) + " " + data_number(series.y[i]);
      if (bars) {
        out += " " + data_number(series.lower[i]) + " " + data_number(series.upper[i]);
      }
      out += "\n";
    }
  }
  return out;
}

std::string gnuplot_script(const Report::Figure& f, const ReportOptions& o) {
  const std::string image = f.name + image_extension(o.terminal());
  std::ostringstream gp;
  gp.imbue(std::locale::classic());
  gp << "# " << one_line(f.title) << ": drawn by medcl's report with gnuplot; data in " << f.name
     << ".dat\n";
  gp << "set terminal " << o.terminal() << " size " << o.width() << "," << o.height()
     << " noenhanced\n";
  gp << "set output " << gp_quote(image) << "\n";
  gp << "set title " << gp_quote(f.title) << "\n";
  gp << "set xlabel " << gp_quote(f.xlabel) << "\n";
  gp << "set ylabel " << gp_quote(f.ylabel) << "\n";
  gp << "set grid lc rgb '#d9d9d9'\n";
  // Okabe and Ito's colour-blind-safe palette (yellow left out: too faint on white), each colour
  // with its own point shape so that series stay apart in grey print; black and grey after.
  static const char* const kPalette[] = {
      "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#7F7F7F"};
  static const int kPoints[] = {7, 5, 9, 11, 13, 15, 7, 5};
  for (int k = 0; k < 8; ++k) {
    gp << "set linetype " << k + 1 << " lc rgb '" << kPalette[k] << "' pt " << kPoints[k] << "\n";
  }
  gp << "set linetype cycle 8\n";
  std::string lead;
  std::string style = "with lines lw 2";
  if (f.kind == "roc" || f.kind == "reliability") {
    // ROC curves leave the lower right empty; calibration curves may reach any corner, so
    // their legend goes below the plot.
    gp << "set xrange [0:1]\nset yrange [0:1]\nset size ratio -1\n"
       << (f.kind == "roc" ? "set key bottom right\n" : "set key below\n");
    lead = std::string("x with lines dt 2 lc rgb 'gray' title ") +
        gp_quote(f.kind == "roc" ? "chance" : "perfect calibration") + ", ";
    style = f.kind == "roc" ? "with lines lw 2" : "with linespoints lw 2 pt 7";
  } else if (f.kind == "label_efficiency") {
    bool positive = true;
    for (const auto& s : f.series) {
      for (double x : s.x) {
        positive = positive && x > 0;
      }
    }
    if (positive) {
      gp << "set logscale x 10\n";
    }
    // Room on both sides: fractions 0.01 and 1 would otherwise sit on the frame.
    gp << "set offsets graph 0.05, graph 0.05, 0, 0\nset key bottom right\n";
    style = "using 1:2:3:4 with yerrorlines lw 2 pt 7";
  } else if (f.kind == "decision_curve") {
    // Treat-all falls steeply at high thresholds; net benefit far below treat-none (0) says
    // nothing more, so the y axis runs from a little below 0 to a little above the best.
    double top = 0;
    for (const auto& s : f.series) {
      for (double y : s.y) {
        top = std::max(top, y);
      }
    }
    const double pad = 0.1 * top + 0.01;
    gp << "set xrange [0:1]\nset yrange [" << -2 * pad << ":" << top + pad
       << "]\nset key below\n"; // the curves fill the upper part: the legend goes under
    style = "with lines lw 2";
  } else if (f.kind == "fairness") {
    // Groups on the x axis by name; models side by side at each group.
    gp << "set xrange [0.5:" << static_cast<double>(f.categories.size()) + 0.5 << "]\n";
    gp << "set xtics (";
    for (size_t c = 0; c < f.categories.size(); ++c) {
      gp << (c > 0 ? ", " : "") << gp_quote(f.categories[c]) << " " << c + 1;
    }
    gp << ")\nset yrange [0:1]\nset key bottom right\n";
    lead = "0.5 with lines dt 2 lc rgb 'gray' title 'chance', ";
    style = "using 1:2:3:4 with yerrorbars lw 2 pt 7";
  } else if (f.kind == "scatter") {
    // The legend under the plot, in rows: beside it, it took a third of the width.
    gp << "set key below horizontal\n";
    style = "with points pt 7 ps 0.6";
  } else {
    gp << "set key top right\n";
  }
  gp << "plot " << lead;
  for (size_t s = 0; s < f.series.size(); ++s) {
    if (s > 0) {
      gp << ", \\\n     ";
    }
    std::string series_style = style;
    if (f.kind == "decision_curve" &&
        (f.series[s].name == "treat all" || f.series[s].name == "treat none")) {
      // The references are neutral: grey, dashed (treat all) and dotted (treat none).
      series_style = f.series[s].name == "treat all" ? "with lines lw 1.5 dt 2 lc rgb '#555555'"
                                                     : "with lines lw 1.5 dt 3 lc rgb '#999999'";
    }
    gp << gp_quote(f.name + ".dat") << " index " << s << " " << series_style << " title "
       << gp_quote(f.series[s].name);
  }
  gp << "\n";
  return gp.str();
}

/// Runs gnuplot on `script` inside `dir`; returns "" when the picture was drawn, else why not.
std::string run_gnuplot(
    const std::string& program,
    const fs::path& dir,
    const std::string& script,
    const std::string& image) {
  const std::string command = "cd " + sh_quote(dir.string()) + " && " + sh_quote(program) + " " +
      sh_quote(script) + " </dev/null 2>&1";
  FILE* pipe = MEDCL_POPEN(command.c_str(), "r");
  if (pipe == nullptr) {
    return "could not start gnuplot (popen failed)";
  }
  std::string output;
  char buf[512];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) {
    output.append(buf, n);
  }
  const int status = MEDCL_PCLOSE(pipe);
#if defined(_WIN32)
  const int code = status;
#else
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
#endif
  if (output.size() > 2000) {
    output = output.substr(0, 2000) + "...";
  }
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) {
    output.pop_back();
  }
  if (code != 0) {
    return "gnuplot exited with status " + std::to_string(code) +
        (output.empty() ? std::string() : ": " + output);
  }
  std::error_code ec;
  const auto size = fs::file_size(dir / image, ec);
  if (ec || size == 0) {
    return "gnuplot produced no picture" + (output.empty() ? std::string() : ": " + output);
  }
  return "";
}

} // namespace report_detail

using namespace report_detail;

} // namespace eval
} // namespace medcl
