#pragma once

/// \file
/// A small JSON value (RFC 8259) for reports and JSON-lines logs: objects keep their insertion
/// order, integers stay exact int64, doubles are written so that they read back bit for bit.
/// Compiled in src/json.cpp; no third-party JSON library appears in the interface.

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace medcl {

/// A JSON value: null, boolean, number (an exact int64 or a double), string (UTF-8), array or
/// object. Objects keep their keys in the order they were first written, so a report reads in the
/// order it was filled. Accessing a value as the wrong type is a c10::Error naming the expected and
/// the actual type.
///
/// Numbers: a value constructed from (or parsed as) an integer keeps its exact int64 value and is
/// written without a fraction or exponent; a double is written with the fewest significant digits
/// (at most 17) that read back to the same double, always with a `.` or an exponent so that it
/// reads back as a double. Non-finite doubles may be stored but `dump` refuses them, naming the
/// path (`"Json::dump: non-finite number at metrics.auroc"`), since JSON has no NaN or Inf.
///
/// Example:
///   medcl::Json j = medcl::Json::object();
///   j["method"] = "SimCLR";
///   j["steps"] = 1000;
///   j["losses"].push_back(4.1);  // null becomes an array
///   std::string line = j.dump();  // {"method":"SimCLR","steps":1000,"losses":[4.1]}
///   medcl::Json back = medcl::Json::parse(line);
///   int64_t steps = back.at("steps").as_int64();
class Json {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  /// Nesting deeper than this (arrays and objects) is refused by `parse`. Default for `parse`.
  static constexpr int kMaxDepth = 512;

  /// null
  Json() = default;
  /// null
  Json(std::nullptr_t) {}
  Json(bool b) : type_(Type::Bool), bool_(b) {}
  Json(int i) : type_(Type::Number), is_integer_(true), int_(i) {}
  Json(int64_t i) : type_(Type::Number), is_integer_(true), int_(i) {}
  Json(double d) : type_(Type::Number), double_(d) {}
  /// UTF-8 text (checked when dumped).
  Json(const char* s);
  Json(std::string s) : type_(Type::String), string_(std::move(s)) {}
  /// Any other integral type (unsigned, size_t, long long, char...): stored as an exact int64;
  /// an unsigned value above INT64_MAX is an error.
  template <
      typename T,
      typename std::enable_if<std::is_integral<T>::value && !std::is_same<T, bool>::value, int>::
          type = 0>
  Json(T v) : type_(Type::Number), is_integer_(true), int_(to_int64(v)) {}
  /// Pointers other than `const char*` would silently become booleans: refused at compile time.
  template <typename T>
  Json(const T*) = delete;

  /// An empty array.
  static Json array();
  /// An array holding `items`.
  static Json array(std::vector<Json> items);
  /// An array of numbers, strings... from any vector whose elements convert to Json.
  template <typename T>
  static Json array_of(const std::vector<T>& items) {
    Json a = array();
    a.array_.reserve(items.size());
    for (const auto& v : items) {
      a.array_.emplace_back(v);
    }
    return a;
  }
  /// An empty object.
  static Json object();

  Type type() const {
    return type_;
  }
  /// "null", "bool", "number", "string", "array" or "object".
  static const char* type_name(Type t);
  bool is_null() const {
    return type_ == Type::Null;
  }
  bool is_bool() const {
    return type_ == Type::Bool;
  }
  bool is_number() const {
    return type_ == Type::Number;
  }
  /// A number held as an exact int64 (constructed from an integer or parsed without fraction or
  /// exponent).
  bool is_integer() const {
    return type_ == Type::Number && is_integer_;
  }
  bool is_string() const {
    return type_ == Type::String;
  }
  bool is_array() const {
    return type_ == Type::Array;
  }
  bool is_object() const {
    return type_ == Type::Object;
  }

  bool as_bool() const;
  /// Any number as a double (an int64 converts, possibly rounding beyond 2^53).
  double as_double() const;
  /// An integer number; a double is accepted only when it holds an integral value in range.
  int64_t as_int64() const;
  const std::string& as_string() const;

  // ---- arrays ----

  /// Appends to an array (a null becomes an empty array first); returns the appended element.
  Json& push_back(Json v);
  /// Elements of an array or members of an object; 0 for null; an error for other types.
  size_t size() const;
  /// Element `i` of an array (bounds-checked).
  const Json& operator[](size_t i) const;
  Json& operator[](size_t i);
  /// Element `i` of an array (bounds-checked); also allows j[0] with an int literal.
  const Json& operator[](int i) const;
  Json& operator[](int i);

  // ---- objects ----

  /// The member `key`, inserted as null at the end when missing (a null becomes an object first).
  Json& operator[](const std::string& key);
  Json& operator[](const char* key) {
    return (*this)[std::string(key)];
  }
  /// The member `key`; an error naming the key and the keys present when missing.
  const Json& at(const std::string& key) const;
  Json& at(const std::string& key);
  /// Whether an object has `key` (false for every other type).
  bool contains(const std::string& key) const;
  /// Members of an object in insertion order.
  const std::vector<std::pair<std::string, Json>>& items() const;
  /// Elements of an array.
  const std::vector<Json>& elements() const;

  // ---- text ----

  /// JSON text. `indent` < 0: one line, no spaces (for JSON lines); `indent` >= 0: that many
  /// spaces per level, one member per line. Control characters, `"` and `\` are escaped; other
  /// UTF-8 is written as is. Errors: a non-finite number or a string that is not valid UTF-8,
  /// naming its path (e.g. `metrics.auroc`, `curve[3].x`).
  std::string dump(int indent = -1) const;
  /// Strict RFC 8259 parse of one JSON text (whitespace around it allowed): no comments, no
  /// trailing commas, no leading zeros, no NaN, no unescaped control characters, valid UTF-8,
  /// `\uXXXX` escapes with surrogate pairs, nesting at most `max_depth`, no duplicate keys in an
  /// object. Errors give the byte offset and what was expected there.
  static Json parse(const std::string& text, int max_depth = kMaxDepth);

  /// Deep equality: same type and value; numbers compare by value (int64 exactly, otherwise as
  /// double); object members compare in order.
  friend bool operator==(const Json& a, const Json& b);
  friend bool operator!=(const Json& a, const Json& b) {
    return !(a == b);
  }

 private:
  template <typename T>
  static int64_t to_int64(T v) {
    if (std::is_unsigned<T>::value) {
      return from_unsigned(static_cast<unsigned long long>(v));
    }
    return static_cast<int64_t>(v);
  }
  static int64_t from_unsigned(unsigned long long v);
  void expect(Type t, const char* fn) const;

  Type type_ = Type::Null;
  bool bool_ = false;
  bool is_integer_ = false;
  int64_t int_ = 0;
  double double_ = 0;
  std::string string_;
  std::vector<Json> array_;
  std::vector<std::pair<std::string, Json>> object_;
};

} // namespace medcl
