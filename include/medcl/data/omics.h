#pragma once

/// \file
/// Omics adapter: a gene-expression matrix (probes × samples, as `scripts/fetch-data` exports the
/// Bioconductor sets ALL and bladderbatch) with its sample table, turned into samples [S, G] of
/// log-expression, the most variable genes, and labels and batches from the sample table.

#include <medcl/data/csv.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// Expression of S samples over G genes (probes), with the sample table row of each sample.
struct ExpressionSet {
  /// Probe (gene) ids, one per column of `values`.
  std::vector<std::string> genes;
  /// Sample ids, one per row of `values`.
  std::vector<std::string> samples;
  /// [S, G] float32 log-expression.
  at::Tensor values;
  /// The sample table (phenotypes), rows in the order of `samples`.
  Table pheno;

  int64_t size() const {
    return static_cast<int64_t>(samples.size());
  }

  /// Indices of the `n` genes of largest variance across `rows` (all samples when empty), in
  /// decreasing variance. Unsupervised: labels are not looked at.
  std::vector<int64_t> most_variable(int64_t n, const std::vector<int64_t>& rows = {}) const {
    TORCH_CHECK(
        n >= 1 && n <= values.size(1),
        "ExpressionSet::most_variable: n must be in [1, ",
        values.size(1),
        "], got ",
        n);
    auto x = rows.empty() ? values : values.index_select(0, at::tensor(rows, at::kLong));
    TORCH_CHECK(
        x.size(0) >= 2,
        "ExpressionSet::most_variable: needs at least two samples, got ",
        x.size(0));
    auto var = x.to(at::kDouble).var(0);
    auto order = std::get<1>(var.sort(0, /*descending=*/true)).slice(0, 0, n).contiguous();
    return std::vector<int64_t>(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + n);
  }

  /// [S, n] the chosen genes' columns.
  at::Tensor select_genes(const std::vector<int64_t>& genes_idx) const {
    return values.index_select(1, at::tensor(genes_idx, at::kLong));
  }

  /// Integer codes of a text column of the sample table, in the order `levels` gives (a value
  /// outside `levels` gets -1); with `levels` empty, the distinct values sorted.
  std::vector<int64_t> codes(const std::string& column, std::vector<std::string>* levels) const {
    TORCH_CHECK(levels != nullptr, "ExpressionSet::codes: levels is null");
    const auto text = pheno.text(column);
    if (levels->empty()) {
      *levels = text;
      std::sort(levels->begin(), levels->end());
      levels->erase(std::unique(levels->begin(), levels->end()), levels->end());
    }
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < levels->size(); ++i) {
      index[(*levels)[i]] = static_cast<int64_t>(i);
    }
    std::vector<int64_t> out;
    for (const auto& t : text) {
      auto it = index.find(t);
      out.push_back(it == index.end() ? -1 : it->second);
    }
    return out;
  }
};

/// Reads an expression matrix `expression_tsv` (first column the probe id, then one column per
/// sample, log-expression values) and its sample table `pheno_csv` (a column `sample_column`
/// holding the sample ids used as the matrix's column names). Every sample of the matrix must have
/// exactly one row in the sample table; the result lists samples in the matrix's column order.
///
/// Example:
///   auto all = medcl::data::load_expression_set(dir + "/expression.tsv", dir + "/pheno.csv");
///   auto x = all.select_genes(all.most_variable(1000));   // [128, 1000]
inline ExpressionSet load_expression_set(
    const std::string& expression_tsv,
    const std::string& pheno_csv,
    const std::string& sample_column = "sample_id") {
  constexpr const char* fn = "load_expression_set";
  auto m = read_csv_file(expression_tsv, CsvOptions().delimiter('\t'));
  TORCH_CHECK(
      m.columns().size() >= 2,
      fn,
      ": ",
      expression_tsv,
      " must hold a probe column and at least one sample column");
  ExpressionSet e;
  e.pheno = read_csv_file(pheno_csv);
  TORCH_CHECK(
      e.pheno.has_column(sample_column),
      fn,
      ": ",
      pheno_csv,
      " has no column '",
      sample_column,
      "'");
  const auto ids = e.pheno.text(sample_column);
  std::map<std::string, int64_t> row_of;
  for (size_t i = 0; i < ids.size(); ++i) {
    TORCH_CHECK(
        row_of.emplace(ids[i], static_cast<int64_t>(i)).second,
        fn,
        ": sample '",
        ids[i],
        "' appears twice in ",
        pheno_csv);
  }
  const auto& cols = m.columns();
  e.genes = m.text(cols[0]);
  const auto g = static_cast<int64_t>(e.genes.size());
  TORCH_CHECK(g > 0, fn, ": ", expression_tsv, " has no probes");
  std::vector<float> data;
  std::vector<int64_t> pheno_rows;
  for (size_t c = 1; c < cols.size(); ++c) {
    auto it = row_of.find(cols[c]);
    TORCH_CHECK(
        it != row_of.end(),
        fn,
        ": sample '",
        cols[c],
        "' of ",
        expression_tsv,
        " has no row in ",
        pheno_csv);
    pheno_rows.push_back(it->second);
    e.samples.push_back(cols[c]);
    const auto v = m.numeric(cols[c]);
    for (size_t k = 0; k < v.size(); ++k) {
      TORCH_CHECK(
          std::isfinite(v[k]),
          fn,
          ": ",
          expression_tsv,
          ": sample '",
          cols[c],
          "' has no value for probe '",
          e.genes[k],
          "'");
      data.push_back(static_cast<float>(v[k]));
    }
  }
  const auto s = static_cast<int64_t>(e.samples.size());
  e.values = at::tensor(data, at::kFloat).reshape({s, g});
  // The sample table, reordered to the matrix's samples.
  e.pheno = e.pheno.select_rows(pheno_rows);
  return e;
}

} // namespace data
} // namespace medcl
