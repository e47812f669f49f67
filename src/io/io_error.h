#pragma once

// Internal: how the parsing sources report an error, and how they read a whole file. They are
// compiled without LibTorch (so that the fuzz targets build quickly with clang and no torch): medcl
// defines io_fail in error.cpp as a c10::Error, the fuzz targets define it as a std::runtime_error.

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace medcl {
namespace data {
namespace detail {

/// Throws the reader error `message` (c10::Error in medcl).
[[noreturn]] void io_fail(const std::string& message);

/// Concatenates `parts` with operator<< and throws them as a reader error.
template <class... Parts>
[[noreturn]] void io_error(const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  io_fail(s.str());
}

/// Throws unless `cond`; the message parts are only formatted on failure.
template <class... Parts>
void io_check(bool cond, const Parts&... parts) {
  if (!cond) {
    io_error(parts...);
  }
}

/// The bytes of the file at `path`; a reader error naming `reader` ("csv", "npy", ...), the path
/// and the system's reason when it cannot be opened or read.
inline std::string read_whole_file(const char* reader, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    io_error(reader, ": cannot open '", path, "': ", std::strerror(err));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    const int err = errno;
    io_error(reader, ": cannot read '", path, "': ", std::strerror(err));
  }
  return buffer.str();
}

} // namespace detail
} // namespace data
} // namespace medcl
