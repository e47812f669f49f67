// The InfoNCE family across processes (NT-Xent, InfoNCE with and without a queue, SupCon, CLIP):
// on 2 and 4 real processes with uneven batches (one rank empty at 4), every loss, on the dense
// and the tiled path, with keyed rules whose patients sit on several ranks and with reweighted
// negatives, gives shares that sum to the one-process loss on the concatenated batch, and
// gradients (after the parameter all-reduce) equal to the one-process gradients: double to
// 1e-12, float32 to 1e-5. A gather whose backward is not summed over the ranks (the negative
// control) fails the same comparison. Ranks that disagree, or a rank whose input is refused,
// stop every rank with a named error.

#include "catch.h"
#include "dist/launcher.h"
#include "dist/worker.h"
#include "support.h"

#include <medcl/dist/process_group.h>
#include <medcl/losses/clip.h>
#include <medcl/losses/info_nce.h>
#include <medcl/losses/nt_xent.h>
#include <medcl/losses/supcon.h>

#include <torch/torch.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace {

namespace F = medcl::functional;
using medcl::EnginePath;
using medcl::PairingStrategy;
using medcl::SampleKeys;
using medcl::dist::ProcessGroup;
using medcl::dist::ProcessGroupOptions;
using medcl::dist::Store;
using medcl_test::all_exited_ok;
using medcl_test::Contains;
using medcl_test::env_or;
using medcl_test::load_tensors;
using medcl_test::offset_of;
using medcl_test::rel_err;
using medcl_test::total;
using medcl_test::worker_group;
using medcl_test::write_text;

std::vector<int64_t> rows_per_rank(int64_t world) {
  return world == 2 ? std::vector<int64_t>{5, 3} : std::vector<int64_t>{3, 0, 4, 2};
}

// The same on every process (one seed, one build).
struct Inputs {
  at::Tensor x;         // [N, 5]
  at::Tensor noise;     // [N, 5]: the second view's perturbation
  at::Tensor w;         // [5, 4]
  at::Tensor log_scale; // CLIP's learnable log logit scale
  SampleKeys keys;      // patients, labels, studies and times spread over the ranks
  at::Tensor queue;     // [7, 4]: MoCo's queue, the same on every rank
  SampleKeys queue_keys;
};

Inputs make_inputs(int64_t n, at::ScalarType dtype) {
  torch::manual_seed(4321);
  Inputs in;
  in.x = torch::randn({n, 5}, at::kDouble).to(dtype);
  in.noise = (0.3 * torch::randn({n, 5}, at::kDouble)).to(dtype);
  in.w = torch::randn({5, 4}, at::kDouble).to(dtype);
  in.log_scale = torch::full({}, 1.2, at::kDouble).to(dtype);
  in.queue = torch::randn({7, 4}, at::kDouble).to(dtype);
  const auto idx = torch::arange(n, at::kLong);
  in.keys.patient = idx.remainder(3);
  in.keys.label = idx.remainder(2);
  in.keys.study = idx.remainder(4);
  in.keys.time = idx.to(at::kDouble) * 1.5;
  in.queue_keys.patient = torch::arange(7, at::kLong).remainder(4);
  return in;
}

struct CaseInput {
  at::Tensor z0;
  at::Tensor z1;
  SampleKeys keys;
  at::Tensor scale;
  const Inputs* in = nullptr;
  ProcessGroup group;
  medcl::SimilarityEngineOptions engine;
};

using CaseFn = std::function<at::Tensor(const CaseInput&)>;

