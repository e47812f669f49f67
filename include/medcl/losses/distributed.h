#pragma once

/// \file
/// The InfoNCE family across processes: the pieces that let a loss contrast this process's
/// anchors with every process's candidates and decide positives and exclusions on every
/// process's sample keys (a patient's record on rank 3 is a positive, or not a negative, for the
/// same patient's record on rank 0).
///
/// Layout: the candidates are every rank's rows in rank order, and within a rank in the loss's
/// own order (view-major for NT-Xent and SupCon). This rank's anchors are the candidate rows
/// [row0, row0 + n). A rule for all the rows (built once from the gathered keys, O(M) memory:
/// the rules build their masks one tile at a time) is cut to this rank's rows by RowBlockRule.
/// Each rank's loss is the sum over its rows divided by the number of rows over every rank
/// (ContrastProblem::global_row_count), so the ranks' losses sum to the one-process loss, and
/// with dist::gather_with_gradient their gradients sum to the one-process gradient.

#include <medcl/core/pair_rule.h>
#include <medcl/core/similarity_engine.h>
#include <medcl/dist/gather.h>
#include <medcl/dist/gather_keys.h>
#include <medcl/dist/process_group.h>
#include <medcl/pairing/sample_keys.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {

/// Rows [row0, row0 + rows) of a rule built for more anchor rows (every process's), all of its
/// columns: how one process sees a rule of the global batch.
class RowBlockRule : public PairRule {
 public:
  RowBlockRule(std::shared_ptr<const PairRule> global, int64_t row0, int64_t rows)
      : g_(std::move(global)), row0_(row0), rows_(rows) {
    TORCH_CHECK(g_ != nullptr, "RowBlockRule: no rule");
    TORCH_CHECK(
        row0 >= 0 && rows >= 0 && row0 + rows <= g_->rows(),
        "RowBlockRule: rows [",
        row0,
        ", ",
        row0 + rows,
        ") are outside the rule's ",
        g_->rows(),
        " rows");
  }
  int64_t rows() const override {
    return rows_;
  }
  int64_t cols() const override {
    return g_->cols();
  }
  PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override {
    return g_->tile(row0_ + r0, row0_ + r1, c0, c1);
  }
  std::optional<SparsePairs> sparse() const override {
    auto s = g_->sparse();
    if (!s.has_value()) {
      return std::nullopt;
    }
    return SparsePairs{cut(s->positive_col), cut(s->excluded_col)};
  }
  std::optional<KeyClasses> key_classes() const override {
    auto k = g_->key_classes();
    if (!k.has_value()) {
      return std::nullopt;
    }
    return KeyClasses{cut(k->anchor_keys), k->candidate_keys};
  }
  std::optional<at::Tensor> excluded_cols() const override {
    auto e = g_->excluded_cols();
    if (!e.has_value()) {
      return std::nullopt;
    }
    return cut(*e);
  }
  std::string describe() const override {
    return g_->describe();
  }

 private:
  at::Tensor cut(const at::Tensor& t) const {
    return t.narrow(0, row0_, rows_);
  }
  std::shared_ptr<const PairRule> g_;
  int64_t row0_;
  int64_t rows_;
};

/// The transpose of a rule: row j, column i is the rule's (i, j). CLIP's text-to-image
/// direction across processes (the images' rule read by columns).
class TransposedRule : public PairRule {
 public:
  explicit TransposedRule(std::shared_ptr<const PairRule> rule) : g_(std::move(rule)) {
    TORCH_CHECK(g_ != nullptr, "TransposedRule: no rule");
  }
  int64_t rows() const override {
    return g_->cols();
  }
  int64_t cols() const override {
    return g_->rows();
  }
  PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override {
    auto t = g_->tile(c0, c1, r0, r1);
    return {
        t.positive.defined() ? t.positive.t() : t.positive,
        t.excluded.defined() ? t.excluded.t() : t.excluded};
  }
  std::optional<SparsePairs> sparse() const override {
    return g_->sparse_transposed();
  }
  std::optional<SparsePairs> sparse_transposed() const override {
    return g_->sparse();
  }
  std::string describe() const override {
    return g_->describe() + " (transposed)";
  }

 private:
  std::shared_ptr<const PairRule> g_;
};

