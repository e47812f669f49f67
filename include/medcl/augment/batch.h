#pragma once

/// \file
/// What an augmentation works on: the modalities, the batch (values, mask, times) and the check
/// that a batch has its modality's layout.

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>
#include <utility>

namespace medcl {
namespace augment {

/// What a batch holds, which fixes its layout:
/// images [B, C, H, W] (Image2D, ChestRadiograph) or [B, C, D, H, W] (Image3D); signals
/// [B, leads, T] (ECG, EEG); tables [B, F] with an observed-mask (Tabular); expression [B, G]
/// (Omics); token ids [B, T] int64 with a valid-token mask (Text).
enum class Modality { Image2D, ChestRadiograph, Image3D, ECG, EEG, Tabular, Visits, Omics, Text };

inline const char* modality_name(Modality m) {
  switch (m) {
    case Modality::Image2D:
      return "image2d";
    case Modality::ChestRadiograph:
      return "chest_radiograph";
    case Modality::Image3D:
      return "image3d";
    case Modality::ECG:
      return "ecg";
    case Modality::EEG:
      return "eeg";
    case Modality::Tabular:
      return "tabular";
    case Modality::Visits:
      return "visits";
    case Modality::Omics:
      return "omics";
    case Modality::Text:
      return "text";
  }
  return "?";
}

/// Whether a modality is a physiological signal.
inline bool is_signal(Modality m) {
  return m == Modality::ECG || m == Modality::EEG;
}

/// A batch to augment: `values` in the modality's layout, `mask` where the modality has one
/// (Tabular, Visits: true where a value was observed; Text: true for real tokens), `times` for
/// visit sequences ([B, V], the visits' times; may be undefined).
struct Batch {
  Batch() = default;
  // NOLINTNEXTLINE(google-explicit-constructor): {values, mask, times} reads as the struct it is.
  Batch(at::Tensor values_, at::Tensor mask_ = {}, at::Tensor times_ = {})
      : values(std::move(values_)), mask(std::move(mask_)), times(std::move(times_)) {}
  at::Tensor values;
  at::Tensor mask;
  at::Tensor times;
};

/// Requires `b` to have the layout of modality `m` and no NaN (`who` names the caller).
inline void check_layout(const std::string& who, Modality m, const Batch& b) {
  const auto& x = b.values;
  TORCH_CHECK(x.defined(), who, ": the batch has no values");
  int64_t rank = 0;
  const char* layout = "";
  switch (m) {
    case Modality::Image2D:
    case Modality::ChestRadiograph:
      rank = 4;
      layout = "[B, C, H, W]";
      break;
    case Modality::Image3D:
      rank = 5;
      layout = "[B, C, D, H, W]";
      break;
    case Modality::ECG:
    case Modality::EEG:
      rank = 3;
      layout = "[B, leads, T]";
      break;
    case Modality::Tabular:
    case Modality::Omics:
      rank = 2;
      layout = "[B, features]";
      break;
    case Modality::Visits:
      rank = 3;
      layout = "[B, visits, features]";
      break;
    case Modality::Text:
      rank = 2;
      layout = "[B, T] token ids";
      break;
  }
  TORCH_CHECK(
      x.dim() == rank,
      who,
      ": a ",
      modality_name(m),
      " batch has layout ",
      layout,
      ", got shape ",
      x.sizes());
  if (m == Modality::Text) {
    TORCH_CHECK(
        x.scalar_type() == at::kLong, who, ": text token ids must be int64, got ", x.scalar_type());
  } else {
    TORCH_CHECK(
        at::isFloatingType(x.scalar_type()),
        who,
        ": ",
        modality_name(m),
        " values must be floating point, got ",
        x.scalar_type());
    // max() propagates NaN and is one vectorised pass without a temporary (isnan().any() is
    // about ten times slower on CPU).
    TORCH_CHECK(
        x.numel() == 0 || !std::isnan(x.max().item<double>()),
        who,
        ": the ",
        modality_name(m),
        " batch contains NaN");
  }
  if (b.mask.defined()) {
    TORCH_CHECK(
        b.mask.sizes() == x.sizes(),
        who,
        ": mask must have the values' shape ",
        x.sizes(),
        ", got ",
        b.mask.sizes());
    TORCH_CHECK(
        b.mask.scalar_type() == at::kBool, who, ": mask must be bool, got ", b.mask.scalar_type());
  }
  if (b.times.defined()) {
    TORCH_CHECK(
        m == Modality::Visits && b.times.dim() == 2 && b.times.size(0) == x.size(0) &&
            b.times.size(1) == x.size(1),
        who,
        ": times are for visit sequences, of shape [B, visits] = [",
        x.size(0),
        ", ",
        x.dim() > 1 ? x.size(1) : 0,
        "], got ",
        b.times.sizes());
  }
}

} // namespace augment
} // namespace medcl
