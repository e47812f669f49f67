// SyncBatchNorm1d: the statistics of every rank's rows, with an autograd node of its own (its
// backward holds the process group, which an AutogradContext cannot keep), on ProcessGroup's
// checked collectives (no c10d here).

#include <medcl/dist/sync_batch_norm.h>

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/function.h>
#include <torch/nn/functional/batchnorm.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>

#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace dist {

namespace {

constexpr const char* kFn = "medcl::dist::SyncBatchNorm1d";

// The reduced dimensions, and the shape that broadcasts a [C] vector against the input.
std::vector<int64_t> reduced_dims(const at::Tensor& input) {
  return input.dim() == 3 ? std::vector<int64_t>{0, 2} : std::vector<int64_t>{0};
}

std::vector<int64_t> channel_shape(const at::Tensor& input, int64_t c) {
  return input.dim() == 3 ? std::vector<int64_t>{1, c, 1} : std::vector<int64_t>{1, c};
}

// Why this rank's input cannot be normalised ("" when it can).
std::string input_error(
    const at::Tensor& input,
    const at::Tensor& running_mean,
    const at::Tensor& running_var,
    const at::Tensor& weight,
    const at::Tensor& bias) {
  std::ostringstream out;
  if (!input.defined()) {
    out << kFn << ": the input is undefined";
    return out.str();
  }
  if (input.dim() != 2 && input.dim() != 3) {
    out << kFn << ": expected a 2D [N, C] or 3D [N, C, L] input, got " << input.dim()
        << "D input of shape " << input.sizes();
    return out.str();
  }
  if (!at::isFloatingType(input.scalar_type())) {
    out << kFn << ": expected a floating-point input, got " << input.scalar_type();
    return out.str();
  }
  const int64_t c = input.size(1);
  const std::pair<const char*, const at::Tensor*> vectors[] = {
      {"weight", &weight},
      {"bias", &bias},
      {"running_mean", &running_mean},
      {"running_var", &running_var}};
  for (const auto& v : vectors) {
    const at::Tensor& t = *v.second;
    if (t.defined() && (t.dim() != 1 || t.size(0) != c)) {
      out << kFn << ": expected " << v.first << " of shape [" << c
          << "] (the input's number of features, dimension 1 of " << input.sizes() << "), got "
          << t.sizes();
      return out.str();
    }
  }
  return "";
}

// Backward: needs the global sums of g and g * xhat (all-reduced, in double); the weight's and
// bias's gradients are this rank's sums.
struct SyncBatchNormBackward : public torch::autograd::Node {
  SyncBatchNormBackward(
      ProcessGroup group,
      at::Tensor xhat,
      at::Tensor invstd,
      at::Tensor weight,
      double count,
      at::ScalarType input_dtype,
      at::ScalarType weight_dtype)
      : group_(std::move(group)),
        xhat_(std::move(xhat)),
        invstd_(std::move(invstd)),
        weight_(std::move(weight)),
        count_(count),
        input_dtype_(input_dtype),
        weight_dtype_(weight_dtype) {}

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    const at::Tensor given = grads.empty() ? at::Tensor() : grads[0];
    // A rank whose output got no gradient still takes part, with zeros.
    const at::Tensor dy = given.defined() ? given.to(xhat_.scalar_type()) : at::zeros_like(xhat_);
    const auto dims = reduced_dims(xhat_);
    const int64_t c = xhat_.size(1);
    const auto shape = channel_shape(xhat_, c);
    const auto sum_dy = at::sum(dy, dims, false, at::kDouble);
    const auto sum_dy_xhat = at::sum(dy * xhat_, dims, false, at::kDouble);
    // 2C numbers: through the CPU, whatever the device.
    auto global = at::cat({sum_dy, sum_dy_xhat}).cpu();
    detail::all_reduce(
        group_, "medcl::dist::SyncBatchNorm1d (backward)", detail::Collective::AllReduce, global);
    global = global.to(dy.device());

    torch::autograd::variable_list out(3);
    if (should_compute_output(0)) {
      const auto mean_dy = (global.narrow(0, 0, c) / count_).view(shape);
      const auto mean_dy_xhat = (global.narrow(0, c, c) / count_).view(shape);
      auto scale = invstd_;
      if (weight_.defined()) {
        scale = scale * weight_.to(at::kDouble);
      }
      const auto t = xhat_.scalar_type();
      const auto grad = (dy - mean_dy.to(t) - xhat_ * mean_dy_xhat.to(t)) * scale.view(shape).to(t);
      out[0] = grad.to(input_dtype_);
    }
    if (should_compute_output(1)) {
      out[1] = sum_dy_xhat.to(weight_dtype_);
    }
    if (should_compute_output(2)) {
      out[2] = sum_dy.to(weight_dtype_);
    }
    return out;
  }

