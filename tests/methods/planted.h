#pragma once

// A small planted problem for self-supervised methods: each sample has a 4-dimensional class signal
// and 28 nuisance dimensions of large variance. An augmentation redraws the nuisance and jitters
// the signal, so a method that learns the invariance its views encode keeps the signal and drops
// the nuisance; a random encoder's cosine neighbourhoods are dominated by the nuisance.

#include <medcl/eval/knn.h>
#include <medcl/methods/method.h>

#include <torch/torch.h>

namespace medcl_test {

struct Planted {
  static constexpr int64_t kSignal = 4;
  static constexpr int64_t kNuisance = 28;
  static constexpr int64_t kDim = kSignal + kNuisance;

  at::Tensor signal;  // [N, 4] clean class signal of each sample
  at::Tensor labels;  // [N] 0/1
  at::Tensor patient; // [N] two samples per patient

  Planted(int64_t n, uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    labels = at::randint(0, 2, {n}, gen, at::kLong);
    auto centre = at::tensor({1.0f, -1.0f, 1.0f, -1.0f}).unsqueeze(0);
    signal = centre * (2 * labels.to(at::kFloat) - 1).unsqueeze(1) +
        0.6 * at::randn({n, kSignal}, gen, at::kFloat);
    patient = at::arange(n, at::kLong).div(2, "floor");
  }
  // One augmented view of `signal` rows (nuisance redrawn, signal jittered).
  static at::Tensor view(const at::Tensor& signal, at::Generator& gen) {
    const int64_t n = signal.size(0);
    auto s = signal + 0.1 * at::randn({n, kSignal}, gen, at::kFloat);
    auto nuisance = 3.0 * at::randn({n, kNuisance}, gen, at::kFloat);
    return at::cat({s, nuisance}, 1);
  }
  // A fixed "clean" rendering used for evaluation (one nuisance draw per sample).
  at::Tensor rendering(uint64_t seed) const {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    return view(signal, gen);
  }
};

inline torch::nn::Sequential small_encoder(int64_t out = 16) {
  return torch::nn::Sequential(
      torch::nn::Linear(Planted::kDim, 64), torch::nn::ReLU(), torch::nn::Linear(64, out));
}

// kNN accuracy of `embed` on the planted label: the first half of the samples votes for the second.
inline double knn_accuracy(const at::Tensor& embeddings, const at::Tensor& labels) {
  const int64_t n = embeddings.size(0);
  const int64_t h = n / 2;
  auto p = medcl::eval::knn_predict(
      embeddings.slice(0, 0, h),
      labels.slice(0, 0, h),
      embeddings.slice(0, h, n),
      2,
      medcl::eval::KnnOptions().k(10));
  return p.argmax(1).eq(labels.slice(0, h, n)).to(at::kDouble).mean().item<double>();
}

inline double probe_accuracy(medcl::MethodBase& method, const Planted& data, const at::Tensor& x) {
  c10::NoGradGuard no_grad;
  const bool was_training = method.is_training();
  method.eval();
  auto e = method.embed(x);
  method.train(was_training);
  return knn_accuracy(e, data.labels);
}

} // namespace medcl_test
