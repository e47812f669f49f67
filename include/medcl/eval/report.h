#pragma once

/// \file
/// The evaluation report of a run: report.json (everything a result depends on, in fixed sections),
/// report.md (the same for people, with figures) and the figures themselves (data, gnuplot script,
/// picture). Compiled in src/report.cpp.

#include <medcl/core/json.h>
#include <medcl/eval/metrics.h>
#include <medcl/eval/subgroup_metrics.h>

#include <torch/arg.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {

/// The name and version of report.json's schema (docs/reporting.md). The version grows when a
/// field changes meaning or disappears; adding an optional field keeps it.
constexpr const char* kReportSchemaName = "medcl-report";
constexpr int64_t kReportSchemaVersion = 3;

/// How a Report draws its figures.
struct ReportOptions {
  /// The gnuplot program: a name looked up in PATH, or a path. Default: "gnuplot"
  TORCH_ARG(std::string, gnuplot) = "gnuplot";
  /// gnuplot terminal: "pngcairo" or "png" (pictures are .png) or "svg" (.svg). Default: "pngcairo"
  TORCH_ARG(std::string, terminal) = "pngcairo";
  /// Picture size in pixels. Default: 800
  TORCH_ARG(int64_t, width) = 800;
  /// Default: 600
  TORCH_ARG(int64_t, height) = 600;
  /// Whether `write` runs gnuplot at all (the .dat and .gp files are written either way).
  /// Default: true
  TORCH_ARG(bool, draw_figures) = true;
  /// The heading of report.md. Default: "medcl evaluation report"
  TORCH_ARG(std::string, title) = "medcl evaluation report";
};

/// A metric value with an optional confidence interval. Converts from a double (no interval) and
/// from eval::Interval (as returned by eval::auroc_delong).
struct Estimate {
  Estimate(double v) : value(v) {}
  Estimate(double v, double lo, double hi, std::string how = "", double lvl = 0.95)
      : value(v), has_interval(true), lower(lo), upper(hi), level(lvl), method(std::move(how)) {}
  Estimate(const eval::Interval& i)
      : value(i.estimate),
        has_interval(true),
        lower(i.lower),
        upper(i.upper),
        level(i.level),
        method(i.method) {}

  double value = 0;
  bool has_interval = false;
  double lower = 0;
  double upper = 0;
  /// Confidence level of [lower, upper], e.g. 0.95.
  double level = 0.95;
  /// How the interval was obtained, e.g. "DeLong", "bootstrap (1000 resamples)".
  std::string method;
};

/// One result of an evaluation: one metric of one model on one task, with what it was computed
/// on. report.json keeps every result as one record of `evaluation.results` with these fields
/// (absent qualifiers as null), so that a reader selects by field instead of parsing names.
///
/// Example:
///   report.add_result(medcl::eval::Result("af_detection", "SimCLR (PCLR)", "AUROC", auroc)
///                         .n(1200).patients(310));
///   report.add_result(medcl::eval::Result("af_detection", "SimCLR (PCLR)", "AUROC", diff)
///                         .reference_model("SimCLR instance"));  // a paired difference
struct Result {
  Result(std::string task, std::string model, std::string metric, Estimate value)
      : task_(std::move(task)),
        model_(std::move(model)),
        metric_(std::move(metric)),
        value_(std::move(value)) {}
  /// The prediction task or outcome, e.g. "af_detection". Required.
  TORCH_ARG(std::string, task);
  /// The evaluated model, e.g. "SimCLR patient (PCLR)"; empty when the metric is not about one
  /// model (stored as null).
  TORCH_ARG(std::string, model);
  /// The metric, e.g. "AUROC", "Recall@5". Required.
  TORCH_ARG(std::string, metric);
  /// The value, with its interval when it has one.
  TORCH_ARG(Estimate, value);
  /// Samples the metric was computed on. Default: unknown
  TORCH_ARG(std::optional<int64_t>, n) = std::nullopt;
  /// Patients the metric was computed on. Default: unknown
  TORCH_ARG(std::optional<int64_t>, patients) = std::nullopt;
  /// Fraction of the training labels used (label-efficiency studies). Default: none (all)
  TORCH_ARG(std::optional<double>, fraction) = std::nullopt;
  /// Seed of the run that produced the value. Default: none
  TORCH_ARG(std::optional<int64_t>, seed) = std::nullopt;
  /// Subgroup attribute and group (e.g. "sex", "female"); both or neither. Default: whole cohort
  TORCH_ARG(std::string, subgroup_attribute) = "";
  TORCH_ARG(std::string, subgroup) = "";
  /// External cohort (another site, device or data set); empty for the internal test split.
  TORCH_ARG(std::string, cohort) = "";
  /// For a paired difference: the model subtracted (value = model - reference_model).
  TORCH_ARG(std::string, reference_model) = "";
  /// What else qualifies the metric, in words (e.g. "k = 10", "risk = probe probability").
  TORCH_ARG(std::string, detail) = "";
};

