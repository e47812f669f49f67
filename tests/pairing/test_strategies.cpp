#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/clip.h>
#include <medcl/losses/info_nce.h>
#include <medcl/losses/nt_xent.h>
#include <medcl/losses/supcon.h>
#include <medcl/memory/memory_queue.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/supcon.h>
#include <medcl/pairing/strategy.h>

#include "catch.h"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

using medcl::Key;
using medcl::PairExpr;
using medcl::PairingStrategy;
using medcl::SampleKeys;
using medcl_test::Contains;
using medcl_test::rel_err;
namespace F = medcl::functional;

namespace {

using Pred = std::function<bool(int64_t, int64_t)>;

// The message of the error `f` throws ("" when it throws none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
using Mask = std::vector<std::vector<bool>>;

// Twelve hand-made samples: 4 patients, 6 studies, 2 sites, 2 leads, labels with unknowns (-1).
struct Cohort {
  std::vector<int64_t> instance{0, 0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8};
  std::vector<int64_t> patient{10, 10, 10, 10, 11, 11, 12, 12, 12, 13, 13, 13};
  std::vector<int64_t> study{1, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6, 6};
  std::vector<int64_t> label{0, 0, 1, -1, 1, 1, 0, -1, 2, 2, 0, 1};
  std::vector<int64_t> site{0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1};
  std::vector<int64_t> lead{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1};
  std::vector<double> time{0, 0, 30, 30, 0, 200, 0, 0, 45, 0, 10, 400};
  int64_t n() const {
    return static_cast<int64_t>(patient.size());
  }
  SampleKeys keys() const {
    SampleKeys k;
    k.instance = torch::tensor(instance, torch::kLong);
    k.patient = torch::tensor(patient, torch::kLong);
    k.study = torch::tensor(study, torch::kLong);
    k.label = torch::tensor(label, torch::kLong);
    k.site = torch::tensor(site, torch::kLong);
    k.lead = torch::tensor(lead, torch::kLong);
    k.time = torch::tensor(time, torch::kDouble);
    return k;
  }
};

struct Case {
  std::string name;
  PairingStrategy strategy;
  Pred positive;
  Pred excluded; // false-negative control (before "positives are kept")
};

std::vector<Case> cases(const Cohort& c) {
  auto same = [](const std::vector<int64_t>& v) {
    return [v](int64_t i, int64_t j) { return v[i] == v[j]; };
  };
  auto none = [](int64_t, int64_t) { return false; };
  auto label_same = [&c](int64_t i, int64_t j) {
    return c.label[i] >= 0 && c.label[i] == c.label[j];
  };
  auto near = [&c](double w) {
    return [&c, w](int64_t i, int64_t j) {
      return c.patient[i] == c.patient[j] && std::abs(c.time[i] - c.time[j]) <= w;
    };
  };
  std::vector<Case> out;
  out.push_back({"instance", PairingStrategy::instance(), same(c.instance), none});
  out.push_back({"same_label", PairingStrategy::same_label(), label_same, none});
  out.push_back({"same_patient", PairingStrategy::same_patient(), same(c.patient), none});
  out.push_back({"temporal", PairingStrategy::temporal_neighbours(30.0), near(30.0), none});
  out.push_back(
      {"across_leads",
       PairingStrategy::across_leads(),
       [&c](int64_t i, int64_t j) {
         return c.instance[i] == c.instance[j] && c.lead[i] != c.lead[j];
       },
       none});
  out.push_back(
      {"micle_study",
       PairingStrategy::multi_instance(Key::Study),
       [&c](int64_t i, int64_t j) {
         return c.study[i] == c.study[j] && c.instance[i] != c.instance[j];
       },
       none});
  out.push_back(
      {"micle_patient",
       PairingStrategy::multi_instance(Key::Patient),
       [&c](int64_t i, int64_t j) {
         return c.patient[i] == c.patient[j] && c.instance[i] != c.instance[j];
       },
       none});
  out.push_back(
      {"instance_excl_patient",
       PairingStrategy::instance().exclude_same_patient(),
       same(c.instance),
       same(c.patient)});
  out.push_back(
      {"instance_excl_study_label",
       PairingStrategy::instance().exclude_same_study().exclude_same_label(),
       same(c.instance),
       [&c, label_same](int64_t i, int64_t j) {
         return c.study[i] == c.study[j] || label_same(i, j);
       }});
  out.push_back(
      {"patient_across_sites",
       PairingStrategy::same_patient().positives_across_sites().exclude_same_patient(),
       [&c](int64_t i, int64_t j) {
         return c.patient[i] == c.patient[j] && c.site[i] != c.site[j];
       },
       same(c.patient)});
  out.push_back(
      {"instance_excl_site",
       PairingStrategy::instance().exclude_same_site_negatives(),
       same(c.instance),
       same(c.site)});
  out.push_back(
      {"and",
       PairingStrategy::same_patient() & PairingStrategy::same_label(),
       [&c, label_same](int64_t i, int64_t j) {
         return c.patient[i] == c.patient[j] && label_same(i, j);
       },
       none});
  out.push_back(
      {"or_not",
       PairingStrategy::custom(
           PairExpr::same(Key::Study) | !PairExpr::same(Key::Site), "study or other site"),
       [&c](int64_t i, int64_t j) { return c.study[i] == c.study[j] || c.site[i] != c.site[j]; },
       none});
  return out;
}

// Expected masks for anchors == candidates: the anchor itself is excluded and never positive;
// false-negative control never removes a positive.
void expected(const Case& k, int64_t n, Mask* pos, Mask* cand) {
  *pos = Mask(n, std::vector<bool>(n));
  *cand = Mask(n, std::vector<bool>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const bool p = i != j && k.positive(i, j);
      const bool e = i == j || (k.excluded(i, j) && !p);
      (*pos)[i][j] = p;
      (*cand)[i][j] = !e;
    }
  }
}

