#include <medcl/eval/metrics.h>

#include <c10/util/Exception.h>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {
namespace {

void check_binary(
    const char* fn,
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    bool need_both) {
  TORCH_CHECK(!scores.empty(), fn, ": no scores");
  TORCH_CHECK(
      scores.size() == labels.size(),
      fn,
      ": ",
      scores.size(),
      " scores but ",
      labels.size(),
      " labels");
  int64_t pos = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    TORCH_CHECK(std::isfinite(scores[i]), fn, ": score ", i, " is not finite (", scores[i], ")");
    TORCH_CHECK(
        labels[i] == 0 || labels[i] == 1,
        fn,
        ": labels must be 0 or 1, got ",
        labels[i],
        " at ",
        i);
    pos += labels[i];
  }
  if (need_both) {
    const auto n = static_cast<int64_t>(labels.size());
    TORCH_CHECK(
        pos > 0 && pos < n,
        fn,
        ": needs both classes, got ",
        pos,
        " positive(s) and ",
        n - pos,
        " negative(s); the metric is undefined for one class");
  }
}

/// 1-based midranks of v (ties share their average rank).
std::vector<double> midranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) {
      ++j;
    }
    const double rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k) {
      r[order[k]] = rank;
    }
    i = j + 1;
  }
  return r;
}

/// Regularised incomplete beta I_x(a, b): its continued fraction evaluated by the modified Lentz
/// method, on the side of the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges fast.
double incomplete_beta(double a, double b, double x) {
  if (x <= 0) {
    return 0.0;
  }
  if (x >= 1) {
    return 1.0;
  }
  if (x > (a + 1) / (a + b + 2)) {
    return 1.0 - incomplete_beta(b, a, 1.0 - x);
  }
  const double log_front =
      std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  const double tiny = 1e-300;
  double f = 1.0, c = 1.0, d = 0.0;
  for (int i = 0; i <= 1000; ++i) {
    const double m = static_cast<double>(i / 2);
    double num = 1.0;
    if (i > 0 && i % 2 == 0) {
      num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    } else if (i > 0) {
      num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
    }
    d = 1.0 + num * d;
    d = 1.0 / (std::abs(d) < tiny ? tiny : d);
    c = 1.0 + num / c;
    c = std::abs(c) < tiny ? tiny : c;
    f *= c * d;
    if (std::abs(1.0 - c * d) < 1e-16) {
      break;
    }
  }
  return std::exp(log_front) * (f - 1.0) / a;
}

