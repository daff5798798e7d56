// mobilequant/models/decoder.cpp
// The shared decoder of llama, gemma and stablelm. Numerics follow transformers:
// norms in fp32 then cast back, RoPE tables in fp32, softmax in fp32. An fp64 model keeps its
// norms and softmax in fp64 (the simulation's noise floor: eval --runtime int), where HF would
// round them to fp32.
#include "mobilequant/models/decoder.h"

#include <cmath>
#include <set>

#include <ATen/Parallel.h>

#include "mobilequant/core/dtype.h"
#include "mobilequant/core/error.h"

namespace mq {

namespace {

/// The activation the forward continues with at `site` (x itself without hooks).
inline torch::Tensor at_site(ForwardHooks* hooks, int64_t layer, ActSite site,
                             const torch::Tensor& x) {
  return hooks != nullptr ? hooks->activation(layer, site, x) : x;
}

/// transformers' repeat_kv: KV head j serves query heads j*rep .. j*rep+rep-1. x: [B, KV, T, D]
/// -> [B, KV*rep, T, D]. An expand and a copy: repeat_interleave with an integer count
/// synchronises a CUDA device (it sizes its output from a device tensor).
inline torch::Tensor repeat_kv(const torch::Tensor& x, int64_t rep) {
  if (rep == 1) return x;
  const int64_t b = x.size(0), kv = x.size(1), t = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({b, kv, rep, t, d}).reshape({b, kv * rep, t, d});
}

/// x [..., in] -> [..., out] with explicit weights.
inline torch::Tensor linear(const torch::Tensor& x, const LinearWeights& w) {
  return torch::nn::functional::linear(x, w.weight, w.bias);
}

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

/// Copies src into dst (a parameter) after checking the shape; `name` for errors.
void copy_checked(torch::Tensor& dst, const torch::Tensor& src, const std::string& where,
                  const char* name) {
  if (!dst.defined()) {
    MQ_CHECK(!src.defined(), where, ": ", name, " has no such parameter in this model");
    return;
  }
  MQ_CHECK(src.defined(), where, ": ", name, " missing");
  MQ_CHECK(src.sizes() == dst.sizes(), where, ": ", name, " has shape ", src.sizes(),
           ", expected ", dst.sizes());
  dst.copy_(src);
}

/// Hooks that report to an observer and change nothing.
class ObserverHooks : public ForwardHooks {
 public:
  explicit ObserverHooks(ActivationObserver fn) : fn_(std::move(fn)) {}
  torch::Tensor activation(int64_t layer, ActSite site, const torch::Tensor& x) override {
    fn_(layer, site, x);
    return x;
  }

