#include <medcl/methods/byol.h>
#include <medcl/methods/clip.h>
#include <medcl/methods/dino.h>
#include <medcl/methods/moco.h>
#include <medcl/methods/simclr.h>
#include <medcl/nn/encoders.h>
#include <medcl/nn/momentum.h>

#include <torch/torch.h>
#include "catch.h"
#include "support.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

using medcl_test::Contains;

namespace {

// Small configurations, so that the whole executable runs in seconds on one core.
medcl::MLPEncoder small_mlp(bool mask = false) {
  return medcl::MLPEncoder(
      medcl::MLPEncoderOptions(6, 8).hidden_dims({16, 16}).use_missingness_mask(mask));
}
medcl::ResNet1d small_resnet(int64_t leads = 2) {
  return medcl::ResNet1d(
      medcl::ResNet1dOptions(leads, 8).widths({8, 16}).blocks({1, 1}).kernel_size(5));
}
medcl::CNN2d small_cnn2d() {
  return medcl::CNN2d(medcl::CNNOptions(3, 8).widths({4, 8}));
}
medcl::CNN3d small_cnn3d() {
  return medcl::CNN3d(medcl::CNNOptions(1, 8).widths({4, 8}));
}
medcl::TextEncoder small_text() {
  return medcl::TextEncoder(medcl::TextEncoderOptions(97, 8).embedding_dim(8).hidden_dim(16));
}

// A loss whose gradient differs between samples (a plain sum gives a zero gradient through
// batch normalisation in training mode).
at::Tensor weighted_sum(const at::Tensor& y) {
  auto w = at::randn(y.sizes(), at::TensorOptions().dtype(y.scalar_type()));
  return (y * w).sum();
}

template <class Holder>
void check_gradients_reach_every_parameter(Holder m, const at::Tensor& x, const char* what) {
  m->train();
  m->zero_grad();
  weighted_sum(m->forward(x)).backward();
  for (const auto& p : m->named_parameters()) {
    INFO(what << ": parameter " << p.key());
    REQUIRE(p.value().grad().defined());
    CHECK(p.value().grad().abs().sum().template item<double>() > 0);
    CHECK(at::isfinite(p.value().grad()).all().template item<bool>());
  }
}

template <class Holder>
void check_clone(Holder m, const at::Tensor& x, const char* what) {
  INFO(what);
  // One training-mode pass moves the batch-norm running statistics away from their initial
  // values, so the comparison below also shows that buffers are copied.
  m->train();
  {
    torch::NoGradGuard no_grad;
    m->forward(x);
  }
  auto copy = medcl::detail::deep_copy(m, "test");
  REQUIRE(copy.get() != m.get());
  CHECK(copy->describe() == m->describe());
  m->eval();
  copy->eval();
  torch::NoGradGuard no_grad;
  auto y = m->forward(x);
  CHECK(at::equal(copy->forward(x), y));
  auto orig_params = m->named_parameters();
  auto copy_params = copy->named_parameters();
  REQUIRE(orig_params.size() == copy_params.size());
  for (const auto& p : orig_params) {
    CHECK(p.value().data_ptr() != copy_params[p.key()].data_ptr());
  }
  auto orig_buffers = m->named_buffers();
  auto copy_buffers = copy->named_buffers();
  REQUIRE(orig_buffers.size() == copy_buffers.size());
  for (const auto& b : orig_buffers) {
    CHECK(b.value().data_ptr() != copy_buffers[b.key()].data_ptr());
    CHECK(at::equal(b.value(), copy_buffers[b.key()]));
  }
  // Changing the copy leaves the original as it was.
  for (auto& p : copy->parameters()) {
    p.add_(1.0);
  }
  CHECK(at::equal(m->forward(x), y));
  CHECK_FALSE(at::allclose(copy->forward(x), y));
}

std::set<int64_t> id_set(const medcl::HashTokenizer& tok, const std::string& s) {
  auto v = tok.ids(s);
  return {v.begin(), v.end()};
}

size_t shared(const std::set<int64_t>& a, const std::set<int64_t>& b) {
  std::vector<int64_t> out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out.size();
}

} // namespace

