#pragma once

/// \file
/// DICOM images and waveforms (12-lead ECG and others), read with DCMTK (Debian's libdcmtk-dev).
/// Images: size, frames, rescale slope / intercept, the pixels as float (rescaled), and the keys
/// that pairing needs (patient, study, series, modality). Waveforms: every multiplex group of the
/// WaveformSequence with its channels (lead names from the ChannelSourceSequence), sampling
/// frequency and values in physical units (µV / mV / V become mV). Errors are `c10::Error`s that
/// name the file (or "<memory>"), the byte offset where DCMTK stopped when parsing fails, and what
/// was wrong: not DICOM, no pixel data / no waveform, compressed transfer syntax (named).
///
/// Parsing is compiled in src/io/dicom.cpp without LibTorch; only the tensor helpers at the end
/// need ATen (sources that define MEDCL_DATA_NO_ATEN leave them out). When medcl is configured
/// without DCMTK the functions throw an error that says so.
///
/// Example:
/// ```
/// auto ecg = medcl::data::read_dicom_waveform("waveform_ecg.dcm");
/// auto leads = medcl::data::to_tensor(ecg.rhythm());  // [12, 10000] float, mV
/// ```

#include <cstdint>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// Identifiers shared by DICOM images and waveforms (empty when absent).
struct DicomKeys {
  std::string patient_id;          // (0010,0020)
  std::string study_instance_uid;  // (0020,000D)
  std::string series_instance_uid; // (0020,000E)
  std::string modality;            // (0008,0060)
  std::string transfer_syntax;     // UID of the file's transfer syntax
};

/// A grayscale DICOM image (one or more frames).
struct DicomImage {
  DicomKeys keys;
  int64_t rows = 0;
  int64_t columns = 0;
  int64_t frames = 1;
  int bits_allocated = 0;
  int bits_stored = 0;
  bool is_signed = false;
  std::string photometric_interpretation;
  /// Row and column spacing in mm (PixelSpacing); empty when absent.
  std::vector<double> pixel_spacing;
  /// value = stored · slope + intercept (RescaleSlope / RescaleIntercept; 1 and 0 when absent).
  double rescale_slope = 1;
  double rescale_intercept = 0;
  /// The rescaled pixels, frame by frame, row by row: frames · rows · columns values.
  std::vector<float> data;
};

/// One multiplex group of a WaveformSequence: channels sampled together.
struct DicomWaveformGroup {
  /// MultiplexGroupLabel, e.g. "RHYTHM" or "MEDIAN BEAT" (may be empty).
  std::string label;
  double sampling_frequency = 0;
  int64_t samples = 0;
  /// Per channel: the source's code meaning (e.g. "Lead I (Einthoven)", "Lead II"), else the
  /// ChannelLabel, else "channel <k>".
  std::vector<std::string> channels;
  /// Per channel: "mV" when the sensitivity unit was µV, mV or V (values converted), else the
  /// unit's code value as given, or "" when the channel has no sensitivity (raw values).
  std::vector<std::string> units;
  /// Values, channel by channel: channels.size() · samples values,
  /// value = (stored · sensitivity · correction + baseline) in `units`.
  std::vector<float> data;
};

/// The waveforms of a DICOM file.
struct DicomWaveform {
  DicomKeys keys;
  std::vector<DicomWaveformGroup> groups;
  /// Index into `groups` of the rhythm group: the one labelled "RHYTHM", else the longest.
  int64_t rhythm_group = 0;

  const DicomWaveformGroup& rhythm() const {
    return groups.at(static_cast<size_t>(rhythm_group));
  }
};

/// Reads the image of a DICOM file (uncompressed transfer syntaxes only).
DicomImage read_dicom_image(const std::string& path);
/// Parses the bytes of a DICOM file; `source` names it in error messages.
DicomImage parse_dicom_image(const std::string& bytes, const std::string& source = "<memory>");

/// Reads the WaveformSequence of a DICOM file.
DicomWaveform read_dicom_waveform(const std::string& path);
/// Parses the bytes of a DICOM file; `source` names it in error messages.
DicomWaveform parse_dicom_waveform(
    const std::string& bytes,
    const std::string& source = "<memory>");

} // namespace data
} // namespace medcl

#ifndef MEDCL_DATA_NO_ATEN
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace medcl {
namespace data {

/// The rescaled pixels as float. Shape: [frames, rows, columns].
inline at::Tensor to_tensor(const DicomImage& image) {
  TORCH_CHECK(
      static_cast<int64_t>(image.data.size()) == image.frames * image.rows * image.columns,
      "to_tensor(DicomImage): ",
      image.data.size(),
      " values for ",
      image.frames,
      " x ",
      image.rows,
      " x ",
      image.columns);
  auto out =
      at::empty({image.frames, image.rows, image.columns}, at::TensorOptions().dtype(at::kFloat));
  std::copy(image.data.begin(), image.data.end(), out.data_ptr<float>());
  return out;
}

/// The group's values as float. Shape: [channels, samples].
inline at::Tensor to_tensor(const DicomWaveformGroup& group) {
  const auto channels = static_cast<int64_t>(group.channels.size());
  TORCH_CHECK(
      static_cast<int64_t>(group.data.size()) == channels * group.samples,
      "to_tensor(DicomWaveformGroup): ",
      group.data.size(),
      " values for ",
      channels,
      " channels x ",
      group.samples,
      " samples");
  auto out = at::empty({channels, group.samples}, at::TensorOptions().dtype(at::kFloat));
  std::copy(group.data.begin(), group.data.end(), out.data_ptr<float>());
  return out;
}

} // namespace data
} // namespace medcl
#endif
