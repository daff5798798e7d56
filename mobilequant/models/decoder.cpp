// mobilequant/models/decoder.cpp
// The shared decoder of llama, gemma and stablelm. Numerics follow transformers:
// norms in fp32 then cast back, RoPE tables in fp32, softmax in fp32.
#include "mobilequant/models/decoder.h"

#include <cmath>
#include <set>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

/// Reports `value` to the observer, if any.
inline void tap(const ActivationObserver* observer, int64_t layer, const char* site,
                const torch::Tensor& value) {
  if (observer != nullptr && *observer) (*observer)(layer, site, value);
}

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

}  // namespace

// ---------------------------------------------------------------------------- Norm

NormImpl::NormImpl(NormKind kind_, int64_t dim, double eps_) : kind(kind_), eps(eps_) {
  // Gemma stores w with the norm computing (1 + w), so its identity is zeros.
  weight = register_parameter("weight", kind == NormKind::kRmsOnePlus ? torch::zeros({dim})
                                                                      : torch::ones({dim}));
  if (kind == NormKind::kLayerNorm) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  switch (kind) {
    case NormKind::kRms: {
      // LlamaRMSNorm: normalise in fp32, cast back, then scale by w in the weight's dtype.
      auto xf = x.to(torch::kFloat32);                                       // [..., C]
      auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
      return weight * y.to(x.scalar_type());
    }
    case NormKind::kRmsOnePlus: {
      // GemmaRMSNorm: (x * (1 + w)) in fp32, then cast back.
      auto xf = x.to(torch::kFloat32);
      auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
      return (y * (1.0 + weight.to(torch::kFloat32))).to(x.scalar_type());
    }
    case NormKind::kLayerNorm: {
      // nn.LayerNorm; under bf16 weights compute in fp32 as autocast would.
      if (x.scalar_type() == torch::kFloat32)
        return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
      auto y = torch::layer_norm(x.to(torch::kFloat32), {x.size(-1)},
                                 weight.to(torch::kFloat32), bias.to(torch::kFloat32), eps);
      return y.to(x.scalar_type());
    }
  }
  throw make_error("Norm: unknown kind");
}

// ---------------------------------------------------------------------------- RoPE

RotaryEmbedding::RotaryEmbedding(int64_t rotary_dim, double theta) : rotary_dim_(rotary_dim) {
  // inv_freq[i] = 1 / theta^(2i / rotary_dim), as transformers' default rope init.
  auto exponents = torch::arange(0, rotary_dim, 2, torch::kInt64).to(torch::kFloat32) /
                   static_cast<float>(rotary_dim);                           // [R/2]
  inv_freq_ = 1.0 / torch::pow(theta, exponents);                            // [R/2]
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::tables(
    const torch::Tensor& positions) const {
  // Copy the frequencies to the positions' device once, not on every forward.
  if (!inv_freq_on_device_.defined() || inv_freq_on_device_.device() != positions.device())
    inv_freq_on_device_ = inv_freq_.to(positions.device());
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_on_device_;  // [B, T, R/2]
  auto emb = torch::cat({freqs, freqs}, -1);                                 // [B, T, R]
  return {emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)};                   // [B, 1, T, R]
}

torch::Tensor RotaryEmbedding::apply(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin) {
  const int64_t r = cos.size(-1);
  const int64_t d = x.size(-1);
  auto rot = r == d ? x : x.narrow(-1, 0, r);                                // [B, H, T, R]
  auto x1 = rot.narrow(-1, 0, r / 2);
  auto x2 = rot.narrow(-1, r / 2, r / 2);
  auto rotated = torch::cat({-x2, x1}, -1);                                  // rotate_half
  auto c = cos.to(x.scalar_type());
  auto s = sin.to(x.scalar_type());
  auto out = rot * c + rotated * s;                                          // [B, H, T, R]
  if (r == d) return out;
  return torch::cat({out, x.narrow(-1, r, d - r)}, -1);                      // [B, H, T, D]
}

// ---------------------------------------------------------------------------- Attention