/// Rows with at most one positive and one excluded column, given by index (-1 for none): e.g.
/// SimCLR's other view and the anchor itself among every process's candidates.
class IndexRule : public PairRule {
 public:
  IndexRule(at::Tensor positive_col, at::Tensor excluded_col, int64_t cols, std::string what)
      : pos_(std::move(positive_col)),
        excl_(std::move(excluded_col)),
        cols_(cols),
        what_(std::move(what)) {
    TORCH_CHECK(
        pos_.dim() == 1 && excl_.sizes() == pos_.sizes() && pos_.scalar_type() == at::kLong &&
            excl_.scalar_type() == at::kLong,
        "IndexRule: positive_col and excluded_col must be int64 [N] each");
  }
  int64_t rows() const override {
    return pos_.size(0);
  }
  int64_t cols() const override {
    return cols_;
  }
  PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override {
    return {
        tile_mask_from_sparse(pos_, r0, r1, c0, c1), tile_mask_from_sparse(excl_, r0, r1, c0, c1)};
  }
  std::optional<SparsePairs> sparse() const override {
    return SparsePairs{pos_, excl_};
  }
  std::string describe() const override {
    return what_;
  }

 private:
  at::Tensor pos_;
  at::Tensor excl_;
  int64_t cols_;
  std::string what_;
};

namespace detail {

/// FNV-1a of a description: the same on every process (std::hash need not be).
inline int64_t fingerprint(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return static_cast<int64_t>(h >> 1);
}

/// One value every process must agree on before a loss gathers anything.
struct AgreedField {
  const char* name;
  int64_t value;
  /// Printed as a double (the bits of one), or as a description.
  bool is_double = false;
  std::string text;
};

/// Bytes of memory this process can still take for a gathered batch on `device`: the CPU's
/// MemAvailable (Linux; -1 where unknown, and for CUDA devices), capped by the environment
/// variable MEDCL_GATHER_LIMIT_BYTES when it is set.
inline int64_t gather_memory_available(const at::Device& device) {
  int64_t available = -1;
  if (device.is_cpu()) {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    int64_t kib = 0;
    std::string unit;
    while (meminfo >> key >> kib >> unit) {
      if (key == "MemAvailable:") {
        available = kib * 1024;
        break;
      }
    }
  }
  if (const char* cap = std::getenv("MEDCL_GATHER_LIMIT_BYTES")) {
    char* end = nullptr;
    const long long v = std::strtoll(cap, &end, 10);
    TORCH_CHECK(
        end != cap && *end == '\0' && v >= 0,
        "MEDCL_GATHER_LIMIT_BYTES must be a number of bytes >= 0, got '",
        cap,
        "'");
    available = available < 0 ? v : std::min<int64_t>(available, v);
  }
  return available;
}

inline AgreedField agreed_double(const char* name, double v) {
  int64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(bits));
  return {name, bits, true, ""};
}
inline AgreedField agreed_text(const char* name, const std::string& text) {
  return {name, fingerprint(text), false, text};
}
inline AgreedField agreed_int(const char* name, int64_t v) {
  return {name, v, false, ""};
}
/// Whether the rows a loss gathers record a gradient: the gather's backward is a collective, so
/// every rank must (or none).
inline AgreedField agreed_gradient(const at::Tensor& t, const at::Tensor& u = at::Tensor()) {
  const bool records = (t.defined() && t.requires_grad()) || (u.defined() && u.requires_grad());
  return {
      "gradient recording (requires_grad with grad mode on: 1)",
      records && at::GradMode::is_enabled() ? 1 : 0,
      false,
      ""};
}

