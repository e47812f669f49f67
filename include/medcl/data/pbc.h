#pragma once

/// \file
/// EHR adapter for the Mayo Clinic primary biliary cholangitis (PBC) data (R package survival):
/// `pbcseq` (312 trial patients, 1,945 visits with labs and signs) and `pbc` (baseline records of
/// 418 patients; ids 313-418 were not in the trial and have one record each). Visits become samples
/// with a missingness mask and their keys (patient, visit day, cohort as site), and an outcome:
/// death or transplant within a horizon after the visit.

#include <medcl/data/csv.h>
#include <medcl/pairing/sample_keys.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// Visits of the PBC cohort as samples. One row per visit.
struct EhrVisits {
  /// Feature names, in column order of `values`.
  std::vector<std::string> features;
  /// [N, F] float32 feature values as recorded (log for skewed labs, see `load_pbc_visits`); NaN
  /// where missing.
  at::Tensor values;
  /// [N, F] bool: true where the value was recorded.
  at::Tensor mask;
  std::vector<int64_t> patient;
  /// Visit day since the patient's enrolment.
  std::vector<double> day;
  /// 0 = trial cohort (pbcseq), 1 = non-trial cohort (pbc ids > 312, baseline only).
  std::vector<int64_t> site;
  std::vector<std::string> site_names{"trial (pbcseq)", "non-trial (pbc 313-418)"};
  /// Outcome within the horizon: 1 = death or transplant within `horizon_days` of the visit,
  /// 0 = followed beyond the horizon without either, -1 = censored before the horizon (unknown).
  std::vector<int64_t> label;
  /// Days from the visit to death/transplant or censoring, and whether it was an event.
  std::vector<double> time_to_event;
  std::vector<int64_t> event;
  /// 0 = female, 1 = male.
  std::vector<int64_t> sex;
  /// Age in years at the visit.
  std::vector<double> age;
  double horizon_days = 0;

  int64_t size() const {
    return static_cast<int64_t>(patient.size());
  }
  /// Keys for pairing: patient, time (visit day), site.
  SampleKeys keys() const {
    SampleKeys k;
    k.patient = at::tensor(patient, at::kLong);
    k.time = at::tensor(day, at::kDouble);
    k.site = at::tensor(site, at::kLong);
    return k;
  }
  /// Rows whose outcome is known (label 0 or 1).
  std::vector<int64_t> labelled_rows() const {
    std::vector<int64_t> r;
    for (size_t i = 0; i < label.size(); ++i) {
      if (label[i] >= 0) {
        r.push_back(static_cast<int64_t>(i));
      }
    }
    return r;
  }
  /// "1,945 visits of 312 patients (trial) + 106 ..." for reports.
  std::string describe() const {
    int64_t pos = 0, neg = 0, unknown = 0;
    for (int64_t l : label) {
      (l == 1 ? pos : l == 0 ? neg : unknown) += 1;
    }
    std::vector<int64_t> ids(patient);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    std::ostringstream s;
    s << size() << " visits of " << ids.size() << " patients, " << features.size()
      << " features; outcome (death or transplant within " << horizon_days << " days): " << pos
      << " positive, " << neg << " negative, " << unknown << " censored before the horizon";
    return s.str();
  }
};

namespace detail {

inline std::vector<double> pbc_column(const Table& t, const std::string& name) {
  TORCH_CHECK(
      t.has_column(name),
      "load_pbc_visits: ",
      t.source(),
      " has no column '",
      name,
      "' (is it the survival package's pbcseq/pbc export?)");
  return t.numeric(name);
}

inline std::vector<int64_t> pbc_sex(const Table& t) {
  TORCH_CHECK(t.has_column("sex"), "load_pbc_visits: ", t.source(), " has no column 'sex'");
  std::vector<int64_t> out;
  const auto text = t.text("sex");
  for (size_t i = 0; i < text.size(); ++i) {
    const auto& v = text[i];
    TORCH_CHECK(
        v == "m" || v == "f" || v == "1" || v == "2",
        "load_pbc_visits: ",
        t.source(),
        ": sex must be m/f (or 1/2), got '",
        v,
        "' in data row ",
        i + 1);
    out.push_back(v == "m" || v == "1" ? 1 : 0);
  }
  return out;
}

} // namespace detail

