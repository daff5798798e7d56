// mobilequant/quant/fused_weight_quantize.h
// The weight fake quantizer of fake_quantizer.h (the weight's own min and max, the LWC bounds,
// choose_qparams, fake quantization: §2, eq. 2-4) as one CUDA kernel pass forward and one
// backward per weight, per row (per_channel and per_group weights, one row per group) or per
// tensor. The composed ops run ~12 kernels forward and ~30 backward over the weight, most of
// them in the backward of amin/amax (equality masks, counts, divisions); on the TinyLlama-1.1B
// training step they were a third of the device time. Every forward value is the composed ops'
// bit for bit: the same fp32 operations in the same order, with the division by the code count
// done as PyTorch does a division by a host scalar on CUDA (a multiplication by its fp32
// reciprocal). Built where the other fused kernels are (MQ_CUDA_KERNELS).
//
// The second form takes the LET transform of weight_transform.h into the same passes: the
// frozen weight is read as stored and transformed element by element (the same ops again), the
// result can be written as bf16 (what autocast would cast it to before the matmul), and the
// backward pass gives the transform's factors their gradients directly. The composed path
// writes the transformed weight, its quantized copy and its bf16 cast forward, and as many
// tensors backward; this reads the weight twice each way.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "mobilequant/quant/weight_transform.h"

namespace mq {

/// True if this build has the kernels and `wg` (the grouped weight, [groups, g]) is a
/// contiguous fp32 CUDA tensor.
bool fused_weight_quantize_supported(const torch::Tensor& wg);

/// fake_quantize(wg, choose_qparams(sig_low * min, sig_up * max, bits, symmetric)), where min
/// and max are wg's per row ([groups, 1], per_row) or over all of it, and sig_up / sig_low are
/// the sigmoids of the LWC bounds ([groups, 1] per row, one element per tensor) or undefined
/// (no clipping: min and max as they are). wg: [groups, g] fp32 on CUDA. Returns [groups, g]
/// in `out_dtype` (fp32, or bf16: the fp32 result rounded as a cast rounds it).
/// Differentiable in wg, sig_up and sig_low with the gradients autograd gives the composed ops:
/// straight-through rounding, the offset's round stops its gradient, the clamp of the scale
/// passes it only inside [kMinScale, kMaxScale], and min / max hand theirs to every element
/// equal to them in equal shares. Values bit for bit; gradients up to the order of the sums.
/// Requires fused_weight_quantize_supported(wg).
torch::Tensor fused_weight_quantize(const torch::Tensor& wg, const torch::Tensor& sig_up,
                                    const torch::Tensor& sig_low, int64_t bits, bool symmetric,
                                    bool per_row,
                                    torch::ScalarType out_dtype = torch::kFloat32);

/// True if the second form takes `w` [out, in] with transform `t`: supported(w), w needs no
/// gradient, and the factors are fp32 tensors of the right length on w's device.
bool fused_weight_quantize_supported(const torch::Tensor& w, const WeightTransform& t);

/// fused_weight_quantize(transform_weight(w, t), ...) for a frozen weight w [out, in], per row
/// (one group per output row) or per tensor, the result in `out_dtype`. Differentiable in the
/// transform's factors and in sig_up / sig_low; values bit for bit those of the composed ops,
/// gradients up to the order of the sums. Requires fused_weight_quantize_supported(w, t).
torch::Tensor fused_weight_quantize(const torch::Tensor& w, const WeightTransform& t,
                                    const torch::Tensor& sig_up, const torch::Tensor& sig_low,
                                    int64_t bits, bool symmetric, bool per_row,
                                    torch::ScalarType out_dtype);

}  // namespace mq
