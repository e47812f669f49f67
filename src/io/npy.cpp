// NPY / NPZ parsing, compiled without LibTorch. NPZ members are located through the zip central
// directory (numpy writes zip64 local headers whose sizes are only in the central directory).

#define MEDCL_DATA_NO_ATEN
#include <medcl/data/npy.h>

#include "io_error.h"

#ifdef MEDCL_HAVE_ZLIB
#include <zlib.h>
#endif

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace medcl {
namespace data {
namespace detail {
namespace {

uint64_t le(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) {
    v = (v << 8) | static_cast<unsigned char>(b[at + static_cast<size_t>(i)]);
  }
  return v;
}

// CRC-32 (ISO 3309, the zip checksum), bit-reflected polynomial 0xEDB88320.
uint32_t crc32_of(const std::string& data) {
  static const auto kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) {
        c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      }
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (char ch : data) {
    crc = kTable[(crc ^ static_cast<unsigned char>(ch)) & 0xFF] ^ (crc >> 8);
  }
  return crc ^ 0xFFFFFFFFu;
}

std::string printable(const std::string& s, size_t max = 40) {
  std::string out;
  for (char ch : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u >= 0x7f) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += ch;
    }
  }
  return s.size() > max ? out + "..." : out;
}

// The Python literal of an .npy header: {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& source, size_t base)
      : s_(text), source_(source), base_(base) {}

  void parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool have_descr = false;
    bool have_fortran = false;
    bool have_shape = false;
    skip();
    expect('{');
    while (true) {
      skip();
      if (peek() == '}') {
        ++i_;
        break;
      }
      const size_t key_at = i_;
      const std::string key = string_literal();
      skip();
      expect(':');
      skip();
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"') {
          fail(i_, "a structured dtype (descr is not a string) is not supported");
        }
        descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        fail(key_at, "unexpected key '" + printable(key) + "' in the header");
      }
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip();
      expect('}');
      break;
    }
    if (!have_descr || !have_fortran || !have_shape) {
      fail(
          i_,
          std::string("the header lacks '") +
              (!have_descr ? "descr" : (!have_fortran ? "fortran_order" : "shape")) + "'");
    }
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) {
    io_error("npy: ", source_, ": offset ", base_ + at, ": ", what);
  }
  char peek() const {
    return i_ < s_.size() ? s_[i_] : '\0';
  }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t')) {
      ++i_;
    }
  }
  void expect(char c) {
    if (peek() != c) {
      fail(
          i_,
          std::string("expected '") + c + "' in the header, found '" +
              printable(std::string(1, peek())) + "'");
    }
    ++i_;
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') {
      fail(i_, "expected a quoted string in the header");
    }
    const size_t start = i_;
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != q) {
      out += s_[i_++];
    }
    if (i_ >= s_.size()) {
      fail(start, "unterminated string in the header");
    }
    ++i_;
    return out;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    fail(i_, "fortran_order must be True or False");
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> dims;
    while (true) {
      skip();
      if (peek() == ')') {
        ++i_;
        return dims;
      }
      const size_t at = i_;
      uint64_t v = 0;
      bool any = false;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        v = v * 10 + static_cast<uint64_t>(s_[i_] - '0');
        if (v > (uint64_t{1} << 62)) {
          fail(at, "shape dimension too large");
        }
        ++i_;
        any = true;
      }
      // Python 2 wrote long dimensions as "3L".
      if (any && peek() == 'L') {
        ++i_;
      }
      if (!any) {
        fail(at, "expected a non-negative integer in the shape");
      }
      dims.push_back(static_cast<int64_t>(v));
      skip();
      if (peek() == ',') {
        ++i_;
      } else if (peek() != ')') {
        fail(i_, "expected ',' or ')' in the shape");
      }
    }
  }

  const std::string& s_;
  const std::string& source_;
  size_t base_;
  size_t i_ = 0;
};

struct DtypeInfo {
  NpyDtype dtype;
  bool swap;
};

