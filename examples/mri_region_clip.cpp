// MRI example: aligning brain-MRI patches with the names of the regions they lie in (CLIP), and
// zero-shot region classification from text on spatially held-out patches.
//
// Data (./scripts/fetch-data colin27, from Debian's mricron-data): the Colin27 T1 template (0.5 mm)
// and the AAL atlas (1 mm, 116 regions) with its region names. The T1 is resampled onto the atlas
// grid through both files' affines (NIfTI, read with libnifti).
// Samples: 12³-voxel patches (T1 intensity, plus three channels with the patch's normalised
// position, since left and right regions look alike) labelled with the AAL region at their centre;
// the name ("Frontal_Sup_L") becomes text ("frontal superior left").
// Spatial hold-out: the volume is cut into 16³ blocks coloured like a 3-D checkerboard; training
// patches lie inside "white" blocks, test patches inside "black" ones, so no voxel is shared.
// Models: CLIP (CNN3d image encoder, hashed-token text encoder, learnable scale; patches of the
// same region are positives with its name), SupCon on region labels (image encoder only), a random
// encoder. Evaluation: zero-shot accuracy (Recall@1/5 of the right name among the 116), a kNN
// probe, per hemisphere, in a report.
//
//   mri_region_clip [--data DIR] [--out DIR] [--steps N] [--smoke]

#include <medcl/augment/image.h>
#include <medcl/augment/policy.h>
#include <medcl/core/runtime.h>
#include <medcl/data/mri.h>
#include <medcl/eval/knn.h>
#include <medcl/eval/report.h>
#include <medcl/eval/retrieval.h>
#include <medcl/methods/clip.h>
#include <medcl/methods/supcon.h>
#include <medcl/nn/cnn.h>
#include <medcl/nn/text_encoder.h>
#include <medcl/train/record.h>

#include <torch/torch.h>

#include "example_common.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int64_t kPatch = 12;
constexpr int64_t kBlock = 16;

} // namespace