AttentionImpl::AttentionImpl(const ModelConfig& cfg)
    : num_heads_(cfg.num_attention_heads),
      num_kv_heads_(cfg.num_key_value_heads),
      head_dim_(cfg.head_dim) {
  const int64_t c = cfg.hidden_size;
  q_proj = register_module("q_proj", make_linear(c, num_heads_ * head_dim_, cfg.attention_bias));
  k_proj = register_module("k_proj", make_linear(c, num_kv_heads_ * head_dim_, cfg.attention_bias));
  v_proj = register_module("v_proj", make_linear(c, num_kv_heads_ * head_dim_, cfg.attention_bias));
  o_proj = register_module("o_proj", make_linear(num_heads_ * head_dim_, c, cfg.o_proj_bias));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const torch::Tensor& mask,
                                     int64_t layer, const ActivationObserver* observer) {
  const int64_t b = x.size(0), t = x.size(1);
  auto q = q_proj(x);                                                        // [B, T, H*D]
  auto k = k_proj(x);                                                        // [B, T, KV*D]
  auto v = v_proj(x);                                                        // [B, T, KV*D]
  tap(observer, layer, "self_attn.q_proj.out", q);
  tap(observer, layer, "self_attn.k_proj.out", k);
  tap(observer, layer, "self_attn.v_proj.out", v);
  q = q.view({b, t, num_heads_, head_dim_}).transpose(1, 2);                 // [B, H, T, D]
  k = k.view({b, t, num_kv_heads_, head_dim_}).transpose(1, 2);              // [B, KV, T, D]
  v = v.view({b, t, num_kv_heads_, head_dim_}).transpose(1, 2);              // [B, KV, T, D]
  q = RotaryEmbedding::apply(q, cos, sin);
  k = RotaryEmbedding::apply(k, cos, sin);
  tap(observer, layer, "self_attn.q_rope.out", q);
  tap(observer, layer, "self_attn.k_rope.out", k);
  const int64_t rep = num_heads_ / num_kv_heads_;
  if (rep > 1) {  // transformers' repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
    k = k.repeat_interleave(rep, 1);                                         // [B, H, T, D]
    v = v.repeat_interleave(rep, 1);                                         // [B, H, T, D]
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  torch::Tensor ctx;                                                         // [B, H, T, D]
  if (observer != nullptr && *observer) {
    // Explicit path so that the scores and probabilities can be observed.
    auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;             // [B, H, T, T]
    tap(observer, layer, "self_attn.qk_bmm.out", scores);
    auto allowed = mask.defined()
                       ? mask
                       : torch::ones({t, t}, torch::dtype(torch::kBool).device(x.device())).tril();
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
    tap(observer, layer, "self_attn.softmax.out", probs);
    ctx = torch::matmul(probs, v);
  } else if (mask.defined()) {
    ctx = at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale);
  } else {
    ctx = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, scale);
  }
  ctx = ctx.transpose(1, 2).reshape({b, t, num_heads_ * head_dim_});         // [B, T, H*D]
  tap(observer, layer, "self_attn.o_proj.in", ctx);
  auto out = o_proj(ctx);                                                    // [B, T, C]
  tap(observer, layer, "self_attn.o_proj.out", out);
  return out;
}

// ---------------------------------------------------------------------------- MLP

MlpImpl::MlpImpl(const ModelConfig& cfg) : act_(cfg.hidden_act) {
  const int64_t c = cfg.hidden_size, f = cfg.intermediate_size;
  gate_proj = register_module("gate_proj", make_linear(c, f, cfg.mlp_bias));
  up_proj = register_module("up_proj", make_linear(c, f, cfg.mlp_bias));
  down_proj = register_module("down_proj", make_linear(f, c, cfg.mlp_bias));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x, int64_t layer,
                               const ActivationObserver* observer) {
  auto gate = gate_proj(x);                                                  // [B, T, F]
  auto up = up_proj(x);                                                      // [B, T, F]
  tap(observer, layer, "mlp.gate_proj.out", gate);
  tap(observer, layer, "mlp.up_proj.out", up);
  torch::Tensor act;                                                         // [B, T, F]
  switch (act_) {
    case Activation::kSilu: act = torch::silu(gate); break;
    case Activation::kGeluTanh: act = torch::gelu(gate, "tanh"); break;
    case Activation::kGeluErf: act = torch::gelu(gate); break;
  }
  tap(observer, layer, "mlp.act_fn.out", act);
  auto h = act * up;                                                         // [B, T, F]
  tap(observer, layer, "mlp.down_proj.in", h);
  auto out = down_proj(h);                                                   // [B, T, C]
  tap(observer, layer, "mlp.down_proj.out", out);
  return out;
}

// ---------------------------------------------------------------------------- Block

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& cfg) {
  input_layernorm =
      register_module("input_layernorm", Norm(cfg.norm, cfg.hidden_size, cfg.norm_eps));
  self_attn = register_module("self_attn", Attention(cfg));
  post_attention_layernorm =
      register_module("post_attention_layernorm", Norm(cfg.norm, cfg.hidden_size, cfg.norm_eps));
  mlp = register_module("mlp", Mlp(cfg));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                        const torch::Tensor& sin, const torch::Tensor& mask,
                                        int64_t layer, const ActivationObserver* observer) {
  tap(observer, layer, "input_layernorm.in", x);
  auto h = input_layernorm(x);                                               // [B, T, C]
  tap(observer, layer, "input_layernorm.out", h);
  auto r = x + self_attn->forward(h, cos, sin, mask, layer, observer);       // [B, T, C]
  tap(observer, layer, "post_attention_layernorm.in", r);
  h = post_attention_layernorm(r);
  tap(observer, layer, "post_attention_layernorm.out", h);
  auto out = r + mlp->forward(h, layer, observer);                           // [B, T, C]
  tap(observer, layer, "out", out);
  return out;
}

