#include <medcl/data/dicom.h>
#include <medcl/data/nifti.h>

#include "io/real_files.h"

#include <torch/torch.h>
#include "catch.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using medcl_test::Contains;

namespace {

// Writes little- (or big-) endian values into a header buffer at fixed offsets.
struct Writer {
  std::string bytes;
  bool big = false;

  template <class T>
  void put(size_t at, T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    if (big) {
      std::reverse(b, b + sizeof(T));
    }
    std::memcpy(&bytes[at], b, sizeof(T));
  }
};

// A NIfTI-1 single file, 2 x 3 x 4 int16 voxels with value i + 10 j + 100 k, slope 2, inter 1,
// voxel sizes 2, 3, 4, a qform (identity rotation, offset 10, 20, 30) and an sform.
std::string make_nifti1(bool big_endian) {
  Writer w{std::string(352, '\0'), big_endian};
  w.put<int32_t>(0, 348);
  const int16_t dims[8] = {3, 2, 3, 4, 1, 1, 1, 1};
  for (int i = 0; i < 8; ++i) {
    w.put<int16_t>(40 + 2 * static_cast<size_t>(i), dims[i]);
  }
  w.put<int16_t>(70, 4); // DT_INT16
  w.put<int16_t>(72, 16);
  const float pix[8] = {1, 2, 3, 4, 1, 1, 1, 1};
  for (int i = 0; i < 8; ++i) {
    w.put<float>(76 + 4 * static_cast<size_t>(i), pix[i]);
  }
  w.put<float>(108, 352);
  w.put<float>(112, 2);
  w.put<float>(116, 1);
  std::memcpy(&w.bytes[148], "medcl test", 10);
  w.put<int16_t>(252, 1);
  w.put<int16_t>(254, 2);
  w.put<float>(268, 10);
  w.put<float>(272, 20);
  w.put<float>(276, 30);
  const float srow[12] = {-2, 0, 0, 5, 0, 3, 0, 6, 0, 0, 4, 7};
  for (int i = 0; i < 12; ++i) {
    w.put<float>(280 + 4 * static_cast<size_t>(i), srow[i]);
  }
  std::memcpy(&w.bytes[344], "n+1\0", 4);
  Writer data{std::string(2 * 24, '\0'), big_endian};
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 3; ++j) {
      for (int i = 0; i < 2; ++i) {
        data.put<int16_t>(
            2 * static_cast<size_t>(i + 2 * (j + 3 * k)),
            static_cast<int16_t>(i + 10 * j + 100 * k));
      }
    }
  }
  return w.bytes + data.bytes;
}

// A NIfTI-2 single file: 3 x 2 float64 voxels 0.5, 1.5, …, no scaling.
std::string make_nifti2() {
  Writer w{std::string(544, '\0'), false};
  w.put<int32_t>(0, 540);
  std::memcpy(&w.bytes[4], "n+2\0\r\n\032\n", 8);
  w.put<int16_t>(12, 64); // DT_FLOAT64
  w.put<int16_t>(14, 64);
  const int64_t dims[8] = {2, 3, 2, 1, 1, 1, 1, 1};
  for (int i = 0; i < 8; ++i) {
    w.put<int64_t>(16 + 8 * static_cast<size_t>(i), dims[i]);
  }
  for (int i = 0; i < 8; ++i) {
    w.put<double>(104 + 8 * static_cast<size_t>(i), 1.0);
  }
  w.put<int64_t>(168, 544);
  std::string out = w.bytes;
  for (int v = 0; v < 6; ++v) {
    double x = v + 0.5;
    out.append(reinterpret_cast<const char*>(&x), 8);
  }
  return out;
}

// Whether medcl was configured with libnifti / DCMTK; without them the readers must say so.
#ifdef MEDCL_TEST_HAVE_NIFTI
constexpr bool kHaveNifti = true;
#else
constexpr bool kHaveNifti = false;
#endif
#ifdef MEDCL_TEST_HAVE_DCMTK
constexpr bool kHaveDcmtk = true;
#else
constexpr bool kHaveDcmtk = false;
#endif

