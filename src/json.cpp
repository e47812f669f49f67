#include <medcl/core/json.h>

#include <c10/util/Exception.h>

#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <locale>
#include <sstream>

namespace medcl {

namespace {

const char* kTypeNames[] = {"null", "bool", "number", "string", "array", "object"};

/// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid (overlong
/// forms, surrogates and code points above U+10FFFF are invalid).
size_t utf8_sequence_length(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    return 1;
  }
  size_t len = 0;
  uint32_t cp = 0;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return len;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// strtod on a string that already follows the JSON number grammar. strtod reads the decimal
/// point of the C locale in force, so a program that called setlocale() gets its own point swapped
/// in; every other character of a JSON number means the same in every locale.
double strtod_json(std::string text) {
  const char* point = std::localeconv()->decimal_point;
  if (point != nullptr && point[0] != '.' && point[0] != '\0') {
    const auto dot = text.find('.');
    if (dot != std::string::npos) {
      text.replace(dot, 1, point);
    }
  }
  return std::strtod(text.c_str(), nullptr);
}

/// The fewest significant digits (15 to 17) that read back to `d`, in the classic locale.
std::string format_double(double d) {
  std::string text;
  for (int precision = 15; precision <= 17; ++precision) {
    std::ostringstream os;
    os.imbue(std::locale::classic());
    os.precision(precision);
    os << d;
    text = os.str();
    if (strtod_json(text) == d) {
      break;
    }
  }
  if (text.find_first_of(".eE") == std::string::npos) {
    text += ".0"; // keeps it a double when read back
  }
  return text;
}

void escape_string(std::string& out, const std::string& s, const std::string& path) {
  static const char* kHex = "0123456789abcdef";
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t len = utf8_sequence_length(s, i);
      TORCH_CHECK(
          len > 0,
          "Json::dump: string at ",
          path,
          " is not valid UTF-8 (byte ",
          i,
          " of the string is 0x",
          kHex[c >> 4],
          kHex[c & 0xF],
          ")");
      out.append(s, i, len);
      i += len;
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

void newline(std::string& out, int indent, int level) {
  if (indent >= 0) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
  }
}

/// Recursive-descent parser over the bytes of one JSON text.
class Parser {
 public:
  Parser(const std::string& text, int max_depth) : s_(text), max_depth_(max_depth) {}

  Json parse_document() {
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) {
      fail("end of input after the value (trailing characters)");
    }
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& expected) const {
    std::string found;
    if (pos_ >= s_.size()) {
      found = "end of input";
    } else {
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c >= 0x20 && c < 0x7F) {
        found = std::string("'") + static_cast<char>(c) + "'";
      } else {
        static const char* kHex = "0123456789abcdef";
        found = std::string("byte 0x") + kHex[c >> 4] + kHex[c & 0xF];
      }
    }
    TORCH_CHECK(
        false, "Json::parse: at byte offset ", pos_, ": expected ", expected, ", got ", found);
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool consume_literal(const char* lit) {
    const size_t n = std::strlen(lit);
    if (s_.compare(pos_, n, lit) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }

  Json parse_value(int depth) {
    if (pos_ >= s_.size()) {
      fail("a value");
    }
    switch (s_[pos_]) {
      case '{':
        return parse_object(depth + 1);
      case '[':
        return parse_array(depth + 1);
      case '"':
        return Json(parse_string());
      case 't':
        if (consume_literal("true")) {
          return Json(true);
        }
        break;
      case 'f':
        if (consume_literal("false")) {
          return Json(false);
        }
        break;
      case 'n':
        if (consume_literal("null")) {
          return Json();
        }
        break;
      default:
        if (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) {
          return parse_number();
        }
    }
    fail("a value (object, array, string, number, true, false or null)");
  }

  void check_depth(int depth) {
    if (depth > max_depth_) {
      std::ostringstream os;
      os << "nesting depth at most " << max_depth_;
      fail(os.str());
    }
  }

  Json parse_array(int depth) {
    check_depth(depth);
    ++pos_; // '['
    Json a = Json::array();
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return a;
    }
    while (true) {
      skip_ws();
      a.push_back(parse_value(depth));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return a;
      }
      fail("',' or ']' in an array");
    }
  }

