#include "support.h"

#include <medcl/memory/memory_queue.h>
#include <medcl/pairing/sample_keys.h>

#include "catch.h"

#include <cmath>
#include <string>
#include <vector>

using medcl_test::Contains;
using medcl_test::rel_err;

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
