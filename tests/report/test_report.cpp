#include <medcl/core/files.h>
#include <medcl/core/json.h>
#include <medcl/core/runtime.h>
#include <medcl/eval/report.h>
#include <medcl/version.h>

#include "../src/report/internal.h" // base64_encode: report.html embeds the figures

#include <c10/util/Exception.h>
#include "catch.h"
#include "support.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

using medcl::Json;
using medcl::Report;
using medcl::ReportOptions;
using medcl_test::Contains;
using medcl_test::TempDir;
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool gnuplot_available() {
  return std::system("gnuplot --version >/dev/null 2>&1") == 0;
}

/// Files whose name starts with `prefix` anywhere under `dir`.
int count_with_prefix(const fs::path& dir, const std::string& prefix) {
  int n = 0;
  for (const auto& e : medcl::list_tree(dir.string())) {
    n += fs::path(e).filename().string().rfind(prefix, 0) == 0 ? 1 : 0;
  }
  return n;
}

/// A report with every section filled in.
Report full_report(ReportOptions options = ReportOptions()) {
  Report r(std::move(options));
  const char* argv[] = {"train_ecg", "--epochs", "10", "--name=it's"};
  r.set_command_line(4, argv);
  r.set_device("cuda:0 (test)");
  Json corpus;
  corpus["name"] = "PTB-XL";
  corpus["records"] = 21799;
  r.set_corpus(corpus);
  r.set_split_rule("by patient id, 70/15/15");
  r.add_split("train", 1000, 15000);
  r.add_split("test", 200, 3000);
  r.set_leakage_check(true, "no patient in two splits");
  r.begin_pretraining("SimCLR (PCLR)"); // the model of the results below
  r.set_method("SimCLR");
  Json loss_options;
  loss_options["temperature"] = 0.1;
  r.set_loss("NTXentLoss", loss_options);
  r.set_pairing_rule("two views of one record; same patient excluded from negatives");
  Json policy;
  policy["transforms"] = Json::array({"gaussian_noise(0.05)", "time_shift(0.1)"});
  r.set_augmentation(policy);
  r.set("pretraining", "encoder", "resnet1d-18");
  r.set("pretraining", "optimizer", "LARS lr=0.3 wd=1e-6");
  r.set_hyperparameter("batch_size", 256);
  r.set_hyperparameter("temperature", 0.1);
  r.set_seed("data", 7);
  r.set_training_result(1000, 3.25);
  r.add_loss_curve({0, 1, 2, 3}, {5.0, 4.5, 4.1, 3.25});
  r.add_metric("af", "auroc", 0.912, 0.887, 0.937, "DeLong");
  r.add_metric("af", "brier", 0.071);
  medcl::eval::Interval iv;
  iv.estimate = 0.8;
  iv.lower = 0.7;
  iv.upper = 0.85;
  iv.method = "bootstrap";
  r.add_metric("mi", "auprc", iv);
  r.add_result(
      medcl::eval::Result(
          "af", "SimCLR (PCLR)", "AUROC difference", medcl::Estimate(0.04, 0.01, 0.07, "DeLong"))
          .reference_model("SimCLR instance")
          .n(1200)
          .patients(310)
          .fraction(0.1)
          .seed(3)
          .detail("paired DeLong"));
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
  r.add_label_fraction("af", "SimCLR", "auroc", 0.01, {0.70, 0.74, 0.72});
  r.add_label_fraction("af", "SimCLR", "auroc", 1.0, {0.91});
  r.add_label_fraction("af", "supervised", "auroc", 0.01, {0.60, 0.64});
  r.add_subgroup("af", "sex", "female", "auroc", 480, medcl::Estimate(0.90, 0.86, 0.94, "DeLong"));
  r.add_external_validation("af", "Chapman", "auroc", 10000, medcl::Estimate(0.88, 0.87, 0.89));
  Json site;
  site["site_probe_accuracy"] = 0.41;
  site["chance"] = 0.25;
  r.add_audit("site_audit", site);
  Json example;
  example["query"] = "record 17";
  example["neighbours"] = Json::array({"record 3", "record 99"});
  r.add_retrieval_example(example);
  r.add_embedding_map(
      "umap", {0, 1, 2, 3}, {1, 0, 1, 0}, {"AF", "normal", "AF", "normal"}, {"a", "a", "b", "b"});
  return r;
}

} // namespace

