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
// Every block reports named activation taps (layer, site, tensor) to an optional
// observer; calibration and quantization hook in there. This file knows nothing
// about quantization.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

#include "mobilequant/config/model_config.h"
#include "mobilequant/core/tensor_map.h"

namespace mq {

/// Receives (layer, site, tensor) at every tap; layer is -1 outside the blocks.
/// Sites are Hugging Face module names with ".in"/".out", e.g. "self_attn.q_proj.out".
using ActivationObserver =
    std::function<void(int64_t layer, const std::string& site, const torch::Tensor& value)>;

/// The normalisation of a block or of the final norm: RMSNorm, RMSNorm(1+w) or LayerNorm.
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(NormKind kind, int64_t dim, double eps);
  /// x: [..., dim] -> [..., dim]; computed in fp32 as transformers does.
  torch::Tensor forward(const torch::Tensor& x);
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
  /// positions: [B, T] int64 -> (cos, sin), each [B, 1, T, rotary_dim] in fp32.
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
  /// undefined for plain causal attention. Returns [B, T, C].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, int64_t layer,
                        const ActivationObserver* observer);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

/// Gated MLP: down(act(gate(x)) * up(x)).
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ModelConfig& cfg);
  /// x: [B, T, C] -> [B, T, C].
  torch::Tensor forward(const torch::Tensor& x, int64_t layer, const ActivationObserver* observer);
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
                        const torch::Tensor& mask, int64_t layer,
                        const ActivationObserver* observer);
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

  /// Copies `tensors` (Hugging Face names) into the parameters, checking every name and shape;
  /// `source` names the checkpoint in errors. Extra tensors not used by the model are errors too,
  /// except rotary caches (`*.rotary_emb.inv_freq`).
  void load_tensors(const TensorMap& tensors, const std::string& source);
  /// Installs (or clears, with nullptr) the activation observer.
  void set_observer(ActivationObserver observer) { observer_ = std::move(observer); }
  const ModelConfig& config() const { return cfg_; }

  DecoderModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // undefined when tied to embed_tokens

 private:
  ModelConfig cfg_;
  RotaryEmbedding rope_;
  ActivationObserver observer_;
};
TORCH_MODULE(CausalLm);

}  // namespace mq
