#include "augment/catalogue.h"
#include "support.h"

#include <medcl/augment/image.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>

#include "catch.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

using medcl::Json;
using medcl_test::Contains;
using namespace medcl::augment;

TEST_CASE(
    "every transform: layout kept, seeded, varies with the seed, describes every parameter",
    "[augment]") {
  for (const auto& it : medcl_test::all_transforms()) {
    INFO(it.t->name());
    const auto in = medcl_test::transform_sample(it.m);
    auto run = [&](uint64_t seed) { return Policy(it.m, it.t, seed).views(in, 1)[0]; };
    auto a = run(1);
    REQUIRE(a.values.dim() == in.values.dim());
    REQUIRE(a.values.size(0) == in.values.size(0));
    REQUIRE(a.values.scalar_type() == in.values.scalar_type());
    REQUIRE(a.values.device() == in.values.device());
    REQUIRE(a.mask.defined() == in.mask.defined());
    REQUIRE(a.times.defined() == in.times.defined());
    if (a.values.is_floating_point()) {
      REQUIRE(torch::isfinite(a.values).all().item<bool>());
    }
    medcl_test::require_seeded(it.random, run);
    const Json d = it.t->describe();
    REQUIRE(d.at("name") == it.t->name());
    REQUIRE(d.at("params") == it.t->parameters());
    REQUIRE(d.at("invariances") == Json::array_of(it.t->invariances()));
    REQUIRE(Json::parse(d.dump()) == d);
    REQUIRE_FALSE(it.t->invariances().empty());
  }
}

TEST_CASE("NaN input is refused naming the policy's transform", "[augment][errors]") {
  auto x = torch::randn({2, 3, 50});
  x[1][2][3] = std::nan("");
  REQUIRE_THROWS_WITH(
      Policy(Modality::ECG, std::make_shared<GaussianJitter>(0.1), 1).views({x, {}, {}}, 1),
      Contains("transform 'gaussian_jitter'") && Contains("contains NaN"));
  // Found next to infinities and in the last value of a batch processed in several chunks;
  // infinities alone are not NaN.
  auto big = torch::zeros({40, 12, 1000});
  big[0][0][0] = std::numeric_limits<float>::infinity();
  big[1][0][0] = -std::numeric_limits<float>::infinity();
  Policy amp(Modality::ECG, std::make_shared<AmplitudeScale>(0.9, 1.1), 1);
  REQUIRE_NOTHROW(amp.views({big, {}, {}}, 1));
  big[39][11][999] = std::nan("");
  REQUIRE_THROWS_WITH(amp.views({big, {}, {}}, 1), Contains("contains NaN"));
  REQUIRE_THROWS_WITH(amp.views({big.to(torch::kDouble), {}, {}}, 1), Contains("contains NaN"));
}

