#pragma once

/// \file
/// MRI adapter: an anatomical volume resampled onto an atlas's grid through both NIfTI affines,
/// the atlas's region names (and their words as text), and labelled 3-D patches split in space by a
/// checkerboard of blocks so that training and test patches share no voxel.

#include <medcl/data/nifti.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace medcl {
namespace data {

/// Samples `volume` at every voxel of `grid`'s image space (trilinear; voxel -> world through
/// grid's affine, world -> volume voxel through the inverse of volume's affine). Outside the volume
/// the value is 0.
///
/// Shape: -> [nz, ny, nx] of `grid` (float32).
inline at::Tensor resample_to_grid(const NiftiVolume& volume, const NiftiVolume& grid) {
  constexpr const char* fn = "resample_to_grid";
  TORCH_CHECK(
      volume.dims.size() >= 3 && grid.dims.size() >= 3,
      fn,
      ": both images must be 3-D, got a volume of dims ",
      at::IntArrayRef(volume.dims),
      " and a grid of dims ",
      at::IntArrayRef(grid.dims));
  auto affine = [](const NiftiVolume& v) {
    return at::tensor(std::vector<double>(v.affine().begin(), v.affine().end()), at::kDouble)
        .reshape({4, 4});
  };
  auto src = to_tensor(volume).to(at::kFloat);
  TORCH_CHECK(src.dim() == 3, fn, ": the volume must be a single 3-D image, got ", src.sizes());
  const int64_t nx = grid.dims[0], ny = grid.dims[1], nz = grid.dims[2];
  auto ii = at::arange(nx, at::kDouble), jj = at::arange(ny, at::kDouble),
       kk = at::arange(nz, at::kDouble);
  auto g = at::meshgrid({kk, jj, ii}, "ij");
  auto vox = at::stack({g[2], g[1], g[0], at::ones_like(g[0])}, -1).reshape({-1, 4});
  const auto a_src = affine(volume);
  const double det = at::linalg_det(a_src.slice(0, 0, 3).slice(1, 0, 3)).item<double>();
  TORCH_CHECK(
      std::abs(det) > 1e-12,
      fn,
      ": the volume's affine is singular, got a 3x3 part of determinant ",
      det);
  auto p = vox.mm(at::linalg_inv(a_src).mm(affine(grid)).t());
  auto norm = [](const at::Tensor& c, int64_t size) {
    return c / static_cast<double>(std::max<int64_t>(size - 1, 1)) * 2.0 - 1.0;
  };
  auto coords = at::stack(
                    {norm(p.select(1, 0), src.size(2)),
                     norm(p.select(1, 1), src.size(1)),
                     norm(p.select(1, 2), src.size(0))},
                    -1)
                    .to(at::kFloat)
                    .reshape({1, nz, ny, nx, 3});
  return at::grid_sampler(src.unsqueeze(0).unsqueeze(0), coords, 0, 0, true).squeeze(0).squeeze(0);
}

/// Region names of an atlas's label file ("index name [code]" per line, as MRIcron's
/// `aal.nii.txt`).
inline std::map<int64_t, std::string> read_atlas_labels(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK(in.good(), "read_atlas_labels: cannot open '", path, "'");
  std::map<int64_t, std::string> names;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.find_first_not_of(" \t") == std::string::npos) {
      continue;
    }
    std::stringstream ss(line);
    int64_t idx = 0;
    std::string name;
    TORCH_CHECK(
        static_cast<bool>(ss >> idx >> name),
        "read_atlas_labels: ",
        path,
        ":",
        number,
        ": expected 'index name', got '",
        line,
        "'");
    TORCH_CHECK(
        idx > 0, "read_atlas_labels: ", path, ":", number, ": index must be > 0, got ", idx);
    TORCH_CHECK(
        names.emplace(idx, name).second,
        "read_atlas_labels: ",
        path,
        ":",
        number,
        ": index ",
        idx,
        " twice");
  }
  TORCH_CHECK(!names.empty(), "read_atlas_labels: ", path, " holds no labels");
  return names;
}