/// The exchange and the checks of agree_across_ranks: every rank's fields, then `extra` (values
/// the ranks need not share), and `payload_bytes` bytes of `payload` gathered into `gathered` (see
/// dist::detail::exchange_metadata). A field that differs from rank 0's is named on every rank
/// with both values. Returns every rank's values.
inline std::vector<std::vector<int64_t>> exchange_agreement(
    const char* fn,
    const dist::ProcessGroup& group,
    const std::vector<AgreedField>& fields,
    const std::string& local_error,
    const std::vector<int64_t>& extra,
    const at::Tensor& payload = at::Tensor(),
    int64_t payload_bytes = 0,
    std::vector<at::Tensor>* gathered = nullptr) {
  std::vector<int64_t> values;
  for (const auto& f : fields) {
    values.push_back(f.value);
  }
  values.insert(values.end(), extra.begin(), extra.end());
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(values.size()) <= dist::detail::kMaxMetadataFields);
  auto all = dist::detail::exchange_metadata(
      group,
      fn,
      dist::detail::Collective::LossInputs,
      values,
      local_error,
      payload,
      payload_bytes,
      gathered);
  auto show = [](const AgreedField& f, int64_t v) {
    std::ostringstream s;
    if (f.is_double) {
      double d = 0;
      std::memcpy(&d, &v, sizeof(d));
      s << d;
    } else if (!f.text.empty()) {
      s << "fingerprint " << v;
    } else {
      s << v;
    }
    return s.str();
  };
  for (size_t r = 0; r < all.size(); ++r) {
    TORCH_CHECK(all[r].size() == values.size(), fn, ": rank ", r, " sent another number of fields");
  }
  for (size_t r = 1; r < all.size(); ++r) {
    for (size_t i = 0; i < fields.size(); ++i) {
      if (all[r][i] == all[0][i]) {
        continue;
      }
      const auto& f = fields[i];
      TORCH_CHECK(
          false,
          fn,
          ": the ranks disagree on the ",
          f.name,
          ": rank 0 has ",
          show(f, all[0][i]),
          ", rank ",
          r,
          " has ",
          show(f, all[r][i]),
          f.text.empty() ? std::string() : " (this rank's: " + f.text + ")",
          ". Every rank must call the loss with the same options, embedding size and dtype.");
    }
  }
  return all;
}

/// Every rank's row counts and the refusal, on every rank alike and naming the rank
/// that lacks it, of a gathered batch whose embeddings, their gradient and the engine's candidate
/// gradient (3 · rows over every rank · `row_bytes`) would not fit in the memory a rank has
/// available (`all[r][index + 1]`, -1: unknown). Every rank's row count is `all[r][index]`.
inline std::vector<int64_t> agreed_row_counts(
    const char* fn,
    const std::vector<std::vector<int64_t>>& all,
    size_t index,
    int64_t row_bytes) {
  int64_t total_rows = 0;
  std::vector<int64_t> counts;
  for (const auto& a : all) {
    total_rows += std::max<int64_t>(a[index], 0);
    counts.push_back(a[index]);
  }
  const double need = 3.0 * static_cast<double>(total_rows) * static_cast<double>(row_bytes);
  for (size_t r = 0; r < all.size(); ++r) {
    const int64_t available = all[r][index + 1];
    TORCH_CHECK(
        available < 0 || need <= static_cast<double>(available),
        fn,
        ": the gathered batch is too large: ",
        total_rows,
        " rows of every rank × ",
        row_bytes,
        " bytes need about ",
        need / (1 << 20),
        " MiB on each rank (the gathered embeddings, their gradient and the similarity engine's), "
        "more than the ",
        static_cast<double>(available) / (1 << 20),
        " MiB that rank ",
        r,
        " has available. Lower the per-rank batch or the number of ranks (or raise "
        "MEDCL_GATHER_LIMIT_BYTES where it caps the figure).");
  }
  return counts;
}

/// Every rank sends its fields (and whether its own input checks failed: `local_error`, then
/// thrown on that rank and named on the others, so that no rank waits in a collective for one
/// that has stopped); a field that differs from rank 0's is named on every rank with both
/// values. Runs before any embedding or key is gathered. Returns every rank's `rows` (empty when
/// `rows` is -1), so that the gather needs no exchange of its own.
///
/// `rows` (this rank's rows to gather) and `row_bytes` (bytes of one gathered row): the ranks also
/// exchange them and the memory each can still take (gather_memory_available), and every rank
/// refuses, naming the rank that lacks it, a gathered batch whose embeddings, their gradient and
/// the engine's candidate gradient (3 · rows over every rank · row_bytes) would not fit: an error
/// together, instead of one rank failing to allocate while the others wait in the gather.
inline std::vector<int64_t> agree_across_ranks(
    const char* fn,
    const dist::ProcessGroup& group,
    const std::vector<AgreedField>& fields,
    const std::string& local_error,
    int64_t rows = -1,
    int64_t row_bytes = 0,
    const at::Device& device = at::kCPU) {
  const auto all = exchange_agreement(
      fn, group, fields, local_error, {rows, rows >= 0 ? gather_memory_available(device) : -1});
  if (rows < 0) {
    return {};
  }
  return agreed_row_counts(fn, all, fields.size(), row_bytes);
}

