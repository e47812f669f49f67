#include <medcl/eval/metrics.h>

#include <torch/torch.h>
#include "catch.h"

#include <cmath>
#include <vector>

using medcl_test::Contains;
namespace E = medcl::eval;

namespace {

double psi(double x, double y) {
  return x > y ? 1.0 : (x == y ? 0.5 : 0.0);
}

// Independent DeLong: placements by plain loops over all positive-negative pairs.
void delong_loops(
    const std::vector<std::vector<double>>& s,
    const std::vector<int64_t>& y,
    std::vector<double>* auc,
    std::vector<std::vector<double>>* cov) {
  std::vector<size_t> pos, neg;
  for (size_t i = 0; i < y.size(); ++i)
    (y[i] ? pos : neg).push_back(i);
  const double m = static_cast<double>(pos.size()), n = static_cast<double>(neg.size());
  const size_t k = s.size();
  std::vector<std::vector<double>> v10(k), v01(k);
  auc->assign(k, 0);
  for (size_t r = 0; r < k; ++r) {
    for (size_t i : pos) {
      double acc = 0;
      for (size_t j : neg)
        acc += psi(s[r][i], s[r][j]);
      v10[r].push_back(acc / n);
      (*auc)[r] += acc / (m * n);
    }
    for (size_t j : neg) {
      double acc = 0;
      for (size_t i : pos)
        acc += psi(s[r][i], s[r][j]);
      v01[r].push_back(acc / m);
    }
  }
  auto covar = [](const std::vector<double>& a, const std::vector<double>& b) {
    double ma = 0, mb = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      ma += a[i];
      mb += b[i];
    }
    ma /= a.size();
    mb /= b.size();
    double c = 0;
    for (size_t i = 0; i < a.size(); ++i)
      c += (a[i] - ma) * (b[i] - mb);
    return c / (a.size() - 1);
  };
  cov->assign(k, std::vector<double>(k));
  for (size_t a = 0; a < k; ++a)
    for (size_t b = 0; b < k; ++b)
      (*cov)[a][b] = covar(v10[a], v10[b]) / m + covar(v01[a], v01[b]) / n;
}

} // namespace

TEST_CASE("AUROC equals the Mann-Whitney count, ties counting one half", "[eval][metrics]") {
  torch::manual_seed(111);
  for (int trial = 0; trial < 5; ++trial) {
    auto s = (torch::randint(0, 6, {40}).to(torch::kDouble) + torch::randn({40}) * (trial % 2))
                 .contiguous();
    std::vector<double> scores(s.data_ptr<double>(), s.data_ptr<double>() + 40);
    std::vector<int64_t> labels;
    for (int i = 0; i < 40; ++i)
      labels.push_back((i * 7 + trial) % 3 == 0);
    double u = 0, pairs = 0;
    for (size_t i = 0; i < 40; ++i)
      for (size_t j = 0; j < 40; ++j)
        if (labels[i] == 1 && labels[j] == 0) {
          u += psi(scores[i], scores[j]);
          pairs += 1;
        }
    REQUIRE(E::auroc(scores, labels) == Approx(u / pairs).epsilon(1e-12));
  }
  REQUIRE(E::auroc({0.1, 0.9}, {0, 1}) == 1.0);
  REQUIRE(E::auroc({0.9, 0.1}, {0, 1}) == 0.0);
  REQUIRE(E::auroc({0.5, 0.5}, {0, 1}) == 0.5);
}

