// Omics example: contrastive pretraining on gene expression, and whether the representation encodes
// the processing batch (a stand-in for the site) instead of the biology.
//
// Data (./scripts/fetch-data all bladderbatch, from Debian's Bioconductor packages):
//   - ALL: 128 acute lymphoblastic leukaemia patients, 12,625 probes; tasks B vs T lineage and
//     BCR/ABL vs NEG (molecular subtype);
//   - bladderbatch: 57 bladder samples, 22,283 probes, processed in 5 batches; task cancer vs
//     non-cancer (normal mucosa and biopsies).
// Models: raw features (1,000 most variable genes, standardised), SimCLR (gene dropout + noise on
// log-expression), SupCon on the training labels, and on bladderbatch SimCLR with negatives drawn
// only from the same batch (batch cannot help tell samples apart). Evaluation: linear probe with
// AUROC intervals and label fractions on a patient-level split; on bladderbatch leave-one-batch-out
// validation and the site (batch) audit. One report per data set.
//
//   omics_batch_robust [--data DIR] [--out DIR] [--steps N] [--smoke]

#include <medcl/augment/policy.h>
#include <medcl/augment/tabular.h>
#include <medcl/core/runtime.h>
#include <medcl/data/omics.h>
#include <medcl/data/pbc.h>
#include <medcl/eval/evaluation.h>
#include <medcl/methods/simclr.h>
#include <medcl/methods/supcon.h>
#include <medcl/train/record.h>

#include <torch/torch.h>

#include "example_common.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

torch::nn::Sequential make_encoder(int64_t in, int64_t out) {
  return torch::nn::Sequential(
      torch::nn::Linear(in, 256),
      torch::nn::BatchNorm1d(256),
      torch::nn::ReLU(),
      torch::nn::Linear(256, out));
}

// One prediction task on one data set.
struct Task {
  std::string name;
  std::vector<int64_t> rows;   // samples of the data set in the task
  std::vector<int64_t> labels; // 0/1 per row
  std::vector<medcl::eval::EvaluationCohort::Attribute> subgroups; // per row
};

struct Outcome {
  std::vector<medcl::eval::ModelEvaluation> results;
  int missing = 0;
};

// Pretrains `method` on the samples `rows` of x (unlabelled unless `labels` is given: -1 unknown).
template <class Method>
std::vector<double> pretrain(
    Method& method,
    const at::Tensor& x,
    const std::vector<int64_t>& rows,
    const std::vector<int64_t>& labels,
    const std::vector<int64_t>& sites,
    int64_t steps,
    medcl::augment::Policy& policy,
    medcl::train::Trainer& trainer) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t batch = std::min<int64_t>(64, n);
  auto all = at::tensor(rows, at::kLong);
  trainer.fit([&](int64_t) {
    auto pick = at::randperm(n, gen, at::kLong).slice(0, 0, batch);
    auto idx = all.index_select(0, pick);
    auto views = policy.views(medcl::augment::Batch(x.index_select(0, idx)), 2);
    medcl::MethodBatch b;
    b.views = {views[0].values, views[1].values};
    if (!labels.empty()) {
      b.keys.label = at::tensor(labels, at::kLong).index_select(0, pick);
    }
    if (!sites.empty()) {
      b.keys.site = at::tensor(sites, at::kLong).index_select(0, pick);
    }
    return b;
  });
  (void)steps;
  return trainer.losses();
}

