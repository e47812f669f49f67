#pragma once

/// \file
/// Embeddings of a frozen encoder: the encoder's forward (or a method's backbone) run over the
/// inputs in chunks, in eval mode without gradient, gathered as one [N, D] float tensor for the
/// probes, retrieval and audits.

#include <medcl/core/checks.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace medcl {
namespace eval {
namespace detail {

template <typename T, typename = void>
struct is_module_holder : std::false_type {};
template <typename T>
struct is_module_holder<T, std::void_t<typename T::ContainedType>>
    : std::is_base_of<torch::nn::ModuleHolder<typename T::ContainedType>, T> {};

// Puts a module in eval mode for the guard's lifetime and then restores the training mode of the
// module and of each submodule as it was (a module may keep parts of itself in eval mode), also
// when an error is thrown.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& m) : module_(m), was_training_(m.is_training()) {
    // Pre-order: restoring in this order leaves each submodule with its own flag, since
    // `train(on)` also sets every descendant.
    for (const auto& sub : m.modules(/*include_self=*/false)) {
      submodules_.emplace_back(sub, sub->is_training());
    }
    module_.eval();
  }
  ~EvalModeGuard() {
    module_.train(was_training_);
    for (auto& [sub, on] : submodules_) {
      sub->train(on);
    }
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> submodules_;
};

} // namespace detail

/// Embeddings [N, D] of `inputs` (N rows along dimension 0) by `fn`, any callable
/// `at::Tensor(const at::Tensor&)` such as an encoder's forward. The rows go through `fn` in chunks
/// of `batch_size` under `NoGradGuard`; each chunk's output must be [b, D] and finite. The result
/// is float32 on `device` (CPU by default, so that large sets do not fill an accelerator).
///
/// Shape: inputs [N, ...] -> [N, D] float32.
///
/// Example:
///   auto z = medcl::eval::extract_embeddings(
///       [&](const at::Tensor& x) { return encoder->forward(x.to(at::kCUDA)); }, x_test, 512);
template <
    typename Fn,
    typename = std::enable_if_t<
        !detail::is_module_holder<std::decay_t<Fn>>::value &&
        std::is_invocable<Fn&, const at::Tensor&>::value>>
at::Tensor extract_embeddings(
    Fn&& fn,
    const at::Tensor& inputs,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  constexpr const char* name = "extract_embeddings";
  TORCH_CHECK(inputs.defined(), name, ": inputs is an undefined tensor");
  TORCH_CHECK(
      inputs.dim() >= 1 && inputs.size(0) > 0,
      name,
      ": expected inputs with at least one row, got shape ",
      inputs.sizes());
  TORCH_CHECK(batch_size >= 1, name, ": batch_size must be >= 1, got ", batch_size);
  c10::NoGradGuard no_grad;
  const int64_t n = inputs.size(0);
  std::vector<at::Tensor> parts;
  int64_t dim = -1;
  for (int64_t s = 0; s < n; s += batch_size) {
    const int64_t e = std::min(n, s + batch_size);
    at::Tensor z = fn(inputs.slice(0, s, e));
    TORCH_CHECK(
        z.defined() && z.dim() == 2 && z.size(0) == e - s,
        name,
        ": expected the encoder to return [",
        e - s,
        ", D] for rows ",
        s,
        "..",
        e - 1,
        ", got ",
        z.defined() ? z.sizes() : at::IntArrayRef{});
    TORCH_CHECK(
        dim < 0 || z.size(1) == dim,
        name,
        ": the embedding size changed between chunks: ",
        dim,
        " then ",
        z.size(1));
    dim = z.size(1);
    TORCH_CHECK(
        medcl::detail::all_finite(z),
        name,
        ": the encoder returned NaN or Inf for rows ",
        s,
        "..",
        e - 1);
    parts.push_back(z.detach().to(device, at::kFloat));
  }
  return at::cat(parts);
}

/// Embeddings of `inputs` by a module (a `torch::nn::ModuleHolder` such as
/// `torch::nn::Sequential`): the module is put in eval() mode for the extraction (dropout off,
/// batch-norm running statistics) and the previous training mode of it and of each submodule is
/// restored afterwards, also when an error is thrown. A self-supervised method
/// (`medcl::MethodBase`) has its own overload, declared with it in `medcl/methods/method.h`:
/// `extract_embeddings(method, x)` embeds with the method's backbone (as `method.embed`).
///
/// Shape: inputs [N, ...] -> [N, D] float32.
///
/// Example:
///   torch::nn::Sequential encoder(torch::nn::Linear(32, 16), torch::nn::ReLU());
///   auto z = medcl::eval::extract_embeddings(encoder, x);
template <
    typename Holder,
    typename = std::enable_if_t<detail::is_module_holder<std::decay_t<Holder>>::value>,
    typename = void>
at::Tensor extract_embeddings(
    Holder&& module,
    const at::Tensor& inputs,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  TORCH_CHECK(!module.is_empty(), "extract_embeddings: the module holder is empty");
  detail::EvalModeGuard guard(*module);
  return extract_embeddings(
      [&](const at::Tensor& x) -> at::Tensor { return module->forward(x); },
      inputs,
      batch_size,
      device);
}

} // namespace eval
} // namespace medcl