/// P(T > t) for t >= 0, Student's t with `df` degrees of freedom (computed as a tail, so that
/// it keeps its relative precision far out).
double student_t_upper_tail(double t, double df) {
  return 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t));
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9 after one
/// Newton step).
double normal_quantile(double p) {
  TORCH_CHECK(p > 0 && p < 1, "normal_quantile: p must be in (0, 1), got ", p);
  static const double a[] = {
      -3.969683028665376e+01,
      2.209460984245205e+02,
      -2.759285104469687e+02,
      1.383577518672690e+02,
      -3.066479806614716e+01,
      2.506628277459239e+00};
  static const double b[] = {
      -5.447609879822406e+01,
      1.615858368580409e+02,
      -1.556989798598866e+02,
      6.680131188771972e+01,
      -1.328068155288572e+01};
  static const double c[] = {
      -7.784894002430293e-03,
      -3.223964580411365e-01,
      -2.400758277161838e+00,
      -2.549732539343734e+00,
      4.374664141464968e+00,
      2.938163982698783e+00};
  static const double d[] = {
      7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00};
  const double lo = 0.02425;
  double x;
  if (p < lo) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - lo) {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  // One Newton step on Φ(x) - p.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2 * 3.14159265358979323846) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

/// DeLong structural components for k score vectors: AUROCs and their covariance (Sun & Xu 2014).
void delong(
    const std::vector<const std::vector<double>*>& models,
    const std::vector<int64_t>& labels,
    Eigen::VectorXd* aucs,
    Eigen::MatrixXd* cov) {
  std::vector<size_t> pos, neg;
  for (size_t i = 0; i < labels.size(); ++i) {
    (labels[i] == 1 ? pos : neg).push_back(i);
  }
  const auto m = static_cast<Eigen::Index>(pos.size());
  const auto n = static_cast<Eigen::Index>(neg.size());
  const auto k = static_cast<Eigen::Index>(models.size());
  Eigen::MatrixXd v10(k, m), v01(k, n);
  aucs->resize(k);
  for (Eigen::Index r = 0; r < k; ++r) {
    const auto& s = *models[static_cast<size_t>(r)];
    std::vector<double> x, y, z;
    for (size_t i : pos)
      x.push_back(s[i]);
    for (size_t j : neg)
      y.push_back(s[j]);
    z = x;
    z.insert(z.end(), y.begin(), y.end());
    const auto tx = midranks(x), ty = midranks(y), tz = midranks(z);
    double sum_pos = 0;
    for (Eigen::Index i = 0; i < m; ++i) {
      sum_pos += tz[static_cast<size_t>(i)];
      v10(r, i) =
          (tz[static_cast<size_t>(i)] - tx[static_cast<size_t>(i)]) / static_cast<double>(n);
    }
    for (Eigen::Index j = 0; j < n; ++j) {
      v01(r, j) = 1.0 -
          (tz[static_cast<size_t>(m + j)] - ty[static_cast<size_t>(j)]) / static_cast<double>(m);
    }
    (*aucs)(r) = (sum_pos - static_cast<double>(m) * static_cast<double>(m + 1) / 2.0) /
        (static_cast<double>(m) * static_cast<double>(n));
  }
  auto sample_cov = [](const Eigen::MatrixXd& v) {
    const Eigen::VectorXd mean = v.rowwise().mean();
    const Eigen::MatrixXd c = v.colwise() - mean;
    const double denom = std::max<double>(1.0, static_cast<double>(v.cols() - 1));
    return Eigen::MatrixXd(c * c.transpose() / denom);
  };
  *cov = sample_cov(v10) / static_cast<double>(m) + sample_cov(v01) / static_cast<double>(n);
}

void check_level(const char* fn, double level) {
  TORCH_CHECK(level > 0 && level < 1, fn, ": level must be in (0, 1), got ", level);
}

// DeLong's variance averages over the positives and over the negatives with a sample variance
// each: one case of a class leaves it undefined (pROC: NA), not 0.
void check_two_of_each(const char* fn, const std::vector<int64_t>& labels) {
  const auto pos = std::count(labels.begin(), labels.end(), int64_t{1});
  const auto neg = static_cast<int64_t>(labels.size()) - pos;
  TORCH_CHECK(
      pos >= 2 && neg >= 2,
      fn,
      ": DeLong's variance needs at least two positives and two negatives, got ",
      pos,
      " and ",
      neg,
      " (the AUROC itself is defined: auroc)");
}

} // namespace

double auroc(const std::vector<double>& scores, const std::vector<int64_t>& labels) {
  check_binary("auroc", scores, labels, true);
  Eigen::VectorXd a;
  Eigen::MatrixXd c;
  delong({&scores}, labels, &a, &c);
  return a(0);
}

Interval
auroc_delong(const std::vector<double>& scores, const std::vector<int64_t>& labels, double level) {
  check_binary("auroc_delong", scores, labels, true);
  check_level("auroc_delong", level);
  check_two_of_each("auroc_delong", labels);
  Eigen::VectorXd a;
  Eigen::MatrixXd c;
  delong({&scores}, labels, &a, &c);
  const double half = normal_quantile(0.5 + level / 2) * std::sqrt(std::max(0.0, c(0, 0)));
  return {a(0), std::max(0.0, a(0) - half), std::min(1.0, a(0) + half), level, "DeLong"};
}

