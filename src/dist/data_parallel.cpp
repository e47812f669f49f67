// broadcast_parameters and GradientReducer, on ProcessGroup's public collectives (no c10d here).

#include <medcl/dist/data_parallel.h>

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace dist {

namespace {

// FNV-1a, 64 bits: the same on every rank and build (std::hash need not be).
uint64_t fnv1a(const std::string& text, uint64_t h = 1469598103934665603ULL) {
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

at::Tensor text_to_tensor(const std::string& text) {
  auto t = at::empty({static_cast<int64_t>(text.size())}, at::kLong);
  auto* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < text.size(); ++i) {
    p[i] = static_cast<unsigned char>(text[i]);
  }
  return t;
}

std::string tensor_to_text(const at::Tensor& t) {
  const auto c = t.contiguous();
  const auto* p = c.data_ptr<int64_t>();
  std::string s(static_cast<size_t>(c.numel()), '\0');
  for (int64_t i = 0; i < c.numel(); ++i) {
    s[static_cast<size_t>(i)] = static_cast<char>(p[i]);
  }
  return s;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  if (text.empty()) {
    return lines;
  }
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    lines.push_back(line);
  }
  return lines;
}

// Tensors of one dtype and device, in order, cut into buckets of at most `bucket_bytes` (a larger
// tensor alone); undefined tensors are left out. Returns, per bucket, the member indices.
struct Group {
  at::ScalarType dtype;
  at::Device device;
  std::vector<size_t> members;
};

//
// `reverse`: the tensors are taken last to first (the order in which backward produces
// gradients), and the first bucket of each dtype and device holds at most `first_bucket_bytes`.
std::vector<Group> make_buckets(
    const NamedTensors& tensors,
    int64_t bucket_bytes,
    bool reverse = false,
    int64_t first_bucket_bytes = 0) {
  std::vector<Group> groups;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const size_t i = reverse ? tensors.size() - 1 - k : k;
    const auto& t = tensors[i].second;
    if (!t.defined()) {
      continue;
    }
    const auto same_kind = [&](const Group& g) {
      return g.dtype == t.scalar_type() && g.device == t.device();
    };
    auto it = std::find_if(groups.begin(), groups.end(), same_kind);
    if (it == groups.end()) {
      groups.push_back(Group{t.scalar_type(), t.device(), {}});
      it = groups.end() - 1;
    }
    it->members.push_back(i);
  }
  std::vector<Group> buckets;
  for (const auto& g : groups) {
    Group current{g.dtype, g.device, {}};
    int64_t bytes = 0;
    bool first = reverse;
    for (size_t i : g.members) {
      const auto& t = tensors[i].second;
      const int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
      if (reverse) {
        // Overlap: a bucket closes once it holds its cap (PyTorch DDP's rule), so that it can
        // start as soon as its last gradient arrives.
        current.members.push_back(i);
        bytes += b;
        if (bytes >= (first ? first_bucket_bytes : bucket_bytes)) {
          first = false;
          buckets.push_back(current);
          current.members.clear();
          bytes = 0;
        }
        continue;
      }
      if (!current.members.empty() && bytes + b > bucket_bytes) {
        buckets.push_back(current);
        current.members.clear();
        bytes = 0;
      }
      current.members.push_back(i);
      bytes += b;
    }
    if (!current.members.empty()) {
      buckets.push_back(current);
    }
  }
  return buckets;
}

int64_t numel_of(const NamedTensors& tensors, const std::vector<size_t>& members) {
  int64_t n = 0;
  for (size_t i : members) {
    n += tensors[i].second.numel();
  }
  return n;
}

} // namespace

