// quickstart: the smallest end-to-end contrastive job medcl can do.
//
// Records of a planted cohort carry a phenotype (3 classes) in a few mixed directions, buried
// under measurement noise whose per-feature scale is known (as a lab's assay error is). SimCLR
// pretraining with NT-Xent, using that measurement noise and feature masking as augmentations,
// learns an encoder that is invariant to the noise. Without labels during pretraining, a kNN
// probe on held-out records then recovers the phenotype better from the learned embedding than
// from a random encoder or the raw features.
//
//   ./scripts/demo quickstart [--steps N] [--seed S] [--smoke]
//   ./scripts/demo --nproc 2 quickstart          # data-parallel on 2 local processes
//
// Launched by torchrun (or with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set), the job runs
// data-parallel: every rank draws the same global batch and its augmentations (one seed), takes
// its own slice, contrasts it with every rank's views (NT-Xent with the process group), and the
// gradients are summed over the ranks. The numbers printed (by rank 0) are those of one process
// up to floating-point rounding.

#include <medcl/medcl.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct Cohort {
  torch::Tensor x;     // [N, F]
  torch::Tensor label; // [N]
};

// Phenotype lives in a 4-dimensional latent mixed into F features; each feature has its own
// measurement noise, some of it much larger than the signal.
Cohort make_cohort(
    int64_t n,
    const torch::Tensor& mixing,
    const torch::Tensor& noise_sd,
    const torch::Tensor& centres) {
  auto label = torch::randint(0, centres.size(0), {n}, torch::kLong);
  auto latent = centres.index_select(0, label) + 0.3 * torch::randn({n, centres.size(1)});
  auto x = latent.mm(mixing) + torch::randn({n, mixing.size(1)}) * noise_sd;
  return {x, label};
}

// Augmentation: measurement-noise jitter at the known per-feature scale, and feature masking.
torch::Tensor augment(const torch::Tensor& x, const torch::Tensor& noise_sd) {
  auto jitter = torch::randn_like(x) * noise_sd;
  auto keep = (torch::rand_like(x) > 0.2).to(x.scalar_type());
  return (x + jitter) * keep;
}

