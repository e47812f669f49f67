#include <medcl/data/npy.h>

#include "io/real_files.h"

#include <torch/torch.h>
#include "catch.h"

#ifdef MEDCL_TEST_HAVE_ZLIB
#include <zlib.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using medcl::data::NpyDtype;
using medcl::data::parse_npy;
using medcl::data::parse_npz;
using medcl::data::parse_npz_member;
using medcl_test::Contains;

namespace {

// An .npy file written by hand, independently of the reader: magic, version, header length,
// the header literal padded with spaces to a multiple of 64, then the data.
std::string make_npy(
    const std::string& descr,
    const std::string& shape,
    bool fortran,
    const std::string& data,
    int version = 1) {
  std::string header = "{'descr': '" + descr +
      "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
  const size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) {
    header += ' ';
  }
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  const uint32_t len = static_cast<uint32_t>(header.size());
  for (size_t i = 0; i < (version == 1 ? 2u : 4u); ++i) {
    out += static_cast<char>((len >> (8 * i)) & 0xFF);
  }
  return out + header + data;
}

// The bytes of `values` as `size`-byte integers / IEEE floats, little- or big-endian.
template <class T>
std::string bytes_of(const std::vector<T>& values, bool big_endian) {
  std::string out;
  for (const T& v : values) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T)); // this test machine is little-endian (checked below)
    if (big_endian) {
      std::reverse(b, b + sizeof(T));
    }
    out.append(b, sizeof(T));
  }
  return out;
}

void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    s += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
}

uint32_t crc32_ref(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char ch : data) {
    crc ^= ch;
    for (int k = 0; k < 8; ++k) {
      crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
  }
  return ~crc;
}

struct ZipEntry {
  std::string name;
  std::string data;    // uncompressed
  std::string payload; // as stored in the archive
  uint16_t method = 0;
};

// A zip archive: local headers + data, central directory, end record.
std::string make_zip(const std::vector<ZipEntry>& entries) {
  std::string out;
  std::string dir;
  for (const auto& e : entries) {
    const uint32_t offset = static_cast<uint32_t>(out.size());
    const uint32_t crc = crc32_ref(e.data);
    put_le(out, 0x04034b50, 4);
    put_le(out, 20, 2);
    put_le(out, 0, 2);
    put_le(out, e.method, 2);
    put_le(out, 0, 4); // time, date
    put_le(out, crc, 4);
    put_le(out, e.payload.size(), 4);
    put_le(out, e.data.size(), 4);
    put_le(out, e.name.size(), 2);
    put_le(out, 0, 2);
    out += e.name + e.payload;

    put_le(dir, 0x02014b50, 4);
    put_le(dir, 20, 2);
    put_le(dir, 20, 2);
    put_le(dir, 0, 2);
    put_le(dir, e.method, 2);
    put_le(dir, 0, 4);
    put_le(dir, crc, 4);
    put_le(dir, e.payload.size(), 4);
    put_le(dir, e.data.size(), 4);
    put_le(dir, e.name.size(), 2);
    put_le(dir, 0, 2);
    put_le(dir, 0, 2);
    put_le(dir, 0, 2);
    put_le(dir, 0, 2);
    put_le(dir, 0, 4);
    put_le(dir, offset, 4);
    dir += e.name;
  }
  const uint32_t dir_at = static_cast<uint32_t>(out.size());
  out += dir;
  put_le(out, 0x06054b50, 4);
  put_le(out, 0, 4);
  put_le(out, entries.size(), 2);
  put_le(out, entries.size(), 2);
  put_le(out, dir.size(), 4);
  put_le(out, dir_at, 4);
  put_le(out, 0, 2);
  return out;
}

ZipEntry stored(const std::string& name, const std::string& data) {
  return {name, data, data, 0};
}

