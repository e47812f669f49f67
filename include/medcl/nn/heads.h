#pragma once

/// \file
/// The heads that self-supervised methods put on top of a user's encoder: projection MLP,
/// prediction MLP, DINO head with a weight-normalised last layer, SwAV prototypes.

#include <medcl/dist/sync_batch_norm.h>

#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <string>

namespace medcl {

/// Options of `ProjectionHead` and `PredictionHead`: an MLP of `num_layers` linear layers,
/// each but the last followed by batch normalisation (optional) and ReLU.
///
/// Example:
///   auto opts = medcl::ProjectionHeadOptions(512, 2048, 128).num_layers(3);
struct ProjectionHeadOptions {
  ProjectionHeadOptions(int64_t input_dim, int64_t hidden_dim, int64_t output_dim)
      : input_dim_(input_dim), hidden_dim_(hidden_dim), output_dim_(output_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, input_dim);
  /// Width of the hidden layers. Required.
  TORCH_ARG(int64_t, hidden_dim);
  /// Size of the projection. Required.
  TORCH_ARG(int64_t, output_dim);
  /// Number of linear layers (1 = a single linear map). Default: 2
  TORCH_ARG(int64_t, num_layers) = 2;
  /// Batch normalisation after each hidden linear layer. Default: true
  TORCH_ARG(bool, batch_norm) = true;
  /// Batch normalisation (without affine parameters) after the last layer, as SimSiam's
  /// projector and MoCo v3's heads. Default: false
  TORCH_ARG(bool, last_batch_norm) = false;
  /// Synchronise the batch normalisations over the ranks of this process group when it has more
  /// than one (`medcl::dist::SyncBatchNorm1d`: the statistics of every rank's rows, as SimCLR,
  /// BYOL and MoCo v3 train on many devices); the one-process group keeps
  /// `torch::nn::BatchNorm1d`. For a head built already, or a whole model:
  /// `medcl::dist::convert_sync_batch_norm(module, group)`. Default: the one-process group
  TORCH_ARG(dist::ProcessGroup, sync_batch_norm) = {};
};

namespace detail {

inline void check_head_dims(const char* who, int64_t in, int64_t hidden, int64_t out, int64_t n) {
  TORCH_CHECK(in > 0, who, ": input_dim must be > 0, got ", in);
  TORCH_CHECK(hidden > 0, who, ": hidden_dim must be > 0, got ", hidden);
  TORCH_CHECK(out > 0, who, ": output_dim must be > 0, got ", out);
  TORCH_CHECK(n >= 1, who, ": num_layers must be >= 1, got ", n);
}

/// Appends batch normalisation of `features` to `seq`: torch::nn::BatchNorm1d, or
/// medcl::dist::SyncBatchNorm1d over the head's process group of several ranks.
inline void push_batch_norm(
    torch::nn::Sequential& seq,
    const ProjectionHeadOptions& o,
    int64_t features,
    bool affine) {
  if (o.sync_batch_norm().size() > 1) {
    seq->push_back(dist::SyncBatchNorm1d(
        dist::SyncBatchNorm1dOptions(features).affine(affine).process_group(o.sync_batch_norm())));
  } else {
    seq->push_back(torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(features).affine(affine)));
  }
}

inline torch::nn::Sequential make_mlp(const char* who, const ProjectionHeadOptions& o) {
  check_head_dims(who, o.input_dim(), o.hidden_dim(), o.output_dim(), o.num_layers());
  torch::nn::Sequential seq;
  int64_t in = o.input_dim();
  for (int64_t i = 0; i + 1 < o.num_layers(); ++i) {
    seq->push_back(
        torch::nn::Linear(torch::nn::LinearOptions(in, o.hidden_dim()).bias(!o.batch_norm())));
    if (o.batch_norm()) {
      push_batch_norm(seq, o, o.hidden_dim(), /*affine=*/true);
    }
    seq->push_back(torch::nn::ReLU());
    in = o.hidden_dim();
  }
  seq->push_back(
      torch::nn::Linear(torch::nn::LinearOptions(in, o.output_dim()).bias(!o.last_batch_norm())));
  if (o.last_batch_norm()) {
    push_batch_norm(seq, o, o.output_dim(), /*affine=*/false);
  }
  return seq;
}

inline void check_head_input(const char* who, const at::Tensor& x, int64_t dim) {
  TORCH_CHECK(
      x.defined() && x.dim() == 2 && x.size(1) == dim,
      who,
      ": expected input of shape [B, ",
      dim,
      "], got ",
      x.defined() ? x.sizes() : at::IntArrayRef{});
}

} // namespace detail