 private:
  ActivationObserver fn_;
};

}  // namespace

// ---------------------------------------------------------------------------- Norm

NormImpl::NormImpl(NormKind kind_, int64_t dim, double eps_) : kind(kind_), eps(eps_) {
  // Gemma stores w with the norm computing (1 + w), so its identity is zeros.
  weight = register_parameter("weight", kind == NormKind::kRmsOnePlus ? torch::zeros({dim})
                                                                      : torch::ones({dim}));
  if (kind == NormKind::kLayerNorm) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  return apply(kind, eps, x, NormWeights{weight, bias});
}

torch::Tensor NormImpl::apply(NormKind kind, double eps, const torch::Tensor& x,
                              const NormWeights& w) {
  const auto& weight = w.weight;
  const auto& bias = w.bias;
  switch (kind) {
    case NormKind::kRms: {
      // LlamaRMSNorm: normalise in fp32 (fp64 stays fp64), cast back, then scale by w in the
      // weight's dtype.
      auto xf = x.to(compute_dtype(x));                                      // [..., C]
      auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
      return weight * y.to(x.scalar_type());
    }
    case NormKind::kRmsOnePlus: {
      // GemmaRMSNorm: (x * (1 + w)) in fp32 (fp64 stays fp64), then cast back.
      auto xf = x.to(compute_dtype(x));                                      // [..., C]
      auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
      return (y * (1.0 + weight.to(compute_dtype(x)))).to(x.scalar_type());
    }
    case NormKind::kLayerNorm: {
      // nn.LayerNorm; under bf16 weights compute in fp32 as autocast would.
      if (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64)
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
  if (positions.device().is_cpu()) {
    // On the CPU, element by element with the C library's cos and sin in double, rounded to
    // fp32: the same bits whatever the thread count or the buffers' alignment. LibTorch's fp32
    // cos is not correctly rounded, and its results need not be reproducible: two exports of one
    // run on the 16-core GPU host wrote different integer tensors, one of which moved the
    // runtime's RoPE outputs from position 1537 on (one thread's share of 8192 positions starts
    // at 1536; results/2026-11-24-int-v5/), and the integer model disagreed with the simulation.
    const torch::Tensor freqs =
        (positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_).contiguous();  // [B, T, R/2]
    torch::Tensor c = torch::empty_like(freqs);                                // [B, T, R/2]
    torch::Tensor s = torch::empty_like(freqs);                                // [B, T, R/2]
    const float* f = freqs.data_ptr<float>();
    float* cp = c.data_ptr<float>();
    float* sp = s.data_ptr<float>();
    // Each element on its own: any split over threads gives the same bits.
    at::parallel_for(0, freqs.numel(), 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        cp[i] = static_cast<float>(std::cos(static_cast<double>(f[i])));
        sp[i] = static_cast<float>(std::sin(static_cast<double>(f[i])));
      }
    });
    return {torch::cat({c, c}, -1).unsqueeze(1), torch::cat({s, s}, -1).unsqueeze(1)};  // [B, 1, T, R]
  }
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
                                     const LayerWeights& w, int64_t layer, ForwardHooks* hooks) {
  const int64_t b = x.size(0), t = x.size(1);
  torch::Tensor q, k, v;
  if (hooks == nullptr) {
    q = linear(x, w.q_proj);                                                 // [B, T, H*D]
    k = linear(x, w.k_proj);                                                 // [B, T, KV*D]
    v = linear(x, w.v_proj);                                                 // [B, T, KV*D]
  } else {
    q = at_site(hooks, layer, ActSite::kQProjOut,
                linear(at_site(hooks, layer, ActSite::kQProjIn, x), w.q_proj));
    k = at_site(hooks, layer, ActSite::kKProjOut,
                linear(at_site(hooks, layer, ActSite::kKProjIn, x), w.k_proj));
    v = at_site(hooks, layer, ActSite::kVProjOut,
                linear(at_site(hooks, layer, ActSite::kVProjIn, x), w.v_proj));
  }
  q = q.view({b, t, num_heads_, head_dim_}).transpose(1, 2);                 // [B, H, T, D]
  k = k.view({b, t, num_kv_heads_, head_dim_}).transpose(1, 2);              // [B, KV, T, D]
  v = v.view({b, t, num_kv_heads_, head_dim_}).transpose(1, 2);              // [B, KV, T, D]
  q = RotaryEmbedding::apply(q, cos, sin);
  k = RotaryEmbedding::apply(k, cos, sin);
  const int64_t rep = num_heads_ / num_kv_heads_;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  torch::Tensor ctx;                                                         // [B, H, T, D]
  if (hooks != nullptr) {
    // Explicit path: every operand of the two matmuls is a site (per-tensor or per-D ranges
    // are the same before and after repeat_kv, so k and v are reported unrepeated).
    q = at_site(hooks, layer, ActSite::kQkBmmIn, q);
    k = at_site(hooks, layer, ActSite::kQkBmmIn2, k);
    v = at_site(hooks, layer, ActSite::kPvBmmIn2, v);
    k = repeat_kv(k, rep);                                                   // [B, H, T, D]
    v = repeat_kv(v, rep);                                                   // [B, H, T, D]
    auto scores = torch::matmul(q, k.transpose(-2, -1));                     // [B, H, T, T]
    auto probs = hooks->attention_probs(layer, scores, scale, mask);         // [B, H, T, T]
    ctx = torch::matmul(probs, v);
  } else {
    k = repeat_kv(k, rep);                                                   // [B, H, T, D]
    v = repeat_kv(v, rep);                                                   // [B, H, T, D]
    if (mask.defined()) {
      ctx = at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale);
    } else {
      ctx = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, scale);
    }
  }
  ctx = ctx.transpose(1, 2).reshape({b, t, num_heads_ * head_dim_});         // [B, T, H*D]
  if (hooks == nullptr) return linear(ctx, w.o_proj);                        // [B, T, C]
  ctx = at_site(hooks, layer, ActSite::kPvBmmOut, ctx);
  ctx = at_site(hooks, layer, ActSite::kOProjIn, ctx);
  return at_site(hooks, layer, ActSite::kOProjOut, linear(ctx, w.o_proj));   // [B, T, C]
}

