// mobilequant/io/spm_tokenizer.h
// mq::Tokenizer over a SentencePiece `tokenizer.model` (libsentencepiece), the
// tokenizer that Hugging Face's Llama and Gemma checkpoints ship. encode() adds
// no BOS/EOS but keeps SentencePiece's own normalisation (dummy-prefix space);
// decode() drops control pieces. Not a reimplementation: the library does the work.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mobilequant/io/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}  // namespace sentencepiece

namespace mq {

/// A SentencePiece model loaded from a `.model` file.
class SpmTokenizer : public Tokenizer {
 public:
  /// Loads `path`; throws mq::Error naming the file if it is missing or not a SentencePiece
  /// model. `adds_bos`: whether Hugging Face's default call prepends BOS (tokenizer_config's
  /// add_bos_token; true for Llama and Gemma).
  explicit SpmTokenizer(const std::string& path, bool adds_bos = true);
  ~SpmTokenizer() override;

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override;
  int64_t bos_id() const override;
  int64_t eos_id() const override;
  bool adds_bos() const override { return adds_bos_; }
  /// The unknown-piece id, or -1 if the model has none.
  int64_t unk_id() const;
  /// The file it was loaded from.
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool adds_bos_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace mq
