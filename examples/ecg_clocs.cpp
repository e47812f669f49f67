// ECG example: CLOCS-style pairing across time segments and across leads on two real recordings.
//
// Data (./scripts/fetch-data ecg12 mitbih208, from Debian's python3-pydicom and python3-scipy):
//   - a 12-lead resting ECG (DICOM waveform, 10 s at 1000 Hz), read with DCMTK;
//   - 5 minutes of MIT-BIH arrhythmia record 208, lead MLII, 360 Hz (NPZ), frequent ectopic beats.
// Both are resampled to 250 Hz and cut into 1-s single-lead windows with keys: record (patient),
// lead, time (s) and moment (the window's start, shared by the 12 leads).
// Pretraining (ResNet1d on single-lead windows, SimCLR's NT-Xent) on the first 70% of each record:
//   - instance pairing (two augmentations of one window);
//   - CLOCS CMLC: the same moment seen by another lead is a positive;
//   - CLOCS CMLC + CMSC: also windows of the same record and lead within 0.5 s.
// Evaluation on the last 30% (held out in time): Recall@K and median rank of retrieving the same
// moment in another lead, alignment and uniformity, and the invariance audit of every signal
// augmentation (against the change between leads), in a report.
//
//   ecg_clocs [--data DIR] [--out DIR] [--steps N] [--smoke]

#include <medcl/augment/policy.h>
#include <medcl/augment/signal.h>
#include <medcl/core/runtime.h>
#include <medcl/data/dicom.h>
#include <medcl/data/ecg.h>
#include <medcl/data/npy.h>
#include <medcl/eval/audits.h>
#include <medcl/eval/evaluation.h>
#include <medcl/eval/retrieval.h>
#include <medcl/methods/simclr.h>
#include <medcl/nn/resnet1d.h>
#include <medcl/train/record.h>

#include <torch/torch.h>

#include "example_common.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr double kRate = 250.0;  // Hz after resampling
constexpr int64_t kWindow = 250; // 1 s
constexpr double kTrainShare = 0.7;

} // namespace

