// NIfTI-1/2 reading, compiled without LibTorch. The header is checked here first (so that every
// error names the offset and the problem, and libnifti never sees a header that would make it
// overflow or over-allocate); libnifti then turns it into a nifti_image (dims, pixdims, scaling,
// qform from the quaternion, sform), and the voxels are converted here from the bytes in memory.

#define MEDCL_DATA_NO_ATEN
#include <medcl/data/nifti.h>

#include "bytes.h"
#include "io_error.h"

#ifdef MEDCL_HAVE_NIFTI
#include <nifti2_io.h>
#include <zlib.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>

namespace medcl {
namespace data {

#ifndef MEDCL_HAVE_NIFTI

NiftiVolume read_nifti_file(const std::string& path) {
  detail::io_error(
      "nifti: cannot read '",
      path,
      "': medcl was built without libnifti: install libnifti2-dev and reconfigure");
}

NiftiVolume parse_nifti(const std::string&, const std::string& source) {
  detail::io_error(
      "nifti: cannot read '",
      source,
      "': medcl was built without libnifti: install libnifti2-dev and reconfigure");
}

#else

namespace {

using detail::io_check;
using detail::io_error;
using detail::printable;

bool is_gzip(const std::string& b) {
  return b.size() >= 2 && static_cast<unsigned char>(b[0]) == 0x1f &&
      static_cast<unsigned char>(b[1]) == 0x8b;
}

// Inflates a gzip stream (concatenated members too).
std::string gunzip(const std::string& in, const std::string& source) {
  std::string out;
  z_stream z{};
  io_check(
      inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, "nifti: ", source, ": zlib initialisation failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  char chunk[1 << 16];
  int rc = Z_OK;
  while (true) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof(chunk);
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(chunk, sizeof(chunk) - z.avail_out);
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) {
        break;
      }
      inflateReset(&z); // another gzip member follows
      continue;
    }
    if (rc != Z_OK) {
      break;
    }
    if (z.avail_in == 0 && z.avail_out != 0) {
      rc = Z_BUF_ERROR; // input ended inside the stream
      break;
    }
  }
  const uint64_t consumed = z.total_in;
  const std::string msg = z.msg ? z.msg : "";
  inflateEnd(&z);
  if (rc != Z_STREAM_END) {
    io_error(
        "nifti: ",
        source,
        ": compressed offset ",
        consumed,
        ": ",
        rc == Z_BUF_ERROR ? std::string("truncated gzip stream")
                          : "corrupt gzip stream (" +
                (msg.empty() ? "zlib code " + std::to_string(rc) : msg) + ")",
        " after ",
        out.size(),
        " uncompressed bytes");
  }
  return out;
}

// Reading header fields in the file's byte order.
struct Fields {
  const std::string& b;
  bool swap;

  uint64_t raw(size_t at, int n) const {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) {
      const int k = swap ? i : n - 1 - i;
      v = (v << 8) | static_cast<unsigned char>(b[at + static_cast<size_t>(k)]);
    }
    return v;
  }
  int64_t i16(size_t at) const {
    return static_cast<int16_t>(raw(at, 2));
  }
  int64_t i32(size_t at) const {
    return static_cast<int32_t>(raw(at, 4));
  }
  int64_t i64(size_t at) const {
    return static_cast<int64_t>(raw(at, 8));
  }
  double f32(size_t at) const {
    const auto u = static_cast<uint32_t>(raw(at, 4));
    float f = 0;
    std::memcpy(&f, &u, 4);
    return f;
  }
  double f64(size_t at) const {
    const uint64_t u = raw(at, 8);
    double d = 0;
    std::memcpy(&d, &u, 8);
    return d;
  }
};

struct TypeInfo {
  int code;
  int bytes;
};

bool supported_type(int64_t code, TypeInfo& info) {
  static const TypeInfo kTypes[] = {
      {DT_UINT8, 1},
      {DT_INT8, 1},
      {DT_INT16, 2},
      {DT_UINT16, 2},
      {DT_INT32, 4},
      {DT_UINT32, 4},
      {DT_FLOAT32, 4},
      {DT_INT64, 8},
      {DT_UINT64, 8},
      {DT_FLOAT64, 8},
  };
  for (const auto& t : kTypes) {
    if (t.code == code) {
      info = t;
      return true;
    }
  }
  return false;
}

