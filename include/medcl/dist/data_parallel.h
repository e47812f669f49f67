#pragma once

/// \file
/// Data parallelism on a `ProcessGroup`: every rank starts from the same parameters and buffers
/// (`broadcast_parameters`), and after each backward the ranks' gradients are summed in buckets
/// (`GradientReducer`), so that every rank holds the one-process gradient of the global batch.
///
/// medcl's convention: a loss given a process group returns this rank's share of the global loss
/// (the sum over ranks of the per-rank losses is the one-process loss on the concatenated batch),
/// so the per-rank gradients are partial sums and must be summed over ranks, not averaged. See
/// docs/distributed.md.

#include <medcl/dist/process_group.h>

#include <ATen/ATen.h>
#include <torch/arg.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace dist {

/// Named tensors in an order that every rank shares (parameters, buffers).
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/// Every parameter, then every buffer, of `module` and its submodules (recursively, in
/// registration order), with their qualified names ("layers.1.running_mean"). Buffers that are
/// not tensors yet (undefined) are included: every rank must agree on them too.
NamedTensors parameters_and_buffers(const torch::nn::Module& module);

/// The parameters of `module` that require grad (recursively, registration order): what
/// `GradientReducer` reduces.
NamedTensors trainable_parameters(const torch::nn::Module& module);

/// Replaces, on every rank, every tensor of `tensors` by rank `root`'s, in place (no gradient is
/// recorded): after it, every replica is bitwise identical to rank `root`'s. Tensors are sent in
/// buckets of one dtype and device (one broadcast per bucket of at most 25 MiB).
///
/// The ranks first check that they hold the same list (count, then the names, shapes and dtypes,
/// compared through a 64-bit hash); when they do not, every rank throws the same c10::Error naming
/// the first tensor that differs and the ranks that hold it:
/// "broadcast_parameters: the ranks hold different parameters: at position 3, rank 0 has
/// 'layers.0.weight' [8, 4] Double, rank 1 has 'layers.0.weight' [8, 5] Double". Every rank must
/// call it. A one-process group does nothing.
///
/// Example:
///   auto group = medcl::dist::init_from_env();
///   Model model(...);                                     // initialised differently per rank
///   medcl::dist::broadcast_parameters(*model, group);     // now rank 0's everywhere
void broadcast_parameters(const NamedTensors& tensors, const ProcessGroup& group, int64_t root = 0);

/// `broadcast_parameters` of every parameter and buffer of `module` (`parameters_and_buffers`):
/// weights, batch normalisation's running statistics, queues, momentum copies.
void broadcast_parameters(torch::nn::Module& module, const ProcessGroup& group, int64_t root = 0);

/// Options of `GradientReducer`.
///
/// Example:
///   auto opts = medcl::dist::GradientReducerOptions().bucket_bytes(4 << 20);
struct GradientReducerOptions {
  /// The most bytes one all-reduce carries: gradients are copied into flat buckets of one dtype
  /// and device up to this size (a larger gradient gets a bucket of its own), one all-reduce per
  /// bucket. Default: 25 MiB (PyTorch DDP's bucket_cap_mb)
  TORCH_ARG(int64_t, bucket_bytes) = 25 * 1024 * 1024;
  /// Divide the summed gradients by the number of ranks. medcl's losses, given a process group,
  /// return this rank's share of the global loss, so the sum over ranks is the one-process
  /// gradient: averaging would divide it by the world size (a learning rate W times smaller).
  /// Turn it on only for per-rank losses that are each a mean over the local batch (what
  /// PyTorch's DistributedDataParallel assumes). Default: false
  TORCH_ARG(bool, average) = false;
  /// Start each bucket's all-reduce during backward, as soon as every gradient in it has
  /// arrived, so that communication runs while backward computes the remaining gradients
  /// (PyTorch DDP's overlap); `reduce` then waits for them and starts those still missing. The
  /// buckets then take the parameters last to first (the order backward produces their
  /// gradients), the first one at most `first_bucket_bytes`, and run on a side group of the
  /// group (detail::side_group) so that they never mix with a loss's collectives during
  /// backward. Every backward through these parameters must then be followed by `reduce` before
  /// the next one (a gradient that arrives twice is an error: for gradient accumulation over
  /// several backward calls, turn it off). The sums are the same either way. Default: true
  TORCH_ARG(bool, overlap) = true;
  /// With `overlap`: the most bytes of the first bucket, whose gradients arrive first (PyTorch
  /// DDP uses 1 MiB with 25 MiB buckets for models of many MiB). Small models need small
  /// buckets to overlap at all; one bucket costs about one round trip more. Default: 256 KiB
  TORCH_ARG(int64_t, first_bucket_bytes) = 256 * 1024;
};

