#include <medcl/data/csv.h>

#include <torch/torch.h>
#include "catch.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

using medcl::data::CsvOptions;
using medcl::data::parse_csv;
using medcl::data::read_csv_file;
using medcl_test::Contains;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("medcl_test_io_" + name)).string();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

} // namespace

TEST_CASE("csv: plain table with header, LF and CRLF", "[io][csv]") {
  for (const std::string eol : {"\n", "\r\n"}) {
    const auto t = parse_csv("id,age,name" + eol + "1,63,ann" + eol + "2,71,bob" + eol);
    REQUIRE(t.columns() == std::vector<std::string>{"id", "age", "name"});
    REQUIRE(t.rows() == 2);
    REQUIRE(t.cell(1, "name") == "bob");
    REQUIRE(t.numeric("age") == std::vector<double>{63, 71});
    REQUIRE(t.text("name") == std::vector<std::string>{"ann", "bob"});
    REQUIRE(t.source() == "<memory>");
    REQUIRE(t.line(1) == 3);
  }
  // No final line break; empty lines skipped.
  const auto t = parse_csv("a,b\n\n1,2\r\n\r\n3,4");
  REQUIRE(t.rows() == 2);
  REQUIRE(t.numeric("b") == std::vector<double>{2, 4});
  REQUIRE(t.line(1) == 5);
}

TEST_CASE("csv: RFC 4180 quoting and a BOM", "[io][csv]") {
  const std::string text =
      "\xEF\xBB\xBF"
      "id,note,x\r\n"
      "1,\"a,b\",2.5\r\n"
      "2,\"say \"\"hi\"\"\",-1e3\r\n"
      "3,\"two\r\nlines\",+4\r\n"
      "4,\"\",.5\r\n";
  const auto t = parse_csv(text);
  REQUIRE(t.columns().front() == "id"); // BOM removed
  REQUIRE(t.rows() == 4);
  REQUIRE(t.cell(0, "note") == "a,b");
  REQUIRE(t.cell(1, "note") == "say \"hi\"");
  REQUIRE(t.cell(2, "note") == "two\r\nlines");
  REQUIRE(t.is_missing(3, "note"));
  REQUIRE(t.numeric("x") == std::vector<double>{2.5, -1000, 4, 0.5});
  REQUIRE(t.line(3) == 6); // the quoted line break counts
  // A quote inside an unquoted field is kept as text.
  REQUIRE(parse_csv("a\n5\"\n").cell(0, "a") == "5\"");
}

TEST_CASE("csv: missing values, TSV and no header", "[io][csv]") {
  const auto t = parse_csv("a\tb\n1\tNA\n \t2\nnan\t.\n", CsvOptions().delimiter('\t'));
  const auto a = t.numeric("a");
  REQUIRE(a[0] == 1);
  REQUIRE(std::isnan(a[1]));
  REQUIRE(std::isnan(a[2]));
  REQUIRE(t.is_missing(0, "b"));
  REQUIRE_FALSE(t.is_missing(1, "b"));
  const auto m = medcl::data::missing_mask(t, {"a", "b"});
  REQUIRE(m.sizes() == torch::IntArrayRef{3, 2});
  REQUIRE(m.dtype() == torch::kBool);
  REQUIRE(m.sum().item<int64_t>() == 4);
  const auto x = medcl::data::to_tensor(t, {"b", "a"});
  REQUIRE(x.dtype() == torch::kDouble);
  REQUIRE(x[1][0].item<double>() == 2);
  REQUIRE(x[0][1].item<double>() == 1);
  REQUIRE(std::isnan(x[0][0].item<double>()));

  // Custom missing markers.
  const auto c = parse_csv("v\n-99\n3\n", CsvOptions().missing({"-99"}));
  REQUIRE(std::isnan(c.numeric("v")[0]));

  const auto h = parse_csv("1,2\n3,4\n", CsvOptions().header(false));
  REQUIRE(h.columns() == std::vector<std::string>{"0", "1"});
  REQUIRE(h.rows() == 2);
  REQUIRE(medcl::data::to_tensor(h).sum().item<double>() == 10);

  // A .tsv file is read with tabs while the delimiter is left at ','.
  const auto path = temp_path("table.tsv");
  write_file(path, "p\tq\n1\t2\n");
  const auto f = read_csv_file(path);
  REQUIRE(f.columns().size() == 2);
  REQUIRE(f.source() == path);
  std::remove(path.c_str());
}

