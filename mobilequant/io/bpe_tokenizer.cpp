// mobilequant/io/bpe_tokenizer.cpp
// Byte-level BPE: GPT-2's byte alphabet, the hand-written GPT-2 split regex over Unicode
// categories from ICU, rank-ordered merges, and added-token matching as `tokenizers` does it.
#include "mobilequant/io/bpe_tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <functional>
#include <queue>
#include <set>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

// Decodes the UTF-8 code point at text[i]; invalid bytes decode as one U+FFFD of length 1.
std::pair<char32_t, size_t> next_code_point(const std::string& text, size_t i) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) return {b0, 1};
  size_t len = 0;
  char32_t cp = 0;
  if ((b0 & 0xE0) == 0xC0 && b0 >= 0xC2) {
    len = 2;
    cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3;
    cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
  } else {
    return {0xFFFD, 1};
  }
  if (i + len > text.size()) return {0xFFFD, 1};
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0) != 0x80) return {0xFFFD, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  const bool overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
  if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {0xFFFD, 1};
  return {cp, len};
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes map
// to U+0100.. in byte order.
struct ByteAlphabet {
  char32_t to_cp[256];
  std::string to_text[256];  // UTF-8 of to_cp
  ByteAlphabet() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      append_utf8(to_cp[b], to_text[b]);
    }
  }
  // The byte a code point stands for, or -1 outside the alphabet.
  int byte_of(char32_t cp) const {
    if (cp < 256) {
      const bool printable = (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || cp >= 174;
      return printable ? static_cast<int>(cp) : -1;
    }
    for (int b = 0; b < 256; ++b) {
      if (to_cp[b] == cp) return b;
    }
    return -1;
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// Whether every code point of `s` is in the byte alphabet (and `s` is valid UTF-8).
bool in_alphabet(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    auto [cp, len] = next_code_point(s, i);
    if (cp == 0xFFFD && len == 1) return false;  // invalid UTF-8
    if (alphabet().byte_of(cp) < 0) return false;
    i += len;
  }
  return true;
}

// The byte-alphabet spelling of raw bytes.
std::string spell_bytes(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) out += alphabet().to_text[b];
  return out;
}

// Unicode classes of the GPT-2 regex.
enum class CharClass { kSpace, kLetter, kNumber, kOther };

CharClass classify(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_isUWhiteSpace(c)) return CharClass::kSpace;
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

// Transformers' GGUF pre-tokenizer names that split with a regex other than GPT-2's.
const std::set<std::string>& other_regex_names() {
  static const std::set<std::string> names{
      "llama3",  "llama-v3",   "llama-bpe",   "falcon3",   "falcon-h1",        "pixtral",
      "midm-2.0", "lfm2",      "jina-v5-nano", "dbrx",     "smaug-bpe",        "tekken",
      "qwen2",   "deepseek-r1-qwen", "kormo", "f2llmv2",   "megrez",           "qwen35",
      "gpt-4o",  "llama4",     "kanana2",     "talkie",    "minimax-m2"};
  return names;
}

}  // namespace

BpeTokenizer::PreTokenizer BpeTokenizer::parse_pre_tokenizer(const std::string& name,
                                                             const std::string& where) {
  MQ_CHECK(other_regex_names().count(name) == 0, where, ": tokenizer.ggml.pre '", name,
           "' needs a pre-tokenizer regex that is not implemented (supported: GPT-2's, used for "
           "'default', 'gpt2', 'smollm' and other names transformers has no split for)");
  return PreTokenizer::kGpt2;
}