AurocComparison compare_auroc_delong(
    const std::vector<double>& scores_a,
    const std::vector<double>& scores_b,
    const std::vector<int64_t>& labels,
    double level) {
  check_binary("compare_auroc_delong", scores_a, labels, true);
  check_binary("compare_auroc_delong", scores_b, labels, true);
  check_level("compare_auroc_delong", level);
  check_two_of_each("compare_auroc_delong", labels);
  Eigen::VectorXd a;
  Eigen::MatrixXd c;
  delong({&scores_a, &scores_b}, labels, &a, &c);
  const double diff = a(0) - a(1);
  const double var = std::max(0.0, c(0, 0) + c(1, 1) - 2 * c(0, 1));
  const double sd = std::sqrt(var);
  const double half = normal_quantile(0.5 + level / 2) * sd;
  AurocComparison out;
  out.difference = {diff, diff - half, diff + half, level, "DeLong"};
  // Zero variance: equal AUROCs give z = 0 (p = 1); different ones give z = ±Inf (p = 0), as
  // pROC does, rather than a z of 0 beside a p of 0.
  out.z = sd > 0 ? diff / sd
                 : (diff == 0 ? 0.0 : std::copysign(std::numeric_limits<double>::infinity(), diff));
  out.p_value = sd > 0 ? std::erfc(std::abs(out.z) / std::sqrt(2.0)) : (diff == 0 ? 1.0 : 0.0);
  return out;
}

double auprc(const std::vector<double>& scores, const std::vector<int64_t>& labels) {
  check_binary("auprc", scores, labels, true);
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  const double total_pos =
      static_cast<double>(std::accumulate(labels.begin(), labels.end(), int64_t{0}));
  double tp = 0, fp = 0, prev_recall = 0, ap = 0;
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) {
      (labels[order[j]] == 1 ? tp : fp) += 1;
      ++j;
    }
    const double recall = tp / total_pos;
    const double precision = tp / (tp + fp);
    ap += (recall - prev_recall) * precision;
    prev_recall = recall;
    i = j;
  }
  return ap;
}

double sensitivity_at_specificity(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double specificity) {
  check_binary("sensitivity_at_specificity", scores, labels, true);
  TORCH_CHECK(
      specificity >= 0 && specificity <= 1,
      "sensitivity_at_specificity: specificity must be in [0, 1], got ",
      specificity);
  // Candidate thresholds: every distinct score (predict positive when score >= threshold), plus
  // one above the maximum (nothing positive: specificity 1).
  std::set<double> thresholds(scores.begin(), scores.end());
  double best = 0;
  int64_t neg = 0, pos = 0;
  for (auto l : labels)
    (l == 1 ? pos : neg) += 1;
  for (double t : thresholds) {
    int64_t tp = 0, tn = 0;
    for (size_t i = 0; i < scores.size(); ++i) {
      if (scores[i] >= t) {
        tp += labels[i];
      } else {
        tn += 1 - labels[i];
      }
    }
    if (static_cast<double>(tn) / static_cast<double>(neg) >= specificity) {
      best = std::max(best, static_cast<double>(tp) / static_cast<double>(pos));
    }
  }
  return best;
}

double threshold_at_specificity(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double specificity) {
  constexpr const char* fn = "threshold_at_specificity";
  check_binary(fn, scores, labels, true);
  TORCH_CHECK(
      specificity >= 0 && specificity <= 1,
      fn,
      ": specificity must be in [0, 1], got ",
      specificity);
  // Distinct scores ascending; a threshold t predicts negative for every score below it, so the
  // true negatives at t are the negatives scoring below t. The lowest t reaching the specificity
  // keeps the most positives (sensitivity_at_specificity's choice).
  std::vector<std::pair<double, int64_t>> sorted;
  int64_t neg = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    sorted.emplace_back(scores[i], labels[i]);
    neg += 1 - labels[i];
  }
  std::sort(sorted.begin(), sorted.end());
  int64_t tn = 0; // negatives strictly below sorted[i].first
  for (size_t i = 0; i < sorted.size();) {
    if (static_cast<double>(tn) / static_cast<double>(neg) >= specificity) {
      return sorted[i].first;
    }
    size_t j = i;
    while (j < sorted.size() && sorted[j].first == sorted[i].first) {
      tn += 1 - sorted[j].second;
      ++j;
    }
    i = j;
  }
  // Only "nothing positive" reaches it: just above the largest score.
  return std::nextafter(sorted.back().first, std::numeric_limits<double>::infinity());
}

