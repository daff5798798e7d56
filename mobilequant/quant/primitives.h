// mobilequant/quant/primitives.h
// Pure quantization functions (paper eq. 2-4; reference-implementation.md §2, §3.2), the
// torchao way: choose parameters from a range, quantize, dequantize, and fake-quantize with a
// straight-through rounding. No state, no modules; fake_quantizer.h composes these.
//
// Conventions (the reference's, not AIMET's; export converts):
//   asymmetric  scale = (max - min) / (2^b - 1), offset = -round(min / scale), codes [0, 2^b-1]
//   symmetric   scale = max(|min|, |max|) / (2^(b-1) - 1), offset = 0, codes [-2^(b-1), 2^(b-1)-1]
//   scale is clamped to [1e-5, 1e6] (kMinScale, kMaxScale)
//   quantize    q = clamp(round(x / scale) + offset, qmin, qmax)
//   dequantize  x^ = (q - offset) * scale
// round is round-half-to-even (torch.round). Division, not multiplication by 1/scale, as the
// reference computes it, so that results agree bit for bit.
//
// Shapes: scale and offset broadcast against x: a scalar [] or [1] per tensor, [rows, 1] per
// output channel of a [rows, cols] weight, [..., C] per channel of an activation.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "mobilequant/config/quant_spec.h"

namespace mq {

/// Lower clamp of every scale (§2: `scale.clamp(1e-5, 1e6)`).
constexpr double kMinScale = 1e-5;
/// Upper clamp of every scale.
constexpr double kMaxScale = 1e6;

/// Scale and offset of one quantizer and its code range.
struct QParams {
  torch::Tensor scale;   ///< > 0, broadcastable to x (fp32)
  torch::Tensor offset;  ///< zero-point in codes, broadcastable to x (fp32; integral when chosen
                         ///< here, may drift off-integer under range learning)
  int64_t qmin = 0;      ///< smallest code
  int64_t qmax = 255;    ///< largest code
};

/// The code range of `bits` (2..16): [0, 2^b-1] or [-2^(b-1), 2^(b-1)-1] when symmetric.
/// Throws mq::Error naming the bit-width outside 2..16.
std::pair<int64_t, int64_t> code_range(int64_t bits, bool symmetric);

/// Eq. 3-4: scale and offset from a range. `min`/`max` have equal shapes (any). Asymmetric:
/// scale = (max - min) / (2^b - 1) then clamped, offset = -round(min / scale). Symmetric:
/// scale = max(|min|, |max|) / (2^(b-1) - 1) then clamped, offset = 0. Differentiable in
/// min/max through the scale; the rounded offset has zero gradient (as in the reference). The
/// offset is computed from the clamped scale. fp32 results (fp64 for fp64 min).
QParams choose_qparams(const torch::Tensor& min, const torch::Tensor& max, int64_t bits,
                       bool symmetric);

/// round(x) forward, identity backward: (round(x) - x).detach() + x.
torch::Tensor round_ste(const torch::Tensor& x);

/// Integer codes clamp(round(x / scale) + offset, qmin, qmax) as int32, same shape as x,
/// computed as fake_quantize does (fp32, fp64 for fp64 x); no gradient.
/// Throws mq::Error if an offset is not an integer (a learned offset must be rounded first).
torch::Tensor quantize(const torch::Tensor& x, const QParams& p);

/// (q - offset) * scale in fp32 (fp64 for an fp64 scale) for integer codes q (any integer or
/// float dtype).
torch::Tensor dequantize(const torch::Tensor& q, const QParams& p);

/// Eq. 2: (clamp(round_ste(x / scale) + offset, qmin, qmax) - offset) * scale, in x's dtype
/// computed in fp32 (in fp64 for fp64 x, for gradient checks). Equals dequantize(quantize(x))
/// (cast to x's dtype) bit for bit when the offset is integral. No scale clamp here: a learned
/// activation scale is used as it is (§3.2).
/// Gradients (from autograd, §3.2): dx = 1 inside the range and 0 outside;
/// d scale = round(x/s) - x/s inside, qmax - offset above, qmin - offset below;
/// d offset = 0 inside, -scale outside.
/// On CUDA (fp32/bf16/fp16 x, per tensor, per row or per last-dim channel) it runs the fused
/// kernels of fused_fake_quantize.h: the same values, the same gradients up to the order of
/// the sums over elements.
torch::Tensor fake_quantize(const torch::Tensor& x, const QParams& p);

/// fake_quantize as composed torch ops with round_ste, whatever the device: the definition the
/// fused kernels are tested against (autograd differentiates it).
torch::Tensor fake_quantize_composed(const torch::Tensor& x, const QParams& p);

/// Min and max of `w` [rows, cols] per quantization group of `spec` (weights only): per tensor
/// -> shape [1]; per channel -> [rows, 1]; per group -> [rows * cols / group_size, 1] over the
/// view grouped_weight(w, spec). Differentiable (amin/amax).
std::pair<torch::Tensor, torch::Tensor> weight_min_max(const torch::Tensor& w,
                                                       const QuantSpec& spec);
/// `w` [rows, cols] as the 2-D view whose rows are the groups of `spec`: itself for per tensor
/// and per channel, [rows * cols / g, g] for per group (g consecutive inputs of one row).
/// 1-D weights (norms) are viewed as [1, C]. Throws mq::Error when g does not divide cols.
torch::Tensor grouped_weight(const torch::Tensor& w, const QuantSpec& spec);

}  // namespace mq
