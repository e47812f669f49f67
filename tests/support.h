#pragma once

// Helpers shared by medcl's tests: independent references are written in each test file; this
// header only holds generic tools (finite differences, comparisons).

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <vector>

namespace medcl_test {

/// Relative distance ||a - b|| / max(||b||, tiny), in float64.
inline double rel_err(const at::Tensor& a, const at::Tensor& b) {
  auto ad = a.to(at::kDouble).cpu();
  auto bd = b.to(at::kDouble).cpu();
  return (ad - bd).norm().item<double>() / std::max(bd.norm().item<double>(), 1e-300);
}

/// Central finite differences of a scalar function of `x` (float64), element by element.
inline at::Tensor finite_difference(
    const std::function<double(const at::Tensor&)>& f,
    const at::Tensor& x,
    double h = 1e-6) {
  auto g = at::zeros_like(x);
  auto xf = x.detach().clone();
  auto flat = xf.view(-1);
  auto gflat = g.view(-1);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double orig = flat[i].item<double>();
    flat[i] = orig + h;
    const double fp = f(xf);
    flat[i] = orig - h;
    const double fm = f(xf);
    flat[i] = orig;
    gflat[i] = (fp - fm) / (2 * h);
  }
  return g;
}

/// Gradient of a scalar function by autograd.
inline at::Tensor autograd_grad(
    const std::function<at::Tensor(const at::Tensor&)>& f,
    const at::Tensor& x) {
  auto xv = x.detach().clone().requires_grad_(true);
  auto y = f(xv);
  y.backward();
  return xv.grad();
}

inline at::Tensor cosine_matrix(const at::Tensor& a, const at::Tensor& b) {
  auto an = a / a.norm(2, 1, true);
  auto bn = b / b.norm(2, 1, true);
  return an.mm(bn.t());
}

} // namespace medcl_test
