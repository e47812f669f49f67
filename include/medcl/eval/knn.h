#pragma once

/// \file
/// k-nearest-neighbour classification of frozen embeddings (cosine similarity), the standard
/// label-free probe of a representation.

#include <medcl/core/checks.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <cmath>

namespace medcl {
namespace eval {

/// Options of `knn_predict`.
struct KnnOptions {
  /// Number of neighbours. Default: 20
  TORCH_ARG(int64_t, k) = 20;
  /// Weight neighbours by exp(cos / temperature) (as in Wu et al. 2018 and DINO's kNN); otherwise
  /// each neighbour votes 1. Default: true
  TORCH_ARG(bool, weighted) = true;
  /// Temperature of the weights. Default: 0.07
  TORCH_ARG(double, temperature) = 0.07;
  /// Rows of the test set compared at once (memory: chunk × N_train similarities). Default: 4096
  TORCH_ARG(int64_t, chunk) = 4096;
};

/// Class scores [N_test, C] (rows sum to 1) of a kNN vote among the training embeddings, by cosine
/// similarity. Labels are 0..C-1.
///
/// Shape: train [N, D], train_labels [N] int64, test [M, D] -> [M, C] (float32).
///
/// Example:
///   auto p = medcl::eval::knn_predict(encoder(x_train), y_train, encoder(x_test), 2);
///   auto accuracy = p.argmax(1).eq(y_test).to(at::kFloat).mean();
inline at::Tensor knn_predict(
    const at::Tensor& train,
    const at::Tensor& train_labels,
    const at::Tensor& test,
    int64_t num_classes,
    const KnnOptions& options = {}) {
  constexpr const char* fn = "knn_predict";
  TORCH_CHECK(
      train.dim() == 2 && test.dim() == 2,
      fn,
      ": expected [N, D] embeddings, got ",
      train.sizes(),
      " and ",
      test.sizes());
  TORCH_CHECK(
      train.size(1) == test.size(1),
      fn,
      ": train and test embedding sizes differ: ",
      train.size(1),
      " vs ",
      test.size(1));
  TORCH_CHECK(train.size(0) > 0 && test.size(0) > 0, fn, ": empty train or test set");
  TORCH_CHECK(
      train_labels.dim() == 1 && train_labels.size(0) == train.size(0) &&
          train_labels.scalar_type() == at::kLong,
      fn,
      ": expected int64 train_labels of shape [",
      train.size(0),
      "], got ",
      train_labels.sizes(),
      " ",
      train_labels.scalar_type());
  TORCH_CHECK(num_classes >= 1, fn, ": num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK(
      train_labels.min().item<int64_t>() >= 0 && train_labels.max().item<int64_t>() < num_classes,
      fn,
      ": labels must be in [0, ",
      num_classes,
      ")");
  TORCH_CHECK(options.k() >= 1, fn, ": k must be >= 1, got ", options.k());
  TORCH_CHECK(
      std::isfinite(options.temperature()) && options.temperature() > 0,
      fn,
      ": temperature must be > 0");
  TORCH_CHECK(
      medcl::detail::all_finite(train) && medcl::detail::all_finite(test),
      fn,
      ": embeddings contain NaN or Inf");
  c10::NoGradGuard no_grad;
  auto unit = [](const at::Tensor& e) {
    auto f = e.to(at::kFloat);
    return f / f.norm(2, 1, true).clamp_min(1e-12);
  };
  auto tr = unit(train);
  auto te = unit(test);
  const int64_t k = std::min(options.k(), tr.size(0));
  auto out = at::zeros({te.size(0), num_classes}, te.options());
  auto labels = train_labels.to(tr.device());
  for (int64_t s = 0; s < te.size(0); s += options.chunk()) {
    const int64_t e = std::min(te.size(0), s + options.chunk());
    auto sim = te.slice(0, s, e).mm(tr.t());
    auto top = sim.topk(k, 1);
    auto w = options.weighted() ? (std::get<0>(top) / options.temperature()).exp()
                                : at::ones_like(std::get<0>(top));
    auto votes = out.slice(0, s, e);
    votes.scatter_add_(1, labels.index_select(0, std::get<1>(top).reshape(-1)).view({e - s, k}), w);
  }
  return out / out.sum(1, true).clamp_min(1e-30);
}

} // namespace eval
} // namespace medcl
