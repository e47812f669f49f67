// Weak scaling of data-parallel NT-Xent pretraining: the step time of SimCLR with a small MLP
// encoder at a fixed per-rank batch on 1 rank and on W ranks (processes on this machine, one thread
// each, Gloo over loopback), the weak-scaling efficiency t(1) / t(W) (1 is perfect: W times the
// samples in the same time), and the bytes each rank receives per step (from the sizes, by the
// formulas of docs/distributed.md).
//
// A step: two views through the encoder, NT-Xent across the ranks (every rank's views gathered with
// gradient), backward, the gradients summed over the ranks (medcl::dist::GradientReducer), AdamW.
//
//   medcl_bench_dist [--ranks=2] [--batch=256] [--steps=30] [--warmup=5] [--dim=128]
//                    [--encoder=mlp|cnn] [--repeats=3] [--overlap=1] [--bucket-kib=25600]
//                    [--first-bucket-kib=256] [--pin=0] [--malloc-keep=0] [--check=1]
//                    [--poll-us=0]
//
// --encoder: the MLP (the default: little compute per parameter, the worst case for
// communication) or a small convolutional image encoder. --repeats: rounds of runs (W
// independent one-rank processes at once, 1 rank, W ranks), interleaved; printed last: the median
// efficiency over the rounds, what the machine itself allows W concurrent processes (their CPUs,
// caches and memory bandwidth, no communication), and what the loss's own growth leaves. --overlap,
// --bucket-kib, --first-bucket-kib: GradientReducer's options. --pin=1: each rank (and the one-rank
// run) bound to one CPU (rank mod the CPUs), as launchers of CPU ranks do (taskset, numactl).
//
// --check=0: ProcessGroupOptions::check_consistency(false), no metadata exchange before the
// gradient buckets' all-reduces and the barrier (the losses' own checks stay). --poll-us:
// ProcessGroupOptions::poll, how long a waiting rank checks for a collective's completion before
// it sleeps. --malloc-keep=1: medcl::keep_freed_memory() in every process.
//
// The goal of docs/distributed.md (>= 85% at 2 ranks on the 2-vCPU development VM):
//   medcl_bench_dist --encoder=cnn --batch=64 --repeats=5 --poll-us=3000 --malloc-keep=1
//
// The program runs itself again as the workers (RANK, WORLD_SIZE in their environment).

#include <medcl/core/runtime.h>
#include <medcl/dist/data_parallel.h>
#include <medcl/dist/process_group.h>
#include <medcl/losses/nt_xent.h>

#include <torch/torch.h>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

extern char** environ;

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

std::string text_arg(int argc, char** argv, const char* name, const std::string& fallback) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      return std::string(argv[i] + prefix.size());
    }
  }
  return fallback;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : fallback;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The encoders: "mlp" (64-512-512-dim on 64 features: little compute per parameter, the worst
// case for communication) and "cnn" (a small convolutional image encoder on 1 × 32 × 32 images:
// three 3 × 3 convolutions, 32-64-128 channels, the last two with stride 2, global average
// pooling, then 128-512-dim; far more compute per parameter, as in imaging).
torch::nn::Sequential encoder(const std::string& kind, int64_t dim) {
  if (kind == "cnn") {
    namespace nn = torch::nn;
    return nn::Sequential(
        nn::Conv2d(nn::Conv2dOptions(1, 32, 3).padding(1)),
        nn::ReLU(),
        nn::Conv2d(nn::Conv2dOptions(32, 64, 3).stride(2).padding(1)),
        nn::ReLU(),
        nn::Conv2d(nn::Conv2dOptions(64, 128, 3).stride(2).padding(1)),
        nn::ReLU(),
        nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)),
        nn::Flatten(),
        nn::Linear(128, 512),
        nn::ReLU(),
        nn::Linear(512, dim));
  }
  return torch::nn::Sequential(
      torch::nn::Linear(64, 512),
      torch::nn::ReLU(),
      torch::nn::Linear(512, 512),
      torch::nn::ReLU(),
      torch::nn::Linear(512, dim));
}

// One sample's shape for the encoder.
std::vector<int64_t> input_shape(const std::string& kind, int64_t batch) {
  if (kind == "cnn") {
    return {batch, 1, 32, 32};
  }
  return {batch, 64};
}

