#include "augment/catalogue.h"
#include "support.h"

#include <medcl/augment/image.h>

#include "catch.h"

#include <memory>
#include <vector>

using medcl_test::Contains;
using namespace medcl::augment;
using medcl_test::rel_err;

namespace {

Batch images2d(int64_t b = 6) {
  torch::manual_seed(81);
  return {torch::rand({b, 1, 32, 32}), {}};
}
Batch images3d(int64_t b = 3) {
  torch::manual_seed(82);
  return {torch::rand({b, 1, 12, 16, 16}), {}};
}

Batch run(Modality m, const TransformPtr& t, const Batch& b, uint64_t seed) {
  return Policy(m, t, seed).views(b, 1)[0];
}

std::vector<TransformPtr> all_image_transforms() {
  return {
      std::make_shared<RandomResizedCrop>(0.5),
      std::make_shared<IntensityWindow>(40, 400, 10, 0.1),
      std::make_shared<Gamma>(0.7, 1.5),
      std::make_shared<BrightnessContrast>(0.2, 0.2),
      std::make_shared<GaussianNoise>(0.05),
      std::make_shared<GaussianBlur>(0.5, 1.5),
      std::make_shared<RandomAffine>(10, 0.05, 0.05),
      std::make_shared<BiasField>(0.3),
      std::make_shared<Cutout>(0.2, 2)};
}

} // namespace

TEST_CASE(
    "image transforms keep shape, dtype and device in 2-D and 3-D, seeded, differ across seeds",
    "[augment][image]") {
  for (const auto& b : {images2d(), images3d()}) {
    const auto m = b.values.dim() == 4 ? Modality::Image2D : Modality::Image3D;
    for (const auto& t : all_image_transforms()) {
      INFO(t->name() << " " << modality_name(m));
      auto v1 = run(m, t, b, 1);
      REQUIRE(v1.values.sizes() == b.values.sizes());
      REQUIRE(v1.values.scalar_type() == b.values.scalar_type());
      REQUIRE(torch::isfinite(v1.values).all().item<bool>());
      REQUIRE(v1.values.equal(run(m, t, b, 1).values));
      REQUIRE_FALSE(v1.values.equal(run(m, t, b, 2).values));
    }
  }
}