/// An AAL-style region name as words: "Frontal_Sup_Orb_L" -> "frontal superior orbital left".
inline std::string region_words(const std::string& name) {
  static const std::map<std::string, std::string> words{
      {"Sup", "superior"},
      {"Mid", "middle"},
      {"Inf", "inferior"},
      {"Orb", "orbital"},
      {"Oper", "opercular"},
      {"Tri", "triangular"},
      {"Med", "medial"},
      {"L", "left"},
      {"R", "right"},
      {"Ant", "anterior"},
      {"Post", "posterior"},
      {"Rol", "rolandic"},
      {"Supp", "supplementary"},
      {"Cingulum", "cingulate"},
      {"Cerebelum", "cerebellum"},
      {"Crus1", "crus 1"},
      {"Crus2", "crus 2"}};
  std::string out, part;
  std::stringstream ss(name);
  while (std::getline(ss, part, '_')) {
    if (part.empty()) {
      continue;
    }
    auto it = words.find(part);
    std::string w = it != words.end() ? it->second : part;
    for (auto& c : w) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

/// Labelled 3-D patches of an image on an atlas grid.
struct AtlasPatches {
  /// [N, C, p, p, p]: the image patch, plus three channels with the patch centre's position in
  /// [-1, 1] when asked (left and right regions look alike).
  at::Tensor values;
  /// Class of each patch: an index into `region_ids` / `region_names`.
  std::vector<int64_t> label;
  /// Whether the patch lies in a training block (true) or a test block (false).
  std::vector<bool> train;
  /// Patch corner (x, y, z) in atlas voxels.
  std::vector<std::array<int64_t, 3>> corner;
  /// Atlas index, name and words of each class.
  std::vector<int64_t> region_ids;
  std::vector<std::string> region_names;
  std::vector<std::string> region_texts;

  std::vector<int64_t> rows(bool training) const {
    std::vector<int64_t> r;
    for (size_t i = 0; i < train.size(); ++i) {
      if (train[i] == training) {
        r.push_back(static_cast<int64_t>(i));
      }
    }
    return r;
  }
};

/// Cuts `image` [nz, ny, nx] (on the atlas grid) into patches of `patch`³ voxels every `stride`
/// voxels whose centre voxel has a region of `names` in `atlas` [nz, ny, nx] (0 = background).
/// Space is cut into `block`³ blocks coloured like a 3-D checkerboard; a patch must lie inside one
/// block (so train and test patches share no voxel) and takes its block's colour.
inline AtlasPatches atlas_patches(
    const at::Tensor& image,
    const at::Tensor& atlas,
    const std::map<int64_t, std::string>& names,
    int64_t patch,
    int64_t stride,
    int64_t block,
    bool position_channels = true) {
  constexpr const char* fn = "atlas_patches";
  TORCH_CHECK(
      image.dim() == 3 && atlas.sizes() == image.sizes(),
      fn,
      ": expected image and atlas of one 3-D shape, got ",
      image.sizes(),
      " and ",
      atlas.sizes());
  TORCH_CHECK(
      patch >= 1 && stride >= 1 && block >= patch,
      fn,
      ": need patch >= 1, stride >= 1 and block >= patch, got patch ",
      patch,
      ", stride ",
      stride,
      " and block ",
      block);
  AtlasPatches out;
  std::map<int64_t, int64_t> class_of;
  for (const auto& kv : names) {
    class_of[kv.first] = static_cast<int64_t>(out.region_ids.size());
    out.region_ids.push_back(kv.first);
    out.region_names.push_back(kv.second);
    out.region_texts.push_back(region_words(kv.second));
  }
  const int64_t nz = image.size(0), ny = image.size(1), nx = image.size(2);
  auto lab = atlas.round().to(at::kLong).contiguous();
  auto acc = lab.accessor<int64_t, 3>();
  auto img = image.to(at::kFloat);
  std::vector<at::Tensor> patches;
  for (int64_t z = 0; z + patch <= nz; z += stride) {
    for (int64_t y = 0; y + patch <= ny; y += stride) {
      for (int64_t x = 0; x + patch <= nx; x += stride) {
        const int64_t bz = z / block, by = y / block, bx = x / block;
        if ((z + patch - 1) / block != bz || (y + patch - 1) / block != by ||
            (x + patch - 1) / block != bx) {
          continue;
        }
        auto it = class_of.find(acc[z + patch / 2][y + patch / 2][x + patch / 2]);
        if (it == class_of.end()) {
          continue;
        }
        auto p =
            img.slice(0, z, z + patch).slice(1, y, y + patch).slice(2, x, x + patch).unsqueeze(0);
        if (position_channels) {
          auto pos = at::tensor(
                         {static_cast<float>((x + patch / 2.0) / nx * 2 - 1),
                          static_cast<float>((y + patch / 2.0) / ny * 2 - 1),
                          static_cast<float>((z + patch / 2.0) / nz * 2 - 1)},
                         at::kFloat)
                         .reshape({3, 1, 1, 1})
                         .expand({3, patch, patch, patch});
          p = at::cat({p, pos}, 0);
        }
        patches.push_back(p);
        out.label.push_back(it->second);
        out.train.push_back((bx + by + bz) % 2 == 0);
        out.corner.push_back({x, y, z});
      }
    }
  }
  TORCH_CHECK(
      !patches.empty(),
      fn,
      ": no patch has a labelled centre, got ",
      names.size(),
      " region name(s), an atlas of shape ",
      atlas.sizes(),
      ", patch ",
      patch,
      ", stride ",
      stride,
      " and block ",
      block);
  out.values = at::stack(patches, 0);
  return out;
}

} // namespace data
} // namespace medcl
