#pragma once

/// \file
/// Batch samplers for `torch::data` datasets that decide what a batch contains: k records per
/// patient (so that patient positives exist), balanced classes, or sites in proportion. Each is
/// deterministic for a seed and an epoch (reset() moves to the next epoch), and can be sharded
/// over the ranks of a data-parallel run (`shard(rank, world_size)`): every rank then takes its
/// slice of the one global batch that a single process would take (docs/distributed.md).

#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <torch/data/samplers/base.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace medcl {
namespace detail {

/// A generator for (seed, epoch, stream): the same triple always gives the same sequence.
inline std::mt19937_64 epoch_rng(uint64_t seed, uint64_t epoch, uint64_t stream = 0) {
  std::seed_seq seq{
      static_cast<uint32_t>(seed),
      static_cast<uint32_t>(seed >> 32),
      static_cast<uint32_t>(epoch),
      static_cast<uint32_t>(epoch >> 32),
      static_cast<uint32_t>(stream)};
  return std::mt19937_64(seq);
}

/// Groups of sample indices by key value, in order of first appearance.
inline std::vector<std::vector<size_t>> group_by(const std::vector<int64_t>& keys) {
  std::map<int64_t, size_t> slot;
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = slot.find(keys[i]);
    if (it == slot.end()) {
      slot[keys[i]] = groups.size();
      groups.push_back({i});
    } else {
      groups[it->second].push_back(i);
    }
  }
  return groups;
}

