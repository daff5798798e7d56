// mobilequant/quant/weight_transform.h
// The equivalent transform a linear's weight [out, in] takes before its quantizer (LET, paper
// eq. 1; transforms/smooth_scales.h owns the scales): its input columns multiplied by one
// factor, then its output rows multiplied or divided by another. The composed torch ops here
// are the definition; WeightFakeQuantizer can take the transform into its fused CUDA pass
// (fused_weight_quantize.h), which rounds every step as these ops do.
#pragma once

#include <torch/torch.h>

namespace mq {

/// w' = (w * col[None, :]) * row[:, None], or / row[:, None] when `row_divides`; an undefined
/// factor is skipped.
struct WeightTransform {
  torch::Tensor col;         ///< [in] or undefined
  torch::Tensor row;         ///< [out] or undefined
  bool row_divides = false;  ///< divide the rows by `row` (else multiply)
  /// True when either factor is set.
  bool any() const { return col.defined() || row.defined(); }
};

/// w' of `w` [out, in] with the composed ops; differentiable in w and both factors. Throws
/// mq::Error naming the shapes when a factor does not fit w.
torch::Tensor transform_weight(const torch::Tensor& w, const WeightTransform& t);

}  // namespace mq