template <class T>
T load(const char* p, bool swap) {
  char b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if (swap) {
    std::reverse(b, b + sizeof(T));
  }
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

struct NimDeleter {
  void operator()(nifti_image* nim) const {
    nifti_image_free(nim);
  }
};

// `header` holds the header (and, for a single file, the data); `image` the data of a pair
// (nullptr for a single file).
NiftiVolume parse(
    const std::string& header_bytes,
    const std::string& source,
    const std::string* image_bytes,
    const std::string& image_source) {
  const std::string& b = header_bytes;
  io_check(
      b.size() >= 4,
      "nifti: ",
      source,
      ": not a NIfTI file (",
      b.size(),
      " bytes, too short for a header)");
  const uint32_t le = static_cast<uint32_t>(Fields{b, false}.raw(0, 4));
  const uint32_t be = static_cast<uint32_t>(Fields{b, true}.raw(0, 4));
  int version = 0;
  bool swap = false;
  if (le == 348 || le == 540) {
    version = le == 348 ? 1 : 2;
  } else if (be == 348 || be == 540) {
    version = be == 348 ? 1 : 2;
    swap = true;
  } else {
    io_error(
        "nifti: ",
        source,
        ": offset 0: not a NIfTI file (sizeof_hdr is ",
        static_cast<int32_t>(le),
        ", expected 348 for NIfTI-1 or 540 for NIfTI-2)");
  }
  const size_t header_size = version == 1 ? 348 : 540;
  io_check(
      b.size() >= header_size,
      "nifti: ",
      source,
      ": offset ",
      b.size(),
      ": truncated header (a NIfTI-",
      version,
      " header has ",
      header_size,
      " bytes, the file has ",
      b.size(),
      ")");
  const Fields f{b, swap};

  // Magic: "n+1\0" / "ni1\0" at 344, or "n+2\0\r\n\032\n" / "ni2\0…" at 4.
  const size_t magic_at = version == 1 ? 344 : 4;
  const std::string magic = b.substr(magic_at, version == 1 ? 4 : 8);
  const std::string one_file =
      version == 1 ? std::string("n+1\0", 4) : std::string("n+2\0\r\n\032\n", 8);
  const std::string two_files =
      version == 1 ? std::string("ni1\0", 4) : std::string("ni2\0\r\n\032\n", 8);
  const bool pair = magic == two_files;
  if (magic != one_file && !pair) {
    io_error(
        "nifti: ",
        source,
        ": offset ",
        magic_at,
        ": not a NIfTI-",
        version,
        " file (magic is '",
        printable(magic),
        "', expected 'n+",
        version,
        "' or 'ni",
        version,
        "'; ANALYZE 7.5 headers are not read)");
  }
  if (pair && image_bytes == nullptr) {
    io_error(
        "nifti: ",
        source,
        ": offset ",
        magic_at,
        ": this is the header of a .hdr/.img pair; read it with read_nifti_file on the .hdr file");
  }
  if (!pair && image_bytes != nullptr) {
    io_error(
        "nifti: ",
        source,
        ": offset ",
        magic_at,
        ": a .hdr file with single-file magic 'n+",
        version,
        "'");
  }

  // Dimensions.
  const size_t dim_at = version == 1 ? 40 : 16;
  const size_t dim_step = version == 1 ? 2 : 8;
  auto dim = [&](int i) {
    const size_t at = dim_at + dim_step * static_cast<size_t>(i);
    return version == 1 ? f.i16(at) : f.i64(at);
  };
  const int64_t ndim = dim(0);
  io_check(
      ndim >= 1 && ndim <= 7,
      "nifti: ",
      source,
      ": offset ",
      dim_at,
      ": dim[0] is ",
      ndim,
      ", expected 1 to 7");
  std::vector<int64_t> dims;
  uint64_t nvox = 1;
  for (int i = 1; i <= ndim; ++i) {
    const int64_t d = dim(i);
    io_check(
        d >= 1,
        "nifti: ",
        source,
        ": offset ",
        dim_at + dim_step * static_cast<size_t>(i),
        ": dim[",
        i,
        "] is ",
        d,
        ", expected at least 1");
    io_check(
        nvox <= (uint64_t{1} << 62) / static_cast<uint64_t>(d),
        "nifti: ",
        source,
        ": offset ",
        dim_at,
        ": the dimensions give more than 2^62 voxels");
    nvox *= static_cast<uint64_t>(d);
    dims.push_back(d);
  }

  // Datatype.
  const size_t type_at = version == 1 ? 70 : 12;
  const int64_t datatype = f.i16(type_at);
  TypeInfo type{};
  if (!supported_type(datatype, type)) {
    io_error(
        "nifti: ",
        source,
        ": offset ",
        type_at,
        ": unsupported datatype ",
        datatype,
        " (",
        nifti_datatype_to_string(static_cast<int>(datatype)),
        "); supported: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64");
  }

  // Where the voxels start, and whether they are all there.
  const size_t offset_at = version == 1 ? 108 : 168;
  double vox_offset = version == 1 ? f.f32(offset_at) : static_cast<double>(f.i64(offset_at));
  const std::string& data = pair ? *image_bytes : b;
  const std::string& data_source = pair ? image_source : source;
  const double lowest = pair ? 0.0 : static_cast<double>(header_size);
  // Some writers leave vox_offset at 0 in single files; the data then starts after the header
  // and the 4-byte extender.
  if (!pair && vox_offset == 0) {
    vox_offset = static_cast<double>(header_size + 4);
  }
  io_check(
      std::isfinite(vox_offset) && vox_offset >= lowest && vox_offset == std::floor(vox_offset) &&
          vox_offset <= static_cast<double>(data.size()),
      "nifti: ",
      source,
      ": offset ",
      offset_at,
      ": vox_offset ",
      vox_offset,
      " is not a whole byte position between ",
      lowest,
      " and the size of ",
      data_source,
      " (",
      data.size(),
      ")");
  const auto data_at = static_cast<uint64_t>(vox_offset);
  const uint64_t available = data.size() - data_at;
  io_check(
      nvox <= available / static_cast<uint64_t>(type.bytes),
      "nifti: ",
      data_source,
      ": offset ",
      data_at,
      ": truncated data (",
      nvox,
      " voxels of ",
      nifti_datatype_to_string(static_cast<int>(datatype)),
      " need ",
      nvox * static_cast<uint64_t>(type.bytes),
      " bytes, ",
      available,
      " present)");

  // libnifti's view of the header.
  std::unique_ptr<nifti_image, NimDeleter> nim;
  nifti_set_debug_level(0);
  if (version == 1) {
    nifti_1_header h;
    std::memcpy(&h, b.data(), sizeof(h));
    nim.reset(nifti_convert_n1hdr2nim(h, "medcl.nii"));
  } else {
    nifti_2_header h;
    std::memcpy(&h, b.data(), sizeof(h));
    nim.reset(nifti_convert_n2hdr2nim(h, "medcl.nii"));
  }
  io_check(nim != nullptr, "nifti: ", source, ": offset 0: libnifti rejected the header");
  io_check(
      nim->nvox == static_cast<int64_t>(nvox) && nim->datatype == datatype,
      "nifti: ",
      source,
      ": offset 0: libnifti reads ",
      nim->nvox,
      " voxels of type ",
      nim->datatype,
      " from this header, expected ",
      nvox,
      " of type ",
      datatype);

  NiftiVolume v;
  v.version = version;
  v.dims = dims;
  for (int i = 1; i <= ndim; ++i) {
    v.voxel_size.push_back(nim->pixdim[i]);
  }
  v.datatype = static_cast<int32_t>(datatype);
  v.datatype_name = nifti_datatype_to_string(static_cast<int>(datatype));
  if (nim->scl_slope != 0 && std::isfinite(nim->scl_slope) && std::isfinite(nim->scl_inter)) {
    v.scl_slope = nim->scl_slope;
    v.scl_inter = nim->scl_inter;
  }
  v.qform_code = nim->qform_code;
  v.sform_code = nim->sform_code;
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) {
      v.qform[static_cast<size_t>(4 * r + c)] = nim->qto_xyz.m[r][c];
      v.sform[static_cast<size_t>(4 * r + c)] = nim->sto_xyz.m[r][c];
    }
  }
  v.description = std::string(nim->descrip, strnlen(nim->descrip, sizeof(nim->descrip)));

  v.data.resize(static_cast<size_t>(nvox));
  const char* p = data.data() + data_at;
  const double slope = v.scl_slope;
  const double inter = v.scl_inter;
  auto convert = [&](auto tag) {
    using T = decltype(tag);
    for (size_t i = 0; i < v.data.size(); ++i) {
      const double x = static_cast<double>(load<T>(p + i * sizeof(T), swap));
      v.data[i] = static_cast<float>(x * slope + inter);
    }
  };
  switch (type.code) {
    case DT_UINT8:
      convert(uint8_t{});
      break;
    case DT_INT8:
      convert(int8_t{});
      break;
    case DT_INT16:
      convert(int16_t{});
      break;
    case DT_UINT16:
      convert(uint16_t{});
      break;
    case DT_INT32:
      convert(int32_t{});
      break;
    case DT_UINT32:
      convert(uint32_t{});
      break;
    case DT_FLOAT32:
      convert(float{});
      break;
    case DT_INT64:
      convert(int64_t{});
      break;
    case DT_UINT64:
      convert(uint64_t{});
      break;
    case DT_FLOAT64:
      convert(double{});
      break;
    default:
      break;
  }
  return v;
}

std::string lower(std::string s) {
  for (auto& ch : s) {
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
      s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

} // namespace

NiftiVolume parse_nifti(const std::string& bytes, const std::string& source) {
  if (is_gzip(bytes)) {
    return parse(gunzip(bytes, source), source, nullptr, source);
  }
  return parse(bytes, source, nullptr, source);
}

NiftiVolume read_nifti_file(const std::string& path) {
  std::string bytes = detail::read_whole_file("nifti", path);
  if (is_gzip(bytes)) {
    bytes = gunzip(bytes, path);
  }
  const std::string l = lower(path);
  if (ends_with(l, ".hdr") || ends_with(l, ".hdr.gz")) {
    const size_t stem = path.size() - (ends_with(l, ".hdr") ? 4 : 7);
    std::string image_path = path.substr(0, stem) + ".img";
    std::ifstream probe(image_path, std::ios::binary);
    if (!probe) {
      image_path += ".gz";
    }
    std::string image = detail::read_whole_file("nifti", image_path);
    if (is_gzip(image)) {
      image = gunzip(image, image_path);
    }
    return parse(bytes, path, &image, image_path);
  }
  return parse(bytes, path, nullptr, path);
}

#endif

} // namespace data
} // namespace medcl
