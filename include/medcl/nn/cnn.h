#pragma once

/// \file
/// Small convolutional encoders for 2-D images (radiographs, slices, patches) and 3-D volumes
/// (CT, MRI): conv-BN-ReLU stages with stride 2, global average pooling, a linear map.

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
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

/// Options of `CNN2d` and `CNN3d`.
///
/// Example:
///   auto opts = medcl::CNNOptions(1, 128).widths({16, 32, 64, 128}).convs_per_stage(2);
struct CNNOptions {
  CNNOptions(int64_t in_channels, int64_t output_dim)
      : in_channels_(in_channels), output_dim_(output_dim) {}
  /// Number C of input channels. Required.
  TORCH_ARG(int64_t, in_channels);
  /// Size D of the representation. Required.
  TORCH_ARG(int64_t, output_dim);
  /// Channels of each stage; every stage starts with a stride-2 convolution. Default: {32, 64, 128}
  TORCH_ARG(std::vector<int64_t>, widths) = std::vector<int64_t>({32, 64, 128});
  /// Conv-BN-ReLU layers per stage (the first with stride 2, the others with stride 1).
  /// Default: 1
  TORCH_ARG(int64_t, convs_per_stage) = 1;
  /// Kernel size of every convolution, odd. Default: 3
  TORCH_ARG(int64_t, kernel_size) = 3;
};

namespace detail {

template <size_t D>
struct CNNLayers;
template <>
struct CNNLayers<2> {
  using Conv = torch::nn::Conv2d;
  using BatchNorm = torch::nn::BatchNorm2d;
  static constexpr const char* kName = "CNN2d";
  static constexpr const char* kShape = "[B, C, H, W]";
};
template <>
struct CNNLayers<3> {
  using Conv = torch::nn::Conv3d;
  using BatchNorm = torch::nn::BatchNorm3d;
  static constexpr const char* kName = "CNN3d";
  static constexpr const char* kShape = "[B, C, D, H, W]";
};

} // namespace detail

/// Small convolutional encoder in D = 2 or 3 spatial dimensions (`CNN2d`, `CNN3d`): per stage,
/// `convs_per_stage` × (conv -> BN -> ReLU), the first conv of every stage with stride 2; then the
/// mean over all positions and a linear map to `output_dim`.
///
/// Every stage halves each spatial size (rounding up); each spatial size must be at least
/// `min_size()` = max(kernel_size, 2^stages), so every halving acts on at least 2 positions.
///
/// Shape: CNN2d [B, C, H, W] -> [B, output_dim]; CNN3d [B, C, D, H, W] -> [B, output_dim].
///
/// Example:
///   medcl::CNN2d cxr(medcl::CNNOptions(1, 128));              // grey-level radiographs
///   auto h = cxr(images);                                     // [B, 1, 224, 224] -> [B, 128]
///   medcl::CNN3d ct(medcl::CNNOptions(1, 64).widths({16, 32, 64}));
///   auto v = ct(volumes);                                     // [B, 1, 32, 64, 64] -> [B, 64]
template <size_t D>
class CNNImpl : public torch::nn::Cloneable<CNNImpl<D>> {
  using L = detail::CNNLayers<D>;

 public:
  explicit CNNImpl(CNNOptions opts) : options(std::move(opts)) {
    reset();
  }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.in_channels() > 0, L::kName, ": in_channels must be > 0, got ", o.in_channels());
    TORCH_CHECK(o.output_dim() > 0, L::kName, ": output_dim must be > 0, got ", o.output_dim());
    TORCH_CHECK(!o.widths().empty(), L::kName, ": widths must name at least one stage");
    for (auto w : o.widths()) {
      TORCH_CHECK(w > 0, L::kName, ": every width must be > 0, got ", w);
    }
    TORCH_CHECK(
        o.convs_per_stage() > 0,
        L::kName,
        ": convs_per_stage must be > 0, got ",
        o.convs_per_stage());
    TORCH_CHECK(
        o.kernel_size() > 0 && o.kernel_size() % 2 == 1,
        L::kName,
        ": kernel_size must be odd and > 0, got ",
        o.kernel_size());
    torch::nn::Sequential seq;
    int64_t in = o.in_channels();
    for (auto w : o.widths()) {
      for (int64_t c = 0; c < o.convs_per_stage(); ++c) {
        seq->push_back(typename L::Conv(torch::nn::ConvOptions<D>(in, w, o.kernel_size())
                                            .stride(c == 0 ? 2 : 1)
                                            .padding(o.kernel_size() / 2)
                                            .bias(false)));
        seq->push_back(typename L::BatchNorm(w));
        seq->push_back(torch::nn::ReLU());
        in = w;
      }
    }
    features = this->register_module("features", seq);
    fc = this->register_module("fc", torch::nn::Linear(in, o.output_dim()));
  }

  at::Tensor forward(const at::Tensor& x) {
    const int64_t rank = static_cast<int64_t>(D) + 2;
    TORCH_CHECK(
        x.defined() && x.dim() == rank,
        L::kName,
        ": expected input of shape ",
        L::kShape,
        ", got ",
        x.defined() ? x.sizes() : at::IntArrayRef{});
    TORCH_CHECK(
        x.size(1) == options.in_channels(),
        L::kName,
        ": expected ",
        options.in_channels(),
        " channels, got ",
        x.sizes());
    for (int64_t d = 2; d < rank; ++d) {
      TORCH_CHECK(
          x.size(d) >= min_size(),
          L::kName,
          ": every spatial size must be at least ",
          min_size(),
          ", got ",
          x.sizes());
    }
    return fc->forward(features->forward(x).flatten(2).mean(2));
  }

  /// Smallest spatial size accepted: max(kernel_size, 2^stages).
  int64_t min_size() const {
    const int64_t stages = static_cast<int64_t>(options.widths().size());
    return std::max<int64_t>(options.kernel_size(), int64_t{1} << std::min<int64_t>(stages, 62));
  }
  /// Size D of the representation.
  int64_t output_dim() const {
    return options.output_dim();
  }
  /// E.g. "CNN2d(3 channels, stages 32-64-128, 1 conv per stage, kernel 3, D=128)".
  std::string describe() const {
    const auto& o = options;
    std::string stages;
    for (size_t i = 0; i < o.widths().size(); ++i) {
      stages += (i ? "-" : "") + std::to_string(o.widths()[i]);
    }
    return std::string(L::kName) + "(" + std::to_string(o.in_channels()) +
        (o.in_channels() == 1 ? " channel" : " channels") + ", stages " + stages + ", " +
        std::to_string(o.convs_per_stage()) + (o.convs_per_stage() == 1 ? " conv" : " convs") +
        " per stage, kernel " + std::to_string(o.kernel_size()) +
        ", D=" + std::to_string(o.output_dim()) + ")";
  }

  CNNOptions options;
  torch::nn::Sequential features{nullptr};
  torch::nn::Linear fc{nullptr};
};

/// 2-D image encoder, [B, C, H, W] -> [B, D]; see `CNNImpl`.
using CNN2dImpl = CNNImpl<2>;
/// 3-D volume encoder, [B, C, D, H, W] -> [B, D]; see `CNNImpl`.
using CNN3dImpl = CNNImpl<3>;
TORCH_MODULE(CNN2d);
TORCH_MODULE(CNN3d);

} // namespace medcl