struct Case {
  std::string name;
  CaseFn fn;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  auto nt = [](const CaseInput& i) {
    return medcl::NTXentLossOptions().temperature(0.5).engine(i.engine).group(i.group);
  };
  auto nce = [](const CaseInput& i) {
    return medcl::InfoNCELossOptions().temperature(0.3).engine(i.engine).group(i.group);
  };
  auto sup = [](const CaseInput& i) {
    return medcl::SupConLossOptions().temperature(0.4).base_temperature(0.5).engine(i.engine).group(
        i.group);
  };
  auto clip = [](const CaseInput& i) {
    return medcl::CLIPLossOptions().engine(i.engine).group(i.group);
  };
  c.push_back({"NT-Xent", [=](const CaseInput& i) { return F::nt_xent_loss(i.z0, i.z1, nt(i)); }});
  c.push_back({"NT-Xent, same patient, debiased", [=](const CaseInput& i) {
                 auto o = nt(i)
                              .pairing(PairingStrategy::same_patient())
                              .weighting(medcl::NegativeWeighting::debiased(0.1));
                 return F::nt_xent_loss(i.z0, i.z1, i.keys, o);
               }});
  c.push_back({"NT-Xent, same patient excluded, hard", [=](const CaseInput& i) {
                 auto o = nt(i)
                              .pairing(PairingStrategy::instance().exclude_same_patient())
                              .weighting(medcl::NegativeWeighting::hard(1.0));
                 return F::nt_xent_loss(i.z0, i.z1, i.keys, o);
               }});
  c.push_back({"InfoNCE in batch", [=](const CaseInput& i) {
                 return F::info_nce_loss(i.z0, i.z1, at::Tensor(), nce(i));
               }});
  c.push_back({"InfoNCE in batch, same patient excluded", [=](const CaseInput& i) {
                 auto o = nce(i).pairing(PairingStrategy::none().exclude_same_patient());
                 return F::info_nce_loss(i.z0, i.z1, at::Tensor(), i.keys, SampleKeys(), o);
               }});
  c.push_back({"InfoNCE queue, same patient excluded, hard debiased", [=](const CaseInput& i) {
                 auto o = nce(i)
                              .pairing(PairingStrategy::none().exclude_same_patient())
                              .weighting(medcl::NegativeWeighting::hard_debiased(0.5, 0.1));
                 SampleKeys q;
                 q.patient = i.keys.patient;
                 return F::info_nce_loss(i.z0, i.z1, i.in->queue, q, i.in->queue_keys, o);
               }});
  c.push_back({"SupCon labels", [=](const CaseInput& i) {
                 return F::supcon_loss(at::stack({i.z0, i.z1}, 1), i.keys.label, sup(i));
               }});
  c.push_back({"SupCon views", [=](const CaseInput& i) {
                 return F::supcon_loss(at::stack({i.z0, i.z1}, 1), at::Tensor(), sup(i));
               }});
  c.push_back({"SupCon temporal neighbours", [=](const CaseInput& i) {
                 auto o = sup(i).pairing(PairingStrategy::temporal_neighbours(3.0));
                 return F::supcon_loss(at::stack({i.z0, i.z1}, 1), i.keys, o);
               }});
  c.push_back(
      {"CLIP", [=](const CaseInput& i) { return F::clip_loss(i.z0, i.z1, i.scale, clip(i)); }});
  c.push_back({"CLIP, same study, hard", [=](const CaseInput& i) {
                 auto o = clip(i)
                              .pairing(PairingStrategy::cross_modal(medcl::Key::Study))
                              .weighting(medcl::NegativeWeighting::hard(0.5));
                 return F::clip_loss(i.z0, i.z1, i.scale, i.keys, i.keys, o);
               }});
  return c;
}

std::vector<medcl::SimilarityEngineOptions> paths() {
  return {
      medcl::SimilarityEngineOptions().path(EnginePath::Dense),
      medcl::SimilarityEngineOptions().path(EnginePath::Tiled).tile_size(3)};
}

at::Tensor grad_or_zeros(const at::Tensor& t) {
  return t.grad().defined() ? t.grad().clone() : at::zeros_like(t);
}

// One case on rows [offset, offset + rows) of the inputs: {loss, x grad, w grad, log-scale grad},
// the parameter gradients all-reduced over the group (the data-parallel parameter update).
std::vector<at::Tensor> run_case(
    const Case& c,
    const Inputs& in,
    const medcl::SimilarityEngineOptions& engine,
    int64_t offset,
    int64_t rows,
    const ProcessGroup& group) {
  auto x = in.x.narrow(0, offset, rows).clone().requires_grad_(true);
  auto w = in.w.clone().requires_grad_(true);
  auto s = in.log_scale.clone().requires_grad_(true);
  CaseInput i;
  i.z0 = torch::tanh(x.mm(w));
  i.z1 = torch::tanh((x + in.noise.narrow(0, offset, rows)).mm(w));
  i.keys = in.keys.index_select(torch::arange(offset, offset + rows, at::kLong));
  i.scale = s.exp();
  i.in = &in;
  i.group = group;
  i.engine = engine;
  auto loss = c.fn(i);
  loss.backward();
  auto wg = grad_or_zeros(w);
  auto sg = grad_or_zeros(s);
  group.all_reduce(wg);
  group.all_reduce(sg);
  return {loss.detach(), grad_or_zeros(x), wg, sg};
}