TEST_CASE("Report: report.json holds every section and field, in order", "[report]") {
  TempDir tmp;
  const Report r = full_report(ReportOptions().draw_figures(false));
  const auto files = r.write((tmp.path / "run").string());
  const Json doc = Json::parse(read_text(files.json_path));
  // The written document has drawn statuses; json() (before any write) has none.
  CHECK(doc.at("evaluation").at("figures")[0].contains("drawn"));
  CHECK_FALSE(r.json().at("evaluation").at("figures")[0].contains("drawn"));
  REQUIRE(doc.items().size() == 6);
  CHECK(doc.items()[0].first == "schema");
  CHECK(doc.items()[1].first == "medcl");
  CHECK(doc.items()[2].first == "data");
  CHECK(doc.items()[3].first == "pretraining");
  CHECK(doc.items()[4].first == "evaluation");
  CHECK(doc.items()[5].first == "checklist");
  CHECK(doc.at("schema").at("name").as_string() == "medcl-report");
  CHECK(doc.at("schema").at("version").as_int64() == medcl::eval::kReportSchemaVersion);
  CHECK(medcl::eval::validate_report(doc).empty());

  const Json& m = doc.at("medcl");
  CHECK(m.at("version").as_string() == medcl::version());
  CHECK(m.at("libtorch").as_string().find('.') != std::string::npos);
  const auto info = medcl::runtime_info();
  CHECK(m.at("libtorch").as_string() == info.torch_version);
  CHECK(m.at("libtorch_nccl").as_bool() == info.nccl_built);
  if (info.cuda_built) {
    CHECK(m.at("libtorch_cuda").as_string() == info.cuda_runtime);
  } else {
    CHECK(m.at("libtorch_cuda").is_null());
  }
  CHECK(m.at("compiler").as_string() == info.compiler);
  CHECK(m.at("device").as_string() == "cuda:0 (test)");
  CHECK(m.at("date_utc").as_string().size() == 20);
  CHECK(m.at("command_line")[3].as_string() == "--name=it's");

  const Json& d = doc.at("data");
  CHECK(d.at("corpus").at("records").as_int64() == 21799);
  CHECK(d.at("split_rule").as_string() == "by patient id, 70/15/15");
  CHECK(d.at("splits").at("test").at("patients").as_int64() == 200);
  CHECK(d.at("splits").at("train").at("samples").as_int64() == 15000);
  CHECK(d.at("leakage_check").at("passed").as_bool());

  REQUIRE(doc.at("pretraining").at("runs").size() == 1);
  const Json& p = doc.at("pretraining").at("runs").at("SimCLR (PCLR)");
  CHECK(p.at("method").as_string() == "SimCLR");
  CHECK(p.at("loss").at("name").as_string() == "NTXentLoss");
  CHECK(p.at("loss").at("options").at("temperature").as_double() == 0.1);
  CHECK(p.at("pairing").as_string().find("same patient") != std::string::npos);
  CHECK(p.at("augmentation").at("transforms").size() == 2);
  CHECK(p.at("encoder").as_string() == "resnet1d-18");
  CHECK(p.at("hyperparameters").at("batch_size").as_int64() == 256);
  CHECK(p.at("seeds").at("data").as_int64() == 7);
  CHECK(p.at("steps").as_int64() == 1000);
  CHECK(p.at("final_loss").as_double() == 3.25);
  REQUIRE(doc.at("pretraining").at("figures").size() == 1);
  CHECK(doc.at("pretraining").at("figures")[0].at("kind").as_string() == "loss");
  CHECK(doc.at("pretraining").at("figures")[0].at("series")[0].at("y")[3].as_double() == 3.25);

  const Json& e = doc.at("evaluation");
  // Results are records with typed fields, in the order they were added; evaluation starts
  // with them.
  CHECK(e.items()[0].first == "results");
  const auto& results = e.at("results").elements();
  REQUIRE(results.size() == 6);
  const Json& auroc = results[0];
  CHECK(auroc.at("task").as_string() == "af");
  CHECK(auroc.at("model").is_null());
  CHECK(auroc.at("metric").as_string() == "auroc");
  CHECK(auroc.at("value").as_double() == 0.912);
  CHECK(auroc.at("interval").at("lower").as_double() == 0.887);
  CHECK(auroc.at("interval").at("upper").as_double() == 0.937);
  CHECK(auroc.at("interval").at("method").as_string() == "DeLong");
  CHECK(auroc.at("subgroup").is_null());
  CHECK(auroc.at("cohort").is_null());
  CHECK(results[1].at("metric").as_string() == "brier");
  CHECK(results[1].at("interval").is_null());
  CHECK(results[2].at("interval").at("method").as_string() == "bootstrap");
  const Json& typed = results[3];
  CHECK(typed.at("model").as_string() == "SimCLR (PCLR)");
  CHECK(typed.at("metric").as_string() == "AUROC difference");
  CHECK(typed.at("reference_model").as_string() == "SimCLR instance");
  CHECK(typed.at("n").as_int64() == 1200);
  CHECK(typed.at("patients").as_int64() == 310);
  CHECK(typed.at("fraction").as_double() == 0.1);
  CHECK(typed.at("seed").as_int64() == 3);
  CHECK(typed.at("detail").as_string() == "paired DeLong");
  CHECK(e.at("calibration").at("af").at("SimCLR").at("ece").as_double() == 0.07);
  CHECK(e.at("calibration").at("af").at("SimCLR").at("bins")[1].at("count").as_int64() == 40);
  const Json& le = e.at("label_efficiency").at("af");
  REQUIRE(le.size() == 3);
  CHECK(le[0].at("mean").as_double() == Approx(0.72));
  CHECK(le[0].at("sd").as_double() == Approx(0.02));
  // R: qt(0.975, 2) = 4.302652729749464; half-width t * 0.02 / sqrt(3).
  CHECK(
      le[0].at("interval").at("upper").as_double() ==
      Approx(0.72 + 4.302652729749464 * 0.02 / std::sqrt(3.0)).epsilon(1e-12));
  CHECK(le[1].at("interval").is_null()); // a single repeat has no interval
  CHECK(results[4].at("subgroup").at("attribute").as_string() == "sex");
  CHECK(results[4].at("subgroup").at("group").as_string() == "female");
  CHECK(results[4].at("n").as_int64() == 480);
  CHECK(results[5].at("cohort").as_string() == "Chapman");
  CHECK(results[5].at("subgroup").is_null());
  CHECK(e.at("audits").at("site_audit").at("chance").as_double() == 0.25);
  CHECK(e.at("retrieval_examples")[0].at("query").as_string() == "record 17");
  // Figures: ROC, two maps, reliability and label efficiency; none drawn (drawing disabled).
  std::vector<std::string> names;
  for (const auto& f : e.at("figures").elements()) {
    names.push_back(f.at("name").as_string());
    CHECK_FALSE(f.at("drawn").as_bool());
    CHECK(f.at("reason").as_string().find("drawing disabled") != std::string::npos);
  }
  CHECK(
      names ==
      std::vector<std::string>{
          "roc_af", "umap_by_label", "umap_by_site", "reliability_af", "label_efficiency_af"});
  CHECK(e.at("figures")[0].at("series").size() == 2);
  CHECK(e.at("figures")[2].at("series")[1].at("name").as_string() == "site b");
}

TEST_CASE("Report: the checklist marks what is missing and never invents it", "[report]") {
  Report empty;
  auto items = empty.checklist();
  REQUIRE(items.size() == 8);
  for (const auto& item : items) {
    CHECK_FALSE(item.present);
  }
  CHECK(items[0].id == "patient_level_split");
  CHECK(items[0].location == "data.split_rule");
  const Json doc = empty.json();
  CHECK(doc.at("checklist")[0].at("status").as_string() == "missing");
  CHECK_FALSE(doc.at("data").contains("split_rule"));

  Report partial;
  partial.set_split_rule("by patient");
  partial.set_hyperparameter("temperature", 0.2);
  partial.set_augmentation(Json::object()); // empty: still missing
  partial.add_subgroup("t", "age", ">65", "auroc", 10, 0.8);
  items = partial.checklist();
  std::vector<std::string> present;
  for (const auto& item : items) {
    if (item.present) {
      present.push_back(item.id);
    }
  }
  CHECK(present == std::vector<std::string>{"patient_level_split", "hyperparameters", "subgroups"});
  const std::string md = partial.markdown();
  CHECK_THAT(md, Contains("| Patient-level split rule | present | `data.split_rule` |"));
  CHECK_THAT(
      md,
      Contains(
          "| Augmentation policy | **missing** | `pretraining.runs.<run>.augmentation` | missing "
          "for run \"pretraining\" |"));
  CHECK_THAT(
      md,
      Contains(
          "| External validation | **missing** | `evaluation.results (records with a cohort)` |"));

  const auto full = full_report().checklist();
  for (const auto& item : full) {
    INFO(item.id);
    CHECK(item.present);
  }
}

TEST_CASE("Report: report.md lists metrics with intervals, tables and the checklist", "[report]") {
  TempDir tmp;
  const auto files = full_report(ReportOptions().draw_figures(false)).write(tmp.path.string());
  const std::string md = read_text(files.markdown_path);
  CHECK_THAT(md, Contains("# medcl evaluation report"));
  CHECK_THAT(md, Contains("| af |  | auroc | 0.912 | 0.887 – 0.937 (95%, DeLong) | — |  |"));
  CHECK_THAT(md, Contains("| af |  | brier | 0.071 | — | — |  |"));
  CHECK_THAT(md, Contains("| mi |  | auprc | 0.8 | 0.7 – 0.85 (95%, bootstrap) | — |  |"));
  CHECK_THAT(
      md,
      Contains(
          "| af | SimCLR (PCLR) | AUROC difference | 0.04 | 0.01 – 0.07 (95%, DeLong) | 1200 | "
          "difference to SimCLR instance; label fraction 0.1; 310 patients; seed 3; paired "
          "DeLong |"));
  CHECK_THAT(md, Contains("| train | 1000 | 15000 |"));
  CHECK_THAT(md, Contains("Patient leakage check: **passed**"));
  CHECK_THAT(md, Contains("| af | SimCLR | 0.07 | 2 |"));
  CHECK_THAT(md, Contains("| af | SimCLR | auroc | 0.01 | — | — | 3 | 0.72 |"));
  CHECK_THAT(
      md, Contains("| af |  | sex | female | auroc | 0.9 | 0.86 – 0.94 (95%, DeLong) | 480 |  |"));
  CHECK_THAT(md, Contains("| af |  | Chapman | auroc | 0.88 | 0.87 – 0.89 (95%) | 10000 |  |"));
  CHECK_THAT(md, Contains("#### site_audit"));
  CHECK_THAT(md, Contains("| site_probe_accuracy | 0.41 |"));
  CHECK_THAT(md, Contains("'--name=it'\\''s'"));
  CHECK_THAT(md, Contains("| temperature | 0.1 |"));
  CHECK_THAT(md, Contains("## Reporting checklist"));
  CHECK_THAT(md, Contains("| Calibration | present | `evaluation.calibration` |"));
  CHECK_THAT(md, Contains("not drawn: drawing disabled"));
  CHECK_THAT(md, Contains("[roc_af.dat](roc_af.dat)"));
  CHECK(md.find("![") == std::string::npos); // nothing drawn, nothing embedded
  // Sections appear in order.
  const auto pos = [&](const char* s) { return md.find(s); };
  CHECK(pos("## Data") < pos("## Pretraining"));
  CHECK(pos("## Pretraining") < pos("## Evaluation"));
  CHECK(pos("## Evaluation") < pos("## Reporting checklist"));
}

