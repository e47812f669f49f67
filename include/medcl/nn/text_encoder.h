#pragma once

/// \file
/// Text for region names and short reports: a deterministic hashing tokenizer (words and character
/// trigrams) and an embedding-bag encoder over its token ids.

#include <c10/util/Exception.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace medcl {

namespace detail {

/// 64-bit FNV-1a hash of `s` (Fowler, Noll, Vo), fixed across platforms and runs.
inline uint64_t fnv1a_64(const std::string& s) {
  uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

} // namespace detail

/// Deterministic tokenizer without a learned vocabulary: the text is lower-cased (ASCII), split
/// on every ASCII character that is not a letter or digit (bytes >= 128, i.e. UTF-8 letters, stay
/// inside words), and every word w gives the token of w followed by the tokens of the character
/// trigrams of "<w>" ('<' and '>' mark the word's ends). A token's id is
/// \f[ \mathrm{id}(s) = 1 + \mathrm{FNV1a}_{64}(k \,\|\, s) \bmod (V - 1) \f]
/// with k = "w:" for words and "t:" for trigrams, so ids are in [1, V) and 0 is padding. Words
/// that share pieces share ids: "Frontal_Sup_L" and "frontal superior left" both hold
/// "frontal", "<su" and "sup". Different strings may collide (hashing trick); a larger V makes
/// it rarer.
///
/// Shape: `tokenize(texts, L)` -> int64 [texts.size(), L], padded with 0 (a text with more
/// tokens is truncated, an empty one is all padding).
///
/// Example:
///   medcl::HashTokenizer tok(8192);
///   auto ids = tok.tokenize({"Frontal_Sup_L", "frontal superior left"}, 32);   // [2, 32]
class HashTokenizer {
 public:
  /// `vocab_size` V >= 2 (id 0 is padding); `trigrams` adds the character trigrams of each word.
  explicit HashTokenizer(int64_t vocab_size = 8192, bool trigrams = true)
      : vocab_size_(vocab_size), trigrams_(trigrams) {
    TORCH_CHECK(vocab_size_ >= 2, "HashTokenizer: vocab_size must be >= 2, got ", vocab_size_);
  }

  /// The lower-cased words of `text`, in order.
  static std::vector<std::string> words(const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    for (unsigned char c : text) {
      const bool alnum =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 128;
      if (alnum) {
        cur += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      } else if (!cur.empty()) {
        out.push_back(cur);
        cur.clear();
      }
    }
    if (!cur.empty()) {
      out.push_back(cur);
    }
    return out;
  }

  /// Every token id of `text` (no padding, no truncation).
  std::vector<int64_t> ids(const std::string& text) const {
    std::vector<int64_t> out;
    for (const auto& w : words(text)) {
      out.push_back(id("w:" + w));
      if (trigrams_) {
        const std::string b = "<" + w + ">";
        for (size_t i = 0; i + 3 <= b.size(); ++i) {
          out.push_back(id("t:" + b.substr(i, 3)));
        }
      }
    }
    return out;
  }

  /// Token ids of every text, int64 [B, max_tokens] padded with 0.
  at::Tensor tokenize(const std::vector<std::string>& texts, int64_t max_tokens) const {
    TORCH_CHECK(max_tokens > 0, "HashTokenizer: max_tokens must be > 0, got ", max_tokens);
    auto out = at::zeros({static_cast<int64_t>(texts.size()), max_tokens}, at::kLong);
    auto acc = out.accessor<int64_t, 2>();
    for (size_t b = 0; b < texts.size(); ++b) {
      const auto t = ids(texts[b]);
      for (size_t i = 0; i < t.size() && static_cast<int64_t>(i) < max_tokens; ++i) {
        acc[static_cast<int64_t>(b)][static_cast<int64_t>(i)] = t[i];
      }
    }
    return out;
  }

  int64_t vocab_size() const {
    return vocab_size_;
  }
  bool trigrams() const {
    return trigrams_;
  }
  /// E.g. "HashTokenizer(FNV-1a, V=8192, words + trigrams)".
  std::string describe() const {
    return "HashTokenizer(FNV-1a, V=" + std::to_string(vocab_size_) +
        (trigrams_ ? ", words + trigrams)" : ", words)");
  }

