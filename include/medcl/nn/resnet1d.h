#pragma once

/// \file
/// 1-D residual network for multi-lead physiological signals (ECG, EEG): [B, leads, T] -> [B, D].

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <vector>

namespace medcl {

/// Options of `ResNet1d`.
///
/// Example:
///   auto opts = medcl::ResNet1dOptions(12, 128).widths({32, 64, 128}).blocks({2, 2, 2});
struct ResNet1dOptions {
  ResNet1dOptions(int64_t in_channels, int64_t output_dim)
      : in_channels_(in_channels), output_dim_(output_dim) {}
  /// Number of leads / channels of the signal. Required.
  TORCH_ARG(int64_t, in_channels);
  /// Size D of the representation. Required.
  TORCH_ARG(int64_t, output_dim);
  /// Channels of each stage; the stem has the first stage's width. Default: {32, 64, 128}
  TORCH_ARG(std::vector<int64_t>, widths) = std::vector<int64_t>({32, 64, 128});
  /// Residual blocks of each stage (one entry per stage). Default: {2, 2, 2}
  TORCH_ARG(std::vector<int64_t>, blocks) = std::vector<int64_t>({2, 2, 2});
  /// Kernel size of the blocks' convolutions, odd (the stem's is 7). Default: 7
  TORCH_ARG(int64_t, kernel_size) = 7;
};

namespace detail {

/// Basic residual block: conv -> BN -> ReLU -> conv -> BN, plus the input (through a strided 1×1
/// conv + BN when the length or width changes), then ReLU.
class ResidualBlock1dImpl : public torch::nn::Cloneable<ResidualBlock1dImpl> {
 public:
  ResidualBlock1dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride)
      : in_(in), out_(out), kernel_(kernel), stride_(stride) {
    reset();
  }
  void reset() override {
    using torch::nn::Conv1dOptions;
    conv1 = register_module(
        "conv1",
        torch::nn::Conv1d(
            Conv1dOptions(in_, out_, kernel_).stride(stride_).padding(kernel_ / 2).bias(false)));
    bn1 = register_module("bn1", torch::nn::BatchNorm1d(out_));
    conv2 = register_module(
        "conv2",
        torch::nn::Conv1d(Conv1dOptions(out_, out_, kernel_).padding(kernel_ / 2).bias(false)));
    bn2 = register_module("bn2", torch::nn::BatchNorm1d(out_));
    if (stride_ != 1 || in_ != out_) {
      shortcut = register_module(
          "shortcut",
          torch::nn::Sequential(
              torch::nn::Conv1d(Conv1dOptions(in_, out_, 1).stride(stride_).bias(false)),
              torch::nn::BatchNorm1d(out_)));
    } else {
      shortcut = nullptr;
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    auto y = at::relu(bn1->forward(conv1->forward(x)));
    y = bn2->forward(conv2->forward(y));
    return at::relu(y + (shortcut.is_empty() ? x : shortcut->forward(x)));
  }
  torch::nn::Conv1d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm1d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential shortcut{nullptr};

 private:
  int64_t in_, out_, kernel_, stride_;
};
TORCH_MODULE(ResidualBlock1d);

/// "32-64-128".
inline std::string join_dims(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    s += (i ? "-" : "") + std::to_string(v[i]);
  }
  return s;
}

} // namespace detail

