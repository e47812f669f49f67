#include <medcl/data/samplers.h>
#include <medcl/data/splits.h>

#include <torch/torch.h>
#include "catch.h"

#include <algorithm>
#include <map>
#include <set>
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
