#include "losses/reference.h"
#include "support.h"

#include <medcl/losses/dino.h>

#include "catch.h"

#include <cmath>
#include <string>
#include <vector>

using medcl_test::Contains;
using medcl_test::cross_entropy_rows;
using medcl_test::rel_err;
namespace F = medcl::functional;

TEST_CASE("dino_loss averages cross-entropy over pairs of different views", "[losses][dino]") {
  torch::manual_seed(23);
  const int64_t b = 3, k = 5;
  std::vector<at::Tensor> teacher{
      torch::randn({b, k}, torch::kDouble), torch::randn({b, k}, torch::kDouble)};
  std::vector<at::Tensor> student;
  for (int v = 0; v < 4; ++v)
    student.push_back(torch::randn({b, k}, torch::kDouble).requires_grad_(true));
  auto center = torch::randn({k}, torch::kDouble) * 0.1;
  const double tt = 0.04, ts = 0.1;
  double total = 0;
  int terms = 0;
  for (int t = 0; t < 2; ++t) {
    auto q = ((teacher[t] - center) / tt).softmax(1);
    for (int s = 0; s < 4; ++s) {
      if (s == t)
        continue;
      total += cross_entropy_rows(q, student[s].detach(), ts);
      ++terms;
    }
  }
  auto loss = F::dino_loss(
      student,
      teacher,
      center,
      medcl::DINOLossOptions().teacher_temperature(tt).student_temperature(ts));
  REQUIRE(terms == 6);
  REQUIRE(loss.item<double>() == Approx(total / terms).epsilon(1e-10));
  loss.backward();
  REQUIRE(student[0].grad().defined());
  auto fd = medcl_test::finite_difference(
      [&](const at::Tensor& x) {
        auto s2 = student;
        s2[1] = x;
        return F::dino_loss(s2, teacher, center).item<double>();
      },
      student[1].detach());
  REQUIRE(rel_err(student[1].grad(), fd) < 1e-6);
  REQUIRE_THROWS_WITH(
      F::dino_loss({student[0]}, {teacher[0]}, center), Contains("pair of different views"));
  REQUIRE_THROWS_WITH(
      F::dino_loss(student, teacher, torch::zeros({k + 1}, torch::kDouble)),
      Contains("center of shape"));
  REQUIRE_THROWS_WITH(
      F::dino_loss(student, {torch::randn({b, k + 1}, torch::kDouble)}, center),
      Contains("every view must have shape"));
}

TEST_CASE("DINOLoss updates its centre and warms up the teacher temperature", "[losses][dino]") {
  medcl::DINOLoss criterion(medcl::DINOLossOptions(4)
                                .warmup_teacher_temperature(0.02)
                                .teacher_temperature(0.06)
                                .warmup_teacher_temperature_epochs(3));
  REQUIRE(criterion->teacher_temperature(0) == Approx(0.02));
  REQUIRE(criterion->teacher_temperature(1) == Approx(0.04));
  REQUIRE(criterion->teacher_temperature(2) == Approx(0.06));
  REQUIRE(criterion->teacher_temperature(10) == Approx(0.06));
  auto t0 = torch::randn({3, 4});
  auto t1 = torch::randn({3, 4});
  auto s = std::vector<at::Tensor>{torch::randn({3, 4}), torch::randn({3, 4})};
  auto expected_center = 0.1 * at::cat({t0, t1}, 0).mean(0, true);
  auto loss = criterion->forward(s, {t0, t1}, 0);
  REQUIRE(std::isfinite(loss.item<double>()));
  REQUIRE(rel_err(criterion->center, expected_center) < 1e-6);
}
