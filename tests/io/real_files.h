#pragma once

// Where the reader tests find real files: under $MEDCL_DATA_DIR (searched recursively by file
// name, whatever layout the data script uses), else at the paths Debian's packages install them.
// An empty result means "absent": the test prints a warning and returns.

#include <medcl/core/files.h>

#include <c10/util/Exception.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace medcl_test {

inline std::string find_real_file(
    const std::string& name,
    std::initializer_list<const char*> installed_paths) {
  namespace fs = std::filesystem;
  if (const char* dir = std::getenv("MEDCL_DATA_DIR")) {
    std::vector<std::string> entries;
    try {
      entries = medcl::list_tree(dir);
    } catch (const c10::Error&) {
      entries.clear(); // an unreadable MEDCL_DATA_DIR: fall back to the installed paths
    }
    for (const auto& e : entries) {
      std::error_code ec;
      if (fs::path(e).filename() == name && fs::is_regular_file(e, ec)) {
        return e;
      }
    }
  }
  for (const char* p : installed_paths) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) {
      return p;
    }
  }
  return {};
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

/// A file name in the system's temporary folder, unique to this test process.
inline std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("medcl_test_io_" + std::to_string(static_cast<long>(::getpid())) + "_" + name))
      .string();
}

} // namespace medcl_test