/// The ContrastProblem::global_row_count of a process group: an all-reduce of the count.
inline std::function<int64_t(int64_t)> global_row_counter(const dist::ProcessGroup& group) {
  return [group](int64_t local) {
    auto t = at::full({1}, local, at::kLong);
    // Every rank reaches this count right after the agreed gather: no metadata exchange needed.
    dist::detail::all_reduce(
        group, "the loss's row count", dist::detail::Collective::AllReduce, t, /*check=*/false);
    return t.item<int64_t>();
  };
}

/// A ContrastProblem::global_row_count that needs no communication, for pairings whose rows that
/// count follow from the row counts every rank already holds (the agreement's): each rank's
/// engine must find `expected_local` rows that count, and the total is `total`. For the
/// keyless pairings (each row's positive is its own other view or its own key), where every row
/// counts once the global batch has a negative at all.
inline std::function<int64_t(int64_t)> known_row_counter(int64_t expected_local, int64_t total) {
  return [expected_local, total](int64_t local) {
    TORCH_INTERNAL_ASSERT(
        local == expected_local,
        "the loss's row count: ",
        local,
        " rows count on this rank, expected ",
        expected_local);
    return total;
  };
}

/// Every rank's rows, gathered with gradient, and where this rank's rows sit among them.
struct GlobalRows {
  at::Tensor all;              // [M, D]: every rank's rows in rank order
  int64_t row0 = 0;            // this rank's first row
  int64_t sample_offset = 0;   // this rank's first sample (rows / views before it)
  std::vector<int64_t> counts; // rows per rank
};

/// Test hook, never set outside medcl's tests: when true, the losses' gathers get the backward of
/// dist::detail::gather_with_local_gradient (not summed over the ranks), the negative control
/// that shows the tests' comparison catches a wrong gradient.
inline bool& negative_control_local_gather() {
  static bool on = false;
  return on;
}

/// agree_across_ranks and the gather with gradient of `local` [views · b, D] (b samples,
/// view-major; undefined where `local_error` is set) in one round trip where the ranks can: the
/// agreement then carries every rank's rows, padded to the capacity the ranks learnt at this
/// loss's previous call on the group (dist::detail::gather_capacity). It cannot at a loss's first
/// call, on CUDA tensors (NCCL moves those), or where a rank's rows outgrow that capacity; every
/// rank then sees so in the agreement, and the rows follow in a second exchange. The same checks,
/// errors and gradient (the sum over ranks) either way. `row_bytes`: the memory check's bytes per
/// row (agree_across_ranks).
inline GlobalRows agree_and_gather(
    const char* fn,
    const dist::ProcessGroup& g,
    const std::vector<AgreedField>& fields,
    const std::string& local_error,
    const at::Tensor& local,
    int64_t views,
    int64_t row_bytes,
    const at::Device& device) {
  GlobalRows out;
  const bool have = local_error.empty() && local.defined() && local.dim() == 2;
  const int64_t rows = have ? local.size(0) : 0;
  if (g.size() == 1) {
    agree_across_ranks(fn, g, fields, local_error, rows, row_bytes, device);
    out.all = local;
    out.counts = {rows};
    return out;
  }
  const auto capacity = dist::detail::gather_capacity(g, fn);
  const bool cpu = have && local.device().is_cpu();
  const int64_t bytes = have ? local.size(1) * static_cast<int64_t>(local.element_size()) : 0;
  const bool fits =
      cpu && capacity.rows > 0 && bytes == capacity.row_bytes && rows <= capacity.rows;
  std::vector<at::Tensor> gathered;
  const auto all = exchange_agreement(
      fn,
      g,
      fields,
      local_error,
      {rows, gather_memory_available(device), fits ? 1 : 0, cpu ? 1 : 0},
      fits ? local.detach().contiguous() : at::Tensor(),
      capacity.rows * capacity.row_bytes,
      &gathered);
  const size_t base = fields.size();
  out.counts = agreed_row_counts(fn, all, base, row_bytes);
  bool all_fit = true;
  bool all_cpu = true;
  int64_t total = 0;
  int64_t most = 0;
  for (size_t r = 0; r < all.size(); ++r) {
    all_fit = all_fit && all[r][base + 2] == 1;
    all_cpu = all_cpu && all[r][base + 3] == 1;
    total += out.counts[r];
    most = std::max(most, out.counts[r]);
  }
  // What the next call may carry: every rank's rows of this call, where they all sit on the CPU
  // and the padding would not more than double the bytes.
  const int64_t world = g.size();
  dist::detail::set_gather_capacity(
      g,
      fn,
      all_cpu && most > 0 && world * most <= 2 * total ? dist::detail::GatherCapacity{most, bytes}
                                                       : dist::detail::GatherCapacity{});
  at::Tensor gathered_rows;
  if (all_fit) {
    gathered_rows = at::empty({total, local.size(1)}, local.options());
    auto* dst = static_cast<uint8_t*>(gathered_rows.data_ptr());
    for (size_t r = 0; r < gathered.size(); ++r) {
      const auto n = static_cast<size_t>(out.counts[r] * bytes);
      if (n > 0) {
        std::memcpy(dst, gathered[r].data_ptr(), n);
        dst += n;
      }
    }
  } else {
    at::NoGradGuard no_grad;
    gathered_rows = dist::detail::all_gather_rows(g, fn, local.detach(), out.counts);
  }
  out.all = dist::detail::attach_gather_gradient(
      local, g, gathered_rows, out.counts, !negative_control_local_gather());
  for (int64_t r = 0; r < g.rank(); ++r) {
    out.row0 += out.counts[r];
  }
  out.sample_offset = out.row0 / views;
  return out;
}

