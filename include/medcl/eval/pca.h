#pragma once

/// \file
/// The top two principal components of an embedding, for site, device and demographic overlays.

#include <ATen/ATen.h>

#include <vector>

namespace medcl {
namespace eval {

/// The top two principal components of an embedding.
struct Pca2d {
  /// Coordinates of each row on the first and second component.
  std::vector<double> pc1;
  std::vector<double> pc2;
  /// Share of the total variance each component explains.
  std::vector<double> explained_variance_ratio;
  /// Components [2, D] (unit rows) and the mean [D] that was subtracted (float64).
  at::Tensor components;
  at::Tensor mean;
};

/// Top-2 principal components of the centred embeddings (for site / device / demographic overlays
/// in a report), by the eigen-decomposition in float64 of the covariance X^T X / (N - 1) when
/// N >= D, or of the Gram matrix X X^T when N < D. The sign of each component is fixed so that its
/// entry of largest magnitude is positive. A component of zero variance is returned as zeros.
///
/// Shape: embeddings [N, D] with N >= 2, D >= 2.
///
/// Example:
///   auto p = medcl::eval::pca_2d(z);
///   // scatter (p.pc1[i], p.pc2[i]) coloured by site[i]; p.explained_variance_ratio[0]
Pca2d pca_2d(const at::Tensor& embeddings);

} // namespace eval
} // namespace medcl