at::Tensor to_tensor(const Mask& m) {
  const int64_t n = static_cast<int64_t>(m.size()), k = static_cast<int64_t>(m[0].size());
  auto t = torch::zeros({n, k}, torch::kBool);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      t[i][j] = static_cast<bool>(m[i][j]);
  return t;
}

} // namespace

TEST_CASE("every strategy's tiles equal masks built by loops", "[pairing]") {
  Cohort c;
  const auto keys = c.keys();
  const int64_t n = c.n();
  for (const auto& k : cases(c)) {
    Mask pos, cand;
    expected(k, n, &pos, &cand);
    auto rule = k.strategy.rule(keys, keys, n, n, true, false, torch::kCPU, "test");
    for (int64_t t : std::vector<int64_t>{n, 5, 1}) {
      auto got_pos = torch::zeros({n, n}, torch::kBool);
      auto got_exc = torch::zeros({n, n}, torch::kBool);
      for (int64_t r0 = 0; r0 < n; r0 += t) {
        for (int64_t c0 = 0; c0 < n; c0 += t) {
          const int64_t r1 = std::min(n, r0 + t), c1 = std::min(n, c0 + t);
          auto tile = rule->tile(r0, r1, c0, c1);
          if (tile.positive.defined())
            got_pos.slice(0, r0, r1).slice(1, c0, c1).copy_(tile.positive);
          if (tile.excluded.defined())
            got_exc.slice(0, r0, r1).slice(1, c0, c1).copy_(tile.excluded);
        }
      }
      INFO(k.name << " tile " << t);
      // Pairs that are excluded are never positive: the engine's view of the rule.
      REQUIRE(got_pos.logical_and(got_exc.logical_not()).equal(to_tensor(pos)));
      REQUIRE(got_exc.logical_not().equal(to_tensor(cand)));
    }
  }
}

TEST_CASE(
    "every strategy through the engine: reference loss, dense equals tiled",
    "[pairing][engine]") {
  Cohort c;
  const auto keys = c.keys();
  const int64_t n = c.n();
  torch::manual_seed(51);
  auto feats = torch::randn({n, 1, 6}, torch::kDouble);
  auto flat = feats.reshape({n, 6});
  for (const auto& k : cases(c)) {
    Mask pos, cand;
    expected(k, n, &pos, &cand);
    for (const auto& w :
         {medcl::NegativeWeighting::uniform(), medcl::NegativeWeighting::debiased(0.1)}) {
      medcl_test::RefWeighting rw;
      if (!w.is_uniform()) {
        rw = {0, 0.1, false};
      }
      const double tau = 0.2;
      const double ref = medcl_test::ref_loss(flat, flat, pos, cand, tau, rw);
      INFO(k.name << " " << w.describe());
      std::vector<at::Tensor> grads;
      for (const auto& e :
           {medcl::SimilarityEngineOptions().path(medcl::EnginePath::Dense),
            medcl::SimilarityEngineOptions().path(medcl::EnginePath::Tiled).tile_size(5)}) {
        auto x = feats.clone().requires_grad_(true);
        auto opts = medcl::SupConLossOptions()
                        .temperature(tau)
                        .base_temperature(tau)
                        .pairing(k.strategy)
                        .weighting(w)
                        .engine(e);
        auto loss = F::supcon_loss(x, keys, opts);
        REQUIRE(loss.item<double>() == Approx(ref).epsilon(1e-10));
        loss.backward();
        grads.push_back(x.grad());
      }
      REQUIRE(rel_err(grads[1], grads[0]) < 1e-10);
    }
  }
}