/// Projection head g(h) of SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709), MoCo v2/v3,
/// BYOL and SwAV: Linear -> [BN] -> ReLU -> ... -> Linear [-> BN].
///
/// Shape: [B, input_dim] -> [B, output_dim].
///
/// Example:
///   medcl::ProjectionHead head(medcl::ProjectionHeadOptions(512, 2048, 128));
///   auto z = head(encoder(x));
class ProjectionHeadImpl : public torch::nn::Cloneable<ProjectionHeadImpl> {
 public:
  explicit ProjectionHeadImpl(ProjectionHeadOptions opts) : options(std::move(opts)) {
    reset();
  }
  void reset() override {
    layers = register_module("layers", detail::make_mlp("ProjectionHead", options));
  }
  at::Tensor forward(const at::Tensor& x) {
    detail::check_head_input("ProjectionHead", x, options.input_dim());
    return layers->forward(x);
  }
  ProjectionHeadOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(ProjectionHead);

/// Prediction head q of BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733), SimSiam
/// (Chen & He 2021, https://arxiv.org/abs/2011.10566) and MoCo v3: the same MLP as the
/// projection head, by default 2 layers with a bottleneck (SimSiam uses hidden = output / 4).
///
/// Shape: [B, input_dim] -> [B, output_dim].
class PredictionHeadImpl : public torch::nn::Cloneable<PredictionHeadImpl> {
 public:
  explicit PredictionHeadImpl(ProjectionHeadOptions opts) : options(std::move(opts)) {
    reset();
  }
  void reset() override {
    layers = register_module("layers", detail::make_mlp("PredictionHead", options));
  }
  at::Tensor forward(const at::Tensor& x) {
    detail::check_head_input("PredictionHead", x, options.input_dim());
    return layers->forward(x);
  }
  ProjectionHeadOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(PredictionHead);

/// Options of `DINOHead`.
struct DINOHeadOptions {
  DINOHeadOptions(int64_t input_dim, int64_t output_dim)
      : input_dim_(input_dim), output_dim_(output_dim) {}
  /// Size of the encoder's output. Required.
  TORCH_ARG(int64_t, input_dim);
  /// Number K of output dimensions ("prototypes"). Required.
  TORCH_ARG(int64_t, output_dim);
  /// Width of the MLP's hidden layers. Default: 2048
  TORCH_ARG(int64_t, hidden_dim) = 2048;
  /// Size of the bottleneck before the weight-normalised layer. Default: 256
  TORCH_ARG(int64_t, bottleneck_dim) = 256;
  /// Linear layers of the MLP before the bottleneck output. Default: 3
  TORCH_ARG(int64_t, num_layers) = 3;
  /// Batch normalisation in the MLP. Default: false
  TORCH_ARG(bool, batch_norm) = false;
  /// Keep the weight norm g of the last layer fixed to 1 (DINO's `norm_last_layer`). Default: true
  TORCH_ARG(bool, norm_last_layer) = true;
};

/// DINO head (Caron et al. 2021, https://arxiv.org/abs/2104.14294): MLP with GELU to a bottleneck,
/// L2 normalisation, then a weight-normalised linear layer without bias,
/// \f[ y = \frac{g_k}{\lVert v_k\rVert} v_k^\top \frac{u}{\lVert u\rVert} \f]
/// with \f$g_k = 1\f$ fixed when `norm_last_layer` (the DINO default).
///
/// Shape: [B, input_dim] -> [B, output_dim].
class DINOHeadImpl : public torch::nn::Cloneable<DINOHeadImpl> {
 public:
  explicit DINOHeadImpl(DINOHeadOptions opts) : options(std::move(opts)) {
    reset();
  }
  void reset() override {
    const auto& o = options;
    detail::check_head_dims(
        "DINOHead", o.input_dim(), o.hidden_dim(), o.output_dim(), o.num_layers());
    TORCH_CHECK(
        o.bottleneck_dim() > 0, "DINOHead: bottleneck_dim must be > 0, got ", o.bottleneck_dim());
    torch::nn::Sequential seq;
    int64_t in = o.input_dim();
    for (int64_t i = 0; i + 1 < o.num_layers(); ++i) {
      seq->push_back(torch::nn::Linear(in, o.hidden_dim()));
      if (o.batch_norm()) {
        seq->push_back(torch::nn::BatchNorm1d(o.hidden_dim()));
      }
      seq->push_back(torch::nn::GELU());
      in = o.hidden_dim();
    }
    seq->push_back(torch::nn::Linear(in, o.bottleneck_dim()));
    mlp = register_module("mlp", seq);
    {
      c10::NoGradGuard no_grad;
      for (auto& p : mlp->parameters()) {
        if (p.dim() == 2) {
          // DINO initialises its head with truncated normal, std 0.02.
          p.normal_(0.0, 0.02).clamp_(-0.04, 0.04);
        } else {
          p.zero_();
        }
      }
    }
    const double bound = 1.0 / std::sqrt(static_cast<double>(o.bottleneck_dim()));
    last_v = register_parameter(
        "last_v", torch::empty({o.output_dim(), o.bottleneck_dim()}).uniform_(-bound, bound));
    last_g = register_parameter(
        "last_g", torch::ones({o.output_dim(), 1}), /*requires_grad=*/!o.norm_last_layer());
  }
  at::Tensor forward(const at::Tensor& x) {
    detail::check_head_input("DINOHead", x, options.input_dim());
    auto u = mlp->forward(x);
    u = u / u.norm(2, 1, true).clamp_min(1e-12);
    auto w = last_g * last_v / last_v.norm(2, 1, true).clamp_min(1e-12);
    return at::mm(u, w.t());
  }
  /// The parameters of the weight-normalised last layer (DINO freezes them in the first epoch).
  std::vector<at::Tensor> last_layer_parameters() const {
    return {last_v, last_g};
  }
  DINOHeadOptions options;
  torch::nn::Sequential mlp{nullptr};
  at::Tensor last_v;
  at::Tensor last_g;
};
TORCH_MODULE(DINOHead);

/// SwAV prototypes (Caron et al. 2020, https://arxiv.org/abs/2006.09882): K learnable unit vectors
/// c_k; scores are cosines \f$ z^\top c_k / \lVert z\rVert \f$ once `normalize()` has been called,
/// which SwAV does before every step.
///
/// Shape: [B, input_dim] -> [B, num_prototypes].
class PrototypesImpl : public torch::nn::Cloneable<PrototypesImpl> {
 public:
  PrototypesImpl(int64_t input_dim, int64_t num_prototypes)
      : input_dim_(input_dim), num_prototypes_(num_prototypes) {
    reset();
  }
  void reset() override {
    TORCH_CHECK(input_dim_ > 0, "Prototypes: input_dim must be > 0, got ", input_dim_);
    TORCH_CHECK(
        num_prototypes_ > 0, "Prototypes: num_prototypes must be > 0, got ", num_prototypes_);
    const double bound = 1.0 / std::sqrt(static_cast<double>(input_dim_));
    weight = register_parameter(
        "weight", torch::empty({num_prototypes_, input_dim_}).uniform_(-bound, bound));
    normalize();
  }
  /// Scales every prototype to unit length (no gradient).
  void normalize() {
    c10::NoGradGuard no_grad;
    weight.div_(weight.norm(2, 1, true).clamp_min(1e-12));
  }
  at::Tensor forward(const at::Tensor& z) {
    detail::check_head_input("Prototypes", z, input_dim_);
    auto zn = z / z.norm(2, 1, true).clamp_min(1e-12);
    return at::mm(zn, weight.t());
  }
  int64_t num_prototypes() const {
    return num_prototypes_;
  }
  at::Tensor weight;

 private:
  int64_t input_dim_;
  int64_t num_prototypes_;
};
TORCH_MODULE(Prototypes);

} // namespace medcl