// Every case on both paths; then, with MEDCL_DIST_CONTROL=1, NT-Xent, SupCon and CLIP again with
// the negative-control gather.
void losses_scenario(const std::string& dir) {
  const auto group = worker_group(dir);
  const auto dtype = env_or("MEDCL_DIST_DTYPE", "double") == "float" ? at::kFloat : at::kDouble;
  const auto rows = rows_per_rank(group.size());
  const auto in = make_inputs(total(rows), dtype);
  const int64_t offset = offset_of(rows, group.rank());
  std::vector<at::Tensor> out;
  for (const auto& engine : paths()) {
    for (const auto& c : cases()) {
      for (auto& t : run_case(c, in, engine, offset, rows[group.rank()], group)) {
        out.push_back(t);
      }
    }
  }
  if (env_or("MEDCL_DIST_CONTROL", "0") == "1") {
    medcl::detail::negative_control_local_gather() = true;
    const auto all = cases();
    for (size_t k : {size_t(0), size_t(7), size_t(9)}) {
      for (auto& t : run_case(all[k], in, paths()[0], offset, rows[group.rank()], group)) {
        out.push_back(t);
      }
    }
    medcl::detail::negative_control_local_gather() = false;
  }
  torch::save(out, dir + "/losses." + std::to_string(group.rank()) + ".pt");
}

// Each step records its outcome on every rank: "ok" or the error's message.
void mismatch_scenario(const std::string& dir) {
  const auto group = worker_group(dir);
  const int64_t rank = group.rank();
  const bool odd = rank == group.size() - 1;
  auto z = torch::randn({3, 4}, at::kDouble);
  auto step = [&](const std::string& name, const std::function<void()>& f) {
    std::string outcome = "ok";
    try {
      f();
    } catch (const c10::Error& e) {
      outcome = e.what_without_backtrace();
    }
    write_text(dir + "/step." + name + "." + std::to_string(rank) + ".txt", outcome);
  };
  step("temperature", [&]() {
    F::nt_xent_loss(
        z, z + 0.1, medcl::NTXentLossOptions().temperature(odd ? 0.2 : 0.1).group(group));
  });
  step("embedding", [&]() {
    auto y = odd ? torch::randn({3, 5}, at::kDouble) : z;
    F::nt_xent_loss(y, y + 0.1, medcl::NTXentLossOptions().group(group));
  });
  step("weighting", [&]() {
    auto o = medcl::SupConLossOptions().group(group).weighting(
        odd ? medcl::NegativeWeighting::hard(1.0) : medcl::NegativeWeighting::uniform());
    F::supcon_loss(at::stack({z, z + 0.1}, 1), at::Tensor(), o);
  });
  step("nan", [&]() {
    auto y = z.clone();
    if (odd) {
      y[0][0] = std::nan("");
    }
    F::clip_loss(y, z, 10.0, medcl::CLIPLossOptions().group(group));
  });
  step("keys", [&]() {
    SampleKeys k;
    k.patient = torch::arange(3, at::kLong);
    if (!odd) {
      k.study = torch::arange(3, at::kLong);
    }
    auto o = medcl::NTXentLossOptions().group(group).pairing(PairingStrategy::same_patient());
    F::nt_xent_loss(z, z + 0.1, k, o);
  });
  step("too_large", [&]() {
    // This rank can take 1000 bytes only: 3 x 12 rows x 4 x 8 bytes do not fit.
    if (odd) {
      ::setenv("MEDCL_GATHER_LIMIT_BYTES", "1000", 1);
    }
    try {
      F::supcon_loss(
          at::stack({z, z + 0.1}, 1), at::Tensor(), medcl::SupConLossOptions().group(group));
    } catch (...) {
      ::unsetenv("MEDCL_GATHER_LIMIT_BYTES");
      throw;
    }
    ::unsetenv("MEDCL_GATHER_LIMIT_BYTES");
  });
  step("after", [&]() {
    auto l = F::nt_xent_loss(z, z + 0.1, medcl::NTXentLossOptions().group(group));
    auto all = group.all_gather(l.reshape({1}));
    TORCH_CHECK(all.size(0) == group.size(), "wrong result");
  });
  // NT-Xent has now learnt its capacity: its next agreements carry the rows, and the same
  // disagreements still stop every rank with the same errors.
  step("embedding_learnt", [&]() {
    auto y = odd ? torch::randn({3, 5}, at::kDouble) : z;
    F::nt_xent_loss(y, y + 0.1, medcl::NTXentLossOptions().group(group));
  });
  step("nan_learnt", [&]() {
    auto y = z.clone();
    if (odd) {
      y[1][1] = std::nan("");
    }
    F::nt_xent_loss(y, z, medcl::NTXentLossOptions().group(group));
  });
  step("after_learnt", [&]() {
    auto l = F::nt_xent_loss(z, z + 0.1, medcl::NTXentLossOptions().group(group));
    TORCH_CHECK(std::isfinite(l.item<double>()), "wrong result");
  });
}

