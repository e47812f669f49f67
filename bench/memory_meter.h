#pragma once

// Peak-memory measurement for the benchmarks: on CPU a counting wrapper around LibTorch's CPU
// allocator; on CUDA the caching allocator's own statistics.

#include <c10/core/Allocator.h>
#include <c10/core/Device.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#ifdef MEDCL_BENCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace medcl_bench {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define MEDCL_BENCH_ALLOC_CONST
#else
#define MEDCL_BENCH_ALLOC_CONST const
#endif

class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) MEDCL_BENCH_ALLOC_CONST override {
    auto inner = base_->allocate(n);
    void* data = inner.get();
    auto device = inner.device();
    auto* ctx = new Context{std::move(inner), static_cast<int64_t>(n), this};
    const int64_t now = current_.fetch_add(ctx->bytes) + ctx->bytes;
    int64_t prev = peak_.load();
    while (now > prev && !peak_.compare_exchange_weak(prev, now)) {
    }
    return {data, ctx, &release, device};
  }
  c10::DeleterFnPtr raw_deleter() const override {
    return nullptr;
  }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
#endif

  int64_t current() const {
    return current_.load();
  }
  int64_t peak() const {
    return peak_.load();
  }
  void reset_peak() {
    peak_.store(current_.load());
  }

 private:
  struct Context {
    c10::DataPtr inner;
    int64_t bytes;
    const CountingCpuAllocator* self;
  };
  static void release(void* p) {
    auto* ctx = static_cast<Context*>(p);
    ctx->self->current_.fetch_sub(ctx->bytes);
    delete ctx;
  }

  c10::Allocator* base_;
  mutable std::atomic<int64_t> current_{0};
  mutable std::atomic<int64_t> peak_{0};
};

/// Installs the counting allocator for CPU tensors (once) and measures peaks above a baseline.
class MemoryMeter {
 public:
  explicit MemoryMeter(c10::Device device) : device_(device) {
    if (device_.is_cpu()) {
      static CountingCpuAllocator* counting = [] {
        auto* a = new CountingCpuAllocator(c10::GetAllocator(c10::DeviceType::CPU));
        c10::SetAllocator(c10::DeviceType::CPU, a, /*priority=*/255);
        return a;
      }();
      cpu_ = counting;
    }
  }
  /// Starts a measurement: the peak is reset to what is allocated now.
  void start() {
    if (cpu_ != nullptr) {
      cpu_->reset_peak();
      baseline_ = cpu_->current();
    }
#ifdef MEDCL_BENCH_CUDA
    if (device_.is_cuda()) {
      c10::cuda::CUDACachingAllocator::resetPeakStats(device_.index());
      baseline_ = c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index())
                      .allocated_bytes[0]
                      .current;
    }
#endif
  }
  /// Bytes allocated at the peak since start(), beyond what was allocated at start().
  int64_t peak_bytes() const {
    if (cpu_ != nullptr) {
      return std::max<int64_t>(0, cpu_->peak() - baseline_);
    }
#ifdef MEDCL_BENCH_CUDA
    if (device_.is_cuda()) {
      return std::max<int64_t>(
          0,
          c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index()).allocated_bytes[0].peak -
              baseline_);
    }
#endif
    return -1;
  }

 private:
  c10::Device device_;
  CountingCpuAllocator* cpu_ = nullptr;
  int64_t baseline_ = 0;
};

} // namespace medcl_bench
