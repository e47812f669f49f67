#pragma once

// What the worker side of medcl::dist's tests shares: the rank's process group (a FileStore in
// the test's folder, or torchrun's environment), reading the environment, writing results for
// the launching test, and reading them back (tests/dist/launcher.h starts the workers).

#include "dist/launcher.h"

#include <medcl/dist/process_group.h>

#include <torch/serialize.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

// Fails where CMake found medcl::dist (MEDCL_TEST_EXPECT_DIST), skips the test case where medcl
// was built without it (a macro: Catch2 v2's MEDCL_SKIP returns from the function it is in).
#if defined(MEDCL_TEST_EXPECT_DIST)
#define MEDCL_TEST_REQUIRE_DIST() REQUIRE(medcl::dist::available())
#else
#define MEDCL_TEST_REQUIRE_DIST()                                                                \
  do {                                                                                           \
    if (!medcl::dist::available()) {                                                             \
      MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)"); \
    }                                                                                            \
  } while (false)
#endif

namespace medcl_test {

/// The environment variable `name`, or `fallback` when it is not set.
inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : fallback;
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::vector<at::Tensor> load_tensors(const std::string& path) {
  std::vector<at::Tensor> t;
  torch::load(t, path);
  return t;
}

inline bool all_exited_ok(const std::vector<WorkerExit>& exits) {
  for (const auto& e : exits) {
    if (e.code != 0) {
      return false;
    }
  }
  return true;
}

/// The rows of every rank, summed.
inline int64_t total(const std::vector<int64_t>& rows) {
  int64_t n = 0;
  for (auto r : rows) {
    n += r;
  }
  return n;
}

/// The first global row of `rank`: the rows of the ranks before it.
inline int64_t offset_of(const std::vector<int64_t>& rows, int64_t rank) {
  int64_t n = 0;
  for (int64_t r = 0; r < rank; ++r) {
    n += rows[r];
  }
  return n;
}

/// This worker's group, `timeout` per operation, Gloo on the loopback interface. With
/// MEDCL_DIST_STORE unset or "file": a FileStore in `dir` (RANK and WORLD_SIZE from the
/// environment; every rank first marks itself started and waits for the others, so that no rank
/// times out while another is still starting). Otherwise (torchrun, or the tests' loopback
/// TCPStore): medcl::dist::init_from_env.
inline medcl::dist::ProcessGroup worker_group(
    const std::string& dir,
    std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  // MEDCL_TEST_POLL_US: ProcessGroupOptions::poll, for the launches that test the polled waits.
  const auto opts =
      medcl::dist::ProcessGroupOptions()
          .timeout(timeout)
          .hostname("127.0.0.1")
          .poll(std::chrono::microseconds(std::stoll(env_or("MEDCL_TEST_POLL_US", "0"))));
  if (env_or("MEDCL_DIST_STORE", "file") != "file") {
    return medcl::dist::init_from_env(opts);
  }
  const int64_t rank = std::stoll(env_or("RANK", "0"));
  const int64_t world = std::stoll(env_or("WORLD_SIZE", "1"));
  auto store = medcl::dist::Store::file(dir + "/store", world, std::chrono::seconds(90));
  store.set("started/" + std::to_string(rank), "1");
  for (int64_t r = 0; r < world; ++r) {
    store.get("started/" + std::to_string(r));
  }
  return medcl::dist::new_group(store, rank, world, opts);
}

} // namespace medcl_test
