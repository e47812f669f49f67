#pragma once

/// \file
/// All-gather with gradient: every rank's embeddings, concatenated in rank order, as an autograd
/// function whose backward gives each rank the gradient of the whole (summed over ranks) with
/// respect to its own rows.

#include <medcl/dist/process_group.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace medcl {
namespace dist {

/// Every rank's `x` concatenated along the first dimension in rank order, differentiable.
///
/// Forward: \f$ Z = [x_0; x_1; \dots; x_{W-1}] \f$ (the ranks' first dimensions may differ).
/// Backward: rank r receives
/// \f[ \frac{\partial}{\partial x_r} \sum_{s=0}^{W-1} L_s = \Big( \sum_{s=0}^{W-1}
///     \frac{\partial L_s}{\partial Z} \Big)_{\text{rows of } r}, \f]
/// the gradient of every rank's loss \f$L_s\f$ (each computed on the gathered Z) with respect to
/// rank r's rows: every rank sends each rank that rank's rows of its gradient of Z (one
/// all-to-all; an all-reduce, sliced, on CUDA tensors with NCCL) and each adds what it receives.
/// With it, the sum over ranks of per-rank losses has the gradient of the one-process loss on the
/// concatenated batch. Returning only the local slice without that sum (what several libraries
/// did for years) drops every other rank's contribution.
///
/// Every rank must call backward through the result (the backward is a collective). A
/// one-process group returns `x` itself. `counts`, when given, receives every rank's row count;
/// this rank's rows start at the sum of the counts of the ranks before it.
///
/// Shape: x [n_r, *] on rank r; result [n_0 + ... + n_{W-1}, *] (same dtype and device).
///
/// Example:
///   std::vector<int64_t> counts;
///   auto all = medcl::dist::gather_with_gradient(z, group, &counts);  // [N, D]
///   auto loss = my_loss(z, all);       // local anchors against every rank's candidates
///   loss.backward();                   // on every rank
at::Tensor gather_with_gradient(
    const at::Tensor& x,
    const ProcessGroup& group,
    std::vector<int64_t>* counts = nullptr);

namespace detail {
/// gather_with_gradient's backward attached to `all`, every rank's rows of `x` (`counts` per
/// rank, in rank order) that the caller gathered itself (with a loss's agreement, in one round
/// trip): returns `all`, differentiable with respect to `x` when `x` records a gradient (the ranks
/// have agreed that all do or none). `sum_over_ranks` false: the tests' negative control (see
/// gather_with_local_gradient).
at::Tensor attach_gather_gradient(
    const at::Tensor& x,
    const ProcessGroup& group,
    const at::Tensor& all,
    const std::vector<int64_t>& counts,
    bool sum_over_ranks = true);

/// The same forward as gather_with_gradient but a backward that returns only this rank's slice of
/// its own gradient, without summing over ranks: a wrong gradient, kept only as the negative
/// control of medcl's tests (which show that it differs from the one-process gradient).
at::Tensor gather_with_local_gradient(
    const at::Tensor& x,
    const ProcessGroup& group,
    std::vector<int64_t>* counts = nullptr);
} // namespace detail

} // namespace dist
} // namespace medcl