OperatingPoint operating_point(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double threshold) {
  constexpr const char* fn = "operating_point";
  check_binary(fn, scores, labels, false);
  TORCH_CHECK(std::isfinite(threshold), fn, ": the threshold is not finite (", threshold, ")");
  OperatingPoint p;
  p.threshold = threshold;
  for (size_t i = 0; i < scores.size(); ++i) {
    const bool positive = scores[i] >= threshold;
    if (labels[i] == 1) {
      (positive ? p.true_positives : p.false_negatives) += 1;
    } else {
      (positive ? p.false_positives : p.true_negatives) += 1;
    }
  }
  const int64_t pos = p.true_positives + p.false_negatives;
  const int64_t neg = p.true_negatives + p.false_positives;
  p.has_sensitivity = pos > 0;
  p.has_specificity = neg > 0;
  p.sensitivity = pos > 0 ? static_cast<double>(p.true_positives) / static_cast<double>(pos) : 0;
  p.specificity = neg > 0 ? static_cast<double>(p.true_negatives) / static_cast<double>(neg) : 0;
  return p;
}

double brier_score(const std::vector<double>& probabilities, const std::vector<int64_t>& labels) {
  check_binary("brier_score", probabilities, labels, false);
  double s = 0;
  for (size_t i = 0; i < probabilities.size(); ++i) {
    TORCH_CHECK(
        probabilities[i] >= 0 && probabilities[i] <= 1,
        "brier_score: probability ",
        i,
        " is outside [0, 1] (",
        probabilities[i],
        ")");
    const double d = probabilities[i] - static_cast<double>(labels[i]);
    s += d * d;
  }
  return s / static_cast<double>(probabilities.size());
}

Calibration calibration(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    int64_t bins) {
  check_binary("calibration", probabilities, labels, false);
  TORCH_CHECK(bins >= 1, "calibration: bins must be >= 1, got ", bins);
  std::vector<double> sum_p(static_cast<size_t>(bins), 0), sum_y(static_cast<size_t>(bins), 0);
  std::vector<int64_t> cnt(static_cast<size_t>(bins), 0);
  for (size_t i = 0; i < probabilities.size(); ++i) {
    const double p = probabilities[i];
    TORCH_CHECK(p >= 0 && p <= 1, "calibration: probability ", i, " is outside [0, 1] (", p, ")");
    const double nb = static_cast<double>(bins);
    auto b = std::min<int64_t>(bins - 1, static_cast<int64_t>(std::floor(p * nb)));
    // The bin whose reported edges [b/B, (b+1)/B) hold p (the last one closed): p·B can round
    // across an edge (0.29·100 = 28.999999999999996).
    if (b > 0 && p < static_cast<double>(b) / nb) {
      --b;
    } else if (b < bins - 1 && p >= static_cast<double>(b + 1) / nb) {
      ++b;
    }
    sum_p[static_cast<size_t>(b)] += p;
    sum_y[static_cast<size_t>(b)] += static_cast<double>(labels[i]);
    cnt[static_cast<size_t>(b)] += 1;
  }
  Calibration c;
  const double n = static_cast<double>(probabilities.size());
  for (int64_t b = 0; b < bins; ++b) {
    const auto k = static_cast<size_t>(b);
    if (cnt[k] == 0) {
      continue;
    }
    c.bin_lower.push_back(static_cast<double>(b) / static_cast<double>(bins));
    c.bin_upper.push_back(static_cast<double>(b + 1) / static_cast<double>(bins));
    c.mean_probability.push_back(sum_p[k] / static_cast<double>(cnt[k]));
    c.observed_rate.push_back(sum_y[k] / static_cast<double>(cnt[k]));
    c.count.push_back(cnt[k]);
    c.ece += static_cast<double>(cnt[k]) / n *
        std::abs(c.observed_rate.back() - c.mean_probability.back());
  }
  return c;
}