/// The keys of every rank's rows in the layout of agree_and_gather: this rank's `keys` of its b
/// samples (empty: none carried), `instance` defaulting to the global sample index, repeated for
/// `views` views (view-major, with `view`), gathered in rank order.
inline SampleKeys gather_view_keys(
    const SampleKeys& keys,
    int64_t b,
    int64_t views,
    int64_t sample_offset,
    const at::Device& device,
    const dist::ProcessGroup& g) {
  const auto lo = at::TensorOptions().dtype(at::kLong).device(device);
  SampleKeys local = keys;
  if (!local.has(Key::Instance)) {
    local.instance = at::arange(sample_offset, sample_offset + b, lo);
  }
  return dist::gather_keys(local.repeat_views(views, lo), g);
}

/// Runs the engine on this rank's share, or takes part in its collectives with no rows. With no
/// anchors this rank still all-reduces its (zero) row counts and returns a zero loss connected to
/// the gathered candidates `connected`, so that its backward joins the gather's all-reduce.
/// `row_counter`: the global row count without an all-reduce (known_row_counter), where the
/// pairing lets every rank know it.
inline at::Tensor distributed_contrast(
    ContrastProblem p,
    const dist::ProcessGroup& g,
    const at::Tensor& connected,
    int directions = 1,
    std::function<int64_t(int64_t)> row_counter = {}) {
  p.global_row_count = row_counter ? std::move(row_counter) : global_row_counter(g);
  if (p.anchors.size(0) > 0) {
    return contrast_loss(std::move(p));
  }
  for (int d = 0; d < directions; ++d) {
    p.global_row_count(0);
  }
  return connected.sum().mul(0.0).to(p.anchors.scalar_type());
}

/// Runs `check` (this rank's input checks) and returns its error message, so that the ranks can
/// stop together (agree_across_ranks) instead of one throwing while the others wait.
template <class F>
std::string local_check_error(F&& check) {
  try {
    check();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return std::string();
}

/// The checks of an embedding on one rank of a group: like check_embedding, except that a rank
/// may hold no rows (the last, short global batch).
inline void
check_rank_embedding(const char* fn, const char* name, const at::Tensor& t, int64_t rank) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is an undefined tensor");
  TORCH_CHECK(
      t.dim() == rank, fn, ": expected ", name, " of rank ", rank, ", got shape ", t.sizes());
  TORCH_CHECK(
      at::isFloatingType(t.scalar_type()),
      fn,
      ": expected ",
      name,
      " of a floating-point dtype, got ",
      t.scalar_type());
  for (int64_t d = 1; d < t.dim(); ++d) {
    TORCH_CHECK(t.size(d) > 0, fn, ": ", name, " has an empty dimension (shape ", t.sizes(), ")");
  }
}

} // namespace detail
} // namespace medcl
