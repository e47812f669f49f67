#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/dino.h>
#include <medcl/losses/swav.h>

#include "catch.h"

#include <cmath>
#include <string>
#include <vector>

using medcl_test::Contains;
using medcl_test::cross_entropy_rows;
using medcl_test::rel_err;
namespace F = medcl::functional;

namespace {

// lightly's sinkhorn on exp(scores / eps), transcribed as plain loops in double.
at::Tensor sinkhorn_loops(const at::Tensor& scores, int iters, double eps) {
  const int64_t b = scores.size(0), k = scores.size(1);
  std::vector<std::vector<double>> q(k, std::vector<double>(b));
  double total = 0;
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t i = 0; i < b; ++i) {
      q[j][i] = std::exp(scores[i][j].item<double>() / eps);
      total += q[j][i];
    }
  }
  for (auto& row : q) {
    for (auto& v : row) {
      v /= total;
    }
  }
  for (int it = 0; it < iters; ++it) {
    for (int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (int64_t i = 0; i < b; ++i)
        s += q[j][i];
      for (int64_t i = 0; i < b; ++i)
        q[j][i] = q[j][i] / s / k;
    }
    for (int64_t i = 0; i < b; ++i) {
      double s = 0;
      for (int64_t j = 0; j < k; ++j)
        s += q[j][i];
      for (int64_t j = 0; j < k; ++j)
        q[j][i] = q[j][i] / s / b;
    }
  }
  auto out = torch::zeros({b, k}, torch::kDouble);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      out[i][j] = q[j][i] * b;
    }
  }
  return out;
}

} // namespace