// NT-Xent called again and again with other splits of the global batch, so that its agreement
// carries the rows (a split that fits the capacity learnt at the call before), or does not (a
// rank's rows outgrow it: the rows follow in a second exchange), or a rank has none: every
// call's shares sum to the one-process loss and the input gradients are the one-process ones
// (double, 1e-12), and the capacity is what the call before left.
void capacity_scenario(const std::string& dir) {
  const auto group = worker_group(dir);
  const int64_t world = group.size();
  const int64_t rank = group.rank();
  const std::vector<std::vector<int64_t>> splits = world == 2
      ? std::vector<std::vector<int64_t>>{{5, 3}, {5, 3}, {2, 7}, {4, 5}, {3, 0}, {1, 1}}
      : std::vector<std::vector<int64_t>>{
            {3, 0, 4, 2}, {3, 0, 4, 2}, {1, 6, 1, 1}, {2, 2, 2, 2}, {0, 3, 1, 0}};
  const auto opts = medcl::NTXentLossOptions().temperature(0.5);
  for (size_t k = 0; k < splits.size(); ++k) {
    const auto& rows = splits[k];
    const int64_t n = total(rows);
    const int64_t offset = offset_of(rows, rank);
    const auto in = make_inputs(n, at::kDouble);
    auto x = in.x.narrow(0, offset, rows[rank]).clone().requires_grad_(true);
    auto noise = in.noise.narrow(0, offset, rows[rank]);
    auto loss = F::nt_xent_loss(
        torch::tanh(x.mm(in.w)),
        torch::tanh((x + noise).mm(in.w)),
        medcl::NTXentLossOptions(opts).group(group));
    loss.backward();
    auto sum = loss.detach().clone().reshape({1});
    group.all_reduce(sum);
    auto xa = in.x.clone().requires_grad_(true);
    auto ref =
        F::nt_xent_loss(torch::tanh(xa.mm(in.w)), torch::tanh((xa + in.noise).mm(in.w)), opts);
    ref.backward();
    TORCH_CHECK(
        rel_err(sum[0], ref) < 1e-12,
        "split ",
        k,
        ": loss ",
        sum[0].item<double>(),
        " vs ",
        ref.item<double>());
    if (rows[rank] > 0) {
      const double err = rel_err(grad_or_zeros(x), xa.grad().narrow(0, offset, rows[rank]));
      TORCH_CHECK(err < 1e-12, "split ", k, ": input gradient relative error ", err);
    }
    // What the next call may carry: this call's rows per rank (two views of each sample) where
    // the padding stays within twice the rows.
    const int64_t most = *std::max_element(rows.begin(), rows.end());
    const auto capacity = medcl::dist::detail::gather_capacity(group, "nt_xent_loss");
    const bool carries = world * most <= 2 * n;
    TORCH_CHECK(
        capacity.rows == (carries ? 2 * most : 0) && capacity.row_bytes == (carries ? 4 * 8 : 0),
        "split ",
        k,
        ": capacity ",
        capacity.rows,
        " rows of ",
        capacity.row_bytes,
        " bytes");
  }
  write_text(dir + "/capacity." + std::to_string(rank) + ".txt", "ok");
}

// Compares the workers' results in `dir` with the one-process computation.
void compare_losses(const std::string& dir, int world, at::ScalarType dtype, bool control);

void check_losses(int world, at::ScalarType dtype, bool control) {
  medcl_test::TempDir dir;
  medcl_test::Launch l;
  l.world_size = world;
  l.dir = dir.path.string();
  l.env["MEDCL_DIST_SCENARIO"] = "losses";
  l.env["MEDCL_DIST_DIR"] = dir.path.string();
  l.env["MEDCL_DIST_DTYPE"] = dtype == at::kFloat ? "float" : "double";
  l.env["MEDCL_DIST_CONTROL"] = control ? "1" : "0";
  l.deadline = std::chrono::seconds(240);
  const auto exits = medcl_test::launch_workers(l);
  for (const auto& e : exits) {
    INFO(medcl_test::all_logs(exits));
    REQUIRE(e.code == 0);
  }
  compare_losses(dir.path.string(), world, dtype, control);
}

