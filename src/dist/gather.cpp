// gather_with_gradient (an autograd node of its own: its backward holds the process group, which
// an AutogradContext cannot keep) and gather_keys.

#include <medcl/dist/gather.h>
#include <medcl/dist/gather_keys.h>

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <memory>
#include <numeric>
#include <string>
#include <utility>

namespace medcl {
namespace dist {

namespace {

// Backward of the gather: the gradient of the whole gathered tensor, summed over ranks (or not,
// for the tests' negative control), sliced to this rank's rows.
struct GatherBackward : public torch::autograd::Node {
  GatherBackward(
      ProcessGroup group,
      std::vector<int64_t> gathered_shape,
      at::TensorOptions options,
      std::vector<int64_t> counts,
      bool sum_over_ranks)
      : group_(std::move(group)),
        gathered_shape_(std::move(gathered_shape)),
        options_(options),
        counts_(std::move(counts)),
        sum_over_ranks_(sum_over_ranks) {}

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    at::Tensor grad = grads.empty() ? at::Tensor() : grads[0];
    // Every rank takes part in the exchange, with zeros where its result got no gradient.
    grad = grad.defined() ? grad.contiguous() : at::zeros(gathered_shape_, options_);
    if (sum_over_ranks_) {
      // Each rank receives every rank's gradient of its own rows and sums them. No metadata
      // exchange: the forward's made the ranks agree on the gathered shape and on recording the
      // gradient, and autograd reaches this node in the same order on every rank.
      return {detail::reduce_scatter_rows(
          group_,
          "medcl::dist::gather_with_gradient (backward)",
          detail::Collective::GatherWithGradientBackward,
          grad,
          counts_)};
    }
    const int64_t offset =
        std::accumulate(counts_.begin(), counts_.begin() + group_.rank(), int64_t{0});
    return {grad.narrow(0, offset, counts_[group_.rank()]).clone()};
  }

  std::string name() const override {
    return sum_over_ranks_ ? "medcl::dist::GatherWithGradientBackward"
                           : "medcl::dist::GatherWithLocalGradientBackward";
  }

