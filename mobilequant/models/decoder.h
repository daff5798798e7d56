// mobilequant/models/decoder.h
// The one decoder-only transformer of the project: embedding -> N blocks
// (norm -> attention -> residual, norm -> gated MLP -> residual) -> norm -> classifier.
// Every family quirk (Gemma's (1+w) norm and sqrt(d) embedding scale, StableLM's
// LayerNorm with bias, partial rotary and q/k/v bias, GQA/MQA) is a field of
// ModelConfig, so one implementation serves llama, gemma and stablelm exactly as
// Hugging Face `transformers` defines them. Parameters carry Hugging Face names
// (model.layers.{i}.self_attn.q_proj.weight, ...), so named_parameters() is the
// checkpoint's name table.
//
// Every block reports its activations (layer, site, tensor) to optional ForwardHooks, which
// may replace them (fake quantization) and may replace the weights a block computes with
// (equivalent transforms, weight quantization). Sites carry the reference's names
// (config/quant_sites.h). Without hooks the forward is the plain float one (SDPA attention,
// fused SiLU); with hooks it runs an explicit path that exposes every site. This file knows
// nothing about quantization itself.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

#include "mobilequant/config/model_config.h"
#include "mobilequant/config/quant_sites.h"
#include "mobilequant/core/tensor_map.h"

namespace mq {

/// Receives (layer, site, tensor) at every site; layer is -1 for model-level sites.
using ActivationObserver =
    std::function<void(int64_t layer, ActSite site, const torch::Tensor& value)>;

/// Weight and bias of a linear layer as a block computes with them.
struct LinearWeights {
  torch::Tensor weight;  ///< [out, in]
  torch::Tensor bias;    ///< [out], or undefined
};

/// Weight and bias of a norm as a block computes with them, in the stored form of its kind
/// (Gemma's kRmsOnePlus stores w with the norm computing 1 + w).
struct NormWeights {
  torch::Tensor weight;  ///< [C]
  torch::Tensor bias;    ///< [C] (LayerNorm), or undefined
};

/// Every weight of one decoder block, under Hugging Face module names.
struct LayerWeights {
  NormWeights input_layernorm;           ///< before attention
  LinearWeights q_proj, k_proj, v_proj;  ///< [H*D, C], [KV*D, C], [KV*D, C]
  LinearWeights o_proj;                  ///< [C, H*D]
  NormWeights post_attention_layernorm;  ///< before the MLP
  LinearWeights gate_proj, up_proj;      ///< [F, C] (reference: w1, w3)
  LinearWeights down_proj;               ///< [C, F] (reference: w2)
};

/// What a quantized (or observed) forward plugs into the decoder.
class ForwardHooks {
 public:
  virtual ~ForwardHooks() = default;
  /// The weights block `layer` computes with; `stored` are its parameters. Default: stored.
  virtual LayerWeights layer_weights(int64_t layer, const LayerWeights& stored) {
    (void)layer;
    return stored;
  }
  /// Called with the activation at `site` of `layer` (-1: model level); returns the tensor
  /// the forward continues with (x itself to observe only).
  virtual torch::Tensor activation(int64_t layer, ActSite site, const torch::Tensor& x) = 0;
  /// The attention probabilities [B, H, T, T] of `layer` from the raw scores q k^T
  /// [B, H, T, T]: the qk_bmm.output site, times `scale`, masked (`mask` [B, 1, T, T] bool,
  /// true = attend; undefined: causal), softmax in fp32 (fp64 for fp64 scores) cast back to
  /// the scores' dtype, the
  /// pv_bmm.input site. Default: those ops, each site through activation(); a hook may
  /// compute the same in fewer passes.
  virtual torch::Tensor attention_probs(int64_t layer, const torch::Tensor& scores, double scale,
                                        const torch::Tensor& mask);
};

/// The normalisation of a block or of the final norm: RMSNorm, RMSNorm(1+w) or LayerNorm.
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(NormKind kind, int64_t dim, double eps);
  /// x: [..., dim] -> [..., dim]; computed in fp32 as transformers does (fp64 inputs in fp64).
  torch::Tensor forward(const torch::Tensor& x);
  /// The same norm with explicit weights (stored form, see NormWeights).
  static torch::Tensor apply(NormKind kind, double eps, const torch::Tensor& x,
                             const NormWeights& w);
  NormKind kind;
  double eps;
  torch::Tensor weight;  // [dim]
  torch::Tensor bias;    // [dim], LayerNorm only (undefined otherwise)
};
TORCH_MODULE(Norm);

