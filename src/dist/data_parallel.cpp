// broadcast_parameters and GradientReducer, on ProcessGroup's public collectives (no c10d here).

#include <medcl/dist/data_parallel.h>

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <map>
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

std::vector<Group> make_buckets(const NamedTensors& tensors, int64_t bucket_bytes) {
  std::vector<Group> groups;
  for (size_t i = 0; i < tensors.size(); ++i) {
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
    for (size_t i : g.members) {
      const auto& t = tensors[i].second;
      const int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
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
  detail::check_same_tensor_list(fn, parameters_, group_);
  for (const auto& g : make_buckets(parameters_, options_.bucket_bytes())) {
    buckets_.push_back(Bucket{g.dtype, g.device, g.members, numel_of(parameters_, g.members)});
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

} // namespace dist
} // namespace medcl