// One worker: writes its per-step times (seconds) and the reducer's bytes to <dir>/rank<r>.txt.
int worker(
    const std::string& dir,
    int64_t batch,
    int64_t steps,
    int64_t warmup,
    int64_t dim,
    const std::string& kind,
    bool check,
    bool overlap,
    int64_t bucket_kib,
    int64_t first_bucket_kib,
    bool pin,
    bool malloc_keep,
    int64_t poll_us) {
  const int64_t rank = std::stoll(env_or("RANK", "0"));
  const int64_t world = std::stoll(env_or("WORLD_SIZE", "1"));
  // This worker's index among those running at once: its rank, or its place among independent
  // one-rank workers.
  const int64_t slot = std::stoll(env_or("MEDCL_BENCH_DIST_SLOT", std::to_string(rank)));
  if (malloc_keep) {
    // Keep freed memory in the process (medcl::keep_freed_memory: no mmap for large blocks, each
    // of which would be unmapped on free and faulted in, zeroed, at the next step).
    medcl::keep_freed_memory();
  }
  if (pin) {
    // One CPU per rank (rank mod the CPUs this process may use): its threads, Gloo's included,
    // stay there, and the ranks' compute never shares a CPU.
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) > 0) {
      std::vector<int> cpus;
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &allowed)) {
          cpus.push_back(c);
        }
      }
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpus[static_cast<size_t>(slot) % cpus.size()], &one);
      ::sched_setaffinity(0, sizeof(one), &one);
    }
  }
  medcl::dist::ProcessGroup group;
  if (world > 1) {
    auto store = medcl::dist::Store::file(dir + "/store", world, std::chrono::seconds(120));
    group = medcl::dist::new_group(
        store,
        rank,
        world,
        medcl::dist::ProcessGroupOptions()
            .timeout(std::chrono::seconds(120))
            .hostname("127.0.0.1")
            .check_consistency(check)
            .poll(std::chrono::microseconds(poll_us)));
  }
  torch::manual_seed(7);
  auto net = encoder(kind, dim);
  medcl::dist::broadcast_parameters(*net, group);
  medcl::dist::GradientReducer reducer(
      *net,
      group,
      medcl::dist::GradientReducerOptions()
          .overlap(overlap)
          .bucket_bytes(bucket_kib * 1024)
          .first_bucket_bytes(first_bucket_kib * 1024));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-3));
  const auto opts = medcl::NTXentLossOptions().temperature(0.2).group(group);
  torch::manual_seed(100 + static_cast<uint64_t>(rank));
  const auto data = torch::randn(input_shape(kind, batch));
  // Per step: the whole step, then its phases (forward, loss, backward, gradient sum, optimiser).
  std::vector<std::vector<double>> times;
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  for (int64_t s = 0; s < warmup + steps; ++s) {
    group.barrier();
    const auto t0 = Clock::now();
    auto v0 = data + 0.1 * torch::randn_like(data);
    auto v1 = data + 0.1 * torch::randn_like(data);
    auto z0 = net->forward(v0);
    auto z1 = net->forward(v1);
    const auto t_forward = Clock::now();
    auto loss = medcl::functional::nt_xent_loss(z0, z1, opts);
    const auto t_loss = Clock::now();
    opt.zero_grad();
    loss.backward();
    const auto t_backward = Clock::now();
    reducer.reduce();
    const auto t_reduce = Clock::now();
    opt.step();
    const auto t1 = Clock::now();
    if (s >= warmup) {
      times.push_back(
          {seconds(t0, t1),
           seconds(t0, t_forward),
           seconds(t_forward, t_loss),
           seconds(t_loss, t_backward),
           seconds(t_backward, t_reduce),
           seconds(t_reduce, t1)});
    }
  }
  std::ofstream out(dir + "/rank" + std::to_string(slot) + ".txt");
  out << reducer.bytes_last_step() << "\n";
  for (const auto& t : times) {
    for (double x : t) {
      out << x << " ";
    }
    out << "\n";
  }
  return 0;
}

constexpr int kPhases = 6; // step, forward, loss, backward, gradient sum, optimiser

struct Result {
  std::vector<double> median; // the slowest rank's median of each phase
  int64_t bytes = 0;
};