DtypeInfo parse_descr(const std::string& descr, const std::string& source, size_t offset) {
  auto unsupported = [&]() {
    io_error(
        "npy: ",
        source,
        ": offset ",
        offset,
        ": unsupported dtype '",
        printable(descr),
        "' (supported: b1 i1 i2 i4 i8 u1 u2 u4 u8 f4 f8)");
  };
  if (descr.size() != 3) {
    unsupported();
  }
  const char order = descr[0];
  if (order != '<' && order != '>' && order != '|' && order != '=') {
    unsupported();
  }
  const std::string code = descr.substr(1);
  static const std::pair<const char*, NpyDtype> kCodes[] = {
      {"b1", NpyDtype::Bool},
      {"i1", NpyDtype::Int8},
      {"i2", NpyDtype::Int16},
      {"i4", NpyDtype::Int32},
      {"i8", NpyDtype::Int64},
      {"u1", NpyDtype::UInt8},
      {"u2", NpyDtype::UInt16},
      {"u4", NpyDtype::UInt32},
      {"u8", NpyDtype::UInt64},
      {"f4", NpyDtype::Float32},
      {"f8", NpyDtype::Float64},
  };
  for (const auto& c : kCodes) {
    if (code == c.first) {
      return {c.second, order == '>'};
    }
  }
  unsupported();
  return {};
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return out + (shape.size() == 1 ? ",)" : ")");
}

} // namespace

static NpyArray parse_npy_bytes(const std::string& b, const std::string& source) {
  static const char kMagic[] = "\x93NUMPY";
  if (b.size() < 6 || b.compare(0, 6, kMagic, 6) != 0) {
    io_error(
        "npy: ",
        source,
        ": offset 0: bad magic '",
        printable(b.substr(0, 6)),
        "' (an .npy file starts with \\x93NUMPY)");
  }
  io_check(b.size() >= 8, "npy: ", source, ": offset 6: truncated header (no version)");
  const int major = static_cast<unsigned char>(b[6]);
  const int minor = static_cast<unsigned char>(b[7]);
  io_check(
      major >= 1 && major <= 3 && minor == 0,
      "npy: ",
      source,
      ": offset 6: unsupported format version ",
      major,
      ".",
      minor,
      " (supported: 1.0, 2.0, 3.0)");
  const size_t len_bytes = major == 1 ? 2 : 4;
  io_check(
      b.size() >= 8 + len_bytes,
      "npy: ",
      source,
      ": offset 8: truncated header (the header length needs ",
      len_bytes,
      " bytes, the file has ",
      b.size(),
      " in all)");
  const uint64_t header_len = le(b, 8, static_cast<int>(len_bytes));
  const size_t header_at = 8 + len_bytes;
  io_check(
      header_len <= b.size() - header_at,
      "npy: ",
      source,
      ": offset ",
      header_at,
      ": truncated header (",
      header_len,
      " bytes announced, ",
      b.size() - header_at,
      " present)");
  const std::string header = b.substr(header_at, static_cast<size_t>(header_len));

  std::string descr;
  bool fortran = false;
  NpyArray a;
  HeaderParser(header, source, header_at).parse(descr, fortran, a.shape);
  const DtypeInfo info = parse_descr(descr, source, header_at);
  a.dtype = info.dtype;
  a.fortran_order = fortran;

  const size_t data_at = header_at + static_cast<size_t>(header_len);
  const uint64_t item = static_cast<uint64_t>(npy_itemsize(a.dtype));
  const uint64_t available = b.size() - data_at;
  // The element count must fit int64 even when a zero dimension makes the array empty.
  uint64_t need = item;
  bool overflow = false;
  bool empty = false;
  for (int64_t d : a.shape) {
    const auto du = static_cast<uint64_t>(d);
    if (du == 0) {
      empty = true;
    } else if (need > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / du) {
      overflow = true;
    } else {
      need *= du;
    }
  }
  if (empty && !overflow) {
    need = 0;
  }
  if (overflow || need != available) {
    io_error(
        "npy: ",
        source,
        ": offset ",
        data_at,
        ": shape ",
        shape_text(a.shape),
        " of ",
        descr,
        " needs ",
        overflow ? std::string("more than 2^63") : std::to_string(need),
        " bytes of data, the file has ",
        available,
        need > available || overflow ? " (truncated data)" : " (size mismatch)");
  }
  a.data.assign(b.begin() + static_cast<std::ptrdiff_t>(data_at), b.end());
  if (info.swap && item > 1) {
    for (size_t i = 0; i + item <= a.data.size(); i += item) {
      std::reverse(
          a.data.begin() + static_cast<std::ptrdiff_t>(i),
          a.data.begin() + static_cast<std::ptrdiff_t>(i + item));
    }
  }
  if (a.dtype == NpyDtype::Bool) {
    for (auto& v : a.data) {
      v = v != 0 ? 1 : 0;
    }
  }
  return a;
}