TEST_CASE("MLPEncoder maps [B, F] to [B, D] in every configuration", "[nn]") {
  torch::manual_seed(1);
  for (auto norm : {medcl::MLPNorm::None, medcl::MLPNorm::BatchNorm, medcl::MLPNorm::LayerNorm}) {
    for (auto act : {medcl::MLPActivation::ReLU, medcl::MLPActivation::GELU}) {
      medcl::MLPEncoder m(
          medcl::MLPEncoderOptions(5, 3).hidden_dims({7}).norm(norm).activation(act).dropout(0.2));
      for (int64_t b : {2, 9}) {
        auto y = m->forward(at::randn({b, 5}));
        CHECK(y.sizes() == at::IntArrayRef({b, 3}));
        CHECK(at::isfinite(y).all().item<bool>());
      }
    }
  }
  medcl::MLPEncoder linear(medcl::MLPEncoderOptions(5, 3).hidden_dims({}));
  CHECK(linear->forward(at::randn({4, 5})).sizes() == at::IntArrayRef({4, 3}));
  CHECK(linear->parameters().size() == 2);
  CHECK(linear->output_dim() == 3);
  CHECK(
      medcl::MLPEncoder(medcl::MLPEncoderOptions(17, 64).dropout(0.1).use_missingness_mask(true))
          ->describe() ==
      "MLPEncoder(17 features + mask, hidden 256-256, BatchNorm, ReLU, "
      "dropout 0.1, D=64)");
  CHECK(linear->describe() == "MLPEncoder(5 features, linear, D=3)");
}

TEST_CASE("with_missingness zero-fills unobserved values and appends the observed flags", "[nn]") {
  auto values = at::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({2, 2});
  auto observed = at::tensor({1, 0, 0, 1}).view({2, 2}).gt(0);
  auto x = medcl::with_missingness(values, observed);
  auto expected = at::tensor({1.0f, 0.0f, 1.0f, 0.0f, 0.0f, 4.0f, 0.0f, 1.0f}).view({2, 4});
  CHECK(at::equal(x, expected));
  // A float mask (non-zero = observed) and NaN in the unobserved entries give the same.
  auto with_nan = values.clone();
  with_nan[0][1] = NAN;
  with_nan[1][0] = NAN;
  CHECK(at::equal(medcl::with_missingness(with_nan, observed.to(at::kFloat)), expected));
  CHECK(at::equal(medcl::with_missingness(with_nan), expected));

  torch::manual_seed(2);
  auto m = small_mlp(/*mask=*/true);
  m->eval();
  auto v = at::randn({5, 6});
  auto o = at::rand({5, 6}).gt(0.3);
  auto y = m->forward_masked(v, o);
  CHECK(y.sizes() == at::IntArrayRef({5, 8}));
  CHECK(at::equal(y, m->forward(medcl::with_missingness(v, o))));
  // The encoder sees the difference between a measured 0 and a missing value.
  auto zeros = at::zeros({1, 6});
  auto all = at::ones({1, 6}, at::kBool);
  auto none = at::zeros({1, 6}, at::kBool);
  CHECK_FALSE(at::allclose(m->forward_masked(zeros, all), m->forward_masked(zeros, none)));
}

TEST_CASE("ResNet1d maps [B, leads, T] to [B, D] for any T from its minimum", "[nn]") {
  torch::manual_seed(3);
  auto m = small_resnet(3);
  CHECK(m->min_length() == 7);
  for (int64_t t : {7, 8, 33, 250}) {
    auto y = m->forward(at::randn({4, 3, t}));
    CHECK(y.sizes() == at::IntArrayRef({4, 8}));
    CHECK(at::isfinite(y).all().item<bool>());
  }
  medcl::ResNet1d ecg(medcl::ResNet1dOptions(12, 128));
  CHECK(ecg->describe() == "ResNet1d(12 leads, stages 32-64-128, blocks 2-2-2, kernel 7, D=128)");
  CHECK(ecg->min_length() == 8);
  CHECK(ecg->output_dim() == 128);
  CHECK(ecg->forward(at::randn({2, 12, 8})).sizes() == at::IntArrayRef({2, 128}));
  medcl::ResNet1d deep(
      medcl::ResNet1dOptions(1, 4).widths({4, 4, 4, 4, 4}).blocks({1, 1, 1, 1, 1}));
  CHECK(deep->min_length() == 32);
  CHECK(deep->describe() == "ResNet1d(1 lead, stages 4-4-4-4-4, blocks 1-1-1-1-1, kernel 7, D=4)");
  CHECK(deep->forward(at::randn({2, 1, 32})).sizes() == at::IntArrayRef({2, 4}));
  // Stages: 2 blocks each; the first block of the second stage changes the width and halves T.
  CHECK(ecg->stages->size() == 6);
}