/// Rows [begin, end) of rank `rank` when `units` units are shared by `world_size` ranks in rank
/// order as evenly as possible: the first `units % world_size` ranks get one unit more. A rank gets
/// no unit only when there are fewer units than ranks.
inline std::pair<size_t, size_t> even_share(size_t units, size_t rank, size_t world_size) {
  const size_t base = units / world_size;
  const size_t extra = units % world_size;
  const size_t begin = rank * base + std::min(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

/// Base for samplers that plan a whole epoch as one index sequence (the plan), then hand it out
/// in batches. The plan depends only on (seed, epoch) (and, for ClassBalancedSampler, on the
/// global batch size), so every rank of a data-parallel run makes the same one.
///
/// Sharding (`shard(rank, world_size)`): `next(b)` takes the next `world_size * b` indices of the
/// plan — the global batch, exactly what an unsharded sampler returns from `next(world_size * b)`
/// — and returns this rank's contiguous slice of it. A full global batch gives rank r the indices
/// [r·b, (r+1)·b) of it; the last, shorter global batch is shared as evenly as possible in rank
/// order (in whole units: k records of PatientGroupedSampler, single indices otherwise; the
/// first ranks get one unit more). Every rank therefore sees the same number of batches,
/// ⌈plan size / (world_size·b)⌉ per epoch, and the concatenation of the ranks' slices in rank
/// order is the global batch. A rank gets an empty vector (not nullopt: it must still take part
/// in the step's collectives) only when the last global batch has fewer units than there are
/// ranks; medcl's losses accept ranks with no rows, but a `torch::data` dataset whose batches are
/// stacked (`Stack`) cannot make a batch of nothing: set `drop_last(true)` there, or choose a
/// batch size that leaves no such tail. Unlike PyTorch's `DistributedSampler` (rank r takes
/// every W-th index and the epoch is padded with repeated samples), the slices are contiguous and
/// nothing is repeated, so that the global batch is the one-process batch.
class EpochPlanSampler : public torch::data::samplers::Sampler<std::vector<size_t>> {
 public:
  explicit EpochPlanSampler(uint64_t seed) : seed_(seed) {}

  /// Moves to the next epoch (the size cannot change: the keys fix the data set).
  void reset(c10::optional<size_t> new_size = c10::nullopt) override {
    TORCH_CHECK(
        !new_size.has_value() || *new_size == size(),
        name(),
        ": the data set size is fixed by the keys (",
        size(),
        "), got reset(",
        new_size.value_or(0),
        ")");
    if (planned_) {
      ++epoch_;
    }
    plan_ = make_plan(epoch_);
    planned_ = true;
    pos_ = 0;
  }

  /// Makes this sampler hand out rank `rank`'s slice of each global batch of `world_size` ranks
  /// (see the class comment); `shard(0, 1)` is the unsharded sampler. Call it on every rank with
  /// the same seed and the same per-rank batch size, before the first batch or at the start of an
  /// epoch (after reset()); mid-epoch it is an error, since the ranks would disagree about which
  /// global batch comes next.
  ///
  /// Example:
  ///   medcl::data::SiteStratifiedSampler sampler(sites, /*seed=*/7);
  ///   sampler.shard(group.rank(), group.size());   // global batch: group.size() * 64
  ///   auto loader = torch::data::make_data_loader(dataset, std::move(sampler),
  ///                                               torch::data::DataLoaderOptions(64));
  void shard(int64_t rank, int64_t world_size) {
    TORCH_CHECK(world_size >= 1, name(), "::shard: world_size must be >= 1, got ", world_size);
    TORCH_CHECK(
        rank >= 0 && rank < world_size,
        name(),
        "::shard: rank must be in [0, world_size) = [0, ",
        world_size,
        "), got ",
        rank);
    TORCH_CHECK(
        !planned_ || pos_ == 0,
        name(),
        "::shard: cannot change the sharding in the middle of an epoch (",
        pos_,
        " of ",
        plan_.size(),
        " indices of epoch ",
        epoch_,
        " handed out); call it before the first batch or after reset()");
    rank_ = static_cast<size_t>(rank);
    world_ = static_cast<size_t>(world_size);
    if (planned_) {
      plan_ = make_plan(epoch_);
    }
  }

  /// Whether the last global batch of each epoch is dropped when it is shorter than
  /// world_size() · batch_size (on every rank at the same step), so that every batch is full and
  /// no rank's slice is empty. Default: false
  EpochPlanSampler& drop_last(bool on) {
    drop_last_ = on;
    return *this;
  }
  bool drop_last() const {
    return drop_last_;
  }

  /// This rank's slice of the next global batch of `world_size() * batch_size` indices; nullopt
  /// once the epoch's plan is used up (on every rank at the same step). Unsharded: the next
  /// `batch_size` indices.
  c10::optional<std::vector<size_t>> next(size_t batch_size) override {
    TORCH_CHECK(batch_size > 0, name(), ": batch_size must be > 0");
    check_batch_size(batch_size);
    if (!planned_) {
      reset();
    }
    const size_t global = world_ * batch_size;
    if (pos_ >= plan_.size() || (drop_last_ && plan_.size() - pos_ < global)) {
      return c10::nullopt;
    }
    const size_t end = std::min(plan_.size(), pos_ + global);
    const size_t unit = shard_unit();
    TORCH_INTERNAL_ASSERT(
        (end - pos_) % unit == 0, name(), ": a global batch cuts a unit of ", unit, " indices");
    const auto share = even_share((end - pos_) / unit, rank_, world_);
    const size_t from = pos_ + share.first * unit;
    const size_t to = pos_ + share.second * unit;
    std::vector<size_t> batch(
        plan_.begin() + static_cast<std::ptrdiff_t>(from),
        plan_.begin() + static_cast<std::ptrdiff_t>(to));
    pos_ = end;
    return batch;
  }

  /// Writes the epoch, the position in the global plan, the seed and the world size. The position
  /// counts global batches, so it is the same on every rank: any rank's archive (rank 0's, say)
  /// restores every rank of a run with the same world size.
  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("epoch", torch::tensor(static_cast<int64_t>(epoch_)), /*is_buffer=*/true);
    archive.write("position", torch::tensor(static_cast<int64_t>(pos_)), /*is_buffer=*/true);
    archive.write("seed", torch::tensor(static_cast<int64_t>(seed_)), /*is_buffer=*/true);
    archive.write("world_size", torch::tensor(static_cast<int64_t>(world_)), /*is_buffer=*/true);
  }
  /// Restores what save() wrote: the next batch is the one that would have come after the save.
  /// The world size in the archive (1 for archives written before sharding existed) must equal
  /// this sampler's (set by shard() before load()); the rank is this sampler's own.
  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor e, p, s, w;
    archive.read("epoch", e, /*is_buffer=*/true);
    archive.read("position", p, /*is_buffer=*/true);
    archive.read("seed", s, /*is_buffer=*/true);
    const int64_t saved_world =
        archive.try_read("world_size", w, /*is_buffer=*/true) ? w.item<int64_t>() : 1;
    TORCH_CHECK(
        saved_world == static_cast<int64_t>(world_),
        name(),
        "::load: the archive was saved with world_size ",
        saved_world,
        " but this sampler is sharded over ",
        world_,
        " ranks (call shard(rank, ",
        saved_world,
        ") before load(), or start the epoch afresh)");
    const uint64_t seed = static_cast<uint64_t>(s.item<int64_t>());
    const uint64_t epoch = static_cast<uint64_t>(e.item<int64_t>());
    auto plan = make_plan_for(seed, epoch);
    const int64_t pos = p.item<int64_t>();
    TORCH_CHECK(
        pos >= 0 && static_cast<size_t>(pos) <= plan.size(),
        name(),
        "::load: position ",
        pos,
        " is outside the epoch's plan of ",
        plan.size(),
        " indices");
    seed_ = seed;
    epoch_ = epoch;
    plan_ = std::move(plan);
    planned_ = true;
    pos_ = static_cast<size_t>(pos);
  }

  /// The epoch whose plan is being handed out.
  uint64_t epoch() const {
    return epoch_;
  }
  /// This sampler's rank (0 unless sharded).
  int64_t rank() const {
    return static_cast<int64_t>(rank_);
  }
  /// The number of ranks the global batches are shared by (1 unless sharded).
  int64_t world_size() const {
    return static_cast<int64_t>(world_);
  }
  /// How many batches (steps) the current epoch has with `batch_size` per rank, the last short one
  /// included unless drop_last(): the same on every rank. Plans the first epoch when nothing was
  /// planned yet (as next() would).
  size_t batches_per_epoch(size_t batch_size) {
    TORCH_CHECK(batch_size > 0, name(), ": batch_size must be > 0");
    if (!planned_) {
      reset();
    }
    const size_t global = world_ * batch_size;
    return drop_last_ ? plan_.size() / global : (plan_.size() + global - 1) / global;
  }

 protected:
  virtual std::vector<size_t> make_plan(uint64_t epoch) const = 0;
  virtual size_t size() const = 0;
  virtual const char* name() const = 0;
  virtual void check_batch_size(size_t) const {}
  /// The indices that a shard never splits (PatientGroupedSampler: k); the plan's length is a
  /// multiple of it, and so must the per-rank batch size be.
  virtual size_t shard_unit() const {
    return 1;
  }

  uint64_t seed_;

 private:
  // The plan of `epoch` for `seed`, leaving seed_ as it was (load() must not change anything
  // before its checks pass).
  std::vector<size_t> make_plan_for(uint64_t seed, uint64_t epoch) {
    struct Restore {
      uint64_t& seed;
      uint64_t kept;
      ~Restore() {
        seed = kept;
      }
    } restore{seed_, seed_};
    seed_ = seed;
    return make_plan(epoch);
  }

  uint64_t epoch_ = 0;
  bool planned_ = false;
  std::vector<size_t> plan_;
  size_t pos_ = 0;
  size_t rank_ = 0;
  size_t world_ = 1;
  bool drop_last_ = false;
};

} // namespace detail

