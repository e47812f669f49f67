#include "support.h"

#include <medcl/nn/momentum.h>

#include "catch.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using medcl_test::Contains;
using medcl_test::rel_err;

namespace {

// lightly's cosine_schedule, written out: v = e - (e - s) (cos(pi t / (T - 1)) + 1) / 2.
double reference_momentum(int64_t step, int64_t total, double s, double e) {
  const double pi = std::acos(-1.0);
  const double t = static_cast<double>(std::min(step, total - 1)) / static_cast<double>(total - 1);
  return e - (e - s) * (std::cos(pi * t) + 1.0) / 2.0;
}

} // namespace

TEST_CASE("update_momentum is an EMA of parameters and copies buffers", "[nn][momentum]") {
  torch::manual_seed(26);
  torch::nn::Sequential online(torch::nn::Linear(3, 2), torch::nn::BatchNorm1d(2));
  torch::nn::Sequential target(torch::nn::Linear(3, 2), torch::nn::BatchNorm1d(2));
  online->train();
  online->forward(torch::randn({8, 3})); // moves the running statistics
  std::vector<at::Tensor> before;
  for (const auto& p : target->parameters())
    before.push_back(p.detach().clone());
  medcl::update_momentum(*online, *target, 0.9);
  auto op = online->parameters();
  auto tp = target->parameters();
  for (size_t i = 0; i < op.size(); ++i) {
    REQUIRE(rel_err(tp[i], 0.9 * before[i] + 0.1 * op[i].detach()) < 1e-6);
  }
  auto ob = online->buffers();
  auto tb = target->buffers();
  for (size_t i = 0; i < ob.size(); ++i) {
    REQUIRE(tb[i].equal(ob[i]));
  }
  torch::nn::Sequential other(torch::nn::Linear(4, 2));
  REQUIRE_THROWS(medcl::update_momentum(*online, *other, 0.9));
  REQUIRE_THROWS_WITH(
      medcl::update_momentum(*online, *target, 1.5), Contains("m must be in [0, 1]"));
}

TEST_CASE("cosine_schedule goes from start to end along a half cosine", "[nn][momentum]") {
  REQUIRE(medcl::cosine_schedule(0, 11, 0.996, 1.0) == Approx(0.996));
  REQUIRE(medcl::cosine_schedule(10, 11, 0.996, 1.0) == Approx(1.0));
  REQUIRE(medcl::cosine_schedule(5, 11, 0.996, 1.0) == Approx(0.998));
  REQUIRE(medcl::cosine_schedule(0, 1, 0.5, 1.0) == Approx(1.0));
  REQUIRE_THROWS_WITH(medcl::cosine_schedule(0, 0, 0.5, 1.0), Contains("max_steps must be >= 1"));
}

TEST_CASE("MomentumSchedule goes from start to end along a half cosine", "[nn][momentum]") {
  const medcl::MomentumSchedule ema(0.99, 1.0);
  CHECK(ema.start() == 0.99);
  CHECK(ema.end() == 1.0);
  // T = 11 steps: step 0, the middle (step 5), a quarter (the formula), the last step and beyond.
  CHECK(ema.at(0, 11) == Approx(0.99).epsilon(1e-15));
  CHECK(ema.at(5, 11) == Approx(0.995).epsilon(1e-15));
  CHECK(ema.at(10, 11) == 1.0);
  CHECK(ema.at(25, 11) == 1.0);
  for (int64_t step = 0; step < 11; ++step) {
    CHECK(ema.at(step, 11) == Approx(reference_momentum(step, 11, 0.99, 1.0)).epsilon(1e-15));
  }
  // A decreasing schedule works the same way.
  CHECK(
      medcl::MomentumSchedule(0.9, 0.5).at(2, 9) ==
      Approx(0.5 + 0.4 * (std::cos(std::acos(-1.0) / 4) + 1) / 2));
  // A run of one step (or of none) is at its end value.
  CHECK(ema.at(0, 1) == 1.0);
  CHECK(ema.at(0, 0) == 1.0);
  // The default is BYOL's and DINO's 0.996 -> 1.
  CHECK(medcl::MomentumSchedule().start() == 0.996);
  CHECK(medcl::MomentumSchedule().end() == 1.0);
}

TEST_CASE("MomentumSchedule advances, updates a teacher and describes itself", "[nn][momentum]") {
  medcl::MomentumSchedule ema(0.5, 1.0);
  CHECK(ema.current() == 0.0);
  CHECK(ema.advance(3, 7) == ema.at(3, 7));
  CHECK(ema.current() == Approx(0.75));

  torch::manual_seed(4);
  torch::nn::Linear online(3, 2), target(3, 2);
  const auto w_online = online->weight.detach().clone();
  const auto w_target = target->weight.detach().clone();
  ema.update(*online, *target);
  CHECK(medcl_test::rel_err(target->weight, 0.75 * w_target + 0.25 * w_online) < 1e-6);
  CHECK(torch::equal(online->weight, w_online));

  auto d = ema.describe();
  REQUIRE(d.is_object());
  CHECK(d.at("kind").as_string() == "cosine");
  CHECK(d.at("start").is_number());
  CHECK(d.at("start").as_double() == 0.5);
  CHECK(d.at("end").is_number());
  CHECK(d.at("end").as_double() == 1.0);
  CHECK(d.items().size() == 3);
  CHECK(medcl::Json::parse(d.dump()) == d);
}

TEST_CASE("MomentumSchedule rejects momenta outside [0, 1]", "[nn][momentum]") {
  REQUIRE_THROWS_WITH(
      medcl::MomentumSchedule(1.5, 1.0),
      Contains("MomentumSchedule: start and end must be in [0, 1], got 1.5 and 1"));
  REQUIRE_THROWS_WITH(
      medcl::MomentumSchedule(0.9, -0.1),
      Contains("MomentumSchedule: start and end must be in [0, 1], got 0.9 and -0.1"));
  REQUIRE_THROWS(medcl::MomentumSchedule(std::nan(""), 1.0));
}
