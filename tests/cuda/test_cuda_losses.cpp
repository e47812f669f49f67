// Built only against a LibTorch with CUDA; the tests need a visible device.
#include "support.h"

#include "losses/families.h"

#include <medcl/medcl.h>

#include "catch.h"

#include <functional>
#include <string>
#include <vector>

using medcl::EnginePath;
using medcl::NegativeWeighting;
using medcl::SimilarityEngineOptions;
using medcl_test::Family;
using medcl_test::rel_err;
namespace F = medcl::functional;

namespace {

// The families with inputs large enough to span several tiles.
std::vector<Family> cases() {
  return medcl_test::families(medcl_test::FamilySizes::large());
}

// The loss and the gradients of every input at `dtype` on `dev`; CLIP's 0-dim scale moves to `dev`
// but keeps float64, as in the CPU tests.
std::pair<at::Tensor, std::vector<at::Tensor>> run(
    const Family& c,
    const std::vector<at::Tensor>& x,
    torch::Device dev,
    torch::Dtype dtype,
    const SimilarityEngineOptions& e,
    const NegativeWeighting& w) {
  std::vector<at::Tensor> leaves;
  for (const auto& t : x) {
    leaves.push_back(
        t.to(dev, t.dim() == 0 ? t.scalar_type() : dtype).detach().requires_grad_(true));
  }
  auto loss = c.loss(leaves, e, w);
  loss.backward();
  std::vector<at::Tensor> g;
  for (const auto& l : leaves) {
    g.push_back(l.grad().to(torch::kCPU, torch::kDouble));
  }
  return {loss.detach().to(torch::kCPU, torch::kDouble), g};
}

} // namespace

TEST_CASE("CUDA: every family matches the CPU double result on both paths", "[cuda][losses]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(41);
  const torch::Device cuda(torch::kCUDA, 0);
  for (const auto& c : cases()) {
    for (const auto& w :
         {NegativeWeighting::uniform(),
          NegativeWeighting::debiased(0.1),
          NegativeWeighting::hard(1.0)}) {
      auto x = c.inputs(torch::kDouble);
      auto ref = run(
          c, x, torch::kCPU, torch::kDouble, SimilarityEngineOptions().path(EnginePath::Dense), w);
      for (auto path : {EnginePath::Dense, EnginePath::Tiled}) {
        auto e = SimilarityEngineOptions().path(path).tile_size(128);
        auto got = run(c, x, cuda, torch::kFloat, e, w);
        INFO(c.name << " " << w.describe() << (path == EnginePath::Dense ? " dense" : " tiled"));
        REQUIRE(rel_err(got.first, ref.first) < 1e-5);
        for (size_t k = 0; k < x.size(); ++k) {
          REQUIRE(rel_err(got.second[k], ref.second[k]) < 1e-4);
        }
      }
    }
  }
}

TEST_CASE("CUDA: bf16 and fp16 inputs stay close to float32", "[cuda][losses][dtype]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(42);
  const torch::Device cuda(torch::kCUDA, 0);
  for (const auto& c : cases()) {
    auto x = c.inputs(torch::kDouble);
    for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
      // The reference sees the same rounded inputs in float32.
      std::vector<at::Tensor> rounded;
      for (const auto& t : x) {
        rounded.push_back(t.dim() == 0 ? t : t.to(dtype).to(torch::kDouble));
      }
      auto ref =
          run(c,
              rounded,
              cuda,
              torch::kFloat,
              SimilarityEngineOptions().path(EnginePath::Tiled),
              NegativeWeighting::uniform());
      for (auto path : {EnginePath::Dense, EnginePath::Tiled}) {
        auto got =
            run(c,
                rounded,
                cuda,
                dtype,
                SimilarityEngineOptions().path(path).tile_size(128),
                NegativeWeighting::uniform());
        INFO(c.name << " " << dtype);
        REQUIRE(std::isfinite(got.first.item<double>()));
        // Matrix products in bf16/fp16 round each similarity (8 or 11 mantissa bits).
        const double tol_value = dtype == torch::kBFloat16 ? 1e-2 : 2e-3;
        const double tol_grad = dtype == torch::kBFloat16 ? 5e-2 : 1e-2;
        REQUIRE(rel_err(got.first, ref.first) < tol_value);
        REQUIRE(rel_err(got.second[0], ref.second[0]) < tol_grad);
      }
    }
  }
}

