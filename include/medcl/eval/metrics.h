#pragma once

/// \file
/// Clinical evaluation metrics: AUROC with DeLong confidence intervals (and the DeLong test
/// between two models on the same cases), AUPRC, sensitivity at a fixed specificity, Brier score,
/// expected calibration error with its reliability curve, Harrell's C-index, macro-F1.
/// Compiled in src/ (Eigen for the DeLong covariance); inputs are plain vectors.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {

/// A point estimate with its confidence interval.
struct Interval {
  double estimate = 0;
  double lower = 0;
  double upper = 0;
  /// Confidence level, e.g. 0.95.
  double level = 0.95;
  /// How the interval was obtained, e.g. "DeLong".
  std::string method;
};

/// Area under the ROC curve: the probability that a random positive scores higher than a random
/// negative, ties counting one half (the Mann-Whitney U statistic / (n_pos · n_neg)).
/// Labels are 0/1; both classes must be present (otherwise AUROC is undefined: an error).
double auroc(const std::vector<double>& scores, const std::vector<int64_t>& labels);

/// AUROC with DeLong et al.'s (1988) variance and a normal confidence interval at `level`, clipped
/// to [0, 1]. Uses the fast midrank algorithm of Sun & Xu (2014). The variance needs at least two
/// positives and two negatives (with one, it is undefined: R's pROC gives NA): fewer is an error.
Interval auroc_delong(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double level = 0.95);

/// DeLong's test of two models scored on the same cases: the difference AUROC(a) - AUROC(b) with
/// its interval, and the two-sided p-value. At least two positives and two negatives.
struct AurocComparison {
  Interval difference;
  double z = 0;
  double p_value = 1;
};
AurocComparison compare_auroc_delong(
    const std::vector<double>& scores_a,
    const std::vector<double>& scores_b,
    const std::vector<int64_t>& labels,
    double level = 0.95);

/// Area under the precision-recall curve as average precision: Σ (R_k - R_{k-1}) P_k over the
/// distinct score thresholds, highest first (scikit-learn's average_precision_score).
double auprc(const std::vector<double>& scores, const std::vector<int64_t>& labels);

/// Sensitivity at the most permissive threshold whose specificity is at least `specificity`.
double sensitivity_at_specificity(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double specificity);

/// The operating threshold of `sensitivity_at_specificity`: the most permissive threshold
/// (predict positive when score >= threshold) whose specificity on these cases is at least
/// `specificity`, over the distinct scores and one just above the largest (nothing positive).
/// Choose it on a validation split and apply it to the test split (`operating_point`), so that the
/// test's sensitivity and specificity are not tuned on the test. Errors: one class only, a
/// non-finite score, a specificity outside [0, 1].
double threshold_at_specificity(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double specificity);

/// Sensitivity and specificity of the rule "positive when score >= threshold", with the counts.
/// A class with no case leaves its rate undefined (`has_sensitivity` / `has_specificity` false).
struct OperatingPoint {
  double threshold = 0;
  int64_t true_positives = 0;
  int64_t false_negatives = 0;
  int64_t true_negatives = 0;
  int64_t false_positives = 0;
  bool has_sensitivity = false;
  bool has_specificity = false;
  double sensitivity = 0;
  double specificity = 0;
};
/// Errors: no cases, lengths that differ, a non-finite score or threshold, labels other than 0/1.
OperatingPoint operating_point(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels,
    double threshold);

/// Mean squared difference between predicted probabilities and 0/1 outcomes.
double brier_score(const std::vector<double>& probabilities, const std::vector<int64_t>& labels);

/// Reliability curve and expected calibration error over `bins` equal-width probability bins:
/// ECE = Σ_b (n_b / n) |mean outcome_b - mean probability_b| (empty bins are skipped).
struct Calibration {
  std::vector<double> bin_lower;
  std::vector<double> bin_upper;
  std::vector<double> mean_probability;
  std::vector<double> observed_rate;
  std::vector<int64_t> count;
  double ece = 0;
};
Calibration calibration(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    int64_t bins = 10);

