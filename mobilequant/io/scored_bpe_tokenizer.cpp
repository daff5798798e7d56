// mobilequant/io/scored_bpe_tokenizer.cpp
// Encoding is llama2.c's greedy merge (highest-scoring adjacent pair first, the
// leftmost among equals), run with a heap over a linked list of symbols so that
// long documents stay O(n log n) instead of llama2.c's O(n^2).
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

/// Length in bytes of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes).
size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
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
  for (size_t i = 0; i < text.size();) {
    size_t n = std::min(utf8_length(static_cast<unsigned char>(text[i])), text.size() - i);
    auto it = lookup_.find(text.substr(i, n));
    if (it != lookup_.end()) {
      ids.push_back(it->second);
    } else {
      for (size_t k = 0; k < n; ++k) {
        const auto byte = static_cast<unsigned char>(text[i + k]);
        ids.push_back(byte_base_ >= 0 ? byte_base_ + byte : opts_.unk_id);
      }
    }
    i += n;
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
    if (it != lookup_.end()) heap.push({scores_[it->second], left, right, it->second});
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
