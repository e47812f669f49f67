// Forward + backward time and peak memory of the InfoNCE-family losses over batch sizes, on the
// dense and tiled paths, next to two floors of the three matrix products of the same shapes that
// no implementation can avoid (similarities, and the two gradient products):
//  - the compute floor: the products into outputs allocated once, before timing;
//  - the allocating floor: the same products into fresh outputs each iteration (page faults of
//    a new N x M matrix included, as a step that allocates afresh pays them).
// "x_floor" is time / compute floor, "x_alloc_floor" time / allocating floor. A plain eager
// NT-Xent/CLIP (one logits matrix, autograd through ATen's cross-entropy) is measured too.
//
//   medcl_bench_losses [--device=cpu|cuda] [--dtype=float|bf16|half|double] [--batch=1024,4096]
//                      [--dim=128] [--families=nt_xent,supcon,clip,info_nce]
//                      [--paths=plain,dense,tiled] [--queue=16384] [--tile=0] [--threads=1]
//                      [--floor=1] [--warmup=1]
// Pairing families (keys: 4 records per patient, 8 sites): nt_xent_fnc (NT-Xent, same-patient
// negatives removed), supcon_patient (PCLR positives), pclr_site (PCLR, same-site negatives
// removed).
//                      [Google Benchmark flags...]

#include "memory_meter.h"

#include <medcl/medcl.h>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace F = medcl::functional;

struct Config {
  std::string device = "cpu";
  std::string dtype = "float";
  std::vector<int64_t> batches{1024, 4096};
  int64_t dim = 128;
  std::vector<std::string> families{"nt_xent", "supcon", "clip", "info_nce"};
  std::vector<std::string> paths{"plain", "dense", "tiled"};
  int64_t queue = 16384;
  int64_t tile = 0;
  int threads = 1;
  bool floor = true;
  bool warmup = true;
};

Config g_cfg;
std::map<std::string, double> g_floor_seconds;       // compute floor
std::map<std::string, double> g_alloc_floor_seconds; // allocating floor

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) {
      out.push_back(item);
    }
  }
  return out;
}

torch::Dtype parse_dtype(const std::string& s) {
  if (s == "float")
    return torch::kFloat;
  if (s == "double")
    return torch::kDouble;
  if (s == "bf16")
    return torch::kBFloat16;
  if (s == "half")
    return torch::kHalf;
  throw std::runtime_error("unknown --dtype " + s);
}

torch::Device device() {
  return g_cfg.device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
}

void sync() {
  if (g_cfg.device == "cuda") {
    torch::cuda::synchronize();
  }
}