void compare_losses(const std::string& dir, int world, at::ScalarType dtype, bool control) {
  std::vector<std::vector<at::Tensor>> results;
  for (int r = 0; r < world; ++r) {
    results.push_back(load_tensors(dir + "/losses." + std::to_string(r) + ".pt"));
  }
  const auto rows = rows_per_rank(world);
  const int64_t n = total(rows);
  const auto in = make_inputs(n, dtype);
  const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
  const auto all = cases();
  size_t at_result = 0;
  // Compares the ranks' results at `at` with the one-process case (the parameter gradients only
  // when `parameters`); returns the input gradient's relative error.
  auto compare =
      [&](const Case& c, const medcl::SimilarityEngineOptions& engine, size_t at, bool parameters) {
        const auto ref = run_case(c, in, engine, 0, n, ProcessGroup());
        auto loss = results[0][at].clone();
        std::vector<at::Tensor> xg;
        for (int r = 0; r < world; ++r) {
          if (r > 0) {
            loss += results[r][at];
          }
          xg.push_back(results[r][at + 1]);
          CHECK(results[r][at].scalar_type() == ref[0].scalar_type());
          if (!parameters) {
            continue;
          }
          // The all-reduced parameter gradients are the one-process ones on every rank.
          CHECK(rel_err(results[r][at + 2], ref[2]) < tol);
          if (ref[3].abs().item<double>() > 0) {
            CHECK(rel_err(results[r][at + 3], ref[3]) < tol);
          }
        }
        CHECK(rel_err(loss, ref[0]) < tol);
        return rel_err(torch::cat(xg), ref[1]);
      };
  for (const auto& engine : paths()) {
    for (const auto& c : all) {
      INFO(
          c.name << ", " << (engine.path() == EnginePath::Dense ? "dense" : "tiled") << ", "
                 << world << " ranks, " << (dtype == at::kDouble ? "double" : "float32"));
      CHECK(compare(c, engine, at_result, true) < tol);
      at_result += 4;
    }
  }
  if (control) {
    // The negative control: the same forward, but without the sum over the ranks the input
    // gradients are not the one-process ones.
    for (size_t k : {size_t(0), size_t(7), size_t(9)}) {
      INFO("negative control, " << all[k].name);
      const double err = compare(all[k], paths()[0], at_result, false);
      INFO("relative error of the input gradient " << err);
      CHECK(err > 1e-2);
      at_result += 4;
    }
  }
  CHECK(at_result == results[0].size());
}

} // namespace

TEST_CASE("medcl-dist-worker", "[.][dist-worker]") {
  const std::string scenario = env_or("MEDCL_DIST_SCENARIO", "");
  const std::string dir = env_or("MEDCL_DIST_DIR", "");
  REQUIRE_FALSE(dir.empty());
  if (scenario == "losses") {
    losses_scenario(dir);
  } else if (scenario == "mismatch") {
    mismatch_scenario(dir);
  } else if (scenario == "capacity") {
    capacity_scenario(dir);
  } else {
    FAIL("unknown scenario " << scenario);
  }
}

TEST_CASE(
    "the InfoNCE family on 2 ranks equals one process (double), with a negative control",
    "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_losses(2, at::kDouble, true);
}

TEST_CASE(
    "the InfoNCE family on 4 ranks, one of them empty, equals one process (double)",
    "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_losses(4, at::kDouble, false);
}

TEST_CASE("the InfoNCE family on 2 ranks equals one process (float32)", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  check_losses(2, at::kFloat, false);
}

