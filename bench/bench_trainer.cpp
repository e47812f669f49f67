// Trainer overhead: training steps per second of SimCLR with a small encoder through
// medcl::train::Trainer against a plain LibTorch loop doing the same work (same modules, same
// NT-Xent, same AdamW with the same two parameter groups and the same scheduled learning rate).
// The two alternate in blocks so that drifts of the machine hit both alike; the medians are
// compared.
//
//   medcl_bench_trainer [--steps=50] [--rounds=7] [--batch=256] [--threads=1] [--log]

#include <medcl/core/runtime.h>
#include <medcl/methods/simclr.h>
#include <medcl/train/trainer.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

int64_t arg(int argc, char** argv, const char* name, int64_t fallback) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      return std::stoll(argv[i] + prefix.size());
    }
  }
  return fallback;
}

bool flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == std::string("--") + name) {
      return true;
    }
  }
  return false;
}

torch::nn::Sequential encoder() {
  return torch::nn::Sequential(
      torch::nn::Linear(64, 256),
      torch::nn::ReLU(),
      torch::nn::Linear(256, 256),
      torch::nn::ReLU(),
      torch::nn::Linear(256, 128));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
  const int64_t steps = arg(argc, argv, "steps", 50);
  const int64_t rounds = arg(argc, argv, "rounds", 7);
  const int64_t batch = arg(argc, argv, "batch", 256);
  const int64_t threads = arg(argc, argv, "threads", 1);
  const bool with_log = flag(argc, argv, "log");
  at::set_num_threads(static_cast<int>(threads));
  std::printf("%s\n", medcl::runtime_info().summary().c_str());
  std::printf(
      "SimCLR, MLP encoder 64-256-256-128, projection 128-512-64, batch %lld, %lld steps per "
      "block, "
      "%lld rounds, %lld thread(s)%s\n",
      static_cast<long long>(batch),
      static_cast<long long>(steps),
      static_cast<long long>(rounds),
      static_cast<long long>(threads),
      with_log ? ", trainer with JSON-lines log" : "");

  // Fixed batches, the same for both loops.
  torch::manual_seed(0);
  std::vector<medcl::MethodBatch> batches(8);
  for (auto& b : batches) {
    b.views = {torch::randn({batch, 64}), torch::randn({batch, 64})};
  }
  auto simclr_options = medcl::SimCLROptions(128).hidden_dim(512).projection_dim(64);
  auto optim = medcl::train::OptimizerOptions().kind("adamw").lr(1e-3).weight_decay(0.05);
  const int64_t total = steps * rounds + 1;

  // Plain LibTorch: the same modules, loss and optimiser, written out by hand.
  torch::manual_seed(1);
  auto plain_encoder = encoder();
  medcl::ProjectionHead plain_head(medcl::ProjectionHeadOptions(128, 512, 64));
  std::vector<at::Tensor> decay, no_decay;
  for (auto* m :
       {static_cast<torch::nn::Module*>(plain_encoder.get()),
        static_cast<torch::nn::Module*>(plain_head.get())}) {
    for (auto& p : m->parameters()) {
      (p.dim() <= 1 ? no_decay : decay).push_back(p);
    }
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      decay,
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(1e-3).weight_decay(0.05)));
  groups.emplace_back(
      no_decay,
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(1e-3).weight_decay(0.0)));
  torch::optim::AdamW plain_opt(std::move(groups), torch::optim::AdamWOptions(1e-3));
  auto loss_options = medcl::NTXentLossOptions().temperature(0.1);
  medcl::train::CosineSchedule lr(medcl::train::CosineScheduleOptions(1e-3, 0.0, total));
  int64_t plain_step = 0;
  auto plain_block = [&]() {
    for (int64_t s = 0; s < steps; ++s, ++plain_step) {
      const auto& b = batches[static_cast<size_t>(plain_step) % batches.size()];
      for (auto& g : plain_opt.param_groups()) {
        g.options().set_lr(lr.value(plain_step));
      }
      auto z = plain_head->forward(plain_encoder->forward(at::cat({b.views[0], b.views[1]}, 0)));
      auto loss = medcl::functional::nt_xent_loss(
          z.slice(0, 0, batch), z.slice(0, batch, 2 * batch), loss_options);
      plain_opt.zero_grad();
      loss.backward();
      plain_opt.step();
      (void)loss.item<double>();
    }
  };

  // The trainer.
  torch::manual_seed(1);
  medcl::SimCLR<torch::nn::Sequential> method(encoder(), simclr_options);
  const std::string log_path = "medcl_bench_trainer.jsonl";
  auto trainer_options = medcl::train::TrainerOptions(total).optimizer(optim).progress(false);
  if (with_log) {
    trainer_options.log_path(log_path);
  }
  medcl::train::Trainer trainer(method, trainer_options);
  auto trainer_block = [&]() {
    for (int64_t s = 0; s < steps; ++s) {
      trainer.step(batches[static_cast<size_t>(trainer.current_step()) % batches.size()]);
    }
  };

  // Warm-up (allocator, first-call costs), then alternating timed blocks.
  plain_block();
  trainer_block();
  std::vector<double> plain_rate, trainer_rate;
  for (int64_t r = 1; r < rounds; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    plain_block();
    auto t1 = std::chrono::steady_clock::now();
    trainer_block();
    auto t2 = std::chrono::steady_clock::now();
    plain_rate.push_back(steps / std::chrono::duration<double>(t1 - t0).count());
    trainer_rate.push_back(steps / std::chrono::duration<double>(t2 - t1).count());
  }
  const double p = median(plain_rate);
  const double t = median(trainer_rate);
  std::printf("plain LibTorch loop: %.2f steps/s (median of %zu blocks)\n", p, plain_rate.size());
  std::printf("medcl Trainer:       %.2f steps/s (median of %zu blocks)\n", t, trainer_rate.size());
  std::printf(
      "trainer overhead:    %+.2f%% of the plain loop's time per step\n", (p / t - 1.0) * 100.0);
  if (with_log) {
    std::remove(log_path.c_str());
  }
  return 0;
}
