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
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace mq {

/// True if this build has the kernels and `wg` (the grouped weight, [groups, g]) is a
/// contiguous fp32 CUDA tensor.
bool fused_weight_quantize_supported(const torch::Tensor& wg);

/// fake_quantize(wg, choose_qparams(sig_low * min, sig_up * max, bits, symmetric)), where min
/// and max are wg's per row ([groups, 1], per_row) or over all of it, and sig_up / sig_low are
/// the sigmoids of the LWC bounds ([groups, 1] per row, one element per tensor) or undefined
/// (no clipping: min and max as they are). wg: [groups, g] fp32 on CUDA. Returns [groups, g]
/// fp32. Differentiable in wg, sig_up and sig_low with the gradients autograd gives the
/// composed ops: straight-through rounding, the offset's round stops its gradient, the clamp
/// of the scale passes it only inside [kMinScale, kMaxScale], and min / max hand theirs to every
/// element equal to them in equal shares. Values bit for bit; gradients up to the order of the
/// sums. Requires fused_weight_quantize_supported(wg).
torch::Tensor fused_weight_quantize(const torch::Tensor& wg, const torch::Tensor& sig_up,
                                    const torch::Tensor& sig_low, int64_t bits, bool symmetric,
                                    bool per_row);

}  // namespace mq
