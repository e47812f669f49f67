#pragma once

/// \file
/// Batch normalisation whose batch statistics are those of every rank's rows (synchronised batch
/// normalisation): with the batch spread over ranks, each rank normalises with the global mean
/// and variance, as one process would on the concatenated batch, and the backward sums over ranks
/// what the gradient needs. SimCLR, BYOL and MoCo v3 use it in their heads when training on many
/// devices: with per-rank statistics the heads see small, device-specific batches.

#include <medcl/dist/process_group.h>

#include <ATen/ATen.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <ostream>

namespace medcl {
namespace dist {

/// Options of `SyncBatchNorm1d`: those of `torch::nn::BatchNorm1dOptions`, and the process
/// group.
///
/// Example:
///   auto opts = medcl::dist::SyncBatchNorm1dOptions(256).process_group(group).momentum(0.01);
struct SyncBatchNorm1dOptions {
  /* implicit */ SyncBatchNorm1dOptions(int64_t num_features) : num_features_(num_features) {}
  /// Number C of features (channels). Required.
  TORCH_ARG(int64_t, num_features);
  /// Added to the variance before its square root. Default: 1e-5
  TORCH_ARG(double, eps) = 1e-5;
  /// Weight of the batch in the running statistics' exponential average; none: a cumulative
  /// average (1 / number of batches). Default: 0.1
  TORCH_ARG(std::optional<double>, momentum) = 0.1;
  /// Learnable per-feature scale (weight) and shift (bias). Default: true
  TORCH_ARG(bool, affine) = true;
  /// Keep running statistics (used in eval mode); without them eval mode normalises with the
  /// batch's statistics, synchronised too. Default: true
  TORCH_ARG(bool, track_running_stats) = true;
  /// The ranks whose rows make the batch. Default: the one-process group (then this is
  /// torch::nn::BatchNorm1d)
  TORCH_ARG(ProcessGroup, process_group) = {};
};

/// Batch normalisation with the batch statistics of every rank's rows (Ioffe & Szegedy 2015,
/// https://arxiv.org/abs/1502.03167; synchronised as PyTorch's `SyncBatchNorm`). With the rows
/// \f$x_i\f$ of all ranks (N in total, per feature),
/// \f[ \mu = \frac1N \sum_i x_i,\quad \sigma^2 = \frac1N \sum_i (x_i - \mu)^2,\quad
///     \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad y_i = \gamma \hat x_i + \beta.
/// \f]
/// Forward: each rank's count, mean and sum of squared deviations (M2) in double are all-gathered
/// and combined in rank order (Chan et al.'s parallel update), so every rank gets the same
/// \f$\mu, \sigma^2\f$ without the cancellation of \f$E[x^2] - E[x]^2\f$. Backward: with
/// \f$g_i = \partial L / \partial y_i\f$ on each rank's rows,
/// \f[ \frac{\partial L}{\partial x_i} = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}} \Big( g_i -
///     \frac1N \sum_j g_j - \hat x_i \frac1N \sum_j g_j \hat x_j \Big), \f]
/// where the sums over all ranks' rows are all-reduced (one all-reduce of 2C numbers, in double);
/// the weight's and bias's gradients are this rank's sums \f$\sum_{i \in r} g_i \hat x_i\f$ and
/// \f$\sum_{i \in r} g_i\f$, which `GradientReducer` then sums over ranks (medcl's convention:
/// every rank holds its share). Running statistics are updated as torch::nn::BatchNorm1d does,
/// with the global mean and the unbiased global variance \f$\sigma^2 N / (N - 1)\f$; eval mode
/// uses them and does not communicate.
///
/// Every rank must call the forward in training mode together (it is a collective), and call
/// backward through the output on every rank (the backward is one too), including a rank with no
/// rows: it contributes nothing to the statistics and still takes part. N over all ranks must be
/// greater than 1. The ranks must agree on C and on whether the output records a gradient; when
/// they do not, or when a rank's input is refused, every rank throws. In one process (the default
/// group) the module calls torch's batch_norm: outputs, gradients and running statistics are
/// torch::nn::BatchNorm1d's, bit for bit.
///
/// Shape: [n_r, C] or [n_r, C, L] on rank r (statistics over the rows, and L) -> the same.
///
/// Example:
///   medcl::dist::SyncBatchNorm1d
///   bn(medcl::dist::SyncBatchNorm1dOptions(256).process_group(group)); auto y = bn(x_local); //
///   every rank: global statistics
///   // or convert a model's BatchNorm1d layers: medcl::dist::convert_sync_batch_norm(*model,
///   group)
class SyncBatchNorm1dImpl : public torch::nn::Cloneable<SyncBatchNorm1dImpl> {
 public:
  explicit SyncBatchNorm1dImpl(SyncBatchNorm1dOptions options);
  /// Takes over `bn`'s options, training mode and its very tensors (weight, bias, running
  /// statistics: the same tensors, so an optimiser over them stays valid), synchronised over
  /// `group`.
  SyncBatchNorm1dImpl(const torch::nn::BatchNorm1dImpl& bn, ProcessGroup group);

