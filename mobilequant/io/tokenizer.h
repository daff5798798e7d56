// mobilequant/io/tokenizer.h
// The tokenizer interface every model carries. Implementations:
// SentencePiece `.model` (spm_tokenizer), llama2.c `tokenizer.bin` and GGUF's
// llama kind (scored_bpe_tokenizer), GGUF's GPT-2 byte-level BPE (bpe_tokenizer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mq {

/// Text <-> token ids. encode() never adds BOS/EOS; callers decide (see eval/).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// Encodes `text` without special tokens (a SentencePiece-style tokenizer still
  /// adds its dummy-prefix space where its model says so).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  /// Decodes ids back to text; special tokens (BOS/EOS) are dropped.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  /// Number of ids.
  virtual int64_t vocab_size() const = 0;
  /// Begin-of-sequence id, or -1 if the tokenizer has none.
  virtual int64_t bos_id() const = 0;
  /// End-of-sequence id, or -1 if the tokenizer has none.
  virtual int64_t eos_id() const = 0;
  /// Whether Hugging Face's default call (add_special_tokens=True) prepends BOS.
  virtual bool adds_bos() const = 0;
};

}  // namespace mq