TEST_CASE("Report: figures are drawn with gnuplot when it exists", "[report]") {
  TempDir tmp;
  const auto files = full_report().write(tmp.path.string());
  REQUIRE(files.figures.size() == 6);
  for (const auto& f : files.figures) {
    INFO(f.name);
    const fs::path dat = tmp.path / (f.name + ".dat");
    REQUIRE(fs::exists(dat));
    CHECK(fs::file_size(dat) > 0);
    CHECK(fs::exists(tmp.path / (f.name + ".gp")));
  }
  // The data file holds one gnuplot index per series.
  const std::string roc = read_text(tmp.path / "roc_af.dat");
  CHECK_THAT(roc, Contains("# series 1: supervised"));
  CHECK_THAT(roc, Contains("0.10000000000000001 0.59999999999999998"));
  CHECK_THAT(read_text(tmp.path / "label_efficiency_af.dat"), Contains("# x y lower upper"));
  CHECK(count_with_prefix(tmp.path, ".medcl-report-tmp") == 0);
  // report.html beside them: the same report on one page, no script.
  REQUIRE(files.html_path == (tmp.path / "report.html").string());
  const std::string html = read_text(files.html_path);
  CHECK_THAT(html, Contains("<!DOCTYPE html>"));
  CHECK(html.find("<script") == std::string::npos);
  CHECK_THAT(html, Contains("Reporting checklist"));
  if (!gnuplot_available()) {
    WARN("gnuplot is not installed: pictures not checked");
    for (const auto& f : files.figures) {
      CHECK_FALSE(f.drawn);
    }
    return;
  }
  for (const auto& f : files.figures) {
    INFO(f.name << ": " << f.reason);
    CHECK(f.drawn);
    CHECK(f.reason.empty());
    CHECK(f.image == f.name + ".png");
    REQUIRE(fs::exists(tmp.path / f.image));
    CHECK(fs::file_size(tmp.path / f.image) > 1000);
  }
  const std::string md = read_text(files.markdown_path);
  CHECK_THAT(md, Contains("![ROC curve: af](roc_af.png)"));
  CHECK_THAT(md, Contains("![Pretraining loss per step](loss.png)"));
  // Every drawn figure is embedded in report.html, byte for byte.
  for (const auto& f : files.figures) {
    INFO(f.name);
    const std::string png = read_text(tmp.path / f.image);
    CHECK_THAT(
        html, Contains("data:image/png;base64," + medcl::eval::report_detail::base64_encode(png)));
  }
  const Json doc = Json::parse(read_text(files.json_path));
  CHECK(doc.at("evaluation").at("figures")[0].at("drawn").as_bool());
  CHECK(doc.at("evaluation").at("figures")[0].at("reason").is_null());

  // SVG as well.
  TempDir svg;
  const auto svg_files = full_report(ReportOptions().terminal("svg")).write(svg.path.string());
  CHECK(svg_files.figures[0].drawn);
  CHECK_THAT(read_text(svg.path / "roc_af.svg"), Contains("<svg"));
}

TEST_CASE(
    "Report: without gnuplot the report is still written, figures marked not drawn",
    "[report]") {
  TempDir tmp;
  Report r(ReportOptions().gnuplot("/nonexistent/gnuplot"));
  r.add_metric("t", "auroc", 0.7);
  r.add_loss_curve({1, 2}, {1.0, 0.5});
  medcl::ReportFiles files;
  REQUIRE_NOTHROW(files = r.write(tmp.path.string()));
  REQUIRE(files.figures.size() == 1);
  CHECK_FALSE(files.figures[0].drawn);
  CHECK_THAT(files.figures[0].reason, Contains("gnuplot not found (\"/nonexistent/gnuplot\")"));
  CHECK(fs::exists(tmp.path / "loss.dat"));
  CHECK(fs::exists(tmp.path / "loss.gp"));
  CHECK_FALSE(fs::exists(tmp.path / "loss.png"));
  const Json doc = Json::parse(read_text(files.json_path));
  const Json& fig = doc.at("pretraining").at("figures")[0];
  CHECK_FALSE(fig.at("drawn").as_bool());
  CHECK_THAT(fig.at("reason").as_string(), Contains("gnuplot not found"));
  CHECK_THAT(read_text(files.markdown_path), Contains("not drawn: gnuplot not found"));

  // A gnuplot that fails: its exit status and messages are kept.
  if (gnuplot_available()) {
    TempDir tmp2;
    Report bad(ReportOptions().gnuplot("false"));
    bad.add_loss_curve({1, 2}, {1.0, 0.5});
    const auto f2 = bad.write(tmp2.path.string());
    CHECK_FALSE(f2.figures[0].drawn);
    CHECK_THAT(f2.figures[0].reason, Contains("gnuplot exited with status 1"));
    CHECK(fs::exists(tmp2.path / "report.json"));
  }
}

TEST_CASE("Report: a write that fails leaves no partial report", "[report]") {
  TempDir tmp;
  const Report r = full_report(ReportOptions().draw_figures(false));
  // A directory below a regular file cannot be created (root included).
  const fs::path file = tmp.path / "plain_file";
  std::ofstream(file) << "x";
  REQUIRE_THROWS_WITH(
      r.write((file / "run").string()), Contains("Report::write: cannot create the directory"));
  REQUIRE_THROWS_WITH(r.write(file.string()), Contains((file).string()));
  CHECK(read_text(file) == "x");

  // report.json cannot be replaced (a non-empty directory of that name): nothing new is left.
  const fs::path run = tmp.path / "run";
  fs::create_directories(run / "report.json" / "inside");
  REQUIRE_THROWS_WITH(
      r.write(run.string()), Contains("cannot replace " + (run / "report.json").string()));
  CHECK_FALSE(fs::exists(run / "report.md"));
  CHECK(fs::is_directory(run / "report.json"));
  CHECK(count_with_prefix(run, ".medcl-report-tmp") == 0);
  CHECK(count_with_prefix(run, "roc_af") == 0);

  // Non-root users: a read-only directory.
  if (::geteuid() != 0) {
    const fs::path ro = tmp.path / "read_only";
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    CHECK_THROWS_WITH(r.write(ro.string()), Contains(ro.string()));
    fs::permissions(ro, fs::perms::owner_all);
    CHECK_FALSE(fs::exists(ro / "report.json"));
    CHECK_FALSE(fs::exists(ro / "report.md"));
  }

  // Writing again into a good directory replaces an older report whole.
  const fs::path good = tmp.path / "good";
  Report first(ReportOptions().draw_figures(false));
  first.set_method("first");
  first.write(good.string());
  Report second(ReportOptions().draw_figures(false));
  second.set_method("second");
  second.write(good.string());
  CHECK(
      Json::parse(read_text(good / "report.json"))
          .at("pretraining")
          .at("runs")
          .at("pretraining")
          .at("method")
          .as_string() == "second");
  CHECK_THAT(read_text(good / "report.md"), Contains("| method | second |"));
}

