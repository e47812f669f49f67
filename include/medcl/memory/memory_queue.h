#pragma once

/// \file
/// A ring buffer of keys (MoCo's queue) that also keeps the pairing keys of what it holds, so
/// that pairing rules can be applied to queued negatives.

#include <medcl/pairing/sample_keys.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <map>
#include <string>
#include <vector>

namespace medcl {

/// FIFO queue of embeddings [size, dim] on any device, with each entry's pairing keys, held as
/// SampleKeys (patient, study, label, time, ...). The oldest entries are overwritten first; until
/// the queue is full only the filled part is returned.
///
/// Example:
///   medcl::MemoryQueue queue(65536, 128);
///   auto loss = F::info_nce_loss(q, k, queue.keys(), batch_keys, queue.sample_keys(), options);
///   queue.enqueue(k, batch_keys);                  // SampleKeys
///   queue.enqueue(k, {{"patient", patient_ids}});  // or by name
class MemoryQueue {
 public:
  MemoryQueue(int64_t size, int64_t dim, at::TensorOptions options = at::kFloat)
      : size_(size), dim_(dim), options_(options) {
    TORCH_CHECK(size > 0, "MemoryQueue: size must be > 0, got ", size);
    TORCH_CHECK(dim > 0, "MemoryQueue: dim must be > 0, got ", dim);
    buffer_ = at::zeros({size_, dim_}, options_);
  }

  int64_t size() const {
    return size_;
  }
  int64_t dim() const {
    return dim_;
  }
  /// Number of valid entries (at most size()).
  int64_t filled() const {
    return filled_;
  }
  bool is_full() const {
    return filled_ == size_;
  }
  at::Device device() const {
    return buffer_.device();
  }

  /// Adds a batch of keys [B, dim] (detached, converted to the queue's dtype and device) with
  /// their SampleKeys (every defined key is kept, each [B]). The first enqueue fixes which keys the
  /// queue keeps; later batches must carry the same ones. When B > size only the last size entries
  /// stay.
  void enqueue(const at::Tensor& keys, const SampleKeys& sample_keys) {
    enqueue(keys, sample_keys, {});
  }

  /// Adds a batch with its pairing keys by name ("patient", "study", ..., each [B]; "time"
  /// floating point, the others integer). Standard names are kept as SampleKeys; other names are
  /// kept too, under their own name (see pairing_key()).
  void enqueue(const at::Tensor& keys, const std::map<std::string, at::Tensor>& pairing_keys = {}) {
    SampleKeys standard;
    std::map<std::string, at::Tensor> other;
    for (const auto& kv : pairing_keys) {
      TORCH_CHECK(
          kv.second.defined(),
          "MemoryQueue::enqueue: pairing key '",
          kv.first,
          "' is an undefined tensor");
      Key k = Key::Instance;
      if (standard_key(kv.first, k)) {
        standard.get(k) = kv.second;
      } else {
        other[kv.first] = kv.second;
      }
    }
    enqueue(keys, standard, other);
  }

  /// The SampleKeys of the valid entries (every standard key the queue keeps).
  SampleKeys sample_keys() const {
    return keys_.map([&](const at::Tensor& t) { return t.slice(0, 0, filled_); });
  }

  /// The valid entries [filled(), dim] (a view of the buffer: clone it to keep a snapshot).
  at::Tensor keys() const {
    return buffer_.slice(0, 0, filled_);
  }
  /// The pairing key `name` of the valid entries [filled()].
  at::Tensor pairing_key(const std::string& name) const {
    const at::Tensor* t = find(name);
    TORCH_CHECK(
        t != nullptr,
        "MemoryQueue::pairing_key: the queue keeps no key '",
        name,
        "'; it keeps ",
        names());
    return t->slice(0, 0, filled_);
  }
  bool has_pairing_key(const std::string& name) const {
    return find(name) != nullptr;
  }

  /// The queue's whole state as named tensors ("buffer", "position" [2] = {ptr, filled} and
  /// "key.<name>" per pairing key), for checkpoints; `load_state` restores it exactly.
  std::map<std::string, at::Tensor> state() const {
    std::map<std::string, at::Tensor> out;
    out["buffer"] = buffer_.detach().cpu();
    out["position"] = at::tensor(std::vector<int64_t>{ptr_, filled_}, at::kLong);
    for (const auto& kv : named()) {
      out["key." + kv.first] = kv.second.detach().cpu();
    }
    return out;
  }