BpeTokenizer::BpeTokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                           std::vector<int32_t> token_types, Options opts,
                           const std::string& where)
    : types_(std::move(token_types)), opts_(opts) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  MQ_CHECK(n > 0, where, ": empty vocabulary (tokenizer.ggml.tokens)");
  MQ_CHECK(types_.empty() || static_cast<int64_t>(types_.size()) == n, where,
           ": tokenizer.ggml.token_type has ", types_.size(), " entries, expected ", n,
           " (one per token)");
  if (types_.empty()) types_.assign(n, kNormal);
  MQ_CHECK(opts_.bos_id < n && opts_.eos_id < n, where, ": bos id ", opts_.bos_id, " / eos id ",
           opts_.eos_id, " outside the vocabulary of ", n, " tokens");

  // Spellings: tokens already in the byte alphabet stay; others are spelled byte by byte
  // (transformers' byte_level_tokenizer). A later duplicate spelling wins, as in a dict.
  spellings_.resize(n);
  for (int64_t id = 0; id < n; ++id) {
    spellings_[id] = in_alphabet(tokens[id]) ? tokens[id] : spell_bytes(tokens[id]);
    vocab_[spellings_[id]] = id;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(alphabet().to_text[b]);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const size_t sp = m.find(' ');
    MQ_CHECK(sp != std::string::npos && m.find(' ', sp + 1) == std::string::npos, where,
             ": merge #", rank, " '", m, "' is not two tokens separated by one space");
    const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    auto l = vocab_.find(left), r = vocab_.find(right), j = vocab_.find(left + right);
    MQ_CHECK(l != vocab_.end() && r != vocab_.end() && j != vocab_.end(), where, ": merge #",
             rank, " '", m, "' names a token that is not in the vocabulary");
    const uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint64_t>(r->second);
    // The first (lowest-rank) occurrence of a pair counts.
    merges_.emplace(key, std::make_pair(static_cast<int32_t>(rank), j->second));
  }

  // Added tokens, as transformers adds them from a GGUF: control tokens spelled in the byte
  // alphabet (special), user-defined tokens present in the vocabulary, and BOS/EOS.
  std::set<int64_t> added_ids;
  for (int64_t id = 0; id < n; ++id) {
    const bool control = types_[id] == kControl && in_alphabet(tokens[id]);
    const bool user = types_[id] == kUserDefined && vocab_.count(tokens[id]) != 0;
    if ((control || user) && !tokens[id].empty()) {
      added_ids.insert(vocab_.at(tokens[id]));
    }
  }
  for (int64_t id : {opts_.bos_id, opts_.eos_id}) {
    if (id >= 0 && !tokens[id].empty()) added_ids.insert(vocab_.at(spellings_[id]));
  }
  for (int64_t id : added_ids) added_.emplace_back(tokens[id], id);
  std::stable_sort(added_.begin(), added_.end(), [](const auto& a, const auto& b) {
    return a.first.size() > b.first.size();
  });
}

std::vector<std::string> BpeTokenizer::pre_tokenize(const std::string& text) const {
  // Code points with their byte offsets (one extra entry marks the end).
  std::vector<char32_t> cps;
  std::vector<size_t> offs;
  for (size_t i = 0; i < text.size();) {
    auto [cp, len] = next_code_point(text, i);
    cps.push_back(cp);
    offs.push_back(i);
    i += len;
  }
  offs.push_back(text.size());
  const size_t n = cps.size();
  std::vector<CharClass> cls(n);
  for (size_t k = 0; k < n; ++k) cls[k] = classify(cps[k]);

  std::vector<std::string> pieces;
  size_t i = 0;
  auto run_of = [&](size_t from, CharClass c) {
    size_t j = from;
    while (j < n && cls[j] == c) ++j;
    return j;
  };
  while (i < n) {
    size_t end = i;
    // 's|'t|'re|'ve|'m|'ll|'d
    if (cps[i] == U'\'' && i + 1 < n) {
      const char32_t a = cps[i + 1], b = i + 2 < n ? cps[i + 2] : 0;
      if (a == U's' || a == U't' || a == U'm' || a == U'd') {
        end = i + 2;
      } else if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) {
        end = i + 3;
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
    if (end == i) {
      const size_t start = (cps[i] == U' ' && i + 1 < n) ? i + 1 : i;
      for (CharClass c : {CharClass::kLetter, CharClass::kNumber, CharClass::kOther}) {
        if (cls[start] == c) {
          end = run_of(start, c);
          break;
        }
      }
      // A lone ' ' that prefixes nothing falls through to the whitespace rules.
    }
    // '\s+(?!\S)' then '\s+'
    if (end == i) {
      const size_t stop = run_of(i, CharClass::kSpace);
      if (stop == n || stop - i == 1) {
        end = stop;
      } else {
        end = stop - 1;  // leave the last space to prefix the next word
      }
    }
    pieces.push_back(text.substr(offs[i], offs[end] - offs[i]));
    i = end;
  }
  return pieces;
}

void BpeTokenizer::encode_piece(const std::string& piece, std::vector<int64_t>& out) const {
  // Symbols as a linked list; candidate merges in a min-heap keyed by (rank, position), so the
  // lowest-rank pair merges first and the leftmost among equals (as `tokenizers` does), in
  // O(n log n) even for long runs of one character.
  struct Symbol {
    int64_t id;
    int prev, next;  // neighbours, -1 at the ends
  };
  std::vector<Symbol> sym;
  sym.reserve(piece.size());
  for (unsigned char b : piece) {
    if (byte_ids_[b] < 0) continue;  // bytes outside the vocab are dropped
    const int k = static_cast<int>(sym.size());
    sym.push_back({byte_ids_[b], k - 1, -1});
    if (k > 0) sym[k - 1].next = k;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    int64_t left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    const int64_t l = sym[pos].id, r = sym[sym[pos].next].id;
    auto it = merges_.find((static_cast<uint64_t>(l) << 32) | static_cast<uint64_t>(r));
    if (it != merges_.end()) heap.push({it->second.first, pos, l, r});
  };
  for (int k = 0; k + 1 < static_cast<int>(sym.size()); ++k) push(k);
  std::vector<bool> dead(sym.size(), false);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int q = sym[c.pos].next;
    // Stale unless the pair at pos is still exactly (left, right).
    if (dead[c.pos] || q < 0 || sym[c.pos].id != c.left || sym[q].id != c.right) continue;
    auto it = merges_.find((static_cast<uint64_t>(c.left) << 32) | static_cast<uint64_t>(c.right));
    sym[c.pos].id = it->second.second;
    dead[q] = true;
    sym[c.pos].next = sym[q].next;
    if (sym[q].next >= 0) sym[sym[q].next].prev = c.pos;
    push(sym[c.pos].prev);
    push(c.pos);
  }
  for (int k = sym.empty() ? -1 : 0; k >= 0; k = sym[k].next) out.push_back(sym[k].id);
}

