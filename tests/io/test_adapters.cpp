// Modality adapters: the PBC visits (EHR) and expression sets (omics), on small hand-written files
// and on the real exports when ./scripts/fetch-data has put them under MEDCL_DATA_DIR.
#include "io/real_files.h"

#include <medcl/data/dicom.h>
#include <medcl/data/ecg.h>
#include <medcl/data/mri.h>
#include <medcl/data/omics.h>
#include <medcl/data/pbc.h>

#include "catch.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

struct Dir {
  std::filesystem::path path;
  Dir() {
    path =
        std::filesystem::temp_directory_path() / ("medcl-adapters-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
  }
  ~Dir() {
    std::error_code ec;
    medcl::remove_tree(path.string(), ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const auto p = (path / name).string();
    std::ofstream(p) << text;
    return p;
  }
};

const char* kHeader =
    "id,futime,status,trt,age,sex,day,ascites,hepato,spiders,edema,bili,chol,albumin,alk.phos,ast,"
    "platelet,protime,stage\n";

} // namespace

TEST_CASE("PBC adapter: visits, outcome within the horizon, missingness, keys", "[io][adapters]") {
  Dir d;
  // Patient 1 dies at day 400 (visits at 0 and 192); patient 2 is censored at day 3000 (visits at 0
  // and 2500); patient 3 gets a transplant at day 1500 (visit at 0).
  const auto seq = d.write(
      "pbcseq.csv",
      std::string(kHeader) +
          "1,400,2,1,58.0,f,0,1,1,1,1,14.5,261,2.6,1718,138,190,12.2,4\n"
          "1,400,2,1,58.0,f,192,1,1,1,1,21.3,NA,2.94,1612,6.2,183,11.2,4\n"
          "2,3000,0,1,40.0,m,0,0,0,0,0,1.1,302,4.1,7394,113,221,10.6,3\n"
          "2,3000,0,1,40.0,m,2500,0,0,0,0,1.3,NA,4.0,7000,110,200,10.8,3\n"
          "3,1500,1,2,45.5,f,0,0,1,0,0.5,0.8,200,3.5,1000,80,300,10,2\n");
  auto v = medcl::data::load_pbc_visits(seq, "", 730);
  REQUIRE(v.size() == 5);
  CHECK(v.label == std::vector<int64_t>{1, 1, 0, -1, 0});
  CHECK(v.event == std::vector<int64_t>{1, 1, 0, 0, 1});
  CHECK(v.time_to_event[1] == Approx(208));
  CHECK(v.sex == std::vector<int64_t>{0, 0, 1, 1, 0});
  CHECK(v.age[1] == Approx(58.0 + 192 / 365.25));
  CHECK(v.values.sizes() == at::IntArrayRef({5, 14}));
  const auto chol = 5; // column of log_chol
  CHECK_FALSE(v.mask[1][chol].item<bool>());
  CHECK(std::isnan(v.values[1][chol].item<float>()));
  CHECK(v.values[0][4].item<float>() == Approx(std::log(14.5)));
  CHECK(v.labelled_rows() == std::vector<int64_t>{0, 1, 2, 4});
  auto k = v.keys();
  CHECK(at::equal(k.patient, at::tensor({1, 1, 2, 2, 3}, at::kLong)));
  CHECK(k.time[1].item<double>() == 192);
  CHECK(v.describe().find("5 visits of 3 patients") != std::string::npos);

  // Standardisation fitted on some rows, missing values to 0, mask appended.
  auto s = medcl::data::TabularStandardizer::fit(v.values, v.mask, {0, 1, 2, 3, 4});
  // A feature observed fewer than twice among the fitting rows is named with its count.
  CHECK_THROWS_WITH(
      medcl::data::TabularStandardizer::fit(
          at::zeros({3, 2}),
          at::tensor({1, 1, 1, 0, 1, 0}).reshape({3, 2}).to(at::kBool),
          {0, 1, 2}),
      medcl_test::Contains("fewer than two observed values among the 3 rows, got 1 for feature 1"));
  auto z = s.with_mask(v.values, v.mask);
  CHECK(z.sizes() == at::IntArrayRef({5, 28}));
  CHECK(z[1][chol].item<float>() == 0.0f);
  CHECK(z[1][14 + chol].item<float>() == 0.0f);
  CHECK(z[0][14 + chol].item<float>() == 1.0f);
  CHECK(std::abs(z.slice(1, 4, 5).mean().item<float>()) < 1e-5);

  // Non-trial patients from the baseline table join as site 1; trial ids are not duplicated.
  const auto base = d.write(
      "pbc.csv",
      "id,time,status,trt,age,sex,ascites,hepato,spiders,edema,bili,chol,albumin,copper,alk.phos,"
      "ast,"
      "trig,platelet,protime,stage\n"
      "1,400,2,1,58.0,f,1,1,1,1,14.5,261,2.6,156,1718,137.95,172,190,12.2,4\n"
      "313,1000,0,NA,60,f,NA,NA,NA,0,1.0,NA,3.5,NA,NA,NA,NA,200,11,NA\n");
  auto both = medcl::data::load_pbc_visits(seq, base, 730);
  REQUIRE(both.size() == 6);
  CHECK(both.site.back() == 1);
  CHECK(both.patient.back() == 313);
  CHECK(both.label.back() == 0);
  CHECK_FALSE(both.mask[5][0].item<bool>()); // ascites missing
}

TEST_CASE("PBC adapter: malformed input names the file and the row", "[io][adapters]") {
  Dir d;
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write("a.csv", "id,day\n1,0\n")),
      medcl_test::Contains("a.csv") && medcl_test::Contains("has no column 'futime'"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write(
          "b.csv",
          std::string(kHeader) + "1,400,5,1,58,f,0,1,1,1,1,14.5,261,2.6,1718,138,190,12.2,4\n")),
      medcl_test::Contains("status must be 0, 1 or 2, got 5 in data row 1"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write(
          "c.csv",
          std::string(kHeader) + "1,400,2,1,58,x,0,1,1,1,1,14.5,261,2.6,1718,138,190,12.2,4\n")),
      medcl_test::Contains("sex must be m/f"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write(
          "e.csv",
          std::string(kHeader) + "1,400,2,1,58,f,500,1,1,1,1,14.5,261,2.6,1718,138,190,12.2,4\n")),
      medcl_test::Contains("visit day 500 is after the end of follow-up 400"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write(
          "f.csv",
          std::string(kHeader) + "1,400,2,1,58,f,0,1,1,1,1,-1,261,2.6,1718,138,190,12.2,4\n")),
      medcl_test::Contains("bili must be > 0 to take its log"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write(
          "g.csv",
          std::string(kHeader) + "1,400,2,1,58,f,0,1,1,1,1,abc,261,2.6,1718,138,190,12.2,4\n")),
      medcl_test::Contains("g.csv") && medcl_test::Contains("abc"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write("h.csv", kHeader)), medcl_test::Contains("no visits"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits((d.path / "missing.csv").string()),
      medcl_test::Contains("missing.csv"));
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(d.write("i.csv", kHeader), "", -1),
      medcl_test::Contains("horizon_days must be > 0"));
}

