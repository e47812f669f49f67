// Methods and the trainer on CUDA: every method's step on the device, bfloat16 autocast, and exact
// resume of a run whose state lives on the GPU (momentum copies, queue, CUDA generators).
#include "support.h"

#include <medcl/methods/byol.h>
#include <medcl/methods/clip.h>
#include <medcl/methods/dino.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/simclr.h>
#include <medcl/methods/simsiam.h>
#include <medcl/methods/supcon.h>
#include <medcl/methods/swav.h>
#include <medcl/train/trainer.h>

#include <torch/torch.h>
#include "catch.h"

#include <filesystem>

namespace {

torch::nn::Sequential encoder() {
  return torch::nn::Sequential(
      torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Linear(64, 16));
}

medcl::MethodBatch batch_on(const torch::Device& d, int64_t b, int64_t local = 0) {
  medcl::MethodBatch out;
  out.views = {torch::randn({b, 32}, d), torch::randn({b, 32}, d)};
  for (int64_t i = 0; i < local; ++i) {
    out.local_views.push_back(torch::randn({b, 32}, d));
  }
  out.keys.label = torch::randint(0, 3, {b}, torch::TensorOptions(d).dtype(torch::kLong));
  out.keys.patient = torch::arange(b, torch::TensorOptions(d).dtype(torch::kLong)).div(2, "floor");
  return out;
}

template <class M>
void steps_on_cuda(M& method, int64_t local = 0, bool paired = false) {
  const torch::Device cuda(torch::kCUDA, 0);
  method.to(cuda);
  medcl::train::Trainer t(
      method,
      medcl::train::TrainerOptions(3).precision(medcl::train::Precision::BFloat16).progress(false));
  for (int i = 0; i < 3; ++i) {
    auto b = batch_on(cuda, 32, local);
    if (paired) {
      b.views.pop_back();
      b.paired = torch::randn({32, 32}, cuda);
      b.keys.study = b.keys.patient.clone(); // CLIP's default pairing: reports of the same study
    }
    auto r = t.step(b);
    CHECK(std::isfinite(r.loss));
  }
  for (const auto& p : method.parameters()) {
    CHECK(p.device().is_cuda());
    CHECK(p.scalar_type() == torch::kFloat);
  }
}

} // namespace

TEST_CASE("CUDA: every method trains under bfloat16 autocast on the device", "[cuda][methods]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(0);
  medcl::SimCLR<torch::nn::Sequential> simclr(
      encoder(), medcl::SimCLROptions(16).hidden_dim(32).projection_dim(8));
  steps_on_cuda(simclr);
  medcl::MoCo<torch::nn::Sequential> moco(
      encoder(), medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(64));
  steps_on_cuda(moco);
  CHECK(moco.queue()->device().is_cuda());
  medcl::MoCo<torch::nn::Sequential> moco3(
      encoder(), medcl::MoCoOptions::v3(16).hidden_dim(32).projection_dim(8));
  steps_on_cuda(moco3);
  medcl::BYOL<torch::nn::Sequential> byol(
      encoder(), medcl::BYOLOptions(16).hidden_dim(32).projection_dim(8));
  steps_on_cuda(byol);
  medcl::SimSiam<torch::nn::Sequential> simsiam(
      encoder(), medcl::SimSiamOptions(16).projection_dim(16).prediction_hidden_dim(4));
  steps_on_cuda(simsiam);
  medcl::DINO<torch::nn::Sequential> dino(
      encoder(), medcl::DINOOptions(16).output_dim(32).hidden_dim(32).bottleneck_dim(8));
  steps_on_cuda(dino, 2);
  medcl::SwAV<torch::nn::Sequential> swav(
      encoder(),
      medcl::SwAVOptions(16).hidden_dim(32).projection_dim(8).num_prototypes(16).queue_size(64));
  steps_on_cuda(swav, 2);
  medcl::SupCon<torch::nn::Sequential> supcon(
      encoder(), medcl::SupConOptions(16).hidden_dim(32).projection_dim(8));
  steps_on_cuda(supcon);
  medcl::CLIP<torch::nn::Sequential, torch::nn::Sequential> clip(
      encoder(), encoder(), medcl::CLIPOptions(16, 16).embed_dim(8));
  steps_on_cuda(clip, 0, true);
}

TEST_CASE("CUDA: a resumed MoCo run reproduces the uninterrupted losses", "[cuda][methods]") {
  REQUIRE(torch::cuda::is_available());
  const torch::Device cuda(torch::kCUDA, 0);
  const auto path = (std::filesystem::temp_directory_path() / "medcl-cuda-resume.ckpt").string();
  auto run = [&](int64_t stop, bool resume) {
    torch::manual_seed(resume ? 5 : 1);
    medcl::MoCo<torch::nn::Sequential> m(
        encoder(),
        medcl::MoCoOptions::v2(16).hidden_dim(32).projection_dim(8).queue_size(48).momentum_start(
            0.9));
    m.to(cuda);
    medcl::train::Trainer t(m, medcl::train::TrainerOptions(8).progress(false));
    if (resume) {
      t.resume(path);
    }
    std::vector<double> losses;
    while (t.current_step() < (resume ? 8 : stop)) {
      // Batches drawn from the default CUDA generator, which the checkpoint restores.
      losses.push_back(t.step(batch_on(cuda, 16)).loss);
    }
    if (!resume) {
      t.save(path);
    }
    return losses;
  };
  auto whole = run(8, false);
  auto first = run(3, false);
  auto rest = run(3, true);
  REQUIRE(rest.size() == 5);
  for (size_t i = 0; i < rest.size(); ++i) {
    CHECK(rest[i] == whole[i + 3]);
  }
  std::filesystem::remove(path);
}
