// mobilequant/quant/fused_fake_quantize.h
// Fake quantization in one kernel each way: the arithmetic of primitives.h's fake_quantize,
// element by element in fp32 with the same roundings (x / scale correctly rounded, round half
// to even, clamp, (q - offset) * scale), so the forward values are bit for bit those of the
// composed torch ops, in one memory pass and one launch instead of six; and, for training, an
// autograd function whose backward is one kernel plus one reduction instead of ~15 kernels.
// CUDA only; built where LibTorch has CUDA and nvcc is found (MQ_CUDA_KERNELS). Measured in
// `mobilequant bench quant` and `mobilequant bench train`.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace mq {

/// True if this build has the CUDA kernels and `x` (fp32, bf16 or fp16) lives on a CUDA device.
bool fused_fake_quantize_supported(const torch::Tensor& x);

/// True if the kernels take this scale layout for `x`: per tensor (one element), per channel of
/// the last dimension ([C]), or per row of a 2-D x ([rows, 1]).
bool fused_fake_quantize_layout_supported(const torch::Tensor& x, const torch::Tensor& scale);

/// (clamp(round(x / scale) + offset, qmin, qmax) - offset) * scale in x's dtype, computed in
/// fp32, without gradient. scale/offset: fp32, one of the layouts above. Requires
/// fused_fake_quantize_supported(x) and the layout.
torch::Tensor fused_fake_quantize(const torch::Tensor& x, const torch::Tensor& scale,
                                  const torch::Tensor& offset, int64_t qmin, int64_t qmax);

/// The same value, differentiable in x, scale and offset with the gradients autograd gives the
/// composed ops with straight-through rounding (primitives.h's fake_quantize): dx = dy inside
/// the code range, 0 outside; d scale = sum dy * (round(x/s) - x/s) inside, dy * (q - offset)
/// outside; d offset = sum -dy * scale outside. Element values equal the composed ops' bit for
/// bit; the sums over elements are taken in another order (tolerance: fp32 summation). Saves
/// only x for the backward pass.
torch::Tensor fused_fake_quantize_learnable(const torch::Tensor& x, const torch::Tensor& scale,
                                            const torch::Tensor& offset, int64_t qmin,
                                            int64_t qmax);

}  // namespace mq