namespace {

struct ZipMember {
  std::string name;
  uint16_t method = 0;
  uint16_t flags = 0;
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t size = 0;
  uint64_t local_offset = 0;
  size_t central_offset = 0;
};

class Zip {
 public:
  Zip(const std::string& bytes, const std::string& source) : b_(bytes), source_(source) {
    read_directory();
  }

  const std::vector<ZipMember>& members() const {
    return members_;
  }

  std::string extract(const ZipMember& m) const {
    const uint64_t lh = m.local_offset;
    check_range(lh, 30, "local header of '" + m.name + "'");
    io_check(
        le(b_, static_cast<size_t>(lh), 4) == 0x04034b50,
        "npz: ",
        source_,
        ": offset ",
        lh,
        ": bad local header signature for member '",
        printable(m.name),
        "'");
    const uint64_t name_len = le(b_, static_cast<size_t>(lh) + 26, 2);
    const uint64_t extra_len = le(b_, static_cast<size_t>(lh) + 28, 2);
    const uint64_t data_at = lh + 30 + name_len + extra_len;
    check_range(data_at, m.compressed, "data of '" + m.name + "'");
    io_check(
        (m.flags & 1) == 0,
        "npz: ",
        source_,
        ": member '",
        printable(m.name),
        "' is encrypted (not supported)");
    std::string out;
    if (m.method == 0) {
      io_check(
          m.compressed == m.size,
          "npz: ",
          source_,
          ": offset ",
          m.central_offset,
          ": stored member '",
          printable(m.name),
          "' has compressed size ",
          m.compressed,
          " but size ",
          m.size);
      out = b_.substr(static_cast<size_t>(data_at), static_cast<size_t>(m.size));
    } else if (m.method == 8) {
      // Deflate cannot expand more than ~1032:1; a larger claim is a corrupt (or hostile) file.
      io_check(
          m.size <= m.compressed * 1032 + 1024,
          "npz: ",
          source_,
          ": offset ",
          m.central_offset,
          ": member '",
          printable(m.name),
          "' claims ",
          m.size,
          " bytes from ",
          m.compressed,
          " deflated bytes (impossible)");
      out = inflate_raw(m, data_at);
    } else {
      io_error(
          "npz: ",
          source_,
          ": member '",
          printable(m.name),
          "' uses compression method ",
          m.method,
          " (supported: 0 stored, 8 deflate)");
    }
    const uint32_t crc = crc32_of(out);
    io_check(
        crc == m.crc,
        "npz: ",
        source_,
        ": member '",
        printable(m.name),
        "': CRC mismatch (directory says ",
        hex(m.crc),
        ", data gives ",
        hex(crc),
        ")");
    return out;
  }

 private:
  static std::string hex(uint32_t v) {
    static const char* kHex = "0123456789abcdef";
    std::string out = "0x";
    for (int i = 7; i >= 0; --i) {
      out += kHex[(v >> (4 * i)) & 15];
    }
    return out;
  }

  void check_range(uint64_t at, uint64_t len, const std::string& what) const {
    io_check(
        at <= b_.size() && len <= b_.size() - at,
        "npz: ",
        source_,
        ": offset ",
        at,
        ": truncated ",
        printable(what, 80),
        " (",
        len,
        " bytes needed, the file has ",
        b_.size(),
        ")");
  }

