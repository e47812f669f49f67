#pragma once

// Helpers shared by medcl's tests: independent references are written in each test file; this
// header only holds generic tools (finite differences, comparisons, temporary directories).

#include <ATen/ATen.h>
#include <medcl/core/files.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <system_error>
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

/// A fresh, empty directory under the system's temporary directory, removed with everything in it
/// at destruction. Unique across the processes ctest runs in parallel: the name joins a random
/// number, the clock and a counter, and a name that exists already is never reused.
struct TempDir {
  std::filesystem::path path;

  TempDir() {
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    for (;;) {
      const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
      path = std::filesystem::temp_directory_path() /
          ("medcl-test-" + std::to_string(rd()) + "-" + std::to_string(ticks) + "-" +
           std::to_string(counter++));
      // create_directory is false when the directory exists: someone else's, try another name.
      if (std::filesystem::create_directory(path)) {
        break;
      }
    }
  }
  ~TempDir() {
    std::error_code ec;
    medcl::remove_tree(path.string(), ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// The path of `name` inside the directory.
  std::string file(const std::string& name) const {
    return (path / name).string();
  }
  /// The names of the directory's entries, sorted.
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }
};

} // namespace medcl_test
