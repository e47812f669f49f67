// CSV / TSV parsing (RFC 4180), compiled without LibTorch.

#define MEDCL_DATA_NO_ATEN
#include <medcl/data/csv.h>

#include "bytes.h"
#include "io_error.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <locale>
#include <sstream>

namespace medcl {
namespace data {
namespace detail {

namespace {

std::string trim(const std::string& s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) {
    ++b;
  }
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) {
    --e;
  }
  return s.substr(b, e - b);
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    out += (i ? ", " : "") + ("'" + names[i] + "'");
  }
  return out;
}

// Parses a number the way strtod does in the "C" locale, whatever the process locale is.
bool parse_number(const std::string& text, double& value) {
  const std::string t = trim(text);
  if (t.empty()) {
    return false;
  }
  std::istringstream in(t);
  in.imbue(std::locale::classic());
  // istream rejects "inf"/"nan"; handle them by hand.
  std::string lower;
  for (char ch : t) {
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  size_t sign_len = (lower[0] == '+' || lower[0] == '-') ? 1 : 0;
  const std::string body = lower.substr(sign_len);
  if (body == "inf" || body == "infinity") {
    value = lower[0] == '-' ? -std::numeric_limits<double>::infinity()
                            : std::numeric_limits<double>::infinity();
    return true;
  }
  if (body == "nan") {
    value = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  // Only digits, signs, '.', 'e'/'E' may appear (istream would accept hex floats on some
  // standard libraries).
  for (char ch : lower) {
    if (!(std::isdigit(static_cast<unsigned char>(ch)) || ch == '+' || ch == '-' || ch == '.' ||
          ch == 'e')) {
      return false;
    }
  }
  double v = 0;
  in >> v;
  if (in.fail()) {
    // Out-of-range values fail in istream; strtod gives +-inf / 0 for them.
    const char* begin = t.c_str();
    char* end = nullptr;
    v = std::strtod(begin, &end);
    if (end != begin + t.size()) {
      return false;
    }
    value = v;
    return true;
  }
  in.peek();
  if (!in.eof()) {
    return false;
  }
  value = v;
  return true;
}

} // namespace

struct CsvBuilder {
  static Table
  parse(const std::string& text, const CsvOptions& options, const std::string& source) {
    const char delim = options.delimiter();
    io_check(
        delim != '"' && delim != '\n' && delim != '\r' && delim != '\0',
        "csv: ",
        source,
        ": the delimiter cannot be a quote, a line break or NUL");
    Table table;
    table.source_ = source;
    table.missing_ = options.missing();
    for (auto& m : table.missing_) {
      m = trim(m);
    }

    size_t pos = 0;
    const size_t n = text.size();
    if (n >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) {
      pos = 3;
    }
    int64_t line = 1;
    bool have_columns = false;
    size_t ncols = 0;
    std::vector<std::string> fields;
    std::string field;

    while (pos < n) {
      // One record.
      const int64_t record_line = line;
      fields.clear();
      // An empty line (outside quotes) is skipped.
      if (text[pos] == '\n' || (text[pos] == '\r' && pos + 1 < n && text[pos + 1] == '\n')) {
        pos += text[pos] == '\r' ? 2 : 1;
        ++line;
        continue;
      }
      bool end_of_record = false;
      while (!end_of_record) {
        field.clear();
        if (pos < n && text[pos] == '"') {
          const int64_t quote_line = line;
          ++pos;
          bool closed = false;
          while (pos < n) {
            const char ch = text[pos];
            if (ch == '"') {
              if (pos + 1 < n && text[pos + 1] == '"') {
                field += '"';
                pos += 2;
                continue;
              }
              ++pos;
              closed = true;
              break;
            }
            if (ch == '\n') {
              ++line;
            }
            field += ch;
            ++pos;
          }
          io_check(
              closed,
              "csv: ",
              source,
              ":",
              quote_line,
              ": unterminated quoted field (the quote opened on this line is never closed)");
          // After the closing quote: a delimiter, the end of the record or the end of the text.
          if (pos < n && text[pos] != delim && text[pos] != '\n' &&
              !(text[pos] == '\r' && pos + 1 < n && text[pos + 1] == '\n')) {
            io_error(
                "csv: ",
                source,
                ":",
                line,
                ": unexpected character '",
                printable(std::string(1, text[pos]), HighBytes::Keep),
                "' after the closing quote of field ",
                fields.size() + 1,
                " (a quote inside a quoted field must be doubled)");
          }
        } else {
          // Unquoted: up to the delimiter or the end of the line; a quote here is kept as text.
          while (pos < n && text[pos] != delim && text[pos] != '\n' &&
                 !(text[pos] == '\r' && pos + 1 < n && text[pos + 1] == '\n')) {
            field += text[pos];
            ++pos;
          }
        }
        fields.push_back(field);
        if (pos >= n) {
          end_of_record = true;
        } else if (text[pos] == delim) {
          ++pos;
        } else {
          pos += text[pos] == '\r' ? 2 : 1;
          ++line;
          end_of_record = true;
        }
      }

      if (!have_columns) {
        have_columns = true;
        ncols = fields.size();
        if (options.header()) {
          for (size_t i = 0; i < fields.size(); ++i) {
            io_check(
                !trim(fields[i]).empty(),
                "csv: ",
                source,
                ":",
                record_line,
                ": header name ",
                i + 1,
                " of ",
                fields.size(),
                " is empty");
            const auto inserted = table.index_.emplace(fields[i], static_cast<int64_t>(i));
            io_check(
                inserted.second,
                "csv: ",
                source,
                ":",
                record_line,
                ": duplicate header name '",
                printable(fields[i], HighBytes::Keep),
                "' (columns ",
                inserted.first->second + 1,
                " and ",
                i + 1,
                ")");
          }
          table.columns_ = fields;
          continue;
        }
        for (size_t i = 0; i < ncols; ++i) {
          table.columns_.push_back(std::to_string(i));
          table.index_.emplace(table.columns_.back(), static_cast<int64_t>(i));
        }
      }
      io_check(
          fields.size() == ncols,
          "csv: ",
          source,
          ":",
          record_line,
          ": expected ",
          ncols,
          " fields",
          options.header() ? " (as in the header)" : " (as in the first row)",
          ", got ",
          fields.size());
      for (auto& f : fields) {
        table.cells_.push_back(std::move(f));
      }
      table.lines_.push_back(record_line);
    }
    io_check(
        have_columns || !options.header(), "csv: ", source, ": no header line (the text is empty)");
    return table;
  }
};

} // namespace detail

int64_t Table::column_index(const std::string& column) const {
  const auto it = index_.find(column);
  if (it == index_.end()) {
    detail::io_error(
        "csv: ",
        source_,
        ": no column '",
        column,
        "'; the columns are: ",
        columns_.empty() ? std::string("(none)") : detail::join(columns_));
  }
  return it->second;
}

const std::string& Table::cell_at(int64_t row, int64_t col) const {
  detail::io_check(
      row >= 0 && row < rows(),
      "csv: ",
      source_,
      ": row ",
      row,
      " out of range (the table has ",
      rows(),
      " rows)");
  return cells_[static_cast<size_t>(row) * columns_.size() + static_cast<size_t>(col)];
}

const std::string& Table::cell(int64_t row, const std::string& column) const {
  return cell_at(row, column_index(column));
}

bool Table::missing_text(const std::string& text) const {
  const std::string t = detail::trim(text);
  for (const auto& m : missing_) {
    if (t == m) {
      return true;
    }
  }
  return false;
}

bool Table::is_missing(int64_t row, const std::string& column) const {
  return missing_text(cell(row, column));
}

int64_t Table::line(int64_t row) const {
  detail::io_check(
      row >= 0 && row < rows(),
      "csv: ",
      source_,
      ": row ",
      row,
      " out of range (the table has ",
      rows(),
      " rows)");
  return lines_[static_cast<size_t>(row)];
}

Table Table::select_rows(const std::vector<int64_t>& rows) const {
  Table out;
  out.source_ = source_;
  out.columns_ = columns_;
  out.index_ = index_;
  out.missing_ = missing_;
  const size_t width = columns_.size();
  out.cells_.reserve(rows.size() * width);
  out.lines_.reserve(rows.size());
  for (int64_t r : rows) {
    out.lines_.push_back(line(r)); // checks the range
    const auto first = cells_.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(r) * width);
    out.cells_.insert(out.cells_.end(), first, first + static_cast<std::ptrdiff_t>(width));
  }
  return out;
}

