#include "support.h"

#include "losses/families.h"

#include <medcl/losses/clip.h>
#include <medcl/losses/info_nce.h>
#include <medcl/losses/nt_xent.h>
#include <medcl/losses/supcon.h>

#include "catch.h"

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

using medcl::EnginePath;
using medcl::NegativeWeighting;
using medcl::SimilarityEngineOptions;
using medcl_test::families;
using medcl_test::Family;
using medcl_test::rel_err;
namespace F = medcl::functional;

namespace {

std::vector<NegativeWeighting> weightings() {
  return {
      NegativeWeighting::uniform(),
      NegativeWeighting::debiased(0.1),
      NegativeWeighting::hard(1.0),
      NegativeWeighting::hard_debiased(0.5, 0.1)};
}

SimilarityEngineOptions dense() {
  return SimilarityEngineOptions().path(EnginePath::Dense);
}
SimilarityEngineOptions tiled(int64_t t) {
  return SimilarityEngineOptions().path(EnginePath::Tiled).tile_size(t);
}

std::vector<at::Tensor> grads_of(
    const Family& f,
    const std::vector<at::Tensor>& x,
    const SimilarityEngineOptions& e,
    const NegativeWeighting& w,
    at::Tensor* value) {
  std::vector<at::Tensor> leaves;
  for (const auto& t : x) {
    leaves.push_back(t.detach().clone().requires_grad_(true));
  }
  auto loss = f.loss(leaves, e, w);
  *value = loss.detach();
  loss.backward();
  std::vector<at::Tensor> g;
  for (const auto& l : leaves) {
    g.push_back(l.grad());
  }
  return g;
}

} // namespace

TEST_CASE(
    "gradients of every family and weighting match finite differences",
    "[losses][engine][grad]") {
  torch::manual_seed(11);
  for (const auto& fam : families()) {
    for (const auto& w : weightings()) {
      auto x = fam.inputs(torch::kDouble);
      at::Tensor value;
      auto g = grads_of(fam, x, tiled(4), w, &value);
      for (size_t k = 0; k < x.size(); ++k) {
        auto fd = medcl_test::finite_difference(
            [&](const at::Tensor& xk) {
              auto y = x;
              y[k] = xk;
              return fam.loss(y, dense(), w).item<double>();
            },
            x[k]);
        INFO(fam.name << " " << w.describe() << " input " << k);
        REQUIRE(g[k].defined());
        REQUIRE(rel_err(g[k], fd) < 1e-6);
      }
    }
  }
}

TEST_CASE("dense and tiled paths give the same values and gradients", "[losses][engine]") {
  torch::manual_seed(12);
  for (const auto& fam : families()) {
    for (const auto& w : weightings()) {
      for (auto dtype : {torch::kDouble, torch::kFloat}) {
        auto x = fam.inputs(dtype);
        at::Tensor vd;
        auto gd = grads_of(fam, x, dense(), w, &vd);
        for (int64_t tile : {1, 3, 5, 64}) {
          at::Tensor vt;
          auto gt = grads_of(fam, x, tiled(tile), w, &vt);
          const double tol = dtype == torch::kDouble ? 1e-10 : 1e-5;
          INFO(fam.name << " " << w.describe() << " " << dtype << " tile " << tile);
          REQUIRE(rel_err(vt, vd) < tol);
          for (size_t k = 0; k < gd.size(); ++k) {
            INFO("input " << k);
            REQUIRE(rel_err(gt[k], gd[k]) < tol);
          }
        }
      }
    }
  }
}

