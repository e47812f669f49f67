#pragma once

/// \file
/// Work shared out by rows across ranks: `shard_range` (which contiguous rows are this rank's),
/// `map_shards` (every rank runs a function on its rows of a set that every rank holds, and every
/// rank receives all the results in input order) and `gather_rows` (every rank's per-record
/// outputs in rank order). The evaluation embeddings across ranks
/// (`medcl::eval::extract_embeddings(encoder, inputs, group)`, medcl/eval/embed_across_ranks.h)
/// are built on them.

#include <medcl/dist/process_group.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
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
///   auto risk = head->forward(z.slice(0, mine.begin, mine.end));   // [n_r]
///   auto all_risk = medcl::dist::gather_rows(risk, group);         // [n], input order
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

// The most dimensions of the inputs and of the results that map_shards compares between ranks
// (the exchange carries at most kMaxMetadataFields integers).
constexpr int64_t kShardMaxDims = 12;

// {dtype, number of dimensions, sizes beyond the first (up to kShardMaxDims - 1 of them)}.
inline std::vector<int64_t> shard_tensor_fields(const at::Tensor& t) {
  std::vector<int64_t> f{static_cast<int64_t>(t.scalar_type()), static_cast<int64_t>(t.dim())};
  for (int64_t d = 1; d < std::min<int64_t>(t.dim(), kShardMaxDims); ++d) {
    f.push_back(t.size(d));
  }
  f.resize(static_cast<size_t>(kShardMaxDims + 1), -1);
  return f;
}

inline std::string describe_trailing(const std::vector<int64_t>& f, size_t at) {
  std::ostringstream out;
  out << "[*";
  for (int64_t d = 1; d < std::min<int64_t>(f[at + 1], kShardMaxDims); ++d) {
    out << ", " << f[at + 1 + static_cast<size_t>(d)];
  }
  out << "] " << c10::toString(static_cast<c10::ScalarType>(f[at]));
  return out.str();
}

