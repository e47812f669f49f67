// DICOM images and waveforms through DCMTK, compiled without LibTorch. Files are read into memory
// and parsed from a stream over that buffer, so that the file and the in-memory paths (and the fuzz
// target) share one code path, and a parse error can name the offset where DCMTK stopped.
//
// Element values are not loaded while the file is parsed: DCMTK reserves an element's declared
// length (up to 4 GiB, a 32-bit field) before it reads the value, so a corrupted length would make
// a small file ask for gigabytes. The stream below lets DCMTK defer every value (it skips the
// declared length and loads the value on access, from a second stream over the same buffer), and
// an element whose declared length runs past the end of the input is refused, with its tag, before
// any value is loaded.

#define MEDCL_DATA_NO_ATEN
#include <medcl/data/dicom.h>

#include "io_error.h"

#ifdef MEDCL_HAVE_DCMTK
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcelem.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrma.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcstack.h>
#include <dcmtk/dcmdata/dcxfer.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <type_traits>

namespace medcl {
namespace data {

#ifndef MEDCL_HAVE_DCMTK

namespace {
[[noreturn]] void no_dcmtk(const std::string& source) {
  detail::io_error(
      "dicom: cannot read '",
      source,
      "': medcl was built without DCMTK: install libdcmtk-dev and reconfigure");
}
} // namespace

DicomImage read_dicom_image(const std::string& path) {
  no_dcmtk(path);
}
DicomImage parse_dicom_image(const std::string&, const std::string& source) {
  no_dcmtk(source);
}
DicomWaveform read_dicom_waveform(const std::string& path) {
  no_dcmtk(path);
}
DicomWaveform parse_dicom_waveform(const std::string&, const std::string& source) {
  no_dcmtk(source);
}

#else

namespace {

// Whether a transfer syntax holds compressed pixel data in encapsulated form. DCMTK 3.6.9
// deprecates isEncapsulated() for this pair of questions; 3.6.7 (Debian 12) has only the former.
bool compressed_encapsulated(const DcmXfer& xfer) {
#if PACKAGE_VERSION_NUMBER >= 369
  return xfer.usesEncapsulatedFormat() && xfer.isPixelDataCompressed();
#else
  return xfer.isEncapsulated();
#endif
}

using detail::io_check;
using detail::io_error;

// A DCMTK input stream over a buffer that, unlike DcmInputBufferStream, can defer loading values:
// newFactory() hands DCMTK a factory that reopens the same buffer at the value's offset. When DCMTK
// then skips the value and the input ends first, the element's declared length is recorded as an
// overrun. The buffer must outlive the stream and every factory (the DcmFileFormat read from it).
class MemoryInputStream : public DcmInputStream {
 public:
  // An element whose declared length runs past the end of the input.
  struct Overrun {
    bool found = false;
    offile_off_t offset = 0; // of the value, in the (inflated) stream
    offile_off_t declared = 0;
    offile_off_t available = 0;
  };

  MemoryInputStream(const char* data, offile_off_t size)
      : DcmInputStream(&producer_), data_(data), size_(size) {
    producer_.setBuffer(data, size);
    producer_.setEos();
  }

  // A deflated dataset is inflated by a filter installed after the meta header; a factory then
  // reopens the buffer, skips the meta header, installs the same filter and skips the rest.
  OFCondition installCompressionFilter(E_StreamCompression filter_type) override {
    const OFCondition cond = DcmInputStream::installCompressionFilter(filter_type);
    if (cond.good()) {
      filter_ = filter_type;
      filter_at_ = tell();
    }
    return cond;
  }

  DcmInputStreamFactory* newFactory() const override {
    // DCMTK asks for a factory right before it skips a value it defers.
    value_pending_ = true;
    return new Factory(data_, size_, filter_, filter_at_, tell());
  }

  offile_off_t skip(offile_off_t length) override {
    const bool value = value_pending_;
    value_pending_ = false;
    const offile_off_t at = tell();
    const offile_off_t skipped = DcmInputStream::skip(length);
    if (value && skipped < length && !overrun_.found) {
      overrun_.found = true;
      overrun_.offset = at;
      overrun_.declared = length;
      overrun_.available = skipped;
    }
    return skipped;
  }