TEST_CASE("a large batch goes through in chunks, stitched back in order", "[augment]") {
  // 200 records of 3 x 1000 values: chunks of 87, 87 and 26 records.
  REQUIRE(200 * 3 * 1000 > Policy::kChunkElements);
  auto eeg = torch::randn({200, 3, 1000});
  Policy reverse(Modality::EEG, std::make_shared<TimeReversal>(), 1, {"time_reversal"});
  for (const auto& v : reverse.views({eeg, {}, {}}, 2)) {
    REQUIRE(v.values.equal(eeg.flip({2})));
  }
  // A transform that changes the record's length: every output row is a window of its own input
  // row (values encode row and time, so a row out of place is seen).
  const int64_t n = 300, t = 1000, w = 500;
  auto ecg = (torch::arange(n).view({n, 1, 1}) * 10000 + torch::arange(t).view({1, 1, t}))
                 .expand({n, 12, t})
                 .to(torch::kFloat)
                 .contiguous();
  auto crop = Policy(Modality::ECG, std::make_shared<RandomCrop>(w), 3).views({ecg, {}, {}}, 1)[0];
  REQUIRE(crop.values.sizes() == torch::IntArrayRef({n, 12, w}));
  auto start = crop.values.select(2, 0).select(1, 0) - torch::arange(n).to(torch::kFloat) * 10000;
  REQUIRE(start.min().item<double>() >= 0);
  REQUIRE(start.max().item<double>() <= t - w);
  auto expected = ecg.select(1, 0).select(1, 0).view({n, 1, 1}) + start.view({n, 1, 1}) +
      torch::arange(w).to(torch::kFloat).view({1, 1, w});
  REQUIRE(crop.values.equal(expected.expand({n, 12, w})));
  REQUIRE(std::get<0>(torch::_unique(start)).numel() > 50); // each record its own window
  // Masks and visit times come back with their rows: each record's times move by one offset.
  const int64_t b = 20000;
  auto mask = torch::rand({b, 5, 3}).gt(0.3);
  auto times =
      (torch::arange(b).view({b, 1}) * 100 + torch::arange(5).view({1, 5})).to(torch::kDouble);
  Batch visits{torch::randn({b, 5, 3}).masked_fill(mask.logical_not(), 0.0), mask, times};
  auto shifted = Policy(Modality::Visits, std::make_shared<TimeShift>(10.0), 4).views(visits, 1)[0];
  REQUIRE(shifted.mask.equal(mask));
  REQUIRE(shifted.values.equal(visits.values));
  auto offset = shifted.times - times;
  REQUIRE(shifted.times.scalar_type() == torch::kDouble);
  REQUIRE((offset - offset.select(1, 0).unsqueeze(1)).abs().max().item<double>() < 1e-9);
  REQUIRE(offset.abs().max().item<double>() <= 10.0 + 1e-9);
}

namespace {

Json object(std::initializer_list<std::pair<std::string, Json>> members) {
  Json out = Json::object();
  for (const auto& m : members) {
    out[m.first] = m.second;
  }
  return out;
}

// Text with everything JSON must escape, and non-ASCII UTF-8.
const std::string kAwkward =
    "a \"quoted\" back\\slash\nnew line\ttab\x01 \xc3\x96"
    "dem \xe2\x80\x93 \xce\xb2";

// A transform written against the typed interface, with awkward names and values.
class AwkwardTransform : public Transform {
 public:
  std::string name() const override {
    return "awkward " + kAwkward;
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Tabular};
  }
  std::vector<std::string> invariances() const override {
    return {kAwkward, "plain"};
  }
  Json parameters() const override {
    return object(
        {{"text " + kAwkward, kAwkward},
         {"p", 0.25},
         {"count", 3},
         {"on", true},
         {"list", Json::array({1, 2.5, kAwkward})}});
  }
  Batch apply(const Batch& in, Modality, at::Generator&) const override {
    return in;
  }
};

// A transform written against the deprecated interface: params() only.
class LegacyTransform : public Transform {
 public:
  std::string name() const override {
    return "legacy";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Tabular};
  }
  std::vector<std::string> invariances() const override {
    return {"nothing"};
  }
  std::map<std::string, std::string> params() const override {
    return {{"p", "0.25"}, {"quote\"d", kAwkward}};
  }
  Batch apply(const Batch& in, Modality, at::Generator&) const override {
    return in;
  }
};

// A transform that describes no parameters at all.
class SilentTransform : public Transform {
 public:
  std::string name() const override {
    return "silent";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Tabular};
  }
  std::vector<std::string> invariances() const override {
    return {"nothing"};
  }
  Batch apply(const Batch& in, Modality, at::Generator&) const override {
    return in;
  }
};

} // namespace

