#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/info_nce.h>
#include <medcl/memory/memory_queue.h>

#include "catch.h"

#include <cmath>
#include <functional>
#include <vector>

using medcl::NegativeWeighting;
using medcl_test::make_mask;
using medcl_test::RefWeighting;
using medcl_test::rel_err;
using medcl_test::weightings;
namespace F = medcl::functional;

TEST_CASE(
    "info_nce_loss equals MoCo's cross-entropy with the positive at index 0",
    "[losses][info_nce]") {
  torch::manual_seed(3);
  for (const auto& wt : weightings()) {
    auto q = torch::randn({5, 6}, torch::kDouble);
    auto k = torch::randn({5, 6}, torch::kDouble);
    auto queue = torch::randn({11, 6}, torch::kDouble);
    const double tau = 0.2;
    // Candidates per query: [k_i, queue...]; only column 0 is positive.
    const int64_t b = 5, m = 11;
    double total = 0;
    for (int64_t i = 0; i < b; ++i) {
      auto cands = at::cat({k.slice(0, i, i + 1), queue}, 0);
      auto pos = make_mask(1, m + 1, [](int64_t, int64_t j) { return j == 0; });
      auto cand = make_mask(1, m + 1, [](int64_t, int64_t) { return true; });
      total += medcl_test::ref_loss(q.slice(0, i, i + 1), cands, pos, cand, tau, wt.ref);
    }
    auto opts = medcl::InfoNCELossOptions().temperature(tau).weighting(wt.w);
    INFO(wt.w.describe());
    REQUIRE(F::info_nce_loss(q, k, queue, opts).item<double>() == Approx(total / b).epsilon(1e-11));
  }
  // Uniform weighting is exactly cross_entropy over [pos, negatives] logits.
  auto q = torch::randn({4, 3}, torch::kDouble);
  auto k = torch::randn({4, 3}, torch::kDouble);
  auto queue = torch::randn({6, 3}, torch::kDouble);
  auto qn = q / q.norm(2, 1, true), kn = k / k.norm(2, 1, true),
       nn = queue / queue.norm(2, 1, true);
  auto logits = at::cat({(qn * kn).sum(1, true), qn.mm(nn.t())}, 1) / 0.07;
  auto ce = at::cross_entropy_loss(logits, at::zeros({4}, at::kLong));
  REQUIRE(F::info_nce_loss(q, k, queue).item<double>() == Approx(ce.item<double>()).epsilon(1e-12));
}

TEST_CASE(
    "info_nce_loss without negative keys uses the other keys of the batch",
    "[losses][info_nce]") {
  torch::manual_seed(4);
  auto q = torch::randn({6, 4}, torch::kDouble);
  auto k = torch::randn({6, 4}, torch::kDouble);
  auto pos = make_mask(6, 6, [](int64_t i, int64_t j) { return i == j; });
  auto cand = make_mask(6, 6, [](int64_t, int64_t) { return true; });
  const double ref = medcl_test::ref_loss(q, k, pos, cand, 0.07, {});
  REQUIRE(F::info_nce_loss(q, k).item<double>() == Approx(ref).epsilon(1e-11));
}

TEST_CASE("InfoNCE names an empty queue, and an undefined one uses the batch", "[losses]") {
  torch::manual_seed(0);
  auto q = torch::randn({8, 16}), k = torch::randn({8, 16});
  medcl::MemoryQueue queue(32, 16);
  REQUIRE(queue.filled() == 0);
  const auto message =
      medcl_test::Contains("negative_keys has no rows (shape [0, 16]): an empty queue?");
  CHECK_THROWS_WITH(F::info_nce_loss(q, k, queue.keys()), message);
  medcl::SampleKeys keys;
  keys.patient = torch::arange(8, torch::kLong);
  CHECK_THROWS_WITH(
      F::info_nce_loss(
          q,
          k,
          queue.keys(),
          keys,
          queue.sample_keys(),
          medcl::InfoNCELossOptions().pairing(
              medcl::PairingStrategy::none().exclude_same_patient())),
      message);
  // Undefined: the other rows' keys are the negatives, as in MoCo's first step.
  CHECK(torch::allclose(F::info_nce_loss(q, k, torch::Tensor()), F::info_nce_loss(q, k)));
}