  const Overrun& overrun() const {
    return overrun_;
  }
  bool inflated() const {
    return filter_ != ESC_none;
  }

 private:
  class Factory : public DcmInputStreamFactory {
   public:
    Factory(
        const char* data,
        offile_off_t size,
        E_StreamCompression filter,
        offile_off_t filter_at,
        offile_off_t offset)
        : data_(data), size_(size), filter_(filter), filter_at_(filter_at), offset_(offset) {}
    DcmInputStream* create() const override {
      auto* stream = new MemoryInputStream(data_, size_);
      if (filter_ == ESC_none) {
        stream->skip(offset_);
      } else {
        stream->skip(filter_at_);
        stream->installCompressionFilter(filter_);
        stream->skip(offset_ - filter_at_);
      }
      return stream;
    }
    DcmInputStreamFactory* clone() const override {
      return new Factory(*this);
    }
    // The file factory's kind: a stream that can be recreated at will (nothing to clean up).
    DcmInputStreamFactoryType ident() const override {
      return DFT_DcmInputFileStreamFactory;
    }

   private:
    const char* data_;
    offile_off_t size_;
    E_StreamCompression filter_;
    offile_off_t filter_at_;
    offile_off_t offset_;
  };

  DcmBufferProducer producer_;
  const char* data_;
  offile_off_t size_;
  E_StreamCompression filter_ = ESC_none;
  offile_off_t filter_at_ = 0;
  mutable bool value_pending_ = false;
  Overrun overrun_;
};

// The element DCMTK was reading when the input ended: the last one read with that declared length.
std::string overrun_element(DcmFileFormat& file, offile_off_t declared) {
  std::string found;
  DcmStack stack;
  while (file.nextObject(stack, OFTrue).good()) {
    DcmObject* obj = stack.top();
    if (obj != nullptr && obj->isLeaf() && obj->getLengthField() == declared) {
      DcmTag tag = obj->getTag();
      char key[16];
      std::snprintf(key, sizeof key, "(%04X,%04X)", tag.getGroup(), tag.getElement());
      found = key;
      const char* name = tag.getTagName();
      if (name != nullptr && std::strcmp(name, DcmTag_ERROR_TagName) != 0) {
        found += std::string(" ") + name;
      }
    }
  }
  return found;
}

// A parsed file: the DCMTK object and its dataset.
struct Parsed {
  std::unique_ptr<DcmFileFormat> file;
  DcmDataset* dataset = nullptr;
  DicomKeys keys;
  E_TransferSyntax xfer = EXS_Unknown;
};

std::string get_string(DcmItem* item, const DcmTagKey& tag) {
  OFString s;
  if (item != nullptr && item->findAndGetOFString(tag, s).good()) {
    return std::string(s.c_str());
  }
  return {};
}

bool get_double(DcmItem* item, const DcmTagKey& tag, double& value, unsigned long pos = 0) {
  Float64 v = 0;
  if (item != nullptr && item->findAndGetFloat64(tag, v, pos).good()) {
    value = v;
    return true;
  }
  return false;
}

Parsed parse_file(const std::string& bytes, const std::string& source) {
  // A DICOM file has "DICM" after a 128-byte preamble; a bare dataset (some old files) starts
  // with a little-endian tag of group 0002 or 0008.
  const bool preamble = bytes.size() >= 132 && bytes.compare(128, 4, "DICM") == 0;
  const bool bare = bytes.size() >= 8 && (bytes[1] == 0 && (bytes[0] == 2 || bytes[0] == 8));
  io_check(
      preamble || bare,
      "dicom: ",
      source,
      ": offset 128: not a DICOM file (no 'DICM' after the 128-byte preamble, and no dataset at "
      "offset 0)");
  Parsed p;
  p.file = std::make_unique<DcmFileFormat>();
  MemoryInputStream stream(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  p.file->transferInit();
  // A maximum read length of 0 defers every value (see MemoryInputStream).
  const OFCondition cond = p.file->read(stream, EXS_Unknown, EGL_noChange, 0);
  p.file->transferEnd();
  const MemoryInputStream::Overrun& overrun = stream.overrun();
  if (overrun.found) {
    const std::string element = overrun_element(*p.file, overrun.declared);
    io_error(
        "dicom: ",
        source,
        ": element ",
        element.empty() ? std::string("?") : element,
        " declares ",
        static_cast<long long>(overrun.declared),
        " bytes at offset ",
        static_cast<long long>(overrun.offset),
        stream.inflated() ? " of the inflated dataset" : "",
        " but only ",
        static_cast<long long>(overrun.available),
        " remain (the file holds ",
        bytes.size(),
        "): the file is truncated or corrupt");
  }
  if (cond.bad()) {
    // A compressed transfer syntax is the likelier story than a corrupt file: say so.
    OFString uid;
    DcmMetaInfo* meta = p.file->getMetaInfo();
    if (meta != nullptr && meta->findAndGetOFString(DCM_TransferSyntaxUID, uid).good()) {
      const DcmXfer declared(uid.c_str());
      if (compressed_encapsulated(declared)) {
        io_error(
            "dicom: ",
            source,
            ": the file uses the compressed transfer syntax ",
            uid.c_str(),
            " (",
            declared.getXferName() ? declared.getXferName() : "?",
            "), which is not supported: decompress it first (e.g. dcmdjpeg / dcmdrle / gdcmconv "
            "-w); DCMTK stopped at offset ",
            static_cast<long long>(stream.tell()),
            ": ",
            cond.text());
      }
    }
    io_error(
        "dicom: ",
        source,
        ": offset ",
        static_cast<long long>(stream.tell()),
        ": cannot parse the file (DCMTK: ",
        cond.text(),
        ")");
  }
  p.dataset = p.file->getDataset();
  io_check(p.dataset != nullptr, "dicom: ", source, ": no dataset");
  p.xfer = p.dataset->getOriginalXfer();
  const DcmXfer xfer(p.xfer);
  p.keys.transfer_syntax = xfer.getXferID() ? xfer.getXferID() : "";
  p.keys.patient_id = get_string(p.dataset, DCM_PatientID);
  p.keys.study_instance_uid = get_string(p.dataset, DCM_StudyInstanceUID);
  p.keys.series_instance_uid = get_string(p.dataset, DCM_SeriesInstanceUID);
  p.keys.modality = get_string(p.dataset, DCM_Modality);
  return p;
}

void check_uncompressed(const Parsed& p, const std::string& source, const char* what) {
  const DcmXfer xfer(p.xfer);
  if (compressed_encapsulated(xfer)) {
    io_error(
        "dicom: ",
        source,
        ": the ",
        what,
        " uses the compressed transfer syntax ",
        xfer.getXferID() ? xfer.getXferID() : "?",
        " (",
        xfer.getXferName() ? xfer.getXferName() : "?",
        "), which is not supported: decompress it first (e.g. dcmdjpeg / dcmdrle / gdcmconv -w)");
  }
}

// Sign-extends or masks a stored value to `bits` bits.
int64_t stored_value(uint32_t raw, int bits, bool is_signed) {
  const uint32_t mask = bits >= 32 ? 0xFFFFFFFFu : ((1u << bits) - 1u);
  uint32_t v = raw & mask;
  if (is_signed && bits < 32 && (v >> (bits - 1)) != 0) {
    return static_cast<int64_t>(v) - (int64_t{1} << bits);
  }
  if (is_signed && bits == 32) {
    return static_cast<int32_t>(v);
  }
  return static_cast<int64_t>(v);
}

} // namespace

DicomImage parse_dicom_image(const std::string& bytes, const std::string& source) {
  Parsed p = parse_file(bytes, source);
  DcmDataset* ds = p.dataset;
  DcmElement* pixels = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, pixels).bad() || pixels == nullptr) {
    io_error(
        "dicom: ",
        source,
        ": no pixel data (7FE0,0010)",
        ds->tagExists(DCM_WaveformSequence) ? "; the file holds a waveform: use read_dicom_waveform"
                                            : "");
  }
  check_uncompressed(p, source, "pixel data");

