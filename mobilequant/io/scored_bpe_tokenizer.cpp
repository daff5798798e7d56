// mobilequant/io/scored_bpe_tokenizer.cpp
// Encoding is llama2.c's greedy merge (highest-scoring adjacent pair first, the
// leftmost among equals), run with a heap over a linked list of symbols so that
// long documents stay O(n log n) instead of llama2.c's O(n^2).
// Two details follow SentencePiece's BPE (and so llama.cpp's GGUF "llama" vocabularies)
// where llama2.c's run.c is silent: a byte that does not start well-formed UTF-8 becomes
// U+FFFD before lookup, and merges never produce the BOS/EOS/unknown or <0xXX> pieces.
#include "mobilequant/io/scored_bpe_tokenizer.h"

#include <cstdio>
#include <fstream>
#include <queue>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

constexpr const char* kSpmSpace = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space

/// Replaces every "▁" with " ".
std::string spm_to_spaces(const std::string& piece) {
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, 3, kSpmSpace) == 0) {
      out.push_back(' ');
      i += 3;
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

/// Length in bytes of the well-formed UTF-8 character at text[i], or 0 when the bytes there
/// are not one (bad lead or trail byte, truncated, overlong, surrogate, above U+10FFFF).
/// SentencePiece's normalizer replaces each such byte with U+FFFD; so does encode().
size_t valid_utf8_length(const std::string& text, size_t i) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const auto trail = [&](size_t k) { return i + k < text.size() && (at(k) & 0xC0) == 0x80; };
  const unsigned char lead = at(0);
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0 && trail(1)) {
    const uint32_t cp = (static_cast<uint32_t>(lead & 0x1F) << 6) | (at(1) & 0x3F);
    return cp >= 0x80 ? 2 : 0;
  }
  if ((lead & 0xF0) == 0xE0 && trail(1) && trail(2)) {
    const uint32_t cp = (static_cast<uint32_t>(lead & 0x0F) << 12) |
                        (static_cast<uint32_t>(at(1) & 0x3F) << 6) | (at(2) & 0x3F);
    return cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000) ? 3 : 0;
  }
  if ((lead & 0xF8) == 0xF0 && trail(1) && trail(2) && trail(3)) {
    const uint32_t cp = (static_cast<uint32_t>(lead & 0x07) << 18) |
                        (static_cast<uint32_t>(at(1) & 0x3F) << 12) |
                        (static_cast<uint32_t>(at(2) & 0x3F) << 6) | (at(3) & 0x3F);
    return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
  }
  return 0;
}

/// Parses "<0xAB>" into 0xAB; returns -1 for any other piece.
int parse_byte_piece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  unsigned value = 0;
  if (std::sscanf(piece.c_str() + 3, "%2X", &value) != 1) return -1;
  return static_cast<int>(value);
}

}  // namespace

ScoredBpeTokenizer::ScoredBpeTokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                                       Options opts)
    : pieces_(std::move(pieces)), scores_(std::move(scores)), opts_(opts) {
  MQ_CHECK(pieces_.size() == scores_.size(), "ScoredBpeTokenizer: ", pieces_.size(),
           " pieces but ", scores_.size(), " scores");
  for (size_t id = 0; id < pieces_.size(); ++id) {
    pieces_[id] = spm_to_spaces(pieces_[id]);
    // The first id wins for duplicate texts, as llama2.c's sorted lookup effectively does.
    lookup_.emplace(pieces_[id], static_cast<int64_t>(id));
    if (parse_byte_piece(pieces_[id]) == 0 && byte_base_ < 0) byte_base_ = static_cast<int64_t>(id);
  }
  if (byte_base_ >= 0) {
    // Byte pieces must be contiguous <0x00>..<0xFF> for the fallback arithmetic.
    for (int b = 0; b < 256; ++b) {
      const int64_t id = byte_base_ + b;
      MQ_CHECK(id < vocab_size() && parse_byte_piece(pieces_[id]) == b,
               "ScoredBpeTokenizer: byte pieces are not contiguous: expected <0x", std::hex, b,
               "> at id ", std::dec, id);
    }
  }
}