template <class T>
void check_round_trip(NpyDtype dtype, const std::string& code, torch::ScalarType expected_type) {
  const std::vector<T> values = {T(0), T(1), T(2), T(100), T(7), T(3)};
  for (const bool big : {false, true}) {
    for (const bool fortran : {false, true}) {
      for (const int version : {1, 2, 3}) {
        const std::string order = sizeof(T) == 1 ? "|" : (big ? ">" : "<");
        // Element (i, j) of the 2x3 array is values[3 i + j]; Fortran files store it column-major.
        std::vector<T> file_order;
        if (fortran) {
          for (int j = 0; j < 3; ++j) {
            for (int i = 0; i < 2; ++i) {
              file_order.push_back(values[static_cast<size_t>(3 * i + j)]);
            }
          }
        } else {
          file_order = values;
        }
        const std::string npy =
            make_npy(order + code, "(2, 3)", fortran, bytes_of(file_order, big), version);
        const medcl::data::NpyArray a = parse_npy(npy);
        INFO(code << " big=" << big << " fortran=" << fortran << " version=" << version);
        REQUIRE(a.dtype == dtype);
        REQUIRE(a.shape == std::vector<int64_t>{2, 3});
        REQUIRE(a.fortran_order == fortran);
        REQUIRE(a.numel() == 6);
        const std::string little = bytes_of(file_order, false);
        REQUIRE(a.data == std::vector<uint8_t>(little.begin(), little.end()));
        const at::Tensor t = medcl::data::to_tensor(a);
        REQUIRE(t.scalar_type() == expected_type);
        REQUIRE(t.sizes() == torch::IntArrayRef{2, 3});
        REQUIRE(t.is_contiguous());
        for (int i = 0; i < 2; ++i) {
          for (int j = 0; j < 3; ++j) {
            REQUIRE(
                t[i][j].item<double>() ==
                static_cast<double>(values[static_cast<size_t>(3 * i + j)]));
          }
        }
      }
    }
  }
}

} // namespace

TEST_CASE("npy: every dtype, byte order, memory order and version round-trips", "[io][npy]") {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  REQUIRE(first == 1); // the hand-written files assume a little-endian host

  check_round_trip<int8_t>(NpyDtype::Int8, "i1", torch::kChar);
  check_round_trip<uint8_t>(NpyDtype::UInt8, "u1", torch::kByte);
  check_round_trip<int16_t>(NpyDtype::Int16, "i2", torch::kShort);
  check_round_trip<uint16_t>(NpyDtype::UInt16, "u2", torch::kInt);
  check_round_trip<int32_t>(NpyDtype::Int32, "i4", torch::kInt);
  check_round_trip<uint32_t>(NpyDtype::UInt32, "u4", torch::kLong);
  check_round_trip<int64_t>(NpyDtype::Int64, "i8", torch::kLong);
  check_round_trip<uint64_t>(NpyDtype::UInt64, "u8", torch::kLong);
  check_round_trip<float>(NpyDtype::Float32, "f4", torch::kFloat);
  check_round_trip<double>(NpyDtype::Float64, "f8", torch::kDouble);

  // Bool (any non-zero byte is true), 0-d, empty and 3-d Fortran arrays.
  const auto b = parse_npy(make_npy("|b1", "(4,)", false, std::string("\x00\x01\x02\x00", 4)));
  REQUIRE(b.dtype == NpyDtype::Bool);
  const auto bt = medcl::data::to_tensor(b);
  REQUIRE(bt.scalar_type() == torch::kBool);
  REQUIRE(bt.sum().item<int64_t>() == 2);

  const auto s = parse_npy(make_npy("<f8", "()", false, bytes_of<double>({2.5}, false)));
  REQUIRE(s.shape.empty());
  REQUIRE(s.numel() == 1);
  REQUIRE(medcl::data::to_tensor(s).dim() == 0);
  REQUIRE(medcl::data::to_tensor(s).item<double>() == 2.5);

  const auto e = parse_npy(make_npy("<i4", "(0, 5)", false, ""));
  REQUIRE(e.numel() == 0);
  REQUIRE(medcl::data::to_tensor(e).sizes() == torch::IntArrayRef{0, 5});

  std::vector<int32_t> f; // element (i, j, k) = 100 i + 10 j + k, column-major
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 3; ++j) {
      for (int i = 0; i < 2; ++i) {
        f.push_back(100 * i + 10 * j + k);
      }
    }
  }
  const auto ft =
      medcl::data::to_tensor(parse_npy(make_npy("<i4", "(2, 3, 4)", true, bytes_of(f, false))));
  REQUIRE(ft.sizes() == torch::IntArrayRef{2, 3, 4});
  REQUIRE(ft[1][2][3].item<int32_t>() == 123);
  REQUIRE(ft[0][1][2].item<int32_t>() == 12);

  // u8 above int64's range cannot become a LibTorch tensor.
  const auto big =
      parse_npy(make_npy("<u8", "(1,)", false, bytes_of<uint64_t>({~uint64_t{0}}, false)));
  REQUIRE_THROWS_WITH(medcl::data::to_tensor(big), Contains("does not fit int64"));
}

