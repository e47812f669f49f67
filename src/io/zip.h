#pragma once

// Internal: a reader of zip archives held in memory (NPZ files are zip archives of .npy members).
// Members are located through the central directory, zip64 included (numpy writes zip64 local
// headers whose sizes are only in the central directory); stored and deflated members are
// extracted and checked against their CRC-32. Compiled without LibTorch, like the parsers; deflate
// needs zlib (MEDCL_HAVE_ZLIB), otherwise a deflated member is a reader error.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace data {
namespace detail {

/// One member of a zip archive, as the central directory describes it.
struct ZipMember {
  std::string name;
  /// Compression method: 0 stored, 8 deflate (the others are refused by `extract`).
  uint16_t method = 0;
  /// General-purpose flags (bit 0: encrypted).
  uint16_t flags = 0;
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t size = 0;
  /// Offset of the member's local header, and of its central directory entry.
  uint64_t local_offset = 0;
  size_t central_offset = 0;
};

/// The members of the zip archive `bytes`, read from its central directory when the reader is
/// built. Errors are reader errors that start with "<reader>: <source>: " and give the offset.
/// `bytes` and `source` are held by reference: they must outlive the reader.
class ZipReader {
 public:
  ZipReader(const std::string& bytes, const std::string& source, const char* reader);

  const std::vector<ZipMember>& members() const {
    return members_;
  }

  /// The uncompressed bytes of `member` (one of `members()`), CRC-checked.
  std::string extract(const ZipMember& member) const;

 private:
  void read_directory();
  void check_range(uint64_t at, uint64_t len, const std::string& what) const;
  std::string inflate_raw(const ZipMember& member, uint64_t data_at) const;

  const std::string& b_;
  const std::string& source_;
  const char* reader_;
  std::vector<ZipMember> members_;
};

} // namespace detail
} // namespace data
} // namespace medcl