// N anchors and M candidates of each family at batch size B.
std::pair<int64_t, int64_t> shape_of(const std::string& family, int64_t b) {
  if (family == "clip") {
    return {b, b};
  }
  if (family == "info_nce") {
    return {b, g_cfg.queue};
  }
  return {2 * b, 2 * b}; // two views of B samples
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// `allocate`: fresh outputs each iteration (the allocating floor); otherwise outputs allocated
// once and written with mm_out (the compute floor).
void bm_floor(benchmark::State& state, std::string family, int64_t b, bool allocate) {
  auto [n, m] = shape_of(family, b);
  if (!g_cfg.floor) {
    state.SkipWithError("floor not measured (--floor=0)");
    for (auto _ : state) {
    }
    return;
  }
  const double limit = g_cfg.device == "cuda" ? 17.5e9 : 4.5e9; // bytes of the N x M gradient
  if (static_cast<double>(n) * static_cast<double>(m) * 4.0 > limit) {
    state.SkipWithError(
        "floor not measured: the N x M gradient matrix alone would exceed the memory limit (16 GiB "
        "CUDA, 4 GiB CPU)");
    for (auto _ : state) {
    }
    return;
  }
  const auto opts = torch::TensorOptions().device(device()).dtype(
      device().is_cuda() ? parse_dtype(g_cfg.dtype)
                         : (g_cfg.dtype == "double" ? torch::kDouble : torch::kFloat));
  auto a = torch::randn({n, g_cfg.dim}, opts);
  auto c = torch::randn({m, g_cfg.dim}, opts);
  auto g = torch::randn({n, m}, opts);
  // Outputs of the compute floor, allocated and touched once.
  auto s_out = torch::mm(a, c.t());
  auto ga_out = torch::mm(g, c);
  auto gc_out = torch::mm(g.t(), a);
  double total = 0;
  for (auto _ : state) {
    sync();
    auto t0 = std::chrono::steady_clock::now();
    torch::Tensor s, ga, gc;
    if (allocate) {
      s = torch::mm(a, c.t());
      ga = torch::mm(g, c);
      // MoCo's queue receives no gradient: its floor is two products.
      gc = family == "info_nce" ? ga : torch::mm(g.t(), a);
    } else {
      s = torch::mm_out(s_out, a, c.t());
      ga = torch::mm_out(ga_out, g, c);
      gc = family == "info_nce" ? ga : torch::mm_out(gc_out, g.t(), a);
    }
    sync();
    const double dt = seconds_since(t0);
    total += dt;
    state.SetIterationTime(dt);
    benchmark::DoNotOptimize(s);
    benchmark::DoNotOptimize(ga);
    benchmark::DoNotOptimize(gc);
  }
  const double per = total / static_cast<double>(state.iterations());
  (allocate ? g_alloc_floor_seconds : g_floor_seconds)[family + "/" + std::to_string(b)] = per;
  state.counters["N"] = static_cast<double>(n);
  state.counters["M"] = static_cast<double>(m);
}

std::vector<torch::Tensor> make_inputs(const std::string& family, int64_t b) {
  const auto opts = torch::TensorOptions().device(device()).dtype(parse_dtype(g_cfg.dtype));
  const int64_t d = g_cfg.dim;
  std::vector<torch::Tensor> x;
  if (family == "nt_xent" || family == "nt_xent_fnc") {
    x = {torch::randn({b, d}, opts), torch::randn({b, d}, opts)};
  } else if (family == "supcon" || family == "supcon_patient" || family == "pclr_site") {
    x = {torch::randn({b, 2, d}, opts)};
  } else if (family == "clip") {
    x = {torch::randn({b, d}, opts), torch::randn({b, d}, opts)};
  } else {
    x = {
        torch::randn({b, d}, opts),
        torch::randn({b, d}, opts),
        torch::randn({g_cfg.queue, d}, opts)};
  }
  for (auto& t : x) {
    t.requires_grad_(family != "info_nce" || t.size(0) == b);
  }
  return x;
}

torch::Tensor plain_nt_xent(const torch::Tensor& z0, const torch::Tensor& z1, double tau) {
  namespace NF = torch::nn::functional;
  auto z = NF::normalize(torch::cat({z0, z1}, 0), NF::NormalizeFuncOptions().dim(1));
  const int64_t n = z.size(0);
  auto logits = torch::mm(z, z.t()) / tau;
  auto eye = torch::eye(n, torch::TensorOptions().dtype(torch::kBool).device(z.device()));
  logits = logits.masked_fill(eye, -1e4);
  auto labels = torch::remainder(
      torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(z.device())) + n / 2, n);
  return torch::nn::functional::cross_entropy(logits.to(torch::kFloat), labels);
}

torch::Tensor plain_clip(const torch::Tensor& x, const torch::Tensor& t, double scale) {
  namespace NF = torch::nn::functional;
  auto a = NF::normalize(x, NF::NormalizeFuncOptions().dim(1));
  auto b = NF::normalize(t, NF::NormalizeFuncOptions().dim(1));
  auto logits = (scale * torch::mm(a, b.t())).to(torch::kFloat);
  auto labels =
      torch::arange(x.size(0), torch::TensorOptions().dtype(torch::kLong).device(x.device()));
  return 0.5 * (NF::cross_entropy(logits, labels) + NF::cross_entropy(logits.t(), labels));
}