TEST_CASE("every built-in transform describes its parameters as typed values", "[augment]") {
  const std::map<std::string, Json> expected{
      {"random_resized_crop", object({{"min_scale", 0.5}, {"max_scale", 1.0}})},
      {"intensity_window",
       object({{"level", 0.5}, {"width", 1.0}, {"level_jitter", 0.1}, {"width_jitter", 0.1}})},
      {"gamma", object({{"lo", 0.5}, {"hi", 2.0}})},
      {"brightness_contrast", object({{"brightness", 0.2}, {"contrast", 0.2}})},
      {"gaussian_noise", object({{"sigma", 0.1}})},
      {"gaussian_blur", object({{"lo", 0.5}, {"hi", 1.0}})},
      {"random_affine",
       object({{"max_rotation_deg", 15.0}, {"max_translate", 0.1}, {"max_scale", 0.1}})},
      {"bias_field", object({{"max_coefficient", 0.3}, {"order", 3}})},
      {"cutout", object({{"size", 0.25}, {"count", 1}})},
      {"flip", object({{"axis", 0}})},
      {"amplitude_scale", object({{"lo", 0.5}, {"hi", 1.5}, {"per_lead", true}})},
      {"gaussian_jitter", object({{"sigma", 0.1}})},
      {"baseline_wander",
       object({{"max_amplitude", 0.2}, {"max_frequency_hz", 0.5}, {"sampling_rate_hz", 100.0}})},
      {"powerline_interference",
       object({{"frequency_hz", 50.0}, {"max_amplitude", 0.2}, {"sampling_rate_hz", 200.0}})},
      {"random_crop", object({{"window", 100}})},
      {"time_mask", object({{"max_fraction", 0.3}})},
      {"lead_dropout", object({{"p", 0.5}})},
      {"time_warp", object({{"max_stretch", 0.2}})},
      {"time_reversal", Json::object()},
      {"feature_mask", object({{"p", 0.3}})},
      {"feature_noise",
       object(
           {{"scale", 0.5},
            {"features", 6},
            {"feature_sd", Json::array_of(std::vector<double>(6, 1.0))}})},
      {"visit_dropout", object({{"p", 0.5}})},
      {"temporal_crop", object({{"min_fraction", 0.5}})},
      {"time_shift", object({{"max_shift", 10.0}})},
      {"gene_dropout", object({{"p", 0.3}})},
      {"binomial_thinning", object({{"lo", 0.3}, {"hi", 0.7}})},
      {"library_size_scale", object({{"lo", 0.5}, {"hi", 2.0}})},
      {"log_expression_noise", object({{"sigma", 0.2}})},
      {"token_mask", object({{"p", 0.4}, {"mask_token", 99}})},
      {"sentence_shuffle", object({{"separator", 9}})},
      {"sentence_sample", object({{"keep", 0.5}, {"separator", 9}, {"pad_token", 0}})},
  };
  // Counts, indices and token ids are integers; every other number is a double.
  const std::set<std::string> integers{
      "order", "count", "axis", "window", "features", "mask_token", "separator", "pad_token"};
  const auto all = medcl_test::all_transforms();
  REQUIRE(all.size() == expected.size());
  for (const auto& it : all) {
    INFO(it.t->name());
    const Json p = it.t->parameters();
    REQUIRE(expected.count(it.t->name()) == 1);
    CHECK(p == expected.at(it.t->name()));
    for (const auto& kv : p.items()) {
      INFO(kv.first);
      CHECK_FALSE(kv.second.is_string());
      if (kv.second.is_number()) {
        CHECK(kv.second.is_integer() == (integers.count(kv.first) == 1));
      }
    }
    // The deprecated text form is the same parameters, written as text.
    const auto text = it.t->params();
    REQUIRE(text.size() == p.size());
    for (const auto& kv : p.items()) {
      REQUIRE(text.count(kv.first) == 1);
      if (kv.second.is_number() || kv.second.is_bool()) {
        CHECK(Json::parse(text.at(kv.first)) == kv.second);
      }
    }
  }
  // Numbers as the deprecated params() wrote them.
  CHECK(
      BiasField(0.3, 3).params() ==
      std::map<std::string, std::string>{{"max_coefficient", "0.3"}, {"order", "3"}});
  CHECK(AmplitudeScale(0.5, 2, true).params().at("per_lead") == "true");
  CHECK(BaselineWander(0.2, 0.5, 250).params().at("sampling_rate_hz") == "250");
}

