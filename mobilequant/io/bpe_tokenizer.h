// mobilequant/io/bpe_tokenizer.h
// GPT-2 byte-level BPE, as a GGUF file with `tokenizer.ggml.model == "gpt2"` describes it
// (tokens, merges, token types) and as Hugging Face `transformers` rebuilds it from such a
// file (integrations/gguf/gguf_tokenizer_mapping.py: GPT2Tokenizer + added tokens):
//   1. control tokens (type 3, e.g. <|im_start|>) and user-defined tokens (type 4) found in
//      the text are matched whole (leftmost, then longest) and emitted as their ids;
//   2. the text between them is split by the pre-tokenizer regex (GPT-2's
//      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ ,
//      which is what transformers uses for `tokenizer.ggml.pre` "default", "gpt2", "smollm"
//      and every name it has no other split for), with Unicode categories from ICU;
//   3. each piece's UTF-8 bytes become GPT-2's printable byte alphabet and are merged
//      lowest-rank pair first (leftmost on ties).
// Decoding maps the byte alphabet back to bytes and UTF-8 (invalid sequences -> U+FFFD).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mobilequant/io/tokenizer.h"

namespace mq {

/// Byte-level BPE (GPT-2 style) with added/special tokens matched whole.
class BpeTokenizer : public Tokenizer {
 public:
  /// The regex that splits text into pieces before merging.
  enum class PreTokenizer {
    kGpt2,  ///< GPT-2's ByteLevel split (transformers' default for GGUF gpt2 vocabularies)
  };
  /// Special ids and switches.
  struct Options {
    int64_t bos_id = -1;                     ///< begin of sequence, -1 if none
    int64_t eos_id = -1;                     ///< end of sequence, -1 if none
    bool adds_bos = false;                   ///< Hugging Face's default call prepends BOS
    PreTokenizer pre = PreTokenizer::kGpt2;  ///< the split regex
  };
  /// GGUF token types (`tokenizer.ggml.token_type`).
  enum TokenType : int32_t {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
  };

  /// tokens[i] is id i's text as the file spells it (byte alphabet); merges are "left right"
  /// strings in rank order; token_types may be empty (all normal). `where` names the source
  /// in errors (a merge naming an unknown token, a malformed merge).
  BpeTokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
               std::vector<int32_t> token_types, Options opts, const std::string& where);

  /// Maps GGUF's `tokenizer.ggml.pre` to the split transformers uses; throws naming `where`
  /// for names transformers splits with a regex this class does not implement.
  static PreTokenizer parse_pre_tokenizer(const std::string& name, const std::string& where);

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(spellings_.size()); }
  int64_t bos_id() const override { return opts_.bos_id; }
  int64_t eos_id() const override { return opts_.eos_id; }
  bool adds_bos() const override { return opts_.adds_bos; }

  /// The pre-tokenizer's pieces of `text` (no added-token matching), for tests and debugging.
  std::vector<std::string> pre_tokenize(const std::string& text) const;

 private:
  // Appends the BPE ids of one pre-tokenized piece (UTF-8 bytes).
  void encode_piece(const std::string& piece, std::vector<int64_t>& out) const;
  // Appends the ids of text that contains no added token.
  void encode_plain(const std::string& text, std::vector<int64_t>& out) const;

  std::vector<std::string> spellings_;                  // id -> byte-alphabet spelling
  std::vector<int32_t> types_;                          // id -> GGUF token type
  std::unordered_map<std::string, int64_t> vocab_;      // byte-alphabet spelling -> id
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>> merges_;  // (left,right) -> (rank, id)
  int64_t byte_ids_[256];                               // byte -> id of its one-char token, or -1
  std::vector<std::pair<std::string, int64_t>> added_;  // added tokens (text, id), longest first
  Options opts_;
};

}  // namespace mq
