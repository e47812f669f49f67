#include <medcl/core/json.h>

#include <c10/util/Exception.h>
#include "catch.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using medcl::Json;
using medcl_test::Contains;

TEST_CASE("Json: construction keeps the type and exact integers", "[report][json]") {
  CHECK(Json().is_null());
  CHECK(Json(nullptr).is_null());
  CHECK(Json(true).as_bool());
  CHECK(Json(3).is_integer());
  CHECK(Json(int64_t{-9007199254740993}).as_int64() == -9007199254740993); // 2^53 + 1
  CHECK(
      Json(std::numeric_limits<int64_t>::max()).as_int64() == std::numeric_limits<int64_t>::max());
  CHECK(Json(size_t{7}).as_int64() == 7);
  CHECK(Json(7u).is_integer());
  CHECK(Json(7LL).is_integer());
  CHECK_FALSE(Json(2.0).is_integer());
  CHECK(Json(2.5).as_double() == 2.5);
  CHECK(Json("abc").as_string() == "abc");
  CHECK(Json(std::string("x")).is_string());
  CHECK(Json(2.0).as_int64() == 2); // integral double accepted
  REQUIRE_THROWS_WITH(Json(2.5).as_int64(), Contains("expected an integer number, got 2.5"));
  REQUIRE_THROWS_WITH(
      Json(std::numeric_limits<uint64_t>::max()), Contains("fits int64, got 18446744073709551615"));
  CHECK(Json::array_of(std::vector<double>{1.5, 2}).dump() == "[1.5,2.0]");
}

TEST_CASE("Json: wrong-type access names expected and actual type", "[report][json]") {
  REQUIRE_THROWS_WITH(
      Json(1).as_string(), Contains("Json::as_string: expected string, got number"));
  REQUIRE_THROWS_WITH(Json("a").as_double(), Contains("as_double: expected number, got string"));
  REQUIRE_THROWS_WITH(Json().as_bool(), Contains("expected bool, got null"));
  REQUIRE_THROWS_WITH(Json(true).as_int64(), Contains("expected number, got bool"));
  Json arr = Json::array();
  REQUIRE_THROWS_WITH(arr["k"], Contains("operator[]: expected object, got array"));
  Json obj = Json::object();
  REQUIRE_THROWS_WITH(obj.push_back(1), Contains("push_back: expected array, got object"));
  REQUIRE_THROWS_WITH(Json(1.0).size(), Contains("expected array, object or null, got number"));
  const Json c = Json::array({1, 2});
  REQUIRE_THROWS_WITH(c[2], Contains("index 2 out of range for an array of 2"));
  REQUIRE_THROWS_WITH(c.at("x"), Contains("at: expected object, got array"));
}

TEST_CASE("Json: objects keep insertion order, at() names the missing key", "[report][json]") {
  Json o;
  o["zeta"] = 1;
  o["alpha"] = 2;
  o["mid"] = Json::object();
  o["mid"]["b"] = "x";
  o["zeta"] = 3; // overwrite keeps the position
  CHECK(o.is_object());
  REQUIRE(o.size() == 3);
  CHECK(o.items()[0].first == "zeta");
  CHECK(o.items()[1].first == "alpha");
  CHECK(o.items()[2].first == "mid");
  CHECK(o.at("zeta").as_int64() == 3);
  CHECK(o.dump() == R"({"zeta":3,"alpha":2,"mid":{"b":"x"}})");
  CHECK(o.contains("alpha"));
  CHECK_FALSE(o.contains("beta"));
  CHECK_FALSE(Json(1).contains("beta"));
  REQUIRE_THROWS_WITH(
      static_cast<const Json&>(o).at("beta"),
      Contains("no key \"beta\"; the object has keys \"zeta\", \"alpha\", \"mid\""));
  REQUIRE_THROWS_WITH(Json::object().at("a"), Contains("no key \"a\"; the object has no keys"));
  // Parsing keeps the order written, not a sorted one.
  const Json p = Json::parse(R"({"b":1,"a":2,"c":3})");
  CHECK(p.items()[0].first == "b");
  CHECK(p.items()[1].first == "a");
  CHECK(p.items()[2].first == "c");
}

TEST_CASE("Json: arrays", "[report][json]") {
  Json a;
  a.push_back(1);
  a.push_back("two");
  a.push_back(Json::array());
  CHECK(a.is_array());
  CHECK(a.size() == 3);
  CHECK(a[1].as_string() == "two");
  a[0] = 5.5;
  CHECK(a[0].as_double() == 5.5);
  CHECK(a.dump() == R"([5.5,"two",[]])");
  CHECK(Json::array().dump() == "[]");
  CHECK(Json::object().dump() == "{}");
  CHECK(Json().size() == 0);
}

