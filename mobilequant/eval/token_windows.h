// mobilequant/eval/token_windows.h
// How each perplexity protocol cuts token sequences into model inputs. A ScoringWindow
// is one model call's worth of tokens plus how many of its last predictions count; the
// scorer (eval/window_scorer.h) turns windows into log-likelihoods. Pure functions of
// token ids: no model, no tokenizer.
//
//   lm-eval rolling windows (loglikelihood_rolling, context_len=1): the first window is
//     [prefix] + tokens and predicts every token it holds; later windows predict up to
//     max_length new tokens each and carry max_length - n tokens of context before them,
//     so every input is max_length long except the first (and a short document's only one)
//     and every token is scored exactly once.
//   GPTQ/OmniQuant windows: non-overlapping seqlen-token slices, the tail dropped; within a
//     slice the first token is context only (HF's shifted labels), so seqlen-1 are scored.
//   Document windows: [BOS] + tokens cut to max_length, every next token scored.
#pragma once

#include <cstdint>
#include <vector>

namespace mq {

/// One model input and the predictions it contributes.
struct ScoringWindow {
  /// [L+1] ids: the model reads tokens[0..L) and position t predicts tokens[t+1].
  std::vector<int64_t> tokens;
  /// Only the last num_scored predictions count (1 <= num_scored <= L).
  int64_t num_scored = 0;
  /// Index of the document (or sequence) the window belongs to.
  int64_t document = 0;

  /// Model input length L.
  int64_t input_length() const { return static_cast<int64_t>(tokens.size()) - 1; }
};

/// lm-eval v0.3's get_rolling_token_windows(prefix_token, max_seq_len=max_length,
/// context_len=1) followed by make_disjoint_window, as model inputs: nothing for an empty
/// `tokens`; throws mq::Error if max_length < 1.
std::vector<ScoringWindow> rolling_token_windows(const std::vector<int64_t>& tokens,
                                                 int64_t prefix_token, int64_t max_length,
                                                 int64_t document = 0);

/// GPTQ/OmniQuant's test loop: nsamples = tokens.size() / seqlen slices
/// tokens[i*seqlen, (i+1)*seqlen), each scoring its seqlen-1 next-token predictions.
/// Throws mq::Error if seqlen < 2.
std::vector<ScoringWindow> gptq_windows(const std::vector<int64_t>& tokens, int64_t seqlen);

/// One document scored after a prefix token: [prefix] + tokens, cut to max_length ids in all
/// (prefix included), every next token scored; empty if nothing is left to score.
/// Throws mq::Error if max_length < 2.
std::vector<ScoringWindow> prefixed_document_window(const std::vector<int64_t>& tokens,
                                                    int64_t prefix_token, int64_t max_length,
                                                    int64_t document = 0);

/// Total number of scored predictions of `windows`.
int64_t count_scored(const std::vector<ScoringWindow>& windows);

}  // namespace mq
