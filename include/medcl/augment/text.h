#pragma once

/// \file
/// Augmentations of tokenised text (reports, label names): token ids [B, T] int64 with a mask of
/// real tokens. Sentences are delimited by a separator token id.

#include <medcl/augment/policy.h>

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace medcl {
namespace augment {
namespace detail {

inline at::Tensor text_mask(const Batch& in) {
  return in.mask.defined() ? in.mask
                           : at::ones_like(in.values, in.values.options().dtype(at::kBool));
}

/// Reorders each row's tokens by `key` [B, T] (ascending; stable), returning ids and mask.
inline Batch reorder_tokens(const Batch& in, const at::Tensor& valid, const at::Tensor& key) {
  auto order = std::get<1>(key.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
  return {in.values.gather(1, order), valid.gather(1, order), in.times};
}

/// Sentence index of every token: the number of separators before it. [B, T] float.
inline at::Tensor sentence_index(const at::Tensor& ids, int64_t separator) {
  auto sep = ids.eq(separator).to(at::kFloat);
  return sep.cumsum(1) - sep; // a separator belongs to the sentence it ends
}

} // namespace detail

/// Replaces each real token with `mask_token` with probability p (masked language modelling style).
class TokenMask : public Transform {
 public:
  TokenMask(double p, int64_t mask_token) : p_(p), mask_token_(mask_token) {
    check_probability("TokenMask", "p", p_);
  }
  std::string name() const override {
    return "token_mask";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Text};
  }
  std::vector<std::string> invariances() const override {
    return {"missing words"};
  }
  Json parameters() const override {
    return detail::json_object({{"p", p_}, {"mask_token", mask_token_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    auto valid = detail::text_mask(in);
    auto hit =
        random_bernoulli(in.values.sizes(), p_, gen, in.values.options()).logical_and_(valid);
    return {in.values.masked_fill(hit, mask_token_), valid, in.times};
  }

 private:
  double p_;
  int64_t mask_token_;
};

/// Shuffles the order of sentences (separated by `separator`) in each text; words keep their
/// order inside a sentence, padding stays at the end. Report sections state findings in no
/// fixed order.
class SentenceShuffle : public Transform {
 public:
  explicit SentenceShuffle(int64_t separator) : sep_(separator) {}
  std::string name() const override {
    return "sentence_shuffle";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Text};
  }
  std::vector<std::string> invariances() const override {
    return {"sentence order"};
  }
  Json parameters() const override {
    return detail::json_object({{"separator", sep_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const int64_t b = in.values.size(0), t = in.values.size(1);
    auto valid = detail::text_mask(in);
    auto sent = detail::sentence_index(in.values, sep_);
    auto rank = random_uniform(
        {b, t}, 0.0, 1.0, gen, in.values.options().dtype(at::kFloat)); // per sentence slot
    auto sent_key = rank.gather(1, sent.to(at::kLong).clamp_max(t - 1));
    auto pos = at::arange(t, in.values.options().dtype(at::kFloat)).view({1, -1});
    // Sort by (sentence's random rank, position); padding after everything.
    auto key = (sent_key * static_cast<double>(t + 1) + pos / static_cast<double>(t))
                   .masked_fill(valid.logical_not(), 1e30);
    return detail::reorder_tokens(in, valid, key);
  }

 private:
  int64_t sep_;
};

/// Keeps each sentence with probability `keep` (at least the first sentence is kept when all
/// would go): a report reduced to some of its statements. Dropped tokens become padding.
class SentenceSample : public Transform {
 public:
  SentenceSample(double keep, int64_t separator, int64_t pad_token)
      : keep_(keep), sep_(separator), pad_(pad_token) {
    check_probability("SentenceSample", "keep", keep_);
  }
  std::string name() const override {
    return "sentence_sample";
  }
  std::vector<Modality> modalities() const override {
    return {Modality::Text};
  }
  std::vector<std::string> invariances() const override {
    return {"report completeness"};
  }
  Json parameters() const override {
    return detail::json_object({{"keep", keep_}, {"separator", sep_}, {"pad_token", pad_}});
  }
  Batch apply(const Batch& in, Modality, at::Generator& gen) const override {
    const int64_t b = in.values.size(0), t = in.values.size(1);
    auto valid = detail::text_mask(in);
    auto sent = detail::sentence_index(in.values, sep_).to(at::kLong).clamp_max(t - 1);
    auto keep_slot = random_bernoulli({b, t}, keep_, gen, in.values.options());
    // A text whose every sentence was dropped keeps its first one.
    auto kept_any = keep_slot.gather(1, sent).logical_and(valid).any(1, true);
    keep_slot.select(1, 0).logical_or_(kept_any.squeeze(1).logical_not());
    auto keep_tok = keep_slot.gather(1, sent).logical_and(valid);
    auto pos = at::arange(t, in.values.options().dtype(at::kFloat)).view({1, -1});
    auto key = pos.masked_fill(keep_tok.logical_not(), 1e30) + pos * 1e-6;
    auto ids = in.values.masked_fill(keep_tok.logical_not(), pad_);
    return detail::reorder_tokens({ids, keep_tok, in.times}, keep_tok, key);
  }

 private:
  double keep_;
  int64_t sep_;
  int64_t pad_;
};

} // namespace augment
} // namespace medcl
