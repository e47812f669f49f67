// Per-rank augmentation streams (medcl/augment/streams.h): one stream per (seed, rank, step),
// reproducible, distinct where seed + rank would collide, and driving a policy's views.

#include "support.h"

#include <medcl/augment/signal.h>
#include <medcl/augment/streams.h>

#include "catch.h"

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

using medcl_test::Contains;
using namespace medcl::augment;

namespace {

Batch ecg_batch() {
  torch::manual_seed(17);
  return {torch::randn({4, 3, 200}), {}};
}

Policy jitter_policy(uint64_t own_seed) {
  std::vector<TransformPtr> steps{
      std::make_shared<AmplitudeScale>(0.5, 2.0), std::make_shared<GaussianJitter>(0.1)};
  return Policy(Modality::ECG, std::make_shared<Sequence>(steps), own_seed);
}

// The first view a policy gives after reseeding it for (seed, rank, step).
at::Tensor view_at(Policy& policy, const Batch& batch, uint64_t seed, int64_t rank, int64_t step) {
  reseed(policy, seed, rank, step);
  return policy.views(batch, 1)[0].values;
}

} // namespace

TEST_CASE("stream_seed: distinct per rank and per step, where seed + rank collides", "[augment]") {
  const uint64_t seed = 42;
  // SplitMix64's first output for state 0 (the published reference implementation), and a value
  // pinned here: the hash must not change between releases (resumed runs depend on it).
  CHECK(medcl::augment::detail::splitmix64(0) == 0xe220a8397b1dcdafULL);
  CHECK(stream_seed(42, 3, 5) == 0xaab9b8f05946561fULL);
  CHECK(stream_seed(seed, 3, 5) == stream_seed(seed, 3, 5));
  // The collisions of additive schemes.
  CHECK(stream_seed(seed, 1, 0) != stream_seed(seed, 0, 1));
  CHECK(stream_seed(seed + 1, 0, 0) != stream_seed(seed, 1, 0));
  CHECK(stream_seed(seed, 1, 2) != stream_seed(seed, 2, 1));
  // No collision over 64 ranks x 1000 steps (64-bit), none in the low 32 bits (what LibTorch's
  // CPU generator keeps) over 8 ranks x 100 steps.
  std::set<uint64_t> full;
  std::set<uint32_t> low;
  for (int64_t rank = 0; rank < 64; ++rank) {
    for (int64_t step = 0; step < 1000; ++step) {
      const uint64_t s = stream_seed(seed, rank, step);
      full.insert(s);
      if (rank < 8 && step < 100) {
        low.insert(static_cast<uint32_t>(s));
      }
    }
  }
  CHECK(full.size() == 64u * 1000u);
  CHECK(low.size() == 8u * 100u);
  CHECK_THROWS_WITH(stream_seed(seed, -1, 0), Contains("stream_seed: rank must be >= 0, got -1"));
  CHECK_THROWS_WITH(stream_seed(seed, 0, -3), Contains("stream_seed: step must be >= 0, got -3"));
}

TEST_CASE("stream_generator: the same triple draws the same numbers", "[augment]") {
  auto a = stream_generator(7, 1, 10);
  auto b = stream_generator(7, 1, 10);
  auto c = stream_generator(7, 2, 10);
  auto d = stream_generator(7, 1, 11);
  const auto xa = at::normal(0.0, 1.0, {64}, a);
  CHECK(xa.equal(at::normal(0.0, 1.0, {64}, b)));
  CHECK_FALSE(xa.equal(at::normal(0.0, 1.0, {64}, c)));
  CHECK_FALSE(xa.equal(at::normal(0.0, 1.0, {64}, d)));
  // reseed() on a used generator starts the stream again.
  reseed(a, 7, 1, 10);
  CHECK(xa.equal(at::normal(0.0, 1.0, {64}, a)));
  at::Generator none;
  CHECK_THROWS_WITH(reseed(none, 7, 1, 10), Contains("reseed: the generator is undefined"));
}

TEST_CASE("reseed(policy, seed, rank, step): views per rank and step, reproducible", "[augment]") {
  const auto batch = ecg_batch();
  // Two policies with different own seeds: once reseeded, only (seed, rank, step) matters.
  auto p = jitter_policy(1);
  auto q = jitter_policy(2);
  const auto v = view_at(p, batch, 99, 0, 3);
  CHECK(v.equal(view_at(q, batch, 99, 0, 3)));
  CHECK_FALSE(v.equal(batch.values));                 // the views are augmented
  CHECK_FALSE(v.equal(view_at(q, batch, 99, 1, 3)));  // another rank
  CHECK_FALSE(v.equal(view_at(q, batch, 99, 0, 4)));  // another step
  CHECK_FALSE(v.equal(view_at(q, batch, 100, 0, 3))); // another run seed
  // Without reseeding, the generator moves on; reseeding gives the step's views again, after
  // other steps and draws in between (what a resumed run does).
  const auto next = p.views(batch, 1)[0].values;
  CHECK_FALSE(next.equal(v));
  for (int64_t step = 4; step < 7; ++step) {
    view_at(p, batch, 99, 0, step);
  }
  CHECK(view_at(p, batch, 99, 0, 3).equal(v));
  // Two views of one step differ from each other, and both come back.
  reseed(p, 99, 2, 8);
  const auto two = p.views(batch, 2);
  CHECK_FALSE(two[0].values.equal(two[1].values));
  reseed(q, 99, 2, 8);
  const auto again = q.views(batch, 2);
  CHECK(again[0].values.equal(two[0].values));
  CHECK(again[1].values.equal(two[1].values));
}