TEST_CASE(
    "supcon_loss with patient ids as labels equals the same-patient strategy",
    "[pairing][supcon]") {
  Cohort c;
  torch::manual_seed(52);
  auto feats = torch::randn({c.n(), 2, 5}, torch::kDouble);
  const auto keys = c.keys();
  const double by_labels = F::supcon_loss(feats, keys.patient).item<double>();
  const double by_strategy =
      F::supcon_loss(
          feats, keys, medcl::SupConLossOptions().pairing(PairingStrategy::same_patient()))
          .item<double>();
  REQUIRE(by_strategy == Approx(by_labels).epsilon(1e-12));
  // And the default keyed SupCon with labels is same_label with unknown labels never positive.
  SampleKeys only_labels;
  only_labels.label =
      torch::tensor(std::vector<int64_t>{0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2}, torch::kLong);
  REQUIRE(
      F::supcon_loss(feats, only_labels).item<double>() ==
      Approx(F::supcon_loss(feats, only_labels.label).item<double>()).epsilon(1e-12));
}

TEST_CASE(
    "nt_xent with keys: instance strategy is plain NT-Xent, false negatives are removed",
    "[pairing][nt_xent]") {
  Cohort c;
  torch::manual_seed(53);
  const int64_t n = c.n();
  auto z0 = torch::randn({n, 4}, torch::kDouble), z1 = torch::randn({n, 4}, torch::kDouble);
  SampleKeys none;
  REQUIRE(
      F::nt_xent_loss(z0, z1, none).item<double>() ==
      Approx(F::nt_xent_loss(z0, z1).item<double>()).epsilon(1e-12));
  // Excluding the same patient: the 2n views; positives = other view of the same sample.
  auto keys = c.keys();
  keys.instance = torch::arange(n);
  auto opts =
      medcl::NTXentLossOptions().pairing(PairingStrategy::instance().exclude_same_patient());
  const int64_t m = 2 * n;
  Mask pos(m, std::vector<bool>(m)), cand(m, std::vector<bool>(m));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      const int64_t a = i % n, b = j % n;
      pos[i][j] = i != j && a == b;
      cand[i][j] = i != j && (pos[i][j] || c.patient[a] != c.patient[b]);
    }
  }
  auto z = at::cat({z0, z1}, 0);
  REQUIRE(
      F::nt_xent_loss(z0, z1, keys, opts).item<double>() ==
      Approx(medcl_test::ref_loss(z, z, pos, cand, 0.5, {})).epsilon(1e-11));
}

