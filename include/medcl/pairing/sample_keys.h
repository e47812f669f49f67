#pragma once

/// \file
/// Per-sample keys carried with every batch: what a pairing strategy decides positives and
/// negatives from (instance, view, label, patient, study, site, lead/channel, time).

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <string>
#include <utility>
#include <vector>

namespace medcl {

/// The keys a sample can carry. All but `Time` are int64; `Time` is floating point (days, seconds:
/// the unit is the data set's, windows are given in the same unit).
enum class Key { Instance, View, Label, Patient, Study, Site, Lead, Time };

/// Name of a key as used in messages and reports: "instance", "view", ...
inline const char* key_name(Key k) {
  switch (k) {
    case Key::Instance:
      return "instance";
    case Key::View:
      return "view";
    case Key::Label:
      return "label";
    case Key::Patient:
      return "patient";
    case Key::Study:
      return "study";
    case Key::Site:
      return "site";
    case Key::Lead:
      return "lead";
    case Key::Time:
      return "time";
  }
  return "?";
}

/// All keys, in declaration order.
inline std::array<Key, 8> all_keys() {
  return {
      Key::Instance,
      Key::View,
      Key::Label,
      Key::Patient,
      Key::Study,
      Key::Site,
      Key::Lead,
      Key::Time};
}

/// Whether `k` is a class identity (every key but `time`): samples with equal values are "the
/// same" label, patient, study, site, instance, view or lead.
inline bool is_identity_key(Key k) {
  return k != Key::Time;
}

/// Requires a class-identity key (every key but `time`) to be int64. A floating-point key is
/// refused, never truncated to integers (labels {0.2, 0.7} would all become class 0), even when it
/// holds whole numbers only: telling that would need its values (a device synchronisation), and a
/// float key is far more often a score or a probability than ids stored as floats. Ids held as
/// floats are converted by the caller (`.round().to(at::kLong)`), who knows what they mean.
/// Messages start "<fn>: <what> key '<k>'", e.g. "supcon_loss: sample key 'label'".
inline void check_identity_key(const char* fn, const char* what, Key k, at::ScalarType dtype) {
  TORCH_CHECK(
      !at::isFloatingType(dtype) && !at::isComplexType(dtype),
      fn,
      ": ",
      what,
      " key '",
      key_name(k),
      "' must be int64, got the floating-point dtype ",
      dtype,
      ": '",
      key_name(k),
      "' is a class identity (equal values are the same ",
      key_name(k),
      "), and floating-point values are refused rather than truncated (0.2 and 0.7 would both "
      "become 0). Give integer ids (e.g. .round().to(at::kLong) if the values are whole numbers); "
      "only 'time' is floating point.");
  TORCH_CHECK(
      dtype == at::kLong,
      fn,
      ": ",
      what,
      " key '",
      key_name(k),
      "' must be int64, got ",
      dtype,
      " (convert it with .to(at::kLong))");
}

/// The keys of N samples: each is undefined (the batch does not carry it) or a 1-D tensor of
/// length N on the embeddings' device. A negative `label` means "unknown" (never equal to any
/// label, so never a label positive and never excluded as a same-label negative).
///
/// Example:
///   medcl::SampleKeys keys;
///   keys.patient = patient_ids;            // int64 [B]
///   keys.time = visit_day.to(at::kDouble); // [B]
struct SampleKeys {
  at::Tensor instance;
  at::Tensor view;
  at::Tensor label;
  at::Tensor patient;
  at::Tensor study;
  at::Tensor site;
  at::Tensor lead;
  at::Tensor time;

  const at::Tensor& get(Key k) const {
    switch (k) {
      case Key::Instance:
        return instance;
      case Key::View:
        return view;
      case Key::Label:
        return label;
      case Key::Patient:
        return patient;
      case Key::Study:
        return study;
      case Key::Site:
        return site;
      case Key::Lead:
        return lead;
      case Key::Time:
        return time;
    }
    TORCH_INTERNAL_ASSERT(false, "unknown key");
  }
  at::Tensor& get(Key k) {
    return const_cast<at::Tensor&>(static_cast<const SampleKeys&>(*this).get(k));
  }
  bool has(Key k) const {
    return get(k).defined();
  }