namespace detail {
struct OverlapState;
} // namespace detail

/// Sums the gradients of a list of parameters over the ranks of a group, in buckets, after
/// backward and before clipping or the optimiser step:
/// \f[ g_p \leftarrow \sum_{r=0}^{W-1} g_p^{(r)} \f]
/// (divided by W with `average`). Every rank then holds the same gradient, the one of the
/// one-process loss on the concatenated batch when each rank's loss is its share of the global
/// loss (medcl's convention).
///
/// - Buckets: the parameters, in the given order, are grouped by dtype and device; within a group
///   consecutive parameters fill buckets of at most `bucket_bytes`; one all-reduce per bucket.
///   The layout is fixed at construction, the same on every rank.
/// - A parameter whose gradient is undefined on a rank (it took no part in this rank's loss)
///   counts as zero there; after `reduce` its gradient is defined on every rank (so no rank waits
///   for another in a collective that it skips).
/// - The constructor checks, on every rank at once, that the ranks hold the same parameters in
///   the same order (names, shapes, dtypes); when they do not, every rank throws the same error
///   naming the first parameter that differs.
///
/// Every rank must call `reduce` once per step. A one-process group leaves the gradients as they
/// are.
///
/// Example:
///   medcl::dist::broadcast_parameters(*model, group);
///   medcl::dist::GradientReducer reducer(*model, group);
///   for (...) {
///     optimizer.zero_grad();
///     auto loss = my_loss(model(x_local), group);   // this rank's share of the global loss
///     loss.backward();
///     reducer.reduce();                              // every rank: the global gradient
///     optimizer.step();
///   }
class GradientReducer {
 public:
  /// Reduces the gradients of `parameters` (which must require grad).
  GradientReducer(
      NamedTensors parameters,
      ProcessGroup group,
      GradientReducerOptions options = GradientReducerOptions());
  /// Reduces the gradients of the parameters of `module` that require grad.
  GradientReducer(
      const torch::nn::Module& module,
      ProcessGroup group,
      GradientReducerOptions options = GradientReducerOptions());

  /// Sums (or averages) every parameter's gradient over the ranks, in place. Collective.
  void reduce();

  /// The bytes this rank handed to all-reduce in the last `reduce` (the buckets' sizes; a ring
  /// all-reduce sends and receives about 2 (W - 1) / W times this per rank); 0 before the first
  /// and in one process.
  int64_t bytes_last_step() const {
    return bytes_last_step_;
  }
  /// The number of buckets (all-reduces per step).
  int64_t num_buckets() const {
    return static_cast<int64_t>(buckets_.size());
  }
  /// The parameters, in the order they are bucketed.
  const NamedTensors& parameters() const {
    return parameters_;
  }
  const ProcessGroup& group() const {
    return group_;
  }
  const GradientReducerOptions& options() const {
    return options_;
  }

 private:
  struct Bucket {
    at::ScalarType dtype;
    at::Device device;
    std::vector<size_t> members;
    int64_t numel;
  };
  void reduce_overlapped();

  NamedTensors parameters_;
  ProcessGroup group_;
  GradientReducerOptions options_;
  std::vector<Bucket> buckets_;
  int64_t bytes_last_step_ = 0;
  // With overlap: the buckets' buffers, the hooks' progress and the started all-reduces, shared
  // with the parameters' gradient hooks (which hold it weakly and are removed with it).
  std::shared_ptr<detail::OverlapState> overlap_;
};

namespace detail {

/// Requires every rank of `group` to hold the same list (names, shapes, dtypes, in order): every
/// rank throws the same error naming the first tensor that differs, starting with `fn`. One small
/// all-gather (count and hash), and one of the lists' descriptions when they differ. Collective.
void check_same_tensor_list(const char* fn, const NamedTensors& tensors, const ProcessGroup& group);

/// "'name' [2, 3] Double" (or "'name' undefined").
std::string describe_named_tensor(const std::string& name, const at::Tensor& t);

} // namespace detail

} // namespace dist
} // namespace medcl
