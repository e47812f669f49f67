#include "support.h"

#include <medcl/losses/dino.h>
#include <medcl/losses/negative_free.h>
#include <medcl/losses/swav.h>
#include <medcl/memory/memory_queue.h>
#include <medcl/nn/momentum.h>

#include "catch.h"

#include <cmath>
#include <vector>

using medcl_test::Contains;
using medcl_test::rel_err;
namespace F = medcl::functional;

namespace {

double cos_loop(const at::Tensor& a, const at::Tensor& b, int64_t i) {
  double dot = 0, na = 0, nb = 0;
  for (int64_t k = 0; k < a.size(1); ++k) {
    const double x = a[i][k].item<double>(), y = b[i][k].item<double>();
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return dot / std::sqrt(na * nb);
}

// lightly's sinkhorn on exp(scores / eps), transcribed as plain loops in double.
at::Tensor sinkhorn_loops(const at::Tensor& scores, int iters, double eps) {
  const int64_t b = scores.size(0), k = scores.size(1);
  std::vector<std::vector<double>> q(k, std::vector<double>(b));
  double total = 0;
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t i = 0; i < b; ++i) {
      q[j][i] = std::exp(scores[i][j].item<double>() / eps);
      total += q[j][i];
    }
  }
  for (auto& row : q) {
    for (auto& v : row) {
      v /= total;
    }
  }
  for (int it = 0; it < iters; ++it) {
    for (int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (int64_t i = 0; i < b; ++i)
        s += q[j][i];
      for (int64_t i = 0; i < b; ++i)
        q[j][i] = q[j][i] / s / k;
    }
    for (int64_t i = 0; i < b; ++i) {
      double s = 0;
      for (int64_t j = 0; j < k; ++j)
        s += q[j][i];
      for (int64_t j = 0; j < k; ++j)
        q[j][i] = q[j][i] / s / b;
    }
  }
  auto out = torch::zeros({b, k}, torch::kDouble);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      out[i][j] = q[j][i] * b;
    }
  }
  return out;
}

double cross_entropy_rows(const at::Tensor& q, const at::Tensor& z, double temp) {
  // -mean_b sum_k q log softmax(z / temp)
  double total = 0;
  for (int64_t i = 0; i < z.size(0); ++i) {
    double mx = -1e300;
    for (int64_t k = 0; k < z.size(1); ++k)
      mx = std::max(mx, z[i][k].item<double>() / temp);
    double s = 0;
    for (int64_t k = 0; k < z.size(1); ++k)
      s += std::exp(z[i][k].item<double>() / temp - mx);
    for (int64_t k = 0; k < z.size(1); ++k) {
      total -= q[i][k].item<double>() * (z[i][k].item<double>() / temp - mx - std::log(s));
    }
  }
  return total / z.size(0);
}

} // namespace

TEST_CASE("byol_loss is 2 - 2 cos with a stop-gradient on the target", "[losses][byol]") {
  torch::manual_seed(21);
  auto p = torch::randn({5, 4}, torch::kDouble).requires_grad_(true);
  auto z = torch::randn({5, 4}, torch::kDouble).requires_grad_(true);
  double ref = 0;
  for (int64_t i = 0; i < 5; ++i)
    ref += 2 - 2 * cos_loop(p.detach(), z.detach(), i);
  auto loss = F::byol_loss(p, z);
  REQUIRE(loss.item<double>() == Approx(ref / 5).epsilon(1e-12));
  loss.backward();
  REQUIRE(p.grad().defined());
  REQUIRE_FALSE(z.grad().defined());
  auto fd = medcl_test::finite_difference(
      [&](const at::Tensor& x) { return F::byol_loss(x, z).item<double>(); }, p);
  REQUIRE(rel_err(p.grad(), fd) < 1e-6);
  REQUIRE(F::byol_loss(z, z).item<double>() == Approx(0.0).margin(1e-12));
  REQUIRE_THROWS_WITH(
      F::byol_loss(p, torch::randn({4, 4}, torch::kDouble)),
      Contains("byol_loss") && Contains("same shape"));
}

