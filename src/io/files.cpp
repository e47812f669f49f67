#include <medcl/core/files.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
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

namespace {

// SHA-256 (FIPS 180-4): the eight working variables, one 64-byte block at a time.
class Sha256 {
 public:
  void update(const unsigned char* data, size_t n) {
    length_ += n;
    while (n > 0) {
      const size_t take = std::min(n, sizeof(block_) - used_);
      std::memcpy(block_ + used_, data, take);
      used_ += take;
      data += take;
      n -= take;
      if (used_ == sizeof(block_)) {
        compress();
        used_ = 0;
      }
    }
  }
  std::string hex() {
    const std::uint64_t bits = static_cast<std::uint64_t>(length_) * 8;
    const unsigned char one = 0x80;
    const unsigned char zero = 0;
    update(&one, 1);
    while (used_ != 56) {
      update(&zero, 1);
    }
    unsigned char tail[8];
    for (int i = 0; i < 8; ++i) {
      tail[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    }
    update(tail, 8);
    static const char* const digits = "0123456789abcdef";
    std::string out;
    for (std::uint32_t word : h_) {
      for (int shift = 28; shift >= 0; shift -= 4) {
        out += digits[(word >> shift) & 0xf];
      }
    }
    return out;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) {
    return (x >> n) | (x << (32 - n));
  }
  void compress() {
    static const std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (std::uint32_t{block_[4 * i]} << 24) | (std::uint32_t{block_[4 * i + 1]} << 16) |
          (std::uint32_t{block_[4 * i + 2]} << 8) | std::uint32_t{block_[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3];
    std::uint32_t e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const std::uint32_t t2 =
          (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }

  std::uint32_t h_[8] = {
      0x6a09e667,
      0xbb67ae85,
      0x3c6ef372,
      0xa54ff53a,
      0x510e527f,
      0x9b05688c,
      0x1f83d9ab,
      0x5be0cd19};
  unsigned char block_[64] = {};
  size_t used_ = 0;
  std::uintmax_t length_ = 0;
};

} // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path, std::uintmax_t* size) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  TORCH_CHECK(f != nullptr, "sha256_file: cannot open ", path, ": ", std::strerror(errno));
  Sha256 h;
  std::uintmax_t total = 0;
  unsigned char buf[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    h.update(buf, n);
    total += n;
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  TORCH_CHECK(!failed, "sha256_file: reading ", path, " failed");
  if (size != nullptr) {
    *size = total;
  }
  return h.hex();
}

} // namespace medcl
