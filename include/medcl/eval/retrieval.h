#pragma once

/// \file
/// Embedding-space retrieval (recall@K, median rank, nearest neighbours for report examples) and
/// the alignment / uniformity measures of Wang & Isola (2020).

#include <medcl/core/checks.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

namespace medcl {
namespace eval {

/// Options of the retrieval functions.
struct RetrievalOptions {
  /// Query rows compared with the whole gallery at once (memory: chunk × M similarities).
  /// Default: 1024
  TORCH_ARG(int64_t, chunk) = 1024;
  /// Floor of the norms when normalising. Default: 1e-12
  TORCH_ARG(double, eps) = 1e-12;
};

namespace detail {

inline void
check_retrieval_embeddings(const char* fn, const at::Tensor& query, const at::Tensor& gallery) {
  TORCH_CHECK(
      query.defined() && gallery.defined() && query.dim() == 2 && gallery.dim() == 2,
      fn,
      ": expected [Q, D] queries and [M, D] gallery, got ",
      query.defined() ? query.sizes() : at::IntArrayRef{},
      " and ",
      gallery.defined() ? gallery.sizes() : at::IntArrayRef{});
  TORCH_CHECK(
      at::isFloatingType(query.scalar_type()) && at::isFloatingType(gallery.scalar_type()),
      fn,
      ": expected floating embeddings, got ",
      query.scalar_type(),
      " and ",
      gallery.scalar_type());
  TORCH_CHECK(
      query.size(1) == gallery.size(1),
      fn,
      ": query and gallery embedding sizes differ: ",
      query.size(1),
      " vs ",
      gallery.size(1));
  TORCH_CHECK(
      query.size(0) > 0 && gallery.size(0) > 0,
      fn,
      ": empty query set or gallery (",
      query.sizes(),
      ", ",
      gallery.sizes(),
      ")");
  TORCH_CHECK(
      medcl::detail::all_finite(query) && medcl::detail::all_finite(gallery),
      fn,
      ": embeddings contain NaN or Inf");
}

inline at::Tensor unit_rows(const at::Tensor& e, double eps) {
  auto f = e.scalar_type() == at::kDouble ? e : e.to(at::kFloat);
  return f / f.norm(2, 1, true).clamp_min(eps);
}

// Rank (1-based) of the best-matching gallery item of each query: 1 + the number of gallery items
// with another id whose similarity is >= that of the best match (ties count against the query);
// 0 for a query whose id no gallery item has.
inline std::vector<int64_t> match_ranks(
    const char* fn,
    const at::Tensor& query,
    const at::Tensor& gallery,
    const at::Tensor& query_ids,
    const at::Tensor& gallery_ids,
    const RetrievalOptions& options) {
  check_retrieval_embeddings(fn, query, gallery);
  TORCH_CHECK(
      query_ids.defined() && query_ids.dim() == 1 && query_ids.size(0) == query.size(0) &&
          query_ids.scalar_type() == at::kLong,
      fn,
      ": expected int64 query_ids of shape [",
      query.size(0),
      "], got ",
      query_ids.defined() ? query_ids.sizes() : at::IntArrayRef{});
  TORCH_CHECK(
      gallery_ids.defined() && gallery_ids.dim() == 1 && gallery_ids.size(0) == gallery.size(0) &&
          gallery_ids.scalar_type() == at::kLong,
      fn,
      ": expected int64 gallery_ids of shape [",
      gallery.size(0),
      "], got ",
      gallery_ids.defined() ? gallery_ids.sizes() : at::IntArrayRef{});
  TORCH_CHECK(options.chunk() >= 1, fn, ": chunk must be >= 1, got ", options.chunk());
  c10::NoGradGuard no_grad;
  auto q = unit_rows(query, options.eps());
  auto g = unit_rows(gallery, options.eps()).to(q.scalar_type());
  auto qid = query_ids.to(q.device());
  auto gid = gallery_ids.to(q.device());
  std::vector<int64_t> ranks;
  ranks.reserve(static_cast<size_t>(q.size(0)));
  for (int64_t s = 0; s < q.size(0); s += options.chunk()) {
    const int64_t e = std::min(q.size(0), s + options.chunk());
    auto sim = q.slice(0, s, e).mm(g.t());                            // [c, M]
    auto same = qid.slice(0, s, e).unsqueeze(1).eq(gid.unsqueeze(0)); // [c, M]
    // Cosines lie in [-1, 1]: -3 marks "no match" without a dtype-dependent extreme.
    auto best = sim.masked_fill(same.logical_not(), -3.0).amax(1, true); // [c, 1]
    auto ahead = (sim.ge(best) & same.logical_not()).sum(1);
    auto found = same.any(1);
    auto r = at::where(found, ahead + 1, at::zeros_like(ahead)).to(at::kCPU).contiguous();
    ranks.insert(ranks.end(), r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
  }
  return ranks;
}

} // namespace detail

/// Recall@K of cosine retrieval: the fraction of queries whose top-K gallery items include one with
/// the query's id (e.g. the same patient, or the paired report). A query's rank is that of its best
/// matching item, 1 + the number of items with another id at least as similar (ties count against
/// the query); a query whose id no gallery item holds counts as a miss. One value per K.
///
/// Shape: query [Q, D], gallery [M, D], query_ids [Q] int64, gallery_ids [M] int64.
///
/// Example:
///   auto r = medcl::eval::recall_at_k(z_images, z_reports, study, study, {1, 5, 10});
inline std::vector<double> recall_at_k(
    const at::Tensor& query,
    const at::Tensor& gallery,
    const at::Tensor& query_ids,
    const at::Tensor& gallery_ids,
    const std::vector<int64_t>& ks,
    const RetrievalOptions& options = {}) {
  TORCH_CHECK(!ks.empty(), "recall_at_k: no K requested");
  for (int64_t k : ks) {
    TORCH_CHECK(k >= 1, "recall_at_k: K must be >= 1, got ", k);
  }
  auto ranks = detail::match_ranks("recall_at_k", query, gallery, query_ids, gallery_ids, options);
  std::vector<double> out;
  for (int64_t k : ks) {
    int64_t hits = 0;
    for (int64_t r : ranks) {
      hits += (r >= 1 && r <= k) ? 1 : 0;
    }
    out.push_back(static_cast<double>(hits) / static_cast<double>(ranks.size()));
  }
  return out;
}

/// Median (over the queries that have a match in the gallery) of the rank of the best-matching
/// item, ranks as in `recall_at_k` (1 is best); the mean of the two middle ranks for an even count.
/// An error when no query has a match.
///
/// Shape: as `recall_at_k`.
///
/// Example:
///   double mr = medcl::eval::median_rank(z_images, z_reports, study, study);
inline double median_rank(
    const at::Tensor& query,
    const at::Tensor& gallery,
    const at::Tensor& query_ids,
    const at::Tensor& gallery_ids,
    const RetrievalOptions& options = {}) {
  auto ranks = detail::match_ranks("median_rank", query, gallery, query_ids, gallery_ids, options);
  std::vector<int64_t> found;
  for (int64_t r : ranks) {
    if (r > 0) {
      found.push_back(r);
    }
  }
  TORCH_CHECK(!found.empty(), "median_rank: no query id appears among the gallery ids");
  std::sort(found.begin(), found.end());
  const size_t n = found.size();
  return n % 2 == 1 ? static_cast<double>(found[n / 2])
                    : 0.5 * static_cast<double>(found[n / 2 - 1] + found[n / 2]);
}

/// The k most similar gallery items of each query.
struct Neighbours {
  /// [Q, k] int64 gallery indices, most similar first.
  at::Tensor indices;
  /// [Q, k] cosine similarities (float32, or float64 for double input).
  at::Tensor similarities;
};

/// The k nearest gallery items of each query by cosine similarity (for retrieval examples shown to
/// a clinician: the query, its neighbours and their metadata). k is capped at the gallery size.
///
/// Shape: query [Q, D], gallery [M, D] -> indices, similarities [Q, min(k, M)] (CPU).
///
/// Example:
///   auto nn = medcl::eval::nearest_neighbours(z_test.slice(0, 0, 5), z_train, 3);
inline Neighbours nearest_neighbours(
    const at::Tensor& query,
    const at::Tensor& gallery,
    int64_t k,
    const RetrievalOptions& options = {}) {
  constexpr const char* fn = "nearest_neighbours";
  detail::check_retrieval_embeddings(fn, query, gallery);
  TORCH_CHECK(k >= 1, fn, ": k must be >= 1, got ", k);
  TORCH_CHECK(options.chunk() >= 1, fn, ": chunk must be >= 1, got ", options.chunk());
  c10::NoGradGuard no_grad;
  auto q = detail::unit_rows(query, options.eps());
  auto g = detail::unit_rows(gallery, options.eps()).to(q.scalar_type());
  const int64_t kk = std::min(k, g.size(0));
  std::vector<at::Tensor> idx;
  std::vector<at::Tensor> sims;
  for (int64_t s = 0; s < q.size(0); s += options.chunk()) {
    const int64_t e = std::min(q.size(0), s + options.chunk());
    auto top = q.slice(0, s, e).mm(g.t()).topk(kk, 1, /*largest=*/true, /*sorted=*/true);
    sims.push_back(std::get<0>(top).to(at::kCPU));
    idx.push_back(std::get<1>(top).to(at::kCPU));
  }
  return {at::cat(idx), at::cat(sims)};
}

/// Which records to show as retrieval examples, spread across patients: positions into `patients`
/// (the patient id of each candidate record, e.g. the test records in order). The distinct patients
/// are taken in order of first appearance; `count` of them, evenly spaced (the patient at
/// floor((2i + 1) P / (2 count)) of the P, i = 0 .. count - 1), each give their first record, so no
/// two examples share a patient while there are patients to spare. When `count` exceeds P, every
/// patient's first record is taken and then, round by round, each patient's next record, until
/// min(count, N) positions are chosen. Deterministic (no seed); positions of the first round come
/// in ascending order.
///
/// Example:
///   auto q = medcl::eval::example_queries(test_patients, 3); // three records, three patients
///   auto nn = medcl::eval::nearest_neighbours(
///       z_test.index_select(0, at::tensor(q, at::kLong)), z_train, 5);
inline std::vector<int64_t> example_queries(const std::vector<int64_t>& patients, int64_t count) {
  TORCH_CHECK(count >= 0, "example_queries: count must be >= 0, got ", count);
  // The positions of each distinct patient's records, patients by first appearance.
  std::vector<std::vector<int64_t>> records;
  std::map<int64_t, size_t> slot_of; // patient -> index into `records`
  for (size_t i = 0; i < patients.size(); ++i) {
    const auto [it, added] = slot_of.emplace(patients[i], records.size());
    if (added) {
      records.emplace_back();
    }
    records[it->second].push_back(static_cast<int64_t>(i));
  }
  const auto n_patients = static_cast<int64_t>(records.size());
  const int64_t want = std::min<int64_t>(count, static_cast<int64_t>(patients.size()));
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(want));
  if (want <= n_patients) {
    for (int64_t i = 0; i < want; ++i) {
      const int64_t slot = (2 * i + 1) * n_patients / (2 * want);
      out.push_back(records[static_cast<size_t>(slot)].front());
    }
    return out;
  }
  for (size_t round = 0; static_cast<int64_t>(out.size()) < want; ++round) {
    for (const auto& r : records) {
      if (round < r.size() && static_cast<int64_t>(out.size()) < want) {
        out.push_back(r[round]);
      }
    }
  }
  return out;
}

/// Alignment of positive pairs (Wang & Isola 2020, https://arxiv.org/abs/2005.10242) on normalised
/// embeddings, lower is better:
/// \f[ \mathcal{L}_{align} = \frac{1}{N} \sum_i \lVert f(x_i) - f(y_i) \rVert_2^{\alpha} \f]
/// computed in float64.
///
/// Shape: z0, z1 [N, D] (row i of each is a positive pair).
///
/// Example:
///   double a = medcl::eval::alignment(encoder(view1), encoder(view2));
inline double alignment(const at::Tensor& z0, const at::Tensor& z1, double alpha = 2.0) {
  constexpr const char* fn = "alignment";
  TORCH_CHECK(
      z0.defined() && z1.defined() && z0.dim() == 2 && z0.sizes() == z1.sizes() && z0.size(0) > 0,
      fn,
      ": expected two non-empty [N, D] embeddings of the same shape, got ",
      z0.defined() ? z0.sizes() : at::IntArrayRef{},
      " and ",
      z1.defined() ? z1.sizes() : at::IntArrayRef{});
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0, fn, ": alpha must be > 0, got ", alpha);
  TORCH_CHECK(
      medcl::detail::all_finite(z0) && medcl::detail::all_finite(z1),
      fn,
      ": embeddings contain NaN or Inf");
  c10::NoGradGuard no_grad;
  auto a = detail::unit_rows(z0.to(at::kDouble), 1e-12);
  auto b = detail::unit_rows(z1.to(at::kDouble), 1e-12);
  return (a - b).norm(2, 1).pow(alpha).mean().item<double>();
}

/// Uniformity (Wang & Isola 2020, https://arxiv.org/abs/2005.10242) of normalised embeddings, lower
/// is more uniform:
/// \f[ \mathcal{L}_{uniform} = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t \lVert f(x_i) - f(x_j)
/// \rVert_2^2} \f] over distinct pairs, by log-sum-exp in float64 over chunks of `chunk` rows
/// (memory chunk × N).
///
/// Shape: z [N, D], N >= 2.
///
/// Example:
///   double u = medcl::eval::uniformity(encoder(x));
inline double uniformity(const at::Tensor& z, double t = 2.0, int64_t chunk = 1024) {
  constexpr const char* fn = "uniformity";
  TORCH_CHECK(
      z.defined() && z.dim() == 2 && z.size(0) >= 2 && z.size(1) > 0,
      fn,
      ": expected [N, D] embeddings with N >= 2, got ",
      z.defined() ? z.sizes() : at::IntArrayRef{});
  TORCH_CHECK(std::isfinite(t) && t > 0, fn, ": t must be > 0, got ", t);
  TORCH_CHECK(chunk >= 1, fn, ": chunk must be >= 1, got ", chunk);
  TORCH_CHECK(medcl::detail::all_finite(z), fn, ": embeddings contain NaN or Inf");
  c10::NoGradGuard no_grad;
  auto u = detail::unit_rows(z.to(at::kDouble), 1e-12);
  const int64_t n = u.size(0);
  std::vector<at::Tensor> parts;
  for (int64_t s = 0; s < n - 1; s += chunk) {
    const int64_t e = std::min(n - 1, s + chunk);
    // Row i pairs with columns j > i only.
    auto sq = (2 - 2 * u.slice(0, s, e).mm(u.t())).clamp_min(0);
    auto rows = at::arange(s, e, u.options().dtype(at::kLong)).unsqueeze(1);
    auto cols = at::arange(n, u.options().dtype(at::kLong)).unsqueeze(0);
    parts.push_back(at::logsumexp((-t * sq).masked_select(cols.gt(rows)), 0).reshape({1}));
  }
  const double pairs = 0.5 * static_cast<double>(n) * static_cast<double>(n - 1);
  return at::logsumexp(at::cat(parts), 0).item<double>() - std::log(pairs);
}

} // namespace eval
} // namespace medcl