TEST_CASE("Report: bad inputs are errors naming the metric or figure", "[report]") {
  Report r;
  REQUIRE_THROWS_WITH(
      r.add_metric("af", "auroc", std::nan("")), Contains("metric af/auroc value must be finite"));
  REQUIRE_THROWS_WITH(
      r.add_metric("af", "auroc", 0.9, 0.95, 0.97, "DeLong"),
      Contains("af/auroc: expected lower <= value <= upper"));
  REQUIRE_THROWS_WITH(
      r.add_metric("af", "auroc", 0.9, 0.8, INFINITY, "DeLong"),
      Contains("metric af/auroc upper bound must be finite"));
  REQUIRE_THROWS_WITH(
      r.add_metric("af", "auroc", 0.9, 0.8, 0.95, "DeLong", 95),
      Contains("confidence level in (0, 1)"));
  REQUIRE_THROWS_WITH(
      r.add_roc_curve("af", "m", {0, 1}, {0, 0.5, 1}),
      Contains("ROC curve af/m: expected x and y of the same length, got 2 and 3"));
  REQUIRE_THROWS_WITH(r.add_roc_curve("af", "m", {}, {}), Contains("expected at least one point"));
  REQUIRE_THROWS_WITH(r.add_roc_curve("af", "m", {0, 1.5}, {0, 1}), Contains("rates in [0, 1]"));
  REQUIRE_THROWS_WITH(
      r.add_loss_curve({0, 1}, {1.0, std::nan("")}),
      Contains("loss curve \"train\": point 1 is not finite"));
  REQUIRE_THROWS_WITH(
      r.add_embedding_map("m", {0, 1}, {0, 1}, {"a"}),
      Contains("expected one label per point (2), got 1"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction("af", "m", "auroc", 0, {0.5}),
      Contains("expected a fraction in (0, 1], got 0"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction("af", "m", "auroc", 0.1, {}), Contains("at least one repeat"));
  REQUIRE_THROWS_WITH(
      r.add_subgroup("af", "sex", "f", "auroc", 0, 0.8), Contains("expected n > 0, got 0"));
  REQUIRE_THROWS_WITH(r.set_training_result(10, INFINITY), Contains("final loss must be finite"));
  REQUIRE_THROWS_WITH(r.set("checklist", "x", 1), Contains("the checklist is computed"));
  REQUIRE_THROWS_WITH(r.set("results", "x", 1), Contains("got \"results\""));
  REQUIRE_THROWS_WITH(r.set("evaluation", "figures", 1), Contains("kept by the figure adders"));
  REQUIRE_THROWS_WITH(r.get("data", "corpus"), Contains("no key \"corpus\""));
  REQUIRE_THROWS_WITH(Report(ReportOptions().terminal("x11")), Contains("got \"x11\""));
  medcl::eval::Calibration c;
  c.mean_probability = {0.5};
  REQUIRE_THROWS_WITH(r.add_calibration("af", "m", c), Contains("of one length"));
  // Nothing invalid was stored.
  CHECK(r.json().at("evaluation").at("results").size() == 0);
  CHECK(r.results().empty());
  CHECK(r.figures().empty());
}

TEST_CASE("Report: add_result refuses malformed records by name", "[report]") {
  using medcl::eval::Result;
  Report r;
  REQUIRE_THROWS_WITH(
      r.add_result(Result("", "m", "AUROC", 0.8)), Contains("expected a task and a metric name"));
  REQUIRE_THROWS_WITH(
      r.add_result(Result("af", "m", "AUROC", 0.8).subgroup_attribute("sex")),
      Contains("metric af/m/AUROC (sex=): expected both a subgroup attribute and a group"));
  REQUIRE_THROWS_WITH(
      r.add_result(Result("af", "m", "AUROC", 0.8).n(0)), Contains("expected n > 0, got 0"));
  REQUIRE_THROWS_WITH(
      r.add_result(Result("af", "m", "AUROC", 0.8).patients(-2)),
      Contains("expected patients > 0, got -2"));
  REQUIRE_THROWS_WITH(
      r.add_result(Result("af", "m", "AUROC", 0.8).fraction(1.5)),
      Contains("expected a label fraction in (0, 1], got 1.5"));
  REQUIRE_THROWS_WITH(
      r.add_result(Result("af", "m", "AUROC", std::nan("")).cohort("B")),
      Contains("metric af/m/AUROC (cohort B) value must be finite"));
  REQUIRE_THROWS_WITH(
      r.add_external_validation("af", "", "AUROC", 10, 0.8),
      Contains("expected the name of the external cohort"));
  REQUIRE_THROWS_WITH(
      r.set("evaluation", "results", Json::array()), Contains("kept by add_result"));
  CHECK(r.results().empty());
}

TEST_CASE("Report: validate_report finds every planted schema violation", "[report]") {
  using medcl::eval::validate_report;
  const Json good = full_report(ReportOptions().draw_figures(false)).json();
  REQUIRE(validate_report(good).empty());
  auto one = [&](const std::function<void(Json&)>& plant, const std::string& expected) {
    Json doc = good;
    plant(doc);
    const auto problems = validate_report(doc);
    INFO(expected);
    REQUIRE(problems.size() >= 1);
    bool found = false;
    for (const auto& p : problems) {
      found = found || p.find(expected) != std::string::npos;
    }
    if (!found) {
      for (const auto& p : problems) {
        UNSCOPED_INFO(p);
      }
    }
    CHECK(found);
  };
  one([](Json& d) { d["schema"]["version"] = 1; }, "schema.version: expected 3, got 1");
  one([](Json& d) { d["schema"]["name"] = "other"; }, "schema.name: expected \"medcl-report\"");
  one(
      [](Json& d) {
        Json copy = Json::object();
        for (const auto& kv : d.items()) {
          if (kv.first != "data") {
            copy[kv.first] = kv.second;
          }
        }
        d = copy;
      },
      "expected the sections schema, medcl, data, pretraining, evaluation, checklist");
  auto result = [](Json& d) -> Json& { return d["evaluation"]["results"][0]; };
  one([&](Json& d) { result(d)["value"] = "0.9"; }, "results[0].value: expected a finite number");
  one([&](Json& d) { result(d)["task"] = ""; }, "results[0].task: expected a non-empty string");
  one([&](Json& d) { result(d)["interval"]["lower"] = 0.95; },
      "results[0].interval: expected lower <= value <= upper");
  one([&](Json& d) { result(d)["interval"]["level"] = 95; },
      "results[0].interval.level: expected a level in (0, 1)");
  one([&](Json& d) { result(d)["n"] = 0; }, "results[0].n: expected a positive integer or null");
  one([&](Json& d) { result(d)["fraction"] = 2.0; },
      "results[0].fraction: expected a number in (0, 1] or null");
  one([&](Json& d) { result(d)["subgroup"] = "sex=female"; },
      "results[0].subgroup: expected null or {\"attribute\"");
  one([](Json& d) { d["evaluation"]["results"][3]["extra"] = 1; },
      "results[3]: expected the fields task, model, metric");
  one([](Json& d) { d["checklist"][0]["status"] = "maybe"; },
      "checklist[0].status: expected \"present\" or \"missing\", got \"maybe\"");
  CHECK_FALSE(validate_report(Json(3)).empty());
}

namespace {

/// A label-efficiency study of 24 training patients (61 records) where 1 % and 10 % both draw one
/// patient per class, and 100 % draws every patient whatever the seed.
Report collapsed_fractions_report(bool uncounted_row = true) {
  using medcl::eval::LabelFractionResult;
  Report r(ReportOptions().draw_figures(false));
  r.add_label_fraction(LabelFractionResult("af", "SimCLR", "AUROC", 0.01, {0.70, 0.74, 0.72})
                           .seeds({0, 1, 2})
                           .patients({2, 2, 2})
                           .records({5, 6, 4})
                           .available_patients(24)
                           .available_records(61)
                           .same_patients_as({0.1}));
  r.add_label_fraction(LabelFractionResult("af", "SimCLR", "AUROC", 0.1, {0.70, 0.74, 0.72})
                           .seeds({0, 1, 2})
                           .patients({2, 2, 2})
                           .records({5, 6, 4})
                           .available_patients(24)
                           .available_records(61)
                           .same_patients_as({0.01}));
  r.add_label_fraction(LabelFractionResult("af", "SimCLR", "AUROC", 1.0, {0.91, 0.91, 0.91})
                           .seeds({0, 1, 2})
                           .patients({24, 24, 24})
                           .records({61, 61, 61})
                           .available_patients(24)
                           .available_records(61)
                           .fixed_subset(true));
  if (uncounted_row) {
    // Without counts: equal repeats still get no zero-width interval.
    r.add_label_fraction("af", "supervised", "AUROC", 0.5, {0.8, 0.8});
  }
  return r;
}

} // namespace

TEST_CASE(
    "Report: label fractions keep the patients and records used and flag collapsed fractions",
    "[report][label_efficiency]") {
  const Report r = collapsed_fractions_report();
  const Json doc = r.json();
  INFO(doc.dump(2));
  CHECK(medcl::eval::validate_report(doc).empty());
  const Json& le = doc.at("evaluation").at("label_efficiency").at("af");
  REQUIRE(le.size() == 4);
  // What each repeat was trained on.
  CHECK(le[0].at("seeds") == Json::array({0, 1, 2}));
  CHECK(le[0].at("patients") == Json::array({2, 2, 2}));
  CHECK(le[0].at("records") == Json::array({5, 6, 4}));
  CHECK(le[0].at("available_patients").as_int64() == 24);
  CHECK(le[0].at("available_records").as_int64() == 61);
  CHECK_FALSE(le[0].at("fixed_subset").as_bool());
  // 1 % and 10 % collapse: flagged both ways, by the caller (same patients) and by the report
  // (same counts, seed for seed).
  CHECK(le[0].at("same_patients_as") == Json::array({0.1}));
  CHECK(le[0].at("same_count_as") == Json::array({0.1}));
  CHECK(le[1].at("same_count_as") == Json::array({0.01}));
  CHECK(le[2].at("same_count_as").size() == 0);
  CHECK_THAT(
      le[0].at("note").as_string(), Contains("same patients as fraction 0.1 in every repeat"));
  CHECK_THAT(le[1].at("note").as_string(), Contains("same patients as fraction 0.01"));
  CHECK_FALSE(le[0].at("interval").is_null()); // the subsets varied with the seed
  // 100 %: every repeat used every patient: no interval, and the note says why.
  CHECK(le[2].at("interval").is_null());
  CHECK(le[2].at("sd").as_double() == 0);
  CHECK(le[2].at("fixed_subset").as_bool());
  CHECK_THAT(
      le[2].at("note").as_string(),
      Contains("no interval: every repeat was trained on all 24 training patients"));
  // Equal repeats without counts: no zero-width interval either.
  CHECK(le[3].at("interval").is_null());
  CHECK(le[3].at("patients").is_null());
  CHECK(le[3].at("same_count_as").size() == 0);
  CHECK_THAT(
      le[3].at("note").as_string(), Contains("no interval: all 2 repeats gave the same value"));

  // report.md shows what was used, the notes and a visible note on the collapse.
  const std::string md = r.markdown();
  CHECK_THAT(
      md,
      Contains("| af | SimCLR | AUROC | 0.01 | 2 of 24 (8.3%) | 4–6 of 61 | 3 | 0.72 | 0.02 |"));
  CHECK_THAT(
      md, Contains("| af | SimCLR | AUROC | 1 | 24 of 24 (100%) | 61 of 61 | 3 | 0.91 | 0 | — |"));
  CHECK_THAT(md, Contains("| af | supervised | AUROC | 0.5 | — | — | 2 | 0.8 | 0 | — |"));
  CHECK_THAT(md, Contains("**Note:** some requested fractions collapse onto the same subset size"));
  CHECK_THAT(md, Contains("their spread says nothing about the choice of labelled patients"));

  // The curve is drawn against the share of patients used when every row has its counts (1 %
  // and 10 % then share one point), else against the fraction requested.
  const auto figs = collapsed_fractions_report(false).figures();
  REQUIRE(figs.size() == 1);
  CHECK(figs[0].xlabel == "share of training patients used (mean over repeats)");
  REQUIRE(figs[0].series.size() == 1);
  CHECK(figs[0].series[0].x == std::vector<double>{2.0 / 24, 2.0 / 24, 1.0});
  CHECK(figs[0].series[0].lower[2] == figs[0].series[0].upper[2]); // no interval: no bar
  const auto mixed = r.figures();
  REQUIRE(mixed.size() == 1);
  CHECK(mixed[0].xlabel == "fraction of labels");
  CHECK(mixed[0].series[0].x == std::vector<double>{0.01, 0.1, 1.0});

  // Replacing the 10 % row with other counts clears the collapse on both rows.
  Report again = collapsed_fractions_report();
  again.add_label_fraction(
      medcl::eval::LabelFractionResult("af", "SimCLR", "AUROC", 0.1, {0.75, 0.78, 0.8})
          .seeds({0, 1, 2})
          .patients({3, 3, 3})
          .records({7, 8, 6})
          .available_patients(24)
          .available_records(61));
  const Json le2 = again.json().at("evaluation").at("label_efficiency").at("af");
  CHECK(le2.size() == 4);
  CHECK(le2[0].at("same_count_as").size() == 0);
  CHECK(le2[1].at("same_count_as").size() == 0);
  CHECK(le2[1].at("note").is_null());
}

TEST_CASE(
    "Report: label fractions with inconsistent counts are errors naming the row",
    "[report]") {
  using medcl::eval::LabelFractionResult;
  Report r;
  auto row = [] { return LabelFractionResult("af", "m", "AUROC", 0.1, {0.7, 0.72, 0.75}); };
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().seeds({0, 1})),
      Contains(
          "label fraction af/m/AUROC at 0.1: expected one seed per repeat (3) or none, got 2"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().seeds({0, 1, 1})), Contains("seed 1 appears twice"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().patients({2, 0, 2})), Contains("expected patients >= 1, got 0"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().patients({2, 30, 2}).available_patients(24)),
      Contains("repeat 1 used 30 patients, more than the 24 available"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().patients({2, 2, 2}).records({2, 1, 2})),
      Contains("repeat 1 used 1 records of 2 patients"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().records({5, 5, 70}).available_records(61)),
      Contains("repeat 2 used 70 records, more than the 61 available"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().available_patients(30).available_records(20)),
      Contains("expected available records >= available patients, got 20 and 30"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(row().same_patients_as({0.1})),
      Contains("expected same_patients_as to list other fractions in (0, 1], got 0.1"));
  REQUIRE_THROWS_WITH(
      r.add_label_fraction(LabelFractionResult("af", "m", "", 0.1, {0.7})),
      Contains("expected a task and a metric name"));
  CHECK_FALSE(r.json().at("evaluation").contains("label_efficiency"));
}

TEST_CASE(
    "Report: validate_report checks the label-efficiency rows",
    "[report][label_efficiency]") {
  using medcl::eval::validate_report;
  const Json good = collapsed_fractions_report().json();
  REQUIRE(validate_report(good).empty());
  auto row = [](Json& d, int i) -> Json& { return d["evaluation"]["label_efficiency"]["af"][i]; };
  auto one = [&](const std::function<void(Json&)>& plant, const std::string& expected) {
    Json doc = good;
    plant(doc);
    std::string all;
    for (const auto& p : validate_report(doc)) {
      all += p + "\n";
    }
    INFO(expected);
    INFO(all);
    CHECK(all.find(expected) != std::string::npos);
  };
  // A zero-width interval on repeats that could not vary.
  one(
      [&](Json& d) {
        Json iv = Json::object();
        iv["lower"] = 0.91;
        iv["upper"] = 0.91;
        iv["level"] = 0.95;
        iv["method"] = "t interval";
        row(d, 2)["interval"] = iv;
      },
      "label_efficiency.af[2].interval: expected null: every repeat used the same patients");
  const auto bad_patients_1 = [&](Json& d) { row(d, 0)["patients"] = Json::array({2, 2}); };
  one(bad_patients_1,
      "label_efficiency.af[0].patients: expected null or positive integers, one per repeat (3)");
  const auto bad_patients_2 = [&](Json& d) { row(d, 0)["patients"] = Json::array({2, 25, 2}); };
  one(bad_patients_2, "label_efficiency.af[0].patients: expected null or positive integers");
  const auto bad_records_3 = [&](Json& d) { row(d, 0)["records"] = Json::array({1, 6, 4}); };
  one(bad_records_3, "label_efficiency.af[0].records: expected at least one record per patient");
  const auto bad_seeds_4 = [&](Json& d) { row(d, 0)["seeds"] = Json::array({0, 0, 2}); };
  one(bad_seeds_4, "label_efficiency.af[0].seeds: expected null or distinct integers");
  one([&](Json& d) { row(d, 0)["mean"] = 0.9; },
      "label_efficiency.af[0].mean: expected the mean of the repeats");
  one([&](Json& d) { row(d, 0)["same_count_as"] = Json::array({0}); },
      "label_efficiency.af[0].same_count_as: expected an array of fractions in (0, 1]");
  one([&](Json& d) { row(d, 0)["fixed_subset"] = "no"; },
      "label_efficiency.af[0].fixed_subset: expected true or false");
  one([&](Json& d) { row(d, 3)["sd"] = Json(); }, "label_efficiency.af[3].sd: expected a finite");
  one([&](Json& d) { row(d, 1)["fraction"] = 0; },
      "label_efficiency.af[1].fraction: expected a number in (0, 1]");
  one([&](Json& d) { d["evaluation"]["label_efficiency"]["af"] = 3; },
      "evaluation.label_efficiency.af: expected an array of rows");
  // A row written before the counts existed (the same schema version) is still valid.
  Json old = good;
  Json& r0 = row(old, 0);
  Json bare = Json::object();
  for (const char* f : {"model", "metric", "fraction", "repeats", "mean", "sd", "interval"}) {
    bare[f] = r0.at(f);
  }
  r0 = bare;
  CHECK(validate_report(old).empty());
}

TEST_CASE(
    "Report: series and figure names with line breaks and quotes give valid gnuplot files",
    "[report][gnuplot]") {
  TempDir tmp;
  Report r;
  const std::string odd = "train\nsecond line 'single' \"double\" `echo hi` @x \\ end\r\t|";
  r.add_loss_curve({0, 1, 2}, {3.0, 2.0, 1.5}, odd);
  r.add_loss_curve({0, 1, 2}, {3.5, 2.5, 2.0}, "validation 'it''s'\n");
  r.add_roc_curve("af\ntask", "model 'a'\r\nb", {0, 0.5, 1}, {0, 0.8, 1});
  const auto files = r.write(tmp.path.string());
  REQUIRE(files.figures.size() == 2);
  // Every line of a data file is a comment, empty (index separators) or numbers.
  for (const char* name : {"loss.dat", "roc_af_task.dat"}) {
    INFO(name);
    std::istringstream in(read_text(tmp.path / name));
    std::string line;
    int numbers = 0;
    while (std::getline(in, line)) {
      INFO(line);
      if (line.empty() || line[0] == '#') {
        continue;
      }
      std::istringstream fields(line);
      double v = 0;
      int count = 0;
      while (fields >> v) {
        ++count;
      }
      CHECK(fields.eof());
      CHECK(count == 2);
      ++numbers;
    }
    CHECK(numbers == (std::string(name) == "loss.dat" ? 6 : 3));
  }
  CHECK_THAT(
      read_text(tmp.path / "loss.dat"),
      Contains("# series 0: train second line 'single' \"double\""));
  // The script: each name one double-quoted gnuplot string on its line, with '"' and '\'
  // escaped and the backquote (a shell command in double quotes) as its octal escape.
  const std::string gp = read_text(tmp.path / "loss.gp");
  CHECK_THAT(
      gp,
      Contains(
          "title \"train second line 'single' \\\"double\\\" \\140echo hi\\140 @x \\\\ end  |\""));
  CHECK_THAT(gp, Contains("title \"validation 'it''s' \""));
  const std::string roc_gp = read_text(tmp.path / "roc_af_task.gp");
  CHECK_THAT(roc_gp, Contains("set title \"ROC curve: af task\""));
  CHECK_THAT(roc_gp, Contains("title \"model 'a'  b\""));
  // report.json keeps the names as given; report.md keeps the figure title on its line.
  const Json doc = Json::parse(read_text(files.json_path));
  CHECK(doc.at("pretraining").at("figures")[0].at("series")[0].at("name").as_string() == odd);
  CHECK(medcl::eval::validate_report(doc).empty());
  const std::string md = read_text(files.markdown_path);
  CHECK(md.find("ROC curve: af\ntask") == std::string::npos);
  CHECK_THAT(md, Contains("ROC curve: af task"));
  if (!gnuplot_available()) {
    WARN("gnuplot is not installed: the scripts were not run");
    return;
  }
  for (const auto& f : files.figures) {
    INFO(f.name << ": " << f.reason);
    CHECK(f.drawn);
    CHECK(f.reason.empty());
    CHECK(fs::exists(tmp.path / f.image));
  }
}

TEST_CASE("Report: decision curves are checked, drawn and tabulated", "[report]") {
  medcl::eval::DecisionCurve d;
  d.thresholds = {0.05, 0.1, 0.2, 0.5};
  d.net_benefit = {0.30, 0.28, 0.2, 0.05};
  d.treat_all = {0.28, 0.24, 0.1, -0.4};
  d.treat_none = {0, 0, 0, 0};
  Report r(ReportOptions().draw_figures(false));
  r.add_decision_curve("death", "SimCLR", d);
  auto bad = d;
  bad.net_benefit.pop_back();
  CHECK_THROWS_WITH(
      r.add_decision_curve("death", "x", bad),
      Contains(
          "decision curve death/x: expected thresholds, net_benefit and treat_all of one length"));
  bad = d;
  bad.thresholds[3] = 1.0;
  CHECK_THROWS_WITH(
      r.add_decision_curve("death", "x", bad),
      Contains("threshold 3 is 1; thresholds are probabilities"));
  bad = d;
  bad.net_benefit[1] = std::nan("");
  CHECK_THROWS_WITH(r.add_decision_curve("death", "x", bad), Contains("net benefit 1"));
  medcl_test::TempDir dir;
  const auto files = r.write(dir.path.string());
  std::ifstream md_in(files.markdown_path);
  const std::string md((std::istreambuf_iterator<char>(md_in)), std::istreambuf_iterator<char>());
  INFO(md);
  CHECK(md.find("| task | model | t = 0.05 | t = 0.1 | t = 0.2 | t = 0.5 |") != std::string::npos);
  CHECK(md.find("| death | SimCLR | 0.3 | 0.28 | 0.2 | 0.05 |") != std::string::npos);
  CHECK(md.find("| death | treat all | 0.28 | 0.24 | 0.1 | -0.4 |") != std::string::npos);
  CHECK(fs::exists(dir.path / "decision_curve_death.dat"));
  std::ifstream gp(dir.path / "decision_curve_death.gp");
  const std::string script((std::istreambuf_iterator<char>(gp)), std::istreambuf_iterator<char>());
  CHECK(script.find("\"treat all\"") != std::string::npos);
  CHECK(script.find("\"treat none\"") != std::string::npos);
  // The references are neutral grey, dashed and dotted; the models take the palette.
  CHECK(script.find("dt 2 lc rgb '#555555' title \"treat all\"") != std::string::npos);
  CHECK(script.find("dt 3 lc rgb '#999999' title \"treat none\"") != std::string::npos);
  CHECK(script.find("set linetype 1 lc rgb '#0072B2'") != std::string::npos);
}

TEST_CASE("Report: calibration with the logistic fit shows slope and intercept", "[report]") {
  std::vector<double> p;
  std::vector<int64_t> y;
  for (int i = 0; i < 40; ++i) {
    p.push_back(0.05 + 0.9 * i / 39.0);
    y.push_back((i * 7) % 10 < 10 * p.back() ? 1 : 0);
  }
  const auto fit = medcl::eval::logistic_calibration(p, y);
  Report r(ReportOptions().draw_figures(false));
  r.add_calibration("death", "SimCLR", medcl::eval::calibration(p, y, 10), fit);
  const auto& entry = r.get("evaluation", "calibration").at("death").at("SimCLR");
  CHECK(entry.at("slope").at("value").as_double() == fit.slope.estimate);
  CHECK(entry.at("intercept").at("lower").as_double() == fit.intercept.lower);
  CHECK(entry.at("in_the_large").at("method").as_string() == "Wald");
  TempDir dir;
  const auto files = r.write(dir.path.string());
  std::ifstream md_in(files.markdown_path);
  const std::string md((std::istreambuf_iterator<char>(md_in)), std::istreambuf_iterator<char>());
  CHECK(
      md.find("| task | model | ECE | bins | slope | intercept | in-the-large |") !=
      std::string::npos);
  std::ifstream dat(dir.path / "reliability_death.dat");
  const std::string data((std::istreambuf_iterator<char>(dat)), std::istreambuf_iterator<char>());
  char label[96];
  std::snprintf(
      label,
      sizeof(label),
      "SimCLR (slope %.2f, intercept %.2f)",
      fit.slope.estimate,
      fit.intercept.estimate);
  INFO(data);
  std::ifstream gp(dir.path / "reliability_death.gp");
  const std::string script((std::istreambuf_iterator<char>(gp)), std::istreambuf_iterator<char>());
  CHECK(script.find(label) != std::string::npos);
}

TEST_CASE("Report: a fairness audit is kept, tabulated and drawn by group", "[report]") {
  namespace E = medcl::eval;
  E::FairnessReport audit;
  audit.threshold = 0.31;
  audit.min_positives = 10;
  audit.min_negatives = 10;
  E::GroupFairness female;
  female.name = "female";
  female.n = 80;
  female.positives = 30;
  female.patients = 70;
  female.estimable = true;
  female.auroc = E::Interval{0.81, 0.72, 0.9, 0.95, "DeLong"};
  female.has_calibration = true;
  female.calibration.slope = E::Interval{0.9, 0.6, 1.2, 0.95, "Wald"};
  female.calibration.intercept = E::Interval{0.1, -0.3, 0.5, 0.95, "Wald"};
  female.calibration.in_the_large = E::Interval{0.05, -0.4, 0.5, 0.95, "Wald"};
  female.operating_point.true_positives = 21;
  female.sensitivity =
      E::Interval{0.7, 0.55, 0.85, 0.95, "patient bootstrap (200 of 200 resamples)"};
  female.specificity =
      E::Interval{0.88, 0.8, 0.95, 0.95, "patient bootstrap (200 of 200 resamples)"};
  E::GroupFairness male = female;
  male.name = "male";
  male.auroc = E::Interval{0.7, 0.6, 0.8, 0.95, "DeLong"};
  male.has_calibration = false;
  male.calibration_note = "logit(p) separates the outcomes";
  E::GroupFairness other;
  other.name = "other";
  other.n = 6;
  other.positives = 2;
  other.estimable = false;
  other.note = "too small to estimate: 2 positive(s) and 4 negative(s); at least 10 and 10 needed";
  audit.groups = {female, male, other};
  E::FairnessGap gap;
  gap.metric = "AUROC";
  gap.defined = true;
  gap.has_interval = true;
  gap.gap = E::Interval{0.11, 0.02, 0.25, 0.95, "patient bootstrap (198 of 200 resamples)"};
  gap.highest = "female";
  gap.lowest = "male";
  gap.replicates = 198;
  E::FairnessGap slope;
  slope.metric = "calibration slope";
  slope.note = "undefined: the metric is estimated in 1 group(s); a gap needs two";
  audit.gaps = {gap, slope};

  Report r(ReportOptions().draw_figures(false));
  r.add_fairness("death", "SimCLR", "sex", audit, "chosen on validation: specificity 0.9");
  r.add_fairness("death", "raw features", "sex", audit);
  const auto& entry = r.get("evaluation", "fairness").at("death").at("SimCLR").at("sex");
  CHECK(entry.at("threshold").as_double() == 0.31);
  CHECK(entry.at("threshold_rule").as_string() == "chosen on validation: specificity 0.9");
  CHECK(entry.at("groups").size() == 3);
  CHECK(entry.at("groups")[0].at("auroc").at("interval").at("lower").as_double() == 0.72);
  CHECK(entry.at("groups")[1].at("calibration_slope").is_null());
  CHECK(entry.at("too_small").size() == 1);
  CHECK(entry.at("too_small")[0].as_string() == "other");
  CHECK(entry.at("gaps")[0].at("gap").at("value").as_double() == 0.11);
  CHECK(entry.at("gaps")[0].at("resamples").as_int64() == 198);
  CHECK(entry.at("gaps")[1].at("gap").is_null());
  CHECK(medcl::eval::validate_report(r.json()).empty());

  bool drawn = false;
  for (const auto& f : r.figures()) {
    if (f.kind == "fairness") {
      drawn = true;
      CHECK(f.name == "fairness_death_sex");
      CHECK(f.categories == std::vector<std::string>({"female", "male", "other (too small)"}));
      REQUIRE(f.series.size() == 2);
      REQUIRE(f.series[0].y.size() == 2); // the too-small group has no point
      CHECK(f.series[0].x[0] < 1);        // two models side by side at each group
      CHECK(f.series[1].x[0] > 1);
      CHECK(f.series[0].lower[1] == 0.6);
    }
  }
  CHECK(drawn);
  TempDir dir;
  const auto files = r.write(dir.path.string());
  const std::string md = read_text(files.markdown_path);
  INFO(md);
  CHECK(md.find("### Subgroup fairness") != std::string::npos);
  CHECK(md.find("#### death · SimCLR · by sex") != std::string::npos);
  CHECK(md.find("Threshold 0.31 (chosen on validation: specificity 0.9)") != std::string::npos);
  CHECK(
      md.find("| female | 80 | 30 | 70 | 0.81 [0.72, 0.9] | 0.9 [0.6, 1.2] |") !=
      std::string::npos);
  CHECK(md.find("| other | 6 | 2 | 0 | — |") != std::string::npos);
  CHECK(md.find("too small to estimate: 2 positive(s)") != std::string::npos);
  CHECK(md.find("| AUROC | 0.11 [0.02, 0.25] | female | male | 198 |") != std::string::npos);
  CHECK(md.find("| calibration slope | — | — | — | — | undefined") != std::string::npos);
  const std::string gp = read_text(dir.path / "fairness_death_sex.gp");
  CHECK(
      gp.find("set xtics (\"female\" 1, \"male\" 2, \"other (too small)\" 3)") !=
      std::string::npos);
  const std::string dat = read_text(dir.path / "fairness_death_sex.dat");
  CHECK(dat.find("# x = 3: other (too small)") != std::string::npos);

  auto bad = audit;
  bad.groups[0].auroc.lower = 0.95; // above the estimate
  CHECK_THROWS_WITH(
      r.add_fairness("death", "x", "sex", bad),
      Contains("fairness death/x/sex group 'female' AUROC"));
  CHECK_THROWS_WITH(r.add_fairness("death", "x", "", audit), Contains("an attribute"));
  bad = audit;
  bad.groups.clear();
  CHECK_THROWS_WITH(r.add_fairness("death", "x", "sex", bad), Contains("at least one group"));
}

TEST_CASE("Report: every compared model points to its own pretraining record", "[report]") {
  Report r(ReportOptions().draw_figures(false));
  Json policy = Json::object();
  policy["modality"] = "tabular";
  Json step = Json::object();
  step["name"] = "feature_mask";
  step["params"] = Json::object();
  step["params"]["p"] = 0.25;
  policy["transform"] = Json::object();
  policy["transform"]["name"] = "sequence";
  policy["transform"]["steps"] = Json::array({step});
  for (const char* run : {"SimCLR instance", "SimCLR patient"}) {
    r.begin_pretraining(run);
    r.set_method("SimCLR");
    r.set_pairing_rule(std::string(run) == "SimCLR instance" ? "two views" : "same patient");
    r.set_augmentation(policy);
    r.set_hyperparameter("batch_size", 256);
    r.set_training_result(100, 2.5);
  }
  CHECK(r.pretraining_runs() == std::vector<std::string>({"SimCLR instance", "SimCLR patient"}));
  CHECK(r.get("pretraining", "pairing").as_string() == "same patient"); // the current run
  r.add_result(medcl::eval::Result("death", "SimCLR instance", "AUROC", 0.8));
  r.add_result(medcl::eval::Result("death", "SimCLR patient", "AUROC", 0.82));
  r.add_result(medcl::eval::Result("death", "raw features", "AUROC", 0.78));
  r.add_result(medcl::eval::Result("death", "SimCLR fine-tuned", "AUROC", 0.85));

  // Two models are not accounted for: raw features (no pretraining: must be said) and the
  // fine-tuned model (its run is not named after it).
  auto item = [&](const std::string& id) {
    for (const auto& i : r.checklist()) {
      if (i.id == id) {
        return i;
      }
    }
    FAIL("no checklist item " << id);
    return medcl::eval::ChecklistItem();
  };
  CHECK_FALSE(item("pairing_heuristic").present);
  CHECK_THAT(
      item("pairing_heuristic").detail,
      Contains("missing for raw features (no pretraining record); SimCLR fine-tuned"));
  r.set_model_pretraining("raw features", "");
  r.set_model_pretraining("SimCLR fine-tuned", "SimCLR patient");
  CHECK(item("pairing_heuristic").present);
  CHECK(item("augmentation_policy").present);
  CHECK(
      item("hyperparameters").detail ==
      "present for all 3 pretrained; 1 model(s) without pretraining");
  // A run without its augmentation makes the item missing, naming the model and the run.
  r.begin_pretraining("SimCLR temporal");
  r.set_method("SimCLR");
  r.add_result(medcl::eval::Result("death", "SimCLR temporal", "AUROC", 0.81));
  CHECK_FALSE(item("augmentation_policy").present);
  CHECK_THAT(
      item("augmentation_policy").detail,
      Contains("SimCLR temporal (run \"SimCLR temporal\" has no augmentation)"));

  CHECK_THROWS_WITH(
      r.set_model_pretraining("x", "SimCLR nothing"),
      Contains("model \"x\": no pretraining run \"SimCLR nothing\""));
  CHECK_THROWS_WITH(r.begin_pretraining(""), Contains("expected a run name"));
  CHECK_THROWS_WITH(r.set("evaluation", "models", Json()), Contains("set_model_pretraining"));
  r.describe_model("raw features", "evaluation", Json::object());
  CHECK_THROWS_WITH(
      r.describe_model("raw features", "pretraining", Json()), Contains("set_model_pretraining"));

  const Json doc = r.json();
  CHECK(medcl::eval::validate_report(doc).empty());
  const Json& models = doc.at("evaluation").at("models");
  CHECK(models.at("SimCLR instance").at("pretraining").as_string() == "SimCLR instance");
  CHECK(models.at("SimCLR instance").at("pretraining_status").as_string() == "linked");
  CHECK(models.at("raw features").at("pretraining").is_null());
  CHECK(models.at("raw features").at("pretraining_status").as_string() == "none");
  CHECK(models.at("SimCLR fine-tuned").at("pretraining").as_string() == "SimCLR patient");
  CHECK(doc.at("pretraining").at("runs").size() == 3);

  // A model linked to a run that is not there is a schema violation.
  Json broken = doc;
  broken["evaluation"]["models"]["raw features"]["pretraining_status"] = "linked";
  broken["evaluation"]["models"]["raw features"]["pretraining"] = "nowhere";
  const auto problems = medcl::eval::validate_report(broken);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0], Contains("evaluation.models.raw features.pretraining"));

  // report.md: one section per run, nested descriptions as lists, never a JSON blob.
  const std::string md = r.markdown();
  INFO(md);
  CHECK_THAT(md, Contains("### SimCLR instance\n"));
  CHECK_THAT(md, Contains("### SimCLR patient\n"));
  CHECK_THAT(md, Contains("**augmentation**\n\n- **modality**: tabular\n- **transform**:\n"));
  CHECK_THAT(md, Contains("    - **feature_mask**:\n      - **params**:\n        - **p**: 0.25\n"));
  CHECK(md.find("{\"") == std::string::npos);
  CHECK_THAT(md, Contains("### Models\n\n| model | pretraining | evaluation |"));
  CHECK_THAT(md, Contains("| SimCLR fine-tuned | run \"SimCLR patient\" | — |"));
  CHECK_THAT(md, Contains("| raw features | none (no pretraining) |"));
}

