// mobilequant/runtime/int_model.h
// The integer model of docs/integer-model.md, loaded from an export's int/ directory
// (manifest.json + model.safetensors) into plain vectors: weight codes (4-bit weights unpacked
// to one code per byte), zero points, fixed-point multipliers, lookup tables and the activation
// encodings of every site. load() checks every documented tensor's dtype and shape against the
// manifest's model shape, and the ranges the kernels rely on (codes fit their bits, shifts in
// [1, 127], LUT sizes, K small enough for int32 GEMM sums); errors name the file, the tensor,
// the expected and the actual value. No LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/runtime/int_ops.h"

namespace mq::rt {

/// The model shape of manifest.json's "model" object.
struct IntModelConfig {
  int64_t hidden_size = 0;          ///< C
  int64_t intermediate_size = 0;    ///< F
  int64_t num_hidden_layers = 0;    ///< L
  int64_t num_attention_heads = 0;  ///< H
  int64_t num_key_value_heads = 0;  ///< KV
  int64_t head_dim = 0;             ///< D
  int64_t vocab_size = 0;           ///< V
  int64_t max_positions = 0;        ///< P
  double rms_norm_eps = 0.0;        ///< eps (folded into the eps_term tensors)
  bool tie_word_embeddings = false; ///< lm_head is the embedding table
};

/// One RMSNorm of a block (input_layernorm or post_attention_layernorm).
struct IntNorm {
  Multiplier input;              ///< residual -> `{norm}.input` codes
  std::vector<int64_t> gain_m;   // [C] signed M_c
  std::vector<int32_t> gain_n;   // [C] n_c
  int64_t eps_term = 0;          ///< E = round(eps * C / s_in^2 * 2^F)
  int32_t eps_shift = 0;         ///< F, its fraction bits, in [0, 48]
  std::vector<int32_t> weight_q; // [C] the norm weight codes (validated; folded into gain)
  ActQuant in;                   ///< `{norm}.input`
  ActQuant out;                  ///< `{norm}.output`
};

/// One decoder block.
struct IntLayer {
  IntNorm input_layernorm;
  IntNorm post_attention_layernorm;
  IntLinearWeights q_proj, k_proj, v_proj, o_proj;  ///< [H*D, C], [KV*D, C] x2, [C, H*D]
  IntLinearWeights w1, w3, w2;                      ///< [F, C], [F, C], [C, F]
  Multiplier rope_q, rope_k, v_requant, qk_bmm, softmax, pv_bmm, resid_add_1;
  Multiplier act_fn, mul, resid_add_2;
  std::vector<int64_t> exp_lut;      // [2^b(qk_bmm.output)], entries in [0, 2^exp_bits]
  std::vector<int32_t> sigmoid_lut;  // [2^b(w1.output)]
  ActQuant q_out, k_out, v_out;               ///< self_attn.{q,k,v}_proj.output
  ActQuant qk_in, qk_in2, qk_out;             ///< self_attn.qk_bmm.{input,input2,output}
  ActQuant pv_in, pv_in2, pv_out;             ///< self_attn.pv_bmm.{input,input2,output}
  ActQuant o_out;                             ///< self_attn.o_proj.output
  ActQuant w1_out, w3_out, act_in2, act_out;  ///< mlp.w1/w3.output, mlp.act_fn.input2/output
  ActQuant w2_in, w2_out;                     ///< mlp.w2.input/output
};

/// An integer model ready for prefill.
class IntModel {
 public:
  /// Reads `int_dir`/manifest.json and `int_dir`/model.safetensors and validates everything;
  /// throws mq::Error naming the file, tensor, expected and actual value on any mismatch.
  static IntModel load(const std::string& int_dir);

  /// The model shape.
  const IntModelConfig& config() const { return config_; }
  /// The blocks, in order.
  const std::vector<IntLayer>& layers() const { return layers_; }
  /// The preset name the manifest records ("w8a8", …).
  const std::string& preset() const { return preset_; }

  std::vector<int64_t> embed_q;            // [V, C] embedding rows as residual codes
  std::vector<int64_t> rope_cos, rope_sin; // [P, D/2] Q62
  std::vector<int64_t> norm_gain_m;        // [C] final norm signed M_c
  std::vector<int32_t> norm_gain_n;        // [C]
  int64_t norm_eps_term = 0;               ///< E of the final norm (at s_r)
  int32_t norm_eps_shift = 0;              ///< its F
  std::vector<int16_t> lm_head_q;          // [V, C] symmetric per row
  std::vector<float> lm_head_scale;        // [V]
  VnniPackedI16 lm_head_packed;            // lm_head_q packed for vnni_lm_head (empty without VNNI)
  float final_norm_scale = 0.0f;           ///< s_f
  double residual_scale = 0.0;             ///< s_r (int64 residual codes, a power of two)
  int final_norm_shift = 31;               ///< the final norm reads r >> this (int32)

 private:
  IntModelConfig config_;
  std::string preset_;
  std::vector<IntLayer> layers_;
};

}  // namespace mq::rt
