#pragma once

// Catch2 for medcl's tests, whichever major version the system has: Debian 12 ships v2
// (one header, catch2/catch.hpp), Debian 13 and Ubuntu 24.04 ship v3 (catch2/catch_all.hpp and a
// compiled library). tests/CMakeLists.txt defines MEDCL_CATCH2_MAJOR from the package it found.
// The tests include this header instead of Catch2's and use:
//   - Approx (v3 moved it into the Catch namespace);
//   - Contains(text) for messages and strings (v3 renamed the string matcher ContainsSubstring);
//   - MEDCL_SKIP(message) when a test cannot run here (no data, no library): ctest shows it as
//     skipped, never as passed. v3: SKIP. v2 has no skip: the message carries the marker that the
//     tests' SKIP_REGULAR_EXPRESSION recognises, and the test case returns.

#if !defined(MEDCL_CATCH2_MAJOR)
#error "MEDCL_CATCH2_MAJOR is not defined: build medcl's tests through tests/CMakeLists.txt"
#endif

#include <string>

#if MEDCL_CATCH2_MAJOR >= 3
#include <catch2/catch_all.hpp>

using Catch::Approx;

namespace medcl_test {
/// Matches a string (an exception's message too) that contains `text`.
inline Catch::Matchers::StringContainsMatcher Contains(const std::string& text) {
  return Catch::Matchers::ContainsSubstring(text);
}
} // namespace medcl_test

#define MEDCL_SKIP(...) SKIP(__VA_ARGS__)

#else
#include <catch2/catch.hpp>

namespace medcl_test {
/// Matches a string (an exception's message too) that contains `text`.
inline Catch::Matchers::StdString::ContainsMatcher Contains(const std::string& text) {
  return Catch::Matchers::Contains(text);
}
} // namespace medcl_test

// The marker is matched by the tests' SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt).
#define MEDCL_SKIP(...)                          \
  do {                                           \
    WARN("medcl-test-skipped: " << __VA_ARGS__); \
    return;                                      \
  } while (false)

#endif
