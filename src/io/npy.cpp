// NPY / NPZ parsing, compiled without LibTorch. NPZ files are zip archives of .npy members, read
// by the zip reader of zip.h.

#define MEDCL_DATA_NO_ATEN
#include <medcl/data/npy.h>

#include "bytes.h"
#include "io_error.h"
#include "zip.h"

#include <algorithm>
#include <limits>
#include <string>

namespace medcl {
namespace data {
namespace detail {
namespace {

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
  const uint64_t header_len = read_le(b, 8, static_cast<int>(len_bytes));
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
  ZipReader zip(b, source, "npz");
  std::map<std::string, NpyArray> out;
  for (const auto& m : zip.members()) {
    const std::string member = source + ":" + m.name;
    out[strip_npy(m.name)] = parse_npy_bytes(zip.extract(m), member);
  }
  return out;
}

static NpyArray
parse_npz_member_bytes(const std::string& b, const std::string& name, const std::string& source) {
  ZipReader zip(b, source, "npz");
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
