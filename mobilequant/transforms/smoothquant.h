// mobilequant/transforms/smoothquant.h
// SmoothQuant's closed-form scales (reference-implementation.md §1.5), folded into the float
// weights in place, as the reference's pre-smoothing pass does (so that learned methods then
// start from scales of 1 on smoothed weights):
//
//   s_j = max(a_j^alpha / w_j^(1-alpha), 1e-5),  w_j = max(max over target fcs of |W[:, j]|, 1e-5)
//
// with a_j the per-channel |max| of the target's input over the calibration windows.
// Static: input_layernorm -> q/k/v and post_attention_layernorm -> gate/up.
// Edge: also up -> down and v -> o. The reference applies v -> o only without GQA/MQA; here
// it is per KV head (a and w take the maximum over the query heads a KV head serves), so it
// is valid for every model.
#pragma once

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/models/decoder.h"

namespace mq {

/// Which pairs SmoothQuant smooths.
enum class SmoothQuantVariant {
  kStatic,  ///< norm -> linears only (the original SmoothQuant)
  kEdge,    ///< + up -> down and v -> o
};

/// Lower clamp of the weight term and of the scale (§1.5).
constexpr double kSmoothQuantFloor = 1e-5;

/// Computes the scales of every block from `fp_stats` (statistics of `model` as it is now)
/// and folds them into the weights in place. Throws mq::Error naming a site the statistics
/// lack, or alpha outside [0, 1].
void apply_smoothquant(CausalLm& model, const ActStats& fp_stats, double alpha,
                       SmoothQuantVariant variant);

}  // namespace mq