  std::string inflate_raw(const ZipMember& m, uint64_t data_at) const {
#ifndef MEDCL_HAVE_ZLIB
    (void)data_at;
    io_error(
        "npz: ",
        source_,
        ": member '",
        printable(m.name),
        "' is deflated and medcl was built without zlib: install zlib1g-dev and reconfigure");
#else
    std::string out(static_cast<size_t>(m.size), '\0');
    z_stream z{};
    io_check(
        inflateInit2(&z, -MAX_WBITS) == Z_OK, "npz: ", source_, ": zlib initialisation failed");
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(b_.data() + data_at));
    z.avail_in = static_cast<uInt>(m.compressed);
    z.next_out = reinterpret_cast<Bytef*>(out.empty() ? nullptr : &out[0]);
    z.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&z, Z_FINISH);
    const uint64_t produced = z.total_out;
    const std::string msg = z.msg ? z.msg : "";
    inflateEnd(&z);
    if (rc != Z_STREAM_END || produced != m.size) {
      io_error(
          "npz: ",
          source_,
          ": offset ",
          data_at,
          ": member '",
          printable(m.name),
          "': deflated data is corrupt or does not give the ",
          m.size,
          " bytes the directory announces (",
          rc == Z_BUF_ERROR || (rc == Z_OK && produced == m.size)
              ? std::string("more data than announced, or truncated input")
              : (msg.empty() ? "zlib code " + std::to_string(rc) : msg),
          ", ",
          produced,
          " bytes produced)");
    }
    return out;
#endif
  }

  void read_directory() {
    // The end-of-central-directory record: the last "PK\5\6" within 64 KiB + 22 bytes of the end.
    io_check(
        b_.size() >= 22,
        "npz: ",
        source_,
        ": offset 0: not a zip archive (",
        b_.size(),
        " bytes, less than an end-of-directory record)");
    size_t eocd = std::string::npos;
    const size_t lowest = b_.size() > 22 + 65535 ? b_.size() - 22 - 65535 : 0;
    for (size_t i = b_.size() - 22 + 1; i-- > lowest;) {
      if (le(b_, i, 4) == 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd == std::string::npos) {
      io_error(
          "npz: ",
          source_,
          ": offset 0: not a zip archive (no end-of-central-directory record; starts with '",
          printable(b_.substr(0, 4)),
          "')");
    }
    uint64_t count = le(b_, eocd + 10, 2);
    uint64_t dir_size = le(b_, eocd + 12, 4);
    uint64_t dir_at = le(b_, eocd + 16, 4);
    if ((count == 0xFFFF || dir_size == 0xFFFFFFFF || dir_at == 0xFFFFFFFF) && eocd >= 20 &&
        le(b_, eocd - 20, 4) == 0x07064b50) {
      const uint64_t z64 = le(b_, eocd - 20 + 8, 8);
      check_range(z64, 56, "zip64 end-of-central-directory record");
      io_check(
          le(b_, static_cast<size_t>(z64), 4) == 0x06064b50,
          "npz: ",
          source_,
          ": offset ",
          z64,
          ": bad zip64 end-of-central-directory signature");
      count = le(b_, static_cast<size_t>(z64) + 32, 8);
      dir_size = le(b_, static_cast<size_t>(z64) + 40, 8);
      dir_at = le(b_, static_cast<size_t>(z64) + 48, 8);
    }
    check_range(dir_at, dir_size, "central directory");
    size_t p = static_cast<size_t>(dir_at);
    const size_t end = static_cast<size_t>(dir_at + dir_size);
    for (uint64_t k = 0; k < count; ++k) {
      io_check(
          p <= end && end - p >= 46 && le(b_, p, 4) == 0x02014b50,
          "npz: ",
          source_,
          ": offset ",
          p,
          ": bad central directory entry ",
          k + 1,
          " of ",
          count);
      ZipMember m;
      m.central_offset = p;
      m.flags = static_cast<uint16_t>(le(b_, p + 8, 2));
      m.method = static_cast<uint16_t>(le(b_, p + 10, 2));
      m.crc = static_cast<uint32_t>(le(b_, p + 16, 4));
      m.compressed = le(b_, p + 20, 4);
      m.size = le(b_, p + 24, 4);
      const size_t name_len = static_cast<size_t>(le(b_, p + 28, 2));
      const size_t extra_len = static_cast<size_t>(le(b_, p + 30, 2));
      const size_t comment_len = static_cast<size_t>(le(b_, p + 32, 2));
      m.local_offset = le(b_, p + 42, 4);
      io_check(
          end - p - 46 >= name_len + extra_len + comment_len,
          "npz: ",
          source_,
          ": offset ",
          p,
          ": central directory entry ",
          k + 1,
          " runs past the directory");
      m.name = b_.substr(p + 46, name_len);
      // Zip64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in this order.
      size_t e = p + 46 + name_len;
      const size_t e_end = e + extra_len;
      while (e + 4 <= e_end) {
        const uint64_t id = le(b_, e, 2);
        const size_t len = static_cast<size_t>(le(b_, e + 2, 2));
        if (e + 4 + len > e_end) {
          break;
        }
        if (id == 0x0001) {
          size_t q = e + 4;
          auto take = [&](uint64_t& field) {
            if (field == 0xFFFFFFFF && q + 8 <= e + 4 + len) {
              field = le(b_, q, 8);
              q += 8;
            }
          };
          take(m.size);
          take(m.compressed);
          take(m.local_offset);
        }
        e += 4 + len;
      }
      members_.push_back(m);
      p += 46 + name_len + extra_len + comment_len;
    }
  }

  const std::string& b_;
  const std::string& source_;
  std::vector<ZipMember> members_;
};