  std::string name() const override {
    return "medcl::dist::SyncBatchNormBackward";
  }

 private:
  ProcessGroup group_;
  at::Tensor xhat_;
  at::Tensor invstd_; // double [C], on the input's device
  at::Tensor weight_; // [C] or undefined
  double count_;
  at::ScalarType input_dtype_;
  at::ScalarType weight_dtype_;
};

at::Tensor eval_batch_norm(
    const at::Tensor& input,
    const at::Tensor& running_mean,
    const at::Tensor& running_var,
    const at::Tensor& weight,
    const at::Tensor& bias,
    bool training,
    double momentum,
    double eps) {
  const std::string error = input_error(input, running_mean, running_var, weight, bias);
  TORCH_CHECK(error.empty(), error);
  return torch::nn::functional::detail::batch_norm(
      input, running_mean, running_var, weight, bias, training, momentum, eps);
}

std::string counts_text(const std::vector<double>& counts) {
  std::ostringstream out;
  for (size_t r = 0; r < counts.size(); ++r) {
    out << (r ? ", " : "") << static_cast<int64_t>(counts[r]);
  }
  return out.str();
}

} // namespace

namespace detail {

at::Tensor sync_batch_norm_collective_path(
    const at::Tensor& input,
    const at::Tensor& running_mean,
    const at::Tensor& running_var,
    const at::Tensor& weight,
    const at::Tensor& bias,
    bool training,
    double momentum,
    double eps,
    const ProcessGroup& group) {
  if (!training) {
    // The running statistics: nothing to share.
    return eval_batch_norm(input, running_mean, running_var, weight, bias, false, momentum, eps);
  }
  const std::string error = input_error(input, running_mean, running_var, weight, bias);
  const bool records_gradient = at::GradMode::is_enabled() &&
      ((input.defined() && input.requires_grad()) || (weight.defined() && weight.requires_grad()) ||
       (bias.defined() && bias.requires_grad()));
  const int64_t c = error.empty() ? input.size(1) : 0;
  // Every rank stops here, together, when one refuses its input or the ranks disagree.
  const auto meta = exchange_metadata(
      group,
      kFn,
      Collective::AllGather,
      error.empty() ? std::vector<int64_t>{c, records_gradient ? 1 : 0} : std::vector<int64_t>{},
      error);
  for (size_t r = 1; r < meta.size(); ++r) {
    TORCH_CHECK(
        meta[r][0] == meta[0][0],
        kFn,
        ": ranks disagree on the number of features: rank 0 has ",
        meta[0][0],
        ", rank ",
        r,
        " has ",
        meta[r][0]);
    TORCH_CHECK(
        meta[r][1] == meta[0][1],
        kFn,
        ": ranks disagree on whether the output records a gradient: on rank 0 it ",
        meta[0][1] == 1 ? "does" : "does not",
        ", on rank ",
        r,
        " it ",
        meta[r][1] == 1 ? "does" : "does not",
        " (the backward is a collective: run every rank with grad mode on and inputs or "
        "parameters that require grad, or every rank without)");
  }

  // This rank's count, mean and sum of squared deviations, in double.
  const auto dims = reduced_dims(input);
  const auto shape = channel_shape(input, c);
  const int64_t n_local = input.size(0) * (input.dim() == 3 ? input.size(2) : 1);
  const auto x = input.detach();
  auto row = at::zeros({1, 1 + 2 * c}, at::kDouble);
  row[0][0] = static_cast<double>(n_local);
  if (n_local > 0) {
    const auto xd = x.to(at::kDouble);
    const auto mean = xd.mean(dims);
    row[0].narrow(0, 1, c).copy_(mean);
    row[0].narrow(0, 1 + c, c).copy_((xd - mean.view(shape)).pow(2).sum(dims));
  }
  const auto all = all_gather_rows(group, kFn, row, std::vector<int64_t>(group.size(), 1));

  // Combined in rank order (Chan, Golub & LeVeque), the same on every rank.
  double n = 0;
  auto mean = at::zeros({c}, at::kDouble);
  auto m2 = at::zeros({c}, at::kDouble);
  std::vector<double> counts;
  for (int64_t r = 0; r < all.size(0); ++r) {
    const double nb = all[r][0].item<double>();
    counts.push_back(nb);
    if (nb == 0) {
      continue;
    }
    const auto mean_b = all[r].narrow(0, 1, c);
    const auto m2_b = all[r].narrow(0, 1 + c, c);
    if (n == 0) {
      mean = mean_b.clone();
      m2 = m2_b.clone();
      n = nb;
      continue;
    }
    const double total = n + nb;
    const auto delta = mean_b - mean;
    mean = mean + delta * (nb / total);
    m2 = m2 + m2_b + delta * delta * (n * nb / total);
    n = total;
  }
  TORCH_CHECK(
      n > 1,
      kFn,
      ": expected more than 1 value per channel over all ranks when training, got ",
      static_cast<int64_t>(n),
      " (values per channel on each rank: ",
      counts_text(counts),
      ")");
  const auto var = m2 / n;
  const auto invstd = (var + eps).rsqrt().to(x.device());
  const auto mean_here = mean.to(x.device());

  const auto compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto xhat =
      (x.to(compute) - mean_here.to(compute).view(shape)) * invstd.to(compute).view(shape);
  at::Tensor y = xhat;
  if (weight.defined()) {
    y = y * weight.detach().to(compute).view(shape);
  }
  if (bias.defined()) {
    y = y + bias.detach().to(compute).view(shape);
  }
  auto out = y.to(input.scalar_type());
  if (out.is_same(xhat) || out.is_same(x)) {
    out = out.clone(); // a tensor of its own for the autograd edge
  }

  {
    c10::NoGradGuard no_grad;
    if (running_mean.defined()) {
      running_mean.mul_(1 - momentum)
          .add_(mean.to(running_mean.device(), running_mean.scalar_type()) * momentum);
    }
    if (running_var.defined()) {
      const auto unbiased = m2 / (n - 1);
      running_var.mul_(1 - momentum)
          .add_(unbiased.to(running_var.device(), running_var.scalar_type()) * momentum);
    }
  }

  if (records_gradient) {
    const auto weight_dtype = weight.defined() ? weight.scalar_type()
        : bias.defined()                       ? bias.scalar_type()
                                               : input.scalar_type();
    auto node = std::shared_ptr<SyncBatchNormBackward>(
        new SyncBatchNormBackward(
            group,
            xhat,
            invstd,
            weight.defined() ? weight.detach() : at::Tensor(),
            n,
            input.scalar_type(),
            weight_dtype),
        torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(input, weight, bias));
    torch::autograd::create_gradient_edge(out, std::move(node));
  }
  return out;
}

} // namespace detail

