#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/nt_xent.h>

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

namespace {

double nt_xent_ref(const at::Tensor& z0, const at::Tensor& z1, double tau, const RefWeighting& w) {
  auto z = at::cat({z0, z1}, 0);
  const int64_t n = z.size(0), b = n / 2;
  auto pos = make_mask(n, n, [&](int64_t i, int64_t j) { return j == (i + b) % n; });
  auto cand = make_mask(n, n, [&](int64_t i, int64_t j) { return i != j; });
  return medcl_test::ref_loss(z, z, pos, cand, tau, w);
}

} // namespace

TEST_CASE("nt_xent_loss equals the loop reference for every weighting", "[losses][nt_xent]") {
  torch::manual_seed(1);
  for (const auto& wt : weightings()) {
    // 0.002 exceeds the shifted fast path's limit (scale 500): the running-maximum path.
    for (double tau : {0.5, 0.1, 0.002}) {
      if (tau < 0.01 && !wt.w.is_uniform()) {
        continue; // the loop reference overflows e^{(1+beta) / tau}
      }
      auto z0 = torch::randn({7, 5}, torch::kDouble);
      auto z1 = torch::randn({7, 5}, torch::kDouble);
      auto opts = medcl::NTXentLossOptions().temperature(tau).weighting(wt.w);
      const double got = F::nt_xent_loss(z0, z1, opts).item<double>();
      INFO(wt.w.describe() << " tau=" << tau);
      REQUIRE(got == Approx(nt_xent_ref(z0, z1, tau, wt.ref)).epsilon(1e-11));
    }
  }
}

TEST_CASE(
    "both uniform paths (shifted and running maximum) have exact gradients",
    "[losses][nt_xent][grad]") {
  torch::manual_seed(31);
  for (double tau : {0.3, 0.002}) {
    auto z0 = torch::randn({5, 3}, torch::kDouble);
    auto z1 = torch::randn({5, 3}, torch::kDouble);
    auto opts = medcl::NTXentLossOptions().temperature(tau);
    auto g = medcl_test::autograd_grad(
        [&](const at::Tensor& x) { return F::nt_xent_loss(x, z1, opts); }, z0);
    auto fd = medcl_test::finite_difference(
        [&](const at::Tensor& x) { return F::nt_xent_loss(x, z1, opts).item<double>(); }, z0, 1e-7);
    INFO("tau " << tau);
    REQUIRE(rel_err(g, fd) < 1e-5);
  }
}

TEST_CASE("nt_xent_loss matches a value computed by hand", "[losses][nt_xent]") {
  // B = 2, orthogonal unit vectors: z0 = {e1, e2}, z1 = {e1, e3}. Anchor e1 (row 0): positive
  // e1 (cos 1), negatives e2, e3 (cos 0); likewise for row 2. Rows 1 and 3: e2 vs positive e3
  // (cos 0) and negatives e1, e1.
  auto z0 = torch::tensor({{1.0, 0.0, 0.0}, {0.0, 1.0, 0.0}}, torch::kDouble);
  auto z1 = torch::tensor({{1.0, 0.0, 0.0}, {0.0, 0.0, 1.0}}, torch::kDouble);
  const double t = 0.5;
  const double row_a = -(1 / t) + std::log(std::exp(1 / t) + 2.0);
  const double row_b = -0.0 + std::log(3.0);
  const double expected = (2 * row_a + 2 * row_b) / 4;
  REQUIRE(F::nt_xent_loss(z0, z1).item<double>() == Approx(expected).epsilon(1e-12));
}

TEST_CASE("nt_xent_loss is invariant to batch permutation and view swap", "[losses][nt_xent]") {
  torch::manual_seed(2);
  auto z0 = torch::randn({9, 4}, torch::kDouble);
  auto z1 = torch::randn({9, 4}, torch::kDouble);
  auto perm = torch::randperm(9);
  for (const auto& wt : weightings()) {
    auto opts = medcl::NTXentLossOptions().weighting(wt.w);
    const double base = F::nt_xent_loss(z0, z1, opts).item<double>();
    REQUIRE(
        F::nt_xent_loss(z0.index_select(0, perm), z1.index_select(0, perm), opts).item<double>() ==
        Approx(base).epsilon(1e-12));
    REQUIRE(F::nt_xent_loss(z1, z0, opts).item<double>() == Approx(base).epsilon(1e-12));
    // Cosine similarity: the scale of an embedding does not matter.
    REQUIRE(F::nt_xent_loss(z0 * 3.0, z1, opts).item<double>() == Approx(base).epsilon(1e-12));
  }
}