namespace detail {

std::string describe_named_tensor(const std::string& name, const at::Tensor& t) {
  std::ostringstream out;
  out << '\'' << name << "' ";
  if (!t.defined()) {
    out << "undefined";
  } else {
    out << t.sizes() << ' ' << t.scalar_type();
  }
  return out.str();
}

void check_same_tensor_list(
    const char* fn,
    const NamedTensors& tensors,
    const ProcessGroup& group) {
  if (group.size() == 1) {
    return;
  }
  std::vector<std::string> mine;
  uint64_t hash = 1469598103934665603ULL;
  for (const auto& kv : tensors) {
    mine.push_back(describe_named_tensor(kv.first, kv.second));
    hash = fnv1a(mine.back() + "\n", hash);
  }
  auto summary = at::empty({1, 2}, at::kLong);
  summary[0][0] = static_cast<int64_t>(tensors.size());
  summary[0][1] = static_cast<int64_t>(hash);
  const auto all = group.all_gather(summary);
  bool same = true;
  for (int64_t r = 1; r < group.size(); ++r) {
    same = same && all[r].equal(all[0]);
  }
  if (same) {
    return;
  }
  // The lists differ: every rank gathers every rank's descriptions and names the same difference.
  std::string text;
  for (const auto& line : mine) {
    text += line + "\n";
  }
  std::vector<int64_t> counts;
  const auto gathered = group.all_gather(text_to_tensor(text), &counts);
  std::vector<std::vector<std::string>> lists;
  int64_t offset = 0;
  for (int64_t c : counts) {
    lists.push_back(split_lines(tensor_to_text(gathered.narrow(0, offset, c))));
    offset += c;
  }
  const auto& ref = lists[0];
  for (size_t r = 1; r < lists.size(); ++r) {
    const auto& other = lists[r];
    const size_t n = std::max(ref.size(), other.size());
    for (size_t i = 0; i < n; ++i) {
      const std::string a = i < ref.size() ? ref[i] : std::string("nothing");
      const std::string b = i < other.size() ? other[i] : std::string("nothing");
      TORCH_CHECK(
          a == b,
          fn,
          ": the ranks hold different parameters: at position ",
          i,
          ", rank 0 has ",
          a,
          ", rank ",
          r,
          " has ",
          b,
          " (rank 0 has ",
          ref.size(),
          " tensors, rank ",
          r,
          " has ",
          other.size(),
          "; every rank must build the same model)");
    }
  }
  // Same descriptions but different hashes cannot happen; fail on every rank all the same.
  TORCH_CHECK(false, fn, ": the ranks hold different parameters (their hashes differ)");
}

} // namespace detail

NamedTensors parameters_and_buffers(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& kv : module.named_parameters(true)) {
    out.emplace_back(kv.key(), kv.value());
  }
  for (const auto& kv : module.named_buffers(true)) {
    out.emplace_back(kv.key(), kv.value());
  }
  return out;
}

NamedTensors trainable_parameters(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& kv : module.named_parameters(true)) {
    if (kv.value().defined() && kv.value().requires_grad()) {
      out.emplace_back(kv.key(), kv.value());
    }
  }
  return out;
}

