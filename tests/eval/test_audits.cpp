#include <medcl/augment/tabular.h>
#include <medcl/eval/audits.h>
#include <medcl/eval/metrics.h>
#include <medcl/eval/retrieval.h>

#include <torch/torch.h>
#include "catch.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

using medcl_test::Contains;
namespace E = medcl::eval;
namespace A = medcl::augment;

TEST_CASE("retrieval: recall@K, median rank, neighbours on hand cases", "[eval][retrieval]") {
  // Query 0 = [1, 0] (id 12): similarities to the gallery .995, 0, -1, .707 -> its match is 4th.
  // Query 1 = [0, 1] (id 11): its match [0, 1] is first. Query 2 = [1, 1] (id 10): [.7, .7] is
  // closer than its match [1, .1] -> 2nd.
  auto q = torch::tensor({{1.0, 0.0}, {0.0, 1.0}, {1.0, 1.0}});
  auto g = torch::tensor({{1.0, 0.1}, {0.0, 1.0}, {-1.0, 0.0}, {0.7, 0.7}});
  auto qid = torch::tensor({12, 11, 10}, torch::kLong);
  auto gid = torch::tensor({10, 11, 12, 13}, torch::kLong);
  for (int64_t chunk : {1, 2, 1024}) {
    auto opts = E::RetrievalOptions().chunk(chunk);
    auto r = E::recall_at_k(q, g, qid, gid, {1, 2, 3, 4}, opts);
    REQUIRE(r == std::vector<double>{1.0 / 3, 2.0 / 3, 2.0 / 3, 1.0});
    REQUIRE(E::median_rank(q, g, qid, gid, opts) == 2.0);
  }
  // Ties count against the query: an equally similar item with another id ranks first.
  auto tq = torch::tensor({{1.0, 0.0}});
  auto tg = torch::tensor({{1.0, 0.0}, {2.0, 0.0}});
  REQUIRE(
      E::recall_at_k(
          tq, tg, torch::tensor({1}, torch::kLong), torch::tensor({2, 1}, torch::kLong), {1, 2}) ==
      std::vector<double>{0.0, 1.0});
  // A query without a match misses; the median rank skips it (ranks 1 and 4 -> 2.5).
  auto qid2 = torch::tensor({12, 11, 99}, torch::kLong);
  REQUIRE(E::recall_at_k(q, g, qid2, gid, {4}) == std::vector<double>{2.0 / 3});
  REQUIRE(E::median_rank(q, g, qid2, gid) == 2.5);
  auto nn = E::nearest_neighbours(q, g, 2, E::RetrievalOptions().chunk(2));
  REQUIRE(nn.indices.sizes() == torch::IntArrayRef({3, 2}));
  REQUIRE(nn.indices[0][0].item<int64_t>() == 0);
  REQUIRE(nn.indices[0][1].item<int64_t>() == 3);
  REQUIRE(nn.indices[1][0].item<int64_t>() == 1);
  REQUIRE(nn.indices[2][0].item<int64_t>() == 3);
  REQUIRE(nn.similarities[0][0].item<double>() == Approx(1.0 / std::sqrt(1.01)));
  REQUIRE(nn.similarities[2][0].item<double>() == Approx(1.0));
  REQUIRE(E::nearest_neighbours(q, g, 10).indices.size(1) == 4); // capped at the gallery

  REQUIRE_THROWS_WITH(
      E::recall_at_k(q, g, qid, gid, {0}), Contains("recall_at_k: K must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(
      E::recall_at_k(q, g.slice(1, 0, 1), qid, gid, {1}),
      Contains("query and gallery embedding sizes differ: 2 vs 1"));
  REQUIRE_THROWS_WITH(
      E::recall_at_k(q, g, qid.slice(0, 0, 2), gid, {1}),
      Contains("expected int64 query_ids of shape [3]"));
  REQUIRE_THROWS_WITH(
      E::median_rank(q, g, torch::tensor({7, 8, 9}, torch::kLong), gid),
      Contains("no query id appears among the gallery ids"));
  auto bad = q.clone();
  bad[0][0] = std::nan("");
  REQUIRE_THROWS_WITH(E::nearest_neighbours(bad, g, 1), Contains("embeddings contain NaN or Inf"));
}

TEST_CASE("alignment and uniformity match hand-computed values", "[eval][retrieval]") {
  // Normalised pairs: ([1,0],[0,1]) at squared distance 2, ([0,1],[0,1]) at 0.
  auto z0 = torch::tensor({{1.0, 0.0}, {0.0, 2.0}});
  auto z1 = torch::tensor({{0.0, 1.0}, {0.0, 1.0}});
  REQUIRE(E::alignment(z0, z1) == Approx(1.0));
  REQUIRE(E::alignment(z0, z1, 1.0) == Approx(std::sqrt(2.0) / 2));
  // Three points: squared distances 2, 4, 2.
  auto z = torch::tensor({{1.0, 0.0}, {0.0, 3.0}, {-2.0, 0.0}});
  const double expect = std::log((2 * std::exp(-4.0) + std::exp(-8.0)) / 3);
  REQUIRE(E::uniformity(z) == Approx(expect).epsilon(1e-12));
  REQUIRE(E::uniformity(z, 2.0, 1) == Approx(expect).epsilon(1e-12));
  REQUIRE(E::uniformity(z, 0.5) == Approx(std::log((2 * std::exp(-1.0) + std::exp(-2.0)) / 3)));
  // Random embeddings against a plain double loop, in chunks.
  torch::manual_seed(2);
  auto r = torch::randn({37, 5});
  auto u = r.to(torch::kDouble) / r.to(torch::kDouble).norm(2, 1, true);
  double sum = 0;
  for (int64_t i = 0; i < 37; ++i) {
    for (int64_t j = i + 1; j < 37; ++j) {
      sum += std::exp(-2 * (u[i] - u[j]).pow(2).sum().item<double>());
    }
  }
  REQUIRE(E::uniformity(r, 2.0, 8) == Approx(std::log(sum / (37 * 36 / 2))).epsilon(1e-9));
  REQUIRE_THROWS_WITH(E::uniformity(torch::ones({1, 3})), Contains("N >= 2, got [1, 3]"));
  REQUIRE_THROWS_WITH(E::alignment(z0, z), Contains("of the same shape"));
  REQUIRE_THROWS_WITH(E::alignment(z0, z1, 0), Contains("alpha must be > 0, got 0"));
}

TEST_CASE("subgroup metrics equal the metrics on each subgroup", "[eval][audits]") {
  torch::manual_seed(4);
  const int64_t n = 120;
  auto y = torch::randint(0, 2, {n}, torch::kLong);
  auto p = torch::sigmoid(y.to(torch::kDouble) * 1.5 - 0.75 + torch::randn({n}, torch::kDouble));
  std::vector<int64_t> labels(y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + n);
  std::vector<double> scores(p.data_ptr<double>(), p.data_ptr<double>() + n);
  std::vector<int64_t> groups;
  for (int64_t i = 0; i < n; ++i) {
    groups.push_back(i % 3);
  }
  // Group 2 gets only negatives.
  for (int64_t i = 2; i < n; i += 3) {
    labels[static_cast<size_t>(i)] = 0;
  }
  auto r = E::subgroup_metrics(scores, labels, groups, {"a", "b", "c"});
  REQUIRE(r.groups.size() == 3);
  for (int64_t k = 0; k < 2; ++k) {
    std::vector<double> s;
    std::vector<int64_t> l;
    for (int64_t i = k; i < n; i += 3) {
      s.push_back(scores[static_cast<size_t>(i)]);
      l.push_back(labels[static_cast<size_t>(i)]);
    }
    const auto& gk = r.groups[static_cast<size_t>(k)];
    REQUIRE(gk.n == 40);
    REQUIRE(gk.positives == std::count(l.begin(), l.end(), int64_t{1}));
    REQUIRE(gk.auroc_defined);
    auto iv = E::auroc_delong(s, l);
    REQUIRE(gk.auroc.estimate == Approx(iv.estimate));
    REQUIRE(gk.auroc.lower == Approx(iv.lower));
    REQUIRE(gk.auroc.upper == Approx(iv.upper));
    REQUIRE(gk.auprc == Approx(E::auprc(s, l)));
    REQUIRE(gk.brier == Approx(E::brier_score(s, l)));
  }
  const auto& c = r.groups[2];
  REQUIRE(c.name == "c");
  REQUIRE(!c.auroc_defined);
  REQUIRE_THAT(c.note, Contains("0 positive(s) and 40 negative(s)"));
  REQUIRE(std::isfinite(c.auroc.estimate));
  REQUIRE(std::isfinite(c.brier));
  REQUIRE(r.overall.n == n);
  REQUIRE(r.overall.auroc.estimate == Approx(E::auroc(scores, labels)));
  REQUIRE(r.auroc_gap == Approx(std::abs(r.groups[0].auroc.estimate - r.groups[1].auroc.estimate)));
  REQUIRE_THROWS_WITH(
      E::subgroup_metrics(scores, labels, groups, {"a", "b", "c", "d"}),
      Contains("subgroup 'd' (index 3) has no samples"));
  REQUIRE_THROWS_WITH(
      E::subgroup_metrics(scores, labels, groups, {"a", "b"}),
      Contains("group indices must be in [0, 2), got 2 at position 2"));
  REQUIRE_THROWS_WITH(
      E::subgroup_metrics(scores, {0, 1}, groups, {"a", "b", "c"}),
      Contains("expected 120 labels (one per sample), got 2"));
}

namespace {

// Records of `k` in group order, for per-group references.
template <class T>
std::vector<T> of_group(const std::vector<T>& v, const std::vector<int64_t>& groups, int64_t k) {
  std::vector<T> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (groups[i] == k) {
      out.push_back(v[i]);
    }
  }
  return out;
}

struct FairnessCase {
  std::vector<double> scores;
  std::vector<int64_t> labels, groups, patients;
};

// Three groups: "good" (a sharp model), "poor" (a weak one), "tiny" (3 positives); every patient
// has `copies` identical records.
FairnessCase fairness_case(int64_t copies) {
  torch::manual_seed(21);
  FairnessCase c;
  const int64_t per_group[3] = {150, 150, 12};
  const double signal[3] = {2.5, 0.4, 1.0};
  int64_t patient = 0;
  for (int64_t g = 0; g < 3; ++g) {
    auto y = torch::randint(0, 2, {per_group[g]}, torch::kLong);
    if (g == 2) {
      y = torch::zeros({per_group[g]}, torch::kLong);
      y.slice(0, 0, 3).fill_(1);
    }
    auto p = torch::sigmoid(
        (y.to(torch::kDouble) - 0.5) * signal[g] +
        0.7 * torch::randn({per_group[g]}, torch::kDouble));
    for (int64_t i = 0; i < per_group[g]; ++i, ++patient) {
      for (int64_t k = 0; k < copies; ++k) {
        c.scores.push_back(p[i].item<double>());
        c.labels.push_back(y[i].item<int64_t>());
        c.groups.push_back(g);
        c.patients.push_back(patient);
      }
    }
  }
  return c;
}

} // namespace

