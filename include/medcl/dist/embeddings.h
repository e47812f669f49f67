#pragma once

/// \file
/// Evaluation across ranks: every rank embeds its own contiguous shard of the evaluation inputs
/// (in eval mode, without gradient, as medcl::eval::extract_embeddings does) and the shards are
/// gathered in input order on every rank, so that the clinical evaluation runs on the whole set
/// (once on rank 0, or identically on every rank) after 1/W of the encoder work per rank.

#include <medcl/dist/process_group.h>
#include <medcl/eval/embed.h>
#include <medcl/methods/method.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace medcl {
namespace dist {

/// Rows [begin, end) of a shard.
struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
  /// end - begin.
  int64_t size() const {
    return end - begin;
  }
};

/// The contiguous rows of `rank` when `n` rows are shared by `world_size` ranks in rank order as
/// evenly as possible: the first n mod world_size ranks get ⌈n / world_size⌉ rows, the others
/// ⌊n / world_size⌋ (none only when n < world_size). The ranks' shards, concatenated in rank
/// order, are rows 0 .. n-1.
///
/// Example:
///   auto mine = medcl::dist::shard_range(10, 2, 3);   // rows [7, 10) of 4 + 3 + 3
inline ShardRange shard_range(int64_t n, int64_t rank, int64_t world_size) {
  TORCH_CHECK(n >= 0, "shard_range: the number of rows must be >= 0, got ", n);
  TORCH_CHECK(world_size >= 1, "shard_range: world_size must be >= 1, got ", world_size);
  TORCH_CHECK(
      rank >= 0 && rank < world_size,
      "shard_range: rank must be in [0, world_size) = [0, ",
      world_size,
      "), got ",
      rank);
  const int64_t base = n / world_size;
  const int64_t extra = n % world_size;
  ShardRange r;
  r.begin = rank * base + std::min(rank, extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

/// Every rank's `rows` concatenated along the first dimension in rank order, without gradient
/// (per-record outputs of a sharded evaluation: predictions, labels, keys). The ranks' first
/// dimensions may differ (0 included); dtype and the other dimensions must agree, or every rank
/// throws a c10::Error naming them. Tensors on an accelerator travel through the CPU and come back
/// on their device. `counts`, when given, receives every rank's number of rows. A one-process
/// group returns `rows` (detached).
///
/// Shape: rows [n_r, *] on rank r; result [n_0 + ... + n_{W-1}, *].
///
/// Example:
///   auto mine = medcl::dist::shard_range(n, group.rank(), group.size());
///   auto risk = model->forward(x.slice(0, mine.begin, mine.end));   // [n_r]
///   auto all_risk = medcl::dist::gather_rows(risk, group);          // [n], input order
inline at::Tensor gather_rows(
    const at::Tensor& rows,
    const ProcessGroup& group,
    std::vector<int64_t>* counts = nullptr) {
  constexpr const char* fn = "medcl::dist::gather_rows";
  const at::Tensor local = rows.defined() ? rows.detach() : rows;
  if (!local.defined() || local.device().is_cpu()) {
    return detail::all_gather(group, fn, detail::Collective::AllGather, local, counts);
  }
  return detail::all_gather(group, fn, detail::Collective::AllGather, local.cpu(), counts)
      .to(local.device());
}

namespace detail {

// The inputs' description that every rank must share: rows, dtype, number of dimensions and the
// first trailing sizes.
inline std::vector<int64_t> inputs_fields(const at::Tensor& inputs) {
  std::vector<int64_t> f{
      inputs.size(0),
      static_cast<int64_t>(inputs.scalar_type()),
      static_cast<int64_t>(inputs.dim())};
  for (int64_t d = 1; d < std::min<int64_t>(inputs.dim(), 8); ++d) {
    f.push_back(inputs.size(d));
  }
  return f;
}

// Every rank runs `embed_shard` (eval::extract_embeddings of some encoder) on its shard of
// `inputs`; the results are gathered in input order. A rank's failure (bad input, an encoder that
// throws or returns NaN) is exchanged before anything else moves, so every rank throws together.
template <typename EmbedShard>
at::Tensor extract_sharded_embeddings(
    EmbedShard&& embed_shard,
    const at::Tensor& inputs,
    const ProcessGroup& group,
    int64_t batch_size,
    at::Device device) {
  constexpr const char* fn = "medcl::dist::extract_embeddings";
  if (group.size() == 1) {
    return embed_shard(inputs, device);
  }
  const int64_t rank = group.rank();
  const int64_t world = group.size();
  std::string error;
  at::Tensor local;
  std::vector<int64_t> fields;
  if (!inputs.defined()) {
    error = std::string(fn) + ": inputs is an undefined tensor";
  } else if (inputs.dim() < 1 || inputs.size(0) == 0) {
    std::ostringstream out;
    out << fn << ": expected inputs with at least one row, got shape " << inputs.sizes();
    error = out.str();
  } else if (batch_size < 1) {
    error = std::string(fn) + ": batch_size must be >= 1, got " + std::to_string(batch_size);
  } else {
    const auto mine = shard_range(inputs.size(0), rank, world);
    if (mine.size() > 0) {
      try {
        local = embed_shard(inputs.slice(0, mine.begin, mine.end), at::Device(at::kCPU));
      } catch (const c10::Error& e) {
        error = std::string(fn) + " on rank " + std::to_string(rank) + ": " +
            e.what_without_backtrace();
      } catch (const std::exception& e) {
        error = std::string(fn) + " on rank " + std::to_string(rank) + ": " + e.what();
      }
    }
    if (error.empty()) {
      fields = inputs_fields(inputs);
      fields.push_back(local.defined() ? local.size(1) : -1);
    }
  }
  const auto all = exchange_metadata(group, fn, Collective::AllGather, fields, error);

  // Every rank passes the whole input set (same rows, dtype and shape); each embeds its shard.
  for (int64_t r = 1; r < world; ++r) {
    const auto& a = all[0];
    const auto& b = all[static_cast<size_t>(r)];
    TORCH_CHECK(
        a[0] == b[0],
        fn,
        ": ranks disagree on the number of inputs: rank 0 has ",
        a[0],
        ", rank ",
        r,
        " has ",
        b[0],
        " (every rank passes the whole input set and embeds its own shard of it)");
    TORCH_CHECK(
        std::equal(a.begin() + 1, a.end() - 1, b.begin() + 1, b.end() - 1),
        fn,
        ": ranks disagree on the inputs' dtype or shape beyond the first dimension (rank 0 and "
        "rank ",
        r,
        "); every rank passes the same input set");
  }
  // The embedding size, from the ranks that embedded something (rank 0 always does).
  const int64_t dim = all[0].back();
  for (int64_t r = 1; r < world; ++r) {
    const int64_t d = all[static_cast<size_t>(r)].back();
    TORCH_CHECK(
        d < 0 || d == dim,
        fn,
        ": ranks disagree on the embedding size: rank 0 has ",
        dim,
        ", rank ",
        r,
        " has ",
        d);
  }
  if (!local.defined()) {
    local = at::zeros({0, dim}, at::TensorOptions().dtype(at::kFloat));
  }
  std::vector<int64_t> counts;
  for (int64_t r = 0; r < world; ++r) {
    counts.push_back(shard_range(all[0][0], r, world).size());
  }
  return all_gather_rows(group, fn, local.contiguous(), counts).to(device);
}

} // namespace detail

/// Embeddings [N, D] of `inputs` by `fn` (any callable `at::Tensor(const at::Tensor&)`, as for
/// medcl::eval::extract_embeddings), computed across the ranks of `group`: every rank passes the
/// whole input set, embeds its shard (`shard_range(N, rank, world_size)`) in chunks of
/// `batch_size` without gradient, and receives every rank's rows gathered in input order — the
/// same [N, D] float32 tensor on every rank, equal to the one-process
/// `medcl::eval::extract_embeddings(fn, inputs, batch_size, device)`. A rank whose shard is empty
/// (N < world size) does not call `fn` but still takes part. The ranks first check together that
/// they pass inputs of the same number of rows, dtype and shape and that their embeddings have one
/// size; a rank whose encoder fails (an exception, NaN or Inf) throws its own message and the
/// others a c10::Error naming it, so no rank waits for another. A one-process group runs
/// medcl::eval::extract_embeddings unchanged.
///
/// Shape: inputs [N, ...] (the same on every rank) -> [N, D] float32 on `device`.
///
/// Example:
///   auto z_test = medcl::dist::extract_embeddings(
///       [&](const at::Tensor& x) { return encoder->forward(x); }, x_test, group);
///   if (group.rank() == 0) {
///     evaluation.evaluate("SimCLR", z_test, report);   // the whole test set
///   }
template <
    typename Fn,
    typename = std::enable_if_t<
        !eval::detail::is_module_holder<std::decay_t<Fn>>::value &&
        std::is_invocable<Fn&, const at::Tensor&>::value>>
at::Tensor extract_embeddings(
    Fn&& fn,
    const at::Tensor& inputs,
    const ProcessGroup& group,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  auto embed_shard = [&](const at::Tensor& shard, at::Device to) -> at::Tensor {
    return eval::extract_embeddings(fn, shard, batch_size, to);
  };
  return detail::extract_sharded_embeddings(embed_shard, inputs, group, batch_size, device);
}

/// The same for a module (a `torch::nn::ModuleHolder`): every rank puts it in eval mode for its
/// shard and restores the training mode of it and of each submodule afterwards, as
/// medcl::eval::extract_embeddings(module, ...) does.
///
/// Example:
///   auto z = medcl::dist::extract_embeddings(encoder, x_test, group, 512);
template <
    typename Holder,
    typename = std::enable_if_t<eval::detail::is_module_holder<std::decay_t<Holder>>::value>,
    typename = void>
at::Tensor extract_embeddings(
    Holder&& module,
    const at::Tensor& inputs,
    const ProcessGroup& group,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  auto embed_shard = [&](const at::Tensor& shard, at::Device to) -> at::Tensor {
    return eval::extract_embeddings(module, shard, batch_size, to);
  };
  return detail::extract_sharded_embeddings(embed_shard, inputs, group, batch_size, device);
}

/// The same for a self-supervised method (`medcl::MethodBase`): its backbone features, in eval
/// mode and without gradient, as medcl::eval::extract_embeddings(method, ...) gives them; the
/// method's training mode is restored afterwards, so this can run between training steps (on
/// every rank).
///
/// Example:
///   trainer.fit(next_batch);
///   auto z = medcl::dist::extract_embeddings(method, x_test, group);
inline at::Tensor extract_embeddings(
    MethodBase& method,
    const at::Tensor& inputs,
    const ProcessGroup& group,
    int64_t batch_size = 256,
    at::Device device = at::kCPU) {
  auto embed_shard = [&](const at::Tensor& shard, at::Device to) -> at::Tensor {
    return eval::extract_embeddings(method, shard, batch_size, to);
  };
  return detail::extract_sharded_embeddings(embed_shard, inputs, group, batch_size, device);
}

} // namespace dist
} // namespace medcl
