#pragma once

// Internal: what the parsing sources share to read raw bytes: little-endian integers, and printable
// excerpts of bytes for error messages. Compiled without LibTorch, like the parsers.

#include <cstddef>
#include <cstdint>
#include <string>

namespace medcl {
namespace data {
namespace detail {

/// The unsigned little-endian integer of `bytes` bytes at `at` in `b` (the caller checks the
/// range).
inline uint64_t read_le(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) {
    v = (v << 8) | static_cast<unsigned char>(b[at + static_cast<size_t>(i)]);
  }
  return v;
}

/// Which bytes `printable` writes as \xhh besides the control characters (below 0x20, and 0x7f).
enum class HighBytes {
  /// Bytes from 0x80 up escaped too: for binary formats (NPY, NPZ, NIfTI), whose text is ASCII.
  Escape,
  /// Bytes from 0x80 up kept as they are: for text formats (CSV), whose cells may be UTF-8.
  Keep,
};

/// How many bytes of a field `printable` shows by default.
constexpr size_t kPrintableBytes = 40;

/// A printable excerpt of `bytes` for an error message: the first `max` bytes, control bytes (and,
/// with HighBytes::Escape, bytes from 0x80 up) written as \xhh, and "..." when bytes were cut.
inline std::string printable(
    const std::string& bytes,
    HighBytes high = HighBytes::Escape,
    size_t max = kPrintableBytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (char ch : bytes.substr(0, max)) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f || (u > 0x7f && high == HighBytes::Escape)) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += ch;
    }
  }
  return bytes.size() > max ? out + "..." : out;
}

} // namespace detail
} // namespace data
} // namespace medcl
