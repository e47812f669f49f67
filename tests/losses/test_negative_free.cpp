#include "support.h"

#include <medcl/losses/dino.h>
#include <medcl/losses/negative_free.h>
#include <medcl/losses/swav.h>

#include "catch.h"

#include <cmath>
#include <string>
#include <vector>

using medcl_test::Contains;
using medcl_test::rel_err;
namespace F = medcl::functional;

namespace {

double cos_loop(const at::Tensor& a, const at::Tensor& b, int64_t i) {
  double dot = 0, na = 0, nb = 0;
  for (int64_t k = 0; k < a.size(1); ++k) {
    const double x = a[i][k].item<double>(), y = b[i][k].item<double>();
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return dot / std::sqrt(na * nb);
}

} // namespace

TEST_CASE("byol_loss is 2 - 2 cos with a stop-gradient on the target", "[losses][byol]") {
  torch::manual_seed(21);
  auto p = torch::randn({5, 4}, torch::kDouble).requires_grad_(true);
  auto z = torch::randn({5, 4}, torch::kDouble).requires_grad_(true);
  double ref = 0;
  for (int64_t i = 0; i < 5; ++i)
    ref += 2 - 2 * cos_loop(p.detach(), z.detach(), i);
  auto loss = F::byol_loss(p, z);
  REQUIRE(loss.item<double>() == Approx(ref / 5).epsilon(1e-12));
  loss.backward();
  REQUIRE(p.grad().defined());
  REQUIRE_FALSE(z.grad().defined());
  auto fd = medcl_test::finite_difference(
      [&](const at::Tensor& x) { return F::byol_loss(x, z).item<double>(); }, p);
  REQUIRE(rel_err(p.grad(), fd) < 1e-6);
  REQUIRE(F::byol_loss(z, z).item<double>() == Approx(0.0).margin(1e-12));
  REQUIRE_THROWS_WITH(
      F::byol_loss(p, torch::randn({4, 4}, torch::kDouble)),
      Contains("byol_loss") && Contains("same shape"));
}

TEST_CASE("simsiam_loss is the symmetrised negative cosine", "[losses][simsiam]") {
  torch::manual_seed(22);
  auto p0 = torch::randn({6, 3}, torch::kDouble).requires_grad_(true);
  auto p1 = torch::randn({6, 3}, torch::kDouble);
  auto z0 = torch::randn({6, 3}, torch::kDouble).requires_grad_(true);
  auto z1 = torch::randn({6, 3}, torch::kDouble);
  double d01 = 0, d10 = 0;
  for (int64_t i = 0; i < 6; ++i) {
    d01 -= cos_loop(p0.detach(), z1, i) / 6;
    d10 -= cos_loop(p1, z0.detach(), i) / 6;
  }
  auto loss = F::simsiam_loss(p0, p1, z0, z1);
  REQUIRE(loss.item<double>() == Approx(0.5 * d01 + 0.5 * d10).epsilon(1e-12));
  loss.backward();
  REQUIRE_FALSE(z0.grad().defined());
  REQUIRE(F::simsiam_loss(p0, p1, p1, p0).item<double>() == Approx(-1.0).epsilon(1e-12));
  // Symmetric under swapping the two views.
  REQUIRE(
      F::simsiam_loss(p1, p0, z1, z0).item<double>() == Approx(loss.item<double>()).epsilon(1e-12));
}

TEST_CASE("simsiam and swav gradients match finite differences", "[losses][grad]") {
  torch::manual_seed(27);
  auto p0 = torch::randn({4, 3}, torch::kDouble);
  auto p1 = torch::randn({4, 3}, torch::kDouble);
  auto z0 = torch::randn({4, 3}, torch::kDouble);
  auto z1 = torch::randn({4, 3}, torch::kDouble);
  auto g = medcl_test::autograd_grad(
      [&](const at::Tensor& x) { return F::simsiam_loss(x, p1, z0, z1); }, p0);
  auto fd = medcl_test::finite_difference(
      [&](const at::Tensor& x) { return F::simsiam_loss(x, p1, z0, z1).item<double>(); }, p0);
  REQUIRE(rel_err(g, fd) < 1e-6);

  std::vector<at::Tensor> high{
      torch::randn({5, 4}, torch::kDouble), torch::randn({5, 4}, torch::kDouble)};
  std::vector<at::Tensor> low{torch::randn({5, 4}, torch::kDouble)};
  // Codes carry no gradient: the derivative of the loss w.r.t. a view is through log_softmax only.
  auto gl = medcl_test::autograd_grad(
      [&](const at::Tensor& x) { return F::swav_loss(high, {x}); }, low[0]);
  auto fdl = medcl_test::finite_difference(
      [&](const at::Tensor& x) { return F::swav_loss(high, {x}).item<double>(); }, low[0]);
  REQUIRE(rel_err(gl, fdl) < 1e-6);
}

TEST_CASE("negative-free and clustering losses are invariant to batch permutation", "[losses]") {
  torch::manual_seed(28);
  auto perm = torch::randperm(6);
  auto a = torch::randn({6, 5}, torch::kDouble), b = torch::randn({6, 5}, torch::kDouble);
  auto c = torch::randn({6, 5}, torch::kDouble), d = torch::randn({6, 5}, torch::kDouble);
  auto P = [&](const at::Tensor& t) { return t.index_select(0, perm); };
  REQUIRE(
      F::byol_loss(P(a), P(b)).item<double>() ==
      Approx(F::byol_loss(a, b).item<double>()).epsilon(1e-12));
  REQUIRE(
      F::simsiam_loss(P(a), P(b), P(c), P(d)).item<double>() ==
      Approx(F::simsiam_loss(a, b, c, d).item<double>()).epsilon(1e-12));
  auto center = torch::randn({5}, torch::kDouble);
  REQUIRE(
      F::dino_loss({P(a), P(b), P(c)}, {P(c), P(d)}, center).item<double>() ==
      Approx(F::dino_loss({a, b, c}, {c, d}, center).item<double>()).epsilon(1e-12));
  REQUIRE(
      F::swav_loss({P(a), P(b)}, {P(c)}).item<double>() ==
      Approx(F::swav_loss({a, b}, {c}).item<double>()).epsilon(1e-10));
}

TEST_CASE("negative-free and clustering losses accept bf16 and fp16", "[losses][dtype]") {
  torch::manual_seed(29);
  auto a = torch::randn({8, 6}), b = torch::randn({8, 6}), c = torch::randn({8, 6}),
       d = torch::randn({8, 6});
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto L = [&](const at::Tensor& t) { return t.to(dtype); };
    auto R = [&](const at::Tensor& t) {
      return t.to(dtype).to(torch::kFloat);
    }; // same rounded inputs
    INFO(dtype);
    // Computed in float32 from the rounded inputs: agreement to float32 rounding.
    REQUIRE(rel_err(F::byol_loss(L(a), L(b)), F::byol_loss(R(a), R(b))) < 1e-5);
    REQUIRE(
        rel_err(F::simsiam_loss(L(a), L(b), L(c), L(d)), F::simsiam_loss(R(a), R(b), R(c), R(d))) <
        1e-5);
    auto center = torch::zeros({6});
    REQUIRE(
        rel_err(
            F::dino_loss({L(a), L(b)}, {L(c), L(d)}, center),
            F::dino_loss({R(a), R(b)}, {R(c), R(d)}, center)) < 1e-5);
    REQUIRE(rel_err(F::swav_loss({L(a), L(b)}, {L(c)}), F::swav_loss({R(a), R(b)}, {R(c)})) < 1e-5);
    REQUIRE(F::swav_loss({L(a), L(b)}).scalar_type() == torch::kFloat);
  }
}

TEST_CASE("negative-free and clustering losses refuse non-finite inputs", "[losses][errors]") {
  auto a = torch::randn({4, 3});
  auto bad = a.clone();
  bad[1][2] = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_WITH(F::byol_loss(bad, a), Contains("byol_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(
      F::simsiam_loss(a, a, bad, a), Contains("simsiam_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(
      F::dino_loss({a, bad}, {a}, torch::zeros({3})),
      Contains("dino_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(F::swav_loss({a, a}, {bad}), Contains("swav_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(
      F::swav_loss({a, a}, {}, medcl::SwAVLossOptions().temperature(-1)), Contains("temperature"));
  REQUIRE_THROWS_WITH(
      F::dino_loss({a, a}, {a}, torch::zeros({3}), medcl::DINOLossOptions().student_temperature(0)),
      Contains("student_temperature"));
  REQUIRE_THROWS_WITH(F::dino_loss({}, {a}, torch::zeros({3})), Contains("empty list"));
}
