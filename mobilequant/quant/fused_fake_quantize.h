// mobilequant/quant/fused_fake_quantize.h
// Fake quantization in one kernel when no gradient is needed (evaluation, calibrated
// inference): the arithmetic of primitives.h's fake_quantize, element by element in fp32 with
// the same roundings (x / scale correctly rounded, round half to even, clamp, (q - offset) *
// scale), so results are bit for bit those of the composed torch ops, in one memory pass and
// one launch instead of six. CUDA only; built where LibTorch has CUDA and nvcc is found
// (MQ_CUDA_KERNELS). Measured in `mobilequant bench quant`.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace mq {

/// True if this build has the CUDA kernel and `x` (fp32, bf16 or fp16) lives on a CUDA device.
bool fused_fake_quantize_supported(const torch::Tensor& x);

/// (clamp(round(x / scale) + offset, qmin, qmax) - offset) * scale in x's dtype, computed in
/// fp32. scale/offset: fp32 on x's device, [] or [1] (per tensor) or [C] (per channel of the
/// last dim). Requires fused_fake_quantize_supported(x).
torch::Tensor fused_fake_quantize(const torch::Tensor& x, const torch::Tensor& scale,
                                  const torch::Tensor& offset, int64_t qmin, int64_t qmax);

}  // namespace mq