/// One fraction of a label-efficiency study (`Report::add_label_fraction`): the metric of each
/// repeat (a different label subset, usually a different seed) and what each repeat was trained
/// on. Everything but the repeats is optional; what is given is kept in report.json and shown in
/// report.md, so that a reader sees the patients and records a fraction actually used, not only
/// the fraction asked for.
///
/// Example:
///   report.add_label_fraction(medcl::eval::LabelFractionResult("af", "SimCLR", "AUROC", 0.1,
///                                                               {0.71, 0.74, 0.72})
///                                 .seeds({0, 1, 2}).patients({2, 2, 2}).records({5, 6, 4})
///                                 .available_patients(24).available_records(61)
///                                 .same_patients_as({0.01}));
struct LabelFractionResult {
  LabelFractionResult(
      std::string task,
      std::string model,
      std::string metric,
      double fraction,
      std::vector<double> repeats)
      : task_(std::move(task)),
        model_(std::move(model)),
        metric_(std::move(metric)),
        fraction_(fraction),
        repeats_(std::move(repeats)) {}
  TORCH_ARG(std::string, task);
  TORCH_ARG(std::string, model);
  TORCH_ARG(std::string, metric);
  /// The fraction of the training labels requested, in (0, 1].
  TORCH_ARG(double, fraction);
  /// The metric of each repeat (at least one).
  TORCH_ARG(std::vector<double>, repeats);
  /// The seed of each repeat (one per repeat, distinct). Default: not recorded
  TORCH_ARG(std::vector<int64_t>, seeds) = {};
  /// Training patients and records each repeat was trained on (one per repeat). Default: not
  /// recorded
  TORCH_ARG(std::vector<int64_t>, patients) = {};
  TORCH_ARG(std::vector<int64_t>, records) = {};
  /// Training patients and records the fraction was taken of. Default: not recorded
  TORCH_ARG(std::optional<int64_t>, available_patients) = std::nullopt;
  TORCH_ARG(std::optional<int64_t>, available_records) = std::nullopt;
  /// Whether every repeat was trained on the same patients (a fraction of 1, or one no seed
  /// changes): the repeats cannot vary with the label subset, so the row gets no interval.
  /// Default: false
  TORCH_ARG(bool, fixed_subset) = false;
  /// Other fractions of the same model and metric whose repeats were trained on the very same
  /// patients, repeat by repeat (the rows measure the same subsets). Default: none
  TORCH_ARG(std::vector<double>, same_patients_as) = {};
};

/// Checks a report.json document against the schema of docs/reporting.md: the schema name and
/// version, the five sections in order, and every result record (fields, types, finite values,
/// intervals that contain their value, qualifiers both-or-neither). Returns one line per problem
/// ("evaluation.results[3].interval.lower: expected a number, got string"); empty when valid.
std::vector<std::string> validate_report(const Json& doc);

/// One item of the reporting checklist and whether the report holds it.
struct ChecklistItem {
  /// Stable identifier, e.g. "patient_level_split".
  std::string id;
  /// What a reader looks for, e.g. "Patient-level split rule".
  std::string label;
  /// Whether the report holds a non-empty value at `location`.
  bool present = false;
  /// Where the item lives (or would live) in report.json, e.g. "data.split_rule".
  std::string location;
  /// For the items of a pretraining: which models have it and which lack it, in words.
  std::string detail;
};