TEST_CASE(
    "a MoCo queue never uses a record of the query's own patient as a negative",
    "[pairing][memory]") {
  torch::manual_seed(54);
  const int64_t b = 4, d = 5;
  medcl::MemoryQueue queue(8, d, torch::kDouble);
  SampleKeys old_keys;
  old_keys.patient = torch::tensor({1, 2, 3, 1, 4, 2}, torch::kLong);
  queue.enqueue(torch::randn({6, d}, torch::kDouble), old_keys);
  SampleKeys batch;
  batch.patient = torch::tensor({1, 2, 5, 6}, torch::kLong);
  auto q = torch::randn({b, d}, torch::kDouble), k = torch::randn({b, d}, torch::kDouble);
  auto opts = medcl::InfoNCELossOptions().temperature(0.3).pairing(
      PairingStrategy::none().exclude_same_patient());
  const double got =
      F::info_nce_loss(q, k, queue.keys(), batch, queue.sample_keys(), opts).item<double>();
  // Reference: per query, candidates [k_i, queue entries of other patients].
  double total = 0;
  auto qp = batch.patient.accessor<int64_t, 1>();
  auto kp = queue.sample_keys().patient.contiguous();
  auto kpa = kp.accessor<int64_t, 1>();
  for (int64_t i = 0; i < b; ++i) {
    std::vector<at::Tensor> rows{k.slice(0, i, i + 1)};
    for (int64_t j = 0; j < queue.filled(); ++j) {
      if (kpa[j] != qp[i])
        rows.push_back(queue.keys().slice(0, j, j + 1));
    }
    auto cands = at::cat(rows, 0);
    Mask pos(1, std::vector<bool>(cands.size(0))), cand(1, std::vector<bool>(cands.size(0), true));
    pos[0][0] = true;
    total += medcl_test::ref_loss(q.slice(0, i, i + 1), cands, pos, cand, 0.3, {});
  }
  REQUIRE(got == Approx(total / b).epsilon(1e-11));
  // With same_patient the queue's records of the patient become positives instead.
  auto as_pos = F::info_nce_loss(
      q,
      k,
      queue.keys(),
      batch,
      queue.sample_keys(),
      medcl::InfoNCELossOptions().temperature(0.3).pairing(PairingStrategy::same_patient()));
  REQUIRE(std::isfinite(as_pos.item<double>()));
  REQUIRE(as_pos.item<double>() != Approx(got));
}

TEST_CASE(
    "clip with study keys: every report of the image's study is a positive",
    "[pairing][clip]") {
  torch::manual_seed(55);
  auto img = torch::randn({5, 4}, torch::kDouble), txt = torch::randn({5, 4}, torch::kDouble);
  SampleKeys ik, tk;
  ik.study = torch::tensor({1, 1, 2, 3, 3}, torch::kLong);
  tk.study = ik.study.clone();
  auto sa = ik.study.accessor<int64_t, 1>();
  Mask pos(5, std::vector<bool>(5)), cand(5, std::vector<bool>(5, true));
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j)
      pos[i][j] = sa[i] == sa[j];
  const double ref = 0.5 *
      (medcl_test::ref_loss(img, txt, pos, cand, 0.1, {}) +
       medcl_test::ref_loss(txt, img, pos, cand, 0.1, {}));
  REQUIRE(
      F::clip_loss(img, txt, torch::tensor(10.0, torch::kDouble), ik, tk).item<double>() ==
      Approx(ref).epsilon(1e-11));
  // Distinct studies: the plain CLIP loss.
  ik.study = torch::arange(5);
  tk.study = torch::arange(5);
  REQUIRE(
      F::clip_loss(img, txt, torch::tensor(10.0, torch::kDouble), ik, tk).item<double>() ==
      Approx(F::clip_loss(img, txt, 10.0).item<double>()).epsilon(1e-12));
}