  DicomImage im;
  im.keys = p.keys;
  Uint16 rows = 0;
  Uint16 cols = 0;
  Uint16 spp = 1;
  Uint16 bits_allocated = 0;
  Uint16 bits_stored = 0;
  Uint16 representation = 0;
  io_check(
      ds->findAndGetUint16(DCM_Rows, rows).good() && ds->findAndGetUint16(DCM_Columns, cols).good(),
      "dicom: ",
      source,
      ": the image lacks Rows (0028,0010) or Columns (0028,0011)");
  io_check(
      ds->findAndGetUint16(DCM_BitsAllocated, bits_allocated).good(),
      "dicom: ",
      source,
      ": the image lacks BitsAllocated (0028,0100)");
  ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
  if (ds->findAndGetUint16(DCM_BitsStored, bits_stored).bad()) {
    bits_stored = bits_allocated;
  }
  ds->findAndGetUint16(DCM_PixelRepresentation, representation);
  io_check(
      spp == 1,
      "dicom: ",
      source,
      ": SamplesPerPixel is ",
      spp,
      "; only grayscale images (1 sample per pixel) are supported");
  io_check(
      bits_allocated == 8 || bits_allocated == 16,
      "dicom: ",
      source,
      ": BitsAllocated is ",
      bits_allocated,
      "; supported: 8, 16");
  io_check(
      bits_stored >= 1 && bits_stored <= bits_allocated,
      "dicom: ",
      source,
      ": BitsStored is ",
      bits_stored,
      " with BitsAllocated ",
      bits_allocated);
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad()) {
    frames = 1;
  }
  io_check(
      frames >= 1 && rows >= 1 && cols >= 1,
      "dicom: ",
      source,
      ": bad image size (",
      frames,
      " frames of ",
      rows,
      " x ",
      cols,
      ")");
  im.rows = rows;
  im.columns = cols;
  im.frames = frames;
  im.bits_allocated = bits_allocated;
  im.bits_stored = bits_stored;
  im.is_signed = representation == 1;
  im.photometric_interpretation = get_string(ds, DCM_PhotometricInterpretation);
  for (unsigned long k = 0; k < 2; ++k) {
    double s = 0;
    if (get_double(ds, DCM_PixelSpacing, s, k)) {
      im.pixel_spacing.push_back(s);
    }
  }
  double slope = 1;
  double intercept = 0;
  if (get_double(ds, DCM_RescaleSlope, slope) && std::isfinite(slope) && slope != 0) {
    im.rescale_slope = slope;
  }
  if (get_double(ds, DCM_RescaleIntercept, intercept) && std::isfinite(intercept)) {
    im.rescale_intercept = intercept;
  }