/// Residual network over time for ECG / EEG (He et al. 2016, https://arxiv.org/abs/1512.03385,
/// in the 1-D form used for ECG by Hannun et al. 2019, https://doi.org/10.1038/s41591-018-0268-3):
/// a stem conv (kernel 7, stride 2) -> BN -> ReLU, stages of basic residual blocks with
/// BatchNorm1d (the first block of every stage after the first has stride 2), global average
/// pooling over time and a linear map to D.
///
/// Every stride-2 layer halves the length (rounding up); the signal must have at least
/// `min_length()` = max(7, 2^S) samples, S = the number of stride-2 layers (stages), so the stem's
/// kernel fits and every halving acts on at least 2 samples.
///
/// Shape: [B, in_channels, T] -> [B, output_dim], T >= min_length().
///
/// Example:
///   medcl::ResNet1d ecg(medcl::ResNet1dOptions(12, 128));      // 12-lead ECG
///   auto h = ecg(signals);                                     // [B, 12, 5000] -> [B, 128]
///   medcl::BYOL<medcl::ResNet1d> method(ecg, medcl::BYOLOptions(ecg->output_dim()));
class ResNet1dImpl : public torch::nn::Cloneable<ResNet1dImpl> {
 public:
  explicit ResNet1dImpl(ResNet1dOptions opts) : options(std::move(opts)) {
    reset();
  }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.in_channels() > 0, "ResNet1d: in_channels must be > 0, got ", o.in_channels());
    TORCH_CHECK(o.output_dim() > 0, "ResNet1d: output_dim must be > 0, got ", o.output_dim());
    TORCH_CHECK(!o.widths().empty(), "ResNet1d: widths must name at least one stage");
    TORCH_CHECK(
        o.blocks().size() == o.widths().size(),
        "ResNet1d: blocks must have one entry per stage (",
        o.widths().size(),
        "), got ",
        o.blocks().size());
    for (size_t i = 0; i < o.widths().size(); ++i) {
      TORCH_CHECK(o.widths()[i] > 0, "ResNet1d: every width must be > 0, got ", o.widths()[i]);
      TORCH_CHECK(o.blocks()[i] > 0, "ResNet1d: every stage needs >= 1 block, got ", o.blocks()[i]);
    }
    TORCH_CHECK(
        o.kernel_size() > 0 && o.kernel_size() % 2 == 1,
        "ResNet1d: kernel_size must be odd and > 0, got ",
        o.kernel_size());
    using torch::nn::Conv1dOptions;
    stem = register_module(
        "stem",
        torch::nn::Sequential(
            torch::nn::Conv1d(
                Conv1dOptions(o.in_channels(), o.widths()[0], 7).stride(2).padding(3).bias(false)),
            torch::nn::BatchNorm1d(o.widths()[0])));
    torch::nn::Sequential seq;
    int64_t in = o.widths()[0];
    for (size_t s = 0; s < o.widths().size(); ++s) {
      for (int64_t b = 0; b < o.blocks()[s]; ++b) {
        const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        seq->push_back(detail::ResidualBlock1d(in, o.widths()[s], o.kernel_size(), stride));
        in = o.widths()[s];
      }
    }
    stages = register_module("stages", seq);
    fc = register_module("fc", torch::nn::Linear(in, o.output_dim()));
  }

  at::Tensor forward(const at::Tensor& x) {
    TORCH_CHECK(
        x.defined() && x.dim() == 3,
        "ResNet1d: expected input of shape [B, leads, T], got ",
        x.defined() ? x.sizes() : at::IntArrayRef{});
    TORCH_CHECK(
        x.size(1) == options.in_channels(),
        "ResNet1d: expected ",
        options.in_channels(),
        " leads (input of shape [B, ",
        options.in_channels(),
        ", T]), got ",
        x.sizes());
    TORCH_CHECK(
        x.size(2) >= min_length(),
        "ResNet1d: signals must have at least ",
        min_length(),
        " samples, got ",
        x.sizes());
    auto y = at::relu(stem->forward(x));
    y = stages->forward(y);
    return fc->forward(y.mean(2));
  }

  /// Shortest signal accepted: max(7, 2^S), S = number of stride-2 layers (= number of stages).
  int64_t min_length() const {
    const int64_t strided = static_cast<int64_t>(options.widths().size());
    return std::max<int64_t>(7, int64_t{1} << std::min<int64_t>(strided, 62));
  }
  /// Size D of the representation.
  int64_t output_dim() const {
    return options.output_dim();
  }
  /// E.g. "ResNet1d(12 leads, stages 32-64-128, blocks 2-2-2, kernel 7, D=128)".
  std::string describe() const {
    const auto& o = options;
    return "ResNet1d(" + std::to_string(o.in_channels()) +
        (o.in_channels() == 1 ? " lead" : " leads") + ", stages " + detail::join_dims(o.widths()) +
        ", blocks " + detail::join_dims(o.blocks()) + ", kernel " +
        std::to_string(o.kernel_size()) + ", D=" + std::to_string(o.output_dim()) + ")";
  }

  ResNet1dOptions options;
  torch::nn::Sequential stem{nullptr};
  torch::nn::Sequential stages{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNet1d);

} // namespace medcl
