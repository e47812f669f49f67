#pragma once

/// \file
/// Reproducible augmentation streams for data-parallel training: a generator seed for each
/// (seed, rank, step), so that every rank draws its own augmentations, a step's views can be
/// drawn again from the step number alone (a resumed run needs no generator state), and no two
/// (rank, step) pairs share a stream the way `seed + rank` or `seed + step` would.

#include <medcl/augment/policy.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace medcl {
namespace augment {
namespace detail {

/// SplitMix64's output function (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): a bijection of 64-bit integers whose every output bit depends on
/// every input bit.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

} // namespace detail

/// The seed of the augmentation stream of `rank` at `step` in a run seeded with `seed`:
/// \f[ h = m(m(m(\text{seed}) \oplus \text{rank}) \oplus \text{step}) \f]
/// with \f$m\f$ SplitMix64's output function. For a fixed seed and rank, different steps give
/// different seeds, and for a fixed seed and step, different ranks do (m is a bijection); other
/// pairs coincide only by chance (2^-64 for the 64-bit value). LibTorch's CPU generator (mt19937)
/// keeps only the low 32 bits of a seed; those bits of h are as well mixed as the others, so two
/// CPU streams coincide with probability 2^-32 per pair (rare, and harmless beyond repeating one
/// step's draws on other data). CUDA's Philox generator uses all 64 bits.
///
/// Example:
///   const uint64_t s = medcl::augment::stream_seed(run_seed, group.rank(), step);
inline uint64_t stream_seed(uint64_t seed, int64_t rank, int64_t step) {
  TORCH_CHECK(rank >= 0, "stream_seed: rank must be >= 0, got ", rank);
  TORCH_CHECK(step >= 0, "stream_seed: step must be >= 0, got ", step);
  uint64_t h = detail::splitmix64(seed);
  h = detail::splitmix64(h ^ static_cast<uint64_t>(rank));
  return detail::splitmix64(h ^ static_cast<uint64_t>(step));
}

/// A new CPU generator seeded with `stream_seed(seed, rank, step)`: the same triple always gives
/// the same draws.
///
/// Example:
///   auto gen = medcl::augment::stream_generator(run_seed, group.rank(), step);
///   auto noise = at::normal(0.0, 1.0, {b, d}, gen);
inline at::Generator stream_generator(uint64_t seed, int64_t rank, int64_t step) {
  return at::detail::createCPUGenerator(stream_seed(seed, rank, step));
}

/// Reseeds `policy`'s generator for `device` with `stream_seed(seed, rank, step)`, so that its
/// next views are a function of (seed, rank, step) and of the batch only: call it before each
/// step's `policy.views(...)`. The policy's own seed is not used while it is reseeded this way,
/// and a resumed run needs no augmentation generator state in its checkpoint (the step number
/// fixes the views; tracking the generator with the trainer does no harm either).
///
/// Example:
///   for (int64_t step = first; step < steps; ++step) {
///     medcl::augment::reseed(policy, run_seed, group.rank(), step);
///     auto views = policy.views(batch, 2);    // this rank's views of its slice of the batch
///   }
inline void reseed(
    Policy& policy,
    uint64_t seed,
    int64_t rank,
    int64_t step,
    const at::Device& device = at::Device(at::kCPU)) {
  policy.generator(device).set_current_seed(stream_seed(seed, rank, step));
}

/// Reseeds any generator (a CPU or CUDA generator handle) with `stream_seed(seed, rank, step)`.
inline void reseed(at::Generator& generator, uint64_t seed, int64_t rank, int64_t step) {
  TORCH_CHECK(generator.defined(), "reseed: the generator is undefined");
  generator.set_current_seed(stream_seed(seed, rank, step));
}

} // namespace augment
} // namespace medcl
