#pragma once

/// \file
/// Evaluation embeddings across the ranks of a data-parallel run: every rank embeds its own
/// contiguous shard of the evaluation set (eval mode, no gradient, chunks, as
/// medcl::eval::extract_embeddings does in one process) and every rank receives the whole set's
/// embeddings in input order, so that the clinical evaluation runs on all records (once on rank
/// 0, or identically on every rank) after 1/W of the encoder work per rank.

#include <medcl/dist/process_group.h>
#include <medcl/dist/shards.h>
#include <medcl/eval/embed.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <type_traits>
#include <utility>

namespace medcl {
namespace eval {
namespace detail {

// A module with `backbone_features(x)`, such as medcl::MethodBase (whose own headers sit above
// this layer).
template <typename T, typename = void>
struct has_backbone_features : std::false_type {};
template <typename T>
struct has_backbone_features<
    T,
    std::void_t<decltype(std::declval<T&>().backbone_features(std::declval<const at::Tensor&>()))>>
    : std::is_base_of<torch::nn::Module, T> {};

} // namespace detail

/// Embeddings [N, D] of `inputs` by `fn` (any callable `at::Tensor(const at::Tensor&)`, as for the
/// one-process overload), computed across the ranks of `group`: every rank passes the whole input
/// set, embeds its shard (`medcl::dist::shard_range(N, rank, world_size)`) in chunks of
/// `batch_size` without gradient, and receives every rank's rows in input order — the same [N, D]
/// float32 tensor on every rank, equal to the one-process
/// `extract_embeddings(fn, inputs, batch_size, device)` when `fn` embeds rows independently. A
/// rank whose shard is empty (N < world size) does not call `fn` but takes part. The ranks first
/// check together that their inputs have the same number of rows, dtype and shape and that their
/// embeddings have one size; a rank whose encoder fails (an exception, NaN or Inf) throws its own
/// message and the others a c10::Error naming it, so that no rank waits for another. A one-process
/// group runs the one-process overload. Built on medcl::dist::map_shards (medcl/dist/shards.h).
///
/// Shape: inputs [N, ...] (the same on every rank) -> [N, D] float32 on `device`.
///
/// Example:
///   auto embed = [&](const at::Tensor& x) { return encoder->forward(x); };
///   auto z = medcl::eval::extract_embeddings(embed, x_test, group);
///   if (group.rank() == 0) {
///     ev.evaluate("SimCLR", z, report);   // the whole test set, once
///   }
template <
    typename Fn,
    typename = std::enable_if_t<
        !detail::is_module_holder<std::decay_t<Fn>>::value &&
        std::is_invocable<Fn&, const at::Tensor&>::value>>
at::Tensor extract_embeddings(
    Fn&& fn,
    const at::Tensor& inputs,
    const dist::ProcessGroup& group,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  if (group.size() == 1) {
    return extract_embeddings(fn, inputs, batch_size, device);
  }
  auto embed_shard = [&](const at::Tensor& shard) -> at::Tensor {
    return extract_embeddings(fn, shard, batch_size, at::Device(at::kCPU));
  };
  return dist::detail::map_shards("medcl::eval::extract_embeddings", embed_shard, inputs, group)
      .to(device);
}

/// The same for a module (a `torch::nn::ModuleHolder`): every rank puts it in eval mode for the
/// extraction and restores the training mode of it and of each submodule afterwards, as the
/// one-process `extract_embeddings(module, inputs)` does.
///
/// Example:
///   auto z = medcl::eval::extract_embeddings(encoder, x_test, group, 512);
template <
    typename Holder,
    typename = std::enable_if_t<detail::is_module_holder<std::decay_t<Holder>>::value>,
    typename = void>
at::Tensor extract_embeddings(
    Holder&& module,
    const at::Tensor& inputs,
    const dist::ProcessGroup& group,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  TORCH_CHECK(!module.is_empty(), "extract_embeddings: the module holder is empty");
  detail::EvalModeGuard guard(*module);
  auto forward = [&](const at::Tensor& x) -> at::Tensor { return module->forward(x); };
  return extract_embeddings(forward, inputs, group, batch_size, device);
}

/// The same for a self-supervised method (`medcl::MethodBase`: SimCLR, MoCo, ...; any module with
/// `backbone_features(x)`): its backbone features in eval mode and without gradient, as the
/// one-process `extract_embeddings(method, inputs)` gives them; the method's training mode (and
/// each submodule's) is restored afterwards, so this can run between training steps, on every
/// rank.
///
/// Example:
///   trainer.fit(next_batch);
///   auto z = medcl::eval::extract_embeddings(method, x_test, group);
template <
    typename Method,
    typename = std::enable_if_t<detail::has_backbone_features<Method>::value>,
    typename = void,
    typename = void>
at::Tensor extract_embeddings(
    Method& method,
    const at::Tensor& inputs,
    const dist::ProcessGroup& group,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  detail::EvalModeGuard guard(method);
  auto features = [&](const at::Tensor& x) -> at::Tensor { return method.backbone_features(x); };
  return extract_embeddings(features, inputs, group, batch_size, device);
}

} // namespace eval
} // namespace medcl
