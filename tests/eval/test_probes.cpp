#include <medcl/eval/clinical_evaluation.h>
#include <medcl/eval/embed.h>
#include <medcl/eval/fine_tune.h>
#include <medcl/eval/label_fractions.h>
#include <medcl/eval/linear_probe.h>
#include <medcl/eval/metrics.h>
#include <medcl/eval/report.h>

#include <torch/torch.h>
#include "catch.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

using medcl_test::Contains;
namespace E = medcl::eval;

namespace {

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

std::vector<double> to_dvec(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// Labels from a planted direction with a margin of noise: linearly separable up to the noise.
struct Planted {
  torch::Tensor x;
  torch::Tensor y;
};
Planted planted(int64_t n, int64_t d, const torch::Tensor& w, double noise) {
  auto x = torch::randn({n, d});
  auto y = ((x.mv(w) + noise * torch::randn({n})) > 0).to(torch::kLong);
  return {x, y};
}

} // namespace

TEST_CASE("extract_embeddings: chunks, eval mode restored, checks", "[eval][embed]") {
  torch::manual_seed(3);
  torch::nn::Sequential enc(
      torch::nn::Linear(4, 8), torch::nn::Dropout(0.5), torch::nn::Linear(8, 3));
  auto x = torch::randn({10, 4});
  enc->train();
  auto z = E::extract_embeddings(enc, x, 3);
  REQUIRE(enc->is_training()); // previous mode restored
  enc->eval();
  auto ref = enc->forward(x).detach();
  enc->train();
  REQUIRE(z.sizes() == torch::IntArrayRef({10, 3}));
  REQUIRE(z.scalar_type() == torch::kFloat);
  REQUIRE(torch::allclose(z, ref, 1e-6, 1e-6)); // dropout off, chunks of 3 give the full forward
  REQUIRE(!z.requires_grad());
  // Any callable; double output becomes float; eval mode also restored after an error.
  auto zd =
      E::extract_embeddings([](const torch::Tensor& b) { return b.to(torch::kDouble) * 2; }, x, 4);
  REQUIRE(zd.scalar_type() == torch::kFloat);
  REQUIRE(torch::allclose(zd, x * 2));
  REQUIRE_THROWS_WITH(
      E::extract_embeddings([](const torch::Tensor& b) { return b / 0.0 * 0.0; }, x, 4),
      Contains("the encoder returned NaN or Inf for rows 0..3"));
  REQUIRE_THROWS_WITH(
      E::extract_embeddings([](const torch::Tensor& b) { return b.slice(0, 0, 1); }, x, 4),
      Contains("expected the encoder to return [4, D] for rows 0..3, got [1, 4]"));
  REQUIRE_THROWS_WITH(
      E::extract_embeddings([](const torch::Tensor& b) { return b; }, x, 0),
      Contains("batch_size must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(
      E::extract_embeddings(enc, torch::randn({10, 5})), Contains("mat1 and mat2 shapes"));
  REQUIRE(enc->is_training());
}

TEST_CASE(
    "linear probe: planted label, chance on shuffled labels, errors",
    "[eval][linear_probe]") {
  torch::manual_seed(11);
  auto w = torch::randn({10});
  auto tr = planted(400, 10, w, 0.3);
  auto va = planted(200, 10, w, 0.3);
  auto te = planted(300, 10, w, 0.3);
  // Features on different scales: standardisation makes the fit indifferent to them.
  auto scale = torch::linspace(0.01, 100, 10);
  auto probe = E::fit_linear_probe(tr.x * scale, tr.y, va.x * scale, va.y, 2);
  REQUIRE(E::auroc(probe.scores(te.x * scale), to_vec(te.y)) > 0.95);
  REQUIRE(probe.selection == "log_loss");
  REQUIRE(probe.l2_grid.size() == 9);
  REQUIRE(probe.validation_scores.size() == 9);
  const auto best =
      std::min_element(probe.validation_scores.begin(), probe.validation_scores.end());
  REQUIRE(probe.l2 == probe.l2_grid[static_cast<size_t>(best - probe.validation_scores.begin())]);
  auto p = probe.predict_proba(te.x * scale);
  REQUIRE(p.sizes() == torch::IntArrayRef({300, 2}));
  REQUIRE(torch::allclose(p.sum(1), torch::ones({300}, torch::kDouble)));
  // Validation log-loss of the kept strength, recomputed from its probabilities.
  auto pv = probe.predict_proba(va.x * scale);
  double ll = 0;
  auto yv = to_vec(va.y);
  for (int64_t i = 0; i < 200; ++i) {
    ll -= std::log(pv[i][yv[static_cast<size_t>(i)]].item<double>());
  }
  REQUIRE(ll / 200 == Approx(*best).epsilon(1e-9));

  // AUROC selection.
  auto pa = E::fit_linear_probe(
      tr.x, tr.y, va.x, va.y, 2, E::LinearProbeOptions().selection(E::ProbeSelection::Auroc));
  REQUIRE(pa.selection == "auroc");
  REQUIRE(*std::max_element(pa.validation_scores.begin(), pa.validation_scores.end()) > 0.95);

  // Shuffled training labels: chance on the test set.
  auto shuffled = tr.y.index_select(0, torch::randperm(400));
  auto ps =
      E::fit_linear_probe(tr.x, shuffled, va.x, va.y.index_select(0, torch::randperm(200)), 2);
  REQUIRE(std::abs(E::auroc(ps.scores(te.x), to_vec(te.y)) - 0.5) < 0.12);

  // Errors.
  auto ones = torch::ones({400}, torch::kLong);
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(tr.x, ones, va.x, va.y, 2),
      Contains("the training labels hold a single class (1)"));
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(tr.x, tr.y * 2, va.x, va.y, 2),
      Contains("training labels must be in [0, 2), got values in [0, 2]"));
  auto nan_x = tr.x.clone();
  nan_x[3][4] = std::nan("");
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(nan_x, tr.y, va.x, va.y, 2),
      Contains("the training embeddings contain NaN or Inf"));
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(tr.x, tr.y, torch::zeros({0, 10}), torch::zeros({0}, torch::kLong), 2),
      Contains("the validation split is empty"));
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(tr.x, tr.y, va.x.slice(1, 0, 9), va.y, 2),
      Contains("training and validation embedding sizes differ: 10 vs 9"));
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(tr.x, tr.y, 2, E::LinearProbeOptions()),
      Contains("the L2 grid must hold one strength, got 9"));
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(tr.x, tr.y, va.x, va.y, 2, E::LinearProbeOptions().l2_grid({1, -1})),
      Contains("L2 strengths must be > 0, got -1"));
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(tr.x, tr.y.to(torch::kInt), va.x, va.y, 2),
      Contains("expected int64 training labels of shape [400]"));
  REQUIRE_THROWS_WITH(
      E::fit_linear_probe(
          tr.x, tr.y, va.x, va.y, 3, E::LinearProbeOptions().selection(E::ProbeSelection::Auroc)),
      Contains("AUROC selection needs two classes, got 3"));
  REQUIRE_THROWS_WITH(probe.predict_proba(torch::ones({2, 3})), Contains("expected [N, 10]"));
}