TEST_CASE("npy: errors name the source, the offset and the problem", "[io][npy]") {
  const auto good = make_npy("<f4", "(2,)", false, bytes_of<float>({1, 2}, false));
  REQUIRE(parse_npy(good, "x.npy").numel() == 2);

  std::string bad_magic = good;
  bad_magic[1] = 'X';
  REQUIRE_THROWS_WITH(parse_npy(bad_magic, "x.npy"), Contains("x.npy: offset 0: bad magic"));
  REQUIRE_THROWS_AS(parse_npy(bad_magic), c10::Error);
  REQUIRE_THROWS_WITH(parse_npy("\x93NUMPY\x01"), Contains("offset 6: truncated header"));
  REQUIRE_THROWS_WITH(parse_npy(good.substr(0, 9)), Contains("offset 8: truncated header"));
  REQUIRE_THROWS_WITH(
      parse_npy(good.substr(0, 40)),
      Contains("offset 10: truncated header (118 bytes announced, 30 present)"));
  std::string version = good;
  version[6] = 4;
  REQUIRE_THROWS_WITH(parse_npy(version), Contains("offset 6: unsupported format version 4.0"));
  // Truncated data and trailing data.
  REQUIRE_THROWS_WITH(
      parse_npy(good.substr(0, good.size() - 1), "x.npy"),
      Contains("x.npy: offset 128: shape (2,) of <f4 needs 8 bytes of data, the file has 7 "
               "(truncated data)"));
  REQUIRE_THROWS_WITH(
      parse_npy(good + "zz"), Contains("needs 8 bytes of data, the file has 10 (size mismatch)"));
  REQUIRE_THROWS_WITH(
      parse_npy(make_npy("<c16", "(1,)", false, std::string(16, '\0'))),
      Contains(
          "offset 10: unsupported dtype '<c16' (supported: b1 i1 i2 i4 i8 u1 u2 u4 u8 f4 f8)"));
  REQUIRE_THROWS_WITH(
      parse_npy(make_npy("|O", "(1,)", false, "")), Contains("unsupported dtype '|O'"));
  REQUIRE_THROWS_WITH(
      parse_npy(make_npy("<f8", "(2, x)", false, "")),
      Contains("expected a non-negative integer in the shape"));
  REQUIRE_THROWS_WITH(
      parse_npy(make_npy("<f8", "(4611686018427387904, 4611686018427387904)", false, "")),
      Contains("more than 2^63"));
  std::string structured = good;
  const auto at = structured.find("'<f4'");
  structured.replace(at, 5, "[('a',");
  REQUIRE_THROWS_WITH(parse_npy(structured), Contains("structured dtype"));
  std::string flipped = good;
  flipped[10] = '['; // the header's opening brace
  REQUIRE_THROWS_WITH(parse_npy(flipped), Contains("offset 10: expected '{' in the header"));
  REQUIRE_THROWS_WITH(
      medcl::data::read_npy_file("/nonexistent/medcl/a.npy"),
      Contains("cannot open '/nonexistent/medcl/a.npy': No such file or directory"));
}

