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

/// FIFO queue of embeddings [size, dim] on any device, with per-entry int64 pairing keys
/// (patient, study, label, ... by name). The oldest entries are overwritten first; until the
/// queue is full only the filled part is returned.
///
/// Example:
///   medcl::MemoryQueue queue(65536, 128);
///   auto loss = F::info_nce_loss(q, k, queue.keys());
///   queue.enqueue(k, {{"patient", patient_ids}});
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
  /// their pairing keys (each int64 [B]). The first enqueue fixes which pairing keys the queue
  /// keeps; later batches must carry the same names. When B > size only the last size entries stay.
  void enqueue(const at::Tensor& keys, const std::map<std::string, at::Tensor>& pairing_keys = {}) {
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
    if (!initialised_) {
      for (const auto& kv : pairing_keys) {
        tags_[kv.first] = kv.first == "time" ? at::zeros({size_}, options_.dtype(at::kDouble))
                                             : at::full({size_}, -1, options_.dtype(at::kLong));
      }
      initialised_ = true;
    }
    TORCH_CHECK(
        pairing_keys.size() == tags_.size(),
        "MemoryQueue::enqueue: the queue keeps ",
        tags_.size(),
        " pairing key(s) (",
        names(),
        "), got ",
        pairing_keys.size());
    for (const auto& kv : pairing_keys) {
      TORCH_CHECK(
          tags_.count(kv.first) == 1,
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
      TORCH_CHECK(
          kv.first == "time" || !at::isFloatingType(kv.second.scalar_type()),
          "MemoryQueue::enqueue: pairing key '",
          kv.first,
          "' must be an integer tensor, got ",
          kv.second.scalar_type());
    }
    c10::NoGradGuard no_grad;
    const int64_t take = std::min(b, size_);
    auto src = keys.detach().slice(0, b - take, b).to(buffer_.options());
    auto idx = at::remainder(at::arange(ptr_, ptr_ + take, options_.dtype(at::kLong)), size_);
    buffer_.index_copy_(0, idx, src);
    for (auto& kv : tags_) {
      auto v = pairing_keys.at(kv.first).slice(0, b - take, b).to(kv.second.options());
      kv.second.index_copy_(0, idx, v);
    }
    ptr_ = (ptr_ + take) % size_;
    filled_ = std::min(size_, filled_ + take);
  }

  /// Adds a batch with its SampleKeys (every defined key is kept, by its name).
  void enqueue(const at::Tensor& keys, const SampleKeys& sample_keys) {
    std::map<std::string, at::Tensor> named;
    for (Key k : all_keys()) {
      if (sample_keys.has(k)) {
        named[key_name(k)] = sample_keys.get(k);
      }
    }
    enqueue(keys, named);
  }

  /// The SampleKeys of the valid entries (the keys enqueued under the standard names).
  SampleKeys sample_keys() const {
    SampleKeys out;
    for (Key k : all_keys()) {
      auto it = tags_.find(key_name(k));
      if (it != tags_.end()) {
        out.get(k) = it->second.slice(0, 0, filled_);
      }
    }
    return out;
  }

  /// The valid entries [filled(), dim] (a view of the buffer: clone it to keep a snapshot).
  at::Tensor keys() const {
    return buffer_.slice(0, 0, filled_);
  }
  /// The pairing key `name` of the valid entries [filled()].
  at::Tensor pairing_key(const std::string& name) const {
    auto it = tags_.find(name);
    TORCH_CHECK(
        it != tags_.end(),
        "MemoryQueue::pairing_key: the queue keeps no key '",
        name,
        "'; it keeps ",
        names());
    return it->second.slice(0, 0, filled_);
  }
  bool has_pairing_key(const std::string& name) const {
    return tags_.count(name) == 1;
  }

  /// The queue's whole state as named tensors ("buffer", "position" [2] = {ptr, filled} and
  /// "key.<name>" per pairing key), for checkpoints; `load_state` restores it exactly.
  std::map<std::string, at::Tensor> state() const {
    std::map<std::string, at::Tensor> out;
    out["buffer"] = buffer_.detach().cpu();
    out["position"] = at::tensor(std::vector<int64_t>{ptr_, filled_}, at::kLong);
    for (const auto& kv : tags_) {
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
    std::map<std::string, at::Tensor> tags;
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
        tags[kv.first.substr(4)] = kv.second.to(buffer_.device()).clone();
      }
    }
    buffer_ = buffer.to(buffer_.options()).clone();
    tags_ = std::move(tags);
    initialised_ = filled > 0 || !tags_.empty();
    ptr_ = ptr;
    filled_ = filled;
  }

  /// Moves the queue to `device` (a method moved with `.to(device)` moves its queues).
  void to(const at::Device& device) {
    options_ = options_.device(device);
    buffer_ = buffer_.to(device);
    for (auto& kv : tags_) {
      kv.second = kv.second.to(device);
    }
  }

  /// Empties the queue (the pairing-key names are forgotten too).
  void reset() {
    buffer_.zero_();
    tags_.clear();
    initialised_ = false;
    ptr_ = 0;
    filled_ = 0;
  }

 private:
  std::string names() const {
    std::string s;
    for (const auto& kv : tags_) {
      s += (s.empty() ? "" : ", ") + kv.first;
    }
    return s.empty() ? "none" : s;
  }

  int64_t size_;
  int64_t dim_;
  at::TensorOptions options_;
  at::Tensor buffer_;
  std::map<std::string, at::Tensor> tags_;
  bool initialised_ = false;
  int64_t ptr_ = 0;
  int64_t filled_ = 0;
};

} // namespace medcl