/// What `Report::write` produced.
struct ReportFigureStatus {
  /// File stem, e.g. "roc_af_detection".
  std::string name;
  /// The picture (relative to the report directory), e.g. "roc_af_detection.png".
  std::string image;
  /// Whether gnuplot drew the picture.
  bool drawn = false;
  /// Why it was not drawn (gnuplot missing, its exit status and messages); empty when drawn.
  std::string reason;
};
struct ReportFiles {
  std::string json_path;
  std::string markdown_path;
  /// report.html: report.md as one self-contained page (figures embedded, no script).
  std::string html_path;
  std::vector<ReportFigureStatus> figures;
};

/// The reproducibility and evaluation report of a run. Code that pretrains and evaluates fills
/// it in; `write(directory)` produces report.json, report.md, report.html (one self-contained
/// page: report.md with the figures embedded) and the figures.
///
/// report.json (schema `medcl-report` version 3, docs/reporting.md) has these top-level sections,
/// always in this order:
///  - `schema`: `name` and `version`;
///  - `medcl`: library version, LibTorch version, device, compiler, date (UTC), command line;
///  - `data`: `corpus` (description), `split_rule`, `splits` (per split: patients, samples),
///    `leakage_check` (passed, detail), `files` (name, bytes, sha256 of each data file read);
///  - `pretraining`: `runs` (one record per pretraining: `method`, `loss` (name, options),
///    `pairing`, `augmentation` (policy description), `encoder`, `optimizer`, `schedules`,
///    `seeds`, `hyperparameters`, `steps`, `final_loss` — any other key through `set`) and
///    `figures` (loss curves);
///  - `evaluation`: `models` (each model's pretraining run and evaluation protocol), `results`
///    (one record per metric value: task, model, metric, value, interval,
///    n, patients, fraction, seed, subgroup, cohort, reference model, detail), `calibration` (task
///    -> model -> ECE and reliability bins), `label_efficiency` (task -> rows per model and
///    fraction with the repeats and the patients and records each used), `audits`,
///    `retrieval_examples`, `figures`;
///  - `checklist`: the reporting checklist, item by item, present or missing, and where.
///
/// Nothing is invented: a checklist item whose value was never given is reported as missing.
/// Non-finite metric values, intervals that do not contain their value, empty figure data and
/// x/y vectors of different lengths are errors (c10::Error naming the metric or the figure);
/// nothing is stored as NaN.
///
/// Example:
///   medcl::Report report;
///   report.set_command_line(argc, argv);
///   report.set_split_rule("by patient id, 70/15/15, stratified by site");
///   report.add_split("train", 2100, 31000);
///   report.set_pairing_rule("positives: two views of one ECG; same patient excluded as negative");
///   report.set_augmentation(policy_description_json);
///   report.set_hyperparameter("temperature", 0.1);
///   report.add_loss_curve(steps, losses);
///   report.add_result(medcl::eval::Result(
///       "af_detection", "SimCLR", "AUROC", medcl::eval::auroc_delong(scores, labels)));
///   report.add_roc_curve("af_detection", "SimCLR", fpr, tpr);
///   report.write("runs/exp1");  // runs/exp1/report.json, report.md, *.png
class Report {
 public:
  explicit Report(ReportOptions options = {});

  const ReportOptions& options() const {
    return options_;
  }

  // ---- any section ----

  /// Sets `section.key` (section: "medcl", "data", "pretraining" or "evaluation"; "checklist"
  /// is computed and "figures" is kept by the figure adders, so both are refused).
  void set(const std::string& section, const std::string& key, Json value);
  /// The value at `section.key`; an error naming what is there when missing.
  const Json& get(const std::string& section, const std::string& key) const;

  // ---- medcl ----

  /// The command line of the run, recorded as an array of arguments.
  void set_command_line(int argc, const char* const* argv);
  void set_command_line(std::vector<std::string> arguments);
  /// The device the run used (default: what LibTorch sees, e.g. "CPU (2 threads)").
  void set_device(std::string device);