void BpeTokenizer::encode_plain(const std::string& text, std::vector<int64_t>& out) const {
  for (const std::string& piece : pre_tokenize(text)) encode_piece(piece, out);
}

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  size_t plain_start = 0;
  for (size_t i = 0; i < text.size();) {
    // Leftmost, then longest (added_ is sorted longest first).
    const std::pair<std::string, int64_t>* hit = nullptr;
    for (const auto& a : added_) {
      if (text.compare(i, a.first.size(), a.first) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    encode_plain(text.substr(plain_start, i - plain_start), out);
    out.push_back(hit->second);
    i += hit->first.size();
    plain_start = i;
  }
  encode_plain(text.substr(plain_start), out);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string bytes;
  for (int64_t id : ids) {
    MQ_CHECK(id >= 0 && id < vocab_size(), "BpeTokenizer::decode: id ", id,
             " outside the vocabulary of ", vocab_size(), " tokens");
    if (types_[id] == kControl) continue;
    const std::string& s = spellings_[id];
    for (size_t i = 0; i < s.size();) {
      auto [cp, len] = next_code_point(s, i);
      const int b = alphabet().byte_of(cp);
      if (b >= 0) {
        bytes += static_cast<char>(b);
      } else {
        bytes.append(s, i, len);
      }
      i += len;
    }
  }
  // Invalid UTF-8 -> U+FFFD per maximal invalid subpart (Python's errors="replace").
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    auto [cp, len] = next_code_point(bytes, i);
    if (cp == 0xFFFD && len == 1) {
      out += "\xEF\xBF\xBD";
      // Skip the continuation bytes that belong to the same broken sequence.
      const auto b0 = static_cast<unsigned char>(bytes[i]);
      size_t want = (b0 >= 0xC2 && b0 <= 0xDF) ? 2 : (b0 >= 0xE0 && b0 <= 0xEF) ? 3
                  : (b0 >= 0xF0 && b0 <= 0xF4) ? 4 : 1;
      size_t k = 1;
      while (k < want && i + k < bytes.size()) {
        const auto b = static_cast<unsigned char>(bytes[i + k]);
        unsigned char lo = 0x80, hi = 0xBF;
        if (k == 1 && b0 == 0xE0) lo = 0xA0;
        if (k == 1 && b0 == 0xED) hi = 0x9F;
        if (k == 1 && b0 == 0xF0) lo = 0x90;
        if (k == 1 && b0 == 0xF4) hi = 0x8F;
        if (b < lo || b > hi) break;
        ++k;
      }
      i += k;
      continue;
    }
    out.append(bytes, i, len);
    i += len;
  }
  return out;
}

}  // namespace mq
