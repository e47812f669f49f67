#pragma once

/// \file
/// NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

#include <medcl/losses/contrastive_common.h>
#include <medcl/losses/distributed.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <optional>

namespace medcl {

/// Options of `nt_xent_loss` and `NTXentLoss`.
///
/// Example:
///   auto opts = medcl::NTXentLossOptions().temperature(0.1);
struct NTXentLossOptions {
  /// Softmax temperature tau. Default: 0.5
  TORCH_ARG(double, temperature) = 0.5;
  /// How negatives are weighted. Default: NegativeWeighting::uniform()
  TORCH_ARG(NegativeWeighting, weighting) = NegativeWeighting::uniform();
  /// Dense or tiled similarity path. Default: SimilarityEngineOptions() (automatic)
  TORCH_ARG(SimilarityEngineOptions, engine) = {};
  /// Epsilon of the L2 normalisation. Default: 1e-12
  TORCH_ARG(double, eps) = 1e-12;
  /// Pairing strategy deciding positives and excluded negatives from sample keys (the keyed
  /// overload's `keys`). Default: none (the other view of each sample)
  TORCH_ARG(std::optional<PairingStrategy>, pairing) = std::nullopt;
  /// Refuse NaN/Inf embeddings (one reduction and a host sync). Default: true
  TORCH_ARG(bool, check_finite) = true;
  /// Data-parallel training: the process group whose ranks' batches form one global batch.
  /// Each rank's anchors are contrasted with every rank's candidates (gathered with gradient),
  /// positives and exclusions are decided on every rank's sample keys, and the loss returned is
  /// this rank's share: the shares summed over the ranks equal the one-process loss on the
  /// concatenated batch (see docs/distributed.md). Default: one process
  TORCH_ARG(dist::ProcessGroup, group) = {};
};

namespace detail {

/// The argument checks shared by both forms of nt_xent_loss.
inline void check_nt_xent_inputs(
    const char* fn,
    const at::Tensor& z0,
    const at::Tensor& z1,
    const NTXentLossOptions& options) {
  detail::check_embedding(fn, "z0", z0, 2);
  detail::check_embedding(fn, "z1", z1, 2);
  TORCH_CHECK(
      z0.sizes() == z1.sizes(),
      fn,
      ": z0 and z1 must have the same shape, got ",
      z0.sizes(),
      " and ",
      z1.sizes());
  detail::check_same_device_dtype(fn, "z0", z0, "z1", z1);
  detail::check_temperature(fn, "temperature", options.temperature());
  if (options.check_finite()) {
    detail::check_finite(fn, "z0", z0);
    detail::check_finite(fn, "z1", z1);
  }
}

/// The engine call shared by both forms: the 2B normalised views against themselves under `rule`.
inline at::Tensor nt_xent_engine(
    const char* fn,
    const at::Tensor& z0,
    const at::Tensor& z1,
    std::shared_ptr<const PairRule> rule,
    const NTXentLossOptions& options) {
  auto z = l2_normalize(at::cat({z0, z1}, 0), options.eps());
  return contrast_loss(make_contrast_problem(
      fn,
      z,
      z,
      std::move(rule),
      options.temperature(),
      options.weighting(),
      options.engine(),
      matmul_dtype(z0)));
}

/// NT-Xent across the ranks of `options.group()`: this rank's 2b views against every rank's
/// (gathered with gradient), positives and exclusions from every rank's keys (`keys` null: the
/// other view). Returns this rank's share of the global loss.
inline at::Tensor nt_xent_distributed(
    const char* fn,
    const at::Tensor& z0,
    const at::Tensor& z1,
    const SampleKeys* keys,
    const NTXentLossOptions& options) {
  const auto& g = options.group();
  const auto error = local_check_error([&]() {
    check_rank_embedding(fn, "z0", z0, 2);
    check_rank_embedding(fn, "z1", z1, 2);
    TORCH_CHECK(
        z0.sizes() == z1.sizes(),
        fn,
        ": z0 and z1 must have the same shape, got ",
        z0.sizes(),
        " and ",
        z1.sizes());
    check_same_device_dtype(fn, "z0", z0, "z1", z1);
    check_temperature(fn, "temperature", options.temperature());
    if (options.check_finite() && z0.numel() > 0) {
      check_finite(fn, "z0", z0);
      check_finite(fn, "z1", z1);
    }
    if (keys != nullptr) {
      keys->check(fn, "sample", z0.size(0), z0.device());
    }
  });
  const bool shaped = z0.defined() && z0.dim() == 2;
  at::Tensor z;
  if (error.empty()) {
    z = l2_normalize(at::cat({z0, z1}, 0), options.eps());
  }
  auto global = agree_and_gather(
      fn,
      g,
      {agreed_gradient(z0, z1),
       agreed_int("embedding size", shaped ? z0.size(1) : -1),
       agreed_text("dtype", z0.defined() ? std::string(c10::toString(z0.scalar_type())) : ""),
       agreed_double("temperature", options.temperature()),
       agreed_double("eps", options.eps()),
       agreed_text("negative weighting", options.weighting().describe()),
       agreed_text(
           "pairing strategy",
           keys == nullptr ? std::string("the other view")
                           : options.pairing().value_or(PairingStrategy::instance()).describe()),
       agreed_text("sample keys", keys == nullptr ? std::string("none") : keys->names())},
      error,
      z,
      2,
      shaped ? z0.size(1) * (z0.scalar_type() == at::kDouble ? 8 : 4) : 0,
      z0.defined() ? z0.device() : at::Device(at::kCPU));
  const int64_t b = z0.size(0);
  const int64_t m = global.all.size(0);
  const auto lo = z0.options().dtype(at::kLong);
  std::shared_ptr<const PairRule> rule;
  if (keys == nullptr) {
    auto local = at::arange(2 * b, lo);
    rule = std::make_shared<IndexRule>(
        (local + b).remainder(std::max<int64_t>(2 * b, 1)) + global.row0,
        local + global.row0,
        m,
        "instance: the other view of the same sample");
  } else {
    auto all = gather_view_keys(*keys, b, 2, global.sample_offset, z0.device(), g);
    auto strategy = options.pairing().value_or(PairingStrategy::instance());
    auto full = strategy.rule(
        all, all, m, m, /*same_set=*/true, /*diagonal_positive=*/false, z0.device(), fn);
    rule = std::make_shared<RowBlockRule>(std::move(full), global.row0, 2 * b);
  }
  auto p = make_contrast_problem(
      fn,
      z,
      global.all,
      std::move(rule),
      options.temperature(),
      options.weighting(),
      options.engine(),
      matmul_dtype(z0));
  if (keys == nullptr) {
    // Every row's positive is its other view, and it has negatives once the global batch holds
    // more than one sample: the global count is known here, no all-reduce.
    const bool counts_rows = m > 2;
    return distributed_contrast(
        std::move(p),
        g,
        global.all,
        1,
        known_row_counter(counts_rows ? 2 * b : 0, counts_rows ? m : 0));
  }
  return distributed_contrast(std::move(p), g, global.all);
}

} // namespace detail

namespace functional {

/// NT-Xent loss of SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709), as lightly's
/// `NTXentLoss(temperature)` computes it without a memory bank.
///
/// The 2B embeddings \f$z = [z_0; z_1]\f$ are L2-normalised; anchor i's positive is its other
/// view p(i) and every other embedding but itself is a negative:
/// \f[ \mathcal{L} = \frac{1}{2B}\sum_{i=1}^{2B} -\log
///     \frac{e^{\cos(z_i, z_{p(i)})/\tau}}{\sum_{k\ne i} e^{\cos(z_i, z_k)/\tau}} \f]
/// With a non-uniform `weighting` the denominator is reweighted (see NegativeWeighting).
/// With B = 1 no anchor has a negative: the loss is 0 with a warning.
///
/// Shape: z0 [B, D], z1 [B, D] (any floating dtype, CPU or CUDA) -> 0-dim tensor, float32
/// (float64 for double inputs).
///
/// Example:
///   auto loss = medcl::functional::nt_xent_loss(proj(view0), proj(view1));
inline at::Tensor nt_xent_loss(
    const at::Tensor& z0,
    const at::Tensor& z1,
    const SampleKeys& keys,
    const NTXentLossOptions& options = {});

inline at::Tensor
nt_xent_loss(const at::Tensor& z0, const at::Tensor& z1, const NTXentLossOptions& options = {}) {
  if (options.pairing().has_value()) {
    return nt_xent_loss(z0, z1, SampleKeys{}, options);
  }
  constexpr const char* fn = "nt_xent_loss";
  if (options.group().size() > 1) {
    return detail::nt_xent_distributed(fn, z0, z1, nullptr, options);
  }
  detail::check_nt_xent_inputs(fn, z0, z1, options);
  const int64_t b = z0.size(0);
  auto rule = std::make_shared<TwoViewRule>(b, z0.options().dtype(at::kLong));
  return detail::nt_xent_engine(fn, z0, z1, std::move(rule), options);
}

/// NT-Xent with sample keys: the 2B embeddings' positives and excluded negatives follow
/// `options.pairing()` (default PairingStrategy::instance(), i.e. plain NT-Xent), evaluated from
/// `keys` (of the B samples, shared by both views; `instance` defaults to the sample index).
/// With PairingStrategy::same_patient() every record of the anchor's patient in the batch is a
/// positive (PCLR); `.exclude_same_patient()` keeps them out of the negatives instead.
///
/// Shape: z0, z1 [B, D]; every defined key [B] (int64; time floating) -> 0-dim tensor.
///
/// Example:
///   medcl::SampleKeys keys;
///   keys.patient = patient_ids;
///   auto opts =
///   medcl::NTXentLossOptions().pairing(medcl::PairingStrategy::instance().exclude_same_patient());
///   auto loss = F::nt_xent_loss(z0, z1, keys, opts);
inline at::Tensor nt_xent_loss(
    const at::Tensor& z0,
    const at::Tensor& z1,
    const SampleKeys& keys,
    const NTXentLossOptions& options) {
  constexpr const char* fn = "nt_xent_loss";
  if (options.group().size() > 1) {
    return detail::nt_xent_distributed(fn, z0, z1, &keys, options);
  }
  detail::check_nt_xent_inputs(fn, z0, z1, options);
  const int64_t b = z0.size(0);
  auto all = detail::stacked_view_keys(fn, keys, b, 2, z0.device());
  auto strategy = options.pairing().value_or(PairingStrategy::instance());
  auto rule = strategy.rule(
      all, all, 2 * b, 2 * b, /*same_set=*/true, /*diagonal_positive=*/false, z0.device(), fn);
  return detail::nt_xent_engine(fn, z0, z1, std::move(rule), options);
}

} // namespace functional

/// Module form of `functional::nt_xent_loss`.
///
/// Example:
///   medcl::NTXentLoss criterion(medcl::NTXentLossOptions().temperature(0.2));
///   auto loss = criterion(z0, z1);
class NTXentLossImpl : public torch::nn::Cloneable<NTXentLossImpl> {
 public:
  explicit NTXentLossImpl(NTXentLossOptions opts = {}) : options(std::move(opts)) {
    reset();
  }
  /// Checks the options (nothing to allocate).
  void reset() override {
    detail::check_contrastive_options(
        "NTXentLoss", options.temperature(), options.eps(), options.engine());
  }
  at::Tensor forward(const at::Tensor& z0, const at::Tensor& z1) {
    return functional::nt_xent_loss(z0, z1, options);
  }
  /// forward() with sample keys (a module has one `forward`; TORCH_MODULE needs it unique).
  at::Tensor forward_keyed(const at::Tensor& z0, const at::Tensor& z1, const SampleKeys& keys) {
    return functional::nt_xent_loss(z0, z1, keys, options);
  }
  NTXentLossOptions options;
};
TORCH_MODULE(NTXentLoss);

} // namespace medcl