#define MEDCL_REQUIRE_NIFTI()                                                               \
  if (!kHaveNifti) {                                                                        \
    REQUIRE_THROWS_WITH(medcl::data::parse_nifti("x"), Contains("built without libnifti")); \
    MEDCL_SKIP("medcl was built without libnifti");                                         \
  }
#define MEDCL_REQUIRE_DCMTK()                                                                  \
  if (!kHaveDcmtk) {                                                                           \
    REQUIRE_THROWS_WITH(medcl::data::parse_dicom_image("x"), Contains("built without DCMTK")); \
    MEDCL_SKIP("medcl was built without DCMTK");                                               \
  }

} // namespace

TEST_CASE("nifti: hand-written NIfTI-1 (both byte orders) and NIfTI-2", "[io][nifti]") {
  MEDCL_REQUIRE_NIFTI()
  for (const bool big : {false, true}) {
    const auto v = medcl::data::parse_nifti(make_nifti1(big), "t.nii");
    INFO("big endian: " << big);
    REQUIRE(v.version == 1);
    REQUIRE(v.dims == std::vector<int64_t>{2, 3, 4});
    REQUIRE(v.voxel_size == std::vector<double>{2, 3, 4});
    REQUIRE(v.datatype == 4);
    REQUIRE(v.scl_slope == 2);
    REQUIRE(v.scl_inter == 1);
    REQUIRE(v.description == "medcl test");
    REQUIRE(v.qform_code == 1);
    REQUIRE(v.sform_code == 2);
    // qform: identity rotation scaled by the voxel sizes, then the offset.
    const std::array<double, 16> q = {2, 0, 0, 10, 0, 3, 0, 20, 0, 0, 4, 30, 0, 0, 0, 1};
    for (size_t i = 0; i < 16; ++i) {
      REQUIRE(v.qform[i] == Approx(q[i]).margin(1e-6));
    }
    REQUIRE(v.sform[0] == -2);
    REQUIRE(v.sform[3] == 5);
    REQUIRE(v.sform[11] == 7);
    REQUIRE(v.affine()[0] == -2); // the sform wins when its code is set
    const auto t = medcl::data::to_tensor(v);
    REQUIRE(t.sizes() == torch::IntArrayRef{4, 3, 2});
    // voxel (i=1, j=2, k=3) = (1 + 20 + 300) * 2 + 1
    REQUIRE(t[3][2][1].item<float>() == 643);
    REQUIRE(t[0][0][0].item<float>() == 1);
    REQUIRE(medcl::data::affine_tensor(v)[1][1].item<double>() == 3);
  }
  const auto v2 = medcl::data::parse_nifti(make_nifti2());
  REQUIRE(v2.version == 2);
  REQUIRE(v2.dims == std::vector<int64_t>{3, 2});
  REQUIRE(v2.data == std::vector<float>{0.5, 1.5, 2.5, 3.5, 4.5, 5.5});
  REQUIRE(v2.scl_slope == 1); // slope 0 in the header: no scaling
}