int main(int argc, char** argv) {
  const auto args = example::parse_args(argc, argv, "ecg_clocs", 400, 30);
  std::printf("%s\n", medcl::runtime_info().summary().c_str());
  const std::string dcm = args.data + "/ecg12/waveform_ecg.dcm";
  const std::string npz = args.data + "/mitbih208/ecg.dat";
  if (!std::ifstream(dcm).good() || !std::ifstream(npz).good()) {
    std::cerr << "ecg_clocs: " << dcm << " or " << npz
              << " not found; run ./scripts/fetch-data ecg12 mitbih208 (or pass --data DIR)\n";
    return 3;
  }
  // ---- data ----
  const auto wave = medcl::data::read_dicom_waveform(dcm);
  const auto& rhythm = wave.rhythm();
  auto ecg12 = medcl::data::resample_signal(
      medcl::data::to_tensor(rhythm), rhythm.sampling_frequency, kRate);
  auto mit = medcl::data::to_tensor(medcl::data::read_npz_member(npz, "ecg"));
  mit = ((mit.to(at::kFloat) - 1024.0) / 200.0).reshape({1, -1}); // mV, as PhysioNet's header says
  mit = medcl::data::resample_signal(mit, 360.0, kRate);
  medcl::data::EcgWindows w;
  w.add_record(ecg12, kRate, 0, rhythm.channels, kWindow, 25, kTrainShare);     // every 0.1 s
  w.add_record(mit, kRate, 1, {"MIT-BIH 208 MLII"}, kWindow, 125, kTrainShare); // every 0.5 s
  const auto n = w.size();
  auto x = w.values(); // [N, 1, 250]
  std::vector<int64_t> train_rows = w.rows(true), test12, test_mit;
  for (int64_t i : w.rows(false)) {
    (w.record[static_cast<size_t>(i)] == 0 ? test12 : test_mit).push_back(i);
  }
  std::printf(
      "data: 12-lead ECG %lld samples/lead and MIT-BIH 208 %lld samples at %.0f Hz -> %lld windows "
      "(%zu for pretraining, %zu 12-lead and %zu MIT-BIH held out in time)\n",
      static_cast<long long>(ecg12.size(1)),
      static_cast<long long>(mit.size(1)),
      kRate,
      static_cast<long long>(n),
      train_rows.size(),
      test12.size(),
      test_mit.size());

  medcl::Report report;
  report.set_command_line(argc, argv);
  auto corpus = medcl::Json::object();
  corpus["name"] =
      "12-lead resting ECG (pydicom test data) + MIT-BIH arrhythmia record 208 (5 min, MLII)";
  corpus["source"] =
      "Debian packages python3-pydicom and python3-scipy (scripts/fetch-data ecg12 mitbih208)";
  corpus["windows"] = "1 s single-lead windows at 250 Hz, standardised per window";
  corpus["pretraining_windows"] = static_cast<int64_t>(train_rows.size());
  report.set_corpus(corpus);
  report.add_data_file(dcm, "ecg12/waveform_ecg.dcm");
  report.add_data_file(npz, "mitbih208/ecg.dat");
  report.set_split_rule(
      "held out in time: windows in the first 70% of each record for pretraining, the last 30% for "
      "evaluation; windows straddling the boundary are dropped (one patient per record: no "
      "patient-level "
      "split is possible, the time split is the leakage control)");
  report.add_split("pretraining", 2, static_cast<int64_t>(train_rows.size()));
  report.add_split("evaluation", 2, static_cast<int64_t>(test12.size() + test_mit.size()));
  report.set_leakage_check(true, "no window is in both parts (checked by construction and below)");
  for (int64_t a : train_rows) {
    for (int64_t b : test12) {
      const double gap = std::abs(w.time[static_cast<size_t>(a)] - w.time[static_cast<size_t>(b)]);
      if (w.record[static_cast<size_t>(a)] == w.record[static_cast<size_t>(b)] &&
          gap < 1.0 - 1e-9 && w.time[static_cast<size_t>(a)] > w.time[static_cast<size_t>(b)]) {
        std::cerr << "ecg_clocs: internal error: overlapping train/test windows\n";
        return 1;
      }
    }
  }

  const auto all_keys = w.keys();

  using namespace medcl::augment;
  auto make_policy = [] {
    return Policy(
        Modality::ECG,
        std::make_shared<Sequence>(std::vector<TransformPtr>{
            std::make_shared<AmplitudeScale>(0.8, 1.25),
            std::make_shared<GaussianJitter>(0.05),
            std::make_shared<BaselineWander>(0.1, 0.5, kRate),
            std::make_shared<TimeMask>(0.1)}),
        23);
  };
  // Key `instance` names the sample whose views are positives. For instance discrimination it is
  // left unset (the loss numbers the windows); for CLOCS it is the moment, shared by the 12 leads,
  // so that `instance()` makes the same moment in another lead a positive (CMLC).
  struct Variant {
    std::string name;
    std::optional<medcl::PairingStrategy> pairing;
    bool moment_as_instance;
  };
  const auto cmsc = medcl::PairingStrategy::custom(
      medcl::PairExpr::same(medcl::Key::Patient) & medcl::PairExpr::same(medcl::Key::Lead) &
          medcl::PairExpr::time_within(0.5),
      "same record and lead within 0.5 s (CMSC)");
  const std::vector<Variant> variants{
      {"SimCLR instance", std::nullopt, false},
      {"CLOCS CMLC (same moment, any lead)", medcl::PairingStrategy::instance(), true},
      {"CLOCS CMLC + CMSC", medcl::PairingStrategy::instance() | cmsc, true}};
  std::vector<std::pair<std::string, std::shared_ptr<medcl::SimCLR<medcl::ResNet1d>>>> models;
  auto train_idx = at::tensor(train_rows, at::kLong);
  for (const auto& v : variants) {
    medcl::train::seed_everything(3);
    auto method = std::make_shared<medcl::SimCLR<medcl::ResNet1d>>(
        medcl::ResNet1d(medcl::ResNet1dOptions(1, 64).widths({16, 32, 64}).blocks({1, 1, 1})),
        medcl::SimCLROptions(64).hidden_dim(128).projection_dim(32).loss(
            medcl::NTXentLossOptions().temperature(0.1).pairing(v.pairing)));
    medcl::train::Trainer trainer(
        *method,
        medcl::train::TrainerOptions(args.steps)
            .optimizer(medcl::train::OptimizerOptions().lr(2e-3).weight_decay(1e-4))
            .warmup_steps(std::max<int64_t>(1, args.steps / 10))
            .progress(false)
            .seed(3));
    auto policy = make_policy();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
    trainer.fit([&](int64_t) {
      auto pick = train_idx.index_select(
          0, at::randperm(train_idx.size(0), gen, at::kLong).slice(0, 0, 128));
      auto views = policy.views(Batch(x.index_select(0, pick)), 2);
      medcl::MethodBatch b;
      b.views = {views[0].values, views[1].values};
      b.keys = all_keys.index_select(pick);
      if (!v.moment_as_instance) {
        b.keys.instance = at::Tensor(); // the loss numbers the windows
      }
      return b;
    });
    std::printf(
        "pretrained %-36s loss %.3f -> %.3f\n",
        v.name.c_str(),
        trainer.losses().front(),
        trainer.losses().back());
    medcl::train::record_pretraining(
        report,
        *method,
        trainer,
        {policy.describe(),
         (*method).describe().at("method").as_string() + " on " +
             "ResNet1d(1 lead, stages 16-32-64, blocks 1-1-1, D=64)",
         ""},
        v.name);
    method->eval();
    models.emplace_back(v.name, method);
  }
  medcl::train::seed_everything(3);
  auto random = std::make_shared<medcl::SimCLR<medcl::ResNet1d>>(
      medcl::ResNet1d(medcl::ResNet1dOptions(1, 64).widths({16, 32, 64}).blocks({1, 1, 1})),
      medcl::SimCLROptions(64).hidden_dim(128).projection_dim(32));
  random->eval();
  models.emplace_back("random encoder", random);
  report.set_model_pretraining("random encoder", ""); // a baseline: no pretraining

  // ---- evaluation (held-out time) ----
  torch::NoGradGuard no_grad;
  const std::string task = "same moment across leads (12-lead, held out)";
  std::printf(
      "\n%-38s %-9s %-9s %-9s %-12s %-10s %-10s\n",
      "model",
      "R@1",
      "R@5",
      "R@10",
      "median rank",
      "alignment",
      "uniformity");
  int bad = 0;
  for (const auto& m : models) {
    auto z = m.second->embed(x.index_select(0, at::tensor(test12, at::kLong)));
    auto leads = all_keys.lead.index_select(0, at::tensor(test12, at::kLong));
    auto moments = all_keys.instance.index_select(0, at::tensor(test12, at::kLong));
    std::vector<double> recall(3, 0.0);
    double median = 0;
    int pairs = 0;
    for (int64_t a = 0; a < 12; ++a) {
      for (int64_t b = 0; b < 12; ++b) {
        if (a == b) {
          continue;
        }
        auto qa = leads.eq(a).nonzero().squeeze(1), gb = leads.eq(b).nonzero().squeeze(1);
        auto r = medcl::eval::recall_at_k(
            z.index_select(0, qa),
            z.index_select(0, gb),
            moments.index_select(0, qa),
            moments.index_select(0, gb),
            {1, 5, 10});
        for (size_t k = 0; k < 3; ++k) {
          recall[k] += r[k];
        }
        median += medcl::eval::median_rank(
            z.index_select(0, qa),
            z.index_select(0, gb),
            moments.index_select(0, qa),
            moments.index_select(0, gb));
        ++pairs;
      }
    }
    for (auto& r : recall) {
      r /= pairs;
    }
    median /= pairs;
    // Alignment / uniformity on held-out MIT-BIH windows under the augmentation policy.
    auto policy = make_policy();
    auto xm = x.index_select(0, at::tensor(test_mit, at::kLong));
    auto views = policy.views(Batch(xm), 2);
    auto z0 = m.second->embed(views[0].values), z1 = m.second->embed(views[1].values);
    z0 = z0 / z0.norm(2, 1, true).clamp_min(1e-12);
    z1 = z1 / z1.norm(2, 1, true).clamp_min(1e-12);
    const double align = medcl::eval::alignment(z0, z1), unif = medcl::eval::uniformity(z0);
    std::printf(
        "%-38s %-9.3f %-9.3f %-9.3f %-12.1f %-10.3f %-10.3f\n",
        m.first.c_str(),
        recall[0],
        recall[1],
        recall[2],
        median,
        align,
        unif);
    using medcl::eval::Result;
    const std::string rep = "representation (MIT-BIH 208, held out)";
    const std::string over = "mean over " + std::to_string(pairs) + " lead pairs";
    report.add_result(Result(task, m.first, "Recall@1", recall[0]).detail(over));
    report.add_result(Result(task, m.first, "Recall@5", recall[1]).detail(over));
    report.add_result(Result(task, m.first, "Recall@10", recall[2]).detail(over));
    report.add_result(Result(task, m.first, "median rank", median).detail(over));
    report.add_result(Result(rep, m.first, "alignment", align).detail("lower: positives closer"));
    report.add_result(Result(rep, m.first, "uniformity", unif).detail("lower: more uniform"));
    for (double v : {recall[0], recall[1], recall[2], median, align, unif}) {
      bad += std::isfinite(v) ? 0 : 1;
    }
    if (m.first == "CLOCS CMLC (same moment, any lead)") {
      // Invariance audit: each augmentation against the change between leads (a different
      // projection of the heart's electrical activity: clinically meaningful).
      std::vector<TransformPtr> transforms{
          std::make_shared<AmplitudeScale>(0.8, 1.25),
          std::make_shared<GaussianJitter>(0.05),
          std::make_shared<BaselineWander>(0.1, 0.5, kRate),
          std::make_shared<PowerlineInterference>(50.0, 0.1, kRate),
          std::make_shared<TimeMask>(0.1),
          std::make_shared<TimeWarp>(0.1)};
      auto xa = x.index_select(0, at::tensor(test12, at::kLong));
      std::vector<int64_t> lead_labels(
          leads.data_ptr<int64_t>(), leads.data_ptr<int64_t>() + leads.numel());
      auto audit = medcl::eval::invariance_audit(
          [&](const Batch& b) { return m.second->embed(b.values); },
          Modality::ECG,
          transforms,
          Batch(xa),
          lead_labels,
          5);
      medcl::eval::record_invariance_audit(report, m.first, audit);
      std::printf(
          "\ninvariance audit (%s): cosine across leads %.3f, within a lead %.3f\n",
          m.first.c_str(),
          audit.different_label_cosine,
          audit.same_label_cosine);
      for (const auto& e : audit.transforms) {
        std::printf(
            "  %-24s mean cos %.3f%s\n",
            e.transform.c_str(),
            e.mean_cosine,
            e.flagged ? "  FLAGGED" : "");
      }
    }
  }
  const auto files = report.write(args.out + "/report");
  std::printf("report: %s (one page: %s)\n", files.markdown_path.c_str(), files.html_path.c_str());
  // No labels, no sites: calibration, subgroups and external validation do not apply here.
  bad += example::missing_checklist_items(
      files.json_path, {"calibration", "subgroups", "external_validation"});
  if (bad > 0) {
    return 1;
  }
  std::printf("ecg_clocs ok\n");
  return 0;
}