void broadcast_parameters(const NamedTensors& tensors, const ProcessGroup& group, int64_t root) {
  constexpr const char* fn = "medcl::dist::broadcast_parameters";
  TORCH_CHECK(
      root >= 0 && root < group.size(),
      fn,
      ": root must be a rank in [0, ",
      group.size(),
      "), got ",
      root);
  if (group.size() == 1) {
    return;
  }
  detail::check_same_tensor_list(fn, tensors, group);
  c10::NoGradGuard no_grad;
  for (const auto& bucket : make_buckets(tensors, GradientReducerOptions().bucket_bytes())) {
    at::Tensor flat;
    if (group.rank() == root) {
      std::vector<at::Tensor> pieces;
      for (size_t i : bucket.members) {
        pieces.push_back(tensors[i].second.detach().reshape({-1}));
      }
      flat = at::cat(pieces);
    } else {
      flat = at::empty(
          {numel_of(tensors, bucket.members)},
          at::TensorOptions().dtype(bucket.dtype).device(bucket.device));
    }
    group.broadcast(flat, root);
    if (group.rank() == root) {
      continue;
    }
    int64_t offset = 0;
    for (size_t i : bucket.members) {
      auto t = tensors[i].second;
      t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

void broadcast_parameters(torch::nn::Module& module, const ProcessGroup& group, int64_t root) {
  broadcast_parameters(parameters_and_buffers(module), group, root);
}

namespace detail {

// GradientReducer's overlap: every parameter's gradient hook copies the arriving gradient into
// its bucket; a bucket whose gradients have all arrived is started once every bucket before it
// has been (the same order on every rank); reduce() starts the rest and waits.
struct OverlapState {
  struct Bucket {
    std::vector<size_t> members;
    at::Tensor flat;
    int64_t pending = 0; // gradients still to arrive this step
    std::shared_ptr<PendingCollective> work;
  };
  std::mutex mutex;
  NamedTensors parameters;
  ProcessGroup side;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;  // parameter -> bucket
  std::vector<int64_t> offset_of; // parameter -> offset in its bucket
  std::vector<char> arrived;      // parameter -> its gradient arrived this step
  size_t next = 0;                // the next bucket to start
  std::vector<std::pair<size_t, unsigned>> hooks;

  ~OverlapState() {
    for (const auto& h : hooks) {
      try {
        parameters[h.first].second.remove_hook(h.second);
      } catch (...) {
        // The parameter's autograd state is gone: nothing to remove.
      }
    }
  }

  at::Tensor slice_of(size_t i) {
    const auto& p = parameters[i].second;
    return buckets[bucket_of[i]].flat.narrow(0, offset_of[i], p.numel()).view(p.sizes());
  }

  void start_ready() {
    while (next < buckets.size() && buckets[next].pending == 0) {
      buckets[next].work = all_reduce_start(side, kReduceFn, buckets[next].flat);
      ++next;
    }
  }

  // The hook of parameter i: `grad` is what backward adds to its .grad.
  void arrive(size_t i, const at::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mutex);
    c10::NoGradGuard no_grad;
    const auto& name = parameters[i].first;
    TORCH_CHECK(
        !arrived[i],
        kReduceFn,
        ": the gradient of '",
        name,
        "' arrived twice before reduce() (a second backward through the parameters before "
        "reduce: with GradientReducerOptions::overlap every backward must be followed by "
        "reduce; turn overlap off to accumulate gradients over several backward calls)");
    TORCH_CHECK(
        !grad.is_sparse(),
        kReduceFn,
        ": the gradient of '",
        name,
        "' is sparse, which is not supported");
    const auto& p = parameters[i].second;
    auto slice = slice_of(i);
    if (p.grad().defined() && grad.defined()) {
      at::add_out(slice, p.grad(), grad);
    } else if (grad.defined()) {
      slice.copy_(grad);
    } else if (p.grad().defined()) {
      slice.copy_(p.grad());
    } else {
      slice.zero_();
    }
    arrived[i] = 1;
    if (--buckets[bucket_of[i]].pending == 0) {
      start_ready();
    }
  }

  static constexpr const char* kReduceFn = "medcl::dist::GradientReducer::reduce";
};

} // namespace detail

GradientReducer::GradientReducer(
    NamedTensors parameters,
    ProcessGroup group,
    GradientReducerOptions options)
    : parameters_(std::move(parameters)), group_(std::move(group)), options_(options) {
  constexpr const char* fn = "medcl::dist::GradientReducer";
  TORCH_CHECK(
      options_.bucket_bytes() > 0, fn, ": bucket_bytes must be > 0, got ", options_.bucket_bytes());
  for (const auto& kv : parameters_) {
    TORCH_CHECK(kv.second.defined(), fn, ": the parameter '", kv.first, "' is undefined");
    TORCH_CHECK(
        kv.second.requires_grad(),
        fn,
        ": the parameter '",
        kv.first,
        "' does not require grad (pass only the parameters the optimiser updates)");
  }
  TORCH_CHECK(
      options_.first_bucket_bytes() > 0,
      fn,
      ": first_bucket_bytes must be > 0, got ",
      options_.first_bucket_bytes());
  detail::check_same_tensor_list(fn, parameters_, group_);
  if (group_.size() > 1) {
    // The layout and the side group depend on the options: every rank must use the same.
    auto mine = at::tensor(
        {static_cast<int64_t>(options_.overlap()),
         options_.bucket_bytes(),
         options_.first_bucket_bytes()},
        at::kLong);
    const auto all = group_.all_gather(mine.view({1, 3}));
    for (int64_t r = 1; r < group_.size(); ++r) {
      TORCH_CHECK(
          all[r].equal(all[0]),
          fn,
          ": the ranks disagree on the options: rank 0 has overlap ",
          all[0][0].item<int64_t>(),
          ", bucket_bytes ",
          all[0][1].item<int64_t>(),
          ", first_bucket_bytes ",
          all[0][2].item<int64_t>(),
          "; rank ",
          r,
          " has overlap ",
          all[r][0].item<int64_t>(),
          ", bucket_bytes ",
          all[r][1].item<int64_t>(),
          ", first_bucket_bytes ",
          all[r][2].item<int64_t>(),
          " (every rank must use the same GradientReducerOptions)");
    }
  }
  const bool overlap = options_.overlap() && group_.size() > 1;
  for (const auto& g :
       make_buckets(parameters_, options_.bucket_bytes(), overlap, options_.first_bucket_bytes())) {
    buckets_.push_back(Bucket{g.dtype, g.device, g.members, numel_of(parameters_, g.members)});
  }
  if (!overlap) {
    return;
  }
  overlap_ = std::make_shared<detail::OverlapState>();
  auto& st = *overlap_;
  st.parameters = parameters_;
  st.side = detail::side_group(group_);
  st.bucket_of.assign(parameters_.size(), 0);
  st.offset_of.assign(parameters_.size(), 0);
  st.arrived.assign(parameters_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    detail::OverlapState::Bucket bucket;
    bucket.members = buckets_[b].members;
    bucket.flat = at::zeros(
        {buckets_[b].numel},
        at::TensorOptions().dtype(buckets_[b].dtype).device(buckets_[b].device));
    bucket.pending = static_cast<int64_t>(bucket.members.size());
    int64_t offset = 0;
    for (size_t i : bucket.members) {
      st.bucket_of[i] = b;
      st.offset_of[i] = offset;
      offset += parameters_[i].second.numel();
    }
    st.buckets.push_back(std::move(bucket));
  }
  std::weak_ptr<detail::OverlapState> weak = overlap_;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const unsigned handle = parameters_[i].second.register_hook([weak, i](const at::Tensor& grad) {
      if (auto state = weak.lock()) {
        state->arrive(i, grad);
      }
    });
    st.hooks.emplace_back(i, handle);
  }
}

GradientReducer::GradientReducer(
    const torch::nn::Module& module,
    ProcessGroup group,
    GradientReducerOptions options)
    : GradientReducer(trainable_parameters(module), std::move(group), options) {}

void GradientReducer::reduce() {
  constexpr const char* fn = "medcl::dist::GradientReducer::reduce";
  if (group_.size() == 1) {
    bytes_last_step_ = 0;
    return;
  }
  if (overlap_) {
    reduce_overlapped();
    return;
  }
  c10::NoGradGuard no_grad;
  int64_t bytes = 0;
  for (const auto& bucket : buckets_) {
    auto flat =
        at::empty({bucket.numel}, at::TensorOptions().dtype(bucket.dtype).device(bucket.device));
    int64_t offset = 0;
    for (size_t i : bucket.members) {
      const auto& p = parameters_[i].second;
      const auto& g = p.grad();
      auto slice = flat.narrow(0, offset, p.numel());
      if (g.defined()) {
        TORCH_CHECK(
            !g.is_sparse(),
            fn,
            ": the gradient of '",
            parameters_[i].first,
            "' is sparse, which is not supported");
        slice.view(p.sizes()).copy_(g);
      } else {
        slice.zero_();
      }
      offset += p.numel();
    }
    detail::all_reduce(group_, fn, detail::Collective::AllReduce, flat);
    if (options_.average()) {
      flat.div_(static_cast<double>(group_.size()));
    }
    bytes += bucket.numel * static_cast<int64_t>(flat.element_size());
    offset = 0;
    for (size_t i : bucket.members) {
      auto p = parameters_[i].second;
      const auto reduced = flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(reduced);
      } else {
        p.mutable_grad() = reduced.clone();
      }
      offset += p.numel();
    }
  }
  bytes_last_step_ = bytes;
}