TEST_CASE("image transforms deliver what they promise", "[augment][image]") {
  auto b = images2d(16);
  const auto& x = b.values;
  // Noise variance.
  auto d = run(Modality::Image2D, std::make_shared<GaussianNoise>(0.1), b, 3).values - x;
  REQUIRE(d.std().item<double>() == Approx(0.1).epsilon(0.03));
  // Window: output in [0, 1], HU below the window -> 0, above -> 1.
  Batch hu{torch::linspace(-1000, 1000, 16 * 32 * 32).reshape({16, 1, 32, 32}), {}};
  auto w = run(Modality::Image2D, std::make_shared<IntensityWindow>(40, 400), hu, 1).values;
  REQUIRE(w.min().item<double>() == 0.0);
  REQUIRE(w.max().item<double>() == 1.0);
  REQUIRE(w.masked_select(hu.values.lt(40 - 200)).max().item<double>() == 0.0);
  REQUIRE(w.masked_select(hu.values.gt(40 + 200)).min().item<double>() == 1.0);
  // Gamma keeps each image's range.
  auto g = run(Modality::Image2D, std::make_shared<Gamma>(0.5, 2.0), b, 4).values;
  REQUIRE(rel_err(std::get<0>(g.flatten(1).min(1)), std::get<0>(x.flatten(1).min(1))) < 1e-5);
  REQUIRE(rel_err(std::get<0>(g.flatten(1).max(1)), std::get<0>(x.flatten(1).max(1))) < 1e-5);
  // Brightness/contrast with zero strength is the identity; blur lowers the variance of noise.
  REQUIRE(
      rel_err(run(Modality::Image2D, std::make_shared<BrightnessContrast>(0, 0), b, 1).values, x) <
      1e-5);
  auto blurred = run(Modality::Image2D, std::make_shared<GaussianBlur>(1.0, 1.0), b, 1).values;
  REQUIRE(blurred.std().item<double>() < 0.5 * x.std().item<double>());
  REQUIRE(blurred.mean().item<double>() == Approx(x.mean().item<double>()).epsilon(0.01));
  // Bias field: on a constant image the field itself, positive and smooth.
  Batch ones{torch::ones({4, 1, 12, 16, 16}), {}};
  auto field = run(Modality::Image3D, std::make_shared<BiasField>(0.3), ones, 5).values;
  REQUIRE(field.min().item<double>() > 0);
  // |d log f / dx| <= c (1 + 2 + 1 + 1) for the order-2 monomials in x (x, x^2, xy, xz): 1.5 per
  // unit of the [-1, 1] coordinate, i.e. at most 0.2 between neighbours 2/15 apart on 16 voxels.
  auto lf = field.log();
  REQUIRE((lf.slice(4, 1) - lf.slice(4, 0, -1)).abs().max().item<double>() <= 0.2 + 1e-4);
  REQUIRE(field.std().item<double>() > 1e-3);
  // Cutout: zeroed boxes of the requested size (2 boxes of 0.25 x 0.25 on 32 x 32 -> at most 128
  // px).
  Batch white{torch::ones({8, 1, 32, 32}), {}};
  auto cut = run(Modality::Image2D, std::make_shared<Cutout>(0.25, 2), white, 6).values;
  auto zeros = cut.eq(0).flatten(1).sum(1);
  REQUIRE(zeros.min().item<int64_t>() >= 64);
  REQUIRE(zeros.max().item<int64_t>() <= 128);
  // Identity affine and full-size crop leave the image unchanged.
  REQUIRE(
      rel_err(run(Modality::Image2D, std::make_shared<RandomAffine>(0, 0, 0), b, 1).values, x) <
      1e-5);
  REQUIRE(
      rel_err(
          run(Modality::Image2D, std::make_shared<RandomResizedCrop>(1.0, 1.0), b, 1).values, x) <
      1e-5);
  // A crop of at least half the area of a horizontal ramp keeps a span of at least 1/sqrt(2).
  Batch ramp{torch::linspace(0, 1, 32).view({1, 1, 1, 32}).expand({8, 1, 32, 32}).contiguous(), {}};
  auto crop = run(Modality::Image2D, std::make_shared<RandomResizedCrop>(0.5), ramp, 7).values;
  auto span = std::get<0>(crop.flatten(1).max(1)) - std::get<0>(crop.flatten(1).min(1));
  REQUIRE(span.min().item<double>() >= 0.69);
}

TEST_CASE(
    "a flip of a chest radiograph is refused along either axis unless allowed",
    "[augment][image]") {
  auto lr = std::make_shared<Flip>(1);
  auto ud = std::make_shared<Flip>(0);
  REQUIRE_THROWS_WITH(
      Policy(Modality::ChestRadiograph, lr, 1),
      Contains("transform 'flip' is clinically invalid for chest_radiograph") &&
          Contains("left-right flip (axis 1)") && Contains("heart") &&
          Contains("Pass 'flip' in allow_invalid"));
  // Upside down is as implausible as left-right (the report's Flip(0) was accepted).
  REQUIRE_THROWS_WITH(
      Policy(Modality::ChestRadiograph, ud, 1),
      Contains("transform 'flip' is clinically invalid for chest_radiograph") &&
          Contains("upside-down flip (axis 0)") && Contains("diaphragm"));
  // A generic 2-D image refuses neither: declare chest films as ChestRadiograph.
  REQUIRE_NOTHROW(Policy(Modality::Image2D, lr, 1));
  REQUIRE_NOTHROW(Policy(Modality::Image2D, ud, 1));
  auto b = images2d(2);
  Policy allowed(Modality::ChestRadiograph, lr, 1, {"flip"});
  REQUIRE(allowed.views(b, 1)[0].values.equal(b.values.flip({3})));
  Policy allowed_ud(Modality::ChestRadiograph, ud, 1, {"flip"});
  REQUIRE(allowed_ud.views(b, 1)[0].values.equal(b.values.flip({2})));
  REQUIRE_THROWS_WITH(
      Policy(Modality::Image3D, std::make_shared<Gamma>(1, 2), 1).views(b, 1),
      Contains("image3d batch has layout [B, C, D, H, W]"));
  REQUIRE_THROWS_WITH(RandomResizedCrop(1.5), Contains("crop scales must be in (0, 1]"));
  REQUIRE_THROWS_WITH(RandomResizedCrop(-0.1), Contains("crop scales must be in (0, 1]"));
  REQUIRE_THROWS_WITH(
      Policy(Modality::ECG, std::make_shared<Gamma>(1, 2), 1),
      Contains("not valid for modality 'ecg'"));
}

