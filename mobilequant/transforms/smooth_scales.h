// mobilequant/transforms/smooth_scales.h
// Learnable equivalent transforms (LET; paper eq. 1 and Fig. 1; reference-implementation.md
// §1.2-§1.4): per-channel scales s between pairs of consecutive layers with linear parts. The
// producer's output channels are divided by s and the consumer's input columns multiplied by
// s, so that with every quantizer off the block computes exactly what it computed before,
// while the tensors in between (which are quantized) change their ranges.
//
//   qkv  [C]        input_layernorm (weight and bias) -> q_proj, k_proj, v_proj columns
//   fc1  [C]        post_attention_layernorm          -> gate_proj (w1), up_proj (w3) columns
//   fc2  [F]        up_proj rows (and bias)           -> down_proj (w2) columns
//   out  [KV*D]     v_proj rows (and bias)            -> o_proj columns of every query head
//                   served by that KV head (valid with GQA/MQA; the reference has it for MHA only)
//   qkt  [KV, D-R/2] q_proj rows / s, k_proj rows * s, one scale per rotary pair (i, i+R/2) and
//                   per unrotated dim, so that RoPE commutes with it (the reference's per-channel
//                   q/k scale does not; §10.1)
//
// Scales live in linear space, initialised to 1, and are truncated to |s| >= 1e-2 before use
// (the reference's truncate_number). Applying them is differentiable (training) and folding
// them into the stored weights is the same arithmetic done once in place.
#pragma once

#include <torch/torch.h>

#include <array>

#include "mobilequant/config/quant_sites.h"
#include "mobilequant/config/train_config.h"
#include "mobilequant/config/model_config.h"
#include "mobilequant/models/decoder.h"
#include "mobilequant/quant/weight_transform.h"

namespace mq {

/// Smallest |s| a scale may have (the reference's truncate_number threshold).
constexpr double kMinSmoothScale = 1e-2;

/// The scales of one decoder block, as registered parameters under the reference's names.
class LayerScalesImpl : public torch::nn::Module {
 public:
  /// Creates the scales of the enabled pairs, all ones.
  LayerScalesImpl(const ModelConfig& cfg, LetPairs pairs);
  /// Sets every scale back to 1 (after folding).
  void reset();
  /// |s| < 1e-2 -> sign(s) * 1e-2 in place, under NoGradGuard (sign(0) = 0 keeps 0).
  void truncate();
  /// The q/k scale of every k_proj row [KV*D] (rotary pairs share a value); undefined if off.
  torch::Tensor qkt_rows() const;
  /// The v/o scale of every o_proj column [H*D] (each query head takes its KV head's); undefined
  /// if off.
  torch::Tensor out_columns() const;
  /// The q/k scale of every q_proj row [H*D]; undefined if off.
  torch::Tensor qkt_query_rows() const;

  LetPairs pairs;                  ///< which scales exist
  torch::Tensor qkv_smooth_scale;  ///< [C]
  torch::Tensor fc1_smooth_scale;  ///< [C]
  torch::Tensor fc2_smooth_scale;  ///< [F]
  torch::Tensor out_smooth_scale;  ///< [KV*D]
  torch::Tensor qkt_smooth_scale;  ///< [KV, D - R/2]

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_, rotary_dim_;
};
TORCH_MODULE(LayerScales);

/// The LET transform of each linear's weight, indexed by WeightSite (the norms' entries stay
/// empty): q, k, v columns * qkv; gate, up columns * fc1; o columns * out; down columns * fc2;
/// q rows / qkt, k rows * qkt, v rows / out, up rows / fc2.
using LinearTransforms = std::array<WeightTransform, kNumWeightSites>;

/// The transforms of the scales `s` (views of its parameters: differentiable in them).
LinearTransforms linear_transforms(const LayerScalesImpl& s);

/// §1.4: the block's weights with the scales applied (norms divided, linears transformed as
/// linear_transforms says, biases divided or multiplied with their rows). Differentiable in
/// the scales. `norm` is the block's norm kind (Gemma's 1 + w is transformed as the multiplier
/// it is). A site with `keep_weight` set keeps its linear's weight as stored (its bias is still
/// transformed), for a quantizer that takes the transform itself
/// (WeightFakeQuantizer::forward_transformed).
LayerWeights apply_smooth_scales(const LayerWeights& w, const LayerScalesImpl& s, NormKind norm,
                                 const std::array<bool, kNumWeightSites>& keep_weight = {});

/// The linear of `w` at a linear site (q, k, v, o, gate, up, down); throws for a norm site.
LinearWeights& linear_of(LayerWeights& w, WeightSite site);

}  // namespace mq
