#pragma once

/// \file
/// NIfTI-1 and NIfTI-2 volumes (`.nii`, `.nii.gz`, and `.hdr`/`.img` pairs), read with libnifti
/// (Debian's libnifti2-dev): dimensions, voxel sizes, the stored datatype, the qform and sform
/// affines, and the voxels as float with `scl_slope` / `scl_inter` applied. Errors are
/// `c10::Error`s that name the file (or "<memory>"), the byte offset (in the uncompressed
/// stream) and what was wrong: not NIfTI, truncated header or data, unsupported datatype.
///
/// Parsing is compiled in src/io/nifti.cpp without LibTorch; only the tensor helper at the end
/// needs ATen (sources that define MEDCL_DATA_NO_ATEN leave it out). When medcl is configured
/// without libnifti the functions throw an error that says so.
///
/// Example:
/// ```
/// auto brain = medcl::data::read_nifti_file("ch2better.nii.gz");
/// auto volume = medcl::data::to_tensor(brain);  // [nz, ny, nx] float
/// ```

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// A NIfTI image as read from its file.
struct NiftiVolume {
  /// 1 for NIfTI-1, 2 for NIfTI-2.
  int version = 1;
  /// dim[1..dim[0]]: nx, ny, nz, then nt, nu, nv, nw when present.
  std::vector<int64_t> dims;
  /// pixdim[1..dim[0]]: voxel sizes (in `xyz_units`) and the time step.
  std::vector<double> voxel_size;
  /// The stored NIfTI datatype code (e.g. 2 = uint8, 4 = int16, 16 = float32).
  int32_t datatype = 0;
  /// libnifti's name of `datatype`, e.g. "NIFTI_TYPE_INT16".
  std::string datatype_name;
  /// The scaling applied to the stored values: value = stored · slope + inter. The header's slope
  /// of 0 (or a non-finite one) means "no scaling" (slope 1, inter 0), as the standard says.
  double scl_slope = 1;
  double scl_inter = 0;
  /// Codes saying what the affines map to (0 = unknown; 1 = scanner; 2 = aligned; 3 = Talairach;
  /// 4 = MNI-152).
  int qform_code = 0;
  int sform_code = 0;
  /// Voxel (i, j, k, 1) to world (x, y, z, 1) in millimetres, row-major 4 × 4, as libnifti
  /// computes them from the quaternion (qform) and the srow vectors (sform).
  std::array<double, 16> qform{};
  std::array<double, 16> sform{};
  /// The header's description text.
  std::string description;
  /// The voxels, scaled, x fastest (the file's order): index i + nx·(j + ny·k) + …
  std::vector<float> data;

  /// The sform when its code is set, else the qform (as most tools choose).
  const std::array<double, 16>& affine() const {
    return sform_code > 0 ? sform : qform;
  }
};

/// Reads a `.nii` or `.nii.gz` file, or the `.hdr` of a `.hdr`/`.img` pair (with `.img` or
/// `.img.gz` beside it).
NiftiVolume read_nifti_file(const std::string& path);

/// Parses the bytes of a single-file NIfTI image (`.nii`, gzip-compressed or not); `source` names
/// it in error messages.
NiftiVolume parse_nifti(const std::string& bytes, const std::string& source = "<memory>");

} // namespace data
} // namespace medcl

#ifndef MEDCL_DATA_NO_ATEN
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace medcl {
namespace data {

/// The voxels as a float tensor with the dimensions reversed, [nw, …, nt, nz, ny, nx] (trailing
/// size-1 dimensions kept): the file's x-fastest order is then C-contiguous, as Conv3d's
/// [D, H, W] expects.
inline at::Tensor to_tensor(const NiftiVolume& volume) {
  std::vector<int64_t> sizes(volume.dims.rbegin(), volume.dims.rend());
  int64_t n = 1;
  for (int64_t d : sizes) {
    n *= d;
  }
  TORCH_CHECK(
      n == static_cast<int64_t>(volume.data.size()),
      "to_tensor(NiftiVolume): dims give ",
      n,
      " voxels but data holds ",
      volume.data.size());
  auto out = at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
  std::copy(volume.data.begin(), volume.data.end(), out.data_ptr<float>());
  return out;
}

/// The affine (sform if set, else qform) as a float64 [4, 4] tensor.
inline at::Tensor affine_tensor(const NiftiVolume& volume) {
  const auto& a = volume.affine();
  auto out = at::empty({4, 4}, at::TensorOptions().dtype(at::kDouble));
  std::copy(a.begin(), a.end(), out.data_ptr<double>());
  return out;
}

} // namespace data
} // namespace medcl
#endif