  // ---- data ----

  /// The corpus: name, source, modality, inclusion criteria... (any Json).
  void set_corpus(Json description);
  /// How patients were assigned to splits (the unit of the split must be the patient).
  void set_split_rule(std::string rule);
  /// Counts of one split; calling it again for the same split replaces the counts.
  void add_split(const std::string& split, int64_t patients, int64_t samples);
  /// The result of the patient-leakage check between splits.
  void set_leakage_check(bool passed, std::string detail);
  /// A data file the run read: its SHA-256 and size go into data.files under `name` (default:
  /// the file's name without its directory, so that no path of the machine enters the report;
  /// e.g. "pbcseq/pbc.csv"), so that a reader can tell whether two reports used the same data.
  /// Adding a name again replaces its entry. Errors name the file that cannot be read.
  void add_data_file(const std::string& path, const std::string& name = "");

  // ---- pretraining ----

  /// Starts, or returns to, the pretraining run `name` (e.g. "SimCLR patient (PCLR)"): the
  /// pretraining setters below, `set`/`get` on "pretraining" and `record_pretraining` fill the
  /// current run. A report that compares several pretrainings keeps one complete record each
  /// (pretraining.runs); setters called before any run start one named "pretraining".
  void begin_pretraining(const std::string& name);
  /// The names of the pretraining runs, in the order they were begun.
  std::vector<std::string> pretraining_runs() const;
  /// Which pretraining run an evaluated model's encoder came from: `run` names a run, "" says the
  /// model has none (raw features, a model trained from scratch). A model named as a run is
  /// linked to it without this call; a model linked to nothing is reported as "not recorded" and
  /// the pretraining items of the checklist are then missing for it. Errors: an empty model, a
  /// run that does not exist.
  void set_model_pretraining(const std::string& model, const std::string& run);
  /// Adds `key` (e.g. "evaluation": the probe or fine-tuning protocol and its seeds) to the record
  /// of `model` in evaluation.models. ClinicalEvaluation records its protocol this way.
  void describe_model(const std::string& model, const std::string& key, Json value);

  void set_method(std::string method);
  /// The loss and its options, e.g. ("NTXentLoss", {"temperature": 0.1}).
  void set_loss(std::string name, Json options);
  /// The pairing heuristic: what makes a positive, what is excluded from the negatives.
  void set_pairing_rule(std::string rule);
  /// The augmentation policy's description (e.g. the policy's own describe() output).
  void set_augmentation(Json policy);
  /// One key hyper-parameter (batch size, temperature, learning rate...).
  void set_hyperparameter(const std::string& name, Json value);
  /// One seed (data order, augmentation, initialisation...).
  void set_seed(const std::string& name, int64_t seed);
  /// Steps trained and the final training loss (must be finite).
  void set_training_result(int64_t steps, double final_loss);

  // ---- evaluation ----

  /// One result (see Result). Errors, naming the result: an empty task or metric, a non-finite
  /// value or bound, lower > value or value > upper, a level outside (0, 1), n or patients < 1,
  /// a fraction outside (0, 1], a subgroup attribute without a group or the reverse.
  void add_result(const Result& result);
  /// Every result added, in order.
  std::vector<Result> results() const;

  /// Adds a decision curve of `model` on `task` (`eval::decision_curve`): net benefit at each
  /// threshold probability beside treat-all; the report draws one figure per task (every model,
  /// treat-all and treat-none) and report.md tabulates it at thresholds 0.05, 0.1, 0.2, 0.3, 0.5
  /// where the curve has them. Errors: lengths that differ, no threshold, a non-finite value, a
  /// threshold outside (0, 1), naming the curve.
  void add_decision_curve(
      const std::string& task,
      const std::string& model,
      const eval::DecisionCurve& curve);