namespace {

// Newton-Raphson for the logistic regression y ~ a + b·x (slope fitted) or y ~ a + offset(x)
// (slope fixed at 1). Returns the coefficients and their covariance (the inverse information).
void fit_logistic(
    const std::vector<double>& x,
    const std::vector<int64_t>& y,
    bool with_slope,
    double* coef,
    double cov[2][2]) {
  constexpr const char* fn = "logistic_calibration";
  // Start from the outcome rate: a = logit(rate) (minus the mean offset when the slope is 1).
  double rate = 0;
  for (auto v : y) {
    rate += static_cast<double>(v);
  }
  rate /= static_cast<double>(y.size());
  double a = std::log(rate / (1 - rate));
  double b = 0;
  if (!with_slope) {
    b = 1;
    double mx = 0;
    for (auto v : x) {
      mx += v;
    }
    a -= mx / static_cast<double>(x.size());
  }
  for (int it = 0; it < 100; ++it) {
    double g0 = 0, g1 = 0, h00 = 0, h01 = 0, h11 = 0, dev = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double eta = a + b * x[i];
      const double mu = 1 / (1 + std::exp(-eta));
      const double w = mu * (1 - mu);
      const double r = static_cast<double>(y[i]) - mu;
      g0 += r;
      g1 += r * x[i];
      h00 += w;
      h01 += w * x[i];
      h11 += w * x[i] * x[i];
      // -2 log-likelihood, computed stably.
      dev += 2 *
          (std::log1p(std::exp(-std::abs(eta))) + std::max(eta, 0.0) -
           static_cast<double>(y[i]) * eta);
    }
    if (with_slope) {
      const double det = h00 * h11 - h01 * h01;
      TORCH_CHECK(
          std::isfinite(det) && det > 0,
          fn,
          ": the fit of y ~ a + b·logit(p) is singular (all logits equal, or perfect separation)");
      const double da = (h11 * g0 - h01 * g1) / det;
      const double db = (h00 * g1 - h01 * g0) / det;
      a += da;
      b += db;
      cov[0][0] = h11 / det;
      cov[0][1] = cov[1][0] = -h01 / det;
      cov[1][1] = h00 / det;
      if (std::abs(da) + std::abs(db) < 1e-13 * (1 + std::abs(a) + std::abs(b))) {
        break;
      }
    } else {
      TORCH_CHECK(h00 > 0 && std::isfinite(h00), fn, ": the calibration-in-the-large fit failed");
      const double da = g0 / h00;
      a += da;
      cov[0][0] = 1 / h00;
      if (std::abs(da) < 1e-13 * (1 + std::abs(a))) {
        break;
      }
    }
    TORCH_CHECK(
        it < 99 && std::isfinite(a) && std::isfinite(b),
        fn,
        ": the logistic fit did not converge (deviance ",
        dev,
        "; perfect separation of the outcomes by logit(p)?)");
  }
  coef[0] = a;
  coef[1] = b;
}

// The checks of the calibration fits, and logit(p) of each probability.
std::vector<double> checked_logits(
    const char* fn,
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    double level) {
  check_binary(fn, probabilities, labels, true);
  check_level(fn, level);
  std::vector<double> x(probabilities.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double p = probabilities[i];
    TORCH_CHECK(
        p > 0 && p < 1,
        fn,
        ": probability ",
        i,
        " is ",
        p,
        "; it must be in (0, 1) to have a logit");
    x[i] = std::log(p / (1 - p));
  }
  return x;
}

// A Wald interval: estimate ± z · sqrt(variance).
Interval wald_interval(double estimate, double variance, double level) {
  const double half = normal_quantile(0.5 + level / 2) * std::sqrt(variance);
  return Interval{estimate, estimate - half, estimate + half, level, "Wald"};
}

// Calibration-in-the-large of checked logits: y ~ a + offset(x).
Interval in_the_large_of_logits(
    const std::vector<double>& x,
    const std::vector<int64_t>& labels,
    double level) {
  double coef[2];
  double cov[2][2] = {{0, 0}, {0, 0}};
  fit_logistic(x, labels, false, coef, cov);
  return wald_interval(coef[0], cov[0][0], level);
}

} // namespace

