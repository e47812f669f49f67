#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/clip.h>

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
