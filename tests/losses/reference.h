#pragma once

#include <medcl/core/negative_weighting.h>

// Independent references for the InfoNCE family, written with plain loops in double precision
// directly from the papers' formulas (and the debiased / hard-negative reference code's
// arithmetic), without any of the library's code.

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace medcl_test {

struct RefWeighting {
  double beta = 0;     // hard-negative concentration
  double tau_plus = 0; // debiasing prior
  bool uniform = true;
};

// Loss of one anchor row: logits l (already divided by tau), which entries are positives and
// which are candidates at all (excluded entries are neither).
inline double ref_row(
    const std::vector<double>& l,
    const std::vector<bool>& pos,
    const std::vector<bool>& cand,
    double inv_tau,
    const RefWeighting& w,
    bool* valid) {
  double sum_pos_logit = 0, sum_pos_exp = 0, sum_neg_exp = 0, sum_imp = 0, sum_imp_neg = 0;
  int np = 0, nn = 0;
  for (size_t j = 0; j < l.size(); ++j) {
    if (!cand[j]) {
      continue;
    }
    if (pos[j]) {
      ++np;
      sum_pos_logit += l[j];
      sum_pos_exp += std::exp(l[j]);
    } else {
      ++nn;
      const double e = std::exp(l[j]);
      sum_neg_exp += e;
      const double imp = std::pow(e, w.beta); // neg ** beta, as in Robinson et al.'s code
      sum_imp += imp;
      sum_imp_neg += imp * e;
    }
  }
  *valid = np > 0 && nn > 0;
  if (!*valid) {
    return 0;
  }
  double ng = sum_neg_exp;
  if (!w.uniform) {
    const double reweight = sum_imp_neg / (sum_imp / nn);
    const double mean_pos = sum_pos_exp / np;
    ng = (-w.tau_plus * nn * mean_pos + reweight) / (1 - w.tau_plus);
    ng = std::max(ng, nn * std::exp(-inv_tau));
  }
  return -sum_pos_logit / np + std::log(sum_pos_exp + ng);
}

// Mean over valid rows of ref_row for logits = cos(A, C) / tau with the given masks.
inline double ref_loss(
    const at::Tensor& a,
    const at::Tensor& c,
    const std::vector<std::vector<bool>>& pos,
    const std::vector<std::vector<bool>>& cand,
    double tau,
    const RefWeighting& w) {
  auto at_ = a.to(at::kDouble).contiguous();
  auto ct_ = c.to(at::kDouble).contiguous();
  auto ad = at_.accessor<double, 2>();
  auto cd = ct_.accessor<double, 2>();
  const int64_t n = at_.size(0), m = ct_.size(0), d = at_.size(1);
  double total = 0;
  int valid_rows = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> l(m);
    double na = 0;
    for (int64_t k = 0; k < d; ++k) {
      na += ad[i][k] * ad[i][k];
    }
    for (int64_t j = 0; j < m; ++j) {
      double dot = 0, nc = 0;
      for (int64_t k = 0; k < d; ++k) {
        dot += ad[i][k] * cd[j][k];
        nc += cd[j][k] * cd[j][k];
      }
      l[j] = dot / std::sqrt(na * nc) / tau;
    }
    bool valid = false;
    const double r = ref_row(l, pos[i], cand[i], 1.0 / tau, w, &valid);
    if (valid) {
      total += r;
      ++valid_rows;
    }
  }
  return valid_rows > 0 ? total / valid_rows : 0.0;
}

using Mask = std::vector<std::vector<bool>>;

// A mask [n, m] with f(i, j) at (i, j).
inline Mask make_mask(int64_t n, int64_t m, const std::function<bool(int64_t, int64_t)>& f) {
  Mask out(n, std::vector<bool>(m));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      out[i][j] = f(i, j);
    }
  }
  return out;
}

// A negative weighting and its description for the reference.
struct Weighted {
  medcl::NegativeWeighting w;
  RefWeighting ref;
};

// Every negative weighting, with its reference counterpart.
inline std::vector<Weighted> weightings() {
  return {
      {medcl::NegativeWeighting::uniform(), {0, 0, true}},
      {medcl::NegativeWeighting::debiased(0.1), {0, 0.1, false}},
      {medcl::NegativeWeighting::hard(1.0), {1.0, 0, false}},
      {medcl::NegativeWeighting::hard_debiased(0.5, 0.05), {0.5, 0.05, false}},
  };
}

// -mean_b sum_k q_bk log softmax(z_b / temp)_k in double: the soft-label cross-entropy of DINO and
// SwAV, by loops.
inline double cross_entropy_rows(const at::Tensor& q, const at::Tensor& z, double temp) {
  // -mean_b sum_k q log softmax(z / temp)
  double total = 0;
  for (int64_t i = 0; i < z.size(0); ++i) {
    double mx = -1e300;
    for (int64_t k = 0; k < z.size(1); ++k)
      mx = std::max(mx, z[i][k].item<double>() / temp);
    double s = 0;
    for (int64_t k = 0; k < z.size(1); ++k)
      s += std::exp(z[i][k].item<double>() / temp - mx);
    for (int64_t k = 0; k < z.size(1); ++k) {
      total -= q[i][k].item<double>() * (z[i][k].item<double>() / temp - mx - std::log(s));
    }
  }
  return total / z.size(0);
}

} // namespace medcl_test