TEST_CASE("CNN2d and CNN3d map images and volumes to [B, D]", "[nn]") {
  torch::manual_seed(4);
  auto c2 = small_cnn2d();
  CHECK(c2->min_size() == 4);
  for (auto hw : {std::vector<int64_t>{4, 4}, {17, 9}, {32, 32}}) {
    auto y = c2->forward(at::randn({3, 3, hw[0], hw[1]}));
    CHECK(y.sizes() == at::IntArrayRef({3, 8}));
  }
  auto c3 = small_cnn3d();
  for (auto s : {std::vector<int64_t>{4, 4, 4}, {5, 12, 8}}) {
    auto y = c3->forward(at::randn({2, 1, s[0], s[1], s[2]}));
    CHECK(y.sizes() == at::IntArrayRef({2, 8}));
    CHECK(at::isfinite(y).all().item<bool>());
  }
  medcl::CNN2d cxr(medcl::CNNOptions(3, 128));
  CHECK(
      cxr->describe() == "CNN2d(3 channels, stages 32-64-128, 1 conv per stage, kernel 3, D=128)");
  CHECK(cxr->min_size() == 8);
  medcl::CNN3d ct(medcl::CNNOptions(1, 16).widths({4, 8}).convs_per_stage(2).kernel_size(5));
  CHECK(ct->describe() == "CNN3d(1 channel, stages 4-8, 2 convs per stage, kernel 5, D=16)");
  CHECK(ct->min_size() == 5);
  CHECK(ct->forward(at::randn({2, 1, 5, 6, 7})).sizes() == at::IntArrayRef({2, 16}));
  CHECK(ct->output_dim() == 16);
}