Outcome run_task(
    const std::string& set_name,
    const Task& task,
    const at::Tensor& x_all,              // [S, G] standardised genes of the data set
    const std::vector<int64_t>& site_all, // batch per sample (empty: none)
    const std::vector<std::string>& site_names,
    const example::Args& args,
    const std::string& corpus_text,
    bool batch_variant) {
  Outcome out;
  const auto t0 = std::chrono::steady_clock::now();
  medcl::eval::EvaluationCohort cohort;
  cohort.labels = task.labels;
  for (int64_t r : task.rows) {
    cohort.patients.push_back(r); // one sample per patient in these sets
    if (!site_all.empty()) {
      cohort.sites.push_back(site_all[static_cast<size_t>(r)]);
    }
  }
  cohort.site_names = site_names;
  cohort.subgroups = task.subgroups;
  auto options = medcl::eval::EvaluationOptions()
                     .task(task.name)
                     .seed(3)
                     .validation_fraction(0.2)
                     .test_fraction(0.25);
  if (args.smoke) {
    options.fraction_seeds({0, 1}).bootstrap(50).retrieval_examples(1);
  }
  options.fractions({0.1, 0.25, 1.0}); // 1% of a few dozen patients is less than one per class
  medcl::eval::ClinicalEvaluation ev(cohort, options);
  std::set<int64_t> test_rows;
  for (int64_t i : ev.splits().indices[ev.splits().at("test")]) {
    test_rows.insert(task.rows[static_cast<size_t>(i)]);
  }
  std::set<int64_t> train_rows;
  for (int64_t i : ev.splits().indices[ev.splits().at("train")]) {
    train_rows.insert(task.rows[static_cast<size_t>(i)]);
  }
  // Pretraining corpus: every sample of the data set outside this task's test split.
  std::vector<int64_t> corpus, corpus_labels, corpus_sites;
  std::map<int64_t, int64_t> label_of;
  for (size_t j = 0; j < task.rows.size(); ++j) {
    label_of[task.rows[j]] = task.labels[j];
  }
  for (int64_t r = 0; r < x_all.size(0); ++r) {
    if (test_rows.count(r) == 0) {
      corpus.push_back(r);
      // SupCon sees the labels of the training split only; the rest are unknown (-1).
      corpus_labels.push_back(train_rows.count(r) && label_of.count(r) ? label_of[r] : -1);
      if (!site_all.empty()) {
        corpus_sites.push_back(site_all[static_cast<size_t>(r)]);
      }
    }
  }
  const int64_t g = x_all.size(1), dim = 64;
  auto rows_t = at::tensor(task.rows, at::kLong);

  medcl::Report report;
  auto corpus_json = medcl::Json::object();
  corpus_json["name"] = set_name;
  corpus_json["description"] = corpus_text;
  corpus_json["pretraining_samples"] = static_cast<int64_t>(corpus.size());
  corpus_json["pretraining_rule"] = "every sample of the data set outside the task's test split";
  report.set_corpus(corpus_json);
  const std::string folder = set_name == "ALL" ? "all" : set_name; // as scripts/fetch-data names it
  for (const char* file : {"expression.tsv", "pheno.csv"}) {
    report.add_data_file(args.data + "/" + folder + "/" + file, folder + "/" + file);
  }
  ev.describe_data(report);
  using namespace medcl::augment;
  auto make_policy = [&]() {
    return Policy(
        Modality::Omics,
        std::make_shared<Sequence>(std::vector<TransformPtr>{
            std::make_shared<GeneDropout>(0.2), std::make_shared<LogExpressionNoise>(0.3)}),
        17);
  };
  auto trainer_options =
      medcl::train::TrainerOptions(args.steps)
          .optimizer(medcl::train::OptimizerOptions().lr(1e-3).weight_decay(1e-4))
          .warmup_steps(std::max<int64_t>(1, args.steps / 10))
          .progress(false)
          .seed(7);
  std::vector<std::pair<std::string, at::Tensor>> embeddings;
  {
    medcl::train::seed_everything(7);
    medcl::SimCLR<torch::nn::Sequential> simclr(
        make_encoder(g, dim), medcl::SimCLROptions(dim).hidden_dim(128).projection_dim(32));
    medcl::train::Trainer trainer(simclr, trainer_options);
    auto policy = make_policy();
    pretrain(simclr, x_all, corpus, {}, {}, args.steps, policy, trainer);
    simclr.eval();
    torch::NoGradGuard ng;
    embeddings.emplace_back("SimCLR", simclr.embed(x_all).index_select(0, rows_t));
    medcl::train::record_pretraining(
        report,
        simclr,
        trainer,
        {policy.describe(), "MLP " + std::to_string(g) + "-256-64", ""},
        "SimCLR");
  }
  {
    medcl::train::seed_everything(7);
    medcl::SupCon<torch::nn::Sequential> supcon(
        make_encoder(g, dim),
        medcl::SupConOptions(dim).hidden_dim(128).projection_dim(32).loss(
            medcl::SupConLossOptions().temperature(0.1)));
    medcl::train::Trainer trainer(supcon, trainer_options);
    auto policy = make_policy();
    pretrain(supcon, x_all, corpus, corpus_labels, {}, args.steps, policy, trainer);
    supcon.eval();
    torch::NoGradGuard ng;
    embeddings.emplace_back(
        "SupCon (training labels)", supcon.embed(x_all).index_select(0, rows_t));
    medcl::train::record_pretraining(
        report,
        supcon,
        trainer,
        {policy.describe(), "MLP " + std::to_string(g) + "-256-64", ""},
        "SupCon (training labels)");
  }
  if (batch_variant && !site_all.empty()) {
    medcl::train::seed_everything(7);
    medcl::SimCLR<torch::nn::Sequential> within(
        make_encoder(g, dim),
        medcl::SimCLROptions(dim).hidden_dim(128).projection_dim(32).loss(
            medcl::NTXentLossOptions().temperature(0.1).pairing(
                medcl::PairingStrategy::instance().exclude(
                    !medcl::PairExpr::same(medcl::Key::Site), "samples of other batches"))));
    medcl::train::Trainer trainer(within, trainer_options);
    auto policy = make_policy();
    pretrain(within, x_all, corpus, {}, corpus_sites, args.steps, policy, trainer);
    within.eval();
    torch::NoGradGuard ng;
    embeddings.emplace_back(
        "SimCLR, negatives within batch", within.embed(x_all).index_select(0, rows_t));
    medcl::train::record_pretraining(
        report,
        within,
        trainer,
        {policy.describe(), "MLP " + std::to_string(g) + "-256-64", ""},
        "SimCLR, negatives within batch");
  }
  const bool analyses = true;
  out.results.push_back(
      ev.evaluate("raw features", x_all.index_select(0, rows_t), report, analyses));
  report.set_model_pretraining("raw features", ""); // a baseline: no pretraining
  for (const auto& e : embeddings) {
    out.results.push_back(ev.evaluate(e.first, e.second, report, analyses));
  }
  ev.compare(out.results[1], out.results[0], report);
  const auto dir = args.out + "/" + set_name + "/" + task.name;
  std::string slug;
  for (char c : dir) {
    slug += (std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '.' || c == '_' ||
             c == '-')
        ? c
        : '_';
  }
  const auto files = report.write(slug);

  std::printf(
      "\n[%s] %s: %zu samples, %s  (%.1f s)\n",
      set_name.c_str(),
      task.name.c_str(),
      task.rows.size(),
      ev.splits().describe().c_str(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::printf(
      "  %-32s %-26s %-26s %-24s %s\n",
      "model",
      "AUROC 10%",
      "AUROC 25%",
      "AUROC 100% [95% CI]",
      analyses ? "batch audit (macro AUROC) / mean leave-one-batch-out AUROC" : "");
  for (const auto& r : out.results) {
    std::string c[3];
    for (size_t k = 0; k < r.label_efficiency.size() && k < 3; ++k) {
      c[k] = example::fraction_cell(r.label_efficiency[k]);
    }
    char full[64];
    std::snprintf(
        full, sizeof(full), "%.3f [%.3f, %.3f]", r.auroc.estimate, r.auroc.lower, r.auroc.upper);
    std::string extra;
    if (r.has_site_analyses) {
      double sum = 0;
      int cnt = 0;
      for (const auto& s : r.external.sites) {
        if (s.auroc_defined) {
          sum += s.auroc.estimate;
          ++cnt;
        }
      }
      char buf[96];
      std::snprintf(
          buf,
          sizeof(buf),
          "%.3f (%s) / %.3f over %d batches",
          r.site_audit.macro_auroc,
          r.site_audit.level.c_str(),
          cnt ? sum / cnt : 0.0,
          cnt);
      extra = buf;
    }
    std::printf(
        "  %-32s %-26s %-26s %-24s %s\n",
        r.model.c_str(),
        c[0].c_str(),
        c[1].c_str(),
        full,
        extra.c_str());
    for (double v : {r.auroc.estimate, r.auroc.lower, r.auroc.upper, r.brier.estimate}) {
      out.missing += std::isfinite(v) ? 0 : 1;
    }
  }
  // Without batches there is no external validation to report.
  out.missing += example::missing_checklist_items(
      files.json_path,
      site_all.empty() ? std::set<std::string>{"external_validation"} : std::set<std::string>{});
  std::printf(
      "  report: %s (one page: %s)\n", files.markdown_path.c_str(), files.html_path.c_str());
  return out;
}

} // namespace

int main(int argc, char** argv) {
  const auto args = example::parse_args(argc, argv, "omics_batch_robust", 300, 30);
  std::printf("%s\n", medcl::runtime_info().summary().c_str());
  const std::string all_dir = args.data + "/all", bladder_dir = args.data + "/bladderbatch";
  if (!std::ifstream(all_dir + "/expression.tsv").good() ||
      !std::ifstream(bladder_dir + "/expression.tsv").good()) {
    std::cerr << "omics_batch_robust: expression files not found under " << args.data
              << "; run ./scripts/fetch-data all bladderbatch (or pass --data DIR)\n";
    return 3;
  }
  const int64_t genes = 1000;
  int missing = 0;

  // ---- ALL ----
  {
    auto e = medcl::data::load_expression_set(all_dir + "/expression.tsv", all_dir + "/pheno.csv");
    auto x = e.select_genes(e.most_variable(genes));
    std::vector<int64_t> all_rows(static_cast<size_t>(e.size()));
    std::iota(all_rows.begin(), all_rows.end(), 0);
    auto scaler = medcl::data::TabularStandardizer::fit(x, at::ones_like(x, at::kBool), all_rows);
    x = scaler.transform(x, at::ones_like(x, at::kBool));
    const auto bt = e.pheno.text("BT");
    const auto mol = e.pheno.text("mol.biol");
    const auto sex = e.pheno.text("sex");
    Task lineage{"B vs T lineage", {}, {}, {}}, bcr{"BCR-ABL vs NEG", {}, {}, {}};
    medcl::eval::EvaluationCohort::Attribute sex_l{"sex", {}, {"female", "male", "unknown"}};
    auto sex_b = sex_l;
    auto sex_code = [&](int64_t i) -> int64_t {
      const auto& v = sex[static_cast<size_t>(i)];
      return v == "F" ? 0 : v == "M" ? 1 : 2;
    };
    for (int64_t i = 0; i < e.size(); ++i) {
      const auto& b = bt[static_cast<size_t>(i)];
      lineage.rows.push_back(i);
      lineage.labels.push_back(!b.empty() && b[0] == 'T' ? 1 : 0);
      sex_l.groups.push_back(sex_code(i));
      const auto& m = mol[static_cast<size_t>(i)];
      if (m == "BCR/ABL" || m == "NEG") {
        bcr.rows.push_back(i);
        bcr.labels.push_back(m == "BCR/ABL" ? 1 : 0);
        sex_b.groups.push_back(sex_code(i));
      }
    }
    lineage.subgroups = {sex_l};
    bcr.subgroups = {sex_b};
    const std::string text = "ALL (Bioconductor ALL): " + std::to_string(e.size()) + " patients, " +
        std::to_string(e.genes.size()) + " probes; the " + std::to_string(genes) +
        " most variable probes, standardised";
    for (const auto& t : {lineage, bcr}) {
      missing += run_task("ALL", t, x, {}, {}, args, text, false).missing;
    }
  }

  // ---- bladderbatch ----
  {
    auto e = medcl::data::load_expression_set(
        bladder_dir + "/expression.tsv", bladder_dir + "/pheno.csv");
    auto x = e.select_genes(e.most_variable(genes));
    std::vector<int64_t> rows(static_cast<size_t>(e.size()));
    std::iota(rows.begin(), rows.end(), 0);
    auto scaler = medcl::data::TabularStandardizer::fit(x, at::ones_like(x, at::kBool), rows);
    x = scaler.transform(x, at::ones_like(x, at::kBool));
    const auto cancer = e.pheno.text("cancer");
    const auto batch = e.pheno.numeric("batch");
    Task t{"cancer vs non-cancer", rows, {}, {}};
    medcl::eval::EvaluationCohort::Attribute by_batch{"batch", {}, {}};
    std::vector<int64_t> sites;
    std::vector<std::string> names;
    for (int64_t i = 0; i < e.size(); ++i) {
      t.labels.push_back(cancer[static_cast<size_t>(i)] == "Cancer" ? 1 : 0);
      sites.push_back(static_cast<int64_t>(batch[static_cast<size_t>(i)]) - 1);
      by_batch.groups.push_back(sites.back());
    }
    for (int b = 1; b <= 5; ++b) {
      names.push_back("batch " + std::to_string(b));
    }
    by_batch.group_names = names;
    t.subgroups = {by_batch};
    const std::string text = "bladderbatch (Bioconductor): " + std::to_string(e.size()) +
        " samples, " + std::to_string(e.genes.size()) + " probes, 5 processing batches; the " +
        std::to_string(genes) + " most variable probes, standardised";
    missing += run_task("bladderbatch", t, x, sites, names, args, text, true).missing;
  }
  if (missing > 0) {
    std::fprintf(stderr, "omics_batch_robust: %d missing or non-finite report entries\n", missing);
    return 1;
  }
  std::printf("omics_batch_robust ok\n");
  return 0;
}
