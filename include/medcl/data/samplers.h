#pragma once

/// \file
/// Batch samplers for `torch::data` datasets that decide what a batch contains: k records per
/// patient (so that patient positives exist), balanced classes, or sites in proportion. Each is
/// deterministic for a seed and an epoch (reset() moves to the next epoch).

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

/// Base for samplers that plan a whole epoch as one index sequence, then hand it out in batches.
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

  c10::optional<std::vector<size_t>> next(size_t batch_size) override {
    TORCH_CHECK(batch_size > 0, name(), ": batch_size must be > 0");
    check_batch_size(batch_size);
    if (!planned_) {
      reset();
    }
    if (pos_ >= plan_.size()) {
      return c10::nullopt;
    }
    const size_t end = std::min(plan_.size(), pos_ + batch_size);
    std::vector<size_t> batch(
        plan_.begin() + static_cast<std::ptrdiff_t>(pos_),
        plan_.begin() + static_cast<std::ptrdiff_t>(end));
    pos_ = end;
    return batch;
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("epoch", torch::tensor(static_cast<int64_t>(epoch_)), /*is_buffer=*/true);
    archive.write("position", torch::tensor(static_cast<int64_t>(pos_)), /*is_buffer=*/true);
    archive.write("seed", torch::tensor(static_cast<int64_t>(seed_)), /*is_buffer=*/true);
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor e, p, s;
    archive.read("epoch", e, /*is_buffer=*/true);
    archive.read("position", p, /*is_buffer=*/true);
    archive.read("seed", s, /*is_buffer=*/true);
    seed_ = static_cast<uint64_t>(s.item<int64_t>());
    epoch_ = static_cast<uint64_t>(e.item<int64_t>());
    plan_ = make_plan(epoch_);
    planned_ = true;
    pos_ = static_cast<size_t>(p.item<int64_t>());
  }

  /// The epoch whose plan is being handed out.
  uint64_t epoch() const {
    return epoch_;
  }

 protected:
  virtual std::vector<size_t> make_plan(uint64_t epoch) const = 0;
  virtual size_t size() const = 0;
  virtual const char* name() const = 0;
  virtual void check_batch_size(size_t) const {}

  uint64_t seed_;

 private:
  uint64_t epoch_ = 0;
  bool planned_ = false;
  std::vector<size_t> plan_;
  size_t pos_ = 0;
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
        " is not a multiple of records_per_patient ",
        k_);
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
      for (int64_t j = 0; j < batch_ && plan.size() < total; ++j) {
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
/// by their hospital.
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