TEST_CASE(
    "HashTokenizer is deterministic, pads with 0 and shares pieces of related names",
    "[nn]") {
  // FNV-1a reference values (the published test vectors of the 64-bit hash).
  CHECK(medcl::detail::fnv1a_64("") == 0xcbf29ce484222325ULL);
  CHECK(medcl::detail::fnv1a_64("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(medcl::detail::fnv1a_64("foobar") == 0x85944171f73967e8ULL);

  CHECK(
      medcl::HashTokenizer::words("Frontal_Sup_L (x2)") ==
      std::vector<std::string>{"frontal", "sup", "l", "x2"});
  CHECK(medcl::HashTokenizer::words("  --  ").empty());

  medcl::HashTokenizer tok(1000);
  // "frontal" = 1 word + 7 trigrams of "<frontal>"; "l" = 1 word + 1 trigram "<l>".
  CHECK(tok.ids("frontal").size() == 8);
  CHECK(tok.ids("L").size() == 2);
  CHECK(medcl::HashTokenizer(1000, /*trigrams=*/false).ids("Frontal_Sup_L").size() == 3);
  CHECK(tok.ids("FRONTAL sup") == tok.ids("frontal-SUP"));

  const std::vector<std::string> texts{"Frontal_Sup_L", "", "frontal superior left", "?!"};
  auto a = tok.tokenize(texts, 12);
  auto b = medcl::HashTokenizer(1000).tokenize(texts, 12);
  CHECK(a.scalar_type() == at::kLong);
  CHECK(a.sizes() == at::IntArrayRef({4, 12}));
  CHECK(at::equal(a, b));
  CHECK(a.min().item<int64_t>() >= 0);
  CHECK(a.max().item<int64_t>() < 1000);
  // Empty and punctuation-only texts are all padding; real tokens are never 0.
  CHECK(a[1].eq(0).all().item<bool>());
  CHECK(a[3].eq(0).all().item<bool>());
  auto ids0 = tok.ids("Frontal_Sup_L"); // 8 + 4 + 2 = 14 tokens: truncated to 12
  CHECK(ids0.size() == 14);
  CHECK(a[0].gt(0).all().item<bool>());
  CHECK(at::equal(a[0], at::tensor(std::vector<int64_t>(ids0.begin(), ids0.begin() + 12))));
  // Padding at the end of a short text.
  auto p = tok.tokenize({"sup"}, 8);
  CHECK(p[0].slice(0, 0, 4).gt(0).all().item<bool>());
  CHECK(p[0].slice(0, 4, 8).eq(0).all().item<bool>());

  // Related names share word and trigram pieces; an unrelated region shares far fewer.
  medcl::HashTokenizer big(1 << 20);
  auto left_sup = id_set(big, "Frontal_Sup_L");
  auto related = id_set(big, "frontal superior left");
  auto unrelated = id_set(big, "Occipital_Inf_R");
  const size_t n_related = shared(left_sup, related);
  CHECK(n_related == 10);                  // "frontal", its 7 trigrams, "<su" and "sup"
  CHECK(shared(left_sup, unrelated) == 2); // "tal" and "al>"
  CHECK(big.describe() == "HashTokenizer(FNV-1a, V=1048576, words + trigrams)");
}

TEST_CASE("TextEncoder pools real tokens and maps them to [B, D]", "[nn]") {
  torch::manual_seed(5);
  auto m = small_text();
  m->eval();
  const std::vector<std::string> names{"Frontal_Sup_L", "", "Hippocampus_R"};
  auto ids = m->tokenizer().tokenize(names, 16);
  auto y = m->forward(ids);
  CHECK(y.sizes() == at::IntArrayRef({3, 8}));
  CHECK(at::isfinite(y).all().item<bool>());
  CHECK(at::equal(m->encode(names, 16), y));
  // Padding does not change the representation: more room at the end gives the same output.
  CHECK(at::allclose(m->encode(names, 40), y, 1e-5, 1e-6));
  // An empty text pools to 0: its output is the MLP at 0.
  auto at_zero = m->fc2->forward(at::gelu(m->fc1->forward(at::zeros({1, 8}))));
  CHECK(at::allclose(y[1].unsqueeze(0), at_zero));
  // The padding embedding stays 0.
  CHECK(m->embedding->weight[0].eq(0).all().item<bool>());
  CHECK(m->output_dim() == 8);
  CHECK(
      medcl::TextEncoder(medcl::TextEncoderOptions(8192, 64))->describe() ==
      "TextEncoder(V=8192 words + trigrams, embedding 128, hidden 256, mean pooling, D=64)");
  CHECK(m->forward(at::zeros({0, 5}, at::kLong)).sizes() == at::IntArrayRef({0, 8}));
}

TEST_CASE("Gradients reach every parameter of every encoder", "[nn]") {
  torch::manual_seed(6);
  check_gradients_reach_every_parameter(small_mlp(), at::randn({6, 6}), "MLPEncoder");
  check_gradients_reach_every_parameter(
      medcl::MLPEncoder(medcl::MLPEncoderOptions(6, 4)
                            .hidden_dims({8})
                            .norm(medcl::MLPNorm::LayerNorm)
                            .activation(medcl::MLPActivation::GELU)),
      at::randn({6, 6}),
      "MLPEncoder (LayerNorm, GELU)");
  check_gradients_reach_every_parameter(small_resnet(), at::randn({4, 2, 40}), "ResNet1d");
  check_gradients_reach_every_parameter(small_cnn2d(), at::randn({3, 3, 8, 8}), "CNN2d");
  check_gradients_reach_every_parameter(small_cnn3d(), at::randn({3, 1, 6, 6, 6}), "CNN3d");
  auto text = small_text();
  auto ids = text->tokenizer().tokenize({"Frontal_Sup_L", "Hippocampus_R", ""}, 16);
  check_gradients_reach_every_parameter(text, ids, "TextEncoder");
  // The padding row gets no gradient.
  CHECK(text->embedding->weight.grad()[0].eq(0).all().item<bool>());
}

TEST_CASE("clone() gives an independent deep copy with equal outputs", "[nn]") {
  torch::manual_seed(7);
  check_clone(small_mlp(true), at::randn({5, 12}), "MLPEncoder");
  check_clone(
      medcl::MLPEncoder(
          medcl::MLPEncoderOptions(6, 4).norm(medcl::MLPNorm::LayerNorm).dropout(0.5)),
      at::randn({5, 6}),
      "MLPEncoder (LayerNorm, dropout)");
  check_clone(small_resnet(), at::randn({4, 2, 30}), "ResNet1d");
  check_clone(small_cnn2d(), at::randn({3, 3, 8, 8}), "CNN2d");
  check_clone(small_cnn3d(), at::randn({2, 1, 4, 6, 5}), "CNN3d");
  auto text = small_text();
  check_clone(text, text->tokenizer().tokenize({"Frontal_Sup_L", "Hippocampus_R"}, 16), "Text");
}

TEST_CASE("Encoders train inside BYOL, SimCLR and CLIP", "[nn]") {
  torch::manual_seed(8);
  auto step = [](medcl::MethodBase& method, const std::function<medcl::MethodBatch()>& make) {
    torch::optim::Adam opt(method.trainable_parameters(), torch::optim::AdamOptions(1e-3));
    method.train();
    for (int64_t s = 0; s < 3; ++s) {
      medcl::StepContext ctx{s, 3, 0};
      auto loss = method.training_loss(make(), ctx);
      REQUIRE(std::isfinite(loss.item<double>()));
      opt.zero_grad();
      loss.backward();
      method.before_optimizer_step(ctx);
      opt.step();
      method.after_optimizer_step(ctx);
    }
  };

  auto ecg = small_resnet(2);
  medcl::BYOL<medcl::ResNet1d> byol(
      ecg, medcl::BYOLOptions(ecg->output_dim()).hidden_dim(16).projection_dim(8));
  REQUIRE(byol.target_encoder().get() != byol.encoder().get());
  auto before = byol.target_encoder()->fc->weight.clone();
  step(byol, [] {
    medcl::MethodBatch b;
    auto x = at::randn({8, 2, 64});
    b.views = {x + 0.1 * at::randn_like(x), x + 0.1 * at::randn_like(x)};
    return b;
  });
  CHECK_FALSE(at::equal(byol.target_encoder()->fc->weight, before)); // EMA moved the copy
  CHECK(byol.embed(at::randn({3, 2, 64})).sizes() == at::IntArrayRef({3, 8}));

  auto tab = small_mlp(true);
  medcl::SimCLR<medcl::MLPEncoder> simclr(
      tab, medcl::SimCLROptions(tab->output_dim()).hidden_dim(16).projection_dim(8));
  step(simclr, [] {
    medcl::MethodBatch b;
    auto v = at::randn({8, 6});
    auto o = at::rand({8, 6}).gt(0.2);
    b.views = {
        medcl::with_missingness(v, o.logical_and(at::rand({8, 6}).gt(0.2))),
        medcl::with_missingness(v + 0.1 * at::randn_like(v), o)};
    return b;
  });

  medcl::CLIP<medcl::CNN2d, medcl::TextEncoder> clip(
      small_cnn2d(), small_text(), medcl::CLIPOptions(8, 8).embed_dim(8));
  const std::vector<std::string> reports{
      "no acute findings", "left lower lobe opacity", "cardiomegaly", "right pleural effusion"};
  step(clip, [&] {
    medcl::MethodBatch b;
    b.views = {at::randn({4, 3, 8, 8})};
    b.paired = medcl::HashTokenizer(97).tokenize(reports, 12);
    return b;
  });
}

TEST_CASE("ResNet1d learns to tell two sine frequencies apart", "[nn]") {
  torch::manual_seed(9);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  // Class 0: 3 cycles over the window, class 1: 6 cycles; random phase and amplitude, noise.
  const double kPi = std::acos(-1.0);
  auto make = [&gen, kPi](int64_t n) {
    auto y = at::randint(0, 2, {n}, gen, at::kLong);
    auto cycles = (3.0 + 3.0 * y.to(at::kFloat)).unsqueeze(1);
    auto t = at::linspace(0, 1, 64).unsqueeze(0);
    auto phase = 2 * kPi * at::rand({n, 1}, gen, at::kFloat);
    auto amp = 0.5 + at::rand({n, 1}, gen, at::kFloat);
    auto x =
        amp * at::sin(2 * kPi * cycles * t + phase) + 0.3 * at::randn({n, 64}, gen, at::kFloat);
    return std::make_pair(x.unsqueeze(1), y);
  };
  medcl::ResNet1d net(medcl::ResNet1dOptions(1, 8).widths({8, 16}).blocks({1, 1}));
  torch::nn::Linear cls(8, 2);
  std::vector<at::Tensor> params = net->parameters();
  for (auto& p : cls->parameters()) {
    params.push_back(p);
  }
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-2));
  net->train();
  for (int step = 0; step < 50; ++step) {
    auto batch = make(64);
    auto loss = torch::nn::functional::cross_entropy(cls(net(batch.first)), batch.second);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  net->eval();
  torch::NoGradGuard no_grad;
  auto test = make(400);
  const double acc =
      cls(net(test.first)).argmax(1).eq(test.second).to(at::kDouble).mean().item<double>();
  INFO("held-out accuracy " << acc);
  CHECK(acc > 0.9);
}

TEST_CASE("Encoders reject bad options and bad inputs with clear errors", "[nn]") {
  using medcl::MLPEncoderOptions;
  // MLPEncoder
  REQUIRE_THROWS_WITH(
      medcl::MLPEncoder(MLPEncoderOptions(0, 4)),
      Contains("MLPEncoder: input_dim must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::MLPEncoder(MLPEncoderOptions(3, 0)),
      Contains("MLPEncoder: output_dim must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::MLPEncoder(MLPEncoderOptions(3, 4).hidden_dims({8, -1})),
      Contains("MLPEncoder: every hidden width must be > 0, got -1"));
  REQUIRE_THROWS_WITH(
      medcl::MLPEncoder(MLPEncoderOptions(3, 4).dropout(1.0)),
      Contains("MLPEncoder: dropout must be in [0, 1), got 1"));
  auto mlp = small_mlp();
  REQUIRE_THROWS_WITH(
      mlp->forward(at::randn({4, 5})),
      Contains("MLPEncoder: expected input of shape [B, 6], got [4, 5]"));
  REQUIRE_THROWS_WITH(
      mlp->forward(at::randn({4, 6, 1})),
      Contains("MLPEncoder: expected input of shape [B, 6], got [4, 6, 1]"));
  REQUIRE_THROWS_WITH(
      mlp->forward(at::Tensor()), Contains("MLPEncoder: expected input of shape [B, 6], got []"));
  REQUIRE_THROWS_WITH(
      small_mlp(true)->forward(at::randn({4, 6})),
      Contains("MLPEncoder: expected input of shape [B, 12] (6 values and 6 observed flags, see "
               "with_missingness), got [4, 6]"));
  REQUIRE_THROWS_WITH(
      mlp->forward_masked(at::randn({4, 6}), at::ones({4, 6})),
      Contains(
          "MLPEncoder: forward_masked needs an encoder built with use_missingness_mask(true)"));
  REQUIRE_THROWS_WITH(
      medcl::with_missingness(at::randn({4}), at::ones({4})),
      Contains("with_missingness: expected values of shape [B, F], got [4]"));
  REQUIRE_THROWS_WITH(
      medcl::with_missingness(at::randn({4})),
      Contains("with_missingness: expected values of shape [B, F], got [4]"));
  REQUIRE_THROWS_WITH(
      medcl::with_missingness(at::ones({2, 3}, at::kLong), at::ones({2, 3})),
      Contains("with_missingness: expected floating values, got Long"));
  REQUIRE_THROWS_WITH(
      medcl::with_missingness(at::randn({2, 3}), at::ones({2, 4})),
      Contains("with_missingness: expected an observed mask of shape [2, 3] (the values' shape), "
               "got [2, 4]"));

  // ResNet1d
  using medcl::ResNet1dOptions;
  REQUIRE_THROWS_WITH(
      medcl::ResNet1d(ResNet1dOptions(0, 4)), Contains("ResNet1d: in_channels must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::ResNet1d(ResNet1dOptions(1, -2)),
      Contains("ResNet1d: output_dim must be > 0, got -2"));
  REQUIRE_THROWS_WITH(
      medcl::ResNet1d(ResNet1dOptions(1, 4).widths({}).blocks({})),
      Contains("ResNet1d: widths must name at least one stage"));
  REQUIRE_THROWS_WITH(
      medcl::ResNet1d(ResNet1dOptions(1, 4).widths({8, 16})),
      Contains("ResNet1d: blocks must have one entry per stage (2), got 3"));
  REQUIRE_THROWS_WITH(
      medcl::ResNet1d(ResNet1dOptions(1, 4).widths({8, 0}).blocks({1, 1})),
      Contains("ResNet1d: every width must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::ResNet1d(ResNet1dOptions(1, 4).widths({8}).blocks({0})),
      Contains("ResNet1d: every stage needs >= 1 block, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::ResNet1d(ResNet1dOptions(1, 4).kernel_size(4)),
      Contains("ResNet1d: kernel_size must be odd and > 0, got 4"));
  auto res = small_resnet(2);
  REQUIRE_THROWS_WITH(
      res->forward(at::randn({2, 40})),
      Contains("ResNet1d: expected input of shape [B, leads, T], got [2, 40]"));
  REQUIRE_THROWS_WITH(
      res->forward(at::randn({2, 3, 40})),
      Contains("ResNet1d: expected 2 leads (input of shape [B, 2, T]), got [2, 3, 40]"));
  REQUIRE_THROWS_WITH(
      res->forward(at::randn({2, 2, 6})),
      Contains("ResNet1d: signals must have at least 7 samples, got [2, 2, 6]"));

  // CNN2d / CNN3d
  using medcl::CNNOptions;
  REQUIRE_THROWS_WITH(
      medcl::CNN2d(CNNOptions(0, 4)), Contains("CNN2d: in_channels must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::CNN3d(CNNOptions(1, 0)), Contains("CNN3d: output_dim must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::CNN2d(CNNOptions(1, 4).widths({})),
      Contains("CNN2d: widths must name at least one stage"));
  REQUIRE_THROWS_WITH(
      medcl::CNN2d(CNNOptions(1, 4).widths({4, -4})),
      Contains("CNN2d: every width must be > 0, got -4"));
  REQUIRE_THROWS_WITH(
      medcl::CNN3d(CNNOptions(1, 4).convs_per_stage(0)),
      Contains("CNN3d: convs_per_stage must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::CNN2d(CNNOptions(1, 4).kernel_size(2)),
      Contains("CNN2d: kernel_size must be odd and > 0, got 2"));
  auto c2 = small_cnn2d();
  REQUIRE_THROWS_WITH(
      c2->forward(at::randn({2, 3, 8})),
      Contains("CNN2d: expected input of shape [B, C, H, W], got [2, 3, 8]"));
  REQUIRE_THROWS_WITH(
      c2->forward(at::randn({2, 1, 8, 8})),
      Contains("CNN2d: expected 3 channels, got [2, 1, 8, 8]"));
  REQUIRE_THROWS_WITH(
      c2->forward(at::randn({2, 3, 8, 3})),
      Contains("CNN2d: every spatial size must be at least 4, got [2, 3, 8, 3]"));
  auto c3 = small_cnn3d();
  REQUIRE_THROWS_WITH(
      c3->forward(at::randn({2, 1, 8, 8})),
      Contains("CNN3d: expected input of shape [B, C, D, H, W], got [2, 1, 8, 8]"));
  REQUIRE_THROWS_WITH(
      c3->forward(at::randn({2, 1, 2, 8, 8})),
      Contains("CNN3d: every spatial size must be at least 4, got [2, 1, 2, 8, 8]"));

  // Text
  REQUIRE_THROWS_WITH(
      medcl::HashTokenizer(1), Contains("HashTokenizer: vocab_size must be >= 2, got 1"));
  REQUIRE_THROWS_WITH(
      medcl::HashTokenizer(10).tokenize({"a"}, 0),
      Contains("HashTokenizer: max_tokens must be > 0, got 0"));
  using medcl::TextEncoderOptions;
  REQUIRE_THROWS_WITH(
      medcl::TextEncoder(TextEncoderOptions(1, 4)),
      Contains("TextEncoder: vocab_size must be >= 2, got 1"));
  REQUIRE_THROWS_WITH(
      medcl::TextEncoder(TextEncoderOptions(10, 0)),
      Contains("TextEncoder: output_dim must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::TextEncoder(TextEncoderOptions(10, 4).embedding_dim(0)),
      Contains("TextEncoder: embedding_dim must be > 0, got 0"));
  REQUIRE_THROWS_WITH(
      medcl::TextEncoder(TextEncoderOptions(10, 4).hidden_dim(0)),
      Contains("TextEncoder: hidden_dim must be > 0, got 0"));
  auto text = small_text();
  REQUIRE_THROWS_WITH(
      text->forward(at::zeros({4}, at::kLong)),
      Contains("TextEncoder: expected token ids of shape [B, L], got [4]"));
  REQUIRE_THROWS_WITH(
      text->forward(at::zeros({2, 4}, at::kInt)),
      Contains("TextEncoder: expected int64 token ids, got Int"));
  REQUIRE_THROWS_WITH(
      text->forward(at::full({2, 4}, 97, at::kLong)),
      Contains("TextEncoder: token ids must be in [0, 97), got ids from 97 to 97"));
  REQUIRE_THROWS_WITH(
      text->forward(at::full({2, 4}, -1, at::kLong)),
      Contains("TextEncoder: token ids must be in [0, 97), got ids from -1 to -1"));
}

// ---------------------------------------------------------------------------------------------
// The momentum schedule of BYOL, MoCo and DINO
// ---------------------------------------------------------------------------------------------

namespace {

torch::nn::Sequential momentum_encoder() {
  return torch::nn::Sequential(
      torch::nn::Linear(6, 16), torch::nn::BatchNorm1d(16), torch::nn::Linear(16, 16));
}

// One after_optimizer_step of `method` against the code each method held before the schedule was
// factored out, applied to copies: m = cosine_schedule(step, max(total, 1), start, end), then
// teacher <- m teacher + (1 - m) online for every parameter and buffers copied. The online
// parameters are moved first, so that the update has something to do. Bitwise equality.
template <class Method>
void check_ema_step(
    Method& method,
    const std::vector<std::pair<std::string, std::string>>& teacher_to_online,
    double start,
    double end,
    int64_t step,
    int64_t total) {
  auto starts_with = [](const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
  };
  {
    torch::NoGradGuard no_grad;
    for (auto& item : method.named_parameters(true)) {
      for (const auto& pair : teacher_to_online) {
        if (starts_with(item.key(), pair.second)) {
          item.value().add_(torch::randn_like(item.value()), 0.1);
        }
      }
    }
  }
  std::map<std::string, at::Tensor> before;
  for (const auto& item : method.named_parameters(true)) {
    before[item.key()] = item.value().detach().clone();
  }
  method.after_optimizer_step({step, total, 0});
  const double m = medcl::cosine_schedule(step, std::max<int64_t>(total, 1), start, end);
  CHECK(method.momentum() == m);
  CHECK(method.step_statistics().at("momentum") == m);
  auto now = method.named_parameters(true);
  auto now_buffers = method.named_buffers(true);
  size_t checked = 0;
  for (const auto& pair : teacher_to_online) {
    for (const auto& kv : before) {
      if (!starts_with(kv.first, pair.first)) {
        continue;
      }
      const std::string online = pair.second + kv.first.substr(pair.first.size());
      REQUIRE(before.count(online) == 1);
      auto expected = kv.second.clone();
      expected.mul_(m).add_(before.at(online).to(expected.options()), 1.0 - m);
      CHECK(torch::equal(*now.find(kv.first), expected));
      CHECK_FALSE(torch::equal(kv.second, before.at(online)));
      ++checked;
    }
    for (const auto& item : now_buffers) {
      if (starts_with(item.key(), pair.first)) {
        const std::string online = pair.second + item.key().substr(pair.first.size());
        CHECK(torch::equal(item.value(), *now_buffers.find(online)));
      }
    }
  }
  CHECK(checked >= 4);
}

} // namespace

TEST_CASE(
    "BYOL, MoCo and DINO update their teachers with the momentum schedule",
    "[nn][momentum]") {
  torch::manual_seed(21);
  SECTION("BYOL") {
    medcl::BYOL<torch::nn::Sequential> m(
        momentum_encoder(),
        medcl::BYOLOptions(16).hidden_dim(16).projection_dim(8).momentum_start(0.9));
    check_ema_step(
        m, {{"target_encoder.", "encoder."}, {"target_projector.", "projector."}}, 0.9, 1.0, 2, 7);
    check_ema_step(
        m, {{"target_encoder.", "encoder."}, {"target_projector.", "projector."}}, 0.9, 1.0, 6, 7);
  }
  SECTION("MoCo v2") {
    medcl::MoCo<torch::nn::Sequential> m(
        momentum_encoder(),
        medcl::MoCoOptions::v2(16).hidden_dim(16).projection_dim(8).queue_size(8).momentum_start(
            0.8));
    check_ema_step(
        m,
        {{"momentum_encoder.", "encoder."}, {"momentum_projector.", "projector."}},
        0.8,
        0.999,
        1,
        4);
  }
  SECTION("MoCo v3") {
    medcl::MoCo<torch::nn::Sequential> m(
        momentum_encoder(), medcl::MoCoOptions::v3(16).hidden_dim(16).projection_dim(8));
    check_ema_step(
        m,
        {{"momentum_encoder.", "encoder."}, {"momentum_projector.", "projector."}},
        0.99,
        1.0,
        3,
        0);
  }
  SECTION("DINO") {
    medcl::DINO<torch::nn::Sequential> m(
        momentum_encoder(),
        medcl::DINOOptions(16).output_dim(16).hidden_dim(16).bottleneck_dim(8).momentum_end(0.999));
    check_ema_step(
        m, {{"teacher_encoder.", "encoder."}, {"teacher_head.", "head."}}, 0.996, 0.999, 5, 10);
  }
}

TEST_CASE(
    "BYOL, MoCo and DINO describe their momentum schedule as typed numbers",
    "[nn][momentum]") {
  auto expect = [](medcl::Json d, double start, double end) {
    REQUIRE(d.contains("momentum_schedule"));
    const auto& s = d.at("momentum_schedule");
    CHECK(s == medcl::MomentumSchedule(start, end).describe());
    CHECK(s.at("start").as_double() == start);
    CHECK(s.at("end").as_double() == end);
  };
  expect(
      medcl::BYOL<torch::nn::Sequential>(
          momentum_encoder(), medcl::BYOLOptions(16).hidden_dim(16).projection_dim(8))
          .describe(),
      0.996,
      1.0);
  expect(
      medcl::MoCo<torch::nn::Sequential>(
          momentum_encoder(),
          medcl::MoCoOptions::v2(16).hidden_dim(16).projection_dim(8).queue_size(8))
          .describe(),
      0.999,
      0.999);
  expect(
      medcl::MoCo<torch::nn::Sequential>(
          momentum_encoder(), medcl::MoCoOptions::v3(16).hidden_dim(16).projection_dim(8))
          .describe(),
      0.99,
      1.0);
  expect(
      medcl::DINO<torch::nn::Sequential>(
          momentum_encoder(),
          medcl::DINOOptions(16).output_dim(16).hidden_dim(16).bottleneck_dim(8).momentum_start(
              0.9))
          .describe(),
      0.9,
      1.0);
}
