#include <medcl/data/samplers.h>
#include <medcl/data/splits.h>

#include <torch/torch.h>
#include "catch.h"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using medcl_test::Contains;

namespace {

std::vector<std::vector<size_t>> epoch_batches(
    torch::data::samplers::Sampler<std::vector<size_t>>& s,
    size_t batch) {
  std::vector<std::vector<size_t>> out;
  while (auto b = s.next(batch)) {
    out.push_back(*b);
  }
  return out;
}

// 10 patients with 1..5 records each (patient p has (p % 5) + 1 records).
std::vector<int64_t> patients() {
  std::vector<int64_t> p;
  for (int64_t id = 0; id < 10; ++id) {
    for (int64_t r = 0; r <= id % 5; ++r)
      p.push_back(100 + id);
  }
  return p;
}

} // namespace

TEST_CASE(
    "PatientGroupedSampler: k records per patient, every record each epoch, deterministic",
    "[data][samplers]") {
  const auto pat = patients();
  medcl::PatientGroupedSampler s(pat, 2, 7);
  auto batches = epoch_batches(s, 6);
  std::multiset<size_t> seen;
  for (const auto& b : batches) {
    REQUIRE(b.size() % 2 == 0);
    // Consecutive pairs come from one patient.
    for (size_t i = 0; i < b.size(); i += 2) {
      REQUIRE(pat[b[i]] == pat[b[i + 1]]);
    }
    seen.insert(b.begin(), b.end());
  }
  for (size_t r = 0; r < pat.size(); ++r) {
    REQUIRE(seen.count(r) >= 1);
  }
  // Same seed, same epoch: the same batches; the next epoch differs.
  medcl::PatientGroupedSampler again(pat, 2, 7);
  REQUIRE(epoch_batches(again, 6) == batches);
  s.reset();
  REQUIRE(s.epoch() == 1);
  REQUIRE(epoch_batches(s, 6) != batches);
  medcl::PatientGroupedSampler other_seed(pat, 2, 8);
  REQUIRE(epoch_batches(other_seed, 6) != batches);
  REQUIRE_THROWS_WITH(
      medcl::PatientGroupedSampler(pat, 6, 1),
      Contains("asked for 6 records per patient") && Contains("most records any patient has is 5"));
  REQUIRE_THROWS_WITH(s.next(5), Contains("not a multiple of records_per_patient 2"));
}

TEST_CASE("PatientGroupedSampler drives a torch::data loader", "[data][samplers]") {
  const auto pat = patients();
  auto data = torch::arange(static_cast<int64_t>(pat.size())).unsqueeze(1).to(torch::kFloat);
  auto dataset = torch::data::datasets::TensorDataset(data).map(
      torch::data::transforms::Stack<torch::data::TensorExample>());
  auto loader = torch::data::make_data_loader(
      dataset, medcl::PatientGroupedSampler(pat, 2, 3), torch::data::DataLoaderOptions(4));
  int64_t n = 0;
  for (auto& batch : *loader) {
    auto idx = batch.data.squeeze(1).to(torch::kLong);
    for (int64_t i = 0; i + 1 < idx.size(0); i += 2) {
      REQUIRE(pat[idx[i].item<int64_t>()] == pat[idx[i + 1].item<int64_t>()]);
    }
    n += idx.size(0);
  }
  REQUIRE(n >= static_cast<int64_t>(pat.size()));
}

TEST_CASE("ClassBalancedSampler: balanced batches, deterministic", "[data][samplers]") {
  std::vector<int64_t> labels(90, 0);
  for (int i = 0; i < 9; ++i)
    labels[i * 10] = 1; // 9 of class 1
  labels[5] = 2;        // 1 of class 2
  medcl::ClassBalancedSampler s(labels, 11, 12);
  auto batches = epoch_batches(s, 12);
  size_t total = 0;
  for (const auto& b : batches) {
    std::map<int64_t, int> count;
    for (size_t i : b)
      ++count[labels[i]];
    if (b.size() == 12) {
      for (const auto& kv : count)
        REQUIRE(kv.second == 4);
    }
    total += b.size();
  }
  REQUIRE(total == labels.size());
  medcl::ClassBalancedSampler again(labels, 11, 12);
  REQUIRE(epoch_batches(again, 12) == batches);
  REQUIRE_THROWS_WITH(s.next(8), Contains("built for batches of 12"));
}