torch::Tensor ForwardHooks::attention_probs(int64_t layer, const torch::Tensor& scores,
                                           double scale, const torch::Tensor& mask) {
  const int64_t t = scores.size(-1);
  auto s = activation(layer, ActSite::kQkBmmOut, scores) * scale;           // [B, H, T, T]
  auto allowed = mask.defined()
                     ? mask
                     : torch::ones({t, t}, torch::dtype(torch::kBool).device(scores.device())).tril();
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(s.to(compute_dtype(s)), -1).to(scores.scalar_type());
  return activation(layer, ActSite::kPvBmmIn, probs);                        // [B, H, T, T]
}

// ---------------------------------------------------------------------------- MLP

MlpImpl::MlpImpl(const ModelConfig& cfg) : act_(cfg.hidden_act) {
  const int64_t c = cfg.hidden_size, f = cfg.intermediate_size;
  gate_proj = register_module("gate_proj", make_linear(c, f, cfg.mlp_bias));
  up_proj = register_module("up_proj", make_linear(c, f, cfg.mlp_bias));
  down_proj = register_module("down_proj", make_linear(f, c, cfg.mlp_bias));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x, const LayerWeights& w, int64_t layer,
                               ForwardHooks* hooks) {
  if (hooks == nullptr) {
    auto gate = linear(x, w.gate_proj);                                      // [B, T, F]
    auto up = linear(x, w.up_proj);                                          // [B, T, F]
    torch::Tensor act;                                                       // [B, T, F]
    switch (act_) {
      case Activation::kSilu: act = torch::silu(gate); break;
      case Activation::kGeluTanh: act = torch::gelu(gate, "tanh"); break;
      case Activation::kGeluErf: act = torch::gelu(gate); break;
    }
    return linear(act * up, w.down_proj);                                    // [B, T, C]
  }
  auto gate = at_site(hooks, layer, ActSite::kGateOut,
                      linear(at_site(hooks, layer, ActSite::kGateIn, x), w.gate_proj));
  auto up = at_site(hooks, layer, ActSite::kUpOut,
                    linear(at_site(hooks, layer, ActSite::kUpIn, x), w.up_proj));
  gate = at_site(hooks, layer, ActSite::kActIn, gate);
  torch::Tensor act;                                                         // [B, T, F]
  switch (act_) {
    case Activation::kSilu:
      // The reference's QSiLU: x * sigmoid(x), with the sigmoid a site of its own (§3.1).
      act = gate * at_site(hooks, layer, ActSite::kActIn2, torch::sigmoid(gate));
      break;
    case Activation::kGeluTanh: act = torch::gelu(gate, "tanh"); break;
    case Activation::kGeluErf: act = torch::gelu(gate); break;
  }
  act = at_site(hooks, layer, ActSite::kActOut, act);
  auto h = at_site(hooks, layer, ActSite::kDownIn, act * up);               // [B, T, F]
  return at_site(hooks, layer, ActSite::kDownOut, linear(h, w.down_proj));  // [B, T, C]
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
                                        int64_t layer, ForwardHooks* hooks) {
  const LayerWeights stored = weights();
  const LayerWeights w = hooks != nullptr ? hooks->layer_weights(layer, stored) : stored;
  const NormImpl& n1 = *input_layernorm;
  const NormImpl& n2 = *post_attention_layernorm;
  auto h = NormImpl::apply(n1.kind, n1.eps, at_site(hooks, layer, ActSite::kInputNormIn, x),
                           w.input_layernorm);                               // [B, T, C]
  h = at_site(hooks, layer, ActSite::kInputNormOut, h);
  auto r = at_site(hooks, layer, ActSite::kResidAdd1Out,
                   x + self_attn->forward(h, cos, sin, mask, w, layer, hooks));  // [B, T, C]
  h = NormImpl::apply(n2.kind, n2.eps, at_site(hooks, layer, ActSite::kPostNormIn, r),
                      w.post_attention_layernorm);
  h = at_site(hooks, layer, ActSite::kPostNormOut, h);
  return at_site(hooks, layer, ActSite::kResidAdd2Out,
                 r + mlp->forward(h, w, layer, hooks));                      // [B, T, C]
}

LayerWeights DecoderLayerImpl::weights() const {
  auto lin = [](const torch::nn::Linear& l) { return LinearWeights{l->weight, l->bias}; };
  auto norm = [](const Norm& n) { return NormWeights{n->weight, n->bias}; };
  return LayerWeights{norm(input_layernorm),          lin(self_attn->q_proj),
                      lin(self_attn->k_proj),         lin(self_attn->v_proj),
                      lin(self_attn->o_proj),         norm(post_attention_layernorm),
                      lin(mlp->gate_proj),            lin(mlp->up_proj),
                      lin(mlp->down_proj)};
}