  const uint64_t n = static_cast<uint64_t>(frames) * rows * cols;
  const uint64_t have_bytes = pixels->getLength();
  const uint64_t need_bytes = n * (bits_allocated / 8);
  io_check(
      have_bytes >= need_bytes,
      "dicom: ",
      source,
      ": pixel data has ",
      have_bytes,
      " bytes, ",
      frames,
      " frame(s) of ",
      rows,
      " x ",
      cols,
      " at ",
      bits_allocated,
      " bits need ",
      need_bytes);
  im.data.resize(static_cast<size_t>(n));
  if (bits_allocated == 8) {
    Uint8* v = nullptr;
    io_check(
        pixels->getUint8Array(v).good() && v != nullptr,
        "dicom: ",
        source,
        ": cannot access the 8-bit pixel data");
    for (size_t i = 0; i < im.data.size(); ++i) {
      const auto s = stored_value(v[i], bits_stored, im.is_signed);
      im.data[i] =
          static_cast<float>(static_cast<double>(s) * im.rescale_slope + im.rescale_intercept);
    }
  } else {
    Uint16* v = nullptr;
    io_check(
        pixels->getUint16Array(v).good() && v != nullptr,
        "dicom: ",
        source,
        ": cannot access the 16-bit pixel data");
    for (size_t i = 0; i < im.data.size(); ++i) {
      const auto s = stored_value(v[i], bits_stored, im.is_signed);
      im.data[i] =
          static_cast<float>(static_cast<double>(s) * im.rescale_slope + im.rescale_intercept);
    }
  }
  return im;
}