TEST_CASE(
    "threshold_at_specificity is sensitivity_at_specificity's operating point",
    "[eval][audits]") {
  torch::manual_seed(5);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t n = 30 + trial;
    auto y = torch::randint(0, 2, {n}, torch::kLong);
    y[0] = 0;
    y[1] = 1;
    // Scores on a coarse grid: many ties.
    auto p = torch::round(torch::rand({n}, torch::kDouble) * 8) / 8;
    std::vector<int64_t> labels(y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + n);
    std::vector<double> scores(p.data_ptr<double>(), p.data_ptr<double>() + n);
    for (double spec : {0.0, 0.5, 0.8, 0.9, 1.0}) {
      const double t = E::threshold_at_specificity(scores, labels, spec);
      const auto op = E::operating_point(scores, labels, t);
      INFO("trial " << trial << ", specificity " << spec << ", threshold " << t);
      REQUIRE(op.specificity >= spec);
      REQUIRE(op.sensitivity == E::sensitivity_at_specificity(scores, labels, spec));
      // The most permissive: the next lower distinct score misses the specificity.
      double below = -1;
      for (double s : scores) {
        if (s < t) {
          below = std::max(below, s);
        }
      }
      if (below >= 0) {
        REQUIRE(E::operating_point(scores, labels, below).specificity < spec);
      }
    }
  }
  // Specificity 1 with a negative scoring highest: nothing positive, just above the largest score.
  const double t = E::threshold_at_specificity({0.2, 0.9, 0.5}, {1, 0, 1}, 1.0);
  REQUIRE(t > 0.9);
  REQUIRE(E::operating_point({0.2, 0.9, 0.5}, {1, 0, 1}, t).true_positives == 0);
  const auto op = E::operating_point({0.1, 0.6, 0.6, 0.3}, {0, 1, 0, 1}, 0.6);
  CHECK(op.true_positives == 1);
  CHECK(op.false_negatives == 1);
  CHECK(op.false_positives == 1);
  CHECK(op.true_negatives == 1);
  CHECK(!E::operating_point({0.1, 0.2}, {0, 0}, 0.5).has_sensitivity);
  REQUIRE_THROWS_WITH(
      E::threshold_at_specificity({0.1, 0.2}, {0, 1}, 1.5),
      Contains("specificity must be in [0, 1]"));
  REQUIRE_THROWS_WITH(
      E::threshold_at_specificity({0.1, 0.2}, {0, 0}, 0.9), Contains("threshold_at_specificity"));
  REQUIRE_THROWS_WITH(
      E::operating_point({0.1, 0.2}, {0, 1}, std::nan("")), Contains("threshold is not finite"));
}