  /// Restores a state written by `state()` (onto this queue's device and dtype).
  void load_state(const std::map<std::string, at::Tensor>& state) {
    constexpr const char* fn = "MemoryQueue::load_state";
    auto get = [&](const std::string& name) {
      auto it = state.find(name);
      TORCH_CHECK(it != state.end() && it->second.defined(), fn, ": the state has no '", name, "'");
      return it->second;
    };
    auto buffer = get("buffer");
    TORCH_CHECK(
        buffer.dim() == 2 && buffer.size(0) == size_ && buffer.size(1) == dim_,
        fn,
        ": expected a buffer of shape [",
        size_,
        ", ",
        dim_,
        "], got ",
        buffer.sizes());
    auto position = get("position");
    TORCH_CHECK(
        position.numel() == 2 && position.scalar_type() == at::kLong,
        fn,
        ": 'position' must hold two int64 values, got ",
        position.sizes());
    const int64_t ptr = position[0].item<int64_t>();
    const int64_t filled = position[1].item<int64_t>();
    TORCH_CHECK(
        ptr >= 0 && ptr < size_ && filled >= 0 && filled <= size_,
        fn,
        ": position (",
        ptr,
        ", ",
        filled,
        ") is outside a queue of size ",
        size_);
    SampleKeys standard;
    std::map<std::string, at::Tensor> other;
    for (const auto& kv : state) {
      if (kv.first.rfind("key.", 0) == 0) {
        TORCH_CHECK(
            kv.second.dim() == 1 && kv.second.size(0) == size_,
            fn,
            ": pairing key '",
            kv.first.substr(4),
            "' must have shape [",
            size_,
            "], got ",
            kv.second.sizes());
        const std::string name = kv.first.substr(4);
        check_key_dtype(fn, name, kv.second.scalar_type());
        auto t = kv.second.to(buffer_.device()).clone();
        Key k = Key::Instance;
        if (standard_key(name, k)) {
          standard.get(k) = std::move(t);
        } else {
          other[name] = std::move(t);
        }
      }
    }
    buffer_ = buffer.to(buffer_.options()).clone();
    keys_ = std::move(standard);
    other_ = std::move(other);
    initialised_ = filled > 0 || !named().empty();
    ptr_ = ptr;
    filled_ = filled;
  }

  /// Moves the queue to `device` (a method moved with `.to(device)` moves its queues).
  void to(const at::Device& device) {
    options_ = options_.device(device);
    buffer_ = buffer_.to(device);
    keys_ = keys_.to(device);
    for (auto& kv : other_) {
      kv.second = kv.second.to(device);
    }
  }

  /// Empties the queue (the pairing-key names are forgotten too).
  void reset() {
    buffer_.zero_();
    keys_ = SampleKeys();
    other_.clear();
    initialised_ = false;
    ptr_ = 0;
    filled_ = 0;
  }

 private:
  // The standard key called `name`, if there is one.
  static bool standard_key(const std::string& name, Key& out) {
    for (Key k : all_keys()) {
      if (name == key_name(k)) {
        out = k;
        return true;
      }
    }
    return false;
  }

  // Every kept key (the whole ring) by name, in name order.
  std::map<std::string, at::Tensor> named() const {
    std::map<std::string, at::Tensor> out = other_;
    for (Key k : all_keys()) {
      if (keys_.has(k)) {
        out[key_name(k)] = keys_.get(k);
      }
    }
    return out;
  }

  // The kept key (the whole ring) called `name`, or nullptr.
  const at::Tensor* find(const std::string& name) const {
    Key k = Key::Instance;
    if (standard_key(name, k)) {
      return keys_.has(k) ? &keys_.get(k) : nullptr;
    }
    auto it = other_.find(name);
    return it == other_.end() ? nullptr : &it->second;
  }

  std::string names() const {
    std::string s;
    for (const auto& kv : named()) {
      s += (s.empty() ? "" : ", ") + kv.first;
    }
    return s.empty() ? "none" : s;
  }