  /// Number of samples (from the first defined key), or -1 when no key is defined.
  int64_t size() const {
    for (Key k : all_keys()) {
      if (has(k)) {
        return get(k).size(0);
      }
    }
    return -1;
  }

  /// Names of the defined keys, comma-separated ("none" when empty).
  std::string names() const {
    std::string s;
    for (Key k : all_keys()) {
      if (has(k)) {
        s += (s.empty() ? "" : ", ") + std::string(key_name(k));
      }
    }
    return s.empty() ? "none" : s;
  }

  /// Requires every defined key to be 1-D of length `n` on `device`, int64 (time: floating); a
  /// floating-point identity key is refused (see check_identity_key). `fn` and `what` start the
  /// messages: "supcon_loss: sample key 'label' must be int64, ...".
  void check(const char* fn, const char* what, int64_t n, const at::Device& device) const {
    for (Key k : all_keys()) {
      if (!has(k)) {
        continue;
      }
      const auto& t = get(k);
      TORCH_CHECK(
          t.dim() == 1 && t.size(0) == n,
          fn,
          ": ",
          what,
          " key '",
          key_name(k),
          "' must have shape [",
          n,
          "], got ",
          t.sizes());
      if (k == Key::Time) {
        TORCH_CHECK(
            at::isFloatingType(t.scalar_type()),
            fn,
            ": ",
            what,
            " key 'time' must be floating point, got ",
            t.scalar_type());
      } else {
        check_identity_key(fn, what, k, t.scalar_type());
      }
      TORCH_CHECK(
          t.device() == device,
          fn,
          ": ",
          what,
          " key '",
          key_name(k),
          "' must be on the embeddings' device ",
          device,
          ", got ",
          t.device());
    }
  }

  /// Applies `f` to every defined key.
  template <typename F>
  SampleKeys map(F&& f) const {
    SampleKeys out;
    for (Key k : all_keys()) {
      if (has(k)) {
        out.get(k) = f(get(k));
      }
    }
    return out;
  }

  /// Rows `index` of every key.
  SampleKeys index_select(const at::Tensor& index) const {
    return map([&](const at::Tensor& t) { return t.index_select(0, index.to(t.device())); });
  }
  /// Every key moved to `device`.
  SampleKeys to(const at::Device& device) const {
    return map([&](const at::Tensor& t) { return t.to(device); });
  }
  /// The keys of `views` stacked copies (view-major: all samples of view 0, then view 1, ...),
  /// with `view` set to the copy's number and `instance` defaulting to the sample's index.
  SampleKeys repeat_views(int64_t views, const at::TensorOptions& long_options) const {
    const int64_t n = size();
    TORCH_CHECK(n >= 0, "SampleKeys::repeat_views: the keys are empty");
    auto out = map([&](const at::Tensor& t) { return t.repeat({views}); });
    auto lo = long_options.dtype(at::kLong);
    if (!has(Key::Instance)) {
      out.instance = at::arange(n, lo).repeat({views});
    }
    out.view = at::arange(views, lo).repeat_interleave(n);
    return out;
  }
};

/// Concatenates the keys of two sets of samples (both must carry the same keys).
inline SampleKeys cat_keys(const SampleKeys& a, const SampleKeys& b, const char* fn) {
  SampleKeys out;
  for (Key k : all_keys()) {
    TORCH_CHECK(
        a.has(k) == b.has(k),
        fn,
        ": cannot concatenate keys: '",
        key_name(k),
        "' is carried by one side only (",
        a.names(),
        " vs ",
        b.names(),
        ")");
    if (a.has(k)) {
      out.get(k) = at::cat({a.get(k), b.get(k).to(a.get(k).device())});
    }
  }
  return out;
}

} // namespace medcl
