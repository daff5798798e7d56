// mobilequant/transforms/closed_form.h
// The closed-form methods end to end (reference-implementation.md §7): RTN (static min/max
// ranges, no transform), SmoothQuant-Static and SmoothQuant-Edge (closed-form scales folded
// into the weights, then ranges calibrated on the smoothed model, as the reference's
// smoothquant.py -> generate_act_range.py does). Their result is also the starting point of
// the learned methods.
#pragma once

#include <torch/torch.h>

#include <string>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/config/quantize_config.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

/// How to run a closed-form method.
struct ClosedFormOptions {
  QuantMethod method = QuantMethod::kRtn;  ///< which method
  double alpha = 0.5;                      ///< SmoothQuant migration strength
  /// Learnable equivalent-transform scales to create (at 1) for training afterwards.
  LetPairs let = LetPairs{false, false, false, false, false};
  int64_t batch_size = 1;                  ///< windows per forward pass
  CalibrationProgress progress;            ///< called per batch of each calibration pass
  /// Directory of reusable statistics ("": no cache) and the key that identifies the model
  /// and windows (the tag of each pass is appended).
  std::string stats_cache_dir;
  std::string stats_cache_key;
  /// Called with a line of text for each step (may be empty).
  std::function<void(const std::string&)> log;
};

/// Statistics of `model` on `windows`, from the cache when `key` was computed before (the
/// file's recorded key must match), else computed and stored. `dir` "" disables the cache.
ActStats cached_act_stats(CausalLm& model, const torch::Tensor& windows, int64_t batch_size,
                          const std::string& dir, const std::string& key,
                          const CalibrationProgress& progress,
                          const std::function<void(const std::string&)>& log);

/// Runs the method on `model` (SmoothQuant folds its scales into the weights in place) and
/// returns the wrapper with every enabled activation range set from windows [N, T].
QuantizedModel quantize_closed_form(CausalLm model, const QuantConfig& quant,
                                    const torch::Tensor& windows, const ClosedFormOptions& opts);

}  // namespace mq