  // Every pairing key but "time" is a class identity (patient, study, label, ...): a floating-point
  // one is refused, never truncated to integers (0.2 and 0.7 would both become 0), the refusal the
  // losses give for SampleKeys. Integer keys of any width are kept as int64.
  static void check_key_dtype(const char* fn, const std::string& name, at::ScalarType dtype) {
    if (name == "time") {
      return;
    }
    TORCH_CHECK(
        !at::isFloatingType(dtype) && !at::isComplexType(dtype),
        fn,
        ": pairing key '",
        name,
        "' must be an integer tensor (int64 ids), got ",
        dtype,
        ": it is a class identity (equal values are the same ",
        name,
        "), and floating-point values are refused rather than truncated (0.2 and 0.7 would both "
        "become 0). Give integer ids; only 'time' is floating point.");
  }

  // Adds a batch whose pairing keys are `standard` and `other` (names that are no standard key).
  void enqueue(
      const at::Tensor& keys,
      const SampleKeys& standard,
      const std::map<std::string, at::Tensor>& other) {
    TORCH_CHECK(
        keys.defined() && keys.dim() == 2 && keys.size(1) == dim_,
        "MemoryQueue::enqueue: expected keys of shape [B, ",
        dim_,
        "], got ",
        keys.defined() ? keys.sizes() : at::IntArrayRef{});
    const int64_t b = keys.size(0);
    if (b == 0) {
      return;
    }
    const auto ring = [&](Key k) {
      return k == Key::Time ? at::zeros({size_}, options_.dtype(at::kDouble))
                            : at::full({size_}, -1, options_.dtype(at::kLong));
    };
    if (!initialised_) {
      for (Key k : all_keys()) {
        if (standard.has(k)) {
          keys_.get(k) = ring(k);
        }
      }
      for (const auto& kv : other) {
        other_[kv.first] = ring(Key::Instance);
      }
      initialised_ = true;
    }
    // The batch's keys by name, checked against the kept ones.
    std::map<std::string, at::Tensor> given = other;
    for (Key k : all_keys()) {
      if (standard.has(k)) {
        given[key_name(k)] = standard.get(k);
      }
    }
    const size_t kept = named().size();
    TORCH_CHECK(
        given.size() == kept,
        "MemoryQueue::enqueue: the queue keeps ",
        kept,
        " pairing key(s) (",
        names(),
        "), got ",
        given.size());
    for (const auto& kv : given) {
      TORCH_CHECK(
          find(kv.first) != nullptr,
          "MemoryQueue::enqueue: unknown pairing key '",
          kv.first,
          "'; the queue keeps ",
          names());
      TORCH_CHECK(
          kv.second.defined() && kv.second.dim() == 1 && kv.second.size(0) == b,
          "MemoryQueue::enqueue: pairing key '",
          kv.first,
          "' must have shape [",
          b,
          "], got ",
          kv.second.defined() ? kv.second.sizes() : at::IntArrayRef{});
      check_key_dtype("MemoryQueue::enqueue", kv.first, kv.second.scalar_type());
    }
    c10::NoGradGuard no_grad;
    const int64_t take = std::min(b, size_);
    auto src = keys.detach().slice(0, b - take, b).to(buffer_.options());
    auto idx = at::remainder(at::arange(ptr_, ptr_ + take, options_.dtype(at::kLong)), size_);
    buffer_.index_copy_(0, idx, src);
    const auto store = [&](at::Tensor& kept_keys, const at::Tensor& batch_keys) {
      kept_keys.index_copy_(0, idx, batch_keys.slice(0, b - take, b).to(kept_keys.options()));
    };
    for (Key k : all_keys()) {
      if (keys_.has(k)) {
        store(keys_.get(k), standard.get(k));
      }
    }
    for (auto& kv : other_) {
      store(kv.second, other.at(kv.first));
    }
    ptr_ = (ptr_ + take) % size_;
    filled_ = std::min(size_, filled_ + take);
  }

  int64_t size_;
  int64_t dim_;
  at::TensorOptions options_;
  at::Tensor buffer_;
  // The pairing keys kept, each the whole ring [size]: the standard ones, and the other names
  // given to the string-map enqueue.
  SampleKeys keys_;
  std::map<std::string, at::Tensor> other_;
  bool initialised_ = false;
  int64_t ptr_ = 0;
  int64_t filled_ = 0;
};

} // namespace medcl