// ---------------------------------------------------------------------------- Model

DecoderModelImpl::DecoderModelImpl(const ModelConfig& cfg) {
  embed_tokens = register_module(
      "embed_tokens", torch::nn::Embedding(cfg.vocab_size, cfg.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) layers->push_back(DecoderLayer(cfg));
  norm = register_module("norm", Norm(cfg.norm, cfg.hidden_size, cfg.norm_eps));
}

CausalLmImpl::CausalLmImpl(const ModelConfig& cfg)
    : cfg_(cfg), rope_(cfg.rotary_dim(), cfg.rope_theta) {
  cfg_.validate("model config");
  model = register_module("model", DecoderModel(cfg_));
  if (!cfg_.tie_word_embeddings)
    lm_head = register_module("lm_head", make_linear(cfg_.hidden_size, cfg_.vocab_size, false));
}

torch::Tensor CausalLmImpl::hidden_states(const torch::Tensor& input_ids,
                                          const torch::Tensor& attention_mask) {
  TORCH_CHECK(input_ids.dim() == 2, "CausalLm: input_ids must be [B, T], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const ActivationObserver* obs = observer_ ? &observer_ : nullptr;
  auto dev = input_ids.device();

  torch::Tensor positions;  // [B, T]
  torch::Tensor mask;       // [B, 1, T, T] bool, or undefined for plain causal attention
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.sizes() == input_ids.sizes(), "CausalLm: attention_mask ",
                attention_mask.sizes(), " must match input_ids ", input_ids.sizes());
    auto valid = attention_mask.to(torch::kBool).to(dev);                    // [B, T]
    positions = (valid.to(torch::kInt64).cumsum(1) - 1).clamp_min(0);
    auto causal = torch::ones({t, t}, torch::dtype(torch::kBool).device(dev)).tril();
    auto eye = torch::eye(t, torch::dtype(torch::kBool).device(dev));
    // A padding query attends to itself only, so that no row is empty (no NaN).
    mask = (causal.unsqueeze(0) & valid.unsqueeze(1)) | eye.unsqueeze(0);    // [B, T, T]
    mask = mask.unsqueeze(1);
  } else {
    positions = torch::arange(t, torch::dtype(torch::kInt64).device(dev)).unsqueeze(0).expand({b, t});
  }
  auto [cos, sin] = rope_.tables(positions);                                 // [B, 1, T, R]

  auto h = model->embed_tokens(input_ids);                                   // [B, T, C]
  if (cfg_.scale_embeddings) {
    // Gemma multiplies by sqrt(hidden) rounded to the activation dtype.
    auto normalizer = torch::tensor(std::sqrt(static_cast<double>(cfg_.hidden_size)),
                                    torch::dtype(h.scalar_type()).device(dev));
    h = h * normalizer;
  }
  tap(obs, -1, "model.embed_tokens.out", h);
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i)
    h = model->layers[i]->as<DecoderLayer>()->forward(h, cos, sin, mask, i, obs);
  tap(obs, -1, "model.norm.in", h);
  h = model->norm(h);
  tap(obs, -1, "model.norm.out", h);
  return h;
}

torch::Tensor CausalLmImpl::logits(const torch::Tensor& hidden) {
  if (cfg_.tie_word_embeddings) return torch::matmul(hidden, model->embed_tokens->weight.t());
  return lm_head(hidden);
}

torch::Tensor CausalLmImpl::forward(const torch::Tensor& input_ids,
                                    const torch::Tensor& attention_mask) {
  auto out = logits(hidden_states(input_ids, attention_mask));               // [B, T, V]
  if (observer_) observer_(-1, "lm_head.out", out);
  return out;
}

void CausalLmImpl::load_tensors(const TensorMap& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    auto it = tensors.find(name);
    MQ_CHECK(it != tensors.end(), source, ": tensor '", name, "' not found (expected shape ",
             item.value().sizes(), ", ", to_string(cfg_.arch), " model with ",
             cfg_.num_hidden_layers, " layers)");
    MQ_CHECK(it->second.sizes() == item.value().sizes(), source, ": tensor '", name,
             "' has shape ", it->second.sizes(), ", expected ", item.value().sizes());
    item.value().copy_(it->second);
    used.insert(name);
  }
  for (const auto& kv : tensors) {
    if (used.count(kv.first)) continue;
    if (kv.first.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (cfg_.tie_word_embeddings && kv.first == "lm_head.weight") continue;  // tied copy
    throw make_error(source, ": unexpected tensor '", kv.first, "' with shape ",
                     kv.second.sizes(), " (not a parameter of the ", to_string(cfg_.arch),
                     " model)");
  }
}

}  // namespace mq