TEST_CASE("PBC adapter on the real pbcseq and pbc exports", "[io][adapters]") {
  const auto seq = medcl_test::find_real_file("pbcseq.csv", {});
  const auto base = medcl_test::find_real_file("pbc.csv", {});
  if (seq.empty() || base.empty()) {
    MEDCL_SKIP("pbcseq.csv / pbc.csv not found (run ./scripts/fetch-data pbcseq)");
  }
  auto v = medcl::data::load_pbc_visits(seq, base, 730);
  // 1,945 visits of 312 trial patients + 106 baseline records of non-trial patients.
  CHECK(v.size() == 1945 + 106);
  std::set<int64_t> trial, other;
  for (int64_t i = 0; i < v.size(); ++i) {
    (v.site[static_cast<size_t>(i)] == 0 ? trial : other).insert(v.patient[static_cast<size_t>(i)]);
  }
  CHECK(trial.size() == 312);
  CHECK(other.size() == 106);
  // Cholesterol is the most often missing lab in pbcseq.
  auto observed = v.mask.to(at::kFloat).mean(0);
  CHECK(observed[5].item<float>() < observed[4].item<float>());
  CHECK(observed[4].item<float>() == 1.0f); // bilirubin always recorded
  // A corrupted copy (a row cut short) is refused with its line.
  Dir d;
  std::ifstream in(seq);
  std::string header, row;
  std::getline(in, header);
  std::getline(in, row);
  const auto bad = d.write("pbcseq.csv", header + "\n" + row.substr(0, row.size() / 2) + "\n");
  CHECK_THROWS_WITH(
      medcl::data::load_pbc_visits(bad), medcl_test::Contains("pbcseq.csv:2: expected 19 fields"));
}

