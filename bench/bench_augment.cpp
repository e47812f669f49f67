// Throughput (samples/s) of a standard augmentation policy per modality on CPU, applied to a whole
// batch at once ("batched") and sample by sample in a loop ("loop", the same transforms on
// batches of one, then collated into a batch), as per-sample Python pipelines do.
//
//   medcl_bench_augment [--threads=1] [Google Benchmark flags...]

#include <medcl/augment/image.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>
#include <medcl/core/runtime.h>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace medcl::augment;

struct Setup {
  std::string name;
  Modality modality;
  TransformPtr policy;
  Batch batch;
};

template <typename T, typename... A>
TransformPtr mk(A... a) {
  return std::make_shared<T>(a...);
}

std::vector<Setup> setups() {
  torch::manual_seed(1);
  std::vector<Setup> s;
  s.push_back(
      {"ecg[256,12,2500]",
       Modality::ECG,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           mk<RandomCrop>(int64_t{2000}),
           mk<AmplitudeScale>(0.8, 1.25),
           mk<GaussianJitter>(0.02),
           mk<BaselineWander>(0.1, 0.5, 500.0),
           mk<PowerlineInterference>(50.0, 0.05, 500.0),
           mk<LeadDropout>(0.1),
           mk<TimeMask>(0.1)}),
       {torch::randn({256, 12, 2500}), {}, {}}});
  s.push_back(
      {"image2d[64,1,128,128]",
       Modality::Image2D,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           mk<RandomResizedCrop>(0.6),
           mk<RandomAffine>(10.0, 0.05, 0.05),
           mk<BrightnessContrast>(0.1, 0.1),
           mk<Gamma>(0.8, 1.25),
           mk<GaussianNoise>(0.02),
           mk<GaussianBlur>(0.0, 1.0)}),
       {torch::rand({64, 1, 128, 128}), {}, {}}});
  s.push_back(
      {"image3d[8,1,32,64,64]",
       Modality::Image3D,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           mk<RandomResizedCrop>(0.7), mk<BiasField>(0.2), mk<GaussianNoise>(0.02)}),
       {torch::rand({8, 1, 32, 64, 64}), {}, {}}});
  auto mask = torch::rand({1024, 30}).gt(0.2);
  s.push_back(
      {"tabular[1024,30]",
       Modality::Tabular,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           mk<FeatureMask>(0.2), std::make_shared<FeatureNoise>(torch::ones({30}), 0.1)}),
       {torch::randn({1024, 30}).masked_fill(mask.logical_not(), 0.0), mask, {}}});
  s.push_back(
      {"omics[256,2000]",
       Modality::Omics,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           mk<BinomialThinning>(0.5, 1.0), mk<LibrarySizeScale>(0.8, 1.25), mk<GeneDropout>(0.1)}),
       {torch::poisson(torch::full({256, 2000}, 5.0)), {}, {}}});
  auto ids = torch::randint(1, 100, {512, 64});
  ids.masked_fill_(torch::rand({512, 64}).lt(0.1), 9); // sentence separators
  s.push_back(
      {"text[512,64]",
       Modality::Text,
       std::make_shared<Sequence>(std::vector<TransformPtr>{
           mk<SentenceShuffle>(int64_t{9}), mk<TokenMask>(0.15, int64_t{103})}),
       {ids, ids.ne(0), {}}});
  return s;
}

void bm_batched(benchmark::State& state, Setup s) {
  Policy policy(s.modality, s.policy, 1);
  const int64_t b = s.batch.values.size(0);
  for (auto _ : state) {
    benchmark::DoNotOptimize(policy.views(s.batch, 1));
  }
  state.counters["samples_per_s"] =
      benchmark::Counter(static_cast<double>(b), benchmark::Counter::kIsIterationInvariantRate);
}

void bm_loop(benchmark::State& state, Setup s) {
  Policy policy(s.modality, s.policy, 1);
  const int64_t b = s.batch.values.size(0);
  std::vector<Batch> singles;
  for (int64_t i = 0; i < b; ++i) {
    Batch one;
    one.values = s.batch.values.slice(0, i, i + 1);
    if (s.batch.mask.defined())
      one.mask = s.batch.mask.slice(0, i, i + 1);
    singles.push_back(one);
  }
  for (auto _ : state) {
    // Per-sample pipelines collate their outputs into a batch, as a data loader's Stack does.
    std::vector<at::Tensor> outs;
    outs.reserve(singles.size());
    for (const auto& one : singles) {
      outs.push_back(policy.views(one, 1)[0].values);
    }
    benchmark::DoNotOptimize(at::cat(outs));
  }
  state.counters["samples_per_s"] =
      benchmark::Counter(static_cast<double>(b), benchmark::Counter::kIsIterationInvariantRate);
}

} // namespace

int main(int argc, char** argv) {
  int threads = 1;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::stoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  torch::set_num_threads(threads);
  std::printf("%s\n", medcl::runtime_info().summary().c_str());
  for (const auto& s : setups()) {
    benchmark::RegisterBenchmark(("batched/" + s.name).c_str(), bm_batched, s)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("loop/" + s.name).c_str(), bm_loop, s)
        ->Unit(benchmark::kMillisecond);
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