std::vector<double> Table::numeric(const std::string& column) const {
  const int64_t col = column_index(column);
  std::vector<double> out(static_cast<size_t>(rows()));
  for (int64_t r = 0; r < rows(); ++r) {
    const std::string& text = cell_at(r, col);
    if (missing_text(text)) {
      out[static_cast<size_t>(r)] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    double v = 0;
    if (!detail::parse_number(text, v)) {
      detail::io_error(
          "csv: ",
          source_,
          ":",
          lines_[static_cast<size_t>(r)],
          ": column '",
          column,
          "': '",
          detail::printable(text, detail::HighBytes::Keep),
          "' is not a number (nor a missing value)");
    }
    out[static_cast<size_t>(r)] = v;
  }
  return out;
}

std::vector<std::string> Table::text(const std::string& column) const {
  const int64_t col = column_index(column);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(rows()));
  for (int64_t r = 0; r < rows(); ++r) {
    out.push_back(cell_at(r, col));
  }
  return out;
}

Table parse_csv(const std::string& text, const CsvOptions& options, const std::string& source) {
  return detail::CsvBuilder::parse(text, options, source);
}

Table read_csv_file(const std::string& path, const CsvOptions& options) {
  const std::string text = detail::read_whole_file("csv", path);
  CsvOptions opts = options;
  auto ends_with = [&](const char* suffix) {
    const size_t k = std::strlen(suffix);
    if (path.size() < k) {
      return false;
    }
    for (size_t i = 0; i < k; ++i) {
      if (std::tolower(static_cast<unsigned char>(path[path.size() - k + i])) != suffix[i]) {
        return false;
      }
    }
    return true;
  };
  if (opts.delimiter() == ',' && (ends_with(".tsv") || ends_with(".tab"))) {
    opts.delimiter('\t');
  }
  return parse_csv(text, opts, path);
}

} // namespace data
} // namespace medcl
