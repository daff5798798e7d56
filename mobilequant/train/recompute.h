// mobilequant/train/recompute.h
// Activation checkpointing (torch.utils.checkpoint's reentrant form) for the end-to-end
// trainer: each decoder block runs without keeping its activations; the backward pass runs the
// block again, with gradients on, from its saved input. Memory then holds one block's
// activations instead of every block's (a 1.1B model at 2048 tokens needs more than an 80 GB
// GPU otherwise), for one more forward pass of compute.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>

namespace mq {

/// What a checkpointed segment computes: block `layer` on hidden states [B, T, C].
using LayerFunction = std::function<torch::Tensor(int64_t layer, const torch::Tensor& h)>;

/// fn(layer, h) with its activations dropped and recomputed in the backward pass. `fn` must
/// outlive the backward pass and be deterministic; gradients reach h and every leaf tensor
/// fn uses (the quantization parameters). `bf16` re-enters bf16 autocast on h's device for
/// the recomputation, as the forward ran.
torch::Tensor recompute_in_backward(const LayerFunction& fn, int64_t layer, const torch::Tensor& h,
                                    bool bf16);

}  // namespace mq