TEST_CASE("bf16 and fp16 inputs agree with float32 within tolerance", "[losses][engine][dtype]") {
  torch::manual_seed(13);
  for (const auto& fam : families()) {
    for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
      auto x32 = fam.inputs(torch::kFloat);
      std::vector<at::Tensor> xl;
      for (const auto& t : x32) {
        xl.push_back(t.dim() == 0 ? t : t.to(dtype));
      }
      std::vector<at::Tensor> x_ref;
      for (const auto& t : xl) {
        x_ref.push_back(t.dim() == 0 ? t : t.to(torch::kFloat)); // the same rounded inputs
      }
      at::Tensor v32, vlow;
      auto g32 = grads_of(fam, x_ref, tiled(4), NegativeWeighting::uniform(), &v32);
      auto glow = grads_of(fam, xl, tiled(4), NegativeWeighting::uniform(), &vlow);
      INFO(fam.name << " " << dtype);
      REQUIRE(vlow.scalar_type() == torch::kFloat); // accumulation dtype
      REQUIRE(std::isfinite(vlow.item<double>()));
      // On CPU the engine computes in float32 from the rounded inputs: close to float32.
      REQUIRE(rel_err(vlow, v32) < 1e-5);
      REQUIRE(glow[0].scalar_type() == dtype);
      // Gradients come back rounded to the input dtype (8 or 11 mantissa bits).
      REQUIRE(rel_err(glow[0], g32[0]) < (dtype == torch::kBFloat16 ? 1e-2 : 2e-3));
    }
  }
}

TEST_CASE(
    "the automatic path picks dense for small and tiled for large problems",
    "[losses][engine]") {
  torch::manual_seed(14);
  auto z0 = torch::randn({40, 8});
  auto z1 = torch::randn({40, 8});
  auto small_limit = SimilarityEngineOptions().dense_max_elements(10).tile_size(16);
  auto a = F::nt_xent_loss(z0, z1, medcl::NTXentLossOptions().engine(small_limit));
  auto b = F::nt_xent_loss(z0, z1);
  REQUIRE(rel_err(a, b) < 1e-6);
}

TEST_CASE("dense backward refuses a second pass, tiled allows it", "[losses][engine]") {
  auto z0 = torch::randn({6, 4}).requires_grad_(true);
  auto z1 = torch::randn({6, 4});
  auto loss = F::nt_xent_loss(z0, z1, medcl::NTXentLossOptions().engine(dense()));
  loss.backward({}, /*retain_graph=*/true);
  REQUIRE_THROWS_WITH(loss.backward(), medcl_test::Contains("ran twice"));
  z0.grad().zero_();
  auto lt = F::nt_xent_loss(z0, z1, medcl::NTXentLossOptions().engine(tiled(4)));
  lt.backward({}, true);
  auto g1 = z0.grad().clone();
  lt.backward();
  REQUIRE(rel_err(z0.grad(), 2 * g1) < 1e-6);
}

TEST_CASE("extreme temperatures and masked rows never give NaN", "[losses][engine]") {
  torch::manual_seed(15);
  auto z0 = torch::randn({16, 8}).requires_grad_(true);
  auto z1 = torch::randn({16, 8});
  for (double tau : {1e-3, 0.01, 100.0}) {
    for (const auto& w : weightings()) {
      for (const auto& e : {dense(), tiled(5)}) {
        auto loss = F::nt_xent_loss(
            z0, z1, medcl::NTXentLossOptions().temperature(tau).weighting(w).engine(e));
        loss.backward();
        INFO("tau " << tau << " " << w.describe());
        REQUIRE(std::isfinite(loss.item<double>()));
        REQUIRE(torch::isfinite(z0.grad()).all().item<bool>());
        z0.grad().zero_();
      }
    }
  }
  // A zero embedding stays zero after normalisation: finite loss.
  auto zero = torch::zeros({4, 3});
  REQUIRE(std::isfinite(F::nt_xent_loss(zero, torch::randn({4, 3})).item<double>()));
}

TEST_CASE("the CLIP scale receives its gradient", "[losses][clip][grad]") {
  torch::manual_seed(16);
  auto img = torch::randn({6, 4}, torch::kDouble);
  auto txt = torch::randn({6, 4}, torch::kDouble);
  for (const auto& w : weightings()) {
    for (double s : {3.0, 50.0}) {
      auto scale = torch::full({}, s, torch::kDouble).requires_grad_(true);
      F::clip_loss(img, txt, scale, medcl::CLIPLossOptions().weighting(w)).backward();
      const double h = 1e-6;
      const double fp =
          F::clip_loss(img, txt, s + h, medcl::CLIPLossOptions().weighting(w)).item<double>();
      const double fm =
          F::clip_loss(img, txt, s - h, medcl::CLIPLossOptions().weighting(w)).item<double>();
      INFO(w.describe() << " scale " << s);
      REQUIRE(
          scale.grad().item<double>() == Approx((fp - fm) / (2 * h)).epsilon(1e-5).margin(1e-9));
    }
  }
  // Through the module's log-scale.
  medcl::CLIPLoss criterion;
  auto loss = criterion(img.to(torch::kFloat), txt.to(torch::kFloat));
  loss.backward();
  REQUIRE(criterion->log_scale.grad().defined());
  REQUIRE(std::isfinite(criterion->log_scale.grad().item<double>()));
}

