// Augmentation on CUDA: same layouts, device kept, seeded reproducibility, statistics.
#include "augment/catalogue.h"
#include "support.h"

#include <medcl/augment/image.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>

#include "catch.h"

#include <memory>
#include <vector>

using namespace medcl::augment;

TEST_CASE("CUDA: policies run on the batch's device, reproducibly", "[cuda][augment]") {
  REQUIRE(torch::cuda::is_available());
  const torch::Device cuda(torch::kCUDA, 0);
  struct Item {
    Modality m;
    TransformPtr t;
    Batch b;
  };
  auto ids = torch::tensor({{1, 2, 9, 3, 9, 0}}, torch::kLong).to(cuda);
  auto mask = torch::rand({16, 8}, cuda).gt(0.2);
  std::vector<Item> items{
      {Modality::ECG,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           std::make_shared<RandomCrop>(400),
           std::make_shared<AmplitudeScale>(0.5, 2.0),
           std::make_shared<GaussianJitter>(0.1),
           std::make_shared<BaselineWander>(0.2, 0.5, 500),
           std::make_shared<PowerlineInterference>(50, 0.1, 500),
           std::make_shared<LeadDropout>(0.3),
           std::make_shared<TimeMask>(0.2),
           std::make_shared<TimeWarp>(0.1)}),
       {torch::randn({8, 12, 500}, cuda), {}, {}}},
      {Modality::Image3D,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           std::make_shared<RandomResizedCrop>(0.5),
           std::make_shared<RandomAffine>(10, 0.05, 0.05),
           std::make_shared<BiasField>(0.2),
           std::make_shared<GaussianBlur>(0.5, 1.0),
           std::make_shared<Gamma>(0.8, 1.2),
           std::make_shared<Cutout>(0.2, 1)}),
       {torch::rand({2, 1, 16, 16, 16}, cuda), {}, {}}},
      {Modality::Tabular,
       std::make_shared<FeatureMask>(0.3),
       {torch::randn({16, 8}, cuda), mask, {}}},
      {Modality::Omics,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           std::make_shared<BinomialThinning>(0.5, 0.9), std::make_shared<GeneDropout>(0.1)}),
       {torch::poisson(torch::full({4, 30}, 5.0)).to(cuda), {}, {}}},
      {Modality::Text, std::make_shared<SentenceShuffle>(9), {ids, ids.ne(0), {}}},
  };
  for (const auto& it : items) {
    INFO(modality_name(it.m));
    auto a = Policy(it.m, it.t, 5).views(it.b, 2);
    auto again = Policy(it.m, it.t, 5).views(it.b, 2);
    REQUIRE(a[0].values.is_cuda());
    REQUIRE(a[0].values.equal(again[0].values));
    REQUIRE(a[1].values.equal(again[1].values));
    if (a[0].values.is_floating_point()) {
      REQUIRE(torch::isfinite(a[0].values).all().item<bool>());
    }
  }
  // Statistics on the device: jitter variance.
  auto x = torch::randn({64, 12, 1000}, cuda);
  auto d = Policy(Modality::ECG, std::make_shared<GaussianJitter>(0.2), 3)
               .views({x, {}, {}}, 1)[0]
               .values -
      x;
  REQUIRE(d.std().item<double>() == Approx(0.2).epsilon(0.02));
}

TEST_CASE("CUDA: the separable crop equals grid sampling on the device", "[cuda][augment]") {
  REQUIRE(torch::cuda::is_available());
  const torch::Device cuda(torch::kCUDA, 0);
  auto x = torch::rand({4, 2, 6, 9, 11}, cuda);
  auto c = medcl_test::random_crop_case(x, 0.5);
  auto separable = medcl::augment::detail::resized_crop(x, c.side, c.shift);
  REQUIRE(separable.is_cuda());
  REQUIRE(medcl_test::rel_err(separable, c.reference) < 1e-4);
}

TEST_CASE(
    "CUDA: every transform keeps layout and device, reproducibly, as on the CPU",
    "[cuda][augment]") {
  REQUIRE(torch::cuda::is_available());
  const torch::Device cuda(torch::kCUDA, 0);
  for (const auto& it : medcl_test::all_transforms()) {
    INFO(it.t->name());
    const auto in = medcl_test::transform_sample(it.m, cuda);
    auto run = [&](uint64_t seed) { return Policy(it.m, it.t, seed).views(in, 1)[0]; };
    auto a = run(1);
    auto on_cpu = Policy(it.m, it.t, 1).views(medcl_test::transform_sample(it.m), 1)[0];
    REQUIRE(a.values.is_cuda());
    REQUIRE(a.values.sizes() == on_cpu.values.sizes());
    REQUIRE(a.values.scalar_type() == on_cpu.values.scalar_type());
    REQUIRE(a.mask.defined() == on_cpu.mask.defined());
    REQUIRE(a.times.defined() == on_cpu.times.defined());
    if (a.mask.defined())
      REQUIRE(a.mask.is_cuda());
    if (a.values.is_floating_point())
      REQUIRE(torch::isfinite(a.values).all().item<bool>());
    medcl_test::require_seeded(it.random, run);
    if (!it.random) {
      REQUIRE(a.values.cpu().equal(on_cpu.values)); // no randomness: the CPU's result exactly
    }
  }
}