DicomWaveform parse_dicom_waveform(const std::string& bytes, const std::string& source) {
  Parsed p = parse_file(bytes, source);
  DcmDataset* ds = p.dataset;
  DcmSequenceOfItems* seq = nullptr;
  if (ds->findAndGetSequence(DCM_WaveformSequence, seq).bad() || seq == nullptr ||
      seq->card() == 0) {
    io_error(
        "dicom: ",
        source,
        ": no waveform (WaveformSequence (5400,0100) is absent or empty)",
        ds->tagExists(DCM_PixelData) ? "; the file holds an image: use read_dicom_image" : "");
  }
  check_uncompressed(p, source, "waveform");

  DicomWaveform w;
  w.keys = p.keys;
  for (unsigned long g = 0; g < seq->card(); ++g) {
    DcmItem* item = seq->getItem(g);
    const std::string where = "waveform group " + std::to_string(g + 1);
    DicomWaveformGroup group;
    group.label = get_string(item, DCM_MultiplexGroupLabel);
    Uint16 nch = 0;
    Uint32 nsamples = 0;
    Uint16 bits = 0;
    io_check(
        item->findAndGetUint16(DCM_NumberOfWaveformChannels, nch).good() &&
            item->findAndGetUint32(DCM_NumberOfWaveformSamples, nsamples).good(),
        "dicom: ",
        source,
        ": ",
        where,
        " lacks NumberOfWaveformChannels (003A,0005) or NumberOfWaveformSamples (003A,0010)");
    io_check(
        get_double(item, DCM_SamplingFrequency, group.sampling_frequency) &&
            std::isfinite(group.sampling_frequency) && group.sampling_frequency > 0,
        "dicom: ",
        source,
        ": ",
        where,
        " lacks a positive SamplingFrequency (003A,001A)");
    io_check(
        item->findAndGetUint16(DCM_WaveformBitsAllocated, bits).good(),
        "dicom: ",
        source,
        ": ",
        where,
        " lacks WaveformBitsAllocated (5400,1004)");
    const std::string interp = get_string(item, DCM_WaveformSampleInterpretation);
    io_check(
        (bits == 16 && (interp == "SS" || interp == "US")) ||
            (bits == 8 && (interp == "SB" || interp == "UB")),
        "dicom: ",
        source,
        ": ",
        where,
        ": ",
        bits,
        "-bit samples interpreted as '",
        interp,
        "' are not supported (supported: 16-bit SS/US, 8-bit SB/UB)");
    io_check(nch >= 1, "dicom: ", source, ": ", where, " has no channels");
    group.samples = nsamples;

    DcmElement* data = nullptr;
    io_check(
        item->findAndGetElement(DCM_WaveformData, data).good() && data != nullptr,
        "dicom: ",
        source,
        ": ",
        where,
        " has no WaveformData (5400,1010)");
    const uint64_t n = static_cast<uint64_t>(nch) * nsamples;
    io_check(
        data->getLength() >= n * (bits / 8),
        "dicom: ",
        source,
        ": ",
        where,
        ": WaveformData has ",
        data->getLength(),
        " bytes, ",
        nch,
        " channels x ",
        nsamples,
        " samples at ",
        bits,
        " bits need ",
        n * (bits / 8));

    // Channel definitions: names, sensitivity, baseline, units.
    DcmSequenceOfItems* defs = nullptr;
    item->findAndGetSequence(DCM_ChannelDefinitionSequence, defs);
    std::vector<double> scale(nch, 1.0);
    std::vector<double> offset(nch, 0.0);
    for (Uint16 c = 0; c < nch; ++c) {
      DcmItem* def = (defs != nullptr && c < defs->card()) ? defs->getItem(c) : nullptr;
      std::string name;
      DcmItem* src = nullptr;
      if (def != nullptr && def->findAndGetSequenceItem(DCM_ChannelSourceSequence, src).good()) {
        name = get_string(src, DCM_CodeMeaning);
      }
      if (name.empty()) {
        name = get_string(def, DCM_ChannelLabel);
      }
      if (name.empty()) {
        name = "channel " + std::to_string(c + 1);
      }
      group.channels.push_back(name);
      double sensitivity = 0;
      std::string unit;
      if (get_double(def, DCM_ChannelSensitivity, sensitivity) && std::isfinite(sensitivity)) {
        double correction = 1;
        if (!get_double(def, DCM_ChannelSensitivityCorrectionFactor, correction) ||
            !std::isfinite(correction)) {
          correction = 1;
        }
        double baseline = 0;
        if (!get_double(def, DCM_ChannelBaseline, baseline) || !std::isfinite(baseline)) {
          baseline = 0;
        }
        DcmItem* units = nullptr;
        if (def->findAndGetSequenceItem(DCM_ChannelSensitivityUnitsSequence, units).good()) {
          unit = get_string(units, DCM_CodeValue);
        }
        double to_unit = 1;
        if (unit == "uV") {
          to_unit = 1e-3;
          unit = "mV";
        } else if (unit == "V") {
          to_unit = 1e3;
          unit = "mV";
        }
        scale[c] = sensitivity * correction * to_unit;
        offset[c] = baseline * to_unit;
      }
      group.units.push_back(unit);
    }

    // Samples are interleaved (sample-major); the result is channel-major.
    group.data.resize(static_cast<size_t>(n));
    auto deinterleave = [&](const auto* v, bool is_signed) {
      using U = std::remove_cv_t<std::remove_pointer_t<decltype(v)>>;
      for (uint64_t s = 0; s < nsamples; ++s) {
        for (Uint16 c = 0; c < nch; ++c) {
          const U raw = v[s * nch + c];
          const double x =
              is_signed ? static_cast<double>(static_cast<std::make_signed_t<U>>(raw)) : raw;
          group.data[static_cast<size_t>(c * nsamples + s)] =
              static_cast<float>(x * scale[c] + offset[c]);
        }
      }
    };
    if (bits == 16) {
      Uint16* v = nullptr;
      io_check(
          data->getUint16Array(v).good() && v != nullptr,
          "dicom: ",
          source,
          ": ",
          where,
          ": cannot access the 16-bit WaveformData");
      deinterleave(v, interp == "SS");
    } else {
      Uint8* v = nullptr;
      io_check(
          data->getUint8Array(v).good() && v != nullptr,
          "dicom: ",
          source,
          ": ",
          where,
          ": cannot access the 8-bit WaveformData");
      deinterleave(v, interp == "SB");
    }
    w.groups.push_back(std::move(group));
  }

  // The rhythm group: labelled so, else the longest.
  int64_t best = -1;
  for (size_t g = 0; g < w.groups.size(); ++g) {
    if (w.groups[g].label == "RHYTHM") {
      best = static_cast<int64_t>(g);
      break;
    }
  }
  if (best < 0) {
    best = 0;
    for (size_t g = 1; g < w.groups.size(); ++g) {
      if (w.groups[g].samples > w.groups[static_cast<size_t>(best)].samples) {
        best = static_cast<int64_t>(g);
      }
    }
  }
  w.rhythm_group = best;
  return w;
}

DicomImage read_dicom_image(const std::string& path) {
  return parse_dicom_image(detail::read_whole_file("dicom", path), path);
}

DicomWaveform read_dicom_waveform(const std::string& path) {
  return parse_dicom_waveform(detail::read_whole_file("dicom", path), path);
}

#endif

} // namespace data
} // namespace medcl