void GradientReducer::reduce_overlapped() {
  auto& st = *overlap_;
  std::lock_guard<std::mutex> lock(st.mutex);
  c10::NoGradGuard no_grad;
  // Whatever happens below, the next step starts afresh.
  struct Reset {
    detail::OverlapState& st;
    ~Reset() {
      for (auto& b : st.buckets) {
        b.pending = static_cast<int64_t>(b.members.size());
        b.work.reset();
      }
      std::fill(st.arrived.begin(), st.arrived.end(), 0);
      st.next = 0;
    }
  } reset{st};
  // The buckets whose gradients did not all arrive (parameters outside this rank's loss): their
  // current gradients, zero where undefined; then started in order.
  for (size_t b = st.next; b < st.buckets.size(); ++b) {
    for (size_t i : st.buckets[b].members) {
      if (st.arrived[i]) {
        continue;
      }
      const auto& p = parameters_[i].second;
      const auto& g = p.grad();
      auto slice = st.slice_of(i);
      if (g.defined()) {
        TORCH_CHECK(
            !g.is_sparse(),
            detail::OverlapState::kReduceFn,
            ": the gradient of '",
            parameters_[i].first,
            "' is sparse, which is not supported");
        slice.copy_(g);
      } else {
        slice.zero_();
      }
    }
    st.buckets[b].pending = 0;
  }
  st.start_ready();
  int64_t bytes = 0;
  for (auto& bucket : st.buckets) {
    detail::wait(bucket.work);
    if (options_.average()) {
      bucket.flat.div_(static_cast<double>(group_.size()));
    }
    bytes += bucket.flat.numel() * static_cast<int64_t>(bucket.flat.element_size());
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto p = parameters_[i].second;
    const auto reduced = st.slice_of(i);
    if (p.grad().defined()) {
      p.mutable_grad().copy_(reduced);
    } else {
      p.mutable_grad() = reduced.clone();
    }
  }
  bytes_last_step_ = bytes;
}

} // namespace dist
} // namespace medcl