TEST_CASE(
    "descriptions with quotes, backslashes, control characters and UTF-8 read back equal",
    "[augment]") {
  auto t = std::make_shared<AwkwardTransform>();
  const Json d = t->describe();
  CHECK(d.at("name").as_string() == "awkward " + kAwkward);
  CHECK(d.at("params").at("text " + kAwkward).as_string() == kAwkward);
  CHECK(d.at("params").at("p").as_double() == 0.25);
  CHECK(d.at("params").at("count").is_integer());
  CHECK(d.at("params").at("on").as_bool());
  CHECK(d.at("params").at("list")[2].as_string() == kAwkward);
  CHECK(d.at("invariances")[0].as_string() == kAwkward);
  const std::string text = d.dump();
  CHECK(text.find('\n') == std::string::npos); // escaped, like every control character
  CHECK(text.find('\x01') == std::string::npos);
  CHECK(Json::parse(text) == d);
  CHECK(Json::parse(d.dump(2)) == d);
  // The deprecated text is valid JSON too, and params() writes the values as text.
  CHECK(Json::parse(t->describe_json()) == d);
  CHECK(t->params().at("text " + kAwkward) == kAwkward);
  CHECK(t->params().at("count") == "3");
  CHECK(t->params().at("list") == Json::array({1, 2.5, kAwkward}).dump());
  // In a composition and a policy (whose allowed-invalid names are awkward too).
  auto seq = std::make_shared<Sequence>(
      std::vector<TransformPtr>{t, std::make_shared<RandomApply>(t, 0.5)});
  Policy policy(Modality::Tabular, seq, 3, {kAwkward});
  const Json pd = policy.describe();
  CHECK(pd.at("allow_invalid")[0].as_string() == kAwkward);
  CHECK(pd.at("transform").at("steps")[1].at("transform") == d);
  CHECK(Json::parse(pd.dump()) == pd);
  CHECK(Json::parse(policy.describe_json()) == pd);
  // A seed beyond int64 is kept exactly, as text.
  const uint64_t big = 18446744073709551615ULL;
  CHECK(Policy(Modality::Tabular, t, big).describe().at("seed").as_string() == std::to_string(big));
  CHECK(Policy(Modality::Tabular, t, 7).describe().at("seed").as_int64() == 7);
}

TEST_CASE("compositions describe their transforms nested, as Json", "[augment]") {
  auto jitter = std::make_shared<GaussianJitter>(0.1);
  auto mask = std::make_shared<TimeMask>(0.2);
  auto one =
      std::make_shared<OneOf>(std::vector<TransformPtr>{jitter, mask}, std::vector<double>{1, 3});
  auto ra = std::make_shared<RandomApply>(one, 0.75);
  Sequence seq({ra, jitter});
  const Json d = seq.describe();
  CHECK(d.at("name") == "sequence");
  REQUIRE(d.at("steps").size() == 2);
  const Json& r = d.at("steps")[0];
  CHECK(r.at("name") == "random_apply");
  CHECK(r.at("p") == 0.75);
  const Json& o = r.at("transform");
  CHECK(o.at("name") == "one_of");
  REQUIRE(o.at("choices").size() == 2);
  CHECK(o.at("choices")[0].at("weight") == 1.0);
  CHECK(o.at("choices")[0].at("transform") == jitter->describe());
  CHECK(o.at("choices")[1].at("weight") == 3.0);
  CHECK(o.at("choices")[1].at("transform") == mask->describe());
  CHECK(d.at("steps")[1] == jitter->describe());
  CHECK(d.at("steps")[1].at("params").at("sigma") == 0.1);
  // Their own parameters, typed.
  CHECK(seq.parameters() == object({{"steps", 2}}));
  CHECK(seq.parameters().at("steps").is_integer());
  CHECK(ra->parameters() == object({{"p", 0.75}}));
  CHECK(one->parameters() == object({{"choices", 2}, {"weights", Json::array({1.0, 3.0})}}));
  CHECK(one->params().at("choices") == "2");
  CHECK(Json::parse(seq.describe_json()) == d);
}