TEST_CASE("Omics adapter: expression matrix and sample table", "[io][adapters]") {
  Dir d;
  const auto m =
      d.write("e.tsv", "probe\ts1\ts2\ts3\ng1\t1\t2\t3\ng2\t5\t5\t5.5\ng3\t0\t10\t-10\n");
  const auto p = d.write("p.csv", "sample_id,group,batch\ns3,b,1\ns1,a,2\ns2,a,1\n");
  auto e = medcl::data::load_expression_set(m, p);
  CHECK(e.samples == std::vector<std::string>{"s1", "s2", "s3"});
  CHECK(e.genes == std::vector<std::string>{"g1", "g2", "g3"});
  CHECK(e.values.sizes() == at::IntArrayRef({3, 3}));
  CHECK(e.values[2][0].item<float>() == 3.0f);
  // The sample table follows the matrix's order.
  CHECK(e.pheno.text("group") == std::vector<std::string>{"a", "a", "b"});
  CHECK(e.pheno.numeric("batch") == std::vector<double>{2, 1, 1});
  CHECK(e.most_variable(2) == std::vector<int64_t>{2, 0});
  std::vector<std::string> levels;
  CHECK(e.codes("group", &levels) == std::vector<int64_t>{0, 0, 1});
  CHECK(levels == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH(
      medcl::data::load_expression_set(m, d.write("q.csv", "sample_id,group\ns1,a\ns2,a\n")),
      medcl_test::Contains("sample 's3'") && medcl_test::Contains("has no row"));
  CHECK_THROWS_WITH(
      medcl::data::load_expression_set(m, d.write("r.csv", "id,group\ns1,a\n")),
      medcl_test::Contains("has no column 'sample_id'"));
  CHECK_THROWS_WITH(
      medcl::data::load_expression_set(d.write("f.tsv", "probe\ts1\ng1\tNA\n"), p),
      medcl_test::Contains("has no value for probe 'g1'"));
  CHECK_THROWS_WITH(e.most_variable(0), medcl_test::Contains("n must be in [1, 3]"));
  CHECK_THROWS_WITH(
      e.most_variable(1, {0}), medcl_test::Contains("needs at least two samples, got 1"));
}

TEST_CASE("Omics adapter on the real ALL and bladderbatch exports", "[io][adapters]") {
  const auto all_dir = medcl_test::find_real_file("expression.tsv", {});
  if (all_dir.empty()) {
    MEDCL_SKIP("expression.tsv not found (run ./scripts/fetch-data all bladderbatch)");
  }
  const char* root = std::getenv("MEDCL_DATA_DIR");
  REQUIRE(root != nullptr);
  const std::string r = root;
  auto all = medcl::data::load_expression_set(r + "/all/expression.tsv", r + "/all/pheno.csv");
  CHECK(all.size() == 128);
  CHECK(all.genes.size() == 12625);
  const auto bt = all.pheno.text("BT");
  CHECK(
      std::count_if(bt.begin(), bt.end(), [](const std::string& s) { return s[0] == 'T'; }) == 33);
  auto bladder = medcl::data::load_expression_set(
      r + "/bladderbatch/expression.tsv", r + "/bladderbatch/pheno.csv");
  CHECK(bladder.size() == 57);
  CHECK(bladder.genes.size() == 22283);
  auto batch = bladder.pheno.numeric("batch");
  CHECK(*std::max_element(batch.begin(), batch.end()) == 5);
}

TEST_CASE(
    "ECG adapter: resampling and windows with record, lead, moment and time keys",
    "[io][adapters]") {
  // A 5 Hz sine at 1000 Hz, resampled to 250 Hz, is the same sine at the new sample times (up to
  // the half-sample delay of the even-length moving average: 0.5 ms, a 0.016 error at 5 Hz).
  const double pi = std::acos(-1.0);
  auto t = at::arange(2000, at::kDouble) / 1000.0;
  auto sig = at::stack({at::sin(2 * pi * 5 * t), at::cos(2 * pi * 5 * t)}, 0);
  auto r = medcl::data::resample_signal(sig, 1000, 250);
  REQUIRE(r.sizes() == at::IntArrayRef({2, 500}));
  auto t2 =
      (at::arange(500, at::kDouble) + 0.5) * 4.0 / 1000.0 - 0.5 / 1000.0; // pixel-centre mapping
  auto expected = at::sin(2 * pi * 5 * t2).to(at::kFloat);
  CHECK((r[0].slice(0, 5, 495) - expected.slice(0, 5, 495)).abs().max().item<double>() < 0.02);
  CHECK_THROWS_WITH(
      medcl::data::resample_signal(at::zeros({5}), 100, 50), medcl_test::Contains("[channels, T]"));
  CHECK_THROWS_WITH(
      medcl::data::resample_signal(sig, 0, 50), medcl_test::Contains("rates must be > 0"));
  CHECK_THROWS_WITH(
      medcl::data::resample_signal(at::zeros({1, 3}), 1000, 250),
      medcl_test::Contains("too short for 250 Hz, got 3 sample(s) at 1000 Hz"));

  medcl::data::EcgWindows w;
  w.add_record(r, 250, 0, {"I", "II"}, 100, 50, 0.7);
  // 500 samples, split at 350: windows starting 0..250 end by 350 (train), starting 350, 400 test.
  const auto n_train = w.rows(true).size(), n_test = w.rows(false).size();
  CHECK(n_train == 2 * 6);
  CHECK(n_test == 2 * 2);
  for (int64_t i : w.rows(true)) {
    CHECK(w.time[static_cast<size_t>(i)] + 100.0 / 250 <= 350.0 / 250 + 1e-9);
  }
  for (int64_t i : w.rows(false)) {
    CHECK(w.time[static_cast<size_t>(i)] >= 350.0 / 250 - 1e-9);
  }
  // Both leads of a moment share it; the second record's moments and leads are new.
  CHECK(w.moment[0] == w.moment[1]);
  CHECK(w.lead[0] == 0);
  CHECK(w.lead[1] == 1);
  w.add_record(r.slice(0, 0, 1), 250, 7, {"MLII"}, 100, 100, 0.5);
  CHECK(w.lead.back() == 2);
  CHECK(w.record.back() == 7);
  CHECK(w.moment.back() > w.moment[n_train + n_test - 1]);
  auto k = w.keys();
  CHECK(k.patient.size(0) == w.size());
  CHECK(k.instance.size(0) == w.size());
  auto v = w.values();
  CHECK(v.sizes() == at::IntArrayRef({w.size(), 1, 100}));
  CHECK(std::abs(v[0].mean().item<double>()) < 1e-5); // standardised per window
  CHECK_THROWS_WITH(
      w.add_record(r, 250, 1, {"I"}, 100, 50), medcl_test::Contains("2 leads but 1 names"));
  CHECK_THROWS_WITH(
      w.add_record(r, 250, 1, {"I", "II"}, 1000, 50),
      medcl_test::Contains("longer than the record"));
  CHECK_THROWS_WITH(
      w.add_record(r, 250, 1, {"I", "II"}, 1, 50),
      medcl_test::Contains("window must be >= 2 and stride >= 1, got window 1 and stride 50"));
  CHECK_THROWS_WITH(
      w.add_record(r, 250, 1, {"I", "II"}, 100, 0),
      medcl_test::Contains("got window 100 and stride 0"));
  auto nan = r.clone();
  nan[0][3] = std::nan("");
  CHECK_THROWS_WITH(w.add_record(nan, 250, 1, {"I", "II"}, 100, 50), medcl_test::Contains("NaN"));
}

TEST_CASE(
    "MRI adapter: atlas labels, region words, resampling and disjoint patches",
    "[io][adapters]") {
  Dir d;
  auto names = medcl::data::read_atlas_labels(
      d.write("a.txt", "1 Precentral_L 2001\r\n2 Frontal_Sup_Orb_R 2112\r\n\r\n"));
  CHECK(names.size() == 2);
  CHECK(names.at(2) == "Frontal_Sup_Orb_R");
  CHECK(medcl::data::region_words("Frontal_Sup_Orb_R") == "frontal superior orbital right");
  CHECK(medcl::data::region_words("Cerebelum_Crus1_L") == "cerebellum crus 1 left");
  CHECK_THROWS_WITH(
      medcl::data::read_atlas_labels(d.write("b.txt", "1 A\nx\n")),
      medcl_test::Contains("b.txt:2"));
  CHECK_THROWS_WITH(
      medcl::data::read_atlas_labels(d.write("c.txt", "1 A\n1 B\n")),
      medcl_test::Contains("index 1 twice"));
  CHECK_THROWS_WITH(
      medcl::data::read_atlas_labels((d.path / "none.txt").string()),
      medcl_test::Contains("cannot open"));

  // A 0.5 mm source whose value is its x voxel index, sampled on a 1 mm grid: value 2·i.
  medcl::data::NiftiVolume src, grid;
  src.dims = {40, 20, 20};
  src.data.resize(40 * 20 * 20);
  for (int64_t z = 0; z < 20; ++z) {
    for (int64_t y = 0; y < 20; ++y) {
      for (int64_t x = 0; x < 40; ++x) {
        src.data[static_cast<size_t>(x + 40 * (y + 20 * z))] = static_cast<float>(x);
      }
    }
  }
  src.sform_code = 1;
  src.sform = {0.5, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  grid.dims = {20, 20, 20};
  grid.sform_code = 1;
  grid.sform = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  auto on_grid = medcl::data::resample_to_grid(src, grid);
  REQUIRE(on_grid.sizes() == at::IntArrayRef({20, 20, 20}));
  CHECK(on_grid[3][4][7].item<float>() == Approx(14.0f));
  auto flat = grid;
  flat.dims = {20, 20};
  CHECK_THROWS_WITH(
      medcl::data::resample_to_grid(src, flat),
      medcl_test::Contains("both images must be 3-D, got a volume of dims [40, 20, 20] and a grid "
                           "of dims [20, 20]"));
  auto singular = src;
  singular.sform = {0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  CHECK_THROWS_WITH(
      medcl::data::resample_to_grid(singular, grid),
      medcl_test::Contains("affine is singular, got a 3x3 part of determinant 0"));

  // Patches: two regions (left and right halves); checkerboard blocks of 8, patches of 4.
  auto atlas = at::zeros({16, 16, 16});
  atlas.slice(2, 0, 8).fill_(1);
  atlas.slice(2, 8, 16).fill_(2);
  auto image = at::rand({16, 16, 16});
  auto p = medcl::data::atlas_patches(image, atlas, names, 4, 2, 8);
  CHECK(p.values.size(1) == 4); // intensity + 3 position channels
  CHECK(p.region_texts[0] == "precentral left");
  // No voxel is in a training patch and a test patch.
  auto used = at::zeros({2, 16, 16, 16}, at::kInt);
  for (size_t i = 0; i < p.label.size(); ++i) {
    const auto& c = p.corner[i];
    used[p.train[i] ? 0 : 1]
        .slice(0, c[2], c[2] + 4)
        .slice(1, c[1], c[1] + 4)
        .slice(2, c[0], c[0] + 4)
        .fill_(1);
  }
  CHECK((used[0] * used[1]).sum().item<int64_t>() == 0);
  CHECK(used[0].sum().item<int64_t>() > 0);
  CHECK(used[1].sum().item<int64_t>() > 0);
  // Labels are the centre's region; patch values are the image's.
  const auto& c0 = p.corner[0];
  CHECK(at::equal(
      p.values[0][0],
      image.slice(0, c0[2], c0[2] + 4).slice(1, c0[1], c0[1] + 4).slice(2, c0[0], c0[0] + 4)));
  CHECK(p.label[0] == (c0[0] + 2 < 8 ? 0 : 1));
  CHECK_THROWS_WITH(
      medcl::data::atlas_patches(image, atlas, names, 4, 2, 2),
      medcl_test::Contains("block >= patch, got patch 4, stride 2 and block 2"));
  CHECK_THROWS_WITH(
      medcl::data::atlas_patches(image, atlas, names, 0, 2, 8),
      medcl_test::Contains("got patch 0, stride 2 and block 8"));
  CHECK_THROWS_WITH(
      medcl::data::atlas_patches(image, atlas, names, 4, 0, 8),
      medcl_test::Contains("got patch 4, stride 0 and block 8"));
  CHECK_THROWS_WITH(
      medcl::data::atlas_patches(image, at::zeros({16, 16, 16}), names, 4, 2, 8),
      medcl_test::Contains(
          "no patch has a labelled centre, got 2 region name(s), an atlas of shape [16, 16, 16], "
          "patch 4, stride 2 and block 8"));
}

TEST_CASE("ECG and MRI adapters on the real recordings and atlas", "[io][adapters]") {
  const auto dcm = medcl_test::find_real_file("waveform_ecg.dcm", {});
  const auto t1 = medcl_test::find_real_file(
      "ch2better.nii.gz", {"/usr/share/mricron/templates/ch2better.nii.gz"});
  const auto aal =
      medcl_test::find_real_file("aal.nii.gz", {"/usr/share/mricron/templates/aal.nii.gz"});
  const auto txt =
      medcl_test::find_real_file("aal.nii.txt", {"/usr/share/mricron/templates/aal.nii.txt"});
#ifdef MEDCL_TEST_HAVE_DCMTK
  if (!dcm.empty()) {
    auto wave = medcl::data::read_dicom_waveform(dcm);
    auto sig = medcl::data::resample_signal(
        medcl::data::to_tensor(wave.rhythm()), wave.rhythm().sampling_frequency, 250);
    CHECK(sig.sizes() == at::IntArrayRef({12, 2500}));
    medcl::data::EcgWindows w;
    w.add_record(sig, 250, 0, wave.rhythm().channels, 250, 125, 0.7);
    CHECK(w.lead_names.size() == 12);
    CHECK(w.rows(true).size() == 12 * 13);
  } else {
    WARN("waveform_ecg.dcm not found: ECG part skipped");
  }
#endif
#ifdef MEDCL_TEST_HAVE_NIFTI
  if (!t1.empty() && !aal.empty() && !txt.empty()) {
    auto atlas = medcl::data::read_nifti_file(aal);
    auto v = medcl::data::resample_to_grid(medcl::data::read_nifti_file(t1), atlas);
    auto lab = medcl::data::to_tensor(atlas);
    REQUIRE(v.sizes() == lab.sizes());
    // Brain regions are brighter on the T1 than the background around the head.
    const double inside = v.masked_select(lab.gt(0)).mean().item<double>();
    const double outside = v.masked_select(lab.eq(0)).mean().item<double>();
    CHECK(inside > 2 * outside);
    auto names = medcl::data::read_atlas_labels(txt);
    CHECK(names.size() == 116);
  } else {
    WARN("Colin27 / AAL files not found: MRI part skipped");
  }
#endif
  (void)dcm;
  (void)t1;
  (void)aal;
  (void)txt;
}
