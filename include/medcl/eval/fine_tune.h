#pragma once

/// \file
/// Fine-tuning protocol: a copy of the pretrained encoder plus a linear head trained end to end
/// with cross-entropy, the epoch with the best validation loss kept. The caller's encoder is
/// untouched.

#include <medcl/core/checks.h>
#include <medcl/eval/embed.h>
#include <medcl/eval/linear_probe.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace medcl {
namespace eval {

/// Options of `fine_tune`.
struct FineTuneOptions {
  /// Passes over the training rows. Default: 20
  TORCH_ARG(int64_t, epochs) = 20;
  /// Rows per mini-batch (the last batch of an epoch may be smaller). Default: 32
  TORCH_ARG(int64_t, batch_size) = 32;
  /// AdamW learning rate of the encoder's parameters. Default: 1e-4
  TORCH_ARG(double, encoder_lr) = 1e-4;
  /// AdamW learning rate of the linear head. Default: 1e-2
  TORCH_ARG(double, head_lr) = 1e-2;
  /// AdamW (decoupled) weight decay of both groups. Default: 1e-4
  TORCH_ARG(double, weight_decay) = 1e-4;
  /// Seed of the head's initialisation and of the mini-batch order. Default: 0
  TORCH_ARG(uint64_t, seed) = 0;
};

/// What `fine_tune` returns.
struct FineTuneResult {
  /// Class probabilities [M, C] (float32, CPU) of the rows passed as `predict`, by the encoder and
  /// head of the best epoch.
  at::Tensor probabilities;
  /// The kept epoch (1-based) and its validation loss.
  int64_t best_epoch = 0;
  double best_validation_loss = 0;
  /// Mean training loss and validation loss of every epoch.
  std::vector<double> train_loss;
  std::vector<double> validation_loss;
};

namespace detail {

// Mean cross-entropy of `rows` in chunks, without gradient (eval mode set by the caller).
template <typename Forward>
double
mean_cross_entropy(Forward& forward, const at::Tensor& x, const at::Tensor& y, int64_t chunk) {
  c10::NoGradGuard no_grad;
  double total = 0;
  for (int64_t s = 0; s < x.size(0); s += chunk) {
    const int64_t e = std::min(x.size(0), s + chunk);
    at::Tensor logits = forward(x.slice(0, s, e));
    logits = logits.to(at::kDouble);
    total +=
        at::cross_entropy_loss(logits, y.slice(0, s, e).to(logits.device()), {}, at::Reduction::Sum)
            .item<double>();
  }
  return total / static_cast<double>(x.size(0));
}

} // namespace detail

/// Fine-tunes a deep copy (`clone()`) of `encoder` with a linear head on its output: cross-entropy,
/// AdamW with learning rate `encoder_lr` for the encoder and `head_lr` for the head, `epochs`
/// passes over the training rows in mini-batches shuffled by a generator seeded with `seed`. After
/// each epoch the validation loss is computed (eval mode); the encoder and head of the epoch with
/// the lowest validation loss (the first, on ties) are kept — early stopping by model selection —
/// and give the probabilities of the `predict` rows. The caller's encoder (parameters, buffers,
/// mode) is not changed.
///
/// `Encoder` is a `torch::nn::ModuleHolder` (e.g. `torch::nn::Sequential` or a `TORCH_MODULE`)
/// whose module is Cloneable and maps [B, ...] to [B, D]. The rows are used on the device they are
/// on; the encoder must live there too. Deterministic for a seed when the encoder has no random
/// layers (dropout draws from LibTorch's global generator).
///
/// Shape: x [N, ...], y [N] int64 in [0, C), val_x [M, ...], val_y [M], predict [P, ...] ->
/// probabilities [P, C].
///
/// Example:
///   auto r = medcl::eval::fine_tune(encoder, x_train, y_train, x_val, y_val, x_test, 2,
///                                   FineTuneOptions().epochs(30).encoder_lr(1e-4).seed(7));
///   auto auc = medcl::eval::auroc(to_vector(r.probabilities.select(1, 1)), y_test);
template <typename Encoder>
FineTuneResult fine_tune(
    const Encoder& encoder,
    const at::Tensor& x,
    const at::Tensor& y,
    const at::Tensor& val_x,
    const at::Tensor& val_y,
    const at::Tensor& predict,
    int64_t num_classes,
    const FineTuneOptions& options = {}) {
  static_assert(
      detail::is_module_holder<Encoder>::value,
      "fine_tune: the encoder must be a torch::nn::ModuleHolder (torch::nn::Sequential, or a "
      "module "
      "declared with TORCH_MODULE) so that it can be deep-copied with clone()");
  constexpr const char* fn = "fine_tune";
  TORCH_CHECK(!encoder.is_empty(), fn, ": the encoder holder is empty");
  TORCH_CHECK(num_classes >= 2, fn, ": num_classes must be >= 2, got ", num_classes);
  TORCH_CHECK(options.epochs() >= 1, fn, ": epochs must be >= 1, got ", options.epochs());
  TORCH_CHECK(
      options.batch_size() >= 1, fn, ": batch_size must be >= 1, got ", options.batch_size());
  TORCH_CHECK(
      options.encoder_lr() >= 0 && options.head_lr() > 0 && options.weight_decay() >= 0,
      fn,
      ": expected encoder_lr >= 0, head_lr > 0, weight_decay >= 0, got ",
      options.encoder_lr(),
      ", ",
      options.head_lr(),
      ", ",
      options.weight_decay());
  auto check_split = [&](const char* split, const at::Tensor& xs, const at::Tensor& ys) {
    TORCH_CHECK(
        xs.defined() && xs.dim() >= 1 && xs.size(0) > 0,
        fn,
        ": the ",
        split,
        " split is empty or undefined");
    detail::check_label_rows(fn, split, xs.size(0), ys, num_classes);
    TORCH_CHECK(medcl::detail::all_finite(xs), fn, ": the ", split, " inputs contain NaN or Inf");
  };
  check_split("training", x, y);
  check_split("validation", val_x, val_y);
  TORCH_CHECK(
      y.min().item<int64_t>() != y.max().item<int64_t>(),
      fn,
      ": the training labels hold a single class");
  TORCH_CHECK(predict.defined() && predict.dim() >= 1, fn, ": the rows to predict are undefined");

  auto copy_ptr = std::dynamic_pointer_cast<typename Encoder::ContainedType>(encoder->clone());
  TORCH_INTERNAL_ASSERT(copy_ptr != nullptr, "fine_tune: clone() returned another module type");
  Encoder enc(copy_ptr);
  const auto device = x.device();

  // Embedding size from one row.
  int64_t dim = 0;
  {
    c10::NoGradGuard no_grad;
    enc->eval();
    auto z = enc->forward(x.slice(0, 0, 1));
    TORCH_CHECK(
        z.dim() == 2 && z.size(0) == 1,
        fn,
        ": expected the encoder to return [B, D], got ",
        z.sizes(),
        " for one row");
    dim = z.size(1);
  }
  auto gen = at::detail::createCPUGenerator(options.seed());
  torch::nn::Linear head(dim, num_classes);
  {
    // Head initialisation from the seeded generator (LibTorch's default init uses the global one).
    c10::NoGradGuard no_grad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(dim));
    head->weight.copy_(at::rand({num_classes, dim}, gen, at::kFloat) * (2 * bound) - bound);
    head->bias.copy_(at::rand({num_classes}, gen, at::kFloat) * (2 * bound) - bound);
  }
  head->to(device);

  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      enc->parameters(),
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(options.encoder_lr()).weight_decay(options.weight_decay())));
  groups.emplace_back(
      head->parameters(),
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(options.head_lr()).weight_decay(options.weight_decay())));
  torch::optim::AdamW opt(std::move(groups));

  auto forward = [&](const at::Tensor& xb) { return head->forward(enc->forward(xb)); };
  auto snapshot = [&]() {
    std::vector<at::Tensor> s;
    for (const auto& t : enc->parameters()) {
      s.push_back(t.detach().clone());
    }
    for (const auto& t : enc->buffers()) {
      s.push_back(t.detach().clone());
    }
    for (const auto& t : head->parameters()) {
      s.push_back(t.detach().clone());
    }
    return s;
  };
  auto restore = [&](const std::vector<at::Tensor>& s) {
    c10::NoGradGuard no_grad;
    size_t i = 0;
    for (auto& t : enc->parameters()) {
      t.copy_(s[i++]);
    }
    for (auto& t : enc->buffers()) {
      t.copy_(s[i++]);
    }
    for (auto& t : head->parameters()) {
      t.copy_(s[i++]);
    }
  };

  c10::AutoGradMode grad(true);
  FineTuneResult out;
  std::vector<at::Tensor> best;
  out.best_validation_loss = std::numeric_limits<double>::infinity();
  const int64_t n = x.size(0);
  const int64_t bs = options.batch_size();
  for (int64_t epoch = 1; epoch <= options.epochs(); ++epoch) {
    enc->train();
    head->train();
    auto order = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)).to(device);
    double total = 0;
    for (int64_t s = 0; s < n; s += bs) {
      auto idx = order.slice(0, s, std::min(n, s + bs));
      at::Tensor logits = forward(x.index_select(0, idx));
      at::Tensor loss =
          at::cross_entropy_loss(logits, y.index_select(0, idx.to(y.device())).to(device));
      opt.zero_grad();
      loss.backward();
      opt.step();
      total += loss.item<double>() * static_cast<double>(idx.size(0));
    }
    out.train_loss.push_back(total / static_cast<double>(n));
    enc->eval();
    head->eval();
    const double v = detail::mean_cross_entropy(forward, val_x, val_y, bs);
    TORCH_CHECK(std::isfinite(v), fn, ": the validation loss is not finite at epoch ", epoch);
    out.validation_loss.push_back(v);
    if (v < out.best_validation_loss) {
      out.best_validation_loss = v;
      out.best_epoch = epoch;
      best = snapshot();
    }
  }
  restore(best);
  enc->eval();
  head->eval();
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> probs;
  for (int64_t s = 0; s < predict.size(0); s += bs) {
    probs.push_back(at::softmax(forward(predict.slice(0, s, std::min(predict.size(0), s + bs))), 1)
                        .to(at::kCPU, at::kFloat));
  }
  out.probabilities = predict.size(0) > 0 ? at::cat(probs) : at::zeros({0, num_classes});
  return out;
}

} // namespace eval
} // namespace medcl