TEST_CASE("CUDA: dense and tiled agree at B = 8192", "[cuda][losses]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(43);
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto z0 = torch::randn({8192, 128}, opts);
  auto z1 = torch::randn({8192, 128}, opts);
  auto run_path = [&](EnginePath path) {
    auto a = z0.detach().clone().requires_grad_(true);
    auto b = z1.detach().clone().requires_grad_(true);
    auto loss = F::nt_xent_loss(
        a,
        b,
        medcl::NTXentLossOptions().engine(SimilarityEngineOptions().path(path).tile_size(4096)));
    loss.backward();
    return std::make_pair(loss.detach(), a.grad());
  };
  auto d = run_path(EnginePath::Dense);
  auto t = run_path(EnginePath::Tiled);
  REQUIRE(rel_err(t.first, d.first) < 1e-5);
  REQUIRE(rel_err(t.second, d.second) < 1e-5);
}

TEST_CASE("CUDA: inputs on different devices are refused by name", "[cuda][losses][errors]") {
  REQUIRE(torch::cuda::is_available());
  using medcl_test::Contains;
  auto cpu = torch::randn({4, 3});
  auto gpu = cpu.to(torch::kCUDA);
  REQUIRE_THROWS_WITH(
      F::nt_xent_loss(cpu, gpu), Contains("nt_xent_loss") && Contains("same device"));
  REQUIRE_THROWS_WITH(
      F::info_nce_loss(gpu, gpu, cpu), Contains("info_nce_loss") && Contains("same device"));
  REQUIRE_THROWS_WITH(
      F::clip_loss(gpu, cpu, 10.0), Contains("clip_loss") && Contains("same device"));
  REQUIRE_THROWS_WITH(
      F::supcon_loss(torch::randn({4, 2, 3}).to(torch::kCUDA), torch::zeros({4}, torch::kLong)),
      Contains("supcon_loss") && Contains("device"));
  REQUIRE_THROWS_WITH(
      F::dino_loss({gpu, gpu}, {gpu}, torch::zeros({3})),
      Contains("dino_loss") && Contains("device"));
}

TEST_CASE("CUDA: MemoryQueue lives on the device and keeps its pairing keys", "[cuda][memory]") {
  REQUIRE(torch::cuda::is_available());
  medcl::MemoryQueue q(4, 2, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat));
  q.enqueue(torch::ones({3, 2}), {{"patient", torch::tensor({1, 2, 3})}}); // CPU input, moved
  q.enqueue(
      torch::full({2, 2}, 2.0, torch::kCUDA),
      {{"patient", torch::tensor({4, 5}).to(torch::kCUDA)}});
  REQUIRE(q.keys().is_cuda());
  REQUIRE(q.pairing_key("patient").is_cuda());
  REQUIRE(q.pairing_key("patient").cpu().equal(torch::tensor({5, 2, 3, 4})));
  auto loss = F::info_nce_loss(
      torch::randn({2, 2}, torch::kCUDA), torch::randn({2, 2}, torch::kCUDA), q.keys());
  REQUIRE(std::isfinite(loss.item<double>()));
}

TEST_CASE(
    "CUDA: pairing strategies give the CPU result, keys must be on the device",
    "[cuda][pairing]") {
  REQUIRE(torch::cuda::is_available());
  using medcl_test::Contains;
  torch::manual_seed(44);
  const int64_t b = 64;
  auto feats = torch::randn({b, 2, 16}, torch::kDouble);
  medcl::SampleKeys keys;
  keys.patient = torch::arange(b).floor_divide(4);
  keys.site = torch::remainder(keys.patient, 3);
  keys.time = torch::rand({b}, torch::kDouble) * 100;
  for (const auto& s :
       {medcl::PairingStrategy::same_patient(),
        medcl::PairingStrategy::temporal_neighbours(30.0).exclude_same_patient(),
        medcl::PairingStrategy::same_patient()
            .positives_across_sites()
            .exclude_same_site_negatives()}) {
    for (auto path : {EnginePath::Dense, EnginePath::Tiled}) {
      auto opts = medcl::SupConLossOptions().pairing(s).engine(
          SimilarityEngineOptions().path(path).tile_size(48));
      auto cpu = F::supcon_loss(feats, keys, opts).item<double>();
      auto gpu = F::supcon_loss(feats.to(torch::kCUDA, torch::kFloat), keys.to(torch::kCUDA), opts)
                     .item<double>();
      INFO(s.describe());
      REQUIRE(gpu == Approx(cpu).epsilon(1e-5));
    }
  }
  REQUIRE_THROWS_WITH(
      F::supcon_loss(feats.to(torch::kCUDA), keys),
      Contains("key 'patient' must be on the embeddings' device"));
}