  /// A fairness audit of `model` on `task` over one subgroup attribute (`eval::subgroup_fairness`):
  /// per group its size, AUROC, calibration slope, intercept and in-the-large, sensitivity and
  /// specificity at the shared threshold (how it was chosen: `threshold_rule`), the groups too
  /// small to estimate with the reason, and each metric's largest gap with its interval. Kept under
  /// evaluation.fairness (task → model → attribute); report.md tabulates it and the report draws
  /// each task's and attribute's AUROC by group (every model). Replaces an earlier audit of the
  /// same task, model and attribute. Errors: an empty task, model or attribute, no group, a
  /// non-finite number, naming the audit.
  void add_fairness(
      const std::string& task,
      const std::string& model,
      const std::string& attribute,
      const eval::FairnessReport& audit,
      const std::string& threshold_rule = "");

  /// A metric of a task that is not about one model (`add_result` with an empty model).
  void add_metric(const std::string& task, const std::string& name, const Estimate& value);
  void add_metric(
      const std::string& task,
      const std::string& name,
      double value,
      double lower,
      double upper,
      const std::string& method_of_interval,
      double level = 0.95);
  /// Calibration of one model on one task: ECE and the reliability bins; also draws the
  /// reliability diagram of the task (one series per model).
  void add_calibration(
      const std::string& task,
      const std::string& model,
      const eval::Calibration& calibration);
  /// The same with the logistic recalibration (`eval::logistic_calibration`): the entry also
  /// holds the calibration slope, intercept and calibration-in-the-large with their intervals,
  /// and the model's series in the reliability diagram is labelled with slope and intercept.
  void add_calibration(
      const std::string& task,
      const std::string& model,
      const eval::Calibration& calibration,
      const eval::LogisticCalibration& fit);
  /// One label fraction (in (0, 1]) of a label-efficiency study: the metric of each repeat
  /// (different label subsets / seeds), and optionally what each repeat was trained on (see
  /// LabelFractionResult). The report keeps the repeats, their mean, standard deviation and a t
  /// interval of the mean (95%) — none (null, with the reason in `note`) when there is one repeat,
  /// when every repeat used the same patients (`fixed_subset`) or when all repeats are equal —,
  /// flags the fractions of the same model and metric whose repeats used as many patients
  /// (`same_count_as`) or the same patients (`same_patients_as`), and draws the label-efficiency
  /// curve of the task (one series per model: mean with interval against the share of training
  /// patients used when the counts are given, else against the requested fraction). A row of the
  /// same task, model, metric and fraction is replaced. Errors name the row: an empty task or
  /// metric, a fraction outside (0, 1], no repeats, non-finite repeats, seeds, patients or records
  /// not one per repeat, repeated seeds, counts < 1, records < patients, counts above the
  /// available ones.
  void add_label_fraction(const LabelFractionResult& result);
  /// The same with the repeats only (nothing known of what they were trained on).
  void add_label_fraction(
      const std::string& task,
      const std::string& model,
      const std::string& metric,
      double fraction,
      const std::vector<double>& repeats);
  /// The metric on a subgroup (e.g. attribute "sex", group "female") with its size: a result
  /// with `subgroup_attribute` and `subgroup` set (no model; use `add_result` to name one).
  void add_subgroup(
      const std::string& task,
      const std::string& attribute,
      const std::string& group,
      const std::string& metric,
      int64_t n,
      const Estimate& value);
  /// The metric on an external cohort (another hospital, device or data set) with its size: a
  /// result with `cohort` set (no model; use `add_result` to name one).
  void add_external_validation(
      const std::string& task,
      const std::string& cohort,
      const std::string& metric,
      int64_t n,
      const Estimate& value);
  /// An audit's result (site audit, invariance audit...), any Json; replaces an earlier one of
  /// the same name.
  void add_audit(const std::string& name, Json result);
  /// A retrieval example (query, neighbours, similarities...), any Json.
  void add_retrieval_example(Json example);

  // ---- figures (data as plain vectors) ----