TEST_CASE("custom dense masks pair what keys cannot express", "[pairing]") {
  torch::manual_seed(56);
  const int64_t n = 6;
  auto feats = torch::randn({n, 1, 4}, torch::kDouble);
  auto mask = torch::zeros({n, n}, torch::kBool);
  mask[0][3] = true;
  mask[3][0] = true;
  mask[1][2] = true;
  mask[4][5] = true;
  auto before = mask.clone();
  auto s = PairingStrategy::custom(PairExpr::mask(mask, "hand-picked pairs"), "hand-picked");
  Mask pos(n, std::vector<bool>(n)), cand(n, std::vector<bool>(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      pos[i][j] = i != j && mask[i][j].item<bool>();
      cand[i][j] = i != j;
    }
  SampleKeys none;
  auto loss = F::supcon_loss(
      feats, none, medcl::SupConLossOptions().pairing(s).temperature(0.5).base_temperature(0.5));
  REQUIRE(
      loss.item<double>() ==
      Approx(medcl_test::ref_loss(feats.reshape({n, 4}), feats.reshape({n, 4}), pos, cand, 0.5, {}))
          .epsilon(1e-11));
  REQUIRE(mask.equal(before)); // the user's mask is never modified
  REQUIRE(s.describe() == "hand-picked");
}

TEST_CASE("pairing errors name the key, the strategy and the values", "[pairing][errors]") {
  Cohort c;
  auto feats = torch::randn({c.n(), 2, 3});
  SampleKeys only_patient;
  only_patient.patient = c.keys().patient;
  REQUIRE_THROWS_WITH(
      F::supcon_loss(
          feats,
          only_patient,
          medcl::SupConLossOptions().pairing(PairingStrategy::temporal_neighbours(5))),
      Contains("supcon_loss") && Contains("needs the key 'time'") &&
          Contains("temporal neighbours") && Contains("it carries: instance, view, patient"));
  SampleKeys short_keys;
  short_keys.patient = torch::tensor({1, 2}, torch::kLong);
  REQUIRE_THROWS_WITH(
      F::supcon_loss(feats, short_keys), Contains("key 'patient' must have shape [12], got [2]"));
  SampleKeys float_keys;
  float_keys.patient = torch::zeros({c.n()});
  REQUIRE_THROWS_WITH(F::supcon_loss(feats, float_keys), Contains("key 'patient' must be int64"));
  SampleKeys int_time;
  int_time.time = torch::zeros({c.n()}, torch::kLong);
  REQUIRE_THROWS_WITH(F::supcon_loss(feats, int_time), Contains("'time' must be floating point"));
  auto bad_mask =
      PairingStrategy::custom(PairExpr::mask(torch::zeros({3, 3}, torch::kBool), "tiny"), "tiny");
  REQUIRE_THROWS_WITH(
      F::supcon_loss(feats, SampleKeys{}, medcl::SupConLossOptions().pairing(bad_mask)),
      Contains("mask 'tiny' must have shape [24, 24]"));
  REQUIRE_THROWS_WITH(PairExpr::mask(torch::zeros({3, 3})), Contains("bool tensor"));
  REQUIRE_THROWS_WITH(PairExpr::time_within(-1.0), Contains("window"));
  REQUIRE_THROWS_WITH(
      PairingStrategy::multi_instance(Key::Site), Contains("Key::Study or Key::Patient"));
  SampleKeys queue_keys; // the queue lacks the patient key
  queue_keys.study = torch::zeros({5}, torch::kLong);
  REQUIRE_THROWS_WITH(
      F::info_nce_loss(
          torch::randn({2, 3}),
          torch::randn({2, 3}),
          torch::randn({5, 3}),
          only_patient.index_select(torch::arange(2)),
          queue_keys,
          medcl::InfoNCELossOptions().pairing(PairingStrategy::none().exclude_same_patient())),
      Contains("candidates lack") && Contains("'patient'"));
}

TEST_CASE("strategies describe themselves for reports", "[pairing]") {
  auto s = PairingStrategy::same_patient()
               .positives_across_sites()
               .exclude_same_patient()
               .exclude_same_site_negatives();
  REQUIRE(
      s.describe() ==
      "same patient (PCLR), across sites only; excluded from negatives: same patient, same site");
  auto keys = s.required_keys();
  REQUIRE(keys.size() == 2);
  REQUIRE(
      (PairExpr::same(Key::Patient) & PairExpr::time_within(7)).describe() ==
      "(same patient & |Δtime| <= 7)");
}

TEST_CASE("sample keys concatenate, select and repeat over views", "[pairing]") {
  Cohort c;
  const auto keys = c.keys();
  auto both = medcl::cat_keys(keys, keys.index_select(torch::tensor({0, 1})), "test");
  REQUIRE(both.size() == c.n() + 2);
  REQUIRE(both.patient.slice(0, c.n()).equal(keys.patient.slice(0, 0, 2)));
  REQUIRE(both.time.size(0) == c.n() + 2);
  SampleKeys only_patient;
  only_patient.patient = keys.patient;
  REQUIRE_THROWS_WITH(
      medcl::cat_keys(keys, only_patient, "test"),
      Contains("'instance' is carried by one side only"));
  auto views = only_patient.repeat_views(3, torch::TensorOptions());
  REQUIRE(views.size() == 3 * c.n());
  REQUIRE(views.view.slice(0, c.n(), 2 * c.n()).eq(1).all().item<bool>());
  REQUIRE(views.instance.slice(0, 2 * c.n()).equal(torch::arange(c.n())));
  REQUIRE(only_patient.names() == "patient");
}

TEST_CASE(
    "floating-point identity keys are refused by every loss, strategy and queue, never truncated",
    "[pairing][errors]") {
  Cohort c;
  const int64_t n = c.n();
  auto feats = torch::randn({n, 2, 3}, torch::kDouble);
  // The report's labels: {0.2, 0.7, ...} were cast to class 0 and the loss was 0 with a warning.
  auto soft = torch::rand({n}, torch::kDouble) * 0.9 + 0.05;
  auto whole = torch::tensor(c.patient, torch::kFloat); // whole numbers stored as floats
  const auto same_label = medcl::SupConLossOptions().pairing(PairingStrategy::same_label());
  for (const auto& labels : {soft, whole}) {
    REQUIRE_THROWS_WITH(
        F::supcon_loss(feats, labels, same_label),
        Contains("supcon_loss") && Contains("labels must be class ids") &&
            Contains(labels.scalar_type() == torch::kDouble ? "Double" : "Float") &&
            Contains("pairing strategy 'same label'") && Contains("refused rather than truncated"));
    REQUIRE_THROWS_WITH(
        F::supcon_loss(feats, labels),
        Contains("supcon_loss") && Contains("int64 or int32") && Contains("truncated"));
  }
  // Integer labels of either width are accepted with a strategy, as without one.
  auto int_labels = torch::tensor(c.patient, torch::kInt);
  REQUIRE(
      F::supcon_loss(feats, int_labels, same_label).item<double>() ==
      Approx(F::supcon_loss(feats, int_labels).item<double>()).epsilon(1e-12));

  // Every identity key of SampleKeys, through every keyed InfoNCE-family loss.
  const auto z = torch::randn({n, 3}, torch::kDouble);
  const auto scale = torch::tensor(10.0, torch::kDouble);
  SampleKeys ints = c.keys();
  ints.view = torch::zeros({n}, torch::kLong);
  for (Key k : medcl::all_keys()) {
    if (!medcl::is_identity_key(k)) {
      continue;
    }
    const std::string name = medcl::key_name(k);
    INFO(name);
    SampleKeys keys = ints;
    keys.get(k) = keys.get(k).to(torch::kFloat) + 0.25;
    const auto refused = [&](const std::string& prefix, const std::function<void()>& f) {
      REQUIRE_THAT(
          error_of(f),
          Contains(prefix + " key '" + name + "' must be int64") && Contains("Float") &&
              Contains("refused rather than truncated"));
    };
    auto strategy = PairingStrategy::custom(PairExpr::same(k), "same " + name);
    refused("supcon_loss: sample", [&] {
      F::supcon_loss(feats, keys, medcl::SupConLossOptions().pairing(strategy));
    });
    refused("nt_xent_loss: sample", [&] {
      F::nt_xent_loss(z, z, keys, medcl::NTXentLossOptions().pairing(strategy));
    });
    const auto info = medcl::InfoNCELossOptions().pairing(strategy);
    refused("info_nce_loss: query", [&] {
      F::info_nce_loss(z, z, at::Tensor(), keys, SampleKeys{}, info);
    });
    refused("info_nce_loss: negative", [&] { F::info_nce_loss(z, z, z, ints, keys, info); });
    const auto clip = medcl::CLIPLossOptions().pairing(strategy);
    refused("clip_loss: image", [&] { F::clip_loss(z, z, scale, keys, ints, clip); });
    refused("clip_loss: text", [&] { F::clip_loss(z, z, scale, ints, keys, clip); });
    // A strategy's rule, asked for directly, names itself, the key and the dtype.
    const auto dev = torch::Device(torch::kCPU);
    REQUIRE_THAT(
        error_of([&] { strategy.rule(keys, ints, n, n, false, false, dev, "my_loss"); }),
        Contains("my_loss: pairing strategy 'same " + name + "'") &&
            Contains("key '" + name + "' as a class identity") && Contains("batch's key is Float"));
    REQUIRE_THAT(
        error_of([&] { strategy.rule(ints, keys, n, n, false, false, dev, "my_loss"); }),
        Contains("candidates' key is Float"));
    // And the memory queue, by name.
    medcl::MemoryQueue q(8, 3);
    const auto enqueue = [&] { q.enqueue(z.slice(0, 0, 4), {{name, keys.get(k).slice(0, 0, 4)}}); };
    REQUIRE_THAT(
        error_of(enqueue),
        Contains("MemoryQueue::enqueue: pairing key '" + name + "' must be an integer tensor") &&
            Contains("Float") && Contains("truncated"));
  }
  // The false-negative control reads keys too: a float site refused through exclude_*.
  SampleKeys float_site = c.keys();
  float_site.site = float_site.site.to(torch::kDouble);
  REQUIRE_THROWS_WITH(
      F::info_nce_loss(
          z,
          z,
          z,
          c.keys(),
          float_site,
          medcl::InfoNCELossOptions().pairing(
              PairingStrategy::none().exclude_same_site_negatives())),
      Contains("key 'site' must be int64") && Contains("Double"));
  // Time is the one floating key; an integer-valued class key in int32 is told how to convert.
  SampleKeys int32_patient;
  int32_patient.patient = torch::tensor(c.patient, torch::kInt);
  REQUIRE_THROWS_WITH(
      F::supcon_loss(feats, int32_patient), Contains("got Int (convert it with .to(at::kLong))"));
  medcl::MemoryQueue timed(8, 3);
  REQUIRE_NOTHROW(timed.enqueue(
      z.slice(0, 0, 2),
      {{"time", torch::tensor({0.5, 1.5})},
       {"ward", torch::tensor({1, 2}, torch::kInt)},
       {"patient", torch::tensor({3, 4})}}));
  REQUIRE(timed.sample_keys().time.equal(torch::tensor({0.5, 1.5}, torch::kDouble)));
  REQUIRE_THROWS_WITH(
      medcl::MemoryQueue(8, 3).enqueue(z.slice(0, 0, 2), {{"ward", torch::tensor({0.5, 1.5})}}),
      Contains("pairing key 'ward' must be an integer tensor") && Contains("Float"));
  // A checkpoint whose queue holds a float identity key is refused on loading.
  auto state = timed.state();
  state["key.patient"] = state["key.patient"].to(torch::kFloat);
  REQUIRE_THROWS_WITH(
      medcl::MemoryQueue(8, 3).load_state(state),
      Contains("MemoryQueue::load_state: pairing key 'patient' must be an integer tensor") &&
          Contains("Float"));
  // The rule the losses build directly refuses float class keys.
  auto fk = torch::tensor({0.2, 0.7, 0.2});
  REQUIRE_THROWS_WITH(
      medcl::KeyMatchRule(fk, fk, true, "same label"),
      Contains("KeyMatchRule ('same label')") && Contains("floating-point dtype Float"));
}

TEST_CASE(
    "the methods refuse floating-point labels and keys as the losses do",
    "[pairing][errors]") {
  torch::manual_seed(3);
  const int64_t b = 6;
  auto encoder = [] { return torch::nn::Sequential(torch::nn::Linear(4, 8)); };
  medcl::MethodBatch batch;
  batch.views = {torch::randn({b, 4}), torch::randn({b, 4})};
  batch.keys.label = torch::tensor({0.2, 0.7, 0.2, 0.7, 0.1, 0.9}, torch::kFloat);
  medcl::SupCon<torch::nn::Sequential> supcon(
      encoder(), medcl::SupConOptions(8).hidden_dim(16).projection_dim(4));
  REQUIRE_THROWS_WITH(
      supcon.training_loss(batch, {}),
      Contains("supcon_loss") && Contains("key 'label' must be int64") && Contains("Float"));
  medcl::SupCon<torch::nn::Sequential> paired(
      encoder(),
      medcl::SupConOptions(8).hidden_dim(16).projection_dim(4).loss(
          medcl::SupConLossOptions().pairing(PairingStrategy::same_label())));
  REQUIRE_THROWS_WITH(paired.training_loss(batch, {}), Contains("key 'label' must be int64"));
  medcl::MethodBatch by_patient;
  by_patient.views = batch.views;
  by_patient.keys.patient = torch::tensor({1.0, 1.0, 2.0, 2.0, 3.0, 3.0}, torch::kDouble);
  medcl::MoCo<torch::nn::Sequential> moco(
      encoder(),
      medcl::MoCoOptions::v2(8).hidden_dim(16).projection_dim(4).queue_size(12).loss(
          medcl::InfoNCELossOptions().pairing(PairingStrategy::none().exclude_same_patient())));
  REQUIRE_THROWS_WITH(
      moco.training_loss(by_patient, {}),
      Contains("info_nce_loss") && Contains("key 'patient' must be int64") && Contains("Double"));
}
