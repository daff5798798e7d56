// mobilequant/eval/token_windows.cpp
// The three windowing rules of the perplexity protocols.
#include "mobilequant/eval/token_windows.h"

#include <algorithm>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

/// [prefix] + the first `count` tokens, every one of them scored.
ScoringWindow prefixed_window(int64_t prefix_token, const std::vector<int64_t>& tokens,
                              int64_t count, int64_t document) {
  ScoringWindow w;
  w.tokens.reserve(static_cast<size_t>(count + 1));
  w.tokens.push_back(prefix_token);
  w.tokens.insert(w.tokens.end(), tokens.begin(), tokens.begin() + count);
  w.num_scored = count;
  w.document = document;
  return w;
}

}  // namespace

std::vector<ScoringWindow> rolling_token_windows(const std::vector<int64_t>& tokens,
                                                 int64_t prefix_token, int64_t max_length,
                                                 int64_t document) {
  MQ_CHECK(max_length >= 1, "rolling windows: max_length must be >= 1, got ", max_length);
  std::vector<ScoringWindow> out;
  const auto n = static_cast<int64_t>(tokens.size());
  if (n == 0) return out;
  // First window: [prefix] + the first min(max_length, n) tokens, all of them predicted.
  const int64_t first = std::min(max_length, n);
  out.push_back(prefixed_window(prefix_token, tokens, first, document));
  // Later windows: predict up to max_length new tokens, with a full max_length-token input
  // ending just before the last predicted token (context_len = 1 => pred_len = max_length).
  int64_t predicted = first;
  while (predicted < n) {
    const int64_t k = std::min(n - predicted, max_length);
    const int64_t end = predicted + k;  // one past the last predicted token
    ScoringWindow v;
    v.tokens.assign(tokens.begin() + (end - max_length - 1), tokens.begin() + end);
    v.num_scored = k;
    v.document = document;
    out.push_back(std::move(v));
    predicted = end;
  }
  return out;
}

std::vector<ScoringWindow> gptq_windows(const std::vector<int64_t>& tokens, int64_t seqlen) {
  MQ_CHECK(seqlen >= 2, "GPTQ windows: seqlen must be >= 2, got ", seqlen);
  const int64_t nsamples = static_cast<int64_t>(tokens.size()) / seqlen;
  std::vector<ScoringWindow> out;
  out.reserve(static_cast<size_t>(nsamples));
  for (int64_t i = 0; i < nsamples; ++i) {
    ScoringWindow w;
    w.tokens.assign(tokens.begin() + i * seqlen, tokens.begin() + (i + 1) * seqlen);
    w.num_scored = seqlen - 1;
    w.document = i;
    out.push_back(std::move(w));
  }
  return out;
}

std::vector<ScoringWindow> prefixed_document_window(const std::vector<int64_t>& tokens,
                                                    int64_t prefix_token, int64_t max_length,
                                                    int64_t document) {
  MQ_CHECK(max_length >= 2, "document window: max_length must be >= 2, got ", max_length);
  std::vector<ScoringWindow> out;
  if (tokens.empty()) return out;
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(tokens.size()), max_length - 1);
  out.push_back(prefixed_window(prefix_token, tokens, keep, document));
  return out;
}

int64_t count_scored(const std::vector<ScoringWindow>& windows) {
  int64_t n = 0;
  for (const auto& w : windows) n += w.num_scored;
  return n;
}

}  // namespace mq
