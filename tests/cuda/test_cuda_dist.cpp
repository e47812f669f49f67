// medcl::dist with CUDA tensors (run where LibTorch has CUDA and a device is present): a group of
// one process with NCCL for CUDA tensors where medcl was built with it, the collectives and the
// distributed losses on CUDA tensors through it.
#include "support.h"

#include <medcl/dist/gather.h>
#include <medcl/dist/process_group.h>
#include <medcl/losses/clip.h>
#include <medcl/losses/nt_xent.h>

#include <torch/torch.h>
#include "catch.h"

#include <chrono>

namespace {

medcl::dist::ProcessGroup one_process_group(const medcl_test::TempDir& dir) {
  auto store = medcl::dist::Store::file((dir.path / "store").string(), 1, std::chrono::seconds(30));
  const auto backend = medcl::dist::nccl_available() ? medcl::dist::CudaBackend::NCCL
                                                     : medcl::dist::CudaBackend::Gloo;
  return medcl::dist::new_group(
      store,
      0,
      1,
      medcl::dist::ProcessGroupOptions()
          .timeout(std::chrono::seconds(30))
          .hostname("127.0.0.1")
          .cuda_backend(backend));
}

} // namespace

TEST_CASE("a group of one process moves CUDA tensors (NCCL where built with it)", "[cuda]") {
  if (!torch::cuda::is_available()) {
    MEDCL_SKIP("no CUDA device");
  }
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist");
  }
  medcl_test::TempDir dir;
  const auto group = one_process_group(dir);
  CHECK(group.backend() == (medcl::dist::nccl_available() ? "gloo+nccl" : "gloo"));
  const torch::Device cuda(torch::kCUDA, 0);
  auto t = torch::arange(6, torch::TensorOptions(cuda).dtype(torch::kFloat)).reshape({2, 3});
  const auto before = t.clone();
  group.all_reduce(t);
  group.broadcast(t, 0);
  CHECK(t.equal(before));
  CHECK(group.all_gather(t).equal(before));
  auto x = torch::randn({4, 8}, cuda).requires_grad_(true);
  CHECK(medcl::dist::gather_with_gradient(x, group).is_same(x));

  // The losses with the group take the one-process path on the device: the same values.
  auto z0 = torch::randn({16, 8}, cuda);
  auto z1 = torch::randn({16, 8}, cuda);
  const auto plain = medcl::functional::nt_xent_loss(z0, z1);
  const auto grouped =
      medcl::functional::nt_xent_loss(z0, z1, medcl::NTXentLossOptions().group(group));
  CHECK(grouped.item<double>() == plain.item<double>());
  const auto clip =
      medcl::functional::clip_loss(z0, z1, 10.0, medcl::CLIPLossOptions().group(group));
  CHECK(clip.is_cuda());
}

TEST_CASE("asking for NCCL where medcl was built without it names why", "[cuda]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist");
  }
  if (medcl::dist::nccl_available()) {
    MEDCL_SKIP("medcl was built with NCCL");
  }
  medcl_test::TempDir dir;
  auto store = medcl::dist::Store::file((dir.path / "store").string(), 1, std::chrono::seconds(30));
  CHECK_THROWS_WITH(
      medcl::dist::new_group(
          store,
          0,
          1,
          medcl::dist::ProcessGroupOptions()
              .hostname("127.0.0.1")
              .cuda_backend(medcl::dist::CudaBackend::NCCL)),
      medcl_test::Contains("built without c10d's NCCL backend"));
}
