// mobilequant/eval/window_scorer.h
// Turns ScoringWindows into summed log-likelihoods with a CausalLm: windows of equal
// input length are batched (no padding, so every window sees exactly its own tokens),
// moved to the model's device, run through the body once, and the classifier plus
// log-softmax are applied to the scored positions only, in row chunks bounded by
// `max_logit_elements`, so a 2048-token window over a 50k vocabulary never materialises
// [B, T, V] at once. Log-probabilities are computed in fp32 (whatever the model dtype)
// and accumulated in float64.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "mobilequant/eval/token_windows.h"
#include "mobilequant/models/decoder.h"

namespace mq {

/// Where a scoring run stands, for progress displays.
struct ScoreProgress {
  int64_t windows_done = 0;   ///< windows scored so far
  int64_t windows_total = 0;  ///< windows in the run
  int64_t tokens_done = 0;    ///< model input tokens processed so far
  int64_t scored_done = 0;    ///< predictions scored so far
  double seconds = 0.0;       ///< wall time since the run started
};

/// How to score.
struct ScoreOptions {
  int64_t batch_size = 1;                 ///< windows of equal length per model call
  int64_t max_logit_elements = 1LL << 26; ///< fp32 logits alive at once (rows x vocab)
  /// An external model instead of `model`'s forward (e.g. the integer runtime, runtime/):
  /// input ids [B, L] int64 on the CPU -> logits [B, L, V] fp32. `model` then supplies only
  /// the vocabulary size. Batches come longest first, in the same order on every call.
  std::function<torch::Tensor(const torch::Tensor&)> logits;
  /// Called after every batch (may be empty).
  std::function<void(const ScoreProgress&)> progress;
};

/// Sum of log p(target) over each window's scored predictions, in the order of `windows`.
/// Runs under NoGradGuard on the device of the model's parameters; throws mq::Error naming
/// the window if an id is outside [0, vocab) or a window is malformed.
std::vector<double> score_windows(CausalLm& model, const std::vector<ScoringWindow>& windows,
                                  const ScoreOptions& opts = {});

}  // namespace mq