at::Tensor sync_batch_norm(
    const at::Tensor& input,
    const at::Tensor& running_mean,
    const at::Tensor& running_var,
    const at::Tensor& weight,
    const at::Tensor& bias,
    bool training,
    double momentum,
    double eps,
    const ProcessGroup& group) {
  if (group.size() == 1 || !training) {
    return eval_batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps);
  }
  return detail::sync_batch_norm_collective_path(
      input, running_mean, running_var, weight, bias, training, momentum, eps, group);
}

// ---- The module ------------------------------------------------------------------------------

SyncBatchNorm1dImpl::SyncBatchNorm1dImpl(SyncBatchNorm1dOptions options_)
    : options(std::move(options_)) {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall)
  reset();
}

SyncBatchNorm1dImpl::SyncBatchNorm1dImpl(const torch::nn::BatchNorm1dImpl& bn, ProcessGroup group)
    : options(bn.options.num_features()) {
  const auto& o = bn.options;
  options.eps(o.eps())
      .affine(o.affine())
      .track_running_stats(o.track_running_stats())
      .process_group(std::move(group));
  options.momentum(
      o.momentum().has_value() ? std::optional<double>(*o.momentum()) : std::optional<double>());
  // The very tensors of `bn` (register_parameter keeps their requires_grad as asked).
  weight = register_parameter(
      "weight", bn.weight, bn.weight.defined() ? bn.weight.requires_grad() : false);
  bias = register_parameter("bias", bn.bias, bn.bias.defined() ? bn.bias.requires_grad() : false);
  running_mean = register_buffer("running_mean", bn.running_mean);
  running_var = register_buffer("running_var", bn.running_var);
  num_batches_tracked = register_buffer("num_batches_tracked", bn.num_batches_tracked);
  train(bn.is_training());
}

void SyncBatchNorm1dImpl::reset() {
  const int64_t c = options.num_features();
  TORCH_CHECK(c > 0, kFn, ": num_features must be > 0, got ", c);
  TORCH_CHECK(options.eps() > 0, kFn, ": eps must be > 0, got ", options.eps());
  if (options.affine()) {
    weight = register_parameter("weight", at::empty({c}));
    bias = register_parameter("bias", at::empty({c}));
  } else {
    weight = register_parameter("weight", at::Tensor(), /*requires_grad=*/false);
    bias = register_parameter("bias", at::Tensor(), /*requires_grad=*/false);
  }
  if (options.track_running_stats()) {
    running_mean = register_buffer("running_mean", at::zeros({c}));
    running_var = register_buffer("running_var", at::ones({c}));
    num_batches_tracked = register_buffer("num_batches_tracked", at::zeros({}, at::kLong));
  } else {
    running_mean = register_buffer("running_mean", at::Tensor());
    running_var = register_buffer("running_var", at::Tensor());
    num_batches_tracked = register_buffer("num_batches_tracked", at::Tensor());
  }
  reset_parameters();
}