TEST_CASE("Json: number formatting round-trips", "[report][json]") {
  CHECK(Json(0.1).dump() == "0.1");
  CHECK(Json(1.0).dump() == "1.0");
  CHECK(Json(-0.0).dump() == "-0.0");
  CHECK(Json(1e300).dump() == "1e+300");
  CHECK(Json(42).dump() == "42");
  CHECK(Json(int64_t{123456789012345678}).dump() == "123456789012345678"); // no exponent
  CHECK(Json(std::numeric_limits<int64_t>::min()).dump() == "-9223372036854775808");
  const std::vector<double> values = {
      1.0 / 3.0,
      0.1 + 0.2,
      6.02214076e23,
      5e-324, // smallest subnormal
      std::numeric_limits<double>::max(),
      -2.2250738585072014e-308,
      123456.789,
      0.95};
  for (double v : values) {
    const std::string text = Json(v).dump();
    const Json back = Json::parse(text);
    INFO(text);
    CHECK_FALSE(back.is_integer());
    CHECK(back.as_double() == v);
  }
  CHECK(std::signbit(Json::parse("-0.0").as_double()));
  CHECK(Json::parse("42").is_integer());
  CHECK(Json::parse("-9223372036854775808").as_int64() == std::numeric_limits<int64_t>::min());
  // Beyond int64: the nearest double.
  const Json big = Json::parse("9223372036854775808");
  CHECK_FALSE(big.is_integer());
  CHECK(big.as_double() == 9223372036854775808.0);
  CHECK(Json::parse("1E2").as_double() == 100.0);
  CHECK_FALSE(Json::parse("1E2").is_integer());
  CHECK(Json::parse("2.5e-3").as_double() == 0.0025);
}

TEST_CASE("Json: non-finite numbers are refused with their path", "[report][json]") {
  Json j;
  j["metrics"]["auroc"] = std::nan("");
  REQUIRE_THROWS_WITH(j.dump(), Contains("Json::dump: non-finite number at metrics.auroc"));
  Json k;
  k["curve"].push_back(Json::object());
  k["curve"][0]["x"] = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(k.dump(2), Contains("non-finite number at curve[0].x"));
  REQUIRE_THROWS_WITH(Json(-HUGE_VAL).dump(), Contains("non-finite number at (root)"));
  REQUIRE_THROWS_WITH(Json::parse("1e400"), Contains("within the range of a double"));
}