TEST_CASE("subgroup fairness: per-group metrics, gaps and too-small groups", "[eval][audits]") {
  const auto c = fairness_case(1);
  const double t = 0.55;
  auto audit = [&](uint64_t seed) {
    return E::subgroup_fairness(
        c.scores,
        c.labels,
        c.groups,
        {"good", "poor", "tiny", "absent"},
        c.patients,
        E::FairnessOptions().threshold(t).bootstrap(200).seed(seed));
  };
  const auto f = audit(3);
  REQUIRE(f.groups.size() == 4);
  REQUIRE(f.threshold == t);
  for (int64_t k = 0; k < 2; ++k) {
    const auto s = of_group(c.scores, c.groups, k);
    const auto l = of_group(c.labels, c.groups, k);
    const auto& g = f.groups[static_cast<size_t>(k)];
    INFO(g.name);
    REQUIRE(g.estimable);
    REQUIRE(g.n == 150);
    REQUIRE(g.patients == 150);
    const auto a = E::auroc_delong(s, l);
    REQUIRE(g.auroc.estimate == a.estimate);
    REQUIRE(g.auroc.lower == a.lower);
    REQUIRE(g.has_calibration);
    const auto cal = E::logistic_calibration(s, l);
    REQUIRE(g.calibration.slope.estimate == cal.slope.estimate);
    REQUIRE(g.calibration.intercept.upper == cal.intercept.upper);
    REQUIRE(g.calibration.in_the_large.estimate == cal.in_the_large.estimate);
    const auto op = E::operating_point(s, l, t);
    REQUIRE(g.operating_point.true_positives == op.true_positives);
    REQUIRE(g.sensitivity.estimate == op.sensitivity);
    REQUIRE(g.specificity.estimate == op.specificity);
    REQUIRE(g.sensitivity.lower <= g.sensitivity.estimate);
    REQUIRE(g.sensitivity.upper >= g.sensitivity.estimate);
    REQUIRE(g.sensitivity.lower < g.sensitivity.upper);
  }
  // Too small and absent groups are named, not dropped, and take no part in the gaps.
  REQUIRE(!f.groups[2].estimable);
  REQUIRE_THAT(f.groups[2].note, Contains("3 positive(s) and 9 negative(s); at least 10 and 10"));
  REQUIRE(!f.groups[3].estimable);
  REQUIRE(f.groups[3].n == 0);
  REQUIRE_THAT(f.groups[3].note, Contains("no records"));
  REQUIRE(f.gaps.size() == 6);
  const std::vector<std::string> metrics = {
      "AUROC",
      "calibration slope",
      "calibration intercept",
      "calibration-in-the-large",
      "sensitivity",
      "specificity"};
  for (size_t j = 0; j < metrics.size(); ++j) {
    const auto& gap = f.gaps[j];
    INFO(gap.metric);
    REQUIRE(gap.metric == metrics[j]);
    REQUIRE(gap.defined);
    REQUIRE(gap.has_interval);
    REQUIRE(gap.gap.lower <= gap.gap.estimate);
    REQUIRE(gap.gap.estimate <= gap.gap.upper);
    REQUIRE(gap.replicates >= 100);
    REQUIRE(gap.replicates <= 200);
  }
  // The sharp model's group discriminates better, by the difference of the two groups' AUROC,
  // and the interval of that gap stays clear of 0.
  const auto& auroc_gap = f.gaps[0];
  REQUIRE(auroc_gap.highest == "good");
  REQUIRE(auroc_gap.lowest == "poor");
  REQUIRE(auroc_gap.gap.estimate == f.groups[0].auroc.estimate - f.groups[1].auroc.estimate);
  REQUIRE(auroc_gap.gap.lower > 0.1);
  const double sens_gap =
      std::abs(f.groups[0].sensitivity.estimate - f.groups[1].sensitivity.estimate);
  REQUIRE(f.gaps[4].gap.estimate == Approx(sens_gap).margin(1e-15));

  // Seeded: the same call gives the same intervals; another seed other ones.
  const auto again = audit(3);
  REQUIRE(again.gaps[0].gap.lower == auroc_gap.gap.lower);
  const auto other = audit(4);
  REQUIRE(other.gaps[0].gap.lower != auroc_gap.gap.lower);

  // One estimable group ("good"; "tiny" too small): no gap, and the reason.
  FairnessCase two;
  for (size_t i = 0; i < c.scores.size(); ++i) {
    if (c.groups[i] != 1) {
      two.scores.push_back(c.scores[i]);
      two.labels.push_back(c.labels[i]);
      two.groups.push_back(c.groups[i] == 2 ? 1 : 0);
      two.patients.push_back(c.patients[i]);
    }
  }
  const auto one = E::subgroup_fairness(
      two.scores, two.labels, two.groups, {"good", "tiny"}, two.patients, E::FairnessOptions());
  REQUIRE(one.groups[0].estimable);
  REQUIRE(!one.groups[1].estimable);
  for (const auto& gap : one.gaps) {
    REQUIRE(!gap.defined);
    REQUIRE_THAT(gap.note, Contains("estimated in 1 group(s); a gap needs two"));
  }
}

