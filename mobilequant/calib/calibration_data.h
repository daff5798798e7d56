// mobilequant/calib/calibration_data.h
// Calibration and training windows the way the reference draws them
// (reference-implementation.md §5.1): the documents of a text file joined by "\n\n",
// tokenized once with the tokenizer's default special tokens (a leading BOS where the
// tokenizer adds one), then `num_samples` windows of `seqlen` ids at offsets
// `random.seed(seed); i = random.randint(0, N - seqlen - 1)`: with replacement, possibly
// overlapping, and identical to Python's for the same seed.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/io/tokenizer.h"

namespace mq {

/// Which windows to draw.
struct CalibrationOptions {
  int64_t num_samples = 128;  ///< windows
  int64_t seqlen = 2048;      ///< ids per window
  uint64_t seed = 1337;       ///< the reference's seed
  std::string separator;      ///< "": the file is one text; else documents end at lines
                              ///< holding only this (e.g. "<|endoftext|>") and are re-joined
                              ///< with "\n\n"
};

/// The ids of `text` per the options: documents (split at `separator` lines, stripped) joined
/// by "\n\n", or the whole text, encoded once (BOS first if the tokenizer adds one).
std::vector<int64_t> calibration_token_ids(const Tokenizer& tokenizer, const std::string& text,
                                           const CalibrationOptions& opts);

/// The reference's offsets: num_samples draws of randint(0, n_ids - seqlen - 1) after
/// seed(seed). Throws mq::Error naming `source`, n_ids and seqlen when n_ids < seqlen + 1
/// ("calibration text too short").
std::vector<int64_t> calibration_offsets(int64_t n_ids, const CalibrationOptions& opts,
                                         const std::string& source);

/// The windows themselves: [num_samples, seqlen] int64 on the CPU.
torch::Tensor calibration_windows(const std::vector<int64_t>& ids, const CalibrationOptions& opts,
                                  const std::string& source);

}  // namespace mq