namespace data {

/// Batches made of k records per patient, so that every anchor has patient positives (PCLR,
/// temporal pairing). Each epoch every record is used at least once: a patient's records are
/// shuffled and cut into groups of k; a last group short of k, and patients with fewer than k
/// records, are completed with other records of the same patient (drawn without replacement
/// where the patient has enough, with replacement otherwise). Groups are shuffled and handed out
/// batch_size / k at a time; batch_size must be a multiple of k.
///
/// Sharded (`shard(rank, world_size)`), batch_size is the per-rank batch size and must still be a
/// multiple of k: a group of k is never split between ranks, and the last global batch is shared
/// in whole groups (a rank is empty only when that batch has fewer groups than there are ranks).
/// A patient's groups may land on different ranks; the losses still find those positives because
/// they gather every rank's keys.
///
/// Example:
///   medcl::PatientGroupedSampler sampler(patient_ids, /*records_per_patient=*/2, /*seed=*/7);
///   auto loader = torch::data::make_data_loader(dataset, sampler,
///   torch::data::DataLoaderOptions(64));
class PatientGroupedSampler : public medcl::detail::EpochPlanSampler {
 public:
  PatientGroupedSampler(std::vector<int64_t> patients, int64_t records_per_patient, uint64_t seed)
      : EpochPlanSampler(seed), patients_(std::move(patients)), k_(records_per_patient) {
    TORCH_CHECK(!patients_.empty(), "PatientGroupedSampler: no records");
    TORCH_CHECK(k_ >= 1, "PatientGroupedSampler: records_per_patient must be >= 1, got ", k_);
    groups_ = medcl::detail::group_by(patients_);
    size_t most = 0;
    for (const auto& g : groups_) {
      most = std::max(most, g.size());
    }
    TORCH_CHECK(
        static_cast<size_t>(k_) <= most,
        "PatientGroupedSampler: asked for ",
        k_,
        " records per patient, but the most records any patient has is ",
        most);
  }