  void reset() override;
  /// Running mean 0, running variance 1, no batch seen.
  void reset_running_stats();
  /// reset_running_stats, and weight 1, bias 0.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  at::Tensor forward(const at::Tensor& input);

  SyncBatchNorm1dOptions options;
  /// [C] when affine, else undefined.
  at::Tensor weight;
  at::Tensor bias;
  /// [C] when track_running_stats, else undefined.
  at::Tensor running_mean;
  at::Tensor running_var;
  /// Number of training batches seen (int64 scalar) when track_running_stats.
  at::Tensor num_batches_tracked;
};
TORCH_MODULE(SyncBatchNorm1d);

/// Batch normalisation of `input` with the statistics of every rank's rows when `training` (then
/// `running_mean` and `running_var`, when defined, move towards the global statistics with weight
/// `momentum`), else with `running_mean` and `running_var`, without communicating. What
/// SyncBatchNorm1d's forward runs; see there for the formulas, the collectives and the errors.
///
/// Shape: input [n_r, C] or [n_r, C, L]; weight, bias, running_mean, running_var [C] or undefined.
at::Tensor sync_batch_norm(
    const at::Tensor& input,
    const at::Tensor& running_mean,
    const at::Tensor& running_var,
    const at::Tensor& weight,
    const at::Tensor& bias,
    bool training,
    double momentum,
    double eps,
    const ProcessGroup& group);

/// Replaces every torch::nn::BatchNorm1d in `module` (recursively) by a SyncBatchNorm1d over
/// `group` that takes over its options, training mode and tensors (the parameters stay the same
/// tensors: an optimiser built before stays valid). Returns the number of layers replaced.
/// BatchNorm1d layers must sit in `torch::nn::Sequential` containers (as in medcl's heads and
/// encoders): a BatchNorm1d held by another module as a typed member cannot be swapped behind its
/// back, so such a layer is an error naming its path, before anything is replaced (build it as
/// a SyncBatchNorm1d instead). Other batch normalisations (2d, 3d) are left as they are.
///
/// Example:
///   medcl::ProjectionHead head(medcl::ProjectionHeadOptions(512, 2048, 128));
///   medcl::dist::convert_sync_batch_norm(*head, group);   // 1 layer replaced
int64_t convert_sync_batch_norm(torch::nn::Module& module, const ProcessGroup& group);

namespace detail {
/// sync_batch_norm that takes the collective path (gathered statistics, custom backward) even for
/// the one-process group, for medcl's tests of its formulas.
at::Tensor sync_batch_norm_collective_path(
    const at::Tensor& input,
    const at::Tensor& running_mean,
    const at::Tensor& running_var,
    const at::Tensor& weight,
    const at::Tensor& bias,
    bool training,
    double momentum,
    double eps,
    const ProcessGroup& group);
} // namespace detail

} // namespace dist
} // namespace medcl