TEST_CASE("csv: errors name the source, the line and the problem", "[io][csv]") {
  REQUIRE_THROWS_WITH(
      parse_csv("a,b\n1,\"open\n2,3\n", {}, "t.csv"),
      Contains("t.csv:2: unterminated quoted field"));
  REQUIRE_THROWS_WITH(
      parse_csv("a,b\n1,2\n1,2,3\n", {}, "t.csv"),
      Contains("t.csv:3: expected 2 fields (as in the header), got 3"));
  REQUIRE_THROWS_WITH(parse_csv("a,b,a\n"), Contains("<memory>:1: duplicate header name 'a'"));
  REQUIRE_THROWS_WITH(
      parse_csv("a,,c\n1,2,3\n"), Contains("<memory>:1: header name 2 of 3 is empty"));
  REQUIRE_THROWS_WITH(parse_csv(""), Contains("no header line"));
  REQUIRE_THROWS_WITH(
      parse_csv("a,b\n\"x\"y,1\n"),
      Contains("<memory>:2: unexpected character 'y' after the closing quote"));
  const auto t = parse_csv("id,x\n1,2\n\n2,oops\n", {}, "labs.csv");
  REQUIRE_THROWS_WITH(t.numeric("x"), Contains("labs.csv:4: column 'x': 'oops' is not a number"));
  REQUIRE_THROWS_WITH(
      t.cell(0, "y"), Contains("labs.csv: no column 'y'; the columns are: 'id', 'x'"));
  REQUIRE_THROWS_WITH(t.cell(5, "x"), Contains("row 5 out of range"));
  REQUIRE_THROWS_AS(t.numeric("x"), c10::Error);

  const auto missing = temp_path("does_not_exist.csv");
  REQUIRE_THROWS_WITH(
      read_csv_file(missing),
      Contains("cannot open '" + missing + "'") && Contains("No such file or directory"));
}

TEST_CASE("csv: numbers are parsed whatever the text around them", "[io][csv]") {
  const auto t = parse_csv("x\n 1.5 \ninf\n-Inf\n1e999\n0x10\n1 2\n");
  const auto col = t.text("x");
  REQUIRE(t.rows() == 6);
  REQUIRE_THROWS_WITH(t.numeric("x"), Contains("<memory>:6: column 'x': '0x10' is not a number"));
  const auto ok = parse_csv("x\n 1.5 \ninf\n-Inf\n1e999\n").numeric("x");
  REQUIRE(ok[0] == 1.5);
  REQUIRE(std::isinf(ok[1]));
  REQUIRE(ok[2] < 0);
  REQUIRE(std::isinf(ok[3]));
}

TEST_CASE("csv: select_rows reorders rows and keeps their lines and missing values", "[io][csv]") {
  auto t = medcl::data::parse_csv("a,b\n1,x\n\n2,NA\n3,z\n", {}, "t.csv");
  auto s = t.select_rows({2, 0, 2});
  CHECK(s.rows() == 3);
  CHECK(s.columns() == t.columns());
  CHECK(s.numeric("a") == std::vector<double>{3, 1, 3});
  CHECK(s.line(0) == 5);
  CHECK(s.line(1) == 2);
  CHECK(s.source() == "t.csv");
  CHECK(t.select_rows({1}).is_missing(0, "b"));
  CHECK_THROWS_WITH(
      t.select_rows({3}), medcl_test::Contains("row 3 out of range (the table has 3 rows)"));
  CHECK(t.select_rows({}).rows() == 0);
}