std::shared_ptr<ScoredBpeTokenizer> ScoredBpeTokenizer::from_llama2c(const std::string& path,
                                                                     int64_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  MQ_CHECK(in.good(), "tokenizer '", path, "': cannot open file");
  MQ_CHECK(vocab_size > 0, "tokenizer '", path, "': vocab_size must be positive, got ", vocab_size);
  int32_t max_len = 0;
  in.read(reinterpret_cast<char*>(&max_len), 4);
  MQ_CHECK(in.good(), "tokenizer '", path, "': truncated header (expected int32 max_token_length)");
  MQ_CHECK(max_len > 0 && max_len < 4096, "tokenizer '", path,
           "': max_token_length must be in [1, 4095], got ", max_len,
           " (is this a llama2.c tokenizer.bin?)");
  std::vector<std::string> pieces(vocab_size);
  std::vector<float> scores(vocab_size);
  for (int64_t id = 0; id < vocab_size; ++id) {
    int32_t len = 0;
    in.read(reinterpret_cast<char*>(&scores[id]), 4);
    in.read(reinterpret_cast<char*>(&len), 4);
    MQ_CHECK(in.good(), "tokenizer '", path, "': truncated at token ", id, " of ", vocab_size,
             " (expected float score and int32 length)");
    MQ_CHECK(len >= 0 && len <= max_len, "tokenizer '", path, "': token ", id, " has length ", len,
             ", expected 0..", max_len);
    pieces[id].resize(len);
    in.read(pieces[id].data(), len);
    MQ_CHECK(in.good(), "tokenizer '", path, "': truncated in the bytes of token ", id, " (",
             len, " bytes expected)");
  }
  Options opts;  // llama2.c: unk 0, BOS 1, EOS 2, dummy prefix, BOS prepended
  return std::make_shared<ScoredBpeTokenizer>(std::move(pieces), std::move(scores), opts);
}

std::vector<int64_t> ScoredBpeTokenizer::encode(const std::string& raw) const {
  if (raw.empty()) return {};
  const std::string text = opts_.add_dummy_prefix ? " " + spm_to_spaces(raw) : spm_to_spaces(raw);

  // 1. Initial symbols: one per UTF-8 character, or its bytes when the character is unknown.
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  //    A byte that does not start a well-formed UTF-8 character stands for U+FFFD.
  for (size_t i = 0; i < text.size();) {
    const size_t n = valid_utf8_length(text, i);
    const std::string ch = n > 0 ? text.substr(i, n) : std::string(kReplacement);
    auto it = lookup_.find(ch);
    if (it != lookup_.end()) {
      ids.push_back(it->second);
    } else {
      for (const char c : ch) {
        const auto byte = static_cast<unsigned char>(c);
        ids.push_back(byte_base_ >= 0 ? byte_base_ + byte : opts_.unk_id);
      }
    }
    i += n > 0 ? n : 1;
  }

  // 2. Merges: a doubly linked list of symbols and a heap of candidate pairs ordered by
  //    (score desc, left position asc). Stale candidates are skipped when popped.
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int64_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int64_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    float score;
    int64_t left, right, merged;
    bool operator<(const Candidate& o) const {  // max-heap: higher score, then smaller left
      if (score != o.score) return score < o.score;
      return left > o.left;
    }
  };
  std::priority_queue<Candidate> heap;
  auto push = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0) return;
    auto it = lookup_.find(pieces_[ids[left]] + pieces_[ids[right]]);
    if (it == lookup_.end()) return;
    // Like SentencePiece, never merge into a special or a byte piece (e.g. "<s>" typed out).
    const int64_t m = it->second;
    if (m == opts_.bos_id || m == opts_.eos_id || m == opts_.unk_id) return;
    if (byte_base_ >= 0 && m >= byte_base_ && m < byte_base_ + 256) return;
    heap.push({scores_[m], left, right, m});
  };
  for (int64_t i = 0; i + 1 < n; ++i) push(i, i + 1);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right) continue;
    if (pieces_[ids[c.left]] + pieces_[ids[c.right]] != pieces_[c.merged]) continue;  // stale
    ids[c.left] = c.merged;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    push(prev[c.left], c.left);
    push(c.left, next[c.left]);
  }
  std::vector<int64_t> out;
  for (int64_t i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(ids[i]);
  return out;
}

std::string ScoredBpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    if (id == opts_.bos_id || id == opts_.eos_id) continue;
    MQ_CHECK(id >= 0 && id < vocab_size(), "ScoredBpeTokenizer::decode: id ", id,
             " outside the vocabulary [0, ", vocab_size(), ")");
    const int byte = parse_byte_piece(pieces_[id]);
    if (byte >= 0) {
      out.push_back(static_cast<char>(byte));
    } else {
      out += pieces_[id];
    }
  }
  if (opts_.add_dummy_prefix && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

}  // namespace mq
