// mobilequant/quant/fused_softmax_quantize.h
// The quantized attention probabilities in one kernel each way (CUDA): from the raw scores
// q k^T, fake quantization of the scores (site qk_bmm.output), the 1/sqrt(D) scale, the causal
// mask, softmax in fp32, and fake quantization of the probabilities (site pv_bmm.input), with
// every intermediate rounded to the scores' dtype where the composed ops round it. The composed
// ops materialise the [B, H, T, T] tensor about eight times forward and twice that backward;
// this reads and writes it once forward, and reads it twice and writes it once backward (the
// softmax is recomputed from the scores, so only the scores are saved). Gradients flow to the
// scores and to both quantizers' scale and offset (straight-through rounding, as
// fused_fake_quantize.h). Built where the fused kernels are (MQ_CUDA_KERNELS).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace mq {

/// One per-tensor fake quantizer of the fused softmax: scale/offset fp32 one-element tensors
/// on the scores' device (learnable or not), or `enabled` false for a float site.
struct SoftmaxQuantizer {
  bool enabled = false;
  torch::Tensor scale;   ///< [] or [1], fp32
  torch::Tensor offset;  ///< [] or [1], fp32
  int64_t qmin = 0;      ///< smallest code
  int64_t qmax = 255;    ///< largest code
};

/// True if the kernels take `scores` [B, H, T, T] (CUDA, fp32/bf16/fp16, square, T small
/// enough for one row in shared memory) in this build.
bool fused_softmax_quantize_supported(const torch::Tensor& scores);

/// probs = fq_out(to_dtype(softmax_fp32(mask_causal(to_dtype(fq_in(scores) * scale))))), in
/// the scores' dtype. scores: [B, H, T, T] raw q k^T; the causal mask hides key j > query i.
/// Values equal the composed ops up to the softmax's summation order; differentiable in the
/// scores and in the enabled quantizers' scale and offset. Requires
/// fused_softmax_quantize_supported(scores).
torch::Tensor fused_softmax_quantize(const torch::Tensor& scores, double scale,
                                     const SoftmaxQuantizer& in, const SoftmaxQuantizer& out);

}  // namespace mq