// Runs `world` workers of this program; returns, for each phase, the largest over the ranks of
// the rank's median, and the reducer's bytes of rank 0.
//
// `independent`: the `world` workers run at once but each alone (one rank, no group, no
// communication): what the machine itself allows W concurrent steps.
Result run(
    const char* self,
    int64_t world,
    const std::string& dir,
    char** argv,
    bool independent = false) {
  std::vector<pid_t> pids;
  for (int64_t r = 0; r < world; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("RANK", std::to_string(independent ? 0 : r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(independent ? 1 : world).c_str(), 1);
      ::setenv("MEDCL_BENCH_DIST_SLOT", std::to_string(r).c_str(), 1);
      ::setenv("OMP_NUM_THREADS", "1", 1);
      ::setenv("MEDCL_BENCH_DIST_DIR", dir.c_str(), 1);
      ::execve(self, argv, environ);
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  bool ok = true;
  for (auto pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  if (!ok) {
    std::fprintf(stderr, "a worker failed\n");
    std::exit(1);
  }
  Result result;
  result.median.assign(kPhases, 0.0);
  for (int64_t r = 0; r < world; ++r) {
    std::ifstream in(dir + "/rank" + std::to_string(r) + ".txt");
    int64_t b = 0;
    in >> b;
    if (r == 0) {
      result.bytes = b;
    }
    std::vector<std::vector<double>> t(kPhases);
    double x = 0;
    for (int i = 0; in >> x; i = (i + 1) % kPhases) {
      t[i].push_back(x);
    }
    for (int i = 0; i < kPhases; ++i) {
      result.median[i] = std::max(result.median[i], median(t[i]));
    }
  }
  return result;
}

// The median time of the loss's forward and backward on random embeddings with medcl's engine,
// as NT-Xent runs it on one rank of `ranks`: this rank's 2 · batch anchors (each one's positive
// its other view, itself excluded) against the 2 · batch · ranks candidates of every rank (with
// their gradient), the divisor known; and the same against its own 2 · batch (one rank).
std::pair<double, double> loss_ceiling(int64_t batch, int64_t ranks, int64_t dim) {
  torch::manual_seed(3);
  auto time_it = [&](int64_t world) {
    const int64_t rows = 2 * batch;
    const int64_t cols = rows * world;
    const auto local = torch::arange(rows, torch::kLong);
    std::vector<double> t;
    for (int i = 0; i < 25; ++i) {
      auto anchors = torch::randn({rows, dim}).requires_grad_(true);
      auto others = torch::randn({cols - rows, dim});
      const auto t0 = std::chrono::steady_clock::now();
      auto z = torch::nn::functional::normalize(
          anchors, torch::nn::functional::NormalizeFuncOptions().dim(1));
      auto candidates = world == 1 ? z : torch::cat({z, others}, 0);
      auto p = medcl::make_contrast_problem(
          "bench",
          z,
          candidates,
          std::make_shared<medcl::IndexRule>(
              (local + batch).remainder(rows), local, cols, "the other view"),
          0.2);
      p.global_row_count = [cols](int64_t) { return cols; };
      medcl::contrast_loss(std::move(p)).backward();
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return median(t);
  };
  return {time_it(1), time_it(ranks)};
}

} // namespace

int main(int argc, char** argv) {
  const int64_t ranks = arg(argc, argv, "ranks", 2);
  const int64_t batch = arg(argc, argv, "batch", 256);
  const int64_t steps = arg(argc, argv, "steps", 30);
  const int64_t warmup = arg(argc, argv, "warmup", 5);
  const int64_t dim = arg(argc, argv, "dim", 128);
  const int64_t repeats = std::max<int64_t>(1, arg(argc, argv, "repeats", 3));
  const std::string kind = text_arg(argc, argv, "encoder", "mlp");
  if (kind != "mlp" && kind != "cnn") {
    std::fprintf(stderr, "--encoder must be mlp or cnn, got '%s'\n", kind.c_str());
    return 2;
  }
  at::set_num_threads(1);
  const std::string worker_dir = env_or("MEDCL_BENCH_DIST_DIR", "");
  if (!worker_dir.empty()) {
    return worker(
        worker_dir,
        batch,
        steps,
        warmup,
        dim,
        kind,
        arg(argc, argv, "check", 1) != 0,
        arg(argc, argv, "overlap", 1) != 0,
        arg(argc, argv, "bucket-kib", 25 * 1024),
        arg(argc, argv, "first-bucket-kib", 256),
        arg(argc, argv, "pin", 0) != 0,
        arg(argc, argv, "malloc-keep", 0) != 0,
        arg(argc, argv, "poll-us", 0));
  }
  if (!medcl::dist::available()) {
    std::printf("medcl was built without medcl::dist: nothing to measure\n");
    return 0;
  }
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) {
    std::fprintf(stderr, "cannot read /proc/self/exe\n");
    return 1;
  }
  self[len] = '\0';
  const auto base =
      std::filesystem::temp_directory_path() / ("medcl-bench-dist-" + std::to_string(::getpid()));
  std::printf(
      "NT-Xent pretraining step, %s%lld), per-rank batch %lld (2 views), one thread per rank, "
      "Gloo over loopback; median of %lld steps\n",
      kind == "cnn" ? "convolutional encoder (1x32x32 images, 32-64-128 channels, 128-512-"
                    : "MLP encoder (64-512-512-",
      static_cast<long long>(dim),
      static_cast<long long>(batch),
      static_cast<long long>(steps));
  std::printf(
      "options: overlap %d, check %d, poll %lld us, pin %d, malloc-keep %d\n",
      arg(argc, argv, "overlap", 1) != 0 ? 1 : 0,
      arg(argc, argv, "check", 1) != 0 ? 1 : 0,
      static_cast<long long>(arg(argc, argv, "poll-us", 0)),
      arg(argc, argv, "pin", 0) != 0 ? 1 : 0,
      arg(argc, argv, "malloc-keep", 0) != 0 ? 1 : 0);
  // The pairs (1 rank, then `ranks`) run `repeats` times, interleaved, so that a slow spell of
  // the machine weighs on both sides of one pair rather than on one side only.
  std::vector<double> efficiencies;
  std::vector<double> machine;  // t(1) / t(W independent one-rank processes at once)
  std::vector<double> one_rank; // t(1)
  for (int64_t rep = 0; rep < repeats; ++rep) {
    double t1 = 0;
    {
      // The machine's own share: W one-rank processes at once, no communication.
      const auto dir = base / ("r" + std::to_string(rep) + "independent");
      std::filesystem::create_directories(dir);
      const double t = run(self, ranks, dir.string(), argv, /*independent=*/true).median[0];
      std::printf(
          "run %lld, %lld independent one-rank processes at once: step %.2f ms\n",
          static_cast<long long>(rep + 1),
          static_cast<long long>(ranks),
          t * 1e3);
      machine.push_back(t);
    }
    for (int64_t w : {int64_t(1), ranks}) {
      const auto dir = base / ("r" + std::to_string(rep) + "w" + std::to_string(w));
      std::filesystem::create_directories(dir);
      const auto result = run(self, w, dir.string(), argv);
      const double t = result.median[0];
      if (w == 1) {
        t1 = t;
        one_rank.push_back(t1);
        machine.back() = t1 / machine.back();
      } else {
        efficiencies.push_back(t1 / t);
      }
      // Bytes received per rank per step (docs/distributed.md): the gathered views, their
      // gradient's all-to-all, and the parameters' all-reduce.
      const double n = 2.0 * static_cast<double>(batch);
      const double wd = static_cast<double>(w);
      const double loss_bytes = w == 1 ? 0.0 : 2 * (wd - 1) * n * static_cast<double>(dim) * 4;
      const double param_bytes =
          w == 1 ? 0.0 : 2 * (wd - 1) / wd * static_cast<double>(result.bytes);
      std::printf(
          "run %lld, ranks %lld: step %.2f ms, %.0f samples/s in all, weak-scaling efficiency "
          "%.1f%%, received per rank per step %.2f MiB (loss %.2f MiB, gradients %.2f MiB of "
          "%.2f MiB reduced)\n",
          static_cast<long long>(rep + 1),
          static_cast<long long>(w),
          t * 1e3,
          static_cast<double>(batch * w) / t,
          100.0 * t1 / t,
          (loss_bytes + param_bytes) / (1 << 20),
          loss_bytes / (1 << 20),
          param_bytes / (1 << 20),
          static_cast<double>(result.bytes) / (1 << 20));
      std::printf(
          "  phases (slowest rank's median): forward %.2f ms, loss %.2f ms, backward %.2f ms, "
          "gradient sum %.2f ms, optimiser %.2f ms\n",
          result.median[1] * 1e3,
          result.median[2] * 1e3,
          result.median[3] * 1e3,
          result.median[4] * 1e3,
          result.median[5] * 1e3);
      std::fflush(stdout);
    }
  }
  std::sort(efficiencies.begin(), efficiencies.end());
  std::sort(machine.begin(), machine.end());
  std::printf(
      "weak-scaling efficiency at %lld ranks: median %.1f%% of %lld runs (lowest %.1f%%, highest "
      "%.1f%%)\n",
      static_cast<long long>(ranks),
      100.0 * median(efficiencies),
      static_cast<long long>(efficiencies.size()),
      100.0 * efficiencies.front(),
      100.0 * efficiencies.back());
  std::printf(
      "the machine alone (t(1) over the step of %lld independent one-rank processes running at "
      "once): median %.1f%% (lowest %.1f%%, highest %.1f%%)\n",
      static_cast<long long>(ranks),
      100.0 * median(machine),
      100.0 * machine.front(),
      100.0 * machine.back());
  // What communication cannot remove: at W ranks each rank's anchors meet W times the
  // candidates, so the loss's own forward and backward grow about W-fold.
  const auto ceiling = loss_ceiling(batch, ranks, dim);
  std::printf(
      "the loss alone (medcl's engine, forward and backward, one thread): %.2f ms per step at 1 "
      "rank, %.2f ms per rank at %lld ranks (its anchors against every rank's candidates): with "
      "communication free, the efficiency could reach at most t1 / (t1 + %.2f ms) = %.1f%% "
      "(t1 = %.2f ms, the median)\n",
      ceiling.first * 1e3,
      ceiling.second * 1e3,
      static_cast<long long>(ranks),
      (ceiling.second - ceiling.first) * 1e3,
      100.0 * median(one_rank) / (median(one_rank) + ceiling.second - ceiling.first),
      median(one_rank) * 1e3);
  std::filesystem::remove_all(base);
  return 0;
}