LogisticCalibration logistic_calibration(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    double level) {
  constexpr const char* fn = "logistic_calibration";
  const auto x = checked_logits(fn, probabilities, labels, level);
  // Separation: when logit(p) orders the outcomes perfectly (every event at or above every
  // non-event, or the reverse), the slope's maximum likelihood is infinite (R's glm warns that
  // fitted probabilities are 0 or 1); say so rather than report where Newton stopped.
  double max0 = -std::numeric_limits<double>::infinity(), min0 = -max0;
  double max1 = max0, min1 = min0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (labels[i] == 1) {
      max1 = std::max(max1, x[i]);
      min1 = std::min(min1, x[i]);
    } else {
      max0 = std::max(max0, x[i]);
      min0 = std::min(min0, x[i]);
    }
  }
  TORCH_CHECK(
      !(max0 <= min1 || max1 <= min0),
      fn,
      ": logit(p) separates the outcomes perfectly (every ",
      max0 <= min1 ? "event scores at or above every non-event"
                   : "non-event scores at or above every event",
      "): the calibration slope is infinite; calibration-in-the-large alone is defined "
      "(calibration_in_the_large)");
  LogisticCalibration out;
  double coef[2];
  double cov[2][2] = {{0, 0}, {0, 0}};
  fit_logistic(x, labels, true, coef, cov);
  out.intercept = wald_interval(coef[0], cov[0][0], level);
  out.slope = wald_interval(coef[1], cov[1][1], level);
  out.in_the_large = in_the_large_of_logits(x, labels, level); // the logits are checked already
  return out;
}

Interval calibration_in_the_large(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    double level) {
  constexpr const char* fn = "calibration_in_the_large";
  return in_the_large_of_logits(checked_logits(fn, probabilities, labels, level), labels, level);
}

double time_dependent_auroc(
    const std::vector<double>& times,
    const std::vector<int64_t>& events,
    const std::vector<double>& risk,
    double horizon) {
  constexpr const char* fn = "time_dependent_auroc";
  TORCH_CHECK(!times.empty(), fn, ": no subjects");
  TORCH_CHECK(
      times.size() == events.size() && times.size() == risk.size(),
      fn,
      ": expected equal lengths, got ",
      times.size(),
      " times, ",
      events.size(),
      " events and ",
      risk.size(),
      " risk scores");
  TORCH_CHECK(std::isfinite(horizon), fn, ": the horizon is not finite (", horizon, ")");
  for (size_t i = 0; i < times.size(); ++i) {
    TORCH_CHECK(
        std::isfinite(times[i]) && std::isfinite(risk[i]), fn, ": non-finite time or risk at ", i);
    TORCH_CHECK(
        events[i] == 0 || events[i] == 1,
        fn,
        ": events must be 0 or 1, got ",
        events[i],
        " at ",
        i);
  }
  // Kaplan-Meier of the censoring distribution: G(s) = prod over censoring times u <= s of
  // (1 - censored at u / at risk at u). At a time with both, events come first (as in
  // riskRegression/prodlim): the risk set at u is every subject with a later time, and those
  // censored at u.
  std::vector<double> distinct;
  for (size_t i = 0; i < times.size(); ++i) {
    if (events[i] == 0) {
      distinct.push_back(times[i]);
    }
  }
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  std::vector<double> g_after(distinct.size()); // G just after each censoring time
  double g = 1;
  for (size_t k = 0; k < distinct.size(); ++k) {
    double at_risk = 0, censored = 0;
    for (size_t i = 0; i < times.size(); ++i) {
      at_risk += times[i] > distinct[k] || (times[i] == distinct[k] && events[i] == 0) ? 1 : 0;
      censored += (times[i] == distinct[k] && events[i] == 0) ? 1 : 0;
    }
    g *= 1 - censored / at_risk;
    g_after[k] = g;
  }
  // G(s) (right-continuous) and G(s-) (left limit).
  auto G = [&](double s, bool left) {
    double v = 1;
    for (size_t k = 0; k < distinct.size() && (left ? distinct[k] < s : distinct[k] <= s); ++k) {
      v = g_after[k];
    }
    return v;
  };
  double case_weight = 0, controls = 0, concordant = 0;
  std::vector<size_t> control_index;
  for (size_t j = 0; j < times.size(); ++j) {
    if (times[j] > horizon) {
      control_index.push_back(j);
    }
  }
  controls = static_cast<double>(control_index.size());
  for (size_t i = 0; i < times.size(); ++i) {
    if (!(times[i] <= horizon && events[i] == 1)) {
      continue;
    }
    const double gi = G(times[i], true);
    TORCH_CHECK(gi > 0, fn, ": the censoring survival is 0 before the event at ", times[i]);
    const double w = 1 / gi;
    case_weight += w;
    double c = 0;
    for (size_t j : control_index) {
      c += risk[i] > risk[j] ? 1.0 : (risk[i] == risk[j] ? 0.5 : 0.0);
    }
    concordant += w * c;
  }
  TORCH_CHECK(
      case_weight > 0,
      fn,
      ": no subject has an event by the horizon ",
      horizon,
      "; the AUROC there is undefined");
  TORCH_CHECK(
      controls > 0,
      fn,
      ": no subject is followed beyond the horizon ",
      horizon,
      " (the last follow-up is at or before it); the AUROC there is undefined");
  // The controls' common weight 1/G(t) cancels.
  return concordant / (case_weight * controls);
}