/// Loads the PBC visits. `pbcseq_csv` is the survival package's `pbcseq` exported to CSV;
/// `pbc_csv` (optional, "" to skip) its `pbc` table, from which the non-trial patients (ids > 312)
/// are added as a second cohort (site 1) with their baseline record. Features: ascites,
/// hepatomegaly, spiders, oedema (0/0.5/1), log bilirubin, log cholesterol, albumin, log alkaline
/// phosphatase, log AST, log platelets, log prothrombin time, histologic stage, age at the visit,
/// sex.
///
/// Example:
///   auto v = medcl::data::load_pbc_visits(dir + "/pbcseq.csv", dir + "/pbc.csv", 730);
///   auto keys = v.keys();   // patient, time = visit day, site
inline EhrVisits load_pbc_visits(
    const std::string& pbcseq_csv,
    const std::string& pbc_csv = "",
    double horizon_days = 730) {
  TORCH_CHECK(
      std::isfinite(horizon_days) && horizon_days > 0,
      "load_pbc_visits: horizon_days must be > 0, got ",
      horizon_days);
  EhrVisits v;
  v.horizon_days = horizon_days;
  v.features = {
      "ascites",
      "hepato",
      "spiders",
      "edema",
      "log_bili",
      "log_chol",
      "albumin",
      "log_alk_phos",
      "log_ast",
      "log_platelet",
      "log_protime",
      "stage",
      "age",
      "sex"};
  const size_t f = v.features.size();
  std::vector<float> values;
  auto add_table = [&](const Table& t, bool baseline_only, int64_t site) {
    const auto id = detail::pbc_column(t, "id");
    const auto futime = detail::pbc_column(t, baseline_only ? "time" : "futime");
    const auto status = detail::pbc_column(t, "status");
    const auto age0 = detail::pbc_column(t, "age");
    const auto sex = detail::pbc_sex(t);
    std::vector<double> day(id.size(), 0.0);
    if (!baseline_only) {
      day = detail::pbc_column(t, "day");
    }
    struct Col {
      const char* name;
      bool log;
    };
    const Col cols[] = {
        {"ascites", false},
        {"hepato", false},
        {"spiders", false},
        {"edema", false},
        {"bili", true},
        {"chol", true},
        {"albumin", false},
        {"alk.phos", true},
        {"ast", true},
        {"platelet", true},
        {"protime", true},
        {"stage", false}};
    std::vector<std::vector<double>> c;
    for (const auto& col : cols) {
      c.push_back(detail::pbc_column(t, col.name));
    }
    for (size_t i = 0; i < id.size(); ++i) {
      TORCH_CHECK(
          std::isfinite(id[i]) && std::isfinite(futime[i]) && std::isfinite(status[i]) &&
              std::isfinite(day[i]) && std::isfinite(age0[i]),
          "load_pbc_visits: ",
          t.source(),
          ": data row ",
          i + 1,
          " lacks id, follow-up time, status, day or age");
      if (baseline_only && id[i] <= 312) {
        continue; // trial patients: their visits come from pbcseq
      }
      TORCH_CHECK(
          status[i] == 0 || status[i] == 1 || status[i] == 2,
          "load_pbc_visits: ",
          t.source(),
          ": status must be 0, 1 or 2, got ",
          status[i],
          " in data row ",
          i + 1);
      const double remaining = futime[i] - day[i];
      TORCH_CHECK(
          remaining >= 0,
          "load_pbc_visits: ",
          t.source(),
          ": visit day ",
          day[i],
          " is after the end of follow-up ",
          futime[i],
          " in data row ",
          i + 1);
      const bool event = status[i] > 0;
      v.patient.push_back(static_cast<int64_t>(id[i]));
      v.day.push_back(day[i]);
      v.site.push_back(site);
      v.time_to_event.push_back(remaining);
      v.event.push_back(event ? 1 : 0);
      v.label.push_back(event && remaining <= horizon_days ? 1 : remaining > horizon_days ? 0 : -1);
      v.sex.push_back(sex[i]);
      v.age.push_back(age0[i] + day[i] / 365.25);
      for (size_t k = 0; k < c.size(); ++k) {
        double x = c[k][i];
        if (cols[k].log && std::isfinite(x)) {
          TORCH_CHECK(
              x > 0,
              "load_pbc_visits: ",
              t.source(),
              ": ",
              cols[k].name,
              " must be > 0 to take its log, got ",
              x,
              " in data row ",
              i + 1);
          x = std::log(x);
        }
        values.push_back(static_cast<float>(x));
      }
      values.push_back(static_cast<float>(v.age.back()));
      values.push_back(static_cast<float>(sex[i]));
    }
  };
  add_table(read_csv_file(pbcseq_csv), false, 0);
  if (!pbc_csv.empty()) {
    add_table(read_csv_file(pbc_csv), true, 1);
  }
  const auto n = static_cast<int64_t>(v.patient.size());
  TORCH_CHECK(n > 0, "load_pbc_visits: no visits in ", pbcseq_csv);
  v.values = at::tensor(values, at::kFloat).reshape({n, static_cast<int64_t>(f)});
  v.mask = at::isfinite(v.values);
  return v;
}