  int64_t records_per_patient() const {
    return k_;
  }

 protected:
  std::vector<size_t> make_plan(uint64_t epoch) const override {
    auto rng = medcl::detail::epoch_rng(seed_, epoch);
    const auto k = static_cast<size_t>(k_);
    std::vector<std::vector<size_t>> chunks;
    for (const auto& g : groups_) {
      std::vector<size_t> recs = g;
      std::shuffle(recs.begin(), recs.end(), rng);
      for (size_t s = 0; s < recs.size(); s += k) {
        std::vector<size_t> chunk(
            recs.begin() + static_cast<std::ptrdiff_t>(s),
            recs.begin() + static_cast<std::ptrdiff_t>(std::min(recs.size(), s + k)));
        if (chunk.size() < k) {
          // Complete with other records of this patient: without replacement where possible.
          std::vector<size_t> others;
          for (size_t r : recs) {
            if (std::find(chunk.begin(), chunk.end(), r) == chunk.end()) {
              others.push_back(r);
            }
          }
          std::shuffle(others.begin(), others.end(), rng);
          for (size_t r : others) {
            if (chunk.size() == k)
              break;
            chunk.push_back(r);
          }
          std::uniform_int_distribution<size_t> pick(0, recs.size() - 1);
          while (chunk.size() < k) {
            chunk.push_back(recs[pick(rng)]);
          }
        }
        chunks.push_back(std::move(chunk));
      }
    }
    std::shuffle(chunks.begin(), chunks.end(), rng);
    std::vector<size_t> plan;
    for (const auto& c : chunks) {
      plan.insert(plan.end(), c.begin(), c.end());
    }
    return plan;
  }
  size_t size() const override {
    return patients_.size();
  }
  const char* name() const override {
    return "PatientGroupedSampler";
  }
  void check_batch_size(size_t batch_size) const override {
    TORCH_CHECK(
        batch_size % static_cast<size_t>(k_) == 0,
        "PatientGroupedSampler: batch_size ",
        batch_size,
        world_size() > 1 ? " (per rank)" : "",
        " is not a multiple of records_per_patient ",
        k_);
  }
  size_t shard_unit() const override {
    return static_cast<size_t>(k_);
  }

 private:
  std::vector<int64_t> patients_;
  int64_t k_;
  std::vector<std::vector<size_t>> groups_;
};

/// Batches with (as nearly as possible) equal numbers of each class: position j of a batch takes
/// class j mod C (class order reshuffled per batch), each class cycling through its shuffled
/// records. An epoch has as many samples as the data set (`epoch_size` overrides); minority
/// classes are therefore oversampled and majority classes subsampled.
///
/// Sharded (`shard(rank, world_size)`), `batch_size` is the per-rank batch size (what next() is
/// called with) and the classes are balanced over the global batch of world_size · batch_size:
/// the ranks' slices together are exactly the batch of an unsharded
/// `ClassBalancedSampler(labels, seed, world_size * batch_size, epoch_size)`.
class ClassBalancedSampler : public medcl::detail::EpochPlanSampler {
 public:
  ClassBalancedSampler(
      std::vector<int64_t> labels,
      uint64_t seed,
      int64_t batch_size,
      int64_t epoch_size = -1)
      : EpochPlanSampler(seed),
        labels_(std::move(labels)),
        batch_(batch_size),
        epoch_size_(epoch_size) {
    TORCH_CHECK(!labels_.empty(), "ClassBalancedSampler: no labels");
    TORCH_CHECK(batch_ >= 1, "ClassBalancedSampler: batch_size must be >= 1, got ", batch_);
    TORCH_CHECK(
        epoch_size_ == -1 || epoch_size_ >= 1,
        "ClassBalancedSampler: epoch_size must be >= 1 or -1, got ",
        epoch_size_);
    classes_ = medcl::detail::group_by(labels_);
  }