TEST_CASE("subgroup fairness: groups scored alike show no gap", "[eval][audits]") {
  // One model, one distribution, two groups: every gap's interval includes 0 (the interval is of
  // the signed difference between the two groups named, not of an absolute gap that cannot be 0).
  torch::manual_seed(8);
  const int64_t n = 600;
  auto y = torch::randint(0, 2, {n}, torch::kLong);
  auto p = torch::sigmoid((y.to(torch::kDouble) - 0.5) * 1.5 + torch::randn({n}, torch::kDouble));
  std::vector<double> scores(p.data_ptr<double>(), p.data_ptr<double>() + n);
  std::vector<int64_t> labels(y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + n);
  std::vector<int64_t> groups, patients;
  for (int64_t i = 0; i < n; ++i) {
    groups.push_back(i % 2);
    patients.push_back(i);
  }
  const auto f = E::subgroup_fairness(
      scores, labels, groups, {"a", "b"}, patients, E::FairnessOptions().bootstrap(300).seed(1));
  for (const auto& gap : f.gaps) {
    INFO(
        gap.metric << " " << gap.gap.estimate << " [" << gap.gap.lower << ", " << gap.gap.upper
                   << "]");
    REQUIRE(gap.defined);
    REQUIRE(gap.gap.estimate >= 0);
    REQUIRE(gap.gap.lower < 0);
    REQUIRE(gap.gap.upper > 0);
  }
}

