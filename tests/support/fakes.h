// tests/support/fakes.h
// Small stand-ins the tests share: a byte-level tokenizer (ids = byte + 3; 1 = BOS, 2 = EOS),
// a QuantSpec builder and a tiny random llama over that vocabulary.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/config/quant_spec.h"
#include "mobilequant/io/tokenizer.h"
#include "mobilequant/models/decoder.h"

namespace mq::test {

/// Bytes as ids (byte + 3), BOS `bos` (1 by default, -1: none) added when `adds_bos`, EOS 2.
class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(bool adds_bos, int64_t bos = 1) : adds_bos_(adds_bos), bos_(bos) {}
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids;
    for (unsigned char c : text) ids.push_back(static_cast<int64_t>(c) + 3);
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (int64_t id : ids) {
      if (id >= 3) s += static_cast<char>(id - 3);
    }
    return s;
  }
  int64_t vocab_size() const override { return 259; }
  int64_t bos_id() const override { return bos_; }
  int64_t eos_id() const override { return 2; }
  bool adds_bos() const override { return adds_bos_; }

 private:
  bool adds_bos_;
  int64_t bos_;
};

/// A GQA llama with random weights over ByteTokenizer's 259 ids (C 32, F 64, 4 heads of 8, 2
/// KV heads), in eval mode; equal seeds give equal weights.
inline CausalLm tiny_byte_llama(int64_t layers, uint64_t seed) {
  torch::manual_seed(seed);
  ModelConfig cfg;
  cfg.vocab_size = 259;
  cfg.hidden_size = 32;
  cfg.intermediate_size = 64;
  cfg.num_hidden_layers = layers;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 8;
  cfg.max_position_embeddings = 512;
  CausalLm model(cfg);
  model->eval();
  return model;
}

/// An enabled QuantSpec with the given fields.
inline QuantSpec make_spec(int64_t bits, bool symmetric, Granularity g, int64_t group_size = 0) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = symmetric;
  s.granularity = g;
  s.group_size = group_size;
  return s;
}

}  // namespace mq::test