 protected:
  std::vector<size_t> make_plan(uint64_t epoch) const override {
    auto rng = medcl::detail::epoch_rng(seed_, epoch);
    const size_t total = epoch_size_ > 0 ? static_cast<size_t>(epoch_size_) : labels_.size();
    // Balanced over the global batch (every rank's slice of it).
    const int64_t global_batch = batch_ * world_size();
    std::vector<std::vector<size_t>> pools(classes_.size());
    std::vector<size_t> cursor(classes_.size(), 0);
    auto draw = [&](size_t c) {
      if (cursor[c] == pools[c].size()) {
        pools[c] = classes_[c];
        std::shuffle(pools[c].begin(), pools[c].end(), rng);
        cursor[c] = 0;
      }
      return pools[c][cursor[c]++];
    };
    std::vector<size_t> order(classes_.size());
    std::vector<size_t> plan;
    plan.reserve(total);
    while (plan.size() < total) {
      for (size_t c = 0; c < order.size(); ++c) {
        order[c] = c;
      }
      std::shuffle(order.begin(), order.end(), rng);
      for (int64_t j = 0; j < global_batch && plan.size() < total; ++j) {
        plan.push_back(draw(order[static_cast<size_t>(j) % order.size()]));
      }
    }
    return plan;
  }
  size_t size() const override {
    return labels_.size();
  }
  const char* name() const override {
    return "ClassBalancedSampler";
  }
  void check_batch_size(size_t batch_size) const override {
    TORCH_CHECK(
        batch_size == static_cast<size_t>(batch_),
        "ClassBalancedSampler: built for batches of ",
        batch_,
        world_size() > 1 ? " per rank" : "",
        ", asked for ",
        batch_size);
  }

 private:
  std::vector<int64_t> labels_;
  int64_t batch_;
  int64_t epoch_size_;
  std::vector<std::vector<size_t>> classes_;
};

/// Every sample once per epoch, ordered so that any run of consecutive samples (a batch) holds
/// each site in proportion to its size (within one sample): each site's records are shuffled and
/// spread evenly over the epoch. Batches that mix sites keep a model from telling negatives apart
/// by their hospital. Sharded (`shard(rank, world_size)`), the proportions hold for the global
/// batch, and within one sample for each rank's contiguous slice of it.
class SiteStratifiedSampler : public medcl::detail::EpochPlanSampler {
 public:
  SiteStratifiedSampler(std::vector<int64_t> sites, uint64_t seed)
      : EpochPlanSampler(seed), sites_(std::move(sites)) {
    TORCH_CHECK(!sites_.empty(), "SiteStratifiedSampler: no sites");
    groups_ = medcl::detail::group_by(sites_);
  }

 protected:
  std::vector<size_t> make_plan(uint64_t epoch) const override {
    auto rng = medcl::detail::epoch_rng(seed_, epoch);
    std::uniform_real_distribution<double> offset(0.0, 1.0);
    std::vector<std::pair<double, size_t>> keyed;
    keyed.reserve(sites_.size());
    for (const auto& g : groups_) {
      std::vector<size_t> recs = g;
      std::shuffle(recs.begin(), recs.end(), rng);
      const double n = static_cast<double>(recs.size());
      const double phase = offset(rng);
      for (size_t r = 0; r < recs.size(); ++r) {
        keyed.emplace_back((static_cast<double>(r) + phase) / n, recs[r]);
      }
    }
    std::sort(keyed.begin(), keyed.end());
    std::vector<size_t> plan;
    plan.reserve(keyed.size());
    for (const auto& kv : keyed) {
      plan.push_back(kv.second);
    }
    return plan;
  }
  size_t size() const override {
    return sites_.size();
  }
  const char* name() const override {
    return "SiteStratifiedSampler";
  }

 private:
  std::vector<int64_t> sites_;
  std::vector<std::vector<size_t>> groups_;
};

} // namespace data

// Earlier names in medcl::, kept for one release.
using data::ClassBalancedSampler;
using data::PatientGroupedSampler;
using data::SiteStratifiedSampler;

} // namespace medcl