/// Standardisation of tabular features with a missingness mask, fitted on some rows (the training
/// patients') and applied to all: z = (x - mean) / sd over the observed values of each feature;
/// missing values become 0 (the mean). `with_mask` appends the mask as F extra inputs so that an
/// encoder can tell a missing value from an average one.
struct TabularStandardizer {
  at::Tensor mean; // [F]
  at::Tensor sd;   // [F]

  static TabularStandardizer
  fit(const at::Tensor& values, const at::Tensor& mask, const std::vector<int64_t>& rows) {
    TORCH_CHECK(
        values.dim() == 2 && mask.sizes() == values.sizes(),
        "TabularStandardizer::fit: expected values and mask [N, F] of one shape, got ",
        values.sizes(),
        " and ",
        mask.sizes());
    TORCH_CHECK(!rows.empty(), "TabularStandardizer::fit: no rows to fit on");
    auto idx = at::tensor(rows, at::kLong);
    auto x = values.index_select(0, idx).to(at::kDouble);
    auto m = mask.index_select(0, idx).to(at::kDouble);
    auto count = m.sum(0);
    TORCH_CHECK(
        count.gt(1).all().item<bool>(),
        "TabularStandardizer::fit: a feature has fewer than two observed values among the ",
        rows.size(),
        " rows, got ",
        static_cast<int64_t>(count.min().item<double>()),
        " for feature ",
        count.argmin().item<int64_t>());
    auto xz = at::where(m.to(at::kBool), x, at::zeros_like(x));
    auto mean = xz.sum(0) / count;
    auto var = ((xz - mean) * m).pow(2).sum(0) / (count - 1);
    TabularStandardizer s;
    s.mean = mean.to(at::kFloat);
    s.sd = var.sqrt().clamp_min(1e-6).to(at::kFloat);
    return s;
  }
  /// [N, F] standardised values with missing entries 0.
  at::Tensor transform(const at::Tensor& values, const at::Tensor& mask) const {
    TORCH_CHECK(
        values.dim() == 2 && values.size(1) == mean.size(0),
        "TabularStandardizer::transform: expected [N, ",
        mean.size(0),
        "], got ",
        values.sizes());
    auto z = (values - mean) / sd;
    return at::where(mask, z, at::zeros_like(z));
  }
  /// [N, 2F]: standardised values, then the mask as 0/1.
  at::Tensor with_mask(const at::Tensor& values, const at::Tensor& mask) const {
    return at::cat({transform(values, mask), mask.to(at::kFloat)}, 1);
  }
};

} // namespace data
} // namespace medcl