TEST_CASE(
    "a transform with only the deprecated params() still describes itself, and one with neither is "
    "refused",
    "[augment][errors]") {
  LegacyTransform legacy;
  const Json p = legacy.parameters();
  CHECK(p == object({{"p", "0.25"}, {"quote\"d", kAwkward}}));
  const Json d = legacy.describe();
  CHECK(d.at("params") == p);
  CHECK(Json::parse(legacy.describe_json()) == d);
  CHECK(legacy.params().at("p") == "0.25");
  Policy policy(Modality::Tabular, std::make_shared<LegacyTransform>(), 1);
  CHECK(policy.describe().at("transform") == d);

  auto silent = std::make_shared<SilentTransform>();
  // One matcher (a combination of matchers would refer to temporaries).
  const auto refused = Contains("Transform 'silent' overrides neither parameters() nor params()");
  // Every way in is refused, every time (nothing is left half-entered).
  for (int i = 0; i < 2; ++i) {
    CHECK_THROWS_WITH(silent->parameters(), refused);
    CHECK_THROWS_WITH(silent->params(), refused);
    CHECK_THROWS_WITH(silent->describe(), refused);
    CHECK_THROWS_WITH(silent->describe_json(), refused);
    CHECK_THROWS_WITH(Policy(Modality::Tabular, silent, 1).describe(), refused);
    CHECK_THROWS_WITH(Sequence({std::make_shared<LegacyTransform>(), silent}).describe(), refused);
  }
  // It still augments (only its description is missing), and other transforms still describe.
  CHECK_NOTHROW(Policy(Modality::Tabular, silent, 1)
                    .views(medcl_test::transform_sample(Modality::Tabular), 1));
  CHECK(legacy.parameters() == p);
}

TEST_CASE(
    "nested compositions name the innermost offending transform and its path",
    "[augment][errors]") {
  auto seq = [](std::vector<TransformPtr> steps) {
    return std::make_shared<Sequence>(std::move(steps));
  };
  // The report's case: a signal transform inside a Sequence for chest films was reported as
  // "transform 'sequence' is not valid for modality 'chest_radiograph'".
  auto chest = seq(
      {std::make_shared<BrightnessContrast>(0.1, 0.1),
       std::make_shared<OneOf>(std::vector<TransformPtr>{
           std::make_shared<GaussianNoise>(0.05), std::make_shared<TimeReversal>()})});
  try {
    Policy(Modality::ChestRadiograph, chest, 1);
    FAIL("a signal transform inside a chest film's policy was accepted");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    CHECK_THAT(
        msg,
        Contains(
            "Policy: transform 'time_reversal' (at sequence > one_of > time_reversal) is not valid "
            "for modality 'chest_radiograph'; it accepts: ecg, eeg"));
    CHECK(msg.find("'sequence'") == std::string::npos);
    CHECK(msg.find("'one_of'") == std::string::npos);
  }
  // A clinically invalid transform deep in the tree: named with its path, and the name that
  // allows it.
  auto ecg = seq(
      {std::make_shared<GaussianJitter>(0.1),
       std::make_shared<OneOf>(std::vector<TransformPtr>{
           std::make_shared<AmplitudeScale>(0.8, 1.2, false),
           std::make_shared<RandomApply>(std::make_shared<TimeReversal>(), 0.5)})});
  REQUIRE_THROWS_WITH(
      Policy(Modality::ECG, ecg, 1),
      Contains("transform 'time_reversal' (at sequence > one_of > random_apply > time_reversal) is "
               "clinically invalid for ecg") &&
          Contains("Pass 'time_reversal' in allow_invalid"));
  REQUIRE_NOTHROW(Policy(Modality::ECG, ecg, 1, {"time_reversal"}));
  // The first offending step is named, wherever it sits; a flip of a chest film inside a
  // composition too.
  REQUIRE_THROWS_WITH(
      Policy(
          Modality::ChestRadiograph,
          seq(
              {std::make_shared<Gamma>(0.8, 1.2),
               std::make_shared<RandomApply>(std::make_shared<Flip>(0), 0.5)}),
          1),
      Contains("transform 'flip' (at sequence > random_apply > flip) is clinically invalid for "
               "chest_radiograph") &&
          Contains("upside-down"));
  // A transform at the root is named without a path.
  REQUIRE_THROWS_WITH(
      Policy(Modality::Tabular, std::make_shared<TimeReversal>(), 1),
      Contains("Policy: transform 'time_reversal' is not valid for modality 'tabular'; it "
               "accepts: ecg, eeg"));
}