TEST_CASE("Report: embedding maps have titles and axes in words, legends below", "[report]") {
  Report r(ReportOptions().draw_figures(false));
  r.add_embedding_map(
      "simclr_pca",
      {0, 1, 2},
      {1, 0, 1},
      {"dead", "alive", "dead"},
      {"a", "b", "a"},
      "PCA of the test embeddings of SimCLR",
      "PC1 (41.2% of variance)",
      "PC2 (12.0% of variance)");
  r.add_embedding_map("plain", {0, 1}, {1, 0}, {"x", "y"});
  int seen = 0;
  for (const auto& f : r.figures()) {
    if (f.name == "simclr_pca_by_site") {
      ++seen;
      CHECK(f.title == "PCA of the test embeddings of SimCLR, coloured by site");
      CHECK(f.xlabel == "PC1 (41.2% of variance)");
      CHECK(f.ylabel == "PC2 (12.0% of variance)");
    }
    if (f.name == "plain_by_label") {
      ++seen;
      CHECK(f.title == "plain, coloured by label");
      CHECK(f.xlabel == "dimension 1");
    }
  }
  CHECK(seen == 2);
  TempDir dir;
  r.write(dir.path.string());
  CHECK_THAT(read_text(dir.path / "simclr_pca_by_site.gp"), Contains("set key below horizontal"));
  CHECK_THAT(
      read_text(dir.path / "simclr_pca_by_site.gp"),
      Contains("set xlabel \"PC1 (41.2% of variance)\""));
}