TEST_CASE("linear probe: noisy features choose a stronger L2, multiclass", "[eval][linear_probe]") {
  torch::manual_seed(5);
  // Clean: many rows, few informative features -> weak L2. Noisy: few rows, one weak signal among
  // 100 noise features -> the validation split asks for strong shrinkage.
  auto w = torch::randn({5});
  auto ctr = planted(1000, 5, w, 0.05);
  auto cva = planted(500, 5, w, 0.05);
  auto clean = E::fit_linear_probe(ctr.x, ctr.y, cva.x, cva.y, 2);
  auto wn = torch::zeros({100});
  wn[0] = 1;
  auto ntr = planted(40, 100, wn, 2.0);
  auto nva = planted(400, 100, wn, 2.0);
  auto noisy = E::fit_linear_probe(ntr.x, ntr.y, nva.x, nva.y, 2);
  INFO("clean l2 " << clean.l2 << ", noisy l2 " << noisy.l2);
  REQUIRE(clean.l2 <= 1e-3);
  REQUIRE(noisy.l2 >= 1.0);

  // Three classes around three centres.
  auto centres = torch::randn({3, 6}) * 2;
  auto ytr = torch::randint(0, 3, {300}, torch::kLong);
  auto yva = torch::randint(0, 3, {150}, torch::kLong);
  auto yte = torch::randint(0, 3, {150}, torch::kLong);
  auto xtr = centres.index_select(0, ytr) + torch::randn({300, 6});
  auto xva = centres.index_select(0, yva) + torch::randn({150, 6});
  auto xte = centres.index_select(0, yte) + torch::randn({150, 6});
  auto probe = E::fit_linear_probe(xtr, ytr, xva, yva, 3);
  auto p = probe.predict_proba(xte);
  REQUIRE(p.sizes() == torch::IntArrayRef({150, 3}));
  REQUIRE(p.argmax(1).eq(yte).to(torch::kDouble).mean().item<double>() > 0.85);
  REQUIRE(probe.scores(xte, 2).size() == 150);
  // Deterministic: the same data gives the same model.
  auto again = E::fit_linear_probe(xtr, ytr, xva, yva, 3);
  REQUIRE(torch::equal(again.weight, probe.weight));
  REQUIRE_THROWS_WITH(probe.scores(xte, 3), Contains("class must be in [0, 3), got 3"));
}