TEST_CASE("bad inputs give errors that name the function and the values", "[losses][errors]") {
  auto a = torch::randn({4, 3});
  using medcl_test::Contains;
  REQUIRE_THROWS_WITH(
      F::nt_xent_loss(a, torch::randn({5, 3})), Contains("nt_xent_loss") && Contains("same shape"));
  REQUIRE_THROWS_WITH(F::nt_xent_loss(torch::randn({4}), torch::randn({4})), Contains("rank 2"));
  REQUIRE_THROWS_WITH(F::nt_xent_loss(a, a.to(torch::kDouble)), Contains("same dtype"));
  REQUIRE_THROWS_WITH(
      F::nt_xent_loss(torch::zeros({0, 3}), torch::zeros({0, 3})), Contains("empty"));
  REQUIRE_THROWS_WITH(
      F::nt_xent_loss(a, a, medcl::NTXentLossOptions().temperature(0.0)),
      Contains("temperature") && Contains("> 0"));
  REQUIRE_THROWS_WITH(
      F::nt_xent_loss(a, a, medcl::NTXentLossOptions().temperature(std::nan(""))),
      Contains("temperature"));
  auto bad = a.clone();
  bad[0][0] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(F::nt_xent_loss(bad, a), Contains("NaN or Inf") && Contains("z0"));
  REQUIRE_NOTHROW(F::nt_xent_loss(bad, a, medcl::NTXentLossOptions().check_finite(false)));
  REQUIRE_THROWS_WITH(
      F::nt_xent_loss(torch::ones({2, 2}, torch::kLong), torch::ones({2, 2}, torch::kLong)),
      Contains("floating-point"));
  REQUIRE_THROWS_WITH(F::info_nce_loss(a, a, torch::randn({7, 5})), Contains("embedding size 3"));
  REQUIRE_THROWS_WITH(F::info_nce_loss(a, torch::randn({3, 3})), Contains("same shape"));
  REQUIRE_THROWS_WITH(F::supcon_loss(torch::randn({4, 1, 3})), Contains("at least 2 views"));
  REQUIRE_THROWS_WITH(
      F::supcon_loss(torch::randn({4, 2, 3}), torch::zeros({3}, torch::kLong)),
      Contains("labels of shape [4]"));
  REQUIRE_THROWS_WITH(
      F::supcon_loss(torch::randn({4, 2, 3}), torch::zeros({4})), Contains("int64 or int32"));
  REQUIRE_THROWS_WITH(F::supcon_loss(a), Contains("rank 3"));
  REQUIRE_THROWS_WITH(F::clip_loss(a, torch::randn({5, 3}), 10.0), Contains("same batch size"));
  REQUIRE_THROWS_WITH(F::clip_loss(a, torch::randn({4, 2}), 10.0), Contains("same embedding size"));
  REQUIRE_THROWS_WITH(F::clip_loss(a, a, -1.0), Contains("logit_scale must be finite and > 0"));
  REQUIRE_THROWS_WITH(NegativeWeighting::debiased(1.0), Contains("tau_plus must be in [0, 1)"));
  REQUIRE_THROWS_WITH(NegativeWeighting::hard(-1.0), Contains("beta must be finite and >= 0"));
  REQUIRE_THROWS_WITH(
      F::nt_xent_loss(
          a, a, medcl::NTXentLossOptions().engine(SimilarityEngineOptions().tile_size(-2))),
      Contains("tile_size"));
}