 private:
  ProcessGroup group_;
  std::vector<int64_t> gathered_shape_;
  at::TensorOptions options_;
  std::vector<int64_t> counts_;
  bool sum_over_ranks_;
};

// Makes `out` (every rank's rows, `rows` per rank) the output of a GatherBackward of `x`.
void attach(
    const at::Tensor& x,
    const ProcessGroup& group,
    at::Tensor& out,
    const std::vector<int64_t>& rows,
    bool sum_over_ranks) {
  auto node = std::shared_ptr<GatherBackward>(
      new GatherBackward(group, out.sizes().vec(), out.options(), rows, sum_over_ranks),
      torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(x));
  torch::autograd::create_gradient_edge(out, std::move(node));
}

at::Tensor gather(
    const char* fn,
    const at::Tensor& x,
    const ProcessGroup& group,
    std::vector<int64_t>* counts,
    bool sum_over_ranks) {
  if (group.size() == 1) {
    TORCH_CHECK(x.defined(), fn, ": the tensor is undefined");
    TORCH_CHECK(
        x.dim() >= 1,
        fn,
        ": expected a tensor with at least one dimension (rows), got a 0-dim tensor");
    if (counts != nullptr) {
      *counts = {x.size(0)};
    }
    return x;
  }
  std::vector<int64_t> rows;
  at::Tensor out;
  // Every rank must agree on this: the backward is a collective.
  const bool records_gradient = x.defined() && x.requires_grad() && at::GradMode::is_enabled();
  {
    at::NoGradGuard no_grad;
    out = detail::all_gather(
        group,
        fn,
        detail::Collective::GatherWithGradient,
        x.defined() ? x.detach() : x,
        &rows,
        records_gradient ? 1 : 0);
  }
  if (records_gradient) {
    attach(x, group, out, rows, sum_over_ranks);
  }
  if (counts != nullptr) {
    *counts = std::move(rows);
  }
  return out;
}

} // namespace

at::Tensor
gather_with_gradient(const at::Tensor& x, const ProcessGroup& group, std::vector<int64_t>* counts) {
  return gather("medcl::dist::gather_with_gradient", x, group, counts, /*sum_over_ranks=*/true);
}

namespace detail {
at::Tensor attach_gather_gradient(
    const at::Tensor& x,
    const ProcessGroup& group,
    const at::Tensor& all,
    const std::vector<int64_t>& counts,
    bool sum_over_ranks) {
  if (group.size() == 1) {
    return x;
  }
  TORCH_INTERNAL_ASSERT(
      x.defined() && all.defined() && static_cast<int64_t>(counts.size()) == group.size() &&
      counts[group.rank()] == x.size(0) &&
      std::accumulate(counts.begin(), counts.end(), int64_t{0}) == all.size(0));
  TORCH_INTERNAL_ASSERT(!all.requires_grad(), "attach_gather_gradient: `all` already records");
  at::Tensor out = all;
  if (x.requires_grad() && at::GradMode::is_enabled()) {
    attach(x, group, out, counts, sum_over_ranks);
  }
  return out;
}

at::Tensor gather_with_local_gradient(
    const at::Tensor& x,
    const ProcessGroup& group,
    std::vector<int64_t>* counts) {
  return gather(
      "medcl::dist::detail::gather_with_local_gradient",
      x,
      group,
      counts,
      /*sum_over_ranks=*/false);
}
} // namespace detail

// ---- Keys -----------------------------------------------------------------------------------

namespace {

constexpr int64_t kNumKeys = 8;

std::string key_list(int64_t mask) {
  std::string s;
  for (Key k : all_keys()) {
    if (mask & (int64_t{1} << static_cast<int>(k))) {
      s += (s.empty() ? "" : ", ") + std::string(key_name(k));
    }
  }
  return s.empty() ? "none" : s;
}

} // namespace

SampleKeys
gather_keys(const SampleKeys& keys, const ProcessGroup& group, std::vector<int64_t>* counts) {
  const char* fn = "medcl::dist::gather_keys";
  static_assert(kNumKeys == static_cast<int64_t>(std::tuple_size<decltype(all_keys())>::value));

  // This rank's keys, checked here; a refusal travels with the metadata so that every rank stops.
  const int64_t n = keys.size();
  std::string error;
  try {
    if (n >= 0) {
      at::Device device = at::kCPU;
      for (Key k : all_keys()) {
        if (keys.has(k)) {
          device = keys.get(k).device();
          break;
        }
      }
      keys.check(fn, "sample", n, device);
    }
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  }
  if (group.size() == 1) {
    TORCH_CHECK(error.empty(), error);
    if (counts != nullptr) {
      *counts = {std::max<int64_t>(n, 0)};
    }
    return keys;
  }

  // Fields: the number of samples, a mask of the defined keys, each key's dtype (-1: undefined).
  std::vector<int64_t> fields;
  if (error.empty()) {
    int64_t mask = 0;
    fields = {std::max<int64_t>(n, 0), 0};
    for (Key k : all_keys()) {
      if (keys.has(k)) {
        mask |= int64_t{1} << static_cast<int>(k);
        fields.push_back(static_cast<int64_t>(keys.get(k).scalar_type()));
      } else {
        fields.push_back(-1);
      }
    }
    fields[1] = mask;
  }
  const auto all =
      detail::exchange_metadata(group, fn, detail::Collective::GatherKeys, fields, error);

  std::vector<int64_t> rows;
  for (size_t r = 0; r < all.size(); ++r) {
    rows.push_back(all[r][0]);
    TORCH_CHECK(
        all[r][1] == all[0][1],
        fn,
        ": ranks disagree on which sample keys are defined: rank 0 has ",
        key_list(all[0][1]),
        ", rank ",
        r,
        " has ",
        key_list(all[r][1]),
        " (every rank must carry the same keys)");
  }
  for (Key k : all_keys()) {
    const size_t i = 2 + static_cast<size_t>(k);
    for (size_t r = 1; r < all.size(); ++r) {
      TORCH_CHECK(
          all[r][i] == all[0][i],
          fn,
          ": ranks disagree on the dtype of sample key '",
          key_name(k),
          "': rank 0 has ",
          c10::toString(static_cast<at::ScalarType>(all[0][i])),
          ", rank ",
          r,
          " has ",
          c10::toString(static_cast<at::ScalarType>(all[r][i])));
    }
  }

  SampleKeys out;
  if (all[0][1] != 0) {
    // The int64 keys travel together (one all-gather of an [n, K] table), `time` on its own.
    std::vector<Key> ids;
    std::vector<at::Tensor> columns;
    for (Key k : all_keys()) {
      if (keys.has(k) && k != Key::Time) {
        ids.push_back(k);
        columns.push_back(keys.get(k));
      }
    }
    if (!ids.empty()) {
      const auto table = detail::all_gather_rows(group, fn, at::stack(columns, 1), rows);
      for (size_t j = 0; j < ids.size(); ++j) {
        out.get(ids[j]) = table.select(1, static_cast<int64_t>(j)).contiguous();
      }
    }
    if (keys.has(Key::Time)) {
      out.time = detail::all_gather_rows(group, fn, keys.time.contiguous(), rows);
    }
  }
  if (counts != nullptr) {
    *counts = std::move(rows);
  }
  return out;
}

} // namespace dist
} // namespace medcl
