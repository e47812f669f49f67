#pragma once

/// \file
/// How the negatives of a contrastive loss are weighted: uniformly (InfoNCE), debiased for
/// false negatives (Chuang et al., NeurIPS 2020) or concentrated on hard negatives (Robinson et
/// al., ICLR 2021).

#include <c10/util/Exception.h>

#include <cmath>
#include <sstream>
#include <string>

namespace medcl {

/// The weighting of negatives in an InfoNCE-family loss, an option of `nt_xent_loss`,
/// `info_nce_loss`, `supcon_loss` and `clip_loss`.
///
/// For an anchor with logits \f$l_p\f$ for its \f$P\f$ positives and \f$l_n\f$ for its
/// \f$N\f$ negatives (\f$l = \cos/\tau\f$), the loss of the row is
/// \f[ \ell = -\frac{1}{P}\sum_p l_p + \log\Big(\sum_p e^{l_p} + N_g\Big) \f]
/// with, for `uniform()`, \f$N_g = \sum_n e^{l_n}\f$ (plain InfoNCE / SupCon), and otherwise
/// \f[ N_g = \max\Big(\frac{W - \tau^+ N \bar{e}^{+}}{1-\tau^+},\; N e^{-1/\tau}\Big),\quad
///     W = N\frac{\sum_n e^{(1+\beta) l_n}}{\sum_n e^{\beta l_n}},\quad
///     \bar{e}^{+} = \frac{1}{P}\sum_p e^{l_p}. \f]
/// `debiased(tau_plus)` is \f$\beta=0\f$ (Chuang et al. 2020, "Debiased Contrastive Learning",
/// https://arxiv.org/abs/2007.00224), `hard(beta)` is \f$\tau^+=0\f$ and
/// `hard_debiased(beta, tau_plus)` both (Robinson et al. 2021, "Contrastive Learning with Hard
/// Negative Samples", https://arxiv.org/abs/2010.04592). With one positive these are exactly the
/// reference implementations, including their clamp of \f$N_g\f$ at \f$N e^{-1/\tau}\f$.
///
/// Example:
///   auto opts = medcl::NTXentLossOptions().weighting(medcl::NegativeWeighting::debiased(0.1));
class NegativeWeighting {
 public:
  enum class Kind { Uniform, Debiased, Hard, HardDebiased };

  /// Every negative counts once: plain InfoNCE.
  static NegativeWeighting uniform() {
    return NegativeWeighting(Kind::Uniform, 0.0, 0.0);
  }
  /// Corrects for a class prior `tau_plus` in [0, 1) of false negatives among the negatives.
  static NegativeWeighting debiased(double tau_plus) {
    check_tau_plus(tau_plus);
    return NegativeWeighting(Kind::Debiased, 0.0, tau_plus);
  }
  /// Weights negatives by \f$e^{\beta l_n}\f$ (concentration `beta` >= 0).
  static NegativeWeighting hard(double beta) {
    check_beta(beta);
    return NegativeWeighting(Kind::Hard, beta, 0.0);
  }
  /// Hard-negative weighting with the debiasing correction.
  static NegativeWeighting hard_debiased(double beta, double tau_plus) {
    check_beta(beta);
    check_tau_plus(tau_plus);
    return NegativeWeighting(Kind::HardDebiased, beta, tau_plus);
  }

  Kind kind() const {
    return kind_;
  }
  /// Concentration on hard negatives (0 unless hard).
  double beta() const {
    return beta_;
  }
  /// Prior of false negatives (0 unless debiased).
  double tau_plus() const {
    return tau_plus_;
  }
  bool is_uniform() const {
    return kind_ == Kind::Uniform;
  }

  /// "uniform", "debiased(tau_plus=0.1)", "hard(beta=1)", "hard_debiased(beta=1, tau_plus=0.1)".
  std::string describe() const {
    std::ostringstream s;
    switch (kind_) {
      case Kind::Uniform:
        s << "uniform";
        break;
      case Kind::Debiased:
        s << "debiased(tau_plus=" << tau_plus_ << ")";
        break;
      case Kind::Hard:
        s << "hard(beta=" << beta_ << ")";
        break;
      case Kind::HardDebiased:
        s << "hard_debiased(beta=" << beta_ << ", tau_plus=" << tau_plus_ << ")";
        break;
    }
    return s.str();
  }

 private:
  NegativeWeighting(Kind kind, double beta, double tau_plus)
      : kind_(kind), beta_(beta), tau_plus_(tau_plus) {}

  static void check_tau_plus(double tau_plus) {
    TORCH_CHECK(
        std::isfinite(tau_plus) && tau_plus >= 0.0 && tau_plus < 1.0,
        "NegativeWeighting: tau_plus must be in [0, 1), got ",
        tau_plus);
  }
  static void check_beta(double beta) {
    TORCH_CHECK(
        std::isfinite(beta) && beta >= 0.0,
        "NegativeWeighting: beta must be finite and >= 0, got ",
        beta);
  }

  Kind kind_;
  double beta_;
  double tau_plus_;
};

} // namespace medcl
