#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/nt_xent.h>
#include <medcl/losses/supcon.h>

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

TEST_CASE("supcon_loss equals Khosla et al.'s formula", "[losses][supcon]") {
  torch::manual_seed(5);
  const int64_t b = 6, v = 2;
  auto labels = torch::tensor({0, 1, 0, 2, 1, 0}, torch::kLong);
  for (const auto& wt : weightings()) {
    auto f = torch::randn({b, v, 5}, torch::kDouble);
    auto flat = f.transpose(0, 1).reshape({b * v, 5});
    auto lab = labels.repeat({v});
    auto la = lab.accessor<int64_t, 1>();
    auto pos =
        make_mask(b * v, b * v, [&](int64_t i, int64_t j) { return i != j && la[i] == la[j]; });
    auto cand = make_mask(b * v, b * v, [](int64_t i, int64_t j) { return i != j; });
    const double tau = 0.1, base_tau = 0.07;
    const double ref = tau / base_tau * medcl_test::ref_loss(flat, flat, pos, cand, tau, wt.ref);
    auto opts =
        medcl::SupConLossOptions().temperature(tau).base_temperature(base_tau).weighting(wt.w);
    INFO(wt.w.describe());
    REQUIRE(F::supcon_loss(f, labels, opts).item<double>() == Approx(ref).epsilon(1e-11));
  }
}

TEST_CASE("supcon_loss without labels is SimCLR over the views", "[losses][supcon]") {
  torch::manual_seed(6);
  auto z0 = torch::randn({8, 4}, torch::kDouble);
  auto z1 = torch::randn({8, 4}, torch::kDouble);
  auto opts = medcl::SupConLossOptions().temperature(0.3).base_temperature(0.3);
  const double sup = F::supcon_loss(at::stack({z0, z1}, 1), at::Tensor(), opts).item<double>();
  const double nt =
      F::nt_xent_loss(z0, z1, medcl::NTXentLossOptions().temperature(0.3)).item<double>();
  REQUIRE(sup == Approx(nt).epsilon(1e-12));
  // Three views: each anchor has two positives.
  auto z2 = torch::randn({8, 4}, torch::kDouble);
  auto f = at::stack({z0, z1, z2}, 1);
  auto flat = f.transpose(0, 1).reshape({24, 4});
  auto pos = make_mask(24, 24, [](int64_t i, int64_t j) { return i != j && i % 8 == j % 8; });
  auto cand = make_mask(24, 24, [](int64_t i, int64_t j) { return i != j; });
  REQUIRE(
      F::supcon_loss(f, at::Tensor(), opts).item<double>() ==
      Approx(medcl_test::ref_loss(flat, flat, pos, cand, 0.3, {})).epsilon(1e-11));
}

TEST_CASE("supcon_loss leaves out anchors without a positive, never NaN", "[losses][supcon]") {
  torch::manual_seed(7);
  // One view: labels 0 and 1 appear twice, label 2 once: its anchor has no positive.
  auto f = torch::randn({5, 1, 3}, torch::kDouble).requires_grad_(true);
  auto labels = torch::tensor({0, 1, 0, 1, 2}, torch::kLong);
  auto flat = f.detach().reshape({5, 3});
  auto la = labels.accessor<int64_t, 1>();
  auto pos = make_mask(5, 5, [&](int64_t i, int64_t j) { return i != j && la[i] == la[j]; });
  auto cand = make_mask(5, 5, [](int64_t i, int64_t j) { return i != j; });
  auto loss = F::supcon_loss(f, labels);
  REQUIRE(
      loss.item<double>() ==
      Approx(medcl_test::ref_loss(flat, flat, pos, cand, 0.07, {})).epsilon(1e-11));
  // All labels distinct: no row is left, the loss is 0, finite, and still has a graph.
  auto lonely = F::supcon_loss(f, torch::tensor({0, 1, 2, 3, 4}, torch::kLong));
  REQUIRE(lonely.item<double>() == 0.0);
  REQUIRE(lonely.requires_grad());
  lonely.backward();
  REQUIRE(f.grad().defined());
  REQUIRE(f.grad().abs().max().item<double>() == 0.0);
}

TEST_CASE(
    "supcon_loss with patient ids as labels pairs records of one patient",
    "[losses][supcon]") {
  torch::manual_seed(8);
  auto f = torch::randn({6, 2, 4}, torch::kDouble);
  auto patients = torch::tensor({10, 11, 10, 12, 11, 10}, torch::kLong);
  auto flat = f.transpose(0, 1).reshape({12, 4});
  auto lab = patients.repeat({2});
  auto la = lab.accessor<int64_t, 1>();
  auto pos = make_mask(12, 12, [&](int64_t i, int64_t j) { return i != j && la[i] == la[j]; });
  auto cand = make_mask(12, 12, [](int64_t i, int64_t j) { return i != j; });
  REQUIRE(
      F::supcon_loss(f, patients).item<double>() ==
      Approx(medcl_test::ref_loss(flat, flat, pos, cand, 0.07, {})).epsilon(1e-11));
}
