#include <medcl/core/files.h>

#include "catch.h"
#include "support.h"

#include <c10/util/Exception.h>

#include <cstdlib>
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

TEST_CASE("sha256: the FIPS 180-4 examples, and files as sha256sum reads them", "[core]") {
  CHECK(
      medcl::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(
      medcl::sha256_hex("abc") ==
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(
      medcl::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(
      medcl::sha256_hex(std::string(1000000, 'a')) ==
      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // A file of several read blocks with a ragged end: the same digest as the bytes in memory.
  medcl_test::TempDir dir;
  std::string bytes;
  for (int i = 0; i < 200003; ++i) {
    bytes += static_cast<char>((i * 131 + i / 7) & 0xff);
  }
  const std::string path = (dir.path / "blob.bin").string();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  std::uintmax_t size = 0;
  CHECK(medcl::sha256_file(path, &size) == medcl::sha256_hex(bytes));
  CHECK(size == bytes.size());
  if (std::system("command -v sha256sum >/dev/null 2>&1") == 0) {
    const std::string out = (dir.path / "sum.txt").string();
    REQUIRE(std::system(("sha256sum '" + path + "' > '" + out + "'").c_str()) == 0);
    std::ifstream in(out);
    std::string digest;
    in >> digest;
    CHECK(digest == medcl::sha256_hex(bytes));
  }
  CHECK_THROWS_WITH(
      medcl::sha256_file((dir.path / "absent").string()),
      medcl_test::Contains("sha256_file: cannot open"));
  CHECK_THROWS_WITH(
      medcl::sha256_file(dir.path.string()), medcl_test::Contains("sha256_file: reading"));
}