TEST_CASE(
    "Flip refuses an axis the image lacks when built or when the policy fixes the modality",
    "[augment][image][errors]") {
  // What is known at construction: the axis is a spatial axis 0, 1 or 2.
  REQUIRE_THROWS_WITH(
      Flip(-1), Contains("Flip: axis must be a spatial axis") && Contains("got -1"));
  REQUIRE_THROWS_WITH(Flip(3), Contains("got 3"));
  // What the modality fixes: a 2-D image has no axis 2. Refused when the policy is built (not at
  // the first views()), naming the transform and the axis, and allow_invalid does not lift it.
  for (Modality m : {Modality::Image2D, Modality::ChestRadiograph}) {
    REQUIRE_THROWS_WITH(
        Policy(m, std::make_shared<Flip>(2), 1, {"flip"}),
        Contains(
            "Policy: transform 'flip' cannot be applied to modality '" +
            std::string(modality_name(m)) + "'") &&
            Contains("axis 2 does not exist") && Contains("spatial axes are 0 (H, up-down)"));
  }
  REQUIRE_THROWS_WITH(
      Policy(
          Modality::Image2D,
          std::make_shared<Sequence>(std::vector<TransformPtr>{
              std::make_shared<Gamma>(0.8, 1.2),
              std::make_shared<RandomApply>(std::make_shared<Flip>(2), 0.5)}),
          1),
      Contains("transform 'flip' (at sequence > random_apply > flip) cannot be applied") &&
          Contains("axis 2 does not exist"));
  // A volume has it.
  auto v = images3d(2);
  Policy volume(Modality::Image3D, std::make_shared<Flip>(2), 1);
  REQUIRE(volume.views(v, 1)[0].values.equal(v.values.flip({4})));
  // Applied outside a policy, the transform still names the axis and the shape.
  auto gen = at::detail::createCPUGenerator(1);
  REQUIRE_THROWS_WITH(
      Flip(2).apply(images2d(2), Modality::Image2D, gen),
      Contains("Flip: axis 2 does not exist in an image of shape [2, 1, 32, 32]"));
}

TEST_CASE(
    "the separable crop equals the sampling grid it replaces, on 2-D and 3-D images",
    "[augment][image]") {
  torch::manual_seed(91);
  for (const auto& shape : std::vector<std::vector<int64_t>>{{5, 2, 7, 9}, {3, 2, 5, 6, 7}}) {
    auto x = torch::rand(shape);
    const int64_t dims = static_cast<int64_t>(shape.size()) - 2;
    auto c = medcl_test::random_crop_case(x, 0.4);
    auto separable = medcl::augment::detail::resized_crop(x, c.side, c.shift);
    INFO("dims " << dims);
    REQUIRE(separable.sizes() == x.sizes());
    REQUIRE(rel_err(separable, c.reference) < 1e-5);
    // The identity crop (side 1, no shift) returns the image.
    auto identity = medcl::augment::detail::resized_crop(
        x, torch::ones({shape[0]}), std::vector<at::Tensor>(dims, torch::zeros({shape[0]})));
    REQUIRE(rel_err(identity, x) < 1e-6);
  }
}

