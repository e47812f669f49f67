#include <medcl/eval/knn.h>
#include <medcl/eval/metrics.h>

#include <torch/torch.h>
#include "catch.h"

using medcl_test::Contains;

TEST_CASE("kNN recovers a planted separable label and votes as documented", "[eval][knn]") {
  torch::manual_seed(121);
  // Three classes on three directions, with noise: a kNN vote recovers them.
  auto centres = torch::randn({3, 16}) * 3;
  auto ytr = torch::randint(0, 3, {300});
  auto yte = torch::randint(0, 3, {100});
  auto xtr = centres.index_select(0, ytr) + torch::randn({300, 16});
  auto xte = centres.index_select(0, yte) + torch::randn({100, 16});
  for (bool weighted : {true, false}) {
    auto p = medcl::eval::knn_predict(
        xtr, ytr, xte, 3, medcl::eval::KnnOptions().k(10).weighted(weighted).chunk(32));
    REQUIRE(p.sizes() == torch::IntArrayRef({100, 3}));
    REQUIRE(torch::allclose(p.sum(1), torch::ones({100})));
    REQUIRE(p.argmax(1).eq(yte).to(torch::kFloat).mean().item<double>() > 0.95);
  }
  // Random labels: chance level.
  auto shuffled = ytr.index_select(0, torch::randperm(300));
  auto pr = medcl::eval::knn_predict(torch::randn({300, 16}), shuffled, xte, 3);
  REQUIRE(pr.argmax(1).eq(yte).to(torch::kFloat).mean().item<double>() < 0.6);
  // Hand case, k = 2 unweighted: the two nearest of [1, 0] are [1, 0.1] (class 1) and [1, -0.1]
  // (class 0).
  auto tr = torch::tensor({{1.0, 0.1}, {1.0, -0.1}, {-1.0, 0.0}});
  auto lab = torch::tensor({1, 0, 1}, torch::kLong);
  auto p = medcl::eval::knn_predict(
      tr, lab, torch::tensor({{1.0, 0.0}}), 2, medcl::eval::KnnOptions().k(2).weighted(false));
  REQUIRE(p[0][0].item<double>() == Approx(0.5));
  REQUIRE(p[0][1].item<double>() == Approx(0.5));
  REQUIRE_THROWS_WITH(
      medcl::eval::knn_predict(tr, lab, torch::ones({1, 3}), 2),
      Contains("embedding sizes differ"));
  REQUIRE_THROWS_WITH(
      medcl::eval::knn_predict(tr, lab, torch::ones({1, 2}), 1),
      Contains("labels must be in [0, 1)"));
  REQUIRE_THROWS_WITH(
      medcl::eval::knn_predict(tr, lab.to(torch::kInt), torch::ones({1, 2}), 2),
      Contains("int64 train_labels"));
}