/// map_shards with `who` starting its messages.
template <typename Fn>
at::Tensor map_shards(
    const char* who,
    Fn&& fn,
    const at::Tensor& inputs,
    const ProcessGroup& group,
    std::vector<int64_t>* counts = nullptr) {
  c10::NoGradGuard no_grad;
  const int64_t rank = group.rank();
  const int64_t world = group.size();
  // This rank's own checks and its shard's result; an error is kept for the exchange, so that
  // every rank stops together.
  std::string error;
  at::Tensor local;
  ShardRange mine;
  if (!inputs.defined()) {
    error = std::string(who) + ": the inputs are an undefined tensor";
  } else if (inputs.dim() < 1 || inputs.size(0) == 0) {
    std::ostringstream out;
    out << who << ": expected inputs with at least one row, got shape " << inputs.sizes();
    error = out.str();
  } else {
    mine = shard_range(inputs.size(0), rank, world);
    if (mine.size() > 0) {
      try {
        local = fn(inputs.slice(0, mine.begin, mine.end));
        if (!local.defined() || local.dim() < 1 || local.size(0) != mine.size()) {
          std::ostringstream out;
          out << "expected [" << mine.size() << ", ...] for the rows " << mine.begin << ".."
              << mine.end - 1 << ", got "
              << (local.defined() ? c10::str(local.sizes()) : std::string("an undefined tensor"));
          error = out.str();
        }
      } catch (const c10::Error& e) {
        error = e.what_without_backtrace();
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty()) {
        error = std::string(who) + " on rank " + std::to_string(rank) + ": " + error;
      }
    }
  }
  if (world == 1) {
    TORCH_CHECK(error.empty(), error);
    if (counts != nullptr) {
      *counts = {local.size(0)};
    }
    return local.detach().cpu();
  }

  // Fields: the inputs' rows, the inputs' description, whether this rank has a result, and the
  // result's description.
  std::vector<int64_t> fields;
  if (error.empty()) {
    fields.push_back(inputs.size(0));
    const auto in = shard_tensor_fields(inputs);
    fields.insert(fields.end(), in.begin(), in.end());
    fields.push_back(local.defined() ? 1 : 0);
    const auto out =
        local.defined() ? shard_tensor_fields(local) : std::vector<int64_t>(kShardMaxDims + 1, -1);
    fields.insert(fields.end(), out.begin(), out.end());
  }
  const auto all = exchange_metadata(group, who, Collective::AllGather, fields, error);
  const size_t in_at = 1;
  const size_t has_at = in_at + static_cast<size_t>(kShardMaxDims) + 1;
  const size_t out_at = has_at + 1;
  for (int64_t r = 1; r < world; ++r) {
    const auto& a = all[0];
    const auto& b = all[static_cast<size_t>(r)];
    TORCH_CHECK(
        a[0] == b[0],
        who,
        ": ranks disagree on the number of inputs: rank 0 has ",
        a[0],
        ", rank ",
        r,
        " has ",
        b[0],
        " (every rank passes the whole input set and works on its own shard of it)");
    TORCH_CHECK(
        std::equal(a.begin() + in_at, a.begin() + has_at, b.begin() + in_at),
        who,
        ": ranks disagree on the inputs beyond their number of rows: rank 0 has ",
        describe_trailing(a, in_at),
        ", rank ",
        r,
        " has ",
        describe_trailing(b, in_at),
        " (every rank passes the same input set)");
  }
  // The result's description, from the ranks whose shard was not empty (rank 0's never is).
  for (int64_t r = 1; r < world; ++r) {
    const auto& a = all[0];
    const auto& b = all[static_cast<size_t>(r)];
    TORCH_CHECK(
        b[has_at] == 0 || std::equal(a.begin() + out_at, a.end(), b.begin() + out_at),
        who,
        ": ranks disagree on their results beyond the number of rows: rank 0 has ",
        describe_trailing(a, out_at),
        ", rank ",
        r,
        " has ",
        describe_trailing(b, out_at));
  }
  if (!local.defined()) {
    // An empty shard: no result of its own, zero rows of the shape the others agree on.
    const auto& f = all[0];
    std::vector<int64_t> shape{0};
    for (int64_t d = 1; d < f[out_at + 1]; ++d) {
      shape.push_back(f[out_at + 1 + static_cast<size_t>(d)]);
    }
    local = at::empty(shape, at::TensorOptions().dtype(static_cast<at::ScalarType>(f[out_at])));
  }
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < world; ++r) {
    rows.push_back(shard_range(all[0][0], r, world).size());
  }
  auto gathered = all_gather_rows(group, who, local.detach().cpu().contiguous(), rows);
  if (counts != nullptr) {
    *counts = std::move(rows);
  }
  return gathered;
}

} // namespace detail

/// Shares `fn`'s work on `inputs` between the ranks of `group`: every rank passes the same whole
/// input set [N, ...]; rank r runs `fn` on its rows `shard_range(N, r, W)` (under NoGradGuard; a
/// rank whose shard is empty, N < W, does not call it) and every rank receives every rank's
/// results, concatenated in input order, on the CPU without gradient: the same tensor on every
/// rank, and the rows `fn(inputs)` would give in one process when `fn` treats rows independently.
/// `fn` must return one row per input row, of the same dtype and trailing shape on every rank.
///
/// Before anything is gathered, the ranks exchange the inputs' number of rows, dtype and shape,
/// their results' dtype and shape and whether their own call failed; every rank then throws the
/// same c10::Error when they disagree, and a rank whose `fn` threw (or returned the wrong number
/// of rows) throws its own message while the others throw one naming it, so that no rank waits for
/// another. That the inputs hold the same values on every rank is not checked. `counts`, when
/// given, receives every rank's number of rows. A one-process group calls `fn(inputs)`.
///
/// Shape: inputs [N, ...] (the same on every rank) -> [N, *] on the CPU.
///
/// Example:
///   auto predict = [&](const at::Tensor& x) { return model->forward(x); };
///   auto risk = medcl::dist::map_shards(predict, x_test, group);   // [N, 1], input order
template <typename Fn>
at::Tensor map_shards(
    Fn&& fn,
    const at::Tensor& inputs,
    const ProcessGroup& group,
    std::vector<int64_t>* counts = nullptr) {
  return detail::map_shards("medcl::dist::map_shards", fn, inputs, group, counts);
}

} // namespace dist
} // namespace medcl
