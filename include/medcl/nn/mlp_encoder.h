#pragma once

/// \file
/// MLP encoder for tabular records (EHR values with an observed-mask) and omics profiles.

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>

#include <cmath>
#include <string>
#include <vector>

namespace medcl {

/// Normalisation after each hidden linear layer of `MLPEncoder`.
enum class MLPNorm { None, BatchNorm, LayerNorm };

/// Activation after each hidden layer of `MLPEncoder`.
enum class MLPActivation { ReLU, GELU };

/// Options of `MLPEncoder`.
///
/// Example:
///   auto opts = medcl::MLPEncoderOptions(17, 64).hidden_dims({128, 128}).dropout(0.1)
///                   .norm(medcl::MLPNorm::LayerNorm).use_missingness_mask(true);
struct MLPEncoderOptions {
  MLPEncoderOptions(int64_t input_dim, int64_t output_dim)
      : input_dim_(input_dim), output_dim_(output_dim) {}
  /// Number F of features (values; the observed flags are not counted). Required.
  TORCH_ARG(int64_t, input_dim);
  /// Size D of the representation. Required.
  TORCH_ARG(int64_t, output_dim);
  /// Widths of the hidden layers (empty: a single linear map). Default: {256, 256}
  TORCH_ARG(std::vector<int64_t>, hidden_dims) = std::vector<int64_t>({256, 256});
  /// Normalisation after each hidden linear layer. Default: MLPNorm::BatchNorm
  TORCH_ARG(MLPNorm, norm) = MLPNorm::BatchNorm;
  /// Activation after each hidden layer. Default: MLPActivation::ReLU
  TORCH_ARG(MLPActivation, activation) = MLPActivation::ReLU;
  /// Dropout probability after each hidden activation, in [0, 1). Default: 0.0
  TORCH_ARG(double, dropout) = 0.0;
  /// Input is `with_missingness(values, observed)`, [B, 2F]: zero-filled values followed by the
  /// observed flags, so the network can tell a measured 0 from a missing value. Default: false
  TORCH_ARG(bool, use_missingness_mask) = false;
};

/// The input of an `MLPEncoder` built with `use_missingness_mask(true)`: values with every
/// unobserved entry set to 0 (NaN included), followed by the observed flags as 0/1,
/// \f[ \tilde x = [\, x \odot m,\; m \,] \f]
/// `observed` is bool, or floating / integral with non-zero meaning observed (the convention of
/// medcl's tabular augmentations: true = observed). Its dtype follows `values`.
///
/// Shape: values [B, F], observed [B, F] -> [B, 2F].
///
/// Example:
///   auto x = medcl::with_missingness(values, observed);   // [B, 2F]
///   auto h = encoder(x);
inline at::Tensor with_missingness(const at::Tensor& values, const at::Tensor& observed) {
  TORCH_CHECK(
      values.defined() && values.dim() == 2,
      "with_missingness: expected values of shape [B, F], got ",
      values.defined() ? values.sizes() : at::IntArrayRef{});
  TORCH_CHECK(
      at::isFloatingType(values.scalar_type()),
      "with_missingness: expected floating values, got ",
      values.scalar_type());
  TORCH_CHECK(
      observed.defined() && observed.sizes() == values.sizes(),
      "with_missingness: expected an observed mask of shape ",
      values.sizes(),
      " (the values' shape), got ",
      observed.defined() ? observed.sizes() : at::IntArrayRef{});
  auto m = observed.scalar_type() == at::kBool ? observed : observed.ne(0);
  m = m.to(values.device());
  return at::cat({values.masked_fill(m.logical_not(), 0.0), m.to(values.scalar_type())}, 1);
}

/// The same, with NaN marking the missing entries (as many EHR extracts do).
///
/// Shape: values [B, F] -> [B, 2F].
inline at::Tensor with_missingness(const at::Tensor& values) {
  TORCH_CHECK(
      values.defined() && values.dim() == 2,
      "with_missingness: expected values of shape [B, F], got ",
      values.defined() ? values.sizes() : at::IntArrayRef{});
  return with_missingness(values, values.isnan().logical_not());
}

/// Encoder for tabular / EHR records and omics profiles: Linear -> [norm] -> activation ->
/// [dropout], once per hidden width, then a linear map to the representation,
/// \f[ h_{l+1} = \mathrm{drop}(\sigma(\mathrm{norm}(W_l h_l))), \qquad y = W_L h_L + b_L \f]
/// Linear layers followed by batch normalisation have no bias (it would be cancelled).
///
/// Missing values: build the encoder with `use_missingness_mask(true)` and feed it
/// `with_missingness(values, observed)` (or call `forward_masked(values, observed)`); `forward`
/// itself takes one tensor so that methods (SimCLR, BYOL, ...) can call it like any encoder.
///
/// Shape: [B, F] -> [B, D]; with `use_missingness_mask`, [B, 2F] -> [B, D].
///
/// Example:
///   medcl::MLPEncoder enc(medcl::MLPEncoderOptions(17, 64).use_missingness_mask(true));
///   auto h = enc->forward_masked(values, observed);     // [B, 64]
///   medcl::SimCLR<medcl::MLPEncoder> method(enc, medcl::SimCLROptions(enc->output_dim()));
class MLPEncoderImpl : public torch::nn::Cloneable<MLPEncoderImpl> {
 public:
  explicit MLPEncoderImpl(MLPEncoderOptions opts) : options(std::move(opts)) {
    reset();
  }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.input_dim() > 0, "MLPEncoder: input_dim must be > 0, got ", o.input_dim());
    TORCH_CHECK(o.output_dim() > 0, "MLPEncoder: output_dim must be > 0, got ", o.output_dim());
    for (auto h : o.hidden_dims()) {
      TORCH_CHECK(h > 0, "MLPEncoder: every hidden width must be > 0, got ", h);
    }
    TORCH_CHECK(
        o.dropout() >= 0.0 && o.dropout() < 1.0,
        "MLPEncoder: dropout must be in [0, 1), got ",
        o.dropout());
    torch::nn::Sequential seq;
    int64_t in = expected_input_dim();
    for (auto h : o.hidden_dims()) {
      const bool bn = o.norm() == MLPNorm::BatchNorm;
      seq->push_back(torch::nn::Linear(torch::nn::LinearOptions(in, h).bias(!bn)));
      if (bn) {
        seq->push_back(torch::nn::BatchNorm1d(h));
      } else if (o.norm() == MLPNorm::LayerNorm) {
        seq->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
      }
      if (o.activation() == MLPActivation::GELU) {
        seq->push_back(torch::nn::GELU());
      } else {
        seq->push_back(torch::nn::ReLU());
      }
      if (o.dropout() > 0.0) {
        seq->push_back(torch::nn::Dropout(o.dropout()));
      }
      in = h;
    }
    seq->push_back(torch::nn::Linear(in, o.output_dim()));
    layers = register_module("layers", seq);
  }

  /// x: [B, F], or [B, 2F] from `with_missingness` when `use_missingness_mask`.
  at::Tensor forward(const at::Tensor& x) {
    const int64_t f = expected_input_dim();
    TORCH_CHECK(
        x.defined() && x.dim() == 2 && x.size(1) == f,
        "MLPEncoder: expected input of shape [B, ",
        f,
        "]",
        options.use_missingness_mask()
            ? " (" + std::to_string(options.input_dim()) + " values and " +
                std::to_string(options.input_dim()) + " observed flags, see with_missingness)"
            : std::string(),
        ", got ",
        x.defined() ? x.sizes() : at::IntArrayRef{});
    return layers->forward(x);
  }

  /// `forward(with_missingness(values, observed))`; needs `use_missingness_mask`.
  at::Tensor forward_masked(const at::Tensor& values, const at::Tensor& observed) {
    TORCH_CHECK(
        options.use_missingness_mask(),
        "MLPEncoder: forward_masked needs an encoder built with use_missingness_mask(true)");
    return forward(with_missingness(values, observed));
  }

  /// Width of the input `forward` expects: F, or 2F with the missingness mask.
  int64_t expected_input_dim() const {
    return options.use_missingness_mask() ? 2 * options.input_dim() : options.input_dim();
  }
  /// Size D of the representation.
  int64_t output_dim() const {
    return options.output_dim();
  }
  /// E.g. "MLPEncoder(17 features + mask, hidden 256-256, BatchNorm, ReLU, dropout 0.1, D=64)";
  /// "MLPEncoder(5 features, linear, D=3)" without hidden layers.
  std::string describe() const {
    const auto& o = options;
    std::string s = "MLPEncoder(" + std::to_string(o.input_dim()) +
        (o.input_dim() == 1 ? " feature" : " features");
    if (o.use_missingness_mask()) {
      s += " + mask";
    }
    if (o.hidden_dims().empty()) {
      return s + ", linear, D=" + std::to_string(o.output_dim()) + ")";
    }
    s += ", hidden ";
    for (size_t i = 0; i < o.hidden_dims().size(); ++i) {
      s += (i ? "-" : "") + std::to_string(o.hidden_dims()[i]);
    }
    s += o.norm() == MLPNorm::BatchNorm  ? ", BatchNorm"
        : o.norm() == MLPNorm::LayerNorm ? ", LayerNorm"
                                         : "";
    s += o.activation() == MLPActivation::GELU ? ", GELU" : ", ReLU";
    if (o.dropout() > 0.0) {
      std::string d = std::to_string(o.dropout());
      d.erase(d.find_last_not_of('0') + 1);
      s += ", dropout " + d;
    }
    return s + ", D=" + std::to_string(o.output_dim()) + ")";
  }

  MLPEncoderOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(MLPEncoder);

} // namespace medcl