TEST_CASE("losses whose ranks disagree stop every rank with a named error", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  medcl_test::TempDir dir;
  medcl_test::Launch l;
  l.world_size = 2;
  l.dir = dir.path.string();
  l.env["MEDCL_DIST_SCENARIO"] = "mismatch";
  l.env["MEDCL_DIST_DIR"] = dir.path.string();
  l.deadline = std::chrono::seconds(120);
  const auto exits = medcl_test::launch_workers(l);
  for (const auto& e : exits) {
    INFO(medcl_test::all_logs(exits));
    REQUIRE(e.code == 0);
  }
  auto outcome = [&](const std::string& step, int rank) {
    return medcl_test::read_text_file(
        dir.path.string() + "/step." + step + "." + std::to_string(rank) + ".txt");
  };
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    CHECK_THAT(outcome("temperature", r), Contains("the ranks disagree on the temperature"));
    CHECK_THAT(outcome("temperature", r), Contains("rank 0 has 0.1, rank 1 has 0.2"));
    CHECK_THAT(outcome("embedding", r), Contains("disagree on the embedding size"));
    CHECK_THAT(outcome("weighting", r), Contains("disagree on the negative weighting"));
    CHECK_THAT(outcome("keys", r), Contains("disagree on the sample keys"));
    CHECK_THAT(outcome("too_large", r), Contains("the gathered batch is too large: 12 rows"));
    CHECK_THAT(outcome("too_large", r), Contains("MiB that rank 1 has available"));
    CHECK(outcome("after", r) == "ok");
    CHECK_THAT(outcome("embedding_learnt", r), Contains("disagree on the embedding size"));
    CHECK(outcome("after_learnt", r) == "ok");
  }
  CHECK_THAT(outcome("nan_learnt", 1), Contains("z0"));
  CHECK_THAT(outcome("nan_learnt", 0), Contains("rank 1 refused its input"));
  CHECK_THAT(outcome("nan", 1), Contains("image"));
  CHECK_THAT(outcome("nan", 0), Contains("rank 1 refused its input"));
}

TEST_CASE(
    "NT-Xent's agreement carries the rows once it has learnt their size, on 2 and 4 ranks",
    "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  const int world = GENERATE(2, 4);
  INFO("world size " << world);
  medcl_test::TempDir dir;
  medcl_test::Launch l;
  l.world_size = world;
  l.dir = dir.path.string();
  l.env["MEDCL_DIST_SCENARIO"] = "capacity";
  l.env["MEDCL_DIST_DIR"] = dir.path.string();
  l.deadline = std::chrono::seconds(120);
  const auto exits = medcl_test::launch_workers(l);
  INFO(medcl_test::all_logs(exits));
  REQUIRE(all_exited_ok(exits));
  for (int r = 0; r < world; ++r) {
    CHECK(
        medcl_test::read_text_file(dir.path.string() + "/capacity." + std::to_string(r) + ".txt") ==
        "ok");
  }
}

TEST_CASE("the InfoNCE family on 2 ranks launched by torchrun --no_python", "[dist]") {
  if (!medcl::dist::available()) {
    MEDCL_SKIP("medcl was built without medcl::dist (libgloo-dev missing at configure time)");
  }
  if (std::system("command -v torchrun > /dev/null 2>&1") != 0) {
    MEDCL_SKIP("torchrun not found (Debian: python3-torch)");
  }
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  REQUIRE(len > 0);
  self[len] = '\0';
  // --standalone: torchrun's c10d rendezvous on a free port, rank 0 hosts the TCPStore; without
  // it (static rendezvous) the ranks use the store of torchrun's agent.
  const auto mode = GENERATE(std::string("--standalone"), std::string("--master_port="));
  medcl_test::TempDir dir;
  const std::string d = dir.path.string();
  std::string rdzv = mode;
  if (mode != "--standalone") {
    rdzv = mode + std::to_string(medcl_test::free_loopback_port()) + " --master_addr=127.0.0.1";
  }
  const std::string cmd = "cd '" + d +
      "' && MEDCL_DIST_SCENARIO=losses MEDCL_DIST_STORE=env MEDCL_DIST_DTYPE=double "
      "MEDCL_DIST_CONTROL=0 MEDCL_DIST_DIR='" +
      d + "' OMP_NUM_THREADS=1 timeout 200 torchrun " + rdzv +
      // --redirects and --tee given: torch 1.13's defaults ("0") parse to None on Python 3.11.
      " --nnodes=1 --nproc_per_node=2 --redirects=2 --tee=2 --log_dir=torchrun-logs --no_python '" +
      std::string(self) + "' medcl-dist-worker > torchrun.log 2>&1";
  INFO(cmd);
  const int status = std::system(cmd.c_str());
  const auto log = medcl_test::read_text_file(d + "/torchrun.log");
  if (log.find("use_libuv was requested but PyTorch was build without libuv") !=
      std::string::npos) {
    // Debian 13's python3-torch 2.6 is built without libuv, yet its torchrun asks for a libuv
    // TCPStore in every rendezvous: torchrun itself cannot start there.
    MEDCL_SKIP("this system's torchrun cannot start (its PyTorch lacks libuv but asks for it)");
  }
  INFO(log);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  compare_losses(d, 2, at::kDouble, false);
}