TEST_CASE("upstream gradients of any sign scale the engine's gradients", "[losses][engine][grad]") {
  torch::manual_seed(17);
  for (const auto& fam : families()) {
    for (const auto& w : {NegativeWeighting::uniform(), NegativeWeighting::hard(0.5)}) {
      for (const auto& e : {dense(), tiled(4)}) {
        auto x = fam.inputs(torch::kDouble);
        at::Tensor v;
        auto base = grads_of(fam, x, e, w, &v);
        for (double c : {-2.5, 0.0}) {
          Family scaled = fam;
          scaled.loss = [&](const std::vector<at::Tensor>& y,
                            const SimilarityEngineOptions& eo,
                            const NegativeWeighting& wo) { return c * fam.loss(y, eo, wo); };
          auto g = grads_of(scaled, x, e, w, &v);
          INFO(fam.name << " " << w.describe() << " factor " << c);
          for (size_t k = 0; k < g.size(); ++k) {
            if (c == 0.0) {
              REQUIRE(g[k].abs().max().item<double>() == 0.0);
            } else {
              REQUIRE(rel_err(g[k], c * base[k]) < 1e-12);
            }
          }
        }
      }
    }
  }
}

namespace {

// A rule written outside medcl, as docs/extending.md shows: row i's positives are the columns
// whose index has the same parity as i, except column i itself (which is excluded).
class ParityRule : public medcl::PairRule {
 public:
  explicit ParityRule(int64_t n) : n_(n) {}
  int64_t rows() const override {
    return n_;
  }
  int64_t cols() const override {
    return n_;
  }
  medcl::PairTile tile(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const override {
    auto r = torch::arange(r0, r1).unsqueeze(1);
    auto c = torch::arange(c0, c1).unsqueeze(0);
    medcl::PairTile t;
    t.excluded = r.eq(c);
    t.positive = torch::remainder(r - c, 2).eq(0).logical_and(t.excluded.logical_not());
    return t;
  }
  std::string describe() const override {
    return "same parity";
  }

 private:
  int64_t n_;
};

// The loss of ParityRule by its definition, in double.
double parity_reference(const at::Tensor& z, double temperature) {
  auto x = z / z.norm(2, 1, true);
  auto l = x.mm(x.t()) / temperature;
  const int64_t n = z.size(0);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    double pos_sum = 0, den = 0;
    int64_t pos_n = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j == i) {
        continue;
      }
      const double v = l[i][j].item<double>();
      den += std::exp(v);
      if ((i - j) % 2 == 0) {
        pos_sum += v;
        ++pos_n;
      }
    }
    total += std::log(den) - pos_sum / static_cast<double>(pos_n);
  }
  return total / static_cast<double>(n);
}

} // namespace

TEST_CASE(
    "a loss written on the public engine API has dense and tiled paths and gradients",
    "[losses][engine][extending]") {
  torch::manual_seed(3);
  auto z = torch::randn({10, 4}, torch::kDouble).requires_grad_(true);
  auto run = [&](EnginePath path) {
    auto x = medcl::l2_normalize(z, 1e-12);
    return medcl::contrast_loss(medcl::make_contrast_problem(
        "parity_loss",
        x,
        x,
        std::make_shared<ParityRule>(10),
        0.3,
        NegativeWeighting::uniform(),
        SimilarityEngineOptions().path(path).tile_size(3),
        medcl::matmul_dtype(z)));
  };
  auto dense = run(EnginePath::Dense);
  REQUIRE(dense.item<double>() == Approx(parity_reference(z.detach(), 0.3)).epsilon(1e-12));
  auto g_dense = torch::autograd::grad({dense}, {z})[0];
  auto tiled = run(EnginePath::Tiled);
  REQUIRE(tiled.item<double>() == Approx(dense.item<double>()).epsilon(1e-12));
  auto g_tiled = torch::autograd::grad({tiled}, {z})[0];
  REQUIRE(rel_err(g_tiled, g_dense) < 1e-10);
  auto g_fd = medcl_test::finite_difference(
      [&](const at::Tensor& v) {
        auto x = medcl::l2_normalize(v, 1e-12);
        return medcl::contrast_loss(medcl::make_contrast_problem(
                                        "parity_loss", x, x, std::make_shared<ParityRule>(10), 0.3))
            .item<double>();
      },
      z.detach());
  REQUIRE(rel_err(g_dense, g_fd) < 1e-6);
}