/// Logistic recalibration of predicted probabilities p against 0/1 outcomes y, as
/// `rms::val.prob` reports it: the logistic regression y ~ a + b·logit(p) gives the calibration
/// slope b (1 when the predictions are neither too extreme, b < 1, nor too timid, b > 1) and
/// its intercept a; calibration-in-the-large is the intercept of y ~ a + offset(logit(p)) (0
/// when the mean prediction matches the outcome rate). Fitted by Newton-Raphson to machine
/// precision; the intervals are Wald intervals from the fit's information at `level` (R:
/// `confint.default(glm(...))`).
///
/// Errors: one class only, lengths that differ, a probability outside (0, 1) (0 and 1 have no
/// logit), outcomes that logit(p) separates perfectly (the slope is then infinite; R's glm warns
/// that fitted probabilities are 0 or 1), a fit that does not converge, a level outside (0, 1).
struct LogisticCalibration {
  /// b of y ~ a + b·logit(p).
  Interval slope;
  /// a of y ~ a + b·logit(p) (`val.prob`'s "Intercept").
  Interval intercept;
  /// a of y ~ a + offset(logit(p)).
  Interval in_the_large;
};
/// Decision-curve analysis (Vickers & Elkin 2006): the net benefit of treating the patients whose
/// predicted probability is at least each threshold t, NB(t) = TP/n − FP/n · t/(1 − t), beside
/// treating everyone (prevalence − (1 − prevalence) · t/(1 − t)) and no one (0).
struct DecisionCurve {
  std::vector<double> thresholds;
  std::vector<double> net_benefit;
  std::vector<double> treat_all;
  /// Always 0; kept so that a table or figure has the three curves side by side.
  std::vector<double> treat_none;
};
/// `thresholds` must lie in (0, 1) and increase; the default runs from 0.01 to 0.99 by 0.01.
/// Errors: lengths that differ, a probability outside [0, 1], a threshold outside (0, 1) or out
/// of order, no probabilities.
DecisionCurve decision_curve(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    std::vector<double> thresholds = {});

/// Time-dependent AUROC at `horizon`, cumulative/dynamic (Heagerty et al. 2000) with inverse
/// probability of censoring weights (Uno et al. 2007; Blanche et al. 2013): cases are the subjects
/// with an event by the horizon (T_i <= t, event), each weighted 1/G(T_i-), controls those still
/// event-free after it (T_j > t), weighted 1/G(t), where G is the Kaplan-Meier estimate of the
/// censoring distribution (at a time with both, events before censorings); AUC(t) is the weighted
/// probability that a case has the higher risk, ties counting one half. Equal to R's
/// `riskRegression::Score(..., metrics = "auc", cens.model = "km")`. Subjects censored by the
/// horizon enter only through the weights.
///
/// Errors: lengths that differ, a non-finite value, events other than 0/1, a horizon with no case
/// or no control (before the first event, or at or past the last follow-up), naming the horizon.
double time_dependent_auroc(
    const std::vector<double>& times,
    const std::vector<int64_t>& events,
    const std::vector<double>& risk,
    double horizon);

LogisticCalibration logistic_calibration(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    double level = 0.95);

/// Calibration-in-the-large alone (the intercept of y ~ a + offset(logit(p)) with its Wald
/// interval), which stays defined when logit(p) separates the outcomes.
Interval calibration_in_the_large(
    const std::vector<double>& probabilities,
    const std::vector<int64_t>& labels,
    double level = 0.95);

/// Harrell's concordance index for survival: among comparable pairs (the shorter time had the
/// event), the fraction where the higher risk has the shorter time; tied risks count one half.
/// Tied times follow R's `survival::concordance` (and Harrell's definition): an event and a
/// censoring at the same time are compared (the censored subject was still at risk), two events at
/// the same time are not.
double c_index(
    const std::vector<double>& times,
    const std::vector<int64_t>& events,
    const std::vector<double>& risk);

/// Points (FPR, TPR) of the ROC curve over distinct thresholds, from (0, 0) to (1, 1).
std::pair<std::vector<double>, std::vector<double>> roc_curve(
    const std::vector<double>& scores,
    const std::vector<int64_t>& labels);

/// Quantile of Student's t distribution with `df` (> 0, not necessarily integer) degrees of
/// freedom at probability `p` in (0, 1), as R's `qt(p, df)` (exact to about 1e-13 relative).
double student_t_quantile(double p, double df);

/// The mean of `values` (at least two, finite) with its Student t interval at `level`:
/// mean ± t(0.5 + level/2, n - 1) · sd / √n.
Interval mean_interval(const std::vector<double>& values, double level = 0.95);

/// Macro-averaged F1 over the classes present in `labels` or `predictions` (a class never
/// predicted and never present is ignored).
double macro_f1(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);

} // namespace eval
} // namespace medcl