DecisionCurve decision_curve(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    std::vector<double> thresholds) {
  constexpr const char* fn = "decision_curve";
  check_binary(fn, probabilities, labels, false);
  for (size_t i = 0; i < probabilities.size(); ++i) {
    TORCH_CHECK(
        probabilities[i] >= 0 && probabilities[i] <= 1,
        fn,
        ": probability ",
        i,
        " is outside [0, 1] (",
        probabilities[i],
        ")");
  }
  if (thresholds.empty()) {
    for (int k = 1; k <= 99; ++k) {
      thresholds.push_back(k / 100.0);
    }
  }
  for (size_t k = 0; k < thresholds.size(); ++k) {
    const double t = thresholds[k];
    TORCH_CHECK(t > 0 && t < 1, fn, ": threshold ", k, " is ", t, "; thresholds must be in (0, 1)");
    TORCH_CHECK(
        k == 0 || t > thresholds[k - 1],
        fn,
        ": thresholds must increase, got ",
        thresholds[k - 1],
        " then ",
        t);
  }
  const double n = static_cast<double>(labels.size());
  double positives = 0;
  for (auto l : labels) {
    positives += static_cast<double>(l);
  }
  const double prevalence = positives / n;
  DecisionCurve out;
  out.thresholds = thresholds;
  for (double t : thresholds) {
    double tp = 0, fp = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      if (probabilities[i] >= t) {
        (labels[i] == 1 ? tp : fp) += 1;
      }
    }
    const double odds = t / (1 - t);
    out.net_benefit.push_back(tp / n - fp / n * odds);
    out.treat_all.push_back(prevalence - (1 - prevalence) * odds);
    out.treat_none.push_back(0.0);
  }
  return out;
}

double c_index(
    const std::vector<double>& times,
    const std::vector<int64_t>& events,
    const std::vector<double>& risk) {
  TORCH_CHECK(!times.empty(), "c_index: no subjects");
  TORCH_CHECK(
      times.size() == events.size() && times.size() == risk.size(),
      "c_index: expected equal lengths, got ",
      times.size(),
      " times, ",
      events.size(),
      " events and ",
      risk.size(),
      " risk scores");
  for (size_t i = 0; i < times.size(); ++i) {
    TORCH_CHECK(
        std::isfinite(times[i]) && std::isfinite(risk[i]),
        "c_index: non-finite time or risk at ",
        i);
    TORCH_CHECK(
        events[i] == 0 || events[i] == 1,
        "c_index: events must be 0 or 1, got ",
        events[i],
        " at ",
        i);
  }
  double concordant = 0, comparable = 0;
  for (size_t i = 0; i < times.size(); ++i) {
    if (events[i] != 1) {
      continue;
    }
    for (size_t j = 0; j < times.size(); ++j) {
      // Comparable: j outlived i's event, known when j's time is later, or equal and censored
      // (a subject censored at the time of an event was still at risk then), as R's survival
      // and Harrell's definition count; two events at the same time are not compared.
      if (times[i] < times[j] || (times[i] == times[j] && events[j] == 0)) {
        comparable += 1;
        concordant += risk[i] > risk[j] ? 1.0 : (risk[i] == risk[j] ? 0.5 : 0.0);
      }
    }
  }
  TORCH_CHECK(
      comparable > 0,
      "c_index: no comparable pair (an event followed by a longer time); undefined");
  return concordant / comparable;
}