TEST_CASE("simsiam_loss is the symmetrised negative cosine", "[losses][simsiam]") {
  torch::manual_seed(22);
  auto p0 = torch::randn({6, 3}, torch::kDouble).requires_grad_(true);
  auto p1 = torch::randn({6, 3}, torch::kDouble);
  auto z0 = torch::randn({6, 3}, torch::kDouble).requires_grad_(true);
  auto z1 = torch::randn({6, 3}, torch::kDouble);
  double d01 = 0, d10 = 0;
  for (int64_t i = 0; i < 6; ++i) {
    d01 -= cos_loop(p0.detach(), z1, i) / 6;
    d10 -= cos_loop(p1, z0.detach(), i) / 6;
  }
  auto loss = F::simsiam_loss(p0, p1, z0, z1);
  REQUIRE(loss.item<double>() == Approx(0.5 * d01 + 0.5 * d10).epsilon(1e-12));
  loss.backward();
  REQUIRE_FALSE(z0.grad().defined());
  REQUIRE(F::simsiam_loss(p0, p1, p1, p0).item<double>() == Approx(-1.0).epsilon(1e-12));
  // Symmetric under swapping the two views.
  REQUIRE(
      F::simsiam_loss(p1, p0, z1, z0).item<double>() == Approx(loss.item<double>()).epsilon(1e-12));
}

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
  medcl::DINOLoss criterion(medcl::DINOLossModuleOptions(4)
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

TEST_CASE("sinkhorn_knopp equals lightly's iterations and is stable", "[losses][swav]") {
  torch::manual_seed(24);
  auto scores = torch::randn({6, 4}, torch::kDouble) * 0.5;
  for (int iters : {1, 3, 5}) {
    auto q = F::sinkhorn_knopp(scores, medcl::SinkhornOptions().iterations(iters));
    REQUIRE(rel_err(q, sinkhorn_loops(scores, iters, 0.05)) < 1e-10);
    // Each sample's code sums to one.
    REQUIRE(rel_err(q.sum(1), torch::ones({6}, torch::kDouble)) < 1e-10);
  }
  // Scores of 30 / eps 0.01 would overflow exp: the log domain stays finite and equipartitioned.
  auto big = torch::randn({8, 5}) * 30.0;
  auto q = F::sinkhorn_knopp(big, medcl::SinkhornOptions().epsilon(0.01).iterations(50));
  REQUIRE(torch::isfinite(q).all().item<bool>());
  REQUIRE(rel_err(q.sum(1), torch::ones({8})) < 1e-5);
  // Enough iterations on moderate scores reach the equipartition: each prototype gets B/K.
  auto eq = F::sinkhorn_knopp(
      torch::randn({8, 5}, torch::kDouble), medcl::SinkhornOptions().iterations(200));
  REQUIRE(rel_err(eq.sum(0), torch::full({5}, 8.0 / 5.0, torch::kDouble)) < 1e-4);
  REQUIRE_THROWS_WITH(
      F::sinkhorn_knopp(scores, medcl::SinkhornOptions().iterations(0)),
      Contains("iterations must be >= 1"));
  REQUIRE_THROWS_WITH(
      F::sinkhorn_knopp(scores, medcl::SinkhornOptions().epsilon(0)), Contains("epsilon"));
}

TEST_CASE("swav_loss is the swapped prediction of Sinkhorn codes", "[losses][swav]") {
  torch::manual_seed(25);
  std::vector<at::Tensor> high{
      torch::randn({4, 3}, torch::kDouble), torch::randn({4, 3}, torch::kDouble)};
  std::vector<at::Tensor> low{torch::randn({4, 3}, torch::kDouble)};
  const double temp = 0.1;
  double loss = 0;
  for (int i = 0; i < 2; ++i) {
    auto q = sinkhorn_loops(high[i], 3, 0.05);
    double sub = 0;
    for (int v = 0; v < 2; ++v) {
      if (v != i)
        sub += cross_entropy_rows(q, high[v], temp);
    }
    sub += cross_entropy_rows(q, low[0], temp);
    loss += sub / 2;
  }
  REQUIRE(F::swav_loss(high, low).item<double>() == Approx(loss / 2).epsilon(1e-10));
  // With a queue the codes come from the concatenation, cut back to the batch.
  std::vector<at::Tensor> queue{
      torch::randn({5, 3}, torch::kDouble), torch::randn({5, 3}, torch::kDouble)};
  double lq = 0;
  for (int i = 0; i < 2; ++i) {
    auto q = sinkhorn_loops(at::cat({high[i], queue[i]}, 0), 3, 0.05).slice(0, 0, 4);
    lq += cross_entropy_rows(q, high[1 - i], temp);
  }
  REQUIRE(F::swav_loss(high, {}, {}, queue).item<double>() == Approx(lq / 2).epsilon(1e-10));
  REQUIRE_THROWS_WITH(F::swav_loss({high[0]}), Contains("at least two views"));
  REQUIRE_THROWS_WITH(
      F::swav_loss(high, {torch::randn({4, 5}, torch::kDouble)}), Contains("prototype scores"));
}

TEST_CASE("MemoryQueue is a ring buffer that keeps pairing keys", "[memory]") {
  medcl::MemoryQueue q(5, 2);
  REQUIRE(q.filled() == 0);
  auto k1 = torch::arange(6, torch::kFloat).reshape({3, 2});
  q.enqueue(k1, {{"patient", torch::tensor({1, 2, 3})}});
  REQUIRE(q.filled() == 3);
  REQUIRE(rel_err(q.keys(), k1) == 0);
  auto k2 = torch::arange(6, 12, torch::kFloat).reshape({3, 2});
  q.enqueue(k2, {{"patient", torch::tensor({4, 5, 6})}});
  REQUIRE(q.is_full());
  // Slots 0..4 now hold entries [6 overwrote 1], i.e. patients {6, 2, 3, 4, 5}.
  REQUIRE(q.pairing_key("patient").equal(torch::tensor({6, 2, 3, 4, 5})));
  REQUIRE(q.keys()[0].equal(k2[2]));
  // A batch larger than the queue keeps its last entries.
  q.enqueue(torch::ones({7, 2}), {{"patient", torch::arange(7)}});
  REQUIRE(std::get<0>(q.pairing_key("patient").sort()).equal(torch::arange(2, 7)));
  REQUIRE_THROWS_WITH(
      q.enqueue(torch::ones({2, 3}), {{"patient", torch::arange(2)}}), Contains("[B, 2]"));
  REQUIRE_THROWS_WITH(
      q.enqueue(torch::ones({2, 2}), {{"study", torch::arange(2)}}),
      Contains("unknown pairing key 'study'"));
  REQUIRE_THROWS_WITH(
      q.enqueue(torch::ones({2, 2}), {{"patient", torch::arange(3)}}), Contains("shape [2]"));
  REQUIRE_THROWS_WITH(q.pairing_key("site"), Contains("no key 'site'"));
  REQUIRE_THROWS_WITH(medcl::MemoryQueue(0, 3), Contains("size must be > 0"));
}

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

TEST_CASE("simsiam and swav gradients match finite differences", "[losses][grad]") {
  torch::manual_seed(27);
  auto p0 = torch::randn({4, 3}, torch::kDouble);
  auto p1 = torch::randn({4, 3}, torch::kDouble);
  auto z0 = torch::randn({4, 3}, torch::kDouble);
  auto z1 = torch::randn({4, 3}, torch::kDouble);
  auto g = medcl_test::autograd_grad(
      [&](const at::Tensor& x) { return F::simsiam_loss(x, p1, z0, z1); }, p0);
  auto fd = medcl_test::finite_difference(
      [&](const at::Tensor& x) { return F::simsiam_loss(x, p1, z0, z1).item<double>(); }, p0);
  REQUIRE(rel_err(g, fd) < 1e-6);

  std::vector<at::Tensor> high{
      torch::randn({5, 4}, torch::kDouble), torch::randn({5, 4}, torch::kDouble)};
  std::vector<at::Tensor> low{torch::randn({5, 4}, torch::kDouble)};
  // Codes carry no gradient: the derivative of the loss w.r.t. a view is through log_softmax only.
  auto gl = medcl_test::autograd_grad(
      [&](const at::Tensor& x) { return F::swav_loss(high, {x}); }, low[0]);
  auto fdl = medcl_test::finite_difference(
      [&](const at::Tensor& x) { return F::swav_loss(high, {x}).item<double>(); }, low[0]);
  REQUIRE(rel_err(gl, fdl) < 1e-6);
}

TEST_CASE("negative-free and clustering losses are invariant to batch permutation", "[losses]") {
  torch::manual_seed(28);
  auto perm = torch::randperm(6);
  auto a = torch::randn({6, 5}, torch::kDouble), b = torch::randn({6, 5}, torch::kDouble);
  auto c = torch::randn({6, 5}, torch::kDouble), d = torch::randn({6, 5}, torch::kDouble);
  auto P = [&](const at::Tensor& t) { return t.index_select(0, perm); };
  REQUIRE(
      F::byol_loss(P(a), P(b)).item<double>() ==
      Approx(F::byol_loss(a, b).item<double>()).epsilon(1e-12));
  REQUIRE(
      F::simsiam_loss(P(a), P(b), P(c), P(d)).item<double>() ==
      Approx(F::simsiam_loss(a, b, c, d).item<double>()).epsilon(1e-12));
  auto center = torch::randn({5}, torch::kDouble);
  REQUIRE(
      F::dino_loss({P(a), P(b), P(c)}, {P(c), P(d)}, center).item<double>() ==
      Approx(F::dino_loss({a, b, c}, {c, d}, center).item<double>()).epsilon(1e-12));
  REQUIRE(
      F::swav_loss({P(a), P(b)}, {P(c)}).item<double>() ==
      Approx(F::swav_loss({a, b}, {c}).item<double>()).epsilon(1e-10));
}

TEST_CASE("negative-free and clustering losses accept bf16 and fp16", "[losses][dtype]") {
  torch::manual_seed(29);
  auto a = torch::randn({8, 6}), b = torch::randn({8, 6}), c = torch::randn({8, 6}),
       d = torch::randn({8, 6});
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto L = [&](const at::Tensor& t) { return t.to(dtype); };
    auto R = [&](const at::Tensor& t) {
      return t.to(dtype).to(torch::kFloat);
    }; // same rounded inputs
    INFO(dtype);
    // Computed in float32 from the rounded inputs: agreement to float32 rounding.
    REQUIRE(rel_err(F::byol_loss(L(a), L(b)), F::byol_loss(R(a), R(b))) < 1e-5);
    REQUIRE(
        rel_err(F::simsiam_loss(L(a), L(b), L(c), L(d)), F::simsiam_loss(R(a), R(b), R(c), R(d))) <
        1e-5);
    auto center = torch::zeros({6});
    REQUIRE(
        rel_err(
            F::dino_loss({L(a), L(b)}, {L(c), L(d)}, center),
            F::dino_loss({R(a), R(b)}, {R(c), R(d)}, center)) < 1e-5);
    REQUIRE(rel_err(F::swav_loss({L(a), L(b)}, {L(c)}), F::swav_loss({R(a), R(b)}, {R(c)})) < 1e-5);
    REQUIRE(F::swav_loss({L(a), L(b)}).scalar_type() == torch::kFloat);
  }
}

TEST_CASE("negative-free and clustering losses refuse non-finite inputs", "[losses][errors]") {
  auto a = torch::randn({4, 3});
  auto bad = a.clone();
  bad[1][2] = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_WITH(F::byol_loss(bad, a), Contains("byol_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(
      F::simsiam_loss(a, a, bad, a), Contains("simsiam_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(
      F::dino_loss({a, bad}, {a}, torch::zeros({3})),
      Contains("dino_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(F::swav_loss({a, a}, {bad}), Contains("swav_loss") && Contains("NaN or Inf"));
  REQUIRE_THROWS_WITH(
      F::swav_loss({a, a}, {}, medcl::SwAVLossOptions().temperature(-1)), Contains("temperature"));
  REQUIRE_THROWS_WITH(
      F::dino_loss({a, a}, {a}, torch::zeros({3}), medcl::DINOLossOptions().student_temperature(0)),
      Contains("student_temperature"));
  REQUIRE_THROWS_WITH(F::dino_loss({}, {a}, torch::zeros({3})), Contains("empty list"));
}
