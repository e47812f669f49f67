#pragma once

/// \file
/// CSV / TSV tables (RFC 4180): quoted fields with delimiters, doubled quotes and line breaks,
/// CRLF or LF line ends, an optional UTF-8 byte-order mark, a header row. Cells are kept as text;
/// `numeric()` parses a column as numbers (missing cells become NaN) and `to_tensor()` turns
/// columns into a float64 tensor. Errors are `c10::Error`s that name the file (or "<memory>"),
/// the line and what was wrong.
///
/// Parsing is compiled in src/io/csv.cpp without LibTorch; only the tensor helpers at the end of
/// this header need ATen (sources that define MEDCL_DATA_NO_ATEN leave them out).
///
/// Example:
/// ```
/// auto table = medcl::data::read_csv_file("pbcseq.csv");
/// auto labs = medcl::data::to_tensor(table, {"bili", "albumin"});  // [rows, 2] float64
/// auto ids = table.numeric("id");
/// ```

#include <torch/arg.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// How a CSV / TSV text is read.
struct CsvOptions {
  /// Field separator: ',' for CSV, '\t' for TSV. `read_csv_file` reads files named `*.tsv` or
  /// `*.tab` with '\t' while this is left at ','. Default: ','
  TORCH_ARG(char, delimiter) = ',';
  /// Whether the first record holds the column names. Without a header, the columns are named
  /// "0", "1", … Default: true
  TORCH_ARG(bool, header) = true;
  /// Cell texts (compared after trimming spaces and tabs) that mean "no value".
  /// Default: {"", "NA", "NaN", "nan", "."}
  TORCH_ARG(std::vector<std::string>, missing) =
      std::vector<std::string>({"", "NA", "NaN", "nan", "."});
};

namespace detail {
struct CsvBuilder;
} // namespace detail

/// A parsed table: column names and the raw text of every cell, row by row. Empty lines (outside
/// quotes) are skipped; every other record must have as many fields as the header.
class Table {
 public:
  Table() = default;

  /// Column names, in file order.
  const std::vector<std::string>& columns() const {
    return columns_;
  }
  /// Number of data rows (the header is not a row).
  int64_t rows() const {
    return static_cast<int64_t>(lines_.size());
  }
  /// Whether a column of this name exists.
  bool has_column(const std::string& column) const {
    return index_.count(column) != 0;
  }
  /// Position of `column` among columns(); an error listing the columns when it does not exist.
  int64_t column_index(const std::string& column) const;
  /// Raw text of one cell (quotes removed, doubled quotes undone).
  const std::string& cell(int64_t row, const std::string& column) const;
  /// Whether the cell's text (trimmed of spaces and tabs) is one of the options' missing values.
  bool is_missing(int64_t row, const std::string& column) const;
  /// The column as numbers: NaN for missing cells; a cell that is neither missing nor a number
  /// is an error naming the file, line, column and text. Accepts what `strtod` accepts in the
  /// "C" locale (decimal and exponent forms, "inf", a leading '+'), surrounding blanks ignored.
  std::vector<double> numeric(const std::string& column) const;
  /// The column's raw texts.
  std::vector<std::string> text(const std::string& column) const;
  /// The 1-based line of the file on which `row` starts (for messages of higher-level readers).
  int64_t line(int64_t row) const;
  /// The table of the given rows, in that order (a row may repeat); cells, their file lines and
  /// the missing-value options are kept, so messages still name the original lines.
  Table select_rows(const std::vector<int64_t>& rows) const;
  /// File name, or "<memory>" for parse_csv without a source.
  const std::string& source() const {
    return source_;
  }

 private:
  friend struct detail::CsvBuilder;
  const std::string& cell_at(int64_t row, int64_t col) const;
  bool missing_text(const std::string& text) const;

  std::string source_ = "<memory>";
  std::vector<std::string> columns_;
  std::map<std::string, int64_t> index_;
  std::vector<std::string> cells_; // row-major, rows() * columns().size()
  std::vector<int64_t> lines_;     // starting line of each row
  std::vector<std::string> missing_;
};

/// Reads a CSV / TSV file. A missing or unreadable file is an error with the path and the
/// system's reason.
Table read_csv_file(const std::string& path, const CsvOptions& options = {});

/// Parses CSV / TSV text; `source` names it in error messages.
Table parse_csv(
    const std::string& text,
    const CsvOptions& options = {},
    const std::string& source = "<memory>");

} // namespace data
} // namespace medcl

#ifndef MEDCL_DATA_NO_ATEN
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace medcl {
namespace data {

/// The given columns as a float64 tensor, NaN where a cell is missing.
///
/// Shape: [table.rows(), columns.size()].
inline at::Tensor to_tensor(const Table& table, const std::vector<std::string>& columns) {
  auto out = at::empty(
      {table.rows(), static_cast<int64_t>(columns.size())}, at::TensorOptions().dtype(at::kDouble));
  auto acc = out.accessor<double, 2>();
  for (size_t c = 0; c < columns.size(); ++c) {
    const auto values = table.numeric(columns[c]);
    for (int64_t r = 0; r < table.rows(); ++r) {
      acc[r][static_cast<int64_t>(c)] = values[static_cast<size_t>(r)];
    }
  }
  return out;
}

/// Every column as a float64 tensor (see the overload above).
inline at::Tensor to_tensor(const Table& table) {
  return to_tensor(table, table.columns());
}

/// True where a cell of the given columns is missing.
///
/// Shape: [table.rows(), columns.size()], bool.
inline at::Tensor missing_mask(const Table& table, const std::vector<std::string>& columns) {
  auto out = at::empty(
      {table.rows(), static_cast<int64_t>(columns.size())}, at::TensorOptions().dtype(at::kBool));
  auto acc = out.accessor<bool, 2>();
  for (size_t c = 0; c < columns.size(); ++c) {
    for (int64_t r = 0; r < table.rows(); ++r) {
      acc[r][static_cast<int64_t>(c)] = table.is_missing(r, columns[c]);
    }
  }
  return out;
}

} // namespace data
} // namespace medcl
#endif
