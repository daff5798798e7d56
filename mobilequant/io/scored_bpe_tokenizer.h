// mobilequant/io/scored_bpe_tokenizer.h
// The SentencePiece-style BPE that llama2.c's `tokenizer.bin` and GGUF's
// "llama" tokenizer kind describe: a vocabulary of pieces with scores; encoding
// adds a dummy-prefix space, splits into UTF-8 characters (unknown ones fall back
// to <0xXX> byte pieces) and repeatedly merges the adjacent pair whose merged
// piece has the highest score (llama2.c's `encode`, llama.cpp's SPM tokenizer).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mobilequant/io/tokenizer.h"

namespace mq {

/// Scored-merge BPE with byte fallback.
class ScoredBpeTokenizer : public Tokenizer {
 public:
  /// Special ids and switches.
  struct Options {
    int64_t unk_id = 0;             ///< unknown piece
    int64_t bos_id = 1;             ///< begin of sequence
    int64_t eos_id = 2;             ///< end of sequence
    bool add_dummy_prefix = true;   ///< prepend " " before encoding (SentencePiece default)
    bool adds_bos = true;           ///< Hugging Face's default call prepends BOS
  };
  /// pieces[i] is id i's text ("▁" already turned into " " is fine: both are accepted);
  /// scores[i] its merge score (higher merges first).
  ScoredBpeTokenizer(std::vector<std::string> pieces, std::vector<float> scores, Options opts);
  /// Reads llama2.c's tokenizer.bin (int32 max_token_length, then per token: float score,
  /// int32 length, bytes); `vocab_size` comes from the model header. Throws naming the file.
  static std::shared_ptr<ScoredBpeTokenizer> from_llama2c(const std::string& path,
                                                         int64_t vocab_size);

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const override { return opts_.bos_id; }
  int64_t eos_id() const override { return opts_.eos_id; }
  bool adds_bos() const override { return opts_.adds_bos; }

 private:
  std::vector<std::string> pieces_;                  // id -> text (with spaces, not "▁")
  std::vector<float> scores_;                        // id -> merge score
  std::unordered_map<std::string, int64_t> lookup_;  // text -> id
  int64_t byte_base_ = -1;                           // id of <0x00>, or -1 without byte pieces
  Options opts_;
};

}  // namespace mq