  Json parse_object(int depth) {
    check_depth(depth);
    ++pos_; // '{'
    Json o = Json::object();
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return o;
    }
    while (true) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') {
        fail("a string key in an object");
      }
      const size_t key_pos = pos_;
      std::string key = parse_string();
      if (o.contains(key)) {
        pos_ = key_pos;
        fail("a key not already in this object (duplicate \"" + key + "\")");
      }
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') {
        fail("':' after an object key");
      }
      ++pos_;
      skip_ws();
      o[key] = parse_value(depth);
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return o;
      }
      fail("',' or '}' in an object");
    }
  }

  uint32_t parse_hex4() {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      if (pos_ >= s_.size()) {
        fail("4 hex digits after \\u");
      }
      const char c = s_[pos_];
      uint32_t d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        fail("4 hex digits after \\u");
      }
      v = (v << 4) | d;
      ++pos_;
    }
    return v;
  }

  std::string parse_string() {
    ++pos_; // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) {
        fail("'\"' closing the string");
      }
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) {
        fail("an escaped control character in a string (\\n, \\t, \\u00XX)");
      }
      if (c >= 0x80) {
        const size_t len = utf8_sequence_length(s_, pos_);
        if (len == 0) {
          fail("valid UTF-8 in a string");
        }
        out.append(s_, pos_, len);
        pos_ += len;
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      ++pos_; // backslash
      if (pos_ >= s_.size()) {
        fail("an escape character after '\\'");
      }
      const char e = s_[pos_];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          ++pos_;
          break;
        case 'b':
          out += '\b';
          ++pos_;
          break;
        case 'f':
          out += '\f';
          ++pos_;
          break;
        case 'n':
          out += '\n';
          ++pos_;
          break;
        case 'r':
          out += '\r';
          ++pos_;
          break;
        case 't':
          out += '\t';
          ++pos_;
          break;
        case 'u': {
          ++pos_;
          uint32_t cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) {
            pos_ -= 6;
            fail("a high surrogate (\\uD800-\\uDBFF) before a low surrogate");
          }
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!(pos_ + 1 < s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u')) {
              fail("a low surrogate \\uDC00-\\uDFFF after a high surrogate");
            }
            pos_ += 2;
            const uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) {
              pos_ -= 6;
              fail("a low surrogate \\uDC00-\\uDFFF after a high surrogate");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          fail("an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
      }
    }
  }

  Json parse_number() {
    const size_t start = pos_;
    bool integer = true;
    if (s_[pos_] == '-') {
      ++pos_;
    }
    if (pos_ >= s_.size() || !(s_[pos_] >= '0' && s_[pos_] <= '9')) {
      fail("a digit in a number");
    }
    if (s_[pos_] == '0') {
      ++pos_;
      if (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        fail("no leading zero in a number ('.', 'e' or the end of the number after 0)");
      }
    } else {
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        ++pos_;
      }
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      integer = false;
      ++pos_;
      if (pos_ >= s_.size() || !(s_[pos_] >= '0' && s_[pos_] <= '9')) {
        fail("a digit after the decimal point");
      }
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        ++pos_;
      }
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      integer = false;
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) {
        ++pos_;
      }
      if (pos_ >= s_.size() || !(s_[pos_] >= '0' && s_[pos_] <= '9')) {
        fail("a digit in the exponent");
      }
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        ++pos_;
      }
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    if (integer) {
      int64_t v = 0;
      const auto r = std::from_chars(first, last, v);
      if (r.ec == std::errc() && r.ptr == last) {
        return Json(v);
      }
      // Beyond int64: kept as the nearest double.
    }
    // Overflow gives an infinity (refused); underflow gives 0 or a subnormal, the nearest double.
    const double d = strtod_json(std::string(first, last));
    if (!std::isfinite(d)) {
      pos_ = start;
      fail("a number within the range of a double");
    }
    return Json(d);
  }

  const std::string& s_;
  int max_depth_;
  size_t pos_ = 0;
};

} // namespace

