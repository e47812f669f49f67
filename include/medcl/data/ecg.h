#pragma once

/// \file
/// ECG adapter: multi-lead recordings (a DICOM 12-lead waveform, the MIT-BIH record) resampled to a
/// common rate and cut into single-lead windows with their keys (record as patient, lead, moment as
/// instance, time), split in time into a pretraining and a held-out part.

#include <medcl/core/checks.h>
#include <medcl/pairing/sample_keys.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// Resamples a [C, T] signal from `rate` to `target_rate` Hz: a moving average over
/// round(rate / target) samples against aliasing when downsampling, then linear interpolation.
///
/// Shape: [C, T] -> [C, floor(T · target / rate)].
inline at::Tensor resample_signal(const at::Tensor& signal, double rate, double target_rate) {
  TORCH_CHECK(
      signal.defined() && signal.dim() == 2 && signal.size(1) >= 2,
      "resample_signal: expected a [channels, T] signal with T >= 2, got ",
      signal.defined() ? signal.sizes() : at::IntArrayRef{});
  TORCH_CHECK(
      std::isfinite(rate) && rate > 0 && std::isfinite(target_rate) && target_rate > 0,
      "resample_signal: rates must be > 0, got ",
      rate,
      " and ",
      target_rate);
  auto y = signal.unsqueeze(0).to(at::kFloat);
  const auto k = static_cast<int64_t>(std::max(1.0, std::round(rate / target_rate)));
  if (k > 1) {
    y = at::avg_pool1d(at::constant_pad_nd(y, {k / 2, (k - 1) / 2}, 0), {k}, {1});
  }
  const auto t_out =
      static_cast<int64_t>(std::floor(static_cast<double>(signal.size(1)) * target_rate / rate));
  TORCH_CHECK(
      t_out >= 1,
      "resample_signal: the signal is too short for ",
      target_rate,
      " Hz, got ",
      signal.size(1),
      " sample(s) at ",
      rate,
      " Hz");
  return at::upsample_linear1d(y, {t_out}, /*align_corners=*/false).squeeze(0);
}

/// Single-lead windows of one or more recordings, with their keys.
struct EcgWindows {
  /// [N, 1, window] values, standardised per window when asked.
  std::vector<at::Tensor> windows;
  /// Record (patient) of each window.
  std::vector<int64_t> record;
  /// Lead of each window: an index into `lead_names` (leads of different records are distinct).
  std::vector<int64_t> lead;
  /// Moment of each window: windows of one record starting at the same sample share it, whatever
  /// their lead (the `instance` key of CLOCS's across-lead pairing).
  std::vector<int64_t> moment;
  /// Start of each window in seconds from the start of its record.
  std::vector<double> time;
  /// True for windows inside the first `train_share` of their record, false for those inside the
  /// rest; windows straddling the boundary are dropped, so the two parts share no sample.
  std::vector<bool> train;
  std::vector<std::string> lead_names;

  int64_t size() const {
    return static_cast<int64_t>(windows.size());
  }
  /// [N, 1, window].
  at::Tensor values() const {
    TORCH_CHECK(!windows.empty(), "EcgWindows::values: no windows");
    return at::stack(windows, 0);
  }
  /// Keys: patient = record, lead, instance = moment, time.
  SampleKeys keys() const {
    SampleKeys k;
    k.patient = at::tensor(record, at::kLong);
    k.lead = at::tensor(lead, at::kLong);
    k.instance = at::tensor(moment, at::kLong);
    k.time = at::tensor(time, at::kDouble);
    return k;
  }
  /// Rows of the training (true) or held-out (false) part.
  std::vector<int64_t> rows(bool training) const {
    std::vector<int64_t> r;
    for (size_t i = 0; i < train.size(); ++i) {
      if (train[i] == training) {
        r.push_back(static_cast<int64_t>(i));
      }
    }
    return r;
  }

  /// Cuts `signal` [leads, T] (at `rate` Hz) into windows of `window` samples every `stride`
  /// samples, each lead separately, as record `record_id` with lead names `names`.
  void add_record(
      const at::Tensor& signal,
      double rate,
      int64_t record_id,
      const std::vector<std::string>& names,
      int64_t window,
      int64_t stride,
      double train_share = 0.7,
      bool standardise = true) {
    constexpr const char* fn = "EcgWindows::add_record";
    TORCH_CHECK(
        signal.defined() && signal.dim() == 2,
        fn,
        ": expected a [leads, T] signal, got ",
        signal.defined() ? signal.sizes() : at::IntArrayRef{});
    TORCH_CHECK(
        static_cast<int64_t>(names.size()) == signal.size(0),
        fn,
        ": ",
        signal.size(0),
        " leads but ",
        names.size(),
        " names");
    TORCH_CHECK(
        window >= 2 && stride >= 1,
        fn,
        ": window must be >= 2 and stride >= 1, got window ",
        window,
        " and stride ",
        stride);
    TORCH_CHECK(
        window <= signal.size(1),
        fn,
        ": the window (",
        window,
        " samples) is longer than the record (",
        signal.size(1),
        ")");
    TORCH_CHECK(
        train_share > 0 && train_share < 1,
        fn,
        ": train_share must be in (0, 1), got ",
        train_share);
    TORCH_CHECK(
        medcl::detail::all_finite(signal),
        fn,
        ": the signal of record ",
        record_id,
        " has NaN or Inf");
    const int64_t t = signal.size(1);
    const auto split = static_cast<int64_t>(train_share * static_cast<double>(t));
    const int64_t base = moment.empty() ? 0 : *std::max_element(moment.begin(), moment.end()) + 1;
    const auto first_lead = static_cast<int64_t>(lead_names.size());
    for (int64_t s = 0, m = 0; s + window <= t; s += stride, ++m) {
      const bool in_train = s + window <= split;
      if (!in_train && s < split) {
        continue; // straddles the boundary
      }
      for (int64_t l = 0; l < signal.size(0); ++l) {
        auto seg = signal.slice(0, l, l + 1).slice(1, s, s + window).to(at::kFloat);
        if (standardise) {
          seg = (seg - seg.mean()) / seg.std().clamp_min(1e-3);
        }
        windows.push_back(seg);
        record.push_back(record_id);
        lead.push_back(first_lead + l);
        moment.push_back(base + m);
        time.push_back(static_cast<double>(s) / rate);
        train.push_back(in_train);
      }
    }
    lead_names.insert(lead_names.end(), names.begin(), names.end());
  }
};

} // namespace data
} // namespace medcl
