// The README's C++ snippets, extracted from README.md at build time and run as written, so that
// what a new user copies cannot drift from the library (tests/readme/assumed.h holds the data
// they assume).
#include "readme/assumed.h"

#include "catch.h"
#include "support.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

const std::vector<void (*)()>& medcl_readme_snippets();

namespace {

namespace fs = std::filesystem;

// Runs the snippets in a fresh directory: they write "run/..." relative to where they run.
struct InTempDir {
  medcl_test::TempDir dir;
  fs::path before = fs::current_path();
  InTempDir() {
    fs::current_path(dir.path);
  }
  ~InTempDir() {
    std::error_code ec;
    fs::current_path(before, ec);
  }
};

} // namespace

TEST_CASE("README: every C++ snippet is run by a test here", "[readme]") {
  // A new snippet in README.md must get its own test case below.
  REQUIRE(medcl_readme_snippets().size() == 2);
}

TEST_CASE(
    "README: pretraining, the trainer and the clinical evaluation run as written",
    "[readme]") {
  InTempDir here;
  medcl_readme_snippets()[0]();
  CHECK(fs::exists("run/last.ckpt"));
  std::ifstream in("run/report/report.json");
  REQUIRE(in.is_open());
  std::stringstream text;
  text << in.rdbuf();
  const auto problems = medcl::eval::validate_report(medcl::Json::parse(text.str()));
  INFO(problems.size() << " schema problem(s); first: " << (problems.empty() ? "" : problems[0]));
  CHECK(problems.empty());
}

TEST_CASE(
    "README: the losses on their own run as written, MoCo's queue from its first call",
    "[readme]") {
  InTempDir here;
  medcl_readme_snippets()[1]();
}
