#include "support.h"

#include <medcl/augment/probe.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>

#include "catch.h"

#include <memory>
#include <vector>

using medcl_test::Contains;
using namespace medcl::augment;

namespace {

// Two texts of sentences "1 2 ." "3 4 5 ." "6 ." with padding 0 (the second text is shorter).
Batch texts() {
  auto ids = torch::tensor(
      {{1, 2, 9, 3, 4, 5, 9, 6, 9, 0, 0}, {7, 8, 9, 1, 9, 0, 0, 0, 0, 0, 0}}, torch::kLong);
  return {ids, ids.ne(0), {}};
}

Batch run(Modality m, const TransformPtr& t, const Batch& b, uint64_t seed) {
  return Policy(m, t, seed).views(b, 1)[0];
}

std::vector<std::vector<int64_t>> sentences(const at::Tensor& row, const at::Tensor& valid) {
  std::vector<std::vector<int64_t>> out(1);
  for (int64_t i = 0; i < row.size(0); ++i) {
    if (!valid[i].item<bool>())
      continue;
    out.back().push_back(row[i].item<int64_t>());
    if (row[i].item<int64_t>() == 9)
      out.emplace_back();
  }
  if (out.back().empty())
    out.pop_back();
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace

TEST_CASE("text: token masking, sentence shuffling and sampling", "[augment][text]") {
  auto b = texts();
  torch::manual_seed(91);
  Batch big{torch::randint(1, 50, {200, 40}), {}, {}};
  big.mask = torch::ones({200, 40}, torch::kBool);
  auto masked = run(Modality::Text, std::make_shared<TokenMask>(0.15, 99), big, 1).values;
  REQUIRE(masked.eq(99).to(torch::kFloat).mean().item<double>() == Approx(0.15).margin(0.015));
  // Padding is never masked.
  auto pm = run(Modality::Text, std::make_shared<TokenMask>(1.0, 99), b, 1);
  REQUIRE(pm.values.masked_select(b.mask.logical_not()).eq(0).all().item<bool>());
  // Shuffling keeps each sentence whole and the padding at the end.
  bool reordered = false;
  for (uint64_t seed = 1; seed < 6; ++seed) {
    auto sh = run(Modality::Text, std::make_shared<SentenceShuffle>(9), b, seed);
    REQUIRE(sh.mask.equal(b.mask));
    for (int64_t r = 0; r < 2; ++r) {
      REQUIRE(sentences(sh.values[r], sh.mask[r]) == sentences(b.values[r], b.mask[r]));
    }
    reordered = reordered || !sh.values.equal(b.values);
  }
  REQUIRE(reordered);
  // Sampling keeps whole sentences (a subset), at least one, compacted to the front.
  for (uint64_t seed = 1; seed < 6; ++seed) {
    auto sm = run(Modality::Text, std::make_shared<SentenceSample>(0.5, 9, 0), b, seed);
    for (int64_t r = 0; r < 2; ++r) {
      auto kept = sentences(sm.values[r], sm.mask[r]);
      auto all = sentences(b.values[r], b.mask[r]);
      REQUIRE(!kept.empty());
      for (const auto& s : kept)
        REQUIRE(std::find(all.begin(), all.end(), s) != all.end());
      const int64_t n = sm.mask[r].sum().item<int64_t>();
      REQUIRE(sm.mask[r].slice(0, 0, n).all().item<bool>());
    }
  }
  REQUIRE_THROWS_WITH(
      Policy(Modality::Text, std::make_shared<TokenMask>(0.1, 1), 1)
          .views({torch::randn({2, 3}), {}, {}}, 1),
      Contains("token ids must be int64"));
}

TEST_CASE(
    "visit sequences: dropout keeps a visit, crop is contiguous, shift moves all times",
    "[augment][visits]") {
  torch::manual_seed(92);
  const int64_t b = 100, v = 12, f = 5;
  auto mask = torch::rand({b, v, f}).gt(0.2);
  mask.slice(1, 9).fill_(false); // three empty visit slots at the end
  Batch visits{
      torch::randn({b, v, f}).masked_fill(mask.logical_not(), 0.0),
      mask,
      torch::arange(v).to(torch::kDouble).expand({b, v}).contiguous()};
  auto present = mask.any(2);
  auto dropped = run(Modality::Visits, std::make_shared<VisitDropout>(0.5), visits, 1);
  auto kept = dropped.mask.any(2);
  REQUIRE(kept.any(1).all().item<bool>());
  REQUIRE_FALSE(kept.logical_and(present.logical_not()).any().item<bool>());
  REQUIRE(kept.sum().item<double>() / present.sum().item<double>() == Approx(0.5).margin(0.06));
  auto all_gone = run(Modality::Visits, std::make_shared<VisitDropout>(1.0), visits, 1).mask.any(2);
  REQUIRE(all_gone.sum(1).eq(1).all().item<bool>());
  auto crop = run(Modality::Visits, std::make_shared<TemporalCrop>(0.5), visits, 2).mask.any(2);
  for (int64_t i = 0; i < b; ++i) {
    auto idx = crop[i].nonzero().view(-1);
    REQUIRE(idx.numel() >= 1);
    REQUIRE(idx.max().item<int64_t>() - idx.min().item<int64_t>() + 1 <= 9);
  }
  REQUIRE(crop.sum(1).to(torch::kFloat).mean().item<double>() >= 0.5 * 9 * 0.8 * 0.9);
  auto shifted = run(Modality::Visits, std::make_shared<TimeShift>(30.0), visits, 3);
  auto diff = shifted.times - visits.times;
  REQUIRE((diff - diff.select(1, 0).unsqueeze(1)).abs().max().item<double>() < 1e-9);
  REQUIRE(diff.abs().max().item<double>() <= 30.0);
  REQUIRE(diff.std().item<double>() > 1.0);
  // Feature masking respects missingness on visit sequences too.
  auto fm = run(Modality::Visits, std::make_shared<FeatureMask>(0.3), visits, 4);
  REQUIRE_FALSE(fm.mask.logical_and(mask.logical_not()).any().item<bool>());
  REQUIRE(fm.times.equal(visits.times));
  REQUIRE_THROWS_WITH(
      run(Modality::Visits, std::make_shared<TimeShift>(1.0), {visits.values, visits.mask, {}}, 1),
      Contains("no visit times"));
  REQUIRE_THROWS_WITH(
      run(Modality::Visits,
          std::make_shared<TimeShift>(1.0),
          {visits.values, visits.mask, torch::zeros({b, 3})},
          1),
      Contains("times are for visit sequences, of shape [B, visits]"));
}

TEST_CASE(
    "invariance probe: an encoder that ignores noise scores 1 for noise, less for masking",
    "[augment][probe]") {
  torch::manual_seed(93);
  Batch ecg{torch::randn({32, 4, 200}), {}, {}};
  // The encoder is each lead's power: barely moved by small jitter, halved by dropping leads.
  auto encoder = [](const Batch& b) { return b.values.pow(2).mean(2); };
  auto r = invariance_probe(
      encoder,
      Modality::ECG,
      {std::make_shared<GaussianJitter>(0.01), std::make_shared<LeadDropout>(0.5)},
      ecg,
      7,
      3);
  REQUIRE(r.size() == 2);
  REQUIRE(r[0].transform == "gaussian_jitter");
  REQUIRE(r[0].samples == 96);
  REQUIRE(r[0].mean_cosine > 0.999);
  REQUIRE(r[1].mean_cosine < r[0].mean_cosine - 0.05);
  REQUIRE_THROWS_WITH(
      invariance_probe(
          [](const Batch& b) { return b.values; },
          Modality::ECG,
          {std::make_shared<GaussianJitter>(0.01)},
          ecg,
          1),
      Contains("[B, D] embeddings"));
}