int main(int argc, char** argv) {
  const auto args = example::parse_args(argc, argv, "mri_region_clip", 400, 20);
  std::printf("%s\n", medcl::runtime_info().summary().c_str());
  const std::string dir = args.data + "/colin27";
  if (!std::ifstream(dir + "/ch2better.nii.gz").good() ||
      !std::ifstream(dir + "/aal.nii.gz").good()) {
    std::cerr << "mri_region_clip: Colin27/AAL files not found under " << dir
              << "; run ./scripts/fetch-data colin27 (or pass --data DIR)\n";
    return 3;
  }
  // ---- data: T1 resampled onto the atlas grid, region names, patches ----
  const auto t1 = medcl::data::read_nifti_file(dir + "/ch2better.nii.gz");
  const auto aal = medcl::data::read_nifti_file(dir + "/aal.nii.gz");
  auto t1v = medcl::data::resample_to_grid(t1, aal);
  t1v = (t1v - t1v.mean()) / t1v.std();
  const auto names = medcl::data::read_atlas_labels(dir + "/aal.nii.txt");
  const auto patches = medcl::data::atlas_patches(
      t1v, medcl::data::to_tensor(aal), names, kPatch, args.smoke ? 8 : 4, kBlock);
  const auto& region_texts = patches.region_texts;
  const auto classes = static_cast<int64_t>(patches.region_ids.size());
  const int64_t nz = t1v.size(0), ny = t1v.size(1), nx = t1v.size(2);
  auto x = patches.values; // [N, 4, 12, 12, 12]
  std::vector<int64_t> tr = patches.rows(true), te = patches.rows(false);
  std::vector<int64_t> hemisphere;
  for (int64_t c : patches.label) {
    const auto& nm = patches.region_names[static_cast<size_t>(c)];
    const auto tail = nm.size() > 2 ? nm.substr(nm.size() - 2) : std::string();
    hemisphere.push_back(tail == "_L" ? 0 : tail == "_R" ? 1 : 2);
  }
  const auto& cls = patches.label;
  auto y = at::tensor(cls, at::kLong);
  auto tr_idx = at::tensor(tr, at::kLong), te_idx = at::tensor(te, at::kLong);
  std::printf(
      "data: T1 resampled to the AAL grid %lldx%lldx%lld, %lld regions; %lld patches of %lld^3 "
      "(%zu train, %zu "
      "test, spatially disjoint)\n",
      static_cast<long long>(nx),
      static_cast<long long>(ny),
      static_cast<long long>(nz),
      static_cast<long long>(classes),
      static_cast<long long>(x.size(0)),
      static_cast<long long>(kPatch),
      tr.size(),
      te.size());

  medcl::Report report;
  report.set_command_line(argc, argv);
  auto corpus = medcl::Json::object();
  corpus["name"] = "Colin27 T1 MRI template with the AAL atlas (116 regions) and its region names";
  corpus["source"] = "Debian package mricron-data (scripts/fetch-data colin27)";
  corpus["patches"] = static_cast<int64_t>(x.size(0));
  corpus["patch"] =
      "12^3 voxels at 1 mm: T1 intensity + 3 position channels; label: AAL region at the centre";
  report.set_corpus(corpus);
  for (const char* file : {"ch2better.nii.gz", "aal.nii.gz", "aal.nii.txt"}) {
    report.add_data_file(dir + "/" + file, std::string("colin27/") + file);
  }
  report.set_split_rule(
      "spatial: 16^3-voxel blocks in a 3-D checkerboard; training patches inside even blocks, "
      "test patches inside odd blocks (one subject: the split is spatial, not by patient)");
  report.add_split("train", 1, static_cast<int64_t>(tr.size()));
  report.add_split("test", 1, static_cast<int64_t>(te.size()));
  report.set_leakage_check(
      true, "no patch crosses a block boundary, so train and test share no voxel");

  using namespace medcl::augment;
  auto policy = Policy(
      Modality::Image3D,
      std::make_shared<Sequence>(std::vector<TransformPtr>{
          std::make_shared<BrightnessContrast>(0.1, 0.1), std::make_shared<GaussianNoise>(0.05)}),
      31);
  // The position channels must not be augmented: the policy sees the intensity channel only.
  auto augment = [&](const at::Tensor& b) {
    auto v = policy.views(Batch(b.slice(1, 0, 1)), 1)[0].values;
    return at::cat({v, b.slice(1, 1, 4)}, 1);
  };
  auto make_image = [] { return medcl::CNN3d(medcl::CNNOptions(4, 128).widths({16, 32, 64})); };
  const int64_t batch = 128;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  auto trainer_options =
      medcl::train::TrainerOptions(args.steps)
          .optimizer(medcl::train::OptimizerOptions().lr(2e-3).weight_decay(1e-4))
          .warmup_steps(std::max<int64_t>(1, args.steps / 10))
          .progress(false)
          .seed(5);
  // CLIP
  medcl::train::seed_everything(5);
  medcl::CLIP<medcl::CNN3d, medcl::TextEncoder> clip(
      make_image(),
      medcl::TextEncoder(medcl::TextEncoderOptions(4096, 128)),
      medcl::CLIPOptions(128, 128).embed_dim(64));
  medcl::train::Trainer clip_trainer(clip, trainer_options);
  auto name_tokens = medcl::HashTokenizer(4096).tokenize(region_texts, 16); // [C, 16]
  clip_trainer.fit([&](int64_t) {
    auto pick =
        tr_idx.index_select(0, at::randperm(tr_idx.size(0), gen, at::kLong).slice(0, 0, batch));
    medcl::MethodBatch b;
    b.views = {augment(x.index_select(0, pick))};
    auto c = y.index_select(0, pick);
    b.paired = name_tokens.index_select(0, c);
    b.keys.study = c; // patches of one region share its name: all are positives with it
    return b;
  });
  medcl::train::record_pretraining(
      report,
      clip,
      clip_trainer,
      {policy.describe(),
       "CNN3d(4 channels, stages 16-32-64, D=128) + TextEncoder(hashed words and trigrams, 4096 "
       "ids, D=128)",
       "cross-modal: a patch and the name of its AAL region; patches of the same region share the "
       "name (positives)"},
      "CLIP");
  std::printf(
      "pretrained CLIP   loss %.3f -> %.3f\n",
      clip_trainer.losses().front(),
      clip_trainer.losses().back());
  // SupCon on region labels
  medcl::train::seed_everything(5);
  medcl::SupCon<medcl::CNN3d> supcon(
      make_image(), medcl::SupConOptions(128).hidden_dim(128).projection_dim(32));
  medcl::train::Trainer sup_trainer(supcon, trainer_options);
  sup_trainer.fit([&](int64_t) {
    auto pick =
        tr_idx.index_select(0, at::randperm(tr_idx.size(0), gen, at::kLong).slice(0, 0, batch));
    medcl::MethodBatch b;
    auto xb = x.index_select(0, pick);
    b.views = {augment(xb), augment(xb)};
    b.keys.label = y.index_select(0, pick);
    return b;
  });
  medcl::train::record_pretraining(
      report,
      supcon,
      sup_trainer,
      {policy.describe(), "CNN3d(4 channels, stages 16-32-64, D=128)", ""},
      "SupCon");
  std::printf(
      "pretrained SupCon loss %.3f -> %.3f\n",
      sup_trainer.losses().front(),
      sup_trainer.losses().back());
  medcl::train::seed_everything(5);
  medcl::CLIP<medcl::CNN3d, medcl::TextEncoder> untrained(
      make_image(),
      medcl::TextEncoder(medcl::TextEncoderOptions(4096, 128)),
      medcl::CLIPOptions(128, 128).embed_dim(64));

  // ---- evaluation ----
  torch::NoGradGuard no_grad;
  clip.eval();
  supcon.eval();
  untrained.eval();
  const auto yte = y.index_select(0, te_idx);
  // The untrained encoders are baselines: no pretraining.
  report.set_model_pretraining("untrained CLIP", "");
  report.set_model_pretraining("untrained encoder", "");
  const std::string task = "AAL region of held-out patches (116 classes)";
  int bad = 0;
  auto zero_shot = [&](medcl::CLIP<medcl::CNN3d, medcl::TextEncoder>& m, const std::string& model) {
    auto img = m.embed_image(x.index_select(0, te_idx));
    auto txt = m.embed_text(name_tokens);
    auto ids = at::arange(classes, at::kLong);
    auto r = medcl::eval::recall_at_k(img, txt, yte, ids, {1, 5});
    using medcl::eval::Result;
    const auto n_test = te_idx.size(0);
    report.add_result(Result(task, model, "zero-shot accuracy", r[0])
                          .n(n_test)
                          .detail("Recall@1 of the region name"));
    report.add_result(Result(task, model, "zero-shot top-5", r[1]).n(n_test).detail("Recall@5"));
    // Per hemisphere.
    for (int h = 0; h < 3; ++h) {
      std::vector<int64_t> rows;
      for (int64_t k = 0; k < te_idx.size(0); ++k) {
        if (hemisphere[static_cast<size_t>(te[static_cast<size_t>(k)])] == h) {
          rows.push_back(k);
        }
      }
      if (rows.empty()) {
        continue;
      }
      auto ri = at::tensor(rows, at::kLong);
      auto rh =
          medcl::eval::recall_at_k(img.index_select(0, ri), txt, yte.index_select(0, ri), ids, {1});
      const char* hn[] = {"left", "right", "midline (vermis)"};
      report.add_result(Result(task, model, "zero-shot accuracy", rh[0])
                            .n(static_cast<int64_t>(rows.size()))
                            .subgroup_attribute("hemisphere")
                            .subgroup(hn[h]));
    }
    return r;
  };
  auto knn = [&](const at::Tensor& ztr, const at::Tensor& zte) {
    auto p = medcl::eval::knn_predict(
        ztr, y.index_select(0, tr_idx), zte, classes, medcl::eval::KnnOptions().k(10));
    return p.argmax(1).eq(yte).to(at::kDouble).mean().item<double>();
  };
  auto zc = zero_shot(clip, "CLIP");
  auto zr = zero_shot(untrained, "untrained CLIP");
  const double knn_clip =
      knn(clip.embed_image(x.index_select(0, tr_idx)), clip.embed_image(x.index_select(0, te_idx)));
  const double knn_sup =
      knn(supcon.embed(x.index_select(0, tr_idx)), supcon.embed(x.index_select(0, te_idx)));
  const double knn_rand =
      knn(untrained.embed_image(x.index_select(0, tr_idx)),
          untrained.embed_image(x.index_select(0, te_idx)));
  {
    using medcl::eval::Result;
    const auto n_test = te_idx.size(0);
    report.add_result(Result(task, "CLIP", "kNN accuracy", knn_clip).n(n_test).detail("k = 10"));
    report.add_result(Result(task, "SupCon", "kNN accuracy", knn_sup).n(n_test).detail("k = 10"));
    report.add_result(
        Result(task, "untrained encoder", "kNN accuracy", knn_rand).n(n_test).detail("k = 10"));
    report.add_result(Result(task, "", "chance accuracy", 1.0 / static_cast<double>(classes))
                          .detail("1 / regions"));
  }
  std::printf(
      "\n%-20s %-20s %-16s %-14s\n",
      "model",
      "zero-shot accuracy",
      "zero-shot top-5",
      "kNN accuracy");
  std::printf("%-20s %-20.3f %-16.3f %-14.3f\n", "CLIP", zc[0], zc[1], knn_clip);
  std::printf("%-20s %-20s %-16s %-14.3f\n", "SupCon", "-", "-", knn_sup);
  std::printf("%-20s %-20.3f %-16.3f %-14.3f\n", "untrained", zr[0], zr[1], knn_rand);
  std::printf("chance %.4f\n", 1.0 / static_cast<double>(classes));
  for (double v : {zc[0], zc[1], zr[0], knn_clip, knn_sup, knn_rand}) {
    bad += std::isfinite(v) ? 0 : 1;
  }
  const auto files = report.write(args.out + "/report");
  std::printf("report: %s (one page: %s)\n", files.markdown_path.c_str(), files.html_path.c_str());
  // One subject, a multi-class task: external validation and calibration do not apply here.
  bad += example::missing_checklist_items(files.json_path, {"calibration", "external_validation"});
  if (bad > 0) {
    return 1;
  }
  std::printf("mri_region_clip ok\n");
  return 0;
}