  /// ROC curve of one model on a task; models of the same task share one figure.
  void add_roc_curve(
      const std::string& task,
      const std::string& model,
      const std::vector<double>& fpr,
      const std::vector<double>& tpr);
  /// Training loss against step; several series (e.g. "train", "validation") share the figure.
  void add_loss_curve(
      const std::vector<double>& steps,
      const std::vector<double>& losses,
      const std::string& series = "train");
  /// A 2-D map of embeddings (t-SNE, UMAP, PCA): two scatter figures, "<name>_by_label" and
  /// "<name>_by_site" (the latter only when `sites` is not empty). `title` says what is mapped in
  /// words (default: the name), the figures append "coloured by label" / "by site"; the axis
  /// labels name the coordinates (e.g. "PC1 (23.4% of variance)"; default "dimension 1", "2").
  void add_embedding_map(
      const std::string& name,
      const std::vector<double>& x,
      const std::vector<double>& y,
      const std::vector<std::string>& labels,
      const std::vector<std::string>& sites = {},
      const std::string& title = "",
      const std::string& xlabel = "dimension 1",
      const std::string& ylabel = "dimension 2");

  // ---- output ----

  /// The reporting checklist, in a fixed order: patient-level split rule, pretraining corpus,
  /// pairing heuristic, augmentation policy, key hyper-parameters, external validation,
  /// calibration, subgroups. The pairing, augmentation and hyper-parameter items are answered per
  /// model: present only when every compared model that was pretrained has them in its own run
  /// (models without pretraining do not count; a model with no pretraining record lacks them),
  /// and `detail` names the models that lack them.
  std::vector<ChecklistItem> checklist() const;
  /// The whole report.json document (figures listed without a drawn status).
  Json json() const;
  /// report.md without figure statuses (figures embedded as if drawn).
  std::string markdown() const;
  /// Creates `directory` if needed and writes report.json, report.md and the figures (.dat data,
  /// .gp gnuplot script, picture). Everything is first written into a temporary directory inside
  /// `directory` and then renamed into place, report.json last (a report.json present means a
  /// complete report; an old one is removed before the new files move in). A figure gnuplot could
  /// not draw is listed as not drawn with the reason, with a warning; the rest is still written.
  /// Errors (unwritable directory...) name the path and leave no report.json or report.md.
  ReportFiles write(const std::string& directory) const;

  /// One series of a figure; `lower`/`upper` (error bars) and `text` are optional.
  struct Series {
    std::string name;
    std::vector<double> x;
    std::vector<double> y;
    std::vector<double> lower;
    std::vector<double> upper;
  };
  /// A figure's data and how it is drawn.
  struct Figure {
    std::string name;
    /// "roc", "loss", "reliability", "decision_curve", "label_efficiency", "fairness" or
    /// "scatter".
    std::string kind;
    /// "pretraining" or "evaluation".
    std::string section;
    std::string title;
    std::string xlabel;
    std::string ylabel;
    std::vector<Series> series;
    /// Named categories on the x axis (x = 1, 2, ... is the first, second...); empty: numeric x.
    std::vector<std::string> categories;
  };
  /// Every figure the report would draw, in order (including the derived reliability and
  /// label-efficiency figures).
  std::vector<Figure> figures() const;

 private:
  Json& section(const std::string& name, const char* fn);
  const Json& section(const std::string& name, const char* fn) const;
  Figure& figure(
      const std::string& name,
      const std::string& kind,
      const std::string& section,
      const std::string& title,
      const std::string& xlabel,
      const std::string& ylabel);
  Json build(const std::vector<ReportFigureStatus>* status) const;
  /// Answers a pretraining checklist item model by model (see checklist()).
  void pretraining_item(ChecklistItem& item, const std::string& key) const;
  /// The current pretraining run's record (started as "pretraining" when none is).
  Json& run_entry();
  /// evaluation.models as written: every model of a result or a description, in order of first
  /// appearance, with its pretraining resolved.
  Json models_json() const;
  std::string render_markdown(const Json& doc) const;

  ReportOptions options_;
  Json doc_;
  std::vector<Result> results_;
  std::vector<Figure> figures_;
  std::string run_;
};

} // namespace eval

// Earlier names in medcl::, kept for one release.
using eval::ChecklistItem;
using eval::Estimate;
using eval::Report;
using eval::ReportFigureStatus;
using eval::ReportFiles;
using eval::ReportOptions;

} // namespace medcl