TEST_CASE("SiteStratifiedSampler: sites in proportion, every sample once", "[data][samplers]") {
  std::vector<int64_t> sites;
  for (int i = 0; i < 60; ++i)
    sites.push_back(0);
  for (int i = 0; i < 30; ++i)
    sites.push_back(1);
  for (int i = 0; i < 10; ++i)
    sites.push_back(2);
  medcl::SiteStratifiedSampler s(sites, 5);
  auto batches = epoch_batches(s, 10);
  std::vector<size_t> all;
  for (const auto& b : batches) {
    std::map<int64_t, int> count;
    for (size_t i : b)
      ++count[sites[i]];
    REQUIRE(std::abs(count[0] - 6) <= 1);
    REQUIRE(std::abs(count[1] - 3) <= 1);
    REQUIRE(std::abs(count[2] - 1) <= 1);
    all.insert(all.end(), b.begin(), b.end());
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i < all.size(); ++i)
    REQUIRE(all[i] == i);
  medcl::SiteStratifiedSampler again(sites, 5);
  REQUIRE(epoch_batches(again, 10) == batches);
}

// ---- Sharding a sampler over the ranks of a data-parallel run --------------------------------

namespace {

using SamplerPtr = std::unique_ptr<medcl::detail::EpochPlanSampler>;
// Makes a sampler built for (per-rank) batches of `batch` (only ClassBalancedSampler uses it).
using SamplerFactory = std::function<SamplerPtr(int64_t batch)>;

struct SamplerCase {
  std::string name;
  SamplerFactory make;
  size_t unit; // the indices a shard never splits
};

// 11 patients with 1..5 records each: 19 groups of 2 (38 indices), an uneven tail for most
// global batch sizes.
std::vector<int64_t> patients_11() {
  std::vector<int64_t> p;
  for (int64_t id = 0; id < 11; ++id) {
    for (int64_t r = 0; r <= id % 5; ++r)
      p.push_back(200 + id);
  }
  return p;
}

std::vector<int64_t> labels_90() {
  std::vector<int64_t> labels(90, 0);
  for (int i = 0; i < 9; ++i)
    labels[i * 10] = 1;
  labels[5] = 2;
  return labels;
}

std::vector<int64_t> sites_100() {
  std::vector<int64_t> sites;
  for (int i = 0; i < 100; ++i)
    sites.push_back(i < 55 ? 0 : (i < 85 ? 1 : 2));
  return sites;
}

std::vector<SamplerCase> sampler_cases() {
  auto patient = [](int64_t) -> SamplerPtr {
    return std::make_unique<medcl::data::PatientGroupedSampler>(patients_11(), 2, 7);
  };
  // epoch_size 91: a tail for world sizes 1, 2 and 3.
  auto balanced = [](int64_t batch) -> SamplerPtr {
    return std::make_unique<medcl::data::ClassBalancedSampler>(labels_90(), 11, batch, 91);
  };
  auto site = [](int64_t) -> SamplerPtr {
    return std::make_unique<medcl::data::SiteStratifiedSampler>(sites_100(), 5);
  };
  return {
      {"PatientGroupedSampler", patient, 2},
      {"ClassBalancedSampler", balanced, 1},
      {"SiteStratifiedSampler", site, 1}};
}

// Every rank's slices of one epoch, step by step: slices[step][rank]. Checks on the way that the
// ranks end at the same step.
std::vector<std::vector<std::vector<size_t>>> sharded_epoch(
    std::vector<SamplerPtr>& ranks,
    size_t batch) {
  std::vector<std::vector<std::vector<size_t>>> steps;
  for (;;) {
    std::vector<std::vector<size_t>> slices;
    size_t ended = 0;
    for (auto& s : ranks) {
      auto b = s->next(batch);
      if (b) {
        slices.push_back(*b);
      } else {
        ++ended;
      }
    }
    INFO("step " << steps.size());
    REQUIRE((ended == 0 || ended == ranks.size())); // every rank runs the same number of steps
    if (ended > 0) {
      return steps;
    }
    steps.push_back(std::move(slices));
  }
}

std::vector<SamplerPtr> make_ranks(const SamplerCase& c, int64_t world, int64_t batch) {
  std::vector<SamplerPtr> ranks;
  for (int64_t r = 0; r < world; ++r) {
    ranks.push_back(c.make(batch));
    ranks.back()->shard(r, world);
  }
  return ranks;
}

std::string save_to_string(const medcl::detail::EpochPlanSampler& s) {
  torch::serialize::OutputArchive archive;
  s.save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

void load_from_string(medcl::detail::EpochPlanSampler& s, const std::string& bytes) {
  torch::serialize::InputArchive archive;
  std::istringstream in(bytes);
  archive.load_from(in);
  s.load(archive);
}

} // namespace

TEST_CASE(
    "sharded samplers: the ranks' slices of each step make up the one-process global batch",
    "[data][samplers]") {
  for (const auto& c : sampler_cases()) {
    for (int64_t world : {1, 2, 3}) {
      // Per-rank batch sizes whose global batches leave an uneven tail, one of them with fewer
      // units than ranks in the last global batch (empty ranks).
      const std::vector<size_t> batches =
          c.unit == 2 ? std::vector<size_t>{2, 4} : std::vector<size_t>{4, 7, 33};
      for (size_t b : batches) {
        INFO(c.name << ", world size " << world << ", batch " << b << " per rank");
        auto ranks = make_ranks(c, world, static_cast<int64_t>(b));
        auto single = c.make(static_cast<int64_t>(b) * world); // one process, global batch
        const size_t global = b * static_cast<size_t>(world);
        REQUIRE(ranks[0]->world_size() == world);
        for (int epoch = 0; epoch < 2; ++epoch) {
          INFO("epoch " << epoch);
          if (epoch > 0) {
            for (auto& s : ranks)
              s->reset();
            single->reset();
          }
          const auto reference = epoch_batches(*single, global);
          const size_t steps = ranks[0]->batches_per_epoch(b);
          const auto sharded = sharded_epoch(ranks, b);
          REQUIRE(sharded.size() == reference.size());
          REQUIRE(steps == reference.size());
          REQUIRE(single->batches_per_epoch(global) == reference.size());
          for (size_t step = 0; step < reference.size(); ++step) {
            INFO("step " << step);
            std::vector<size_t> joined;
            for (const auto& slice : sharded[step]) {
              joined.insert(joined.end(), slice.begin(), slice.end());
            }
            REQUIRE(joined == reference[step]);
            // As even as possible in whole units, the larger shares first.
            const size_t units = reference[step].size() / c.unit;
            for (int64_t r = 0; r < world; ++r) {
              const size_t expected =
                  (units / world + (static_cast<size_t>(r) < units % world)) * c.unit;
              REQUIRE(sharded[step][r].size() == expected);
              if (reference[step].size() == global) {
                REQUIRE(sharded[step][r].size() == b);
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE(
    "sharded samplers: empty slices at the tail, or the short global batch dropped",
    "[data][samplers]") {
  // PatientGroupedSampler: 19 groups of 2; 3 ranks of 2 groups: 3 global batches of 12, then one
  // group for rank 0 and nothing (an empty vector, not the end) for ranks 1 and 2.
  std::vector<medcl::data::PatientGroupedSampler> ranks;
  for (int64_t r = 0; r < 3; ++r) {
    ranks.emplace_back(patients_11(), 2, 7);
    ranks.back().shard(r, 3);
  }
  for (int step = 0; step < 3; ++step) {
    for (auto& s : ranks)
      REQUIRE(s.next(4)->size() == 4);
  }
  auto last0 = ranks[0].next(4);
  auto last1 = ranks[1].next(4);
  auto last2 = ranks[2].next(4);
  REQUIRE(last0.has_value());
  REQUIRE(last1.has_value());
  REQUIRE(last2.has_value());
  REQUIRE(last0->size() == 2);
  REQUIRE(last1->empty());
  REQUIRE(last2->empty());
  const auto pat = patients_11();
  REQUIRE(pat[(*last0)[0]] == pat[(*last0)[1]]); // the group is whole
  for (auto& s : ranks)
    REQUIRE_FALSE(s.next(4).has_value());

  // drop_last: the short global batch is dropped on every rank, every slice is full.
  std::vector<medcl::data::PatientGroupedSampler> full;
  medcl::data::PatientGroupedSampler single(patients_11(), 2, 7);
  single.drop_last(true);
  for (int64_t r = 0; r < 3; ++r) {
    full.emplace_back(patients_11(), 2, 7);
    full.back().shard(r, 3);
    full.back().drop_last(true);
    REQUIRE(full.back().batches_per_epoch(4) == 3);
  }
  REQUIRE(single.drop_last());
  REQUIRE(single.batches_per_epoch(12) == 3);
  for (int epoch = 0; epoch < 2; ++epoch) {
    if (epoch > 0) {
      single.reset();
      for (auto& s : full)
        s.reset();
    }
    for (int step = 0; step < 3; ++step) {
      std::vector<size_t> joined;
      for (auto& s : full) {
        const auto b = s.next(4);
        REQUIRE(b.has_value());
        REQUIRE(b->size() == 4);
        joined.insert(joined.end(), b->begin(), b->end());
      }
      REQUIRE(joined == *single.next(12));
    }
    for (auto& s : full)
      REQUIRE_FALSE(s.next(4).has_value());
    REQUIRE_FALSE(single.next(12).has_value());
  }
}

TEST_CASE(
    "sharded samplers: a checkpoint restores every rank's position exactly",
    "[data][samplers]") {
  for (const auto& c : sampler_cases()) {
    INFO(c.name);
    const int64_t world = 3;
    const size_t b = c.unit == 2 ? 2 : 7;
    auto ranks = make_ranks(c, world, static_cast<int64_t>(b));
    // Into the second epoch, then part of it.
    sharded_epoch(ranks, b);
    for (auto& s : ranks) {
      s->reset();
      s->next(b);
      s->next(b);
    }
    // Rank 0's archive (the position counts global batches) restores every rank.
    const std::string saved = save_to_string(*ranks[0]);
    auto restored = make_ranks(c, world, static_cast<int64_t>(b));
    for (auto& s : restored) {
      load_from_string(*s, saved);
      REQUIRE(s->epoch() == 1);
    }
    const auto expected = sharded_epoch(ranks, b);
    REQUIRE_FALSE(expected.empty());
    REQUIRE(sharded_epoch(restored, b) == expected);
    // And the epoch after it.
    for (size_t r = 0; r < ranks.size(); ++r) {
      ranks[r]->reset();
      restored[r]->reset();
    }
    REQUIRE(sharded_epoch(restored, b) == sharded_epoch(ranks, b));

    // An archive of another world size is refused, naming both.
    auto two = make_ranks(c, 2, static_cast<int64_t>(b));
    REQUIRE_THROWS_WITH(
        load_from_string(*two[0], saved),
        Contains("saved with world_size 3 but this sampler is sharded over 2 ranks"));
    auto unsharded = c.make(static_cast<int64_t>(b));
    REQUIRE_THROWS_WITH(
        load_from_string(*unsharded, saved),
        Contains("saved with world_size 3 but this sampler is sharded over 1 ranks"));
  }
}

TEST_CASE(
    "sharded samplers: bad ranks, world sizes and batch sizes are refused",
    "[data][samplers]") {
  medcl::data::PatientGroupedSampler p(patients_11(), 2, 7);
  REQUIRE_THROWS_WITH(
      p.shard(3, 3),
      Contains("PatientGroupedSampler::shard: rank must be in [0, world_size) = [0, 3), got 3"));
  REQUIRE_THROWS_WITH(p.shard(-1, 2), Contains("rank must be in [0, world_size) = [0, 2), got -1"));
  REQUIRE_THROWS_WITH(
      p.shard(0, 0), Contains("PatientGroupedSampler::shard: world_size must be >= 1, got 0"));
  p.shard(1, 2);
  REQUIRE_THROWS_WITH(
      p.next(3),
      Contains("PatientGroupedSampler: batch_size 3 (per rank) is not a multiple of "
               "records_per_patient 2"));
  REQUIRE(p.next(4).has_value());
  REQUIRE_THROWS_WITH(
      p.shard(0, 2),
      Contains("cannot change the sharding in the middle of an epoch (8 of 38 indices of epoch 0"));
  p.reset();
  p.shard(0, 3); // at the start of an epoch it may change
  REQUIRE(p.world_size() == 3);
  REQUIRE(p.rank() == 0);

  medcl::data::ClassBalancedSampler c(labels_90(), 11, 4);
  REQUIRE_THROWS_WITH(c.shard(2, 1), Contains("ClassBalancedSampler::shard: rank must be in"));
  c.shard(0, 2);
  REQUIRE_THROWS_WITH(c.next(8), Contains("built for batches of 4 per rank, asked for 8"));
  medcl::data::SiteStratifiedSampler s(sites_100(), 5);
  REQUIRE_THROWS_WITH(
      s.shard(0, -2), Contains("SiteStratifiedSampler::shard: world_size must be >= 1, got -2"));
}

TEST_CASE("patient_split: no patient in two splits, stratified, seeded", "[data][splits]") {
  std::vector<int64_t> pat, lab;
  for (int64_t p = 0; p < 200; ++p) {
    for (int r = 0; r < 1 + p % 4; ++r) {
      pat.push_back(p);
      lab.push_back(p % 5 == 0 ? 1 : 0); // 20% positive patients
    }
  }
  auto s = medcl::patient_split(
      pat, lab, {{"pretrain", 0.5}, {"train", 0.2}, {"val", 0.1}, {"test", 0.2}}, 42);
  REQUIRE(s.names.size() == 4);
  std::set<int64_t> all_patients;
  size_t records = 0;
  for (size_t i = 0; i < 4; ++i) {
    for (int64_t p : s.patients[i])
      REQUIRE(all_patients.insert(p).second); // zero patient overlap
    records += s.indices[i].size();
    // The label mix is kept: 20% positive patients in every split (largest remainder: +-1 patient).
    int pos = 0;
    for (int64_t p : s.patients[i])
      pos += (p % 5 == 0);
    REQUIRE(std::abs(pos - 0.2 * static_cast<double>(s.patients[i].size())) <= 1.0);
  }
  REQUIRE(all_patients.size() == 200);
  REQUIRE(records == pat.size());
  REQUIRE(s.patients[s.at("pretrain")].size() == 100);
  REQUIRE(s.patients[s.at("val")].size() == 20);
  auto again = medcl::patient_split(
      pat, lab, {{"pretrain", 0.5}, {"train", 0.2}, {"val", 0.1}, {"test", 0.2}}, 42);
  REQUIRE(again.indices == s.indices);
  auto other = medcl::patient_split(
      pat, lab, {{"pretrain", 0.5}, {"train", 0.2}, {"val", 0.1}, {"test", 0.2}}, 43);
  REQUIRE(other.indices != s.indices);
  REQUIRE(s.describe().find("pretrain: 100 patients") != std::string::npos);
  // The split is clean by construction.
  medcl::SampleKeys keys;
  keys.patient = torch::tensor(pat, torch::kLong);
  REQUIRE(medcl::check_leakage(s, keys).clean());
  REQUIRE_THROWS_WITH(
      medcl::patient_split(pat, lab, {{"a", 0.5}, {"b", 0.4}}, 1),
      Contains("fractions must sum to 1, got 0.9"));
  REQUIRE_THROWS_WITH(
      medcl::patient_split(pat, lab, {{"a", 1.5}, {"b", -0.5}}, 1), Contains("must be >= 0"));
  REQUIRE_THROWS_WITH(medcl::patient_split(pat, {1, 2}, {{"a", 1.0}}, 1), Contains("labels"));
  REQUIRE_THROWS_WITH(
      medcl::patient_split(pat, lab, {{"a", 0.5}, {"a", 0.5}}, 1), Contains("used twice"));
}

TEST_CASE(
    "check_leakage finds planted shared patients, studies and identical samples",
    "[data][splits]") {
  medcl::PatientSplits s;
  s.names = {"train", "test"};
  s.indices = {{0, 1, 2, 3}, {4, 5, 6}};
  s.patients = {{1, 2}, {3, 4}};
  medcl::SampleKeys keys;
  keys.patient = torch::tensor({1, 1, 2, 2, 3, 2, 4}, torch::kLong); // record 5: patient 2 in test
  keys.study =
      torch::tensor({10, 11, 12, 13, 14, 15, 11}, torch::kLong); // record 6 shares study 11
  auto feats = torch::randn({7, 3});
  feats[4] = feats[0]; // an identical sample across splits
  auto report = medcl::check_leakage(s, keys, feats);
  REQUIRE_FALSE(report.clean());
  REQUIRE(report.findings.size() == 3);
  REQUIRE(report.findings[0].kind == "patient");
  REQUIRE(report.findings[0].shared == std::vector<int64_t>{2});
  REQUIRE(report.findings[1].kind == "study");
  REQUIRE(report.findings[1].shared == std::vector<int64_t>{11});
  REQUIRE(report.findings[2].kind == "identical sample");
  REQUIRE(report.findings[2].shared == std::vector<int64_t>{0, 4});
  REQUIRE_THROWS_WITH(
      medcl::require_no_leakage(report),
      Contains("train/test share 1 patient(s): 2") && Contains("study(s): 11") &&
          Contains("records 0~4"));
  s.indices[1] = {4, 9};
  REQUIRE_THROWS_WITH(medcl::check_leakage(s, keys), Contains("holds record 9"));
}