void DecoderLayerImpl::set_weights(const LayerWeights& w, const std::string& where) {
  torch::NoGradGuard no_grad;
  auto lin = [&](torch::nn::Linear& l, const LinearWeights& src, const char* name) {
    copy_checked(l->weight, src.weight, where, name);
    copy_checked(l->bias, src.bias, where, name);
  };
  auto norm = [&](Norm& n, const NormWeights& src, const char* name) {
    copy_checked(n->weight, src.weight, where, name);
    copy_checked(n->bias, src.bias, where, name);
  };
  norm(input_layernorm, w.input_layernorm, "input_layernorm");
  lin(self_attn->q_proj, w.q_proj, "self_attn.q_proj");
  lin(self_attn->k_proj, w.k_proj, "self_attn.k_proj");
  lin(self_attn->v_proj, w.v_proj, "self_attn.v_proj");
  lin(self_attn->o_proj, w.o_proj, "self_attn.o_proj");
  norm(post_attention_layernorm, w.post_attention_layernorm, "post_attention_layernorm");
  lin(mlp->gate_proj, w.gate_proj, "mlp.gate_proj");
  lin(mlp->up_proj, w.up_proj, "mlp.up_proj");
  lin(mlp->down_proj, w.down_proj, "mlp.down_proj");
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
  ForwardHooks* hooks = hooks_;
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

  auto h = embed(input_ids);                                                 // [B, T, C]
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i)
    h = model->layers[i]->as<DecoderLayer>()->forward(h, cos, sin, mask, i, hooks);
  h = model->norm(at_site(hooks, -1, ActSite::kFinalNormIn, h));
  return at_site(hooks, -1, ActSite::kFinalNormOut, h);
}

torch::Tensor CausalLmImpl::embed(const torch::Tensor& input_ids) {
  auto h = model->embed_tokens(input_ids);                                   // [B, T, C]
  if (cfg_.scale_embeddings) {
    // Gemma multiplies by sqrt(hidden) rounded to the activation dtype.
    auto normalizer = torch::tensor(std::sqrt(static_cast<double>(cfg_.hidden_size)),
                                    torch::dtype(h.scalar_type()).device(input_ids.device()));
    h = h * normalizer;
  }
  return at_site(hooks_, -1, ActSite::kEmbedOut, h);
}

std::pair<torch::Tensor, torch::Tensor> CausalLmImpl::rope_tables(
    int64_t seqlen, const torch::Device& device) const {
  auto positions = torch::arange(seqlen, torch::dtype(torch::kInt64).device(device)).unsqueeze(0);
  return rope_.tables(positions);                                            // [1, 1, T, R]
}

torch::Tensor CausalLmImpl::run_layer(int64_t i, const torch::Tensor& h) {
  MQ_CHECK(h.dim() == 3 && h.size(2) == cfg_.hidden_size, "CausalLm::run_layer: hidden states ",
           "must be [B, T, ", cfg_.hidden_size, "], got ", h.sizes());
  auto [cos, sin] = rope_tables(h.size(1), h.device());                      // [1, 1, T, R]
  return layer(i)->forward(h, cos, sin, /*mask=*/{}, i, hooks_);             // [B, T, C]
}

torch::Tensor CausalLmImpl::logits(const torch::Tensor& hidden) {
  if (cfg_.tie_word_embeddings) return torch::matmul(hidden, model->embed_tokens->weight.t());
  return lm_head(hidden);
}

torch::Tensor CausalLmImpl::forward(const torch::Tensor& input_ids,
                                    const torch::Tensor& attention_mask) {
  auto out = logits(hidden_states(input_ids, attention_mask));               // [B, T, V]
  return at_site(hooks_, -1, ActSite::kLmHeadOut, out);
}

void CausalLmImpl::set_observer(ActivationObserver observer) {
  if (observer) {
    observer_hooks_ = std::make_shared<ObserverHooks>(std::move(observer));
    hooks_ = observer_hooks_.get();
  } else {
    if (hooks_ == observer_hooks_.get()) hooks_ = nullptr;
    observer_hooks_.reset();
  }
}

DecoderLayer CausalLmImpl::layer(int64_t i) const {
  MQ_CHECK(i >= 0 && i < cfg_.num_hidden_layers, "CausalLm: layer ", i, " out of range [0, ",
           cfg_.num_hidden_layers, ")");
  return DecoderLayer(model->layers->ptr<DecoderLayerImpl>(i));
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