TEST_CASE("npz: stored and deflated members, missing members, corruption", "[io][npy]") {
  const auto a = make_npy("<i2", "(3,)", false, bytes_of<int16_t>({-1, 0, 7}, false));
  const auto b = make_npy("<f8", "(2, 2)", true, bytes_of<double>({1, 2, 3, 4}, false));
  const auto zip = make_zip({stored("a.npy", a), stored("b.npy", b)});

  const auto all = parse_npz(zip, "x.npz");
  REQUIRE(all.size() == 2);
  REQUIRE(medcl::data::to_tensor(all.at("a")).sum().item<int64_t>() == 6);
  const auto bt = medcl::data::to_tensor(parse_npz_member(zip, "b.npy"));
  REQUIRE(bt[0][1].item<double>() == 3); // Fortran: (0, 1) is the third stored value
  REQUIRE(parse_npz_member(zip, "b").shape == std::vector<int64_t>{2, 2});

  REQUIRE_THROWS_WITH(
      parse_npz_member(zip, "c", "x.npz"),
      Contains("x.npz: no member 'c'; the members are: 'a.npy', 'b.npy'"));
  REQUIRE_THROWS_WITH(parse_npz(a, "x.npz"), Contains("x.npz: offset 0: not a zip archive"));
  REQUIRE_THROWS_WITH(parse_npz("PK"), Contains("not a zip archive"));
  // A flipped data byte: the CRC no longer matches.
  std::string corrupt = zip;
  corrupt[30 + 5 + 130] ^= 0x40;
  REQUIRE_THROWS_WITH(parse_npz(corrupt, "x.npz"), Contains("x.npz: member 'a.npy': CRC mismatch"));
  // The member's .npy is itself broken: the error names the archive and the member.
  const auto bad_member = make_zip({stored("m.npy", "not an npy file")});
  REQUIRE_THROWS_WITH(parse_npz(bad_member, "x.npz"), Contains("x.npz:m.npy: offset 0: bad magic"));
  // Truncated archive (cut inside the data, the central directory is gone).
  REQUIRE_THROWS_WITH(parse_npz(zip.substr(0, zip.size() / 2)), Contains("not a zip archive"));
  // Central directory pointing past the end.
  std::string moved = zip;
  moved[moved.size() - 3] = static_cast<char>(0x7F); // high byte of the directory offset
  REQUIRE_THROWS_WITH(parse_npz(moved), Contains("truncated central directory"));
  // Unknown method.
  auto bz = stored("a.npy", a);
  bz.method = 12;
  REQUIRE_THROWS_WITH(
      parse_npz(make_zip({bz})), Contains("member 'a.npy' uses compression method 12"));

#ifdef MEDCL_TEST_HAVE_ZLIB
  // Deflated (raw deflate, as zip stores it), with zlib here as the independent writer.
  std::string payload(compressBound(static_cast<uLong>(b.size())) + 64, '\0');
  z_stream z{};
  REQUIRE(deflateInit2(&z, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(b.data()));
  z.avail_in = static_cast<uInt>(b.size());
  z.next_out = reinterpret_cast<Bytef*>(&payload[0]);
  z.avail_out = static_cast<uInt>(payload.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  payload.resize(z.total_out);
  deflateEnd(&z);
  const auto dz = make_zip({stored("a.npy", a), {"b.npy", b, payload, 8}});
  const auto bd = medcl::data::to_tensor(parse_npz(dz).at("b"));
  REQUIRE(torch::equal(bd, bt));
  // Cut deflated stream: the member is shorter than announced.
  auto cut = ZipEntry{"b.npy", b, payload.substr(0, payload.size() / 2), 8};
  REQUIRE_THROWS_WITH(
      parse_npz(make_zip({cut}), "x.npz"),
      Contains("x.npz: offset 35: member 'b.npy': deflated data is corrupt"));
#else
  WARN("medcl_test_io was built without zlib: deflated NPZ members not tested");
#endif
}

TEST_CASE("npz: scipy's ecg.dat (MIT-BIH record 208)", "[io][npy][real]") {
  const auto path =
      medcl_test::find_real_file("ecg.dat", {"/usr/lib/python3/dist-packages/scipy/misc/ecg.dat"});
  if (path.empty()) {
    MEDCL_SKIP("scipy's ecg.dat not found (set MEDCL_DATA_DIR or install python3-scipy)");
  }
  const auto arrays = medcl::data::read_npz_file(path);
  REQUIRE(arrays.size() == 1);
  const auto& ecg = arrays.at("ecg");
  REQUIRE(ecg.dtype == NpyDtype::UInt16);
  REQUIRE(ecg.shape == std::vector<int64_t>{108000}); // 5 min at 360 Hz
  const auto t = medcl::data::to_tensor(ecg);
  REQUIRE(t.scalar_type() == torch::kInt);
  REQUIRE(t.slice(0, 0, 5).equal(torch::tensor({975, 981, 987, 989, 990}, torch::kInt)));
  REQUIRE(t.sum().item<int64_t>() == 107025651);
  REQUIRE(t.min().item<int32_t>() == 327);
  REQUIRE(t.max().item<int32_t>() == 1754);
  REQUIRE(medcl::data::read_npz_member(path, "ecg.npy").numel() == 108000);

  // Corrupted copies: truncated, a flipped byte in the compressed data.
  std::string bytes = medcl_test::read_bytes(path);
  REQUIRE_THROWS_WITH(
      parse_npz(bytes.substr(0, bytes.size() - 100), "ecg.dat"),
      Contains("ecg.dat: offset 0: not a zip archive"));
  bytes[5000] = static_cast<char>(bytes[5000] ^ 0x10);
  REQUIRE_THROWS_WITH(
      parse_npz(bytes, "ecg.dat"),
      Contains("ecg.dat") && (Contains("CRC mismatch") || Contains("deflated data is corrupt")));
}