TEST_CASE(
    "DeLong intervals and the paired test equal an independent computation",
    "[eval][metrics]") {
  torch::manual_seed(112);
  const int n = 60;
  std::vector<int64_t> y;
  std::vector<double> a, b;
  for (int i = 0; i < n; ++i) {
    y.push_back(i % 3 == 0);
    a.push_back(y.back() * 1.0 + torch::randn({1}).item<double>());
    b.push_back(y.back() * 0.5 + std::round(torch::randn({1}).item<double>() * 2) / 2); // with ties
  }
  std::vector<double> auc;
  std::vector<std::vector<double>> cov;
  delong_loops({a, b}, y, &auc, &cov);
  auto ci = E::auroc_delong(a, y, 0.95);
  const double z = 1.959963984540054;
  REQUIRE(ci.estimate == Approx(auc[0]).epsilon(1e-12));
  REQUIRE(ci.lower == Approx(auc[0] - z * std::sqrt(cov[0][0])).epsilon(1e-9));
  REQUIRE(ci.upper == Approx(std::min(1.0, auc[0] + z * std::sqrt(cov[0][0]))).epsilon(1e-9));
  REQUIRE(ci.method == "DeLong");
  auto cmp = E::compare_auroc_delong(a, b, y);
  const double sd = std::sqrt(cov[0][0] + cov[1][1] - 2 * cov[0][1]);
  REQUIRE(cmp.difference.estimate == Approx(auc[0] - auc[1]).epsilon(1e-12));
  REQUIRE(cmp.z == Approx((auc[0] - auc[1]) / sd).epsilon(1e-9));
  REQUIRE(cmp.p_value == Approx(std::erfc(std::abs(cmp.z) / std::sqrt(2.0))).epsilon(1e-12));
  // A 90% interval is narrower; a model compared with itself differs by nothing.
  auto ci90 = E::auroc_delong(a, y, 0.90);
  REQUIRE(ci90.upper - ci90.lower < ci.upper - ci.lower);
  auto same = E::compare_auroc_delong(a, a, y);
  REQUIRE(same.difference.estimate == 0.0);
  REQUIRE(same.p_value == 1.0);
  // Perfect separation: AUROC 1 with no spread.
  auto perfect = E::auroc_delong({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1});
  REQUIRE(perfect.estimate == 1.0);
  REQUIRE(perfect.lower == 1.0);
}

