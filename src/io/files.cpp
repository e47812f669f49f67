#include <medcl/core/files.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#if !defined(_WIN32)
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace medcl {

namespace {

#if !defined(_WIN32)
std::error_code last_error() {
  return std::error_code(errno, std::generic_category());
}

// The names in `dir` other than "." and "..".
bool read_names(const std::string& dir, std::vector<std::string>& names, std::error_code& ec) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    ec = last_error();
    return false;
  }
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    const char* n = e->d_name;
    if (std::strcmp(n, ".") != 0 && std::strcmp(n, "..") != 0) {
      names.emplace_back(n);
    }
    errno = 0;
  }
  const int read_errno = errno;
  ::closedir(d);
  if (read_errno != 0) {
    ec = std::error_code(read_errno, std::generic_category());
    return false;
  }
  return true;
}

std::string join(const std::string& dir, const std::string& name) {
  return !dir.empty() && dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::uintmax_t remove_below(const std::string& path, std::error_code& ec) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      ec = last_error();
    }
    return 0;
  }
  std::uintmax_t removed = 0;
  if (S_ISDIR(st.st_mode)) {
    std::vector<std::string> names;
    if (!read_names(path, names, ec)) {
      return 0;
    }
    for (const auto& n : names) {
      removed += remove_below(join(path, n), ec);
      if (ec) {
        return removed;
      }
    }
    if (::rmdir(path.c_str()) != 0) {
      ec = last_error();
      return removed;
    }
  } else if (::unlink(path.c_str()) != 0) {
    ec = last_error();
    return removed;
  }
  return removed + 1;
}

void list_below(const std::string& dir, std::vector<std::string>& out) {
  std::vector<std::string> names;
  std::error_code ec;
  TORCH_CHECK(
      read_names(dir, names, ec), "list_tree: cannot read the directory ", dir, ": ", ec.message());
  for (const auto& n : names) {
    const std::string p = join(dir, n);
    out.push_back(p);
    struct stat st;
    if (::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      list_below(p, out);
    }
  }
}
#endif

} // namespace

std::uintmax_t remove_tree(const std::string& path, std::error_code& ec) {
  ec.clear();
#if defined(_WIN32)
  return std::filesystem::remove_all(path, ec);
#else
  return remove_below(path, ec);
#endif
}

std::uintmax_t remove_tree(const std::string& path) {
  std::error_code ec;
  const auto n = remove_tree(path, ec);
  TORCH_CHECK(!ec, "remove_tree: cannot remove ", path, ": ", ec.message());
  return n;
}

std::vector<std::string> list_tree(const std::string& dir) {
  std::vector<std::string> out;
#if defined(_WIN32)
  namespace fs = std::filesystem;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    out.push_back(e.path().string());
  }
#else
  list_below(dir, out);
#endif
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace medcl