TEST_CASE("DINOLoss and SwAVLoss check their options when they are built", "[losses][errors]") {
  REQUIRE_THROWS_WITH(
      medcl::DINOLoss(medcl::DINOLossOptions()),
      Contains("DINOLoss: output_dim must be > 0 (DINOLossOptions(output_dim)), got 0"));
  REQUIRE_THROWS_WITH(
      medcl::DINOLoss(medcl::DINOLossOptions(4).student_temperature(0)),
      Contains("DINOLoss: student_temperature must be finite and > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::DINOLoss(medcl::DINOLossOptions(4).warmup_teacher_temperature(-1)),
      Contains("DINOLoss: warmup_teacher_temperature must be finite and > 0, got -1"));
  REQUIRE_THROWS_WITH(
      medcl::SwAVLoss(medcl::SwAVLossOptions().temperature(0)),
      Contains("SwAVLoss: temperature must be finite and > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::SwAVLoss(medcl::SwAVLossOptions().sinkhorn(medcl::SinkhornOptions().iterations(0))),
      Contains("SwAVLoss: sinkhorn iterations must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::SwAVLoss(medcl::SwAVLossOptions().sinkhorn(medcl::SinkhornOptions().epsilon(0))),
      Contains("SwAVLoss: sinkhorn epsilon must be finite and > 0, got 0"));
}

TEST_CASE("the earlier DINO and SwAV option names stay for one release", "[losses][dino][swav]") {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  medcl::DINOLossModuleOptions old_dino(4);
  old_dino.teacher_temperature(0.05);
  medcl::DINOLoss criterion(old_dino);
  REQUIRE(criterion->options.output_dim() == 4);
  REQUIRE(criterion->options.teacher_temperature() == 0.05);
  auto opts = medcl::SwAVLossOptions().sinkhorn_iterations(7).sinkhorn_epsilon(0.2);
  REQUIRE(opts.sinkhorn().iterations() == 7);
  REQUIRE(opts.sinkhorn().epsilon() == 0.2);
  REQUIRE(opts.sinkhorn_iterations() == 7);
  REQUIRE(opts.sinkhorn_epsilon() == 0.2);
  torch::manual_seed(26);
  std::vector<at::Tensor> high{
      torch::randn({4, 3}, torch::kDouble), torch::randn({4, 3}, torch::kDouble)};
  std::vector<at::Tensor> queue{
      torch::randn({5, 3}, torch::kDouble), torch::randn({5, 3}, torch::kDouble)};
  // The earlier argument order (options before the queue) gives the same loss.
  auto old_order = F::swav_loss(high, {}, opts, queue).item<double>();
#pragma GCC diagnostic pop
  REQUIRE(old_order == F::swav_loss(high, {}, queue, opts).item<double>());
}

TEST_CASE("sinkhorn_knopp equals lightly's iterations and is stable", "[losses][swav]") {
  torch::manual_seed(24);
  auto scores = torch::randn({6, 4}, torch::kDouble) * 0.5;
  for (int iters : {1, 3, 5}) {
    auto q = F::sinkhorn_knopp(scores, medcl::SinkhornOptions().iterations(iters));
    REQUIRE(rel_err(q, sinkhorn_loops(scores, iters, 0.05)) < 1e-10);
    // Each sample's code sums to one.
    REQUIRE(rel_err(q.sum(1), torch::ones({6}, torch::kDouble)) < 1e-10);
  }
  // Scores of 30 / eps 0.01 would overflow exp: the log domain stays finite and equipartitioned.
  auto big = torch::randn({8, 5}) * 30.0;
  auto q = F::sinkhorn_knopp(big, medcl::SinkhornOptions().epsilon(0.01).iterations(50));
  REQUIRE(torch::isfinite(q).all().item<bool>());
  REQUIRE(rel_err(q.sum(1), torch::ones({8})) < 1e-5);
  // Enough iterations on moderate scores reach the equipartition: each prototype gets B/K.
  auto eq = F::sinkhorn_knopp(
      torch::randn({8, 5}, torch::kDouble), medcl::SinkhornOptions().iterations(200));
  REQUIRE(rel_err(eq.sum(0), torch::full({5}, 8.0 / 5.0, torch::kDouble)) < 1e-4);
  REQUIRE_THROWS_WITH(
      F::sinkhorn_knopp(scores, medcl::SinkhornOptions().iterations(0)),
      Contains("iterations must be >= 1"));
  REQUIRE_THROWS_WITH(
      F::sinkhorn_knopp(scores, medcl::SinkhornOptions().epsilon(0)), Contains("epsilon"));
}

TEST_CASE("swav_loss is the swapped prediction of Sinkhorn codes", "[losses][swav]") {
  torch::manual_seed(25);
  std::vector<at::Tensor> high{
      torch::randn({4, 3}, torch::kDouble), torch::randn({4, 3}, torch::kDouble)};
  std::vector<at::Tensor> low{torch::randn({4, 3}, torch::kDouble)};
  const double temp = 0.1;
  double loss = 0;
  for (int i = 0; i < 2; ++i) {
    auto q = sinkhorn_loops(high[i], 3, 0.05);
    double sub = 0;
    for (int v = 0; v < 2; ++v) {
      if (v != i)
        sub += cross_entropy_rows(q, high[v], temp);
    }
    sub += cross_entropy_rows(q, low[0], temp);
    loss += sub / 2;
  }
  REQUIRE(F::swav_loss(high, low).item<double>() == Approx(loss / 2).epsilon(1e-10));
  // With a queue the codes come from the concatenation, cut back to the batch.
  std::vector<at::Tensor> queue{
      torch::randn({5, 3}, torch::kDouble), torch::randn({5, 3}, torch::kDouble)};
  double lq = 0;
  for (int i = 0; i < 2; ++i) {
    auto q = sinkhorn_loops(at::cat({high[i], queue[i]}, 0), 3, 0.05).slice(0, 0, 4);
    lq += cross_entropy_rows(q, high[1 - i], temp);
  }
  REQUIRE(F::swav_loss(high, {}, queue).item<double>() == Approx(lq / 2).epsilon(1e-10));
  REQUIRE_THROWS_WITH(F::swav_loss({high[0]}), Contains("at least two views"));
  REQUIRE_THROWS_WITH(
      F::swav_loss(high, {torch::randn({4, 5}, torch::kDouble)}), Contains("prototype scores"));
}