TEST_CASE("Report: the data files a run read are recorded by checksum", "[report]") {
  TempDir dir;
  const std::string path = (dir.path / "cohort.csv").string();
  std::ofstream(path) << "id,age\n1,64\n";
  Report r(ReportOptions().draw_figures(false));
  r.add_data_file(path);
  r.add_data_file(path, "pbcseq/cohort.csv");
  r.add_data_file(path); // again: replaces its entry
  const Json& files = r.get("data", "files");
  REQUIRE(files.size() == 2);
  CHECK(files[0].at("name").as_string() == "pbcseq/cohort.csv");
  CHECK(files[1].at("name").as_string() == "cohort.csv"); // no directory of this machine
  CHECK(files[1].at("bytes").as_int64() == 12);
  CHECK(files[1].at("sha256").as_string() == medcl::sha256_hex("id,age\n1,64\n"));
  CHECK(r.json().dump().find(dir.path.string()) == std::string::npos);
  const std::string md = r.markdown();
  CHECK_THAT(md, Contains("| cohort.csv | 12 | `" + medcl::sha256_hex("id,age\n1,64\n") + "` |"));
  CHECK_THROWS_WITH(
      r.add_data_file((dir.path / "absent.csv").string()), Contains("sha256_file: cannot open"));
  CHECK(medcl::eval::validate_report(r.json()).empty());
}