struct EncoderImpl : torch::nn::Module {
  EncoderImpl(int64_t in, int64_t hidden, int64_t out) {
    net = register_module(
        "net",
        torch::nn::Sequential(
            torch::nn::Linear(in, hidden), torch::nn::ReLU(), torch::nn::Linear(hidden, out)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return net->forward(x);
  }
  torch::nn::Sequential net{nullptr};
};
TORCH_MODULE(Encoder);

// Accuracy of a k-nearest-neighbour vote (cosine similarity) from train to test embeddings.
double knn_accuracy(
    const torch::Tensor& train,
    const torch::Tensor& ytrain,
    const torch::Tensor& test,
    const torch::Tensor& ytest,
    int64_t k,
    int64_t classes) {
  auto a =
      torch::nn::functional::normalize(test, torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto b =
      torch::nn::functional::normalize(train, torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto sim = a.mm(b.t());
  auto nn = std::get<1>(sim.topk(k, 1));
  auto votes = torch::zeros({test.size(0), classes});
  votes.scatter_add_(
      1,
      ytrain.index_select(0, nn.reshape(-1)).reshape({test.size(0), k}),
      torch::ones({test.size(0), k}));
  auto pred = votes.argmax(1);
  return pred.eq(ytest).to(torch::kDouble).mean().item<double>();
}

} // namespace

int main(int argc, char** argv) {
  int64_t steps = 400;
  uint64_t seed = 7;
  bool smoke = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--steps" && i + 1 < argc) {
      steps = std::stoll(argv[++i]);
    } else if (arg == "--seed" && i + 1 < argc) {
      seed = std::stoull(argv[++i]);
    } else if (arg == "--smoke") {
      smoke = true;
    } else {
      std::fprintf(stderr, "usage: quickstart [--steps N] [--seed S] [--smoke]\n");
      return 2;
    }
  }
  // One process, or data-parallel when launched by torchrun (WORLD_SIZE set).
  const medcl::dist::ProcessGroup group = std::getenv("WORLD_SIZE") != nullptr
      ? medcl::dist::init_from_env()
      : medcl::dist::ProcessGroup();
  const bool lead = group.rank() == 0;
  auto say = [&](const char* format, auto... values) {
    if (lead) {
      std::printf(format, values...);
    }
  };
  torch::manual_seed(seed);
  say("%s\n", medcl::runtime_info().summary().c_str());
  if (group.size() > 1) {
    say("data-parallel: %s\n", group.describe().c_str());
  }

  const int64_t features = 32, classes = 3, batch = 256;
  auto mixing = torch::randn({4, features});
  auto centres = 1.5 * torch::randn({classes, 4});
  // A third of the features are precise, the rest carry noise 4x larger than the signal.
  auto noise_sd = torch::full({features}, 4.0);
  noise_sd.slice(0, 0, features / 3).fill_(0.3);
  auto pretrain = make_cohort(4000, mixing, noise_sd, centres);
  auto probe_train = make_cohort(600, mixing, noise_sd, centres);
  auto probe_test = make_cohort(600, mixing, noise_sd, centres);

  Encoder encoder(features, 128, 32);
  Encoder random_encoder(features, 128, 32);
  auto projection = torch::nn::Sequential(
      torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Linear(64, 32));
  std::vector<torch::Tensor> params = encoder->parameters();
  for (const auto& p : projection->parameters()) {
    params.push_back(p);
  }
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-3).weight_decay(1e-4));
  // With a group: this rank's share of the global loss (the shares sum to it).
  medcl::NTXentLoss criterion(medcl::NTXentLossOptions().temperature(0.2).group(group));
  // Rank 0's weights everywhere, and gradients summed over the ranks after each backward.
  medcl::dist::NamedTensors trained = medcl::dist::parameters_and_buffers(*encoder);
  for (const auto& p : projection->named_parameters()) {
    trained.emplace_back("projection." + p.key(), p.value());
  }
  medcl::dist::broadcast_parameters(trained, group);
  medcl::dist::NamedTensors trainable = medcl::dist::trainable_parameters(*encoder);
  for (const auto& p : projection->named_parameters()) {
    trainable.emplace_back("projection." + p.key(), p.value());
  }
  medcl::dist::GradientReducer reducer(trainable, group);

  double first = 0, last = 0;
  const auto mine = medcl::dist::shard_range(batch, group.rank(), group.size());
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    // The global batch and both views' augmentations, drawn alike on every rank; this rank's rows.
    auto idx = torch::randint(0, pretrain.x.size(0), {batch}, torch::kLong);
    auto x = pretrain.x.index_select(0, idx);
    auto v0 = augment(x, noise_sd).slice(0, mine.begin, mine.end);
    auto v1 = augment(x, noise_sd).slice(0, mine.begin, mine.end);
    auto z0 = projection->forward(encoder->forward(v0));
    auto z1 = projection->forward(encoder->forward(v1));
    auto loss = criterion(z0, z1);
    opt.zero_grad();
    loss.backward();
    reducer.reduce();
    opt.step();
    auto global_loss = loss.detach().reshape({1}).to(torch::kDouble);
    group.all_reduce(global_loss);
    const double v = global_loss.item<double>();
    if (step == 0) {
      first = v;
    }
    last = v;
    if (step % 100 == 0 || step == steps - 1) {
      say("step %4lld  NT-Xent %.4f\n", static_cast<long long>(step), v);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double checksum = 0;
  for (const auto& p : trainable) {
    checksum += p.second.detach().abs().sum().item<double>();
  }
  say("pretraining: %lld steps of %lld samples in %.2f s on %lld process(es): %.0f samples/s\n",
      static_cast<long long>(steps),
      static_cast<long long>(batch),
      seconds,
      static_cast<long long>(group.size()),
      static_cast<double>(steps * batch) / seconds);
  say("final NT-Xent %.8f, sum of |parameters| %.8f\n", last, checksum);

  torch::NoGradGuard no_grad;
  encoder->eval();
  const int64_t k = 10;
  // Each rank embeds its share of the records; every rank then holds all of them, in order.
  const double acc_pre = knn_accuracy(
      medcl::eval::extract_embeddings(encoder, probe_train.x, group),
      probe_train.label,
      medcl::eval::extract_embeddings(encoder, probe_test.x, group),
      probe_test.label,
      k,
      classes);
  const double acc_rand = knn_accuracy(
      random_encoder->forward(probe_train.x),
      probe_train.label,
      random_encoder->forward(probe_test.x),
      probe_test.label,
      k,
      classes);
  const double acc_raw =
      knn_accuracy(probe_train.x, probe_train.label, probe_test.x, probe_test.label, k, classes);
  say("\nkNN (k=%lld, cosine) phenotype accuracy on 600 held-out records (chance %.2f):\n",
      static_cast<long long>(k),
      1.0 / classes);
  say("  NT-Xent pretrained encoder  %.3f\n", acc_pre);
  say("  random encoder              %.3f\n", acc_rand);
  say("  raw features                %.3f\n", acc_raw);
  say("loss %.4f -> %.4f over %lld steps\n", first, last, static_cast<long long>(steps));
  const bool ok = last < first && acc_pre > acc_rand && acc_pre > acc_raw;
  if (!ok) {
    say("quickstart FAILED: pretraining did not beat the baselines\n");
    return smoke ? 1 : 0;
  }
  say("quickstart ok\n");
  return 0;
}