std::string strip_npy(const std::string& name) {
  if (name.size() >= 4 && name.compare(name.size() - 4, 4, ".npy") == 0) {
    return name.substr(0, name.size() - 4);
  }
  return name;
}

} // namespace

static std::map<std::string, NpyArray> parse_npz_bytes(
    const std::string& b,
    const std::string& source) {
  Zip zip(b, source);
  std::map<std::string, NpyArray> out;
  for (const auto& m : zip.members()) {
    const std::string member = source + ":" + m.name;
    out[strip_npy(m.name)] = parse_npy_bytes(zip.extract(m), member);
  }
  return out;
}

static NpyArray
parse_npz_member_bytes(const std::string& b, const std::string& name, const std::string& source) {
  Zip zip(b, source);
  const std::string wanted = strip_npy(name);
  std::string names;
  for (const auto& m : zip.members()) {
    if (strip_npy(m.name) == wanted) {
      return parse_npy_bytes(zip.extract(m), source + ":" + m.name);
    }
    names += (names.empty() ? "'" : ", '") + printable(m.name) + "'";
  }
  io_error(
      "npz: ",
      source,
      ": no member '",
      name,
      "'; the members are: ",
      names.empty() ? std::string("(none)") : names);
}

} // namespace detail

int64_t npy_itemsize(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::Bool:
    case NpyDtype::Int8:
    case NpyDtype::UInt8:
      return 1;
    case NpyDtype::Int16:
    case NpyDtype::UInt16:
      return 2;
    case NpyDtype::Int32:
    case NpyDtype::UInt32:
    case NpyDtype::Float32:
      return 4;
    case NpyDtype::Int64:
    case NpyDtype::UInt64:
    case NpyDtype::Float64:
      return 8;
  }
  return 0;
}

std::string npy_dtype_name(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::Bool:
      return "|b1";
    case NpyDtype::Int8:
      return "|i1";
    case NpyDtype::Int16:
      return "<i2";
    case NpyDtype::Int32:
      return "<i4";
    case NpyDtype::Int64:
      return "<i8";
    case NpyDtype::UInt8:
      return "|u1";
    case NpyDtype::UInt16:
      return "<u2";
    case NpyDtype::UInt32:
      return "<u4";
    case NpyDtype::UInt64:
      return "<u8";
    case NpyDtype::Float32:
      return "<f4";
    case NpyDtype::Float64:
      return "<f8";
  }
  return "?";
}

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d == 0) {
      return 0;
    }
    n *= d;
  }
  return n;
}

NpyArray read_npy_file(const std::string& path) {
  return detail::parse_npy_bytes(detail::read_whole_file("npy", path), path);
}

NpyArray parse_npy(const std::string& bytes, const std::string& source) {
  return detail::parse_npy_bytes(bytes, source);
}

std::map<std::string, NpyArray> read_npz_file(const std::string& path) {
  return detail::parse_npz_bytes(detail::read_whole_file("npz", path), path);
}

NpyArray read_npz_member(const std::string& path, const std::string& name) {
  return detail::parse_npz_member_bytes(detail::read_whole_file("npz", path), name, path);
}

std::map<std::string, NpyArray> parse_npz(const std::string& bytes, const std::string& source) {
  return detail::parse_npz_bytes(bytes, source);
}

NpyArray
parse_npz_member(const std::string& bytes, const std::string& name, const std::string& source) {
  return detail::parse_npz_member_bytes(bytes, name, source);
}

} // namespace data
} // namespace medcl
