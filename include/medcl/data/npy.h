#pragma once

/// \file
/// NumPy arrays: `.npy` files (format versions 1, 2 and 3) and `.npz` archives (zip files of `.npy`
/// members, stored or deflated). An array is read into a plain structure (dtype, shape, order and
/// its bytes, converted to little-endian); `to_tensor()` makes an at::Tensor of it. Errors are
/// `c10::Error`s that name the file (or "<memory>"), the byte offset and what was wrong.
///
/// Supported dtypes: b1, i1, i2, i4, i8, u1, u2, u4, u8, f4, f8 in either byte order ('<', '>',
/// '|', '='); C or Fortran order. Structured, object, string and complex dtypes are errors.
///
/// Parsing is compiled in src/io/npy.cpp without LibTorch (zlib inflates deflated members); only
/// the tensor helper at the end needs ATen (sources that define MEDCL_DATA_NO_ATEN leave it out).
///
/// Example:
/// ```
/// auto arrays = medcl::data::read_npz_file("ecg.dat");         // {"ecg": uint16 [108000]}
/// auto mv = (medcl::data::to_tensor(arrays.at("ecg")).to(torch::kFloat) - 1024) / 200;
/// ```

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// Element types of NumPy arrays that medcl reads.
enum class NpyDtype : uint8_t {
  Bool,
  Int8,
  Int16,
  Int32,
  Int64,
  UInt8,
  UInt16,
  UInt32,
  UInt64,
  Float32,
  Float64,
};

/// Bytes per element of `dtype`.
int64_t npy_itemsize(NpyDtype dtype);
/// NumPy's little-endian name of `dtype`, e.g. "<f8", "|u1".
std::string npy_dtype_name(NpyDtype dtype);

/// One array as stored in an .npy file.
struct NpyArray {
  NpyDtype dtype = NpyDtype::Float64;
  /// Dimensions; empty for a 0-d (scalar) array.
  std::vector<int64_t> shape;
  /// Whether `data` is in column-major (Fortran) order.
  bool fortran_order = false;
  /// The elements' bytes, little-endian, in the file's order (C or Fortran).
  std::vector<uint8_t> data;

  /// Number of elements (the product of `shape`, 1 for a 0-d array).
  int64_t numel() const;
};

/// Reads an .npy file.
NpyArray read_npy_file(const std::string& path);
/// Parses the bytes of an .npy file; `source` names it in error messages.
NpyArray parse_npy(const std::string& bytes, const std::string& source = "<memory>");

/// Reads every array of an .npz file, keyed by member name without ".npy" (as numpy.load does).
std::map<std::string, NpyArray> read_npz_file(const std::string& path);
/// Reads one array (`name`, with or without ".npy") of an .npz file; a missing member is an error
/// that lists the members.
NpyArray read_npz_member(const std::string& path, const std::string& name);
/// Parses the bytes of an .npz file (see read_npz_file).
std::map<std::string, NpyArray> parse_npz(
    const std::string& bytes,
    const std::string& source = "<memory>");
/// Parses one member of the bytes of an .npz file (see read_npz_member).
NpyArray parse_npz_member(
    const std::string& bytes,
    const std::string& name,
    const std::string& source = "<memory>");

} // namespace data
} // namespace medcl

#ifndef MEDCL_DATA_NO_ATEN
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstring>
#include <limits>

namespace medcl {
namespace data {

/// The array as a CPU tensor of its shape (C-contiguous, whatever the file's order). dtypes map
/// to their LibTorch equivalents; unsigned types LibTorch lacks widen: u2 -> int32, u4 and
/// u8 -> int64 (a u8 value above 2^63 - 1 is an error).
inline at::Tensor to_tensor(const NpyArray& array) {
  const int64_t n = array.numel();
  at::ScalarType type = at::kDouble;
  switch (array.dtype) {
    case NpyDtype::Bool:
      type = at::kBool;
      break;
    case NpyDtype::Int8:
      type = at::kChar;
      break;
    case NpyDtype::Int16:
      type = at::kShort;
      break;
    case NpyDtype::Int32:
    case NpyDtype::UInt16:
      type = at::kInt;
      break;
    case NpyDtype::Int64:
    case NpyDtype::UInt32:
    case NpyDtype::UInt64:
      type = at::kLong;
      break;
    case NpyDtype::UInt8:
      type = at::kByte;
      break;
    case NpyDtype::Float32:
      type = at::kFloat;
      break;
    case NpyDtype::Float64:
      type = at::kDouble;
      break;
  }
  TORCH_CHECK(
      static_cast<int64_t>(array.data.size()) == n * npy_itemsize(array.dtype),
      "to_tensor(NpyArray): ",
      array.data.size(),
      " bytes for ",
      n,
      " elements of ",
      npy_dtype_name(array.dtype));
  std::vector<int64_t> sizes = array.shape;
  if (array.fortran_order) {
    sizes.assign(array.shape.rbegin(), array.shape.rend());
  }
  auto out = at::empty(sizes, at::TensorOptions().dtype(type));
  const uint8_t* src = array.data.data();
  if (array.dtype == NpyDtype::UInt16) {
    auto* dst = out.data_ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v = 0;
      std::memcpy(&v, src + 2 * i, 2);
      dst[i] = v;
    }
  } else if (array.dtype == NpyDtype::UInt32) {
    auto* dst = out.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      uint32_t v = 0;
      std::memcpy(&v, src + 4 * i, 4);
      dst[i] = v;
    }
  } else if (array.dtype == NpyDtype::UInt64) {
    auto* dst = out.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      uint64_t v = 0;
      std::memcpy(&v, src + 8 * i, 8);
      TORCH_CHECK(
          v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
          "to_tensor(NpyArray): u8 element ",
          i,
          " (",
          v,
          ") does not fit int64");
      dst[i] = static_cast<int64_t>(v);
    }
  } else if (n > 0) {
    // Bool: numpy stores 0/1 bytes, the layout of at::kBool.
    std::memcpy(out.data_ptr(), src, array.data.size());
  }
  if (array.fortran_order && sizes.size() > 1) {
    std::vector<int64_t> perm(sizes.size());
    for (size_t i = 0; i < perm.size(); ++i) {
      perm[i] = static_cast<int64_t>(perm.size() - 1 - i);
    }
    out = out.permute(perm).contiguous();
  }
  return out;
}

} // namespace data
} // namespace medcl
#endif
