// mobilequant/bench/forward_bench.h
// Times the full forward pass (embedding to logits) of a model at several sequence
// lengths: warm-ups first, then the median of timed repetitions. Speed is measured
// here, never in tests.
#pragma once

#include <cstdint>
#include <vector>

#include "mobilequant/models/decoder.h"

namespace mq {

/// How to time the forward pass.
struct ForwardBenchOptions {
  std::vector<int64_t> seqlens{128, 512, 2048};  ///< sequence lengths to time
  int64_t batch = 1;                              ///< sequences per forward
  int64_t warmup = 2;                             ///< untimed runs per length
  int64_t reps = 5;                               ///< timed runs per length (median reported)
  uint64_t seed = 0;                              ///< seed of the random token ids
};

/// The timing of one sequence length.
struct ForwardBenchResult {
  int64_t seqlen = 0;
  double median_seconds = 0;  ///< median wall time of one forward
  double tokens_per_second = 0;  ///< batch * seqlen / median_seconds
};

/// Times `model` (already on its device and dtype) under inference mode.
std::vector<ForwardBenchResult> bench_forward(CausalLm& model, const ForwardBenchOptions& opts);

}  // namespace mq