TEST_CASE("the public engine API refuses a malformed problem by name", "[losses][engine][errors]") {
  using medcl_test::Contains;
  auto x = medcl::l2_normalize(torch::randn({6, 4}), 1e-12);
  auto rule = std::make_shared<ParityRule>(6);
  REQUIRE_THROWS_WITH(
      medcl::make_contrast_problem("my_loss", x, x, rule, 0.0),
      Contains("my_loss") && Contains("temperature must be finite and > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::make_contrast_problem(
          "my_loss",
          x,
          x,
          rule,
          0.1,
          NegativeWeighting::uniform(),
          SimilarityEngineOptions().tile_size(-1)),
      Contains("my_loss") && Contains("tile_size must be >= 0"));
  auto p = medcl::make_contrast_problem("my_loss", x, x, nullptr, 0.1);
  REQUIRE_THROWS_WITH(medcl::contrast_loss(p), Contains("my_loss: the problem has no pair rule"));
  p = medcl::make_contrast_problem("my_loss", x, x.slice(0, 0, 5), rule, 0.1);
  REQUIRE_THROWS_WITH(
      medcl::contrast_loss(p),
      Contains("built for 6 x 6 pairs") && Contains("6 anchors and 5 candidates"));
  p = medcl::make_contrast_problem("my_loss", x, torch::randn({6, 3}), rule, 0.1);
  REQUIRE_THROWS_WITH(medcl::contrast_loss(p), Contains("with the same D") && Contains("[6, 3]"));
  p = medcl::make_contrast_problem("my_loss", x, x.to(torch::kDouble), rule, 0.1);
  REQUIRE_THROWS_WITH(medcl::contrast_loss(p), Contains("Float and Double"));
  p = medcl::make_contrast_problem("my_loss", x.to(torch::kHalf), x.to(torch::kHalf), rule, 0.1);
  REQUIRE_THROWS_WITH(medcl::contrast_loss(p), Contains("float32 or both float64"));
  p = medcl::make_contrast_problem("my_loss", x, x, rule, 0.1);
  REQUIRE(p.mm_dtype == torch::kFloat);
  p.mm_dtype = torch::kDouble;
  REQUIRE_THROWS_WITH(
      medcl::contrast_loss(p), Contains("mm_dtype must be the anchors' dtype Float"));
  p.mm_dtype = torch::kFloat;
  p.paired = torch::randn({5, 4});
  REQUIRE_THROWS_WITH(medcl::contrast_loss(p), Contains("paired positives"));
  p.paired = at::Tensor();
  p.scale = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(medcl::contrast_loss(p), Contains("scale (1 / temperature)"));
}

