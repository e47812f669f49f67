// The zip reader of NPZ files (zip.h), compiled without LibTorch.

#include "zip.h"

#include "bytes.h"
#include "io_error.h"

#ifdef MEDCL_HAVE_ZLIB
#include <zlib.h>
#endif

#include <array>
#include <string>

namespace medcl {
namespace data {
namespace detail {
namespace {

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

std::string hex32(uint32_t v) {
  static const char* kHex = "0123456789abcdef";
  std::string out = "0x";
  for (int i = 7; i >= 0; --i) {
    out += kHex[(v >> (4 * i)) & 15];
  }
  return out;
}

} // namespace

ZipReader::ZipReader(const std::string& bytes, const std::string& source, const char* reader)
    : b_(bytes), source_(source), reader_(reader) {
  read_directory();
}

std::string ZipReader::extract(const ZipMember& m) const {
  const uint64_t lh = m.local_offset;
  check_range(lh, 30, "local header of '" + m.name + "'");
  io_check(
      read_le(b_, static_cast<size_t>(lh), 4) == 0x04034b50,
      reader_,
      ": ",
      source_,
      ": offset ",
      lh,
      ": bad local header signature for member '",
      printable(m.name),
      "'");
  const uint64_t name_len = read_le(b_, static_cast<size_t>(lh) + 26, 2);
  const uint64_t extra_len = read_le(b_, static_cast<size_t>(lh) + 28, 2);
  const uint64_t data_at = lh + 30 + name_len + extra_len;
  check_range(data_at, m.compressed, "data of '" + m.name + "'");
  io_check(
      (m.flags & 1) == 0,
      reader_,
      ": ",
      source_,
      ": member '",
      printable(m.name),
      "' is encrypted (not supported)");
  std::string out;
  if (m.method == 0) {
    io_check(
        m.compressed == m.size,
        reader_,
        ": ",
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
        reader_,
        ": ",
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
        reader_,
        ": ",
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
      reader_,
      ": ",
      source_,
      ": member '",
      printable(m.name),
      "': CRC mismatch (directory says ",
      hex32(m.crc),
      ", data gives ",
      hex32(crc),
      ")");
  return out;
}

void ZipReader::check_range(uint64_t at, uint64_t len, const std::string& what) const {
  io_check(
      at <= b_.size() && len <= b_.size() - at,
      reader_,
      ": ",
      source_,
      ": offset ",
      at,
      ": truncated ",
      printable(what, HighBytes::Escape, 80),
      " (",
      len,
      " bytes needed, the file has ",
      b_.size(),
      ")");
}

std::string ZipReader::inflate_raw(const ZipMember& m, uint64_t data_at) const {
#ifndef MEDCL_HAVE_ZLIB
  (void)data_at;
  io_error(
      reader_,
      ": ",
      source_,
      ": member '",
      printable(m.name),
      "' is deflated and medcl was built without zlib: install zlib1g-dev and reconfigure");
#else
  std::string out(static_cast<size_t>(m.size), '\0');
  z_stream z{};
  io_check(
      inflateInit2(&z, -MAX_WBITS) == Z_OK, reader_, ": ", source_, ": zlib initialisation failed");
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
        reader_,
        ": ",
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

void ZipReader::read_directory() {
  // The end-of-central-directory record: the last "PK\5\6" within 64 KiB + 22 bytes of the end.
  io_check(
      b_.size() >= 22,
      reader_,
      ": ",
      source_,
      ": offset 0: not a zip archive (",
      b_.size(),
      " bytes, less than an end-of-directory record)");
  size_t eocd = std::string::npos;
  const size_t lowest = b_.size() > 22 + 65535 ? b_.size() - 22 - 65535 : 0;
  for (size_t i = b_.size() - 22 + 1; i-- > lowest;) {
    if (read_le(b_, i, 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd == std::string::npos) {
    io_error(
        reader_,
        ": ",
        source_,
        ": offset 0: not a zip archive (no end-of-central-directory record; starts with '",
        printable(b_.substr(0, 4)),
        "')");
  }
  uint64_t count = read_le(b_, eocd + 10, 2);
  uint64_t dir_size = read_le(b_, eocd + 12, 4);
  uint64_t dir_at = read_le(b_, eocd + 16, 4);
  if ((count == 0xFFFF || dir_size == 0xFFFFFFFF || dir_at == 0xFFFFFFFF) && eocd >= 20 &&
      read_le(b_, eocd - 20, 4) == 0x07064b50) {
    const uint64_t z64 = read_le(b_, eocd - 20 + 8, 8);
    check_range(z64, 56, "zip64 end-of-central-directory record");
    io_check(
        read_le(b_, static_cast<size_t>(z64), 4) == 0x06064b50,
        reader_,
        ": ",
        source_,
        ": offset ",
        z64,
        ": bad zip64 end-of-central-directory signature");
    count = read_le(b_, static_cast<size_t>(z64) + 32, 8);
    dir_size = read_le(b_, static_cast<size_t>(z64) + 40, 8);
    dir_at = read_le(b_, static_cast<size_t>(z64) + 48, 8);
  }
  check_range(dir_at, dir_size, "central directory");
  size_t p = static_cast<size_t>(dir_at);
  const size_t end = static_cast<size_t>(dir_at + dir_size);
  for (uint64_t k = 0; k < count; ++k) {
    io_check(
        p <= end && end - p >= 46 && read_le(b_, p, 4) == 0x02014b50,
        reader_,
        ": ",
        source_,
        ": offset ",
        p,
        ": bad central directory entry ",
        k + 1,
        " of ",
        count);
    ZipMember m;
    m.central_offset = p;
    m.flags = static_cast<uint16_t>(read_le(b_, p + 8, 2));
    m.method = static_cast<uint16_t>(read_le(b_, p + 10, 2));
    m.crc = static_cast<uint32_t>(read_le(b_, p + 16, 4));
    m.compressed = read_le(b_, p + 20, 4);
    m.size = read_le(b_, p + 24, 4);
    const size_t name_len = static_cast<size_t>(read_le(b_, p + 28, 2));
    const size_t extra_len = static_cast<size_t>(read_le(b_, p + 30, 2));
    const size_t comment_len = static_cast<size_t>(read_le(b_, p + 32, 2));
    m.local_offset = read_le(b_, p + 42, 4);
    io_check(
        end - p - 46 >= name_len + extra_len + comment_len,
        reader_,
        ": ",
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
      const uint64_t id = read_le(b_, e, 2);
      const size_t len = static_cast<size_t>(read_le(b_, e + 2, 2));
      if (e + 4 + len > e_end) {
        break;
      }
      if (id == 0x0001) {
        size_t q = e + 4;
        auto take = [&](uint64_t& field) {
          if (field == 0xFFFFFFFF && q + 8 <= e + 4 + len) {
            field = read_le(b_, q, 8);
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

} // namespace detail
} // namespace data
} // namespace medcl
