#pragma once

/// \file
/// InfoNCE with an explicit set of negative keys: MoCo's loss with its queue.

#include <medcl/losses/contrastive_common.h>
#include <medcl/losses/distributed.h>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <optional>

namespace medcl {

/// Options of `info_nce_loss` and `InfoNCELoss`.
struct InfoNCELossOptions {
  /// Softmax temperature tau. Default: 0.07
  TORCH_ARG(double, temperature) = 0.07;
  /// How negatives are weighted. Default: NegativeWeighting::uniform()
  TORCH_ARG(NegativeWeighting, weighting) = NegativeWeighting::uniform();
  /// Dense or tiled similarity path. Default: SimilarityEngineOptions() (automatic)
  TORCH_ARG(SimilarityEngineOptions, engine) = {};
  /// Epsilon of the L2 normalisation. Default: 1e-12
  TORCH_ARG(double, eps) = 1e-12;
  /// Pairing strategy deciding positives and excluded negatives from sample keys (the keyed
  /// overload's `keys`). Default: none (only the query's own key is positive)
  TORCH_ARG(std::optional<PairingStrategy>, pairing) = std::nullopt;
  /// Refuse NaN/Inf embeddings. Default: true
  TORCH_ARG(bool, check_finite) = true;
  /// Data-parallel training: the process group whose ranks' batches form one global batch.
  /// Each rank's anchors are contrasted with every rank's candidates (gathered with gradient),
  /// positives and exclusions are decided on every rank's sample keys, and the loss returned is
  /// this rank's share: the shares summed over the ranks equal the one-process loss on the
  /// concatenated batch (see docs/distributed.md). Default: one process
  TORCH_ARG(dist::ProcessGroup, group) = {};
};

namespace detail {

/// The query/key checks shared by both forms of info_nce_loss.
inline void check_info_nce_inputs(
    const char* fn,
    const at::Tensor& query,
    const at::Tensor& positive_key,
    const InfoNCELossOptions& options) {
  detail::check_embedding(fn, "query", query, 2);
  detail::check_embedding(fn, "positive_key", positive_key, 2);
  TORCH_CHECK(
      query.sizes() == positive_key.sizes(),
      fn,
      ": query and positive_key must have the same shape, got ",
      query.sizes(),
      " and ",
      positive_key.sizes());
  detail::check_same_device_dtype(fn, "query", query, "positive_key", positive_key);
  detail::check_temperature(fn, "temperature", options.temperature());
  if (options.check_finite()) {
    detail::check_finite(fn, "query", query);
    detail::check_finite(fn, "positive_key", positive_key);
  }
}

/// The checks of a queue of negative keys against the queries.
inline void check_negative_keys(
    const char* fn,
    const at::Tensor& query,
    const at::Tensor& negative_keys,
    const InfoNCELossOptions& options) {
  TORCH_CHECK(
      !(negative_keys.dim() == 2 && negative_keys.size(0) == 0),
      fn,
      ": negative_keys has no rows (shape ",
      negative_keys.sizes(),
      "): an empty queue? A MemoryQueue holds no keys until the first enqueue; pass an undefined "
      "tensor until then and the batch's other keys serve as negatives, as the MoCo method does");
  detail::check_embedding(fn, "negative_keys", negative_keys, 2);
  TORCH_CHECK(
      negative_keys.size(1) == query.size(1),
      fn,
      ": negative_keys must have the query's embedding size ",
      query.size(1),
      ", got shape ",
      negative_keys.sizes());
  detail::check_same_device_dtype(fn, "query", query, "negative_keys", negative_keys);
  if (options.check_finite()) {
    detail::check_finite(fn, "negative_keys", negative_keys);
  }
}

/// The engine call shared by both forms: queries against the queue (the matched key as an extra
/// positive) or, without a queue, against the batch's keys.
inline at::Tensor info_nce_engine(
    const char* fn,
    const at::Tensor& query,
    const at::Tensor& positive_key,
    const at::Tensor& negative_keys,
    std::shared_ptr<const PairRule> rule,
    const InfoNCELossOptions& options) {
  auto q = l2_normalize(query, options.eps());
  auto k = l2_normalize(positive_key, options.eps());
  auto candidates = negative_keys.defined() ? l2_normalize(negative_keys, options.eps()) : k;
  auto p = make_contrast_problem(
      fn,
      q,
      candidates,
      std::move(rule),
      options.temperature(),
      options.weighting(),
      options.engine(),
      matmul_dtype(query));
  if (negative_keys.defined()) {
    p.paired = k;
  }
  return contrast_loss(std::move(p));
}

/// InfoNCE across the ranks of `options.group()`. With a queue (`negative_keys`, the same on
/// every rank, as MoCo keeps it): this rank's queries against the queue, the mean taken over
/// every rank's queries. Without: this rank's queries against every rank's positive keys
/// (gathered with gradient), positives and exclusions from every rank's `query_keys`. `keyed`:
/// the keyed overload (the pairing strategy applies). Returns this rank's share.
inline at::Tensor info_nce_distributed(
    const char* fn,
    const at::Tensor& query,
    const at::Tensor& positive_key,
    const at::Tensor& negative_keys,
    const SampleKeys& query_keys,
    const SampleKeys& negative_sample_keys,
    bool keyed,
    const InfoNCELossOptions& options) {
  const auto& g = options.group();
  const auto strategy = options.pairing().value_or(PairingStrategy::none());
  const auto error = local_check_error([&]() {
    check_rank_embedding(fn, "query", query, 2);
    check_rank_embedding(fn, "positive_key", positive_key, 2);
    TORCH_CHECK(
        query.sizes() == positive_key.sizes(),
        fn,
        ": query and positive_key must have the same shape, got ",
        query.sizes(),
        " and ",
        positive_key.sizes());
    check_same_device_dtype(fn, "query", query, "positive_key", positive_key);
    check_temperature(fn, "temperature", options.temperature());
    if (options.check_finite() && query.numel() > 0) {
      check_finite(fn, "query", query);
      check_finite(fn, "positive_key", positive_key);
    }
    if (keyed) {
      query_keys.check(fn, "query", query.size(0), query.device());
    }
    if (negative_keys.defined()) {
      check_negative_keys(fn, query, negative_keys, options);
      if (keyed) {
        negative_sample_keys.check(fn, "negative", negative_keys.size(0), query.device());
      }
    }
  });
  const bool shaped = query.defined() && query.dim() == 2;
  const std::vector<AgreedField> fields{
      agreed_gradient(positive_key),
      agreed_int("embedding size", shaped ? query.size(1) : -1),
      agreed_text("dtype", query.defined() ? std::string(c10::toString(query.scalar_type())) : ""),
      agreed_double("temperature", options.temperature()),
      agreed_double("eps", options.eps()),
      agreed_text("negative weighting", options.weighting().describe()),
      agreed_text("pairing strategy", keyed ? strategy.describe() : std::string("the key")),
      agreed_text("sample keys", keyed ? query_keys.names() : std::string("none")),
      agreed_int(
          "queue length (negative_keys rows)",
          negative_keys.defined() && negative_keys.dim() == 2 ? negative_keys.size(0) : -1)};
  // In-batch negatives: the keys are gathered with the agreement (the queue's are every rank's).
  at::Tensor k;
  if (error.empty()) {
    k = l2_normalize(positive_key, options.eps());
  }
  GlobalRows global;
  if (negative_keys.defined()) {
    agree_across_ranks(fn, g, fields, error);
  } else {
    global = agree_and_gather(
        fn,
        g,
        fields,
        error,
        k,
        1,
        shaped ? query.size(1) * (query.scalar_type() == at::kDouble ? 8 : 4) : 0,
        query.defined() ? query.device() : at::Device(at::kCPU));
  }
  const int64_t b = query.size(0);
  const auto lo = query.options().dtype(at::kLong);
  auto q = l2_normalize(query, options.eps());
  if (negative_keys.defined()) {
    // The queue is every rank's: only the mean is global.
    const int64_t m = negative_keys.size(0);
    std::shared_ptr<const PairRule> rule = keyed ? strategy.rule(
                                                       query_keys,
                                                       negative_sample_keys,
                                                       b,
                                                       m,
                                                       /*same_set=*/false,
                                                       /*diagonal_positive=*/false,
                                                       query.device(),
                                                       fn)
                                                 : std::make_shared<AllNegativeRule>(b, m, lo);
    auto p = make_contrast_problem(
        fn,
        q,
        l2_normalize(negative_keys, options.eps()),
        std::move(rule),
        options.temperature(),
        options.weighting(),
        options.engine(),
        matmul_dtype(query));
    p.paired = k;
    return distributed_contrast(std::move(p), g, q);
  }
  const int64_t m = global.all.size(0);
  std::shared_ptr<const PairRule> rule;
  if (!keyed) {
    rule = std::make_shared<IndexRule>(
        at::arange(b, lo) + global.row0,
        at::full({b}, -1, lo),
        m,
        "matched pair (row i with column i)");
  } else {
    const auto all = query_keys.size() < 0 ? query_keys : dist::gather_keys(query_keys, g);
    auto full = strategy.rule(
        all, all, m, m, /*same_set=*/false, /*diagonal_positive=*/true, query.device(), fn);
    rule = std::make_shared<RowBlockRule>(std::move(full), global.row0, b);
  }
  auto p = make_contrast_problem(
      fn,
      q,
      global.all,
      std::move(rule),
      options.temperature(),
      options.weighting(),
      options.engine(),
      matmul_dtype(query));
  if (!keyed) {
    // Every query's positive is its own key, with negatives once there are two keys in all: the
    // global count is known here, no all-reduce.
    return distributed_contrast(
        std::move(p), g, global.all, 1, known_row_counter(m > 1 ? b : 0, m > 1 ? m : 0));
  }
  return distributed_contrast(std::move(p), g, global.all);
}

} // namespace detail

namespace functional {

inline at::Tensor info_nce_loss(
    const at::Tensor& query,
    const at::Tensor& positive_key,
    const at::Tensor& negative_keys,
    const SampleKeys& query_keys,
    const SampleKeys& negative_sample_keys,
    const InfoNCELossOptions& options = {});

/// InfoNCE as MoCo computes it (He et al. 2020, https://arxiv.org/abs/1911.05722): on
/// L2-normalised vectors, the logits of query i are
/// \f$[q_i\cdot k^+_i,\; q_i\cdot k^-_1, \dots, q_i\cdot k^-_M] / \tau\f$ and the loss is the
/// cross-entropy with the positive at index 0, averaged over queries:
/// \f[ \mathcal{L} = \frac{1}{B}\sum_i -\log\frac{e^{q_i\cdot k^+_i/\tau}}
///     {e^{q_i\cdot k^+_i/\tau} + \sum_m e^{q_i\cdot k^-_m/\tau}} \f]
/// When `negative_keys` is undefined, the other queries' positive keys are the negatives
/// (in-batch InfoNCE, one direction of CLIP).
///
/// Shape: query [B, D], positive_key [B, D], negative_keys [M, D] (a queue) or undefined
/// -> 0-dim tensor (float32, float64 for double inputs).
///
/// Example:
///   auto loss = F::info_nce_loss(q, k.detach(), queue.keys());
inline at::Tensor info_nce_loss(
    const at::Tensor& query,
    const at::Tensor& positive_key,
    const at::Tensor& negative_keys = {},
    const InfoNCELossOptions& options = {}) {
  if (options.pairing().has_value()) {
    return info_nce_loss(query, positive_key, negative_keys, SampleKeys{}, SampleKeys{}, options);
  }
  constexpr const char* fn = "info_nce_loss";
  if (options.group().size() > 1) {
    return detail::info_nce_distributed(
        fn, query, positive_key, negative_keys, SampleKeys{}, SampleKeys{}, false, options);
  }
  detail::check_info_nce_inputs(fn, query, positive_key, options);
  const int64_t b = query.size(0);
  const auto lo = query.options().dtype(at::kLong);
  if (!negative_keys.defined()) {
    return detail::info_nce_engine(
        fn, query, positive_key, {}, std::make_shared<DiagonalRule>(b, lo), options);
  }
  detail::check_negative_keys(fn, query, negative_keys, options);
  auto rule = std::make_shared<AllNegativeRule>(b, negative_keys.size(0), lo);
  return detail::info_nce_engine(fn, query, positive_key, negative_keys, std::move(rule), options);
}

/// InfoNCE with sample keys: the queue is filtered by `options.pairing()` (default
/// PairingStrategy::none(): only the query's own key is positive). With
/// `PairingStrategy::none().exclude_same_patient()` a MoCo queue never uses an earlier record of
/// the query's own patient as a negative; with `PairingStrategy::same_patient()` those records
/// become positives. Without `negative_keys` the other queries' keys are the candidates (keyed
/// by `query_keys`), the matched key always positive.
///
/// Shape: query, positive_key [B, D]; negative_keys [M, D] or undefined; query_keys [B] each;
/// negative_sample_keys [M] each (e.g. MemoryQueue::sample_keys()) -> 0-dim tensor.
///
/// Example:
///   auto opts =
///   medcl::InfoNCELossOptions().pairing(medcl::PairingStrategy::none().exclude_same_patient());
///   auto loss = F::info_nce_loss(q, k.detach(), queue.keys(), batch_keys, queue.sample_keys(),
///   opts);
inline at::Tensor info_nce_loss(
    const at::Tensor& query,
    const at::Tensor& positive_key,
    const at::Tensor& negative_keys,
    const SampleKeys& query_keys,
    const SampleKeys& negative_sample_keys,
    const InfoNCELossOptions& options) {
  constexpr const char* fn = "info_nce_loss";
  if (options.group().size() > 1) {
    return detail::info_nce_distributed(
        fn, query, positive_key, negative_keys, query_keys, negative_sample_keys, true, options);
  }
  detail::check_info_nce_inputs(fn, query, positive_key, options);
  const int64_t b = query.size(0);
  query_keys.check(fn, "query", b, query.device());
  auto strategy = options.pairing().value_or(PairingStrategy::none());
  if (!negative_keys.defined()) {
    auto rule = strategy.rule(
        query_keys,
        query_keys,
        b,
        b,
        /*same_set=*/false,
        /*diagonal_positive=*/true,
        query.device(),
        fn);
    return detail::info_nce_engine(fn, query, positive_key, {}, std::move(rule), options);
  }
  detail::check_negative_keys(fn, query, negative_keys, options);
  const int64_t m = negative_keys.size(0);
  negative_sample_keys.check(fn, "negative", m, query.device());
  auto rule = strategy.rule(
      query_keys,
      negative_sample_keys,
      b,
      m,
      /*same_set=*/false,
      /*diagonal_positive=*/false,
      query.device(),
      fn);
  return detail::info_nce_engine(fn, query, positive_key, negative_keys, std::move(rule), options);
}

} // namespace functional

/// Module form of `functional::info_nce_loss`.
class InfoNCELossImpl : public torch::nn::Cloneable<InfoNCELossImpl> {
 public:
  explicit InfoNCELossImpl(InfoNCELossOptions opts = {}) : options(std::move(opts)) {
    reset();
  }
  /// Checks the options (nothing to allocate).
  void reset() override {
    detail::check_contrastive_options(
        "InfoNCELoss", options.temperature(), options.eps(), options.engine());
  }
  at::Tensor forward(
      const at::Tensor& query,
      const at::Tensor& positive_key,
      const at::Tensor& negative_keys = {}) {
    return functional::info_nce_loss(query, positive_key, negative_keys, options);
  }
  /// forward() with sample keys (a module has one `forward`; TORCH_MODULE needs it unique).
  at::Tensor forward_keyed(
      const at::Tensor& query,
      const at::Tensor& positive_key,
      const at::Tensor& negative_keys,
      const SampleKeys& query_keys,
      const SampleKeys& negative_sample_keys) {
    return functional::info_nce_loss(
        query, positive_key, negative_keys, query_keys, negative_sample_keys, options);
  }
  InfoNCELossOptions options;
};
TORCH_MODULE(InfoNCELoss);

} // namespace medcl