TEST_CASE("nifti: errors name the source, the offset and the problem", "[io][nifti]") {
  MEDCL_REQUIRE_NIFTI()
  using medcl::data::parse_nifti;
  const auto good = make_nifti1(false);
  REQUIRE_THROWS_WITH(parse_nifti("abc", "x.nii"), Contains("x.nii: not a NIfTI file (3 bytes"));
  std::string bad = good;
  bad[0] = 0x10;
  REQUIRE_THROWS_WITH(
      parse_nifti(bad, "x.nii"),
      Contains("x.nii: offset 0: not a NIfTI file (sizeof_hdr is 272, expected 348"));
  REQUIRE_THROWS_AS(parse_nifti(bad), c10::Error);
  REQUIRE_THROWS_WITH(
      parse_nifti(good.substr(0, 200)),
      Contains("offset 200: truncated header (a NIfTI-1 header has 348 bytes"));
  bad = good;
  bad[345] = 'x';
  REQUIRE_THROWS_WITH(
      parse_nifti(bad), Contains("offset 344: not a NIfTI-1 file (magic is 'nx1\\x00'"));
  bad = good;
  bad[344 + 1] = 'i';
  REQUIRE_THROWS_WITH(parse_nifti(bad), Contains("this is the header of a .hdr/.img pair"));
  bad = good;
  bad[70] = 32; // DT_COMPLEX64
  REQUIRE_THROWS_WITH(
      parse_nifti(bad, "x.nii"),
      Contains("x.nii: offset 70: unsupported datatype 32 (NIFTI_TYPE_COMPLEX64)"));
  bad = good;
  bad[40] = 9;
  REQUIRE_THROWS_WITH(parse_nifti(bad), Contains("offset 40: dim[0] is 9, expected 1 to 7"));
  bad = good;
  bad[44] = 0; // dim[2]
  REQUIRE_THROWS_WITH(parse_nifti(bad), Contains("offset 44: dim[2] is 0, expected at least 1"));
  REQUIRE_THROWS_WITH(
      parse_nifti(good.substr(0, good.size() - 1), "x.nii"),
      Contains("x.nii: offset 352: truncated data (24 voxels of NIFTI_TYPE_INT16 need 48 bytes, 47 "
               "present)"));
  REQUIRE_THROWS_WITH(
      medcl::data::read_nifti_file("/nonexistent/medcl/a.nii"),
      Contains("cannot open '/nonexistent/medcl/a.nii'"));
  // A gzip stream cut short.
  REQUIRE_THROWS_WITH(
      parse_nifti(std::string("\x1f\x8b\x08\x00\x00\x00", 6)), Contains("truncated gzip stream"));
}

TEST_CASE("nifti: Colin27 brain and the AAL atlas (mricron-data)", "[io][nifti][real]") {
  MEDCL_REQUIRE_NIFTI()
  const auto brain = medcl_test::find_real_file(
      "ch2better.nii.gz", {"/usr/share/mricron/templates/ch2better.nii.gz"});
  const auto atlas =
      medcl_test::find_real_file("aal.nii.gz", {"/usr/share/mricron/templates/aal.nii.gz"});
  if (brain.empty() || atlas.empty()) {
    MEDCL_SKIP("mricron-data's ch2better.nii.gz / aal.nii.gz not found (set MEDCL_DATA_DIR)");
  }
  const auto b = medcl::data::read_nifti_file(brain);
  REQUIRE(b.dims == std::vector<int64_t>{301, 370, 316});
  REQUIRE(b.voxel_size == std::vector<double>{0.5, 0.5, 0.5});
  REQUIRE(b.datatype == 2);
  REQUIRE(b.sform_code == 1);
  REQUIRE(b.affine()[3] == -75);
  REQUIRE(b.affine()[7] == -107);
  const auto t = medcl::data::to_tensor(b);
  REQUIRE(t.sizes() == torch::IntArrayRef{316, 370, 301});
  REQUIRE(t.sum(torch::kDouble).item<double>() == 1222013263.0);
  REQUIRE(t.max().item<float>() == 130);

  const auto a = medcl::data::read_nifti_file(atlas);
  REQUIRE(a.dims == std::vector<int64_t>{181, 217, 181});
  REQUIRE(a.sform_code == 4); // MNI-152
  const auto at = medcl::data::to_tensor(a);
  REQUIRE(at.max().item<float>() == 116); // 116 AAL regions
  REQUIRE(at.sum(torch::kDouble).item<double>() == 76656511.0);

  // Corrupted copies: a truncated .nii.gz, and an uncompressed copy with a flipped header byte.
  const std::string gz = medcl_test::read_bytes(atlas);
  const auto cut = medcl_test::temp_file("aal_cut.nii.gz");
  medcl_test::write_bytes(cut, gz.substr(0, gz.size() / 2));
  REQUIRE_THROWS_WITH(
      medcl::data::read_nifti_file(cut),
      Contains(cut + ": compressed offset") && Contains("truncated gzip stream"));
  std::remove(cut.c_str());
}