TEST_CASE("loss modules check their options when they are built", "[losses][errors]") {
  using medcl_test::Contains;
  REQUIRE_THROWS_WITH(
      medcl::NTXentLoss(medcl::NTXentLossOptions().temperature(0.0)),
      Contains("NTXentLoss: temperature must be finite and > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::NTXentLoss(medcl::NTXentLossOptions().eps(-1.0)),
      Contains("NTXentLoss: eps must be finite and > 0, got -1"));
  REQUIRE_THROWS_WITH(
      medcl::InfoNCELoss(
          medcl::InfoNCELossOptions().engine(SimilarityEngineOptions().dense_max_elements(-4))),
      Contains("InfoNCELoss: engine dense_max_elements must be >= 0, got -4"));
  REQUIRE_THROWS_WITH(
      medcl::SupConLoss(medcl::SupConLossOptions().base_temperature(-0.5)),
      Contains("SupConLoss: base_temperature must be finite and > 0, got -0.5"));
  REQUIRE_THROWS_WITH(
      medcl::SupConLoss(medcl::SupConLossOptions().temperature(std::nan(""))),
      Contains("SupConLoss: temperature"));
  // Valid options build, and the module still computes the functional loss.
  medcl::NTXentLoss ok(medcl::NTXentLossOptions().temperature(0.2));
  auto a = torch::randn({5, 3});
  auto b = torch::randn({5, 3});
  REQUIRE(
      ok(a, b).item<double>() ==
      Approx(F::nt_xent_loss(a, b, medcl::NTXentLossOptions().temperature(0.2)).item<double>()));
}

TEST_CASE("the engine's earlier detail:: names still compile and agree", "[losses][engine]") {
  auto x = medcl::detail::l2_normalize(torch::randn({6, 4}), 1e-12);
  auto rule = std::make_shared<ParityRule>(6);
  medcl::detail::ContrastProblem p = medcl::detail::make_problem(
      "old",
      x,
      x,
      rule,
      0.2,
      NegativeWeighting::uniform(),
      SimilarityEngineOptions(),
      medcl::detail::matmul_dtype(x));
  auto old_value = medcl::detail::contrast_loss(p).item<double>();
  auto new_value =
      medcl::contrast_loss(medcl::make_contrast_problem("new", x, x, rule, 0.2)).item<double>();
  REQUIRE(old_value == new_value);
}

TEST_CASE(
    "the engine keeps its CPU workspace between calls without mixing interleaved losses",
    "[losses][engine]") {
  torch::manual_seed(11);
  medcl::release_engine_workspaces();
  REQUIRE(medcl::engine_workspace_bytes() == 0);
  auto x0 = torch::randn({64, 8}, torch::kDouble).requires_grad_(true);
  auto x1 = torch::randn({64, 8}, torch::kDouble).requires_grad_(true);
  auto y0 = torch::randn({64, 8}, torch::kDouble).requires_grad_(true);
  auto y1 = torch::randn({64, 8}, torch::kDouble).requires_grad_(true);
  for (auto path : {EnginePath::Dense, EnginePath::Tiled}) {
    INFO((path == EnginePath::Dense ? "dense" : "tiled"));
    const auto opts = medcl::NTXentLossOptions().temperature(0.2).engine(
        SimilarityEngineOptions().path(path).tile_size(24));
    // Sequential: each loss and its backward alone.
    auto la = F::nt_xent_loss(x0, x1, opts);
    auto ga = torch::autograd::grad({la}, {x0, x1});
    auto lb = F::nt_xent_loss(y0, y1, opts);
    auto gb = torch::autograd::grad({lb}, {y0, y1});
    CHECK(medcl::engine_workspace_bytes() > 0);
    // Interleaved: both forwards (each keeps its own buffer on the dense path), then both
    // backwards in the other order; values and gradients are bit for bit the same.
    auto la2 = F::nt_xent_loss(x0, x1, opts);
    auto lb2 = F::nt_xent_loss(y0, y1, opts);
    auto gb2 = torch::autograd::grad({lb2}, {y0, y1});
    auto ga2 = torch::autograd::grad({la2}, {x0, x1});
    CHECK(la2.item<double>() == la.item<double>());
    CHECK(lb2.item<double>() == lb.item<double>());
    for (size_t i = 0; i < 2; ++i) {
      CHECK(torch::equal(ga2[i], ga[i]));
      CHECK(torch::equal(gb2[i], gb[i]));
    }
  }
  // A loss without gradient gives its buffer back too; release frees everything.
  {
    torch::NoGradGuard no_grad;
    F::nt_xent_loss(x0, x1);
  }
  CHECK(medcl::engine_workspace_bytes() >= 128 * 128 * 8);
  medcl::release_engine_workspaces();
  CHECK(medcl::engine_workspace_bytes() == 0);
}

namespace {

// ParityRule, also offering its classes for the key-class path, but as floats: a mistake that
// the engine must refuse rather than truncate.
class FloatParityClasses : public ParityRule {
 public:
  explicit FloatParityClasses(int64_t n) : ParityRule(n), n_(n) {}
  std::optional<medcl::KeyClasses> key_classes() const override {
    auto k = torch::remainder(torch::arange(n_), 2).to(torch::kFloat) + 0.25;
    return medcl::KeyClasses{k, k};
  }
  std::optional<at::Tensor> excluded_cols() const override {
    return torch::arange(n_);
  }

 private:
  int64_t n_;
};

} // namespace

TEST_CASE(
    "the engine refuses key classes of a floating-point dtype",
    "[losses][engine][extending]") {
  torch::manual_seed(4);
  auto x = medcl::l2_normalize(torch::randn({10, 4}), 1e-12);
  for (auto path : {EnginePath::Dense, EnginePath::Tiled}) {
    CHECK_THROWS_WITH(
        medcl::contrast_loss(medcl::make_contrast_problem(
            "parity_loss",
            x,
            x,
            std::make_shared<FloatParityClasses>(10),
            0.3,
            NegativeWeighting::uniform(),
            SimilarityEngineOptions().path(path).tile_size(3))),
        medcl_test::Contains("parity_loss: the pair rule gave key classes of dtype Float"));
  }
}