double macro_f1(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  TORCH_CHECK(!labels.empty(), "macro_f1: no labels");
  TORCH_CHECK(
      predictions.size() == labels.size(),
      "macro_f1: ",
      predictions.size(),
      " predictions but ",
      labels.size(),
      " labels");
  std::set<int64_t> classes(labels.begin(), labels.end());
  classes.insert(predictions.begin(), predictions.end());
  double total = 0;
  for (int64_t c : classes) {
    double tp = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      const bool p = predictions[i] == c, y = labels[i] == c;
      tp += p && y;
      fp += p && !y;
      fn += !p && y;
    }
    total += tp == 0 ? 0.0 : 2 * tp / (2 * tp + fp + fn);
  }
  return total / static_cast<double>(classes.size());
}

double student_t_quantile(double p, double df) {
  TORCH_CHECK(
      std::isfinite(p) && p > 0 && p < 1, "student_t_quantile: p must be in (0, 1), got ", p);
  TORCH_CHECK(
      std::isfinite(df) && df > 0, "student_t_quantile: df must be finite and > 0, got ", df);
  if (p < 0.5) {
    return -student_t_quantile(1.0 - p, df);
  }
  if (p == 0.5) {
    return 0.0;
  }
  // Bisection on the upper tail P(T > t) = 1 - p (exact in floating point for p >= 0.5), which
  // keeps its relative precision where 1 - P(T <= t) would not; at most ~1100 halvings reach
  // the resolution of a double.
  const double q = 1.0 - p;
  double lo = 0.0, hi = 1.0;
  while (student_t_upper_tail(hi, df) > q && hi < 1e300) {
    hi *= 2;
  }
  for (int i = 0; i < 2000; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) {
      break;
    }
    (student_t_upper_tail(mid, df) > q ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

Interval mean_interval(const std::vector<double>& values, double level) {
  const char* fn = "mean_interval";
  TORCH_CHECK(
      values.size() >= 2, fn, ": needs at least two values for an interval, got ", values.size());
  TORCH_CHECK(
      std::isfinite(level) && level > 0 && level < 1, fn, ": level must be in (0, 1), got ", level);
  double mean = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    TORCH_CHECK(std::isfinite(values[i]), fn, ": value ", i, " is not finite (", values[i], ")");
    mean += values[i];
  }
  const auto n = static_cast<double>(values.size());
  mean /= n;
  double ss = 0;
  for (double v : values) {
    ss += (v - mean) * (v - mean);
  }
  const double sd = std::sqrt(ss / (n - 1));
  const double half = student_t_quantile(0.5 + level / 2, n - 1) * sd / std::sqrt(n);
  Interval out;
  out.estimate = mean;
  out.lower = mean - half;
  out.upper = mean + half;
  out.level = level;
  out.method = "t interval of the mean over " + std::to_string(values.size()) + " values";
  return out;
}

std::pair<std::vector<double>, std::vector<double>> roc_curve(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels) {
  TORCH_CHECK(
      scores.size() == labels.size(),
      "roc_curve: ",
      scores.size(),
      " scores but ",
      labels.size(),
      " labels");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  const auto pos = static_cast<double>(std::count(labels.begin(), labels.end(), 1));
  const auto neg = static_cast<double>(labels.size()) - pos;
  TORCH_CHECK(pos > 0 && neg > 0, "roc_curve: needs both classes, got ", pos, " positive(s)");
  std::vector<double> fpr{0.0}, tpr{0.0};
  double tp = 0, fp = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    (labels[order[i]] == 1 ? tp : fp) += 1;
    if (i + 1 == order.size() || scores[order[i + 1]] != scores[order[i]]) {
      fpr.push_back(fp / neg);
      tpr.push_back(tp / pos);
    }
  }
  return {fpr, tpr};
}

} // namespace eval
} // namespace medcl