 private:
  int64_t id(const std::string& key) const {
    return 1 + static_cast<int64_t>(detail::fnv1a_64(key) % static_cast<uint64_t>(vocab_size_ - 1));
  }
  int64_t vocab_size_;
  bool trigrams_;
};

/// Options of `TextEncoder`.
///
/// Example:
///   auto opts = medcl::TextEncoderOptions(8192, 128).embedding_dim(64).hidden_dim(128);
struct TextEncoderOptions {
  TextEncoderOptions(int64_t vocab_size, int64_t output_dim)
      : vocab_size_(vocab_size), output_dim_(output_dim) {}
  /// Number V of token ids (that of the `HashTokenizer`); id 0 is padding. Required.
  TORCH_ARG(int64_t, vocab_size);
  /// Size D of the representation. Required.
  TORCH_ARG(int64_t, output_dim);
  /// Size of the token embeddings. Default: 128
  TORCH_ARG(int64_t, embedding_dim) = 128;
  /// Width of the MLP's hidden layer. Default: 256
  TORCH_ARG(int64_t, hidden_dim) = 256;
  /// Character trigrams in the tokenizer `encode` uses. Default: true
  TORCH_ARG(bool, trigrams) = true;
};

/// Text encoder for region names, label names and short reports: token embeddings (padding id 0,
/// whose embedding stays 0 and gets no gradient), the mean over the real tokens, and an MLP,
/// \f[ y = W_2\,\mathrm{GELU}\big(W_1 \tfrac{1}{|T|}\textstyle\sum_{t\in T} e_t + b_1\big) + b_2
/// \f] (T = the non-padding tokens; a text without tokens pools to 0). Bag-of-pieces, like fastText
/// (Bojanowski et al. 2017, https://arxiv.org/abs/1607.04606): word order is not modelled.
///
/// Shape: token ids int64 [B, L] -> [B, output_dim].
///
/// Example:
///   medcl::TextEncoder text(medcl::TextEncoderOptions(8192, 64));
///   auto h = text(medcl::HashTokenizer(8192).tokenize(names, 32));   // [B, 64]
///   auto g = text->encode(names, 32);                                 // the same
class TextEncoderImpl : public torch::nn::Cloneable<TextEncoderImpl> {
 public:
  explicit TextEncoderImpl(TextEncoderOptions opts) : options(std::move(opts)) {
    reset();
  }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.vocab_size() >= 2, "TextEncoder: vocab_size must be >= 2, got ", o.vocab_size());
    TORCH_CHECK(o.output_dim() > 0, "TextEncoder: output_dim must be > 0, got ", o.output_dim());
    TORCH_CHECK(
        o.embedding_dim() > 0, "TextEncoder: embedding_dim must be > 0, got ", o.embedding_dim());
    TORCH_CHECK(o.hidden_dim() > 0, "TextEncoder: hidden_dim must be > 0, got ", o.hidden_dim());
    embedding = register_module(
        "embedding",
        torch::nn::Embedding(
            torch::nn::EmbeddingOptions(o.vocab_size(), o.embedding_dim()).padding_idx(0)));
    fc1 = register_module("fc1", torch::nn::Linear(o.embedding_dim(), o.hidden_dim()));
    fc2 = register_module("fc2", torch::nn::Linear(o.hidden_dim(), o.output_dim()));
  }

  /// ids: int64 [B, L] token ids in [0, vocab_size).
  at::Tensor forward(const at::Tensor& ids) {
    TORCH_CHECK(
        ids.defined() && ids.dim() == 2,
        "TextEncoder: expected token ids of shape [B, L], got ",
        ids.defined() ? ids.sizes() : at::IntArrayRef{});
    TORCH_CHECK(
        ids.scalar_type() == at::kLong,
        "TextEncoder: expected int64 token ids, got ",
        ids.scalar_type());
    if (ids.numel() > 0) {
      const auto lo = ids.min().item<int64_t>();
      const auto hi = ids.max().item<int64_t>();
      TORCH_CHECK(
          lo >= 0 && hi < options.vocab_size(),
          "TextEncoder: token ids must be in [0, ",
          options.vocab_size(),
          "), got ids from ",
          lo,
          " to ",
          hi);
    }
    auto e = embedding->forward(ids); // [B, L, E]; padding rows are 0
    auto real = ids.ne(0).to(e.scalar_type()).unsqueeze(2);
    auto pooled = (e * real).sum(1) / real.sum(1).clamp_min(1.0);
    return fc2->forward(at::gelu(fc1->forward(pooled)));
  }

  /// `forward` of the texts tokenized by `tokenizer()`, on the encoder's device.
  at::Tensor encode(const std::vector<std::string>& texts, int64_t max_tokens = 32) {
    return forward(tokenizer().tokenize(texts, max_tokens).to(embedding->weight.device()));
  }

  /// The tokenizer whose ids this encoder reads.
  HashTokenizer tokenizer() const {
    return HashTokenizer(options.vocab_size(), options.trigrams());
  }
  /// Size D of the representation.
  int64_t output_dim() const {
    return options.output_dim();
  }
  /// E.g. "TextEncoder(V=8192 words + trigrams, embedding 128, hidden 256, mean pooling, D=64)".
  std::string describe() const {
    const auto& o = options;
    return "TextEncoder(V=" + std::to_string(o.vocab_size()) +
        (o.trigrams() ? " words + trigrams" : " words") + ", embedding " +
        std::to_string(o.embedding_dim()) + ", hidden " + std::to_string(o.hidden_dim()) +
        ", mean pooling, D=" + std::to_string(o.output_dim()) + ")";
  }

  TextEncoderOptions options;
  torch::nn::Embedding embedding{nullptr};
  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(TextEncoder);

} // namespace medcl