TEST_CASE("dicom: CT and MR slices (pydicom test files)", "[io][dicom][real]") {
  MEDCL_REQUIRE_DCMTK()
  const auto ct = medcl_test::find_real_file(
      "CT_small.dcm", {"/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm"});
  const auto mr = medcl_test::find_real_file(
      "MR_small.dcm", {"/usr/lib/python3/dist-packages/pydicom/data/test_files/MR_small.dcm"});
  if (ct.empty() || mr.empty()) {
    MEDCL_SKIP("pydicom's CT_small.dcm / MR_small.dcm not found (set MEDCL_DATA_DIR)");
  }
  const auto c = medcl::data::read_dicom_image(ct);
  REQUIRE(c.keys.modality == "CT");
  REQUIRE(c.keys.patient_id == "1CT1");
  REQUIRE(c.keys.transfer_syntax == "1.2.840.10008.1.2.1");
  REQUIRE(c.rows == 128);
  REQUIRE(c.columns == 128);
  REQUIRE(c.frames == 1);
  REQUIRE(c.is_signed);
  REQUIRE(c.rescale_slope == 1);
  REQUIRE(c.rescale_intercept == -1024);
  REQUIRE(c.pixel_spacing.size() == 2);
  REQUIRE(c.pixel_spacing[0] == Approx(0.661468));
  const auto t = medcl::data::to_tensor(c);
  REQUIRE(t.sizes() == torch::IntArrayRef{1, 128, 128});
  REQUIRE(t[0][0][0].item<float>() == 175 - 1024);
  // Stored values sum to 14826310 (computed independently from the raw bytes).
  REQUIRE(t.sum(torch::kDouble).item<double>() == 14826310.0 - 1024.0 * 128 * 128);

  const auto m = medcl::data::read_dicom_image(mr);
  REQUIRE(m.keys.modality == "MR");
  REQUIRE(m.rows == 64);
  REQUIRE(medcl::data::to_tensor(m).sum(torch::kDouble).item<double>() == 2125338.0);
  REQUIRE(m.data[0] == 905);

  // Errors: an image has no waveform; a truncated copy; a copy whose preamble marker is broken;
  // a copy that claims RLE compression.
  REQUIRE_THROWS_WITH(
      medcl::data::read_dicom_waveform(ct),
      Contains(ct + ": no waveform") && Contains("the file holds an image"));
  const std::string bytes = medcl_test::read_bytes(ct);
  REQUIRE_THROWS_WITH(
      medcl::data::parse_dicom_image(bytes.substr(0, bytes.size() - 1000), "ct.dcm"),
      Contains("ct.dcm"));
  std::string no_magic = bytes;
  no_magic[128] = 'X';
  REQUIRE_THROWS_WITH(
      medcl::data::parse_dicom_image(no_magic, "ct.dcm"),
      Contains("ct.dcm: offset 128: not a DICOM file"));
  REQUIRE_THROWS_WITH(
      medcl::data::parse_dicom_image("hello"), Contains("<memory>: offset 128: not a DICOM file"));
  std::string rle = bytes;
  const auto at = rle.find("1.2.840.10008.1.2.1");
  REQUIRE(at != std::string::npos);
  rle.replace(at, 19, "1.2.840.10008.1.2.5");
  REQUIRE_THROWS_WITH(
      medcl::data::parse_dicom_image(rle, "rle.dcm"),
      Contains("rle.dcm") && Contains("compressed transfer syntax 1.2.840.10008.1.2.5"));
}