// Keys of a cohort with 4 records per patient and 8 sites, for the pairing benchmarks.
medcl::SampleKeys cohort_keys(int64_t b) {
  auto lo = torch::TensorOptions().dtype(torch::kLong).device(device());
  medcl::SampleKeys k;
  k.patient = torch::arange(b, lo).floor_divide(4);
  k.site = torch::remainder(k.patient, 8);
  return k;
}

torch::Tensor run_loss(
    const std::string& family,
    const std::string& path,
    const std::vector<torch::Tensor>& x,
    const torch::Tensor& labels) {
  medcl::SimilarityEngineOptions e;
  e.path(path == "dense" ? medcl::EnginePath::Dense : medcl::EnginePath::Tiled)
      .tile_size(g_cfg.tile);
  if (family == "nt_xent") {
    if (path == "plain")
      return plain_nt_xent(x[0], x[1], 0.5);
    return F::nt_xent_loss(x[0], x[1], medcl::NTXentLossOptions().engine(e).check_finite(false));
  }
  if (family == "supcon") {
    return F::supcon_loss(x[0], labels, medcl::SupConLossOptions().engine(e).check_finite(false));
  }
  if (family == "nt_xent_fnc") { // false-negative control: same-patient negatives removed
    auto keys = cohort_keys(x[0].size(0));
    auto s = medcl::PairingStrategy::instance().exclude_same_patient();
    return F::nt_xent_loss(
        x[0], x[1], keys, medcl::NTXentLossOptions().engine(e).pairing(s).check_finite(false));
  }
  if (family == "supcon_patient") { // PCLR: a patient's records are positives
    auto keys = cohort_keys(x[0].size(0));
    auto s = medcl::PairingStrategy::same_patient();
    return F::supcon_loss(
        x[0], keys, medcl::SupConLossOptions().engine(e).pairing(s).check_finite(false));
  }
  if (family == "pclr_site") { // PCLR with same-site negatives removed
    auto keys = cohort_keys(x[0].size(0));
    auto s = medcl::PairingStrategy::same_patient().exclude_same_site_negatives();
    return F::supcon_loss(
        x[0], keys, medcl::SupConLossOptions().engine(e).pairing(s).check_finite(false));
  }
  if (family == "clip") {
    if (path == "plain")
      return plain_clip(x[0], x[1], 1 / 0.07);
    return F::clip_loss(
        x[0], x[1], 1 / 0.07, medcl::CLIPLossOptions().engine(e).check_finite(false));
  }
  return F::info_nce_loss(
      x[0], x[1], x[2], medcl::InfoNCELossOptions().engine(e).check_finite(false));
}

