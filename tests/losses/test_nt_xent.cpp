#include "support.h"

#include <medcl/losses/nt_xent.h>

#include <catch2/catch.hpp>

#include <cmath>

using medcl_test::rel_err;

namespace {

// Independent reference: plain loops in double over the 2B x 2B cosine matrix.
double nt_xent_reference(const at::Tensor& z0, const at::Tensor& z1, double tau) {
  auto z = at::cat({z0, z1}, 0).to(at::kDouble);
  const int64_t n = z.size(0);
  const int64_t b = n / 2;
  auto s = medcl_test::cosine_matrix(z, z);
  auto acc = s.accessor<double, 2>();
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = (i + b) % n;
    double den = 0;
    for (int64_t k = 0; k < n; ++k) {
      if (k != i) {
        den += std::exp(acc[i][k] / tau);
      }
    }
    total += -(acc[i][p] / tau - std::log(den));
  }
  return total / static_cast<double>(n);
}

} // namespace

TEST_CASE("nt_xent_loss equals the loop reference", "[losses][nt_xent]") {
  torch::manual_seed(1);
  for (double tau : {0.5, 0.1, 0.07}) {
    auto z0 = torch::randn({7, 5}, torch::kDouble);
    auto z1 = torch::randn({7, 5}, torch::kDouble);
    auto opts = medcl::NTXentLossOptions().temperature(tau);
    const double got = medcl::functional::nt_xent_loss(z0, z1, opts).item<double>();
    REQUIRE(got == Approx(nt_xent_reference(z0, z1, tau)).epsilon(1e-12));
  }
}