TEST_CASE("subgroup fairness resamples patients, not records", "[eval][audits]") {
  // Every patient's record four times: the same patients are drawn with the same seed, each with
  // its four copies, so every estimate and interval equals the one-record case. A bootstrap of
  // records would draw four times as many units and differ.
  const auto one = fairness_case(1);
  const auto four = fairness_case(4);
  const auto opts =
      E::FairnessOptions().threshold(0.5).bootstrap(100).seed(9).min_positives(3).min_negatives(3);
  const std::vector<std::string> names = {"good", "poor", "tiny"};
  const auto a =
      E::subgroup_fairness(one.scores, one.labels, one.groups, names, one.patients, opts);
  const auto b =
      E::subgroup_fairness(four.scores, four.labels, four.groups, names, four.patients, opts);
  REQUIRE(b.groups[0].n == 600);
  REQUIRE(b.groups[0].patients == 150);
  REQUIRE(a.groups[2].estimable);
  REQUIRE(b.groups[2].estimable);
  for (size_t j = 0; j < a.gaps.size(); ++j) {
    INFO(a.gaps[j].metric);
    REQUIRE(a.gaps[j].defined == b.gaps[j].defined);
    REQUIRE(a.gaps[j].replicates == b.gaps[j].replicates);
    REQUIRE(a.gaps[j].gap.estimate == Approx(b.gaps[j].gap.estimate).margin(1e-9));
    REQUIRE(a.gaps[j].gap.lower == Approx(b.gaps[j].gap.lower).margin(1e-9));
    REQUIRE(a.gaps[j].gap.upper == Approx(b.gaps[j].gap.upper).margin(1e-9));
  }
  REQUIRE(a.groups[0].sensitivity.lower == Approx(b.groups[0].sensitivity.lower).margin(1e-12));
  REQUIRE(a.groups[1].specificity.upper == Approx(b.groups[1].specificity.upper).margin(1e-12));
}