TEST_CASE("Json: strings escape control characters and keep UTF-8", "[report][json]") {
  std::string s = "q\"b\\s/\b\f\n\r\t";
  s += '\x01';
  s += '\x1f';
  s += '\x7f';
  s += "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"; // é € 😀
  const std::string text = Json(s).dump();
  CHECK(
      text ==
      "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"");
  CHECK(Json::parse(text).as_string() == s);
  // A NUL inside the string survives.
  const std::string with_nul("a\0b", 3);
  CHECK(Json(with_nul).dump() == "\"a\\u0000b\"");
  CHECK(Json::parse(Json(with_nul).dump()).as_string() == with_nul);
  // \u escapes, including a surrogate pair, decode to UTF-8.
  CHECK(
      Json::parse(R"("\u00e9\u20AC\ud83d\ude00\/")").as_string() ==
      "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80/");
  // Keys are escaped too.
  Json o;
  o["a\"b\n"] = 1;
  CHECK(o.dump() == "{\"a\\\"b\\n\":1}");
  CHECK(Json::parse(o.dump()) == o);
  // Invalid UTF-8 is refused when written, naming the path.
  Json bad;
  bad["name"] = std::string("\xC3(");
  REQUIRE_THROWS_WITH(bad.dump(), Contains("string at name is not valid UTF-8"));
  REQUIRE_THROWS_WITH(
      Json(std::string("\xED\xA0\x80")).dump(), Contains("not valid UTF-8")); // surrogate
}

TEST_CASE("Json: round trips of nested documents, compact and indented", "[report][json]") {
  Json doc;
  doc["medcl"]["version"] = "0.1.0";
  doc["data"]["splits"] = Json::array({Json::object(), Json::array(), Json(), false});
  doc["evaluation"]["auroc"] = 0.8731234;
  doc["evaluation"]["n"] = int64_t{1} << 60;
  doc["list"] = Json::array_of(std::vector<int>{3, 1, 2});
  for (int indent : {-1, 0, 2, 4}) {
    const std::string text = doc.dump(indent);
    INFO(text);
    const Json back = Json::parse(text);
    CHECK(back == doc);
    CHECK(back.dump(indent) == text);
  }
  CHECK(doc.dump().find('\n') == std::string::npos);
  const std::string pretty = doc.dump(2);
  CHECK(pretty.find("\n  \"medcl\": {\n    \"version\": \"0.1.0\"\n  },") != std::string::npos);
  CHECK(Json(1) != Json(2));
  CHECK(Json(1) == Json(1.0));
  CHECK(Json("1") != Json(1));
  // Whitespace around the value is allowed.
  CHECK(Json::parse(" \t\r\n[ 1 , { \"a\" : null } ]\n") == Json::parse("[1,{\"a\":null}]"));
  CHECK(Json::parse("true").as_bool());
  CHECK(Json::parse("null").is_null());
}

TEST_CASE("Json: every parse error names the offset and what was expected", "[report][json]") {
  // Truncated inputs.
  REQUIRE_THROWS_WITH(
      Json::parse(""), Contains("at byte offset 0: expected a value, got end of input"));
  REQUIRE_THROWS_WITH(Json::parse("[1,"), Contains("at byte offset 3: expected a value"));
  REQUIRE_THROWS_WITH(Json::parse("{\"a\":1"), Contains("at byte offset 6: expected ',' or '}'"));
  REQUIRE_THROWS_WITH(Json::parse("\"abc"), Contains("offset 4: expected '\"' closing the string"));
  REQUIRE_THROWS_WITH(Json::parse("tru"), Contains("offset 0: expected a value"));
  REQUIRE_THROWS_WITH(
      Json::parse("[1 2]"), Contains("offset 3: expected ',' or ']' in an array, got '2'"));
  REQUIRE_THROWS_WITH(
      Json::parse("{\"a\" 1}"), Contains("offset 5: expected ':' after an object key"));
  REQUIRE_THROWS_WITH(Json::parse("{1:2}"), Contains("offset 1: expected a string key"));
  // Trailing garbage and trailing commas.
  REQUIRE_THROWS_WITH(
      Json::parse("{} x"), Contains("offset 3: expected end of input after the value"));
  REQUIRE_THROWS_WITH(Json::parse("[1,]"), Contains("offset 3: expected a value"));
  REQUIRE_THROWS_WITH(Json::parse("{\"a\":1,}"), Contains("offset 7: expected a string key"));
  // Bad escapes and strings.
  REQUIRE_THROWS_WITH(Json::parse(R"("\x")"), Contains("offset 2: expected an escape"));
  REQUIRE_THROWS_WITH(Json::parse(R"("\u12G4")"), Contains("offset 5: expected 4 hex digits"));
  REQUIRE_THROWS_WITH(Json::parse(R"("\udc00")"), Contains("offset 1: expected a high surrogate"));
  REQUIRE_THROWS_WITH(Json::parse(R"("\ud83dx")"), Contains("offset 7: expected a low surrogate"));
  REQUIRE_THROWS_WITH(
      Json::parse(R"("\ud83d\u0041")"), Contains("offset 7: expected a low surrogate"));
  REQUIRE_THROWS_WITH(
      Json::parse("\"a\nb\""), Contains("offset 2: expected an escaped control character"));
  REQUIRE_THROWS_WITH(Json::parse("\"\xC3(\""), Contains("offset 1: expected valid UTF-8"));
  REQUIRE_THROWS_WITH(Json::parse("\"\xC0\xAF\""), Contains("valid UTF-8")); // overlong '/'
  // Numbers.
  REQUIRE_THROWS_WITH(Json::parse("01"), Contains("offset 1: expected no leading zero"));
  REQUIRE_THROWS_WITH(Json::parse("-01"), Contains("offset 2: expected no leading zero"));
  REQUIRE_THROWS_WITH(Json::parse("-"), Contains("offset 1: expected a digit in a number"));
  REQUIRE_THROWS_WITH(
      Json::parse("1."), Contains("offset 2: expected a digit after the decimal point"));
  REQUIRE_THROWS_WITH(Json::parse("1e+"), Contains("offset 3: expected a digit in the exponent"));
  REQUIRE_THROWS_WITH(Json::parse("+1"), Contains("offset 0: expected a value"));
  REQUIRE_THROWS_WITH(Json::parse(".5"), Contains("offset 0: expected a value"));
  REQUIRE_THROWS_WITH(Json::parse("NaN"), Contains("offset 0: expected a value"));
  // Duplicate keys.
  REQUIRE_THROWS_WITH(
      Json::parse(R"({"a":1,"a":2})"), Contains("offset 7: expected a key not already"));
  // Depth.
  const std::string deep_ok = std::string(512, '[') + std::string(512, ']');
  CHECK(Json::parse(deep_ok).is_array());
  const std::string too_deep = std::string(513, '[') + std::string(513, ']');
  REQUIRE_THROWS_WITH(
      Json::parse(too_deep), Contains("offset 512: expected nesting depth at most 512"));
  REQUIRE_THROWS_WITH(
      Json::parse("[[[1]]]", 2), Contains("offset 2: expected nesting depth at most 2"));
  REQUIRE_THROWS_AS(Json::parse("{"), c10::Error);
}
