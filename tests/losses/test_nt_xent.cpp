#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/clip.h>
#include <medcl/losses/info_nce.h>
#include <medcl/losses/nt_xent.h>
#include <medcl/losses/supcon.h>

#include "catch.h"

#include <cmath>
#include <functional>
#include <vector>

using medcl::NegativeWeighting;
using medcl_test::RefWeighting;
using medcl_test::rel_err;
namespace F = medcl::functional;

namespace {

using Mask = std::vector<std::vector<bool>>;

Mask make_mask(int64_t n, int64_t m, const std::function<bool(int64_t, int64_t)>& f) {
  Mask out(n, std::vector<bool>(m));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      out[i][j] = f(i, j);
    }
  }
  return out;
}

struct Weighted {
  NegativeWeighting w;
  RefWeighting ref;
};

std::vector<Weighted> weightings() {
  return {
      {NegativeWeighting::uniform(), {0, 0, true}},
      {NegativeWeighting::debiased(0.1), {0, 0.1, false}},
      {NegativeWeighting::hard(1.0), {1.0, 0, false}},
      {NegativeWeighting::hard_debiased(0.5, 0.05), {0.5, 0.05, false}},
  };
}

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

TEST_CASE("clip_loss is the mean of image->text and text->image cross-entropy", "[losses][clip]") {
  torch::manual_seed(9);
  for (const auto& wt : weightings()) {
    auto img = torch::randn({6, 5}, torch::kDouble);
    auto txt = torch::randn({6, 5}, torch::kDouble);
    const double scale = 1 / 0.07;
    auto pos = make_mask(6, 6, [](int64_t i, int64_t j) { return i == j; });
    auto cand = make_mask(6, 6, [](int64_t, int64_t) { return true; });
    const double ref = 0.5 *
        (medcl_test::ref_loss(img, txt, pos, cand, 1 / scale, wt.ref) +
         medcl_test::ref_loss(txt, img, pos, cand, 1 / scale, wt.ref));
    auto opts = medcl::CLIPLossOptions().weighting(wt.w);
    INFO(wt.w.describe());
    REQUIRE(F::clip_loss(img, txt, scale, opts).item<double>() == Approx(ref).epsilon(1e-11));
    // Symmetric in its two modalities.
    REQUIRE(F::clip_loss(txt, img, scale, opts).item<double>() == Approx(ref).epsilon(1e-11));
  }
  // open_clip's ClipLoss on normalised features, written with ATen's cross_entropy.
  auto img = torch::randn({5, 3}, torch::kDouble);
  auto txt = torch::randn({5, 3}, torch::kDouble);
  auto in = img / img.norm(2, 1, true), tn = txt / txt.norm(2, 1, true);
  auto logits = 20.0 * in.mm(tn.t());
  auto labels = torch::arange(5);
  auto ce =
      0.5 * (at::cross_entropy_loss(logits, labels) + at::cross_entropy_loss(logits.t(), labels));
  REQUIRE(F::clip_loss(img, txt, 20.0).item<double>() == Approx(ce.item<double>()).epsilon(1e-12));
}

TEST_CASE("CLIPLoss owns a clamped learnable log-scale", "[losses][clip]") {
  medcl::CLIPLoss criterion;
  REQUIRE(criterion->log_scale.item<double>() == Approx(std::log(1 / 0.07)).epsilon(1e-6));
  REQUIRE(criterion->log_scale.requires_grad());
  torch::NoGradGuard g;
  criterion->log_scale.fill_(10.0);
  REQUIRE(criterion->logit_scale().item<double>() == Approx(100.0).epsilon(1e-5));
}
