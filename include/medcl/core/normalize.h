#pragma once

/// \file
/// L2 normalisation in the accumulation dtype, and the dtype rules of the similarity engine.

#include <ATen/ATen.h>

namespace medcl {

/// float64 for double inputs, float32 for everything else (float, bf16, fp16).
inline at::ScalarType accumulation_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

/// The dtype of the engine's matrix products: on CUDA, bf16/fp16 inputs keep their dtype (the
/// tensor cores accumulate in float32); elsewhere the accumulation dtype.
inline at::ScalarType matmul_dtype(const at::Tensor& input) {
  const auto t = input.scalar_type();
  if (input.is_cuda() && (t == at::kHalf || t == at::kBFloat16)) {
    return t;
  }
  return accumulation_dtype(t);
}

/// x / max(||x||_2, eps) along `dim`, computed in the accumulation dtype (so that eps does not
/// underflow in fp16 and a zero vector stays zero instead of becoming NaN).
inline at::Tensor l2_normalize(const at::Tensor& x, double eps, int64_t dim = -1) {
  auto xf = x.to(accumulation_dtype(x.scalar_type()));
  return xf / xf.norm(2, dim, /*keepdim=*/true).clamp_min(eps);
}

namespace detail {
// Earlier names, kept for one release.
using ::medcl::accumulation_dtype;
using ::medcl::l2_normalize;
using ::medcl::matmul_dtype;
} // namespace detail

} // namespace medcl