Json::Json(const char* s) : type_(Type::String) {
  TORCH_CHECK(s != nullptr, "Json: expected a string, got a null const char*");
  string_ = s;
}

int64_t Json::from_unsigned(unsigned long long v) {
  TORCH_CHECK(
      v <= static_cast<unsigned long long>(std::numeric_limits<int64_t>::max()),
      "Json: expected an integer that fits int64, got ",
      v);
  return static_cast<int64_t>(v);
}

Json Json::array() {
  Json j;
  j.type_ = Type::Array;
  return j;
}

Json Json::array(std::vector<Json> items) {
  Json j = array();
  j.array_ = std::move(items);
  return j;
}

Json Json::object() {
  Json j;
  j.type_ = Type::Object;
  return j;
}

const char* Json::type_name(Type t) {
  return kTypeNames[static_cast<int>(t)];
}

void Json::expect(Type t, const char* fn) const {
  TORCH_CHECK(type_ == t, "Json::", fn, ": expected ", type_name(t), ", got ", type_name(type_));
}

bool Json::as_bool() const {
  expect(Type::Bool, "as_bool");
  return bool_;
}

double Json::as_double() const {
  expect(Type::Number, "as_double");
  return is_integer_ ? static_cast<double>(int_) : double_;
}

int64_t Json::as_int64() const {
  expect(Type::Number, "as_int64");
  if (is_integer_) {
    return int_;
  }
  // 2^63 is exactly representable; every double below it in magnitude converts without overflow.
  TORCH_CHECK(
      std::isfinite(double_) && std::floor(double_) == double_ &&
          double_ >= -9223372036854775808.0 && double_ < 9223372036854775808.0,
      "Json::as_int64: expected an integer number, got ",
      double_);
  return static_cast<int64_t>(double_);
}

const std::string& Json::as_string() const {
  expect(Type::String, "as_string");
  return string_;
}

Json& Json::push_back(Json v) {
  if (type_ == Type::Null) {
    type_ = Type::Array;
  }
  expect(Type::Array, "push_back");
  array_.push_back(std::move(v));
  return array_.back();
}

size_t Json::size() const {
  switch (type_) {
    case Type::Null:
      return 0;
    case Type::Array:
      return array_.size();
    case Type::Object:
      return object_.size();
    default:
      TORCH_CHECK(false, "Json::size: expected array, object or null, got ", type_name(type_));
  }
}

const Json& Json::operator[](size_t i) const {
  expect(Type::Array, "operator[]");
  TORCH_CHECK(
      i < array_.size(),
      "Json::operator[]: index ",
      i,
      " out of range for an array of ",
      array_.size(),
      " element(s)");
  return array_[i];
}

Json& Json::operator[](size_t i) {
  return const_cast<Json&>(static_cast<const Json&>(*this)[i]);
}

const Json& Json::operator[](int i) const {
  TORCH_CHECK(i >= 0, "Json::operator[]: expected a non-negative index, got ", i);
  return (*this)[static_cast<size_t>(i)];
}

Json& Json::operator[](int i) {
  TORCH_CHECK(i >= 0, "Json::operator[]: expected a non-negative index, got ", i);
  return (*this)[static_cast<size_t>(i)];
}

Json& Json::operator[](const std::string& key) {
  if (type_ == Type::Null) {
    type_ = Type::Object;
  }
  expect(Type::Object, "operator[]");
  for (auto& kv : object_) {
    if (kv.first == key) {
      return kv.second;
    }
  }
  object_.emplace_back(key, Json());
  return object_.back().second;
}

