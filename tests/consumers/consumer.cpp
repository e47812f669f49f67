// A downstream program: computes a real contrastive loss through the public API and prints
// the version it linked, which ctest matches.
#include <medcl/medcl.h>

#include <cmath>
#include <iostream>

int main() {
  // Deterministic inputs; only medcl's own headers are included (they bring what they need).
  auto z0 = at::sin(at::arange(8 * 16, at::kFloat)).reshape({8, 16});
  auto z1 = z0 + 0.05 * at::cos(at::arange(8 * 16, at::kFloat)).reshape({8, 16});
  auto loss = medcl::functional::nt_xent_loss(z0, z1, medcl::NTXentLossOptions().temperature(0.5));
  if (!std::isfinite(loss.item<double>())) {
    std::cerr << "consumer: loss is not finite\n";
    return 1;
  }
  std::cout << "loss " << loss.item<double>() << "\n";
  std::cout << "consumer ok: medcl " << medcl::version() << "\n";
  return 0;
}