TEST_CASE("subgroup fairness refuses bad input, naming it", "[eval][audits]") {
  const std::vector<double> s = {0.1, 0.7, 0.4, 0.9};
  const std::vector<int64_t> y = {0, 1, 0, 1}, g = {0, 0, 1, 1}, pt = {1, 2, 3, 4};
  const std::vector<std::string> names = {"a", "b"};
  REQUIRE_THROWS_WITH(E::subgroup_fairness(s, {0, 1}, g, names, pt), Contains("expected 4 labels"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness(s, y, g, names, {1, 2}), Contains("expected 4 patient ids"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness(s, y, {0, 0, 1, 2}, names, pt),
      Contains("group indices must be in [0, 2), got 2 at position 3"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness({0.1, 1.7, 0.4, 0.9}, y, g, names, pt),
      Contains("probabilities in [0, 1], got 1.7 at position 1"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness({0.1, std::nan(""), 0.4, 0.9}, y, g, names, pt),
      Contains("at position 1"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness(s, {0, 2, 0, 1}, g, names, pt), Contains("labels must be 0 or 1"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness(s, y, g, names, pt, E::FairnessOptions().threshold(std::nan(""))),
      Contains("threshold is not finite"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness(s, y, g, names, pt, E::FairnessOptions().min_positives(1)),
      Contains("min_positives and min_negatives must be >= 2"));
  REQUIRE_THROWS_WITH(
      E::subgroup_fairness(s, y, g, names, pt, E::FairnessOptions().bootstrap(5)),
      Contains("bootstrap must be >= 10"));
  REQUIRE_THROWS_WITH(E::subgroup_fairness({}, {}, {}, names, {}), Contains("no records"));
  // Every group too small: a report that says so, no error.
  const auto f = E::subgroup_fairness(s, y, g, names, pt);
  REQUIRE(!f.groups[0].estimable);
  REQUIRE(!f.gaps[0].defined);
}

TEST_CASE("external validation reveals a planted site shift", "[eval][audits]") {
  torch::manual_seed(6);
  // Three sites, 60 patients each with two records. Feature 0 carries the label weakly everywhere;
  // feature 1 is a shortcut that tracks the label at sites 0 and 1 only.
  std::vector<int64_t> labels;
  std::vector<int64_t> sites;
  std::vector<int64_t> patients;
  std::vector<torch::Tensor> rows;
  for (int64_t s = 0; s < 3; ++s) {
    for (int64_t p = 0; p < 60; ++p) {
      const int64_t y = p % 2;
      for (int64_t r = 0; r < 2; ++r) {
        auto x = torch::randn({4});
        x[0] += 0.8 * static_cast<double>(y);
        x[1] = s < 2 ? 3.0 * static_cast<double>(y) + 0.3 * torch::randn({}).item<double>()
                     : torch::randn({}).item<double>();
        rows.push_back(x);
        labels.push_back(y);
        sites.push_back(10 + s);
        patients.push_back(s * 1000 + p);
      }
    }
  }
  auto z = torch::stack(rows);
  auto opts =
      E::ExternalValidationOptions().probe(E::LinearProbeOptions().l2_grid({1e-3, 1e-1, 10}));
  auto r = E::external_validation(z, labels, sites, patients, opts);
  REQUIRE(r.sites.size() == 3);
  REQUIRE(r.sites[2].name == "site 12");
  REQUIRE(r.sites[2].site == 12);
  for (const auto& v : r.sites) {
    REQUIRE(v.test_records == 120);
    REQUIRE(v.train_records + v.validation_records == 240);
    REQUIRE(v.auroc_defined);
    REQUIRE(v.test_positives == 60);
    REQUIRE(v.brier >= 0);
    REQUIRE(v.ece >= 0);
  }
  INFO("internal " << r.internal.auroc.estimate << ", site 12 " << r.sites[2].auroc.estimate);
  REQUIRE(r.internal.name == "internal");
  REQUIRE(r.internal.auroc.estimate > 0.85);
  REQUIRE(r.sites[0].auroc.estimate > 0.9);
  REQUIRE(r.sites[2].auroc.estimate < r.internal.auroc.estimate - 0.1);
  REQUIRE(r.sites[2].brier > r.sites[0].brier);
  REQUIRE(r.auroc_drop > 0);
  REQUIRE(
      r.internal.train_records + r.internal.validation_records + r.internal.test_records == 360);

  auto shared = patients;
  shared[0] = 1000; // a site-10 record of a site-11 patient
  REQUIRE_THROWS_WITH(
      E::external_validation(z, labels, sites, shared, opts),
      Contains("patient 1000 has records at sites"));
  std::vector<int64_t> one_site(labels.size(), 1);
  REQUIRE_THROWS_WITH(
      E::external_validation(z, labels, one_site, patients, opts),
      Contains("needs at least two sites, got 1"));
  auto three = labels;
  three[5] = 2;
  REQUIRE_THROWS_WITH(
      E::external_validation(z, three, sites, patients, opts),
      Contains("labels must be 0 or 1, got 2 at position 5"));
}

TEST_CASE("site audit: strong with a planted site offset, low without", "[eval][audits]") {
  torch::manual_seed(9);
  std::vector<int64_t> sites;
  std::vector<int64_t> patients;
  for (int64_t p = 0; p < 90; ++p) {
    for (int64_t r = 0; r < 2; ++r) {
      sites.push_back(p % 3);
      patients.push_back(p);
    }
  }
  auto base = torch::randn({180, 8});
  auto offset = torch::zeros({180, 8});
  for (int64_t i = 0; i < 180; ++i) {
    offset[i][sites[static_cast<size_t>(i)]] = 3.0;
  }
  auto confounded = E::site_audit(base + offset, sites, patients);
  INFO(confounded.verdict);
  REQUIRE(confounded.site_ids == std::vector<int64_t>{0, 1, 2});
  REQUIRE(confounded.macro_auroc > 0.9);
  REQUIRE(confounded.balanced_accuracy > 0.8);
  REQUIRE(confounded.chance == Approx(1.0 / 3));
  REQUIRE(confounded.level == "strong");
  REQUIRE_THAT(confounded.verdict, Contains("strong site signal"));
  REQUIRE(confounded.per_site_auroc.size() == 3);
  auto clean = E::site_audit(base, sites, patients, E::SiteAuditOptions().folds(3));
  INFO(clean.verdict);
  REQUIRE(std::abs(clean.macro_auroc - 0.5) < 0.1);
  REQUIRE(std::abs(clean.balanced_accuracy - 1.0 / 3) < 0.12);
  REQUIRE(clean.level == "low");
  REQUIRE(clean.folds == 3);
  REQUIRE_THROWS_WITH(
      E::site_audit(base, std::vector<int64_t>(180, 0), patients),
      Contains("needs at least two sites, got 1"));
  REQUIRE_THROWS_WITH(
      E::site_audit(base.slice(0, 0, 4), {0, 1, 0, 1}, {1, 1, 2, 2}),
      Contains("needs at least as many patients as folds, got 2 patient(s) for 5 folds"));
  REQUIRE_THROWS_WITH(
      E::site_audit(base, sites, patients, E::SiteAuditOptions().folds(1)),
      Contains("folds must be >= 2, got 1"));
}

TEST_CASE(
    "invariance audit flags augmentations that move the embedding more than a diagnosis",
    "[eval][audits]") {
  torch::manual_seed(12);
  // Two classes whose embeddings have cosine ~0.6; the identity encoder.
  const int64_t b = 40;
  auto y = torch::arange(b) % 2;
  auto c0 = torch::tensor({3.0, 3.0, 1.0, 1.0});
  auto c1 = torch::tensor({1.0, 1.0, 3.0, 3.0});
  auto values = torch::where(y.unsqueeze(1).eq(0), c0.expand({b, 4}), c1.expand({b, 4})) +
      0.1 * torch::randn({b, 4});
  A::Batch batch(values, torch::ones({b, 4}, torch::kBool));
  std::vector<int64_t> labels(b);
  for (int64_t i = 0; i < b; ++i) {
    labels[static_cast<size_t>(i)] = i % 2;
  }
  auto encoder = [](const A::Batch& x) { return x.values; };
  std::vector<A::TransformPtr> transforms{
      std::make_shared<A::FeatureNoise>(torch::ones({4}), 0.05),
      std::make_shared<A::FeatureNoise>(torch::ones({4}), 20.0)};
  auto r = E::invariance_audit(encoder, A::Modality::Tabular, transforms, batch, labels, 3, 2);
  // Pair cosines against a plain loop.
  auto u = values.to(torch::kDouble) / values.to(torch::kDouble).norm(2, 1, true);
  double same = 0;
  double diff = 0;
  int64_t ns = 0;
  int64_t nd = 0;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = i + 1; j < b; ++j) {
      const double c = (u[i] * u[j]).sum().item<double>();
      if (labels[static_cast<size_t>(i)] == labels[static_cast<size_t>(j)]) {
        same += c;
        ++ns;
      } else {
        diff += c;
        ++nd;
      }
    }
  }
  REQUIRE(r.same_label_pairs == ns);
  REQUIRE(r.different_label_pairs == nd);
  REQUIRE(r.same_label_cosine == Approx(same / ns));
  REQUIRE(r.different_label_cosine == Approx(diff / nd));
  REQUIRE(r.transforms.size() == 2);
  REQUIRE(r.transforms[0].samples == 2 * b);
  REQUIRE(!r.transforms[0].flagged);
  REQUIRE(r.transforms[0].margin > 0.3);
  REQUIRE(r.transforms[1].flagged);
  REQUIRE(r.transforms[1].margin == Approx(r.transforms[1].mean_cosine - r.different_label_cosine));
  REQUIRE(r.flagged == std::vector<std::string>{"feature_noise"});
  REQUIRE_THROWS_WITH(
      E::invariance_audit(
          encoder, A::Modality::Tabular, transforms, batch, std::vector<int64_t>(b, 1), 3),
      Contains("needs samples with at least two different labels"));
  REQUIRE_THROWS_WITH(
      E::invariance_audit(encoder, A::Modality::Tabular, transforms, batch, {0, 1}, 3),
      Contains("expected 40 labels (one per sample), got 2"));
}

TEST_CASE("PCA recovers a planted plane", "[eval][audits]") {
  torch::manual_seed(13);
  auto basis = std::get<0>(torch::linalg_qr(torch::randn({6, 2}, torch::kDouble)));
  auto u = basis.select(1, 0);
  auto v = basis.select(1, 1);
  auto a = torch::randn({200, 1}, torch::kDouble) * 3;
  auto c = torch::randn({200, 1}, torch::kDouble);
  auto x =
      a * u.unsqueeze(0) + c * v.unsqueeze(0) + 0.01 * torch::randn({200, 6}, torch::kDouble) + 5;
  auto p = E::pca_2d(x);
  REQUIRE(p.pc1.size() == 200);
  REQUIRE(p.components.sizes() == torch::IntArrayRef({2, 6}));
  REQUIRE(std::abs(p.components[0].dot(u).item<double>()) > 0.999);
  REQUIRE(std::abs(p.components[1].dot(v).item<double>()) > 0.999);
  REQUIRE(p.explained_variance_ratio[0] > p.explained_variance_ratio[1]);
  REQUIRE(p.explained_variance_ratio[0] + p.explained_variance_ratio[1] > 0.999);
  REQUIRE(p.explained_variance_ratio[0] == Approx(9.0 / 10).margin(0.05));
  // Sign convention: each component's largest-magnitude entry is positive.
  for (int64_t k = 0; k < 2; ++k) {
    auto row = p.components[k];
    REQUIRE(row[row.abs().argmax().item<int64_t>()].item<double>() > 0);
  }
  // Coordinates are the centred rows on the components.
  auto centred = x - x.mean(0);
  REQUIRE(p.pc1[7] == Approx(centred[7].dot(p.components[0]).item<double>()));
  // N < D (Gram path) agrees with the singular values.
  auto w = torch::randn({5, 12}, torch::kDouble);
  auto q = E::pca_2d(w);
  auto sv = torch::linalg_svdvals(w - w.mean(0)).pow(2);
  REQUIRE(q.explained_variance_ratio[0] == Approx((sv[0] / sv.sum()).item<double>()));
  REQUIRE(q.explained_variance_ratio[1] == Approx((sv[1] / sv.sum()).item<double>()));
  REQUIRE(std::abs(q.components[0].norm().item<double>() - 1) < 1e-9);
  REQUIRE(std::abs(q.components[0].dot(q.components[1]).item<double>()) < 1e-9);
  REQUIRE_THROWS_WITH(E::pca_2d(torch::ones({4, 3})), Contains("zero variance"));
  REQUIRE_THROWS_WITH(E::pca_2d(torch::ones({4, 1})), Contains("N >= 2 and D >= 2, got [4, 1]"));
}