void bm_loss(benchmark::State& state, std::string family, std::string path, int64_t b) {
  auto x = make_inputs(family, b);
  auto labels = torch::randint(
      0,
      std::max<int64_t>(2, b / 10),
      {b},
      torch::TensorOptions().dtype(torch::kLong).device(device()));
  medcl_bench::MemoryMeter meter(device());
  // Each path measures its own steady state: nothing kept from the previous benchmark.
  medcl::release_engine_workspaces();
  if (g_cfg.warmup) {
    // One untimed run: allocator growth, library handles and kernels' first launches.
    auto warm = run_loss(family, path, x, labels);
    warm.backward();
    for (auto& t : x) {
      t.mutable_grad() = torch::Tensor();
    }
    sync();
  }
  int64_t peak = 0;
  double total = 0;
  for (auto _ : state) {
    for (auto& t : x) {
      t.mutable_grad() = torch::Tensor();
    }
    sync();
    // The engine's workspace kept from the last step (CPU) is used during this one: it counts.
    const int64_t held = medcl::engine_workspace_bytes();
    meter.start();
    auto t0 = std::chrono::steady_clock::now();
    auto loss = run_loss(family, path, x, labels);
    loss.backward();
    sync();
    const double dt = seconds_since(t0);
    total += dt;
    state.SetIterationTime(dt);
    peak = std::max(peak, meter.peak_bytes() + held);
    benchmark::DoNotOptimize(loss);
  }
  state.counters["peak_MiB"] = static_cast<double>(peak) / (1024.0 * 1024.0);
  const double per = total / static_cast<double>(state.iterations());
  auto it = g_floor_seconds.find(family + "/" + std::to_string(b));
  if (it != g_floor_seconds.end() && it->second > 0) {
    state.counters["floor_ms"] = it->second * 1e3;
    state.counters["x_floor"] = per / it->second;
  }
  auto ia = g_alloc_floor_seconds.find(family + "/" + std::to_string(b));
  if (ia != g_alloc_floor_seconds.end() && ia->second > 0) {
    state.counters["alloc_floor_ms"] = ia->second * 1e3;
    state.counters["x_alloc_floor"] = per / ia->second;
  }
}

} // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* key) -> const char* {
      const size_t n = std::strlen(key);
      return a.compare(0, n, key) == 0 ? argv[i] + n : nullptr;
    };
    if (const char* v = value("--device="))
      g_cfg.device = v;
    else if (const char* v2 = value("--dtype="))
      g_cfg.dtype = v2;
    else if (const char* v3 = value("--batch=")) {
      g_cfg.batches.clear();
      for (const auto& s : split(v3))
        g_cfg.batches.push_back(std::stoll(s));
    } else if (const char* v4 = value("--dim="))
      g_cfg.dim = std::stoll(v4);
    else if (const char* v5 = value("--families="))
      g_cfg.families = split(v5);
    else if (const char* v6 = value("--paths="))
      g_cfg.paths = split(v6);
    else if (const char* v7 = value("--queue="))
      g_cfg.queue = std::stoll(v7);
    else if (const char* v8 = value("--tile="))
      g_cfg.tile = std::stoll(v8);
    else if (const char* v9 = value("--threads="))
      g_cfg.threads = std::stoi(v9);
    else if (const char* v10 = value("--floor="))
      g_cfg.floor = std::string(v10) != "0";
    else if (const char* v11 = value("--warmup="))
      g_cfg.warmup = std::string(v11) != "0";
    else
      rest.push_back(argv[i]);
  }
  TORCH_CHECK(
      g_cfg.device == "cpu" || g_cfg.device == "cuda",
      "--device must be cpu or cuda, got ",
      g_cfg.device);
  try {
    medcl::resolve_device(g_cfg.device); // a CPU-only LibTorch says so here
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "medcl_bench_losses: %s\n", e.what_without_backtrace());
    return 2;
  }
  torch::set_num_threads(g_cfg.threads);
  std::printf("%s\n", medcl::runtime_info().summary().c_str());
  std::printf(
      "device %s, dtype %s, D = %lld, threads %d\n",
      g_cfg.device.c_str(),
      g_cfg.dtype.c_str(),
      static_cast<long long>(g_cfg.dim),
      g_cfg.threads);
  for (const auto& fam : g_cfg.families) {
    for (int64_t b : g_cfg.batches) {
      benchmark::RegisterBenchmark(
          ("floor/" + fam + "/B=" + std::to_string(b)).c_str(), bm_floor, fam, b, false)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(
          ("alloc_floor/" + fam + "/B=" + std::to_string(b)).c_str(), bm_floor, fam, b, true)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      for (const auto& path : g_cfg.paths) {
        if (path == "plain" && fam != "nt_xent" && fam != "clip")
          continue;
        benchmark::RegisterBenchmark(
            (fam + "/" + path + "/B=" + std::to_string(b)).c_str(), bm_loss, fam, path, b)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