TEST_CASE(
    "AUPRC, sensitivity at specificity, Brier, calibration, C-index and F1 on hand-computed cases",
    "[eval][metrics]") {
  // AP = 0.5 * 1 + 0.5 * 2/3.
  REQUIRE(
      E::auprc({0.9, 0.8, 0.7, 0.6}, {1, 0, 1, 0}) == Approx(0.5 + 0.5 * 2.0 / 3.0).epsilon(1e-12));
  REQUIRE(E::auprc({0.9, 0.8, 0.7, 0.6}, {1, 1, 0, 0}) == Approx(1.0));
  REQUIRE(E::sensitivity_at_specificity({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}, 0.5) == Approx(1.0));
  REQUIRE(E::sensitivity_at_specificity({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}, 1.0) == Approx(0.5));
  REQUIRE(E::brier_score({0.8, 0.3}, {1, 0}) == Approx(0.065).epsilon(1e-12));
  auto cal = E::calibration({0.1, 0.1, 0.9, 0.9}, {0, 1, 1, 1}, 10);
  REQUIRE(cal.ece == Approx(0.25).epsilon(1e-12));
  REQUIRE(cal.count == std::vector<int64_t>{2, 2});
  REQUIRE(cal.observed_rate[0] == Approx(0.5));
  REQUIRE(cal.mean_probability[1] == Approx(0.9));
  REQUIRE(cal.bin_lower[1] == Approx(0.9));
  REQUIRE(E::c_index({1, 2, 3}, {1, 1, 0}, {3, 2, 1}) == Approx(1.0));
  REQUIRE(E::c_index({1, 2, 3}, {1, 1, 0}, {1, 2, 3}) == Approx(0.0));
  REQUIRE(E::c_index({1, 2, 3}, {1, 1, 0}, {1, 1, 1}) == Approx(0.5));
  // Censored subject 0 (time 1) is comparable to nobody as the earlier one.
  REQUIRE(E::c_index({1, 2, 3}, {0, 1, 0}, {0, 2, 1}) == Approx(1.0));
  // Classes 0, 1, 2: F1 = 1, 2/3, 2/3 -> mean 7/9.
  REQUIRE(
      E::macro_f1({0, 1, 1, 2}, {0, 1, 2, 2}) ==
      Approx((1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).epsilon(1e-12));
}

TEST_CASE("metrics refuse undefined or malformed input clearly", "[eval][metrics][errors]") {
  REQUIRE_THROWS_WITH(
      E::auroc({0.1, 0.2}, {1, 1}),
      Contains("needs both classes") && Contains("2 positive(s) and 0 negative(s)"));
  REQUIRE_THROWS_WITH(E::auroc({0.1, std::nan("")}, {0, 1}), Contains("score 1 is not finite"));
  REQUIRE_THROWS_WITH(E::auroc({0.1, 0.2, 0.3}, {0, 1}), Contains("3 scores but 2 labels"));
  REQUIRE_THROWS_WITH(E::auroc({0.1, 0.2}, {0, 2}), Contains("labels must be 0 or 1"));
  REQUIRE_THROWS_WITH(
      E::auroc_delong({0.1, 0.2}, {0, 1}, 1.5), Contains("level must be in (0, 1)"));
  // One case of a class: DeLong's variance is undefined (pROC: NA), not 0.
  CHECK_THROWS_WITH(
      E::auroc_delong({0.9, 0.3, 0.5}, {1, 0, 0}),
      Contains("needs at least two positives and two negatives, got 1 and 2"));
  CHECK_THROWS_WITH(
      E::compare_auroc_delong({0.9, 0.3, 0.5}, {0.2, 0.3, 0.5}, {1, 0, 0}),
      Contains("compare_auroc_delong: DeLong's variance needs at least two"));
  CHECK(E::auroc({0.9, 0.3, 0.5}, {1, 0, 0}) == 1.0);
  REQUIRE_THROWS_WITH(E::brier_score({1.2}, {1}), Contains("outside [0, 1]"));
  REQUIRE_THROWS_WITH(E::calibration({0.2}, {1}, 0), Contains("bins must be >= 1"));
  REQUIRE_THROWS_WITH(E::c_index({1, 2}, {0, 0}, {1, 2}), Contains("no comparable pair"));
  REQUIRE_THROWS_WITH(E::c_index({1, 2}, {1}, {1, 2}), Contains("equal lengths"));
  REQUIRE_THROWS_WITH(E::macro_f1({1}, {}), Contains("no labels"));
  REQUIRE_THROWS_WITH(E::auprc({}, {}), Contains("no scores"));
}

TEST_CASE("student_t_quantile agrees with R's qt and mean_interval uses it", "[eval][metrics]") {
  // R 4: options(digits = 17); qt(p, df).
  struct Case {
    double p, df, r;
  };
  const Case cases[] = {
      {0.975, 1, 1.2706204736174694e+01},
      {0.975, 2, 4.3026527297494619e+00},
      {0.975, 30, 2.0422724563012378e+00},
      {0.975, 100, 1.9839715185235516e+00},
      {0.95, 5, 2.0150483733330224e+00},
      {0.995, 3.5, 5.0857022230912561e+00},
      {0.025, 7, -2.3646242515927844e+00},
      {0.9999999, 1, 3.1830988635132448e+06},
  };
  for (const auto& c : cases) {
    INFO("p = " << c.p << ", df = " << c.df);
    CHECK(medcl::eval::student_t_quantile(c.p, c.df) == Approx(c.r).epsilon(1e-12));
  }
  CHECK(medcl::eval::student_t_quantile(0.5, 4) == 0.0);
  const auto iv = medcl::eval::mean_interval({0.70, 0.74, 0.72});
  const double half = 4.3026527297494619 * 0.02 / std::sqrt(3.0);
  CHECK(iv.estimate == Approx(0.72).epsilon(1e-14));
  CHECK(iv.lower == Approx(0.72 - half).epsilon(1e-12));
  CHECK(iv.upper == Approx(0.72 + half).epsilon(1e-12));
  CHECK(iv.method == "t interval of the mean over 3 values");
  REQUIRE_THROWS_WITH(
      medcl::eval::mean_interval({0.5}), Contains("at least two values for an interval, got 1"));
  REQUIRE_THROWS_WITH(medcl::eval::student_t_quantile(1.0, 3), Contains("p must be in (0, 1)"));
  REQUIRE_THROWS_WITH(medcl::eval::student_t_quantile(0.9, 0), Contains("df must be finite"));
}

TEST_CASE("Reliability bins hold exactly the probabilities their edges say", "[eval][metrics]") {
  // On a 0.01 grid p·B rounds below an edge for some p (0.29·100 = 28.999999999999996).
  for (int64_t bins : {100, 50, 10}) {
    std::vector<double> p;
    std::vector<int64_t> y;
    for (int i = 0; i <= 100; ++i) {
      p.push_back(i / 100.0);
      y.push_back(i % 3 == 0 ? 1 : 0);
    }
    const auto cal = E::calibration(p, y, bins);
    int64_t counted = 0;
    for (size_t b = 0; b < cal.count.size(); ++b) {
      int64_t inside = 0;
      for (double v : p) {
        const bool last = cal.bin_upper[b] == 1.0;
        inside += v >= cal.bin_lower[b] && (v < cal.bin_upper[b] || (last && v <= 1.0)) ? 1 : 0;
      }
      INFO("bins " << bins << ", bin [" << cal.bin_lower[b] << ", " << cal.bin_upper[b] << ")");
      CHECK(cal.count[b] == inside);
      counted += cal.count[b];
    }
    CHECK(counted == 101);
  }
}

TEST_CASE("DeLong's paired test with zero variance", "[eval][metrics]") {
  const std::vector<int64_t> y{0, 0, 0, 1, 1, 1, 1};
  const std::vector<double> perfect{0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.95};
  const std::vector<double> constant(7, 0.5);
  const auto up = E::compare_auroc_delong(perfect, constant, y);
  CHECK(up.difference.estimate == 0.5);
  CHECK(std::isinf(up.z));
  CHECK(up.z > 0);
  CHECK(up.p_value == 0.0);
  const auto down = E::compare_auroc_delong(constant, perfect, y);
  CHECK(std::isinf(down.z));
  CHECK(down.z < 0);
  const auto same = E::compare_auroc_delong(perfect, perfect, y);
  CHECK(same.z == 0.0);
  CHECK(same.p_value == 1.0);
}

TEST_CASE("C-index compares an event with a censoring at the same time", "[eval][metrics]") {
  // As R's survival::concordance(Surv(t, e) ~ r, reverse = TRUE) counts (checked there).
  CHECK(E::c_index({1, 2, 2, 3}, {1, 1, 0, 0}, {4, 3, 3.5, 1}) == Approx(0.8).epsilon(1e-15));
  CHECK(
      E::c_index({1, 2, 2, 2, 3, 4}, {1, 1, 1, 0, 1, 0}, {4, 3, 2, 3, 2, 2}) ==
      Approx(0.75).epsilon(1e-15));
}

TEST_CASE("Calibration slope, intercept and in-the-large agree with R's glm", "[eval][metrics]") {
  // R: x <- qlogis(p); ctl <- glm.control(epsilon = 1e-16, maxit = 200);
  // confint.default(glm(y ~ x, binomial, control = ctl)) and
  // glm(y ~ 1 + offset(x), binomial, control = ctl), printed with 17 significant digits. At
  // glm's default tolerance R stops 1e-9 short of the maximum; rms::val.prob's intercept and
  // slope agree to about 1e-6 (its lrm.fit stops earlier still).
  const int n = 40;
  std::vector<double> p;
  std::vector<int64_t> y;
  for (int i = 0; i < n; ++i) {
    p.push_back(0.05 + 0.9 * i / 39.0);
    y.push_back((i * 7) % 10 < 10 * p.back() ? 1 : 0);
  }
  const auto c = E::logistic_calibration(p, y);
  CHECK(c.intercept.estimate == Approx(0.42838106296261352).epsilon(1e-9));
  CHECK(c.slope.estimate == Approx(1.0342827206143073).epsilon(1e-9));
  CHECK(c.intercept.lower == Approx(-0.32998097165387991).epsilon(1e-6));
  CHECK(c.intercept.upper == Approx(1.1867430975791069).epsilon(1e-6));
  CHECK(c.slope.lower == Approx(0.33911028503785901).epsilon(1e-6));
  CHECK(c.slope.upper == Approx(1.7294551561907556).epsilon(1e-6));
  CHECK(c.in_the_large.estimate == Approx(0.42149704277610706).epsilon(1e-9));
  CHECK(c.in_the_large.lower == Approx(-0.31772205890700261).epsilon(1e-6));
  CHECK(c.in_the_large.upper == Approx(1.1607161444592167).epsilon(1e-6));
  CHECK(c.slope.method == "Wald");

  using medcl_test::Contains;
  CHECK_THROWS_WITH(
      E::logistic_calibration({0.2, 1.0}, {0, 1}),
      Contains("probability 1 is 1; it must be in (0, 1) to have a logit"));
  CHECK_THROWS_WITH(E::logistic_calibration({0.2, 0.3}, {1, 1}), Contains("logistic_calibration"));
  CHECK_THROWS_WITH(
      E::logistic_calibration({0.2, 0.3, 0.4}, {0, 1}), Contains("3 scores but 2 labels"));
  CHECK_THROWS_WITH(
      E::logistic_calibration({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}),
      Contains("separates the outcomes perfectly"));
}

TEST_CASE("Decision curve: net benefit against treat-all and treat-none", "[eval][metrics]") {
  using medcl_test::Contains;
  const std::vector<double> p{0.05, 0.2, 0.3, 0.45, 0.6, 0.8, 0.9, 0.1};
  const std::vector<int64_t> y{0, 0, 1, 0, 1, 1, 1, 0};
  const auto d = E::decision_curve(p, y, {0.25, 0.5});
  REQUIRE(d.thresholds == std::vector<double>{0.25, 0.5});
  // t = 0.25: treated p >= 0.25: 0.3 (1), 0.45 (0), 0.6, 0.8, 0.9 (1): TP 4, FP 1; odds 1/3.
  CHECK(d.net_benefit[0] == Approx(4.0 / 8 - 1.0 / 8 / 3).epsilon(1e-15));
  // t = 0.5: 0.6, 0.8, 0.9: TP 3, FP 0; odds 1.
  CHECK(d.net_benefit[1] == Approx(3.0 / 8).epsilon(1e-15));
  CHECK(d.treat_all[0] == Approx(0.5 - 0.5 / 3).epsilon(1e-15));
  CHECK(d.treat_all[1] == Approx(0.0).margin(1e-15));
  CHECK(d.treat_none == std::vector<double>{0.0, 0.0});
  CHECK(E::decision_curve(p, y).thresholds.size() == 99);
  CHECK_THROWS_WITH(
      E::decision_curve(p, y, {0.5, 1.0}),
      Contains("threshold 1 is 1; thresholds must be in (0, 1)"));
  CHECK_THROWS_WITH(
      E::decision_curve(p, y, {0.5, 0.2}), Contains("thresholds must increase, got 0.5 then 0.2"));
  CHECK_THROWS_WITH(
      E::decision_curve({1.2}, {1}), Contains("probability 0 is outside [0, 1] (1.2)"));
}

TEST_CASE("Time-dependent AUROC agrees with riskRegression", "[eval][metrics]") {
  // R: set.seed(3); n <- 60; time <- round(rexp(n, 0.3) * 2) / 2 + 0.5;
  // status <- rbinom(n, 1, 0.7); risk <- round(runif(n) * 16) / 16 + 0.25 * (time < 2)
  // (exact binary fractions, heavy ties in time and risk); riskRegression::Score(list(m = risk),
  // Hist(time, status) ~ 1, times = c(1, 2, 3, 5), metrics = "auc", cens.model = "km").
  const std::vector<double> time{6.5, 2.5,  4.5, 4,   1,   1,    8,   0.5,  0.5, 1,   1,   2,
                                 1,   14.5, 2.5, 1,   2,   4.5,  4.5, 6.5,  3.5, 1,   7.5, 3,
                                 2.5, 6.5,  1,   5,   3,   11.5, 9.5, 3.5,  2.5, 5.5, 1.5, 5.5,
                                 2.5, 10,   2.5, 3.5, 2.5, 1,    4.5, 9,    2,   2,   1.5, 1,
                                 6,   6,    2.5, 2,   2.5, 1.5,  4.5, 14.5, 1,   3,   3,   4.5};
  const std::vector<int64_t> status{1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
                                    0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0,
                                    1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1};
  const std::vector<double> risk{
      0.25,   0.1875, 0.125,  0.4375, 0.3125, 1.1875, 0.5,    0.625,  1.125, 1,      1,      0.875,
      0.4375, 0.8125, 0.5625, 0.75,   0.125,  0.5625, 0.875,  0.1875, 0.5,   0.9375, 0.8125, 0.1875,
      0.5625, 0.1875, 0.5625, 0.1875, 0.125,  0.25,   0.3125, 0.875,  0.125, 0.375,  0.5625, 0.5,
      0.875,  0.3125, 0.5625, 0.6875, 0.375,  1.0625, 0.9375, 0.4375, 0.25,  0.75,   1.125,  0.5625,
      0.5,    0.875,  0.375,  0.75,   0.6875, 1.125,  0.0625, 0.75,   0.75,  0.5625, 0.1875, 0};
  const double horizons[] = {1, 2, 3, 5};
  const double r_auc[] = {
      0.71874749096748303, 0.73431198431198419, 0.58673328189665641, 0.56692374294738435};
  for (int h = 0; h < 4; ++h) {
    INFO("horizon " << horizons[h]);
    CHECK(
        E::time_dependent_auroc(time, status, risk, horizons[h]) ==
        Approx(r_auc[h]).epsilon(1e-12));
  }
  using medcl_test::Contains;
  CHECK_THROWS_WITH(
      E::time_dependent_auroc(time, status, risk, 0.25),
      Contains("no subject has an event by the horizon 0.25"));
  CHECK_THROWS_WITH(
      E::time_dependent_auroc(time, status, risk, 14.5),
      Contains("no subject is followed beyond the horizon 14.5"));
  CHECK_THROWS_WITH(
      E::time_dependent_auroc({1, 2}, {1, 2}, {0, 1}, 1.5),
      Contains("events must be 0 or 1, got 2"));
  CHECK_THROWS_WITH(E::time_dependent_auroc({1, 2}, {1, 0}, {0}, 1.5), Contains("equal lengths"));
}