const Json& Json::at(const std::string& key) const {
  expect(Type::Object, "at");
  for (const auto& kv : object_) {
    if (kv.first == key) {
      return kv.second;
    }
  }
  std::string keys;
  for (const auto& kv : object_) {
    keys += keys.empty() ? "" : ", ";
    keys += "\"" + kv.first + "\"";
  }
  TORCH_CHECK(
      false,
      "Json::at: no key \"",
      key,
      "\"; the object has ",
      keys.empty() ? std::string("no keys") : "keys " + keys);
}

Json& Json::at(const std::string& key) {
  return const_cast<Json&>(static_cast<const Json&>(*this).at(key));
}

bool Json::contains(const std::string& key) const {
  if (type_ != Type::Object) {
    return false;
  }
  for (const auto& kv : object_) {
    if (kv.first == key) {
      return true;
    }
  }
  return false;
}

const std::vector<std::pair<std::string, Json>>& Json::items() const {
  expect(Type::Object, "items");
  return object_;
}

const std::vector<Json>& Json::elements() const {
  expect(Type::Array, "elements");
  return array_;
}

namespace {

void dump_value(const Json& j, std::string& out, int indent, int level, const std::string& path) {
  switch (j.type()) {
    case Json::Type::Null:
      out += "null";
      return;
    case Json::Type::Bool:
      out += j.as_bool() ? "true" : "false";
      return;
    case Json::Type::Number: {
      if (j.is_integer()) {
        out += std::to_string(j.as_int64());
        return;
      }
      const double d = j.as_double();
      TORCH_CHECK(
          std::isfinite(d),
          "Json::dump: non-finite number at ",
          path.empty() ? "(root)" : path,
          " (",
          d,
          "); JSON has no NaN or infinity");
      out += format_double(d);
      return;
    }
    case Json::Type::String:
      escape_string(out, j.as_string(), path.empty() ? "(root)" : path);
      return;
    case Json::Type::Array: {
      const auto& elements = j.elements();
      if (elements.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < elements.size(); ++i) {
        if (i > 0) {
          out += ',';
        }
        newline(out, indent, level + 1);
        dump_value(elements[i], out, indent, level + 1, path + "[" + std::to_string(i) + "]");
      }
      newline(out, indent, level);
      out += ']';
      return;
    }
    case Json::Type::Object: {
      const auto& members = j.items();
      if (members.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      bool first = true;
      for (const auto& kv : members) {
        if (!first) {
          out += ',';
        }
        first = false;
        newline(out, indent, level + 1);
        const std::string child = path.empty() ? kv.first : path + "." + kv.first;
        escape_string(out, kv.first, child);
        out += indent >= 0 ? ": " : ":";
        dump_value(kv.second, out, indent, level + 1, child);
      }
      newline(out, indent, level);
      out += '}';
      return;
    }
  }
}

} // namespace

std::string Json::dump(int indent) const {
  std::string out;
  dump_value(*this, out, indent, 0, "");
  return out;
}

Json Json::parse(const std::string& text, int max_depth) {
  TORCH_CHECK(max_depth >= 1, "Json::parse: expected max_depth >= 1, got ", max_depth);
  Parser p(text, max_depth);
  return p.parse_document();
}

bool operator==(const Json& a, const Json& b) {
  if (a.type_ != b.type_) {
    return false;
  }
  switch (a.type_) {
    case Json::Type::Null:
      return true;
    case Json::Type::Bool:
      return a.bool_ == b.bool_;
    case Json::Type::Number:
      if (a.is_integer_ && b.is_integer_) {
        return a.int_ == b.int_;
      }
      return a.as_double() == b.as_double();
    case Json::Type::String:
      return a.string_ == b.string_;
    case Json::Type::Array:
      return a.array_ == b.array_;
    case Json::Type::Object:
      return a.object_ == b.object_;
  }
  return false;
}

} // namespace medcl