/// Cos/sin tables of rotary embeddings for a rotary dimension and base.
class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t rotary_dim, double theta);
  /// positions: [B, T] int64 -> (cos, sin), each [B, 1, T, rotary_dim] in fp32 (on the CPU from
  /// double-precision cos and sin, element by element: reproducible bit for bit).
  std::pair<torch::Tensor, torch::Tensor> tables(const torch::Tensor& positions) const;
  /// Rotates the first rotary_dim channels of x: [B, H, T, D] (D >= rotary_dim), HF's half layout.
  static torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& cos,
                             const torch::Tensor& sin);

 private:
  int64_t rotary_dim_;
  torch::Tensor inv_freq_;          // [rotary_dim/2] fp32, on the CPU
  mutable torch::Tensor inv_freq_on_device_;  // [rotary_dim/2] fp32, copy on the last device used
};

/// Self-attention with grouped/multi-query heads and (partial) rotary embeddings.
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& cfg);
  /// x: [B, T, C]; cos/sin: [B, 1, T, R]; mask: [B, 1, T, T] bool (true = attend) or
  /// undefined for plain causal attention; w: the block's weights. Returns [B, T, C].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, const LayerWeights& w, int64_t layer,
                        ForwardHooks* hooks);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

/// Gated MLP: down(act(gate(x)) * up(x)).
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ModelConfig& cfg);
  /// x: [B, T, C] -> [B, T, C]; w: the block's weights.
  torch::Tensor forward(const torch::Tensor& x, const LayerWeights& w, int64_t layer,
                        ForwardHooks* hooks);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  Activation act_;
};
TORCH_MODULE(Mlp);

/// One pre-norm decoder block.
class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& cfg);
  /// x: [B, T, C] -> [B, T, C].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, int64_t layer, ForwardHooks* hooks);
  /// The block's parameters (shared tensors, not copies).
  LayerWeights weights() const;
  /// Copies `w` into the parameters under NoGradGuard (folding a transform in place); shapes
  /// must match, `where` names the caller in errors.
  void set_weights(const LayerWeights& w, const std::string& where);
  Norm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

/// The body: embeddings, blocks and final norm (Hugging Face's `model.`).
class DecoderModelImpl : public torch::nn::Module {
 public:
  explicit DecoderModelImpl(const ModelConfig& cfg);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  Norm norm{nullptr};
};
TORCH_MODULE(DecoderModel);

/// A causal language model: the body plus the classifier (tied or not).
class CausalLmImpl : public torch::nn::Module {
 public:
  explicit CausalLmImpl(const ModelConfig& cfg);

  /// input_ids: [B, T] int64; attention_mask: [B, T] (1 = token, 0 = padding) or undefined.
  /// Positions count real tokens only (cumsum of the mask), so left and right padding both
  /// give each sequence the logits it has alone. Returns the final-norm output [B, T, C].
  torch::Tensor hidden_states(const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask = {});
  /// Logits [B, T, V] (dtype of the weights) for input_ids [B, T].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {});
  /// The classifier applied to hidden states [..., C] -> [..., V].
  torch::Tensor logits(const torch::Tensor& hidden);
  /// The inputs of block 0 for input_ids [B, T] int64: token embeddings (Gemma: times
  /// sqrt(hidden)) through the model-level `embed` site of the installed hooks. [B, T, C].
  torch::Tensor embed(const torch::Tensor& input_ids);
  /// RoPE cos/sin tables for positions 0..seqlen-1 of unpadded sequences, each
  /// [1, 1, seqlen, R] fp32 on `device` (they broadcast over the batch).
  std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t seqlen,
                                                      const torch::Device& device) const;
  /// Block i alone on unpadded causal hidden states h: [B, T, C] -> [B, T, C], through the
  /// installed hooks: what hidden_states() computes for that block without an attention mask.
  torch::Tensor run_layer(int64_t i, const torch::Tensor& h);

  /// Copies `tensors` (Hugging Face names) into the parameters, checking every name and shape;
  /// `source` names the checkpoint in errors. Extra tensors not used by the model are errors too,
  /// except rotary caches (`*.rotary_emb.inv_freq`).
  void load_tensors(const TensorMap& tensors, const std::string& source);
  /// Installs (or clears, with nullptr) hooks the model does not own; the caller keeps them
  /// alive while installed. Replaces any observer.
  void set_hooks(ForwardHooks* hooks) { hooks_ = hooks; }
  /// The installed hooks (nullptr: plain float forward).
  ForwardHooks* hooks() const { return hooks_; }
  /// Installs (or clears, with an empty function) hooks that only observe; replaces any hooks.
  void set_observer(ActivationObserver observer);
  /// The layer at index i.
  DecoderLayer layer(int64_t i) const;
  const ModelConfig& config() const { return cfg_; }

  DecoderModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // undefined when tied to embed_tokens

 private:
  ModelConfig cfg_;
  RotaryEmbedding rope_;
  ForwardHooks* hooks_ = nullptr;
  std::shared_ptr<ForwardHooks> observer_hooks_;  // owned hooks of set_observer
};
TORCH_MODULE(CausalLm);

}  // namespace mq