TEST_CASE("dicom: 12-lead ECG waveform (pydicom test file)", "[io][dicom][real]") {
  MEDCL_REQUIRE_DCMTK()
  const auto path = medcl_test::find_real_file(
      "waveform_ecg.dcm",
      {"/usr/lib/python3/dist-packages/pydicom/data/test_files/waveform_ecg.dcm"});
  if (path.empty()) {
    MEDCL_SKIP("pydicom's waveform_ecg.dcm not found (set MEDCL_DATA_DIR)");
  }
  const auto w = medcl::data::read_dicom_waveform(path);
  REQUIRE(w.keys.modality == "ECG");
  REQUIRE(w.keys.patient_id == "642341");
  REQUIRE(w.groups.size() == 2);
  REQUIRE(w.groups[1].label == "MEDIAN BEAT");
  REQUIRE(w.groups[1].samples == 1200);
  const auto& r = w.rhythm();
  REQUIRE(r.label == "RHYTHM");
  REQUIRE(r.sampling_frequency == 1000);
  REQUIRE(r.samples == 10000); // 10 s
  REQUIRE(r.channels.size() == 12);
  REQUIRE(r.channels[0] == "Lead I (Einthoven)");
  REQUIRE(r.channels[1] == "Lead II");
  REQUIRE(r.units[0] == "mV");
  const auto t = medcl::data::to_tensor(r);
  REQUIRE(t.sizes() == torch::IntArrayRef{12, 10000});
  // Sensitivity 1.25 uV, baseline 0: lead I starts 80, 65, 50, 35, 37 (stored) -> mV.
  REQUIRE(t[0][0].item<float>() == Approx(0.1));
  REQUIRE(t[0][1].item<float>() == Approx(0.08125));
  REQUIRE(t[1][0].item<float>() == Approx(0.1125));
  REQUIRE(t[0].sum(torch::kDouble).item<double>() == Approx(926.61375).epsilon(1e-6));
  REQUIRE(t[2].sum(torch::kDouble).item<double>() == Approx(-18.02625).epsilon(1e-6));

  REQUIRE_THROWS_WITH(
      medcl::data::read_dicom_image(path),
      Contains(path + ": no pixel data") && Contains("holds a waveform"));
  const std::string bytes = medcl_test::read_bytes(path);
  REQUIRE_THROWS_WITH(
      medcl::data::parse_dicom_waveform(bytes.substr(0, bytes.size() / 2), "ecg.dcm"),
      Contains("ecg.dcm: element (5400,1010) WaveformData declares 240000 bytes"));

  // A WaveformData length patched to nearly 4 GiB: refused from the declared length, before DCMTK
  // reserves it (the reader used to allocate 4 GiB here and then fail).
  const auto at = bytes.find(std::string("\x00\x54\x10\x10OW\x00\x00", 8));
  REQUIRE(at != std::string::npos);
  std::string huge = bytes;
  huge.replace(at + 8, 4, std::string("\xF0\xFF\xFF\xFF", 4));
  const std::string remain = std::to_string(bytes.size() - (at + 12));
  for (const bool image : {false, true}) {
    INFO("image: " << image);
    REQUIRE_THROWS_WITH(
        image ? (void)medcl::data::parse_dicom_image(huge, "huge.dcm")
              : (void)medcl::data::parse_dicom_waveform(huge, "huge.dcm"),
        Contains(
            "huge.dcm: element (5400,1010) WaveformData declares 4294967280 bytes at offset " +
            std::to_string(at + 12) + " but only " + remain + " remain (the file holds " +
            std::to_string(bytes.size()) + ")"));
  }
}

TEST_CASE("dicom: files that are not DICOM", "[io][dicom]") {
  MEDCL_REQUIRE_DCMTK()
  REQUIRE_THROWS_WITH(
      medcl::data::parse_dicom_waveform(std::string(200, 'x'), "a.dcm"),
      Contains("a.dcm: offset 128: not a DICOM file"));
  REQUIRE_THROWS_WITH(
      medcl::data::read_dicom_image("/nonexistent/medcl/a.dcm"),
      Contains("/nonexistent/medcl/a.dcm") &&
          (Contains("cannot open") || Contains("built without DCMTK")));
}