TEST_CASE(
    "a bias field is exp of a polynomial of the requested order with bounded coefficients",
    "[augment][image]") {
  // Fit log(field) on the monomials of total degree 0..order: the fit must be exact, the constant
  // zero and every other coefficient within [-c, c]; with order + 1 the extra monomials are zero.
  const double c = 0.3;
  const std::vector<int64_t> spatial{6, 7, 8};
  for (int64_t order : {1, 3}) {
    std::vector<int64_t> shape{3, 1};
    shape.insert(shape.end(), spatial.begin(), spatial.end());
    auto field =
        run(Modality::Image3D, std::make_shared<BiasField>(c, order), {torch::ones(shape), {}}, 11)
            .values;
    auto lf = field.log().to(torch::kDouble).flatten(1).t(); // [V, B]
    std::vector<at::Tensor> columns;
    std::vector<int64_t> total_degree;
    auto u = [&](int64_t axis) {
      std::vector<int64_t> view{1, 1, 1};
      view[static_cast<size_t>(axis)] = spatial[static_cast<size_t>(axis)];
      return torch::linspace(-1, 1, spatial[static_cast<size_t>(axis)], torch::kDouble)
          .view(view)
          .expand(spatial);
    };
    for (int64_t i = 0; i <= order + 1; ++i)
      for (int64_t j = 0; i + j <= order + 1; ++j)
        for (int64_t k = 0; i + j + k <= order + 1; ++k) {
          columns.push_back((u(0).pow(i) * u(1).pow(j) * u(2).pow(k)).reshape({-1}));
          total_degree.push_back(i + j + k);
        }
    auto basis = torch::stack(columns, 1);                   // [V, K]
    auto coef = std::get<0>(torch::linalg_lstsq(basis, lf)); // [K, B]
    INFO("order " << order);
    REQUIRE((basis.mm(coef) - lf).abs().max().item<double>() < 1e-5);
    for (size_t m = 0; m < total_degree.size(); ++m) {
      const double bound = total_degree[m] == 0 || total_degree[m] > order ? 1e-5 : c + 1e-5;
      REQUIRE(coef[static_cast<int64_t>(m)].abs().max().item<double>() <= bound);
    }
    REQUIRE(coef.abs().max().item<double>() > 0.05 * c);
  }
}

TEST_CASE(
    "brightness and contrast move each image's mean and spread within their bounds",
    "[augment][image]") {
  torch::manual_seed(93);
  auto x = torch::rand({16, 1, 16, 16});
  auto y =
      run(Modality::Image2D, std::make_shared<BrightnessContrast>(0.5, 0.5), {x, {}}, 3).values;
  auto xm = x.flatten(1).mean(1), ym = y.flatten(1).mean(1);
  auto xs = x.flatten(1).std(1), ys = y.flatten(1).std(1);
  // mean' = mean + b sd with |b| <= 0.5; sd' = c sd with c in [0.5, 1.5].
  REQUIRE(((ym - xm).abs() / xs).max().item<double>() <= 0.5 + 1e-4);
  REQUIRE((ys / xs).min().item<double>() >= 0.5 - 1e-4);
  REQUIRE((ys / xs).max().item<double>() <= 1.5 + 1e-4);
  REQUIRE((ys / xs).std().item<double>() > 0.05); // contrast is drawn per image
  // A one-pixel image has no spread: it is returned unchanged, not NaN.
  auto dot = torch::rand({3, 1, 1, 1});
  auto d = run(Modality::Image2D, std::make_shared<BrightnessContrast>(0.5, 0.5), {dot, {}}, 3);
  REQUIRE(d.values.equal(dot));
}

TEST_CASE(
    "image transforms name the received value when they refuse an option",
    "[augment][errors]") {
  REQUIRE_THROWS_WITH(GaussianBlur(-1.0, 1.0), Contains("sigma must be >= 0, got [-1, 1]"));
  REQUIRE_THROWS_WITH(
      RandomAffine(200.0, 0.1, 0.1), Contains("max_rotation_deg must be in [0, 180], got 200"));
  REQUIRE_THROWS_WITH(
      RandomAffine(10.0, 1.5, 0.1), Contains("max_translate must be in [0, 1], got 1.5"));
  REQUIRE_THROWS_WITH(RandomAffine(10.0, 0.1, 1.0), Contains("max_scale must be in [0, 1), got 1"));
}