void SyncBatchNorm1dImpl::reset_running_stats() {
  if (options.track_running_stats()) {
    c10::NoGradGuard no_grad;
    running_mean.zero_();
    running_var.fill_(1);
    num_batches_tracked.zero_();
  }
}

void SyncBatchNorm1dImpl::reset_parameters() {
  reset_running_stats();
  if (options.affine()) {
    torch::nn::init::ones_(weight);
    torch::nn::init::zeros_(bias);
  }
}

void SyncBatchNorm1dImpl::pretty_print(std::ostream& stream) const {
  stream << "medcl::dist::SyncBatchNorm1d(" << options.num_features() << ", eps=" << options.eps()
         << ", momentum=";
  if (options.momentum().has_value()) {
    stream << *options.momentum();
  } else {
    stream << "None";
  }
  stream << ", affine=" << (options.affine() ? "true" : "false")
         << ", track_running_stats=" << (options.track_running_stats() ? "true" : "false")
         << ", group=" << options.process_group().describe() << ")";
}

at::Tensor SyncBatchNorm1dImpl::forward(const at::Tensor& input) {
  // As torch::nn::BatchNorm1d.
  double factor = options.momentum().value_or(0.0);
  if (is_training() && options.track_running_stats() && num_batches_tracked.defined()) {
    num_batches_tracked += 1;
    if (!options.momentum().has_value()) {
      factor = 1.0 / num_batches_tracked.item<double>();
    }
  }
  return sync_batch_norm(
      input,
      running_mean,
      running_var,
      weight,
      bias,
      is_training() || !options.track_running_stats(),
      factor,
      options.eps(),
      options.process_group());
}

// ---- Conversion ------------------------------------------------------------------------------

namespace {

std::string join_path(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// The paths of BatchNorm1d layers that are not elements of a Sequential.
void find_unconvertible(
    const torch::nn::Module& module,
    const std::string& path,
    std::vector<std::string>& out) {
  const bool is_sequential = dynamic_cast<const torch::nn::SequentialImpl*>(&module) != nullptr;
  for (const auto& kv : module.named_children()) {
    const auto* bn = dynamic_cast<const torch::nn::BatchNorm1dImpl*>(kv.value().get());
    if (bn != nullptr) {
      if (!is_sequential) {
        out.push_back(join_path(path, kv.key()));
      }
      continue;
    }
    find_unconvertible(*kv.value(), join_path(path, kv.key()), out);
  }
}

int64_t convert(torch::nn::Module& module, const ProcessGroup& group) {
  int64_t replaced = 0;
  auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(&module);
  if (seq != nullptr) {
    // A Sequential runs its own list of modules; its children are the same, in the same order.
    const auto children = seq->named_children();
    TORCH_INTERNAL_ASSERT(children.size() == seq->size());
    auto it = seq->begin();
    for (size_t i = 0; i < children.size(); ++i, ++it) {
      auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(children[i].value());
      if (bn == nullptr) {
        continue;
      }
      auto sync = std::make_shared<SyncBatchNorm1dImpl>(*bn, group);
      *it = torch::nn::AnyModule(sync);
      seq->replace_module(children[i].key(), sync);
      ++replaced;
    }
  }
  for (const auto& kv : module.named_children()) {
    if (dynamic_cast<SyncBatchNorm1dImpl*>(kv.value().get()) == nullptr) {
      replaced += convert(*kv.value(), group);
    }
  }
  return replaced;
}

} // namespace

int64_t convert_sync_batch_norm(torch::nn::Module& module, const ProcessGroup& group) {
  constexpr const char* fn = "medcl::dist::convert_sync_batch_norm";
  TORCH_CHECK(
      dynamic_cast<torch::nn::BatchNorm1dImpl*>(&module) == nullptr,
      fn,
      ": the module is itself a BatchNorm1d; build a SyncBatchNorm1d from it instead: "
      "medcl::dist::SyncBatchNorm1d(std::make_shared<medcl::dist::SyncBatchNorm1dImpl>(*bn, "
      "group))");
  std::vector<std::string> unconvertible;
  find_unconvertible(module, "", unconvertible);
  if (!unconvertible.empty()) {
    std::string paths;
    for (const auto& p : unconvertible) {
      paths += (paths.empty() ? "'" : ", '") + p + "'";
    }
    TORCH_CHECK(
        false,
        fn,
        ": the BatchNorm1d layer(s) ",
        paths,
        " are members of a module that is not a torch::nn::Sequential, so they cannot be replaced "
        "(the module keeps its own handle); build them as medcl::dist::SyncBatchNorm1d, or put "
        "them in a Sequential. Nothing was replaced");
  }
  return convert(module, group);
}

} // namespace dist
} // namespace medcl
