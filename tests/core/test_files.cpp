#include <medcl/core/files.h>

#include "catch.h"
#include "support.h"

#include <c10/util/Exception.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;
using medcl_test::Contains;

TEST_CASE("remove_tree and list_tree walk a tree without following links", "[core][files]") {
  medcl_test::TempDir outside; // a link's target: must survive
  std::ofstream(outside.file("keep.txt")) << "keep";
  medcl_test::TempDir tmp;
  const std::string root = tmp.file("tree");
  fs::create_directories(root + "/a/b/c");
  fs::create_directories(root + "/empty");
  std::ofstream(root + "/top.txt") << "1";
  std::ofstream(root + "/a/one.txt") << "2";
  std::ofstream(root + "/a/b/c/deep.txt") << "3";
  fs::create_directory_symlink(outside.path, root + "/a/link");

  const std::vector<std::string> expected{
      root + "/a",
      root + "/a/b",
      root + "/a/b/c",
      root + "/a/b/c/deep.txt",
      root + "/a/link", // listed as itself, not entered
      root + "/a/one.txt",
      root + "/empty",
      root + "/top.txt"};
  REQUIRE(medcl::list_tree(root) == expected);
  REQUIRE(
      medcl::list_tree(root + "/") ==
      std::vector<std::string>{
          root + "/a",
          root + "/a/b",
          root + "/a/b/c",
          root + "/a/b/c/deep.txt",
          root + "/a/link",
          root + "/a/one.txt",
          root + "/empty",
          root + "/top.txt"});

  REQUIRE(medcl::remove_tree(root) == expected.size() + 1);
  REQUIRE_FALSE(fs::exists(root));
  REQUIRE(fs::exists(outside.file("keep.txt")));

  // A missing path removes nothing and is no error; a single file is removed.
  std::error_code ec;
  REQUIRE(medcl::remove_tree(root, ec) == 0);
  REQUIRE_FALSE(ec);
  std::ofstream(tmp.file("single")) << "x";
  REQUIRE(medcl::remove_tree(tmp.file("single")) == 1);
  REQUIRE_FALSE(fs::exists(tmp.file("single")));

  REQUIRE_THROWS_WITH(
      medcl::list_tree(tmp.file("missing")),
      Contains("list_tree: cannot read the directory " + tmp.file("missing")));
}

TEST_CASE("remove_tree reports what it could not remove", "[core][files]") {
  medcl_test::TempDir base;
  std::ofstream(base.file("plain")) << "x";
  // A path below a plain file: lstat fails with ENOTDIR, whoever runs the test.
  std::error_code not_dir;
  REQUIRE(medcl::remove_tree(base.file("plain") + "/below", not_dir) == 0);
  REQUIRE(not_dir == std::errc::not_a_directory);
  REQUIRE_THROWS_WITH(
      medcl::remove_tree(base.file("plain") + "/below"),
      Contains("remove_tree: cannot remove " + base.file("plain") + "/below"));
  if (::geteuid() == 0) {
    WARN("skipped: running as root, permissions do not stop removal");
    return;
  }
  medcl_test::TempDir tmp;
  const std::string locked = tmp.file("locked");
  fs::create_directories(locked + "/inner");
  std::ofstream(locked + "/inner/f.txt") << "x";
  ::chmod((locked + "/inner").c_str(), 0500); // no write: f.txt cannot be unlinked
  std::error_code ec;
  medcl::remove_tree(locked, ec);
  CHECK(ec);
  CHECK_THROWS_WITH(medcl::remove_tree(locked), Contains("remove_tree: cannot remove " + locked));
  ::chmod((locked + "/inner").c_str(), 0700);
  REQUIRE(medcl::remove_tree(locked) == 3);
}