TEST_CASE(
    "fine-tuning beats the frozen probe and leaves the encoder untouched",
    "[eval][fine_tune]") {
  torch::manual_seed(21);
  // XOR of the two inputs: the random encoder's 2-D output does not separate it linearly, but the
  // encoder can learn to.
  auto make = [](int64_t n) {
    auto x = torch::rand({n, 2}) * 2 - 1;
    auto y = (x.select(1, 0) * x.select(1, 1) > 0).to(torch::kLong);
    return Planted{x, y};
  };
  auto tr = make(400);
  auto va = make(200);
  auto te = make(300);
  torch::nn::Sequential enc(torch::nn::Linear(2, 32), torch::nn::ReLU(), torch::nn::Linear(32, 2));
  enc->train();
  std::vector<torch::Tensor> before;
  for (const auto& t : enc->parameters()) {
    before.push_back(t.detach().clone());
  }
  auto frozen = E::fit_linear_probe(
      E::extract_embeddings(enc, tr.x), tr.y, E::extract_embeddings(enc, va.x), va.y, 2);
  const double frozen_auc = E::auroc(frozen.scores(E::extract_embeddings(enc, te.x)), to_vec(te.y));

  auto opts = E::FineTuneOptions().epochs(40).batch_size(32).encoder_lr(1e-2).head_lr(1e-2).seed(4);
  auto r = E::fine_tune(enc, tr.x, tr.y, va.x, va.y, te.x, 2, opts);
  REQUIRE(r.probabilities.sizes() == torch::IntArrayRef({300, 2}));
  const double tuned_auc = E::auroc(to_dvec(r.probabilities.select(1, 1)), to_vec(te.y));
  INFO("frozen " << frozen_auc << ", fine-tuned " << tuned_auc);
  REQUIRE(tuned_auc > 0.95);
  REQUIRE(tuned_auc > frozen_auc + 0.15);
  REQUIRE(r.train_loss.size() == 40);
  REQUIRE(r.validation_loss.size() == 40);
  REQUIRE(r.best_epoch >= 1);
  REQUIRE(
      r.best_validation_loss ==
      *std::min_element(r.validation_loss.begin(), r.validation_loss.end()));
  REQUIRE(r.validation_loss[static_cast<size_t>(r.best_epoch - 1)] == r.best_validation_loss);
  // The caller's encoder: same parameters, same mode.
  auto after = enc->parameters();
  for (size_t i = 0; i < before.size(); ++i) {
    REQUIRE(torch::equal(before[i], after[i]));
  }
  REQUIRE(enc->is_training());
  // Deterministic for a seed; another seed gives another run.
  auto r2 = E::fine_tune(enc, tr.x, tr.y, va.x, va.y, te.x, 2, opts.epochs(5));
  auto r3 = E::fine_tune(enc, tr.x, tr.y, va.x, va.y, te.x, 2, opts.epochs(5));
  auto r4 = E::fine_tune(enc, tr.x, tr.y, va.x, va.y, te.x, 2, opts.epochs(5).seed(5));
  REQUIRE(torch::equal(r2.probabilities, r3.probabilities));
  REQUIRE(!torch::equal(r2.probabilities, r4.probabilities));

  REQUIRE_THROWS_WITH(
      E::fine_tune(enc, tr.x, torch::zeros({400}, torch::kLong), va.x, va.y, te.x, 2, opts),
      Contains("the training labels hold a single class"));
  REQUIRE_THROWS_WITH(
      E::fine_tune(enc, tr.x, tr.y, va.x, va.y + 1, te.x, 2, opts),
      Contains("validation labels must be in [0, 2), got values in [1, 2]"));
  REQUIRE_THROWS_WITH(
      E::fine_tune(enc, tr.x, tr.y, va.x, va.y, te.x, 2, E::FineTuneOptions().epochs(0)),
      Contains("epochs must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(
      E::fine_tune(enc, tr.x.slice(0, 0, 0), tr.y.slice(0, 0, 0), va.x, va.y, te.x, 2, opts),
      Contains("the training split is empty"));
}

TEST_CASE("label fractions: whole patients, stratified, seeded", "[eval][label_fractions]") {
  // 50 patients with 1-4 records; 10 positive patients.
  std::vector<int64_t> patients;
  std::vector<int64_t> labels;
  for (int64_t p = 0; p < 50; ++p) {
    for (int64_t r = 0; r <= p % 4; ++r) {
      patients.push_back(100 + p);
      labels.push_back(p % 5 == 0 ? 1 : 0);
    }
  }
  std::map<int64_t, std::vector<int64_t>> records_of;
  for (size_t i = 0; i < patients.size(); ++i) {
    records_of[patients[i]].push_back(static_cast<int64_t>(i));
  }
  auto check_whole = [&](const E::LabelFraction& f) {
    std::vector<int64_t> expect;
    for (int64_t p : f.patients) {
      expect.insert(expect.end(), records_of[p].begin(), records_of[p].end());
    }
    std::sort(expect.begin(), expect.end());
    REQUIRE(expect == f.indices); // every record of a chosen patient, and nothing else
    std::set<int64_t> cls;
    for (int64_t i : f.indices) {
      cls.insert(labels[static_cast<size_t>(i)]);
    }
    REQUIRE(cls.size() == 2);
  };
  auto f10 = E::sample_label_fraction(patients, labels, 2, 0.1, 0);
  check_whole(f10);
  REQUIRE(f10.patients.size() == 5); // 4 of 40 negative patients, 1 of 10 positive
  auto f1 = E::sample_label_fraction(patients, labels, 2, 0.01, 0);
  check_whole(f1);
  REQUIRE(f1.patients.size() == 2); // one per class even below one patient
  REQUIRE(f1.available_patients == 50);
  REQUIRE(f1.target_patients == 1); // round(0.5), at least 1: the strata raise it to 2
  REQUIRE(f10.target_patients == 5);
  auto all = E::sample_label_fraction(patients, labels, 2, 1.0, 3);
  REQUIRE(all.indices.size() == patients.size());
  REQUIRE(all.patients.size() == 50);
  auto f30 = E::sample_label_fraction(patients, labels, 2, 0.3, 0);
  check_whole(f30);
  REQUIRE(f30.patients.size() == 15);
  // Determinism per seed, different subsets across seeds.
  REQUIRE(E::sample_label_fraction(patients, labels, 2, 0.1, 0).indices == f10.indices);
  std::set<std::vector<int64_t>> subsets;
  for (uint64_t s = 0; s < 5; ++s) {
    subsets.insert(E::sample_label_fraction(patients, labels, 2, 0.1, s).patients);
  }
  REQUIRE(subsets.size() >= 4);
  // A class held only as a minority label of one patient still gets in.
  auto l2 = labels;
  l2[records_of[103][0]] = 2; // patient 103 has 4 records: majority 0, one record of class 2
  auto f3 = E::sample_label_fraction(patients, l2, 3, 0.1, 1);
  REQUIRE(std::find(f3.patients.begin(), f3.patients.end(), 103) != f3.patients.end());

  REQUIRE_THROWS_WITH(
      E::sample_label_fraction(patients, labels, 3, 0.1, 0),
      Contains("class 2 has no labelled training record"));
  REQUIRE_THROWS_WITH(
      E::sample_label_fraction(patients, labels, 2, 0.0, 0),
      Contains("fraction must be in (0, 1], got 0"));
  REQUIRE_THROWS_WITH(
      E::sample_label_fraction(patients, {0, 1}, 2, 0.5, 0),
      Contains("expected 123 labels (one per record), got 2"));
}

TEST_CASE("label efficiency: per-fraction mean, sd and per-seed AUROC", "[eval][label_fractions]") {
  torch::manual_seed(8);
  auto w = torch::randn({8});
  auto tr = planted(200, 8, w, 1.0);
  auto va = planted(100, 8, w, 1.0);
  auto te = planted(200, 8, w, 1.0);
  std::vector<int64_t> patients;
  for (int64_t i = 0; i < 200; ++i) {
    patients.push_back(i / 2); // two records per patient
  }
  auto opts = E::LabelEfficiencyOptions()
                  .fractions({0.1, 1.0})
                  .seeds({0, 1, 2})
                  .probe(E::LinearProbeOptions().l2_grid({1e-3, 1e-1, 10}));
  auto curve = E::label_efficiency(tr.x, tr.y, patients, va.x, va.y, te.x, te.y, opts);
  REQUIRE(curve.size() == 2);
  for (const auto& pt : curve) {
    REQUIRE(pt.auroc.size() == 3);
    REQUIRE(pt.intervals.size() == 3);
    double m = (pt.auroc[0] + pt.auroc[1] + pt.auroc[2]) / 3;
    double v = 0;
    for (double a : pt.auroc) {
      v += (a - m) * (a - m);
    }
    REQUIRE(pt.mean == Approx(m));
    REQUIRE(pt.sd == Approx(std::sqrt(v / 2)));
    for (size_t s = 0; s < 3; ++s) {
      REQUIRE(pt.intervals[s].lower <= pt.auroc[s]);
      REQUIRE(pt.auroc[s] <= pt.intervals[s].upper);
    }
  }
  REQUIRE(curve[0].patients == std::vector<int64_t>{10, 10, 10});
  REQUIRE(curve[0].records == std::vector<int64_t>{20, 20, 20});
  REQUIRE(curve[1].patients == std::vector<int64_t>{100, 100, 100});
  REQUIRE(curve[1].sd < 1e-12); // every seed takes every patient
  REQUIRE(curve[1].mean > 0.9);
  REQUIRE(curve[1].mean >= curve[0].mean);
  // A user-supplied probe sees only the subset's rows.
  std::vector<int64_t> rows_seen;
  E::ProbeScorer mean_scorer =
      [&](const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& xt) {
        rows_seen.push_back(x.size(0));
        auto dir = (x * (y.to(torch::kFloat).unsqueeze(1) * 2 - 1)).mean(0);
        return to_dvec(xt.mv(dir));
      };
  auto c2 = E::label_efficiency(tr.x, tr.y, patients, {}, {}, te.x, te.y, opts, mean_scorer);
  REQUIRE(rows_seen == std::vector<int64_t>{20, 20, 20, 200, 200, 200});
  REQUIRE(c2[1].mean > 0.85);
  REQUIRE_THROWS_WITH(
      E::label_efficiency(tr.x, tr.y, patients, {}, {}, te.x, te.y, opts),
      Contains("give val_x and val_y (or pass a scorer)"));
  REQUIRE_THROWS_WITH(
      E::label_efficiency(
          tr.x, tr.y, patients, va.x, va.y, te.x, torch::zeros({200}, torch::kLong), opts),
      Contains("the test labels need both classes, got 0 positive(s) and 200 negative(s)"));
  REQUIRE_THROWS_WITH(
      E::label_efficiency(tr.x, tr.y, {1, 2}, va.x, va.y, te.x, te.y, opts),
      Contains("expected 200 patient ids (one per training row), got 2"));
}

TEST_CASE(
    "label efficiency: patients and records used, collapsed fractions and fixed subsets",
    "[eval][label_fractions]") {
  // 24 training patients with 1-4 records, 8 of them positive: 1 % (round(0.24) = 0) and 10 %
  // (round(2.4) = 2) both draw one patient per class, the same one for a given seed; 100 % draws
  // every patient whatever the seed.
  torch::manual_seed(5);
  std::vector<int64_t> patients;
  std::vector<int64_t> labels;
  for (int64_t p = 0; p < 24; ++p) {
    for (int64_t r = 0; r <= p % 4; ++r) {
      patients.push_back(1000 + p);
      labels.push_back(p % 3 == 0 ? 1 : 0);
    }
  }
  const auto n = static_cast<int64_t>(patients.size());
  auto ytr = torch::tensor(labels, torch::kLong);
  auto xtr = torch::randn({n, 4}) + ytr.to(torch::kFloat).unsqueeze(1) * 1.5;
  auto yte = torch::tensor(std::vector<int64_t>{0, 1, 0, 1, 0, 1, 0, 0, 1, 0}, torch::kLong);
  auto xte = torch::randn({10, 4}) + yte.to(torch::kFloat).unsqueeze(1) * 1.5;
  E::ProbeScorer mean_scorer =
      [](const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& xt) {
        auto dir = (x * (y.to(torch::kFloat).unsqueeze(1) * 2 - 1)).mean(0);
        return to_dvec(xt.mv(dir));
      };
  const std::vector<uint64_t> seeds = {0, 1, 2, 3, 4};
  auto opts = E::LabelEfficiencyOptions().fractions({0.01, 0.1, 1.0}).seeds(seeds);
  auto curve = E::label_efficiency(xtr, ytr, patients, {}, {}, xte, yte, opts, mean_scorer);
  REQUIRE(curve.size() == 3);
  for (const auto& pt : curve) {
    CHECK(pt.available_patients == 24);
    CHECK(pt.available_records == n);
  }
  // The counts are those of the subsets actually drawn, seed by seed.
  for (size_t s = 0; s < seeds.size(); ++s) {
    auto a = E::sample_label_fraction(patients, labels, 2, 0.01, seeds[s]);
    auto b = E::sample_label_fraction(patients, labels, 2, 0.1, seeds[s]);
    REQUIRE(a.patients == b.patients);
    CHECK(curve[0].patients[s] == 2);
    CHECK(curve[0].records[s] == static_cast<int64_t>(a.indices.size()));
    CHECK(curve[1].records[s] == static_cast<int64_t>(b.indices.size()));
    CHECK(curve[2].patients[s] == 24);
    CHECK(curve[2].records[s] == n);
  }
  CHECK(curve[0].same_patients_as == std::vector<double>{0.1});
  CHECK(curve[1].same_patients_as == std::vector<double>{0.01});
  CHECK(curve[0].same_count_as == std::vector<double>{0.1});
  CHECK(curve[2].same_patients_as.empty());
  CHECK(curve[2].same_count_as.empty());
  CHECK_FALSE(curve[0].fixed_subset); // five seeds, different patients
  CHECK(curve[2].fixed_subset);
  CHECK(curve[2].sd == 0);

  // Into a report: counts per fraction, the collapse flagged, no interval at 100 %.
  medcl::eval::Report report(medcl::eval::ReportOptions().draw_figures(false));
  E::record_label_efficiency(report, "death", "probe", curve);
  const auto doc = report.json();
  INFO(doc.dump(2));
  CHECK(E::validate_report(doc).empty());
  const auto& le = doc.at("evaluation").at("label_efficiency").at("death");
  REQUIRE(le.size() == 3);
  CHECK(le[0].at("metric").as_string() == "AUROC");
  CHECK(le[0].at("seeds") == medcl::Json::array({0, 1, 2, 3, 4}));
  CHECK(le[0].at("patients") == medcl::Json::array({2, 2, 2, 2, 2}));
  CHECK(le[0].at("records") == medcl::Json::array_of(curve[0].records));
  CHECK(le[0].at("available_patients").as_int64() == 24);
  CHECK(le[0].at("available_records").as_int64() == n);
  CHECK(le[0].at("same_patients_as") == medcl::Json::array({0.1}));
  CHECK(le[1].at("same_count_as") == medcl::Json::array({0.01}));
  CHECK_THAT(le[0].at("note").as_string(), Contains("same patients as fraction 0.1"));
  CHECK(le[2].at("interval").is_null());
  CHECK_THAT(
      le[2].at("note").as_string(),
      Contains("every repeat was trained on all 24 training patients"));
  const std::string md = report.markdown();
  CHECK_THAT(md, Contains("| death | probe | AUROC | 0.01 | 2 of 24 (8.3%) |"));
  CHECK_THAT(md, Contains("| death | probe | AUROC | 1 | 24 of 24 (100%) |"));
  CHECK_THAT(md, Contains("**Note:** some requested fractions collapse"));

  // Repeated fractions or seeds are refused before anything is fitted.
  REQUIRE_THROWS_WITH(
      E::label_efficiency(
          xtr, ytr, patients, {}, {}, xte, yte, opts.fractions({0.1, 0.5, 0.1}), mean_scorer),
      Contains("fraction 0.1 is requested twice"));
  REQUIRE_THROWS_WITH(
      E::label_efficiency(
          xtr,
          ytr,
          patients,
          {},
          {},
          xte,
          yte,
          E::LabelEfficiencyOptions().seeds({3, 1, 3}),
          mean_scorer),
      Contains("seed 3 is requested twice"));
  REQUIRE_THROWS_WITH(
      E::label_efficiency(
          xtr,
          ytr,
          patients,
          {},
          {},
          xte,
          yte,
          E::LabelEfficiencyOptions().fractions({0.1, 1.5}),
          mean_scorer),
      Contains("fractions must be in (0, 1], got 1.5"));
}

TEST_CASE(
    "ClinicalEvaluation: the label-efficiency rows carry the patients and records used",
    "[eval][label_fractions]") {
  // 40 patients with 2 records each; a third positive. The training split holds about 24
  // patients: 1 % and 10 % collapse onto one patient per class.
  torch::manual_seed(11);
  E::EvaluationCohort cohort;
  for (int64_t p = 0; p < 40; ++p) {
    for (int r = 0; r < 2; ++r) {
      cohort.patients.push_back(p);
      cohort.labels.push_back(p % 3 == 0 ? 1 : 0);
    }
  }
  auto y = torch::tensor(cohort.labels, torch::kLong).to(torch::kFloat);
  auto z = torch::randn({80, 6}) + y.unsqueeze(1) * 1.5;
  E::ClinicalEvaluation ev(
      cohort,
      E::EvaluationOptions()
          .fraction_seeds({0, 1, 2})
          .bootstrap(20)
          .embedding_map(false)
          .retrieval_examples(0)
          .probe(E::LinearProbeOptions().l2_grid({1e-2, 1})));
  medcl::eval::Report report(medcl::eval::ReportOptions().draw_figures(false));
  ev.describe_data(report);
  auto r = ev.evaluate("probe", z, report, /*analyses=*/false);
  const auto& train = ev.splits().patients[ev.splits().at("train")];
  const auto train_patients = static_cast<int64_t>(train.size());
  const auto train_records =
      static_cast<int64_t>(ev.splits().indices[ev.splits().at("train")].size());
  REQUIRE(r.label_efficiency.size() == 3);
  const auto doc = report.json();
  INFO(doc.dump(2));
  CHECK(E::validate_report(doc).empty());
  const auto& le = doc.at("evaluation").at("label_efficiency").at("outcome");
  REQUIRE(le.size() == 3);
  for (size_t k = 0; k < 3; ++k) {
    INFO(k);
    CHECK(le[k].at("available_patients").as_int64() == train_patients);
    CHECK(le[k].at("available_records").as_int64() == train_records);
    CHECK(le[k].at("patients") == medcl::Json::array_of(r.label_efficiency[k].patients));
    CHECK(le[k].at("records") == medcl::Json::array_of(r.label_efficiency[k].records));
    CHECK(le[k].at("seeds") == medcl::Json::array({0, 1, 2}));
  }
  // 1 % and 10 % of about 24 patients: one patient per class, the same ones.
  CHECK(le[0].at("patients") == medcl::Json::array({2, 2, 2}));
  CHECK(le[0].at("same_patients_as") == medcl::Json::array({0.1}));
  CHECK(le[1].at("same_patients_as") == medcl::Json::array({0.01}));
  // 100 %: every training patient in every repeat: no interval, and why.
  CHECK(le[2].at("fixed_subset").as_bool());
  CHECK(le[2].at("interval").is_null());
  CHECK_THAT(
      le[2].at("note").as_string(),
      Contains("all " + std::to_string(train_patients) + " training patients"));
}
