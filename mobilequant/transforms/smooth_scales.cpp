// mobilequant/transforms/smooth_scales.cpp
#include "mobilequant/transforms/smooth_scales.h"

#include "mobilequant/core/error.h"

namespace mq {

LayerScalesImpl::LayerScalesImpl(const ModelConfig& cfg, LetPairs pairs_)
    : pairs(pairs_),
      num_heads_(cfg.num_attention_heads),
      num_kv_heads_(cfg.num_key_value_heads),
      head_dim_(cfg.head_dim),
      rotary_dim_(cfg.rotary_dim()) {
  MQ_CHECK(rotary_dim_ % 2 == 0, "LET: rotary dimension ", rotary_dim_, " must be even");
  const int64_t c = cfg.hidden_size, f = cfg.intermediate_size;
  if (pairs.qkv) qkv_smooth_scale = register_parameter("qkv_smooth_scale", torch::ones({c}));
  if (pairs.fc1) fc1_smooth_scale = register_parameter("fc1_smooth_scale", torch::ones({c}));
  if (pairs.fc2) fc2_smooth_scale = register_parameter("fc2_smooth_scale", torch::ones({f}));
  if (pairs.out)
    out_smooth_scale = register_parameter("out_smooth_scale", torch::ones({num_kv_heads_ * head_dim_}));
  if (pairs.qkt)
    qkt_smooth_scale = register_parameter(
        "qkt_smooth_scale", torch::ones({num_kv_heads_, head_dim_ - rotary_dim_ / 2}));
}

void LayerScalesImpl::reset() {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) p.fill_(1.0);
}

void LayerScalesImpl::truncate() {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    // truncate_number: |s| < 1e-2 becomes sign(s) * 1e-2; an exact 0 stays 0.
    auto small = p.abs() < kMinSmoothScale;
    p.copy_(torch::where(small, p.sign() * kMinSmoothScale, p));
  }
}

torch::Tensor LayerScalesImpl::qkt_rows() const {
  if (!qkt_smooth_scale.defined()) return {};
  const int64_t half = rotary_dim_ / 2;
  auto pairs_part = qkt_smooth_scale.narrow(1, 0, half);                     // [KV, R/2]
  auto rest = qkt_smooth_scale.narrow(1, half, head_dim_ - rotary_dim_);     // [KV, D-R]
  return torch::cat({pairs_part, pairs_part, rest}, 1).reshape({-1});        // [KV*D]
}

torch::Tensor LayerScalesImpl::qkt_query_rows() const {
  auto k_rows = qkt_rows();
  if (!k_rows.defined()) return {};
  const int64_t rep = num_heads_ / num_kv_heads_;
  return k_rows.view({num_kv_heads_, head_dim_}).repeat_interleave(rep, 0).reshape({-1});  // [H*D]
}

torch::Tensor LayerScalesImpl::out_columns() const {
  if (!out_smooth_scale.defined()) return {};
  const int64_t rep = num_heads_ / num_kv_heads_;
  return out_smooth_scale.view({num_kv_heads_, head_dim_}).repeat_interleave(rep, 0).reshape({-1});
}

namespace {

/// Divides a norm's output channels by s (weight, and bias if any). Gemma's stored w is
/// transformed so that the computed multiplier 1 + w becomes (1 + w) / s.
NormWeights scale_norm(const NormWeights& n, const torch::Tensor& s, NormKind kind) {
  NormWeights out = n;
  if (kind == NormKind::kRmsOnePlus) {
    out.weight = (1.0 + n.weight) / s - 1.0;
  } else {
    out.weight = n.weight / s;
  }
  if (n.bias.defined()) out.bias = n.bias / s;
  return out;
}

/// Multiplies a linear's input columns by s: W [out, in] * s[None, :].
LinearWeights scale_columns(const LinearWeights& l, const torch::Tensor& s) {
  return LinearWeights{l.weight * s.unsqueeze(0), l.bias};
}

/// Divides a linear's output rows (and bias) by s: W [out, in] / s[:, None].
LinearWeights divide_rows(const LinearWeights& l, const torch::Tensor& s) {
  return LinearWeights{l.weight / s.unsqueeze(1), l.bias.defined() ? l.bias / s : l.bias};
}

/// Multiplies a linear's output rows (and bias) by s.
LinearWeights multiply_rows(const LinearWeights& l, const torch::Tensor& s) {
  return LinearWeights{l.weight * s.unsqueeze(1), l.bias.defined() ? l.bias * s : l.bias};
}

}  // namespace

LayerWeights apply_smooth_scales(const LayerWeights& w, const LayerScalesImpl& s, NormKind norm) {
  LayerWeights out = w;
  // norm -> fcs (smooth_ln_fcs): norm / s, fc columns * s.
  if (s.qkv_smooth_scale.defined()) {
    const auto& sc = s.qkv_smooth_scale;                                     // [C]
    out.input_layernorm = scale_norm(out.input_layernorm, sc, norm);
    out.q_proj = scale_columns(out.q_proj, sc);
    out.k_proj = scale_columns(out.k_proj, sc);
    out.v_proj = scale_columns(out.v_proj, sc);
  }
  if (s.fc1_smooth_scale.defined()) {
    const auto& sc = s.fc1_smooth_scale;                                     // [C]
    out.post_attention_layernorm = scale_norm(out.post_attention_layernorm, sc, norm);
    out.gate_proj = scale_columns(out.gate_proj, sc);
    out.up_proj = scale_columns(out.up_proj, sc);
  }
  // fc -> fc (smooth_fc_fc): v rows / s, o columns * s (per KV head).
  if (s.out_smooth_scale.defined()) {
    out.v_proj = divide_rows(out.v_proj, s.out_smooth_scale);                // [KV*D]
    out.o_proj = scale_columns(out.o_proj, s.out_columns());                 // [H*D]
  }
  if (s.fc2_smooth_scale.defined()) {
    out.up_proj = divide_rows(out.up_proj, s.fc2_smooth_scale);              // [F]
    out.down_proj = scale_columns(out.down_proj, s.fc2_smooth_scale);
  }
  // q <-> k (smooth_q_k): q rows / s, k rows * s, tied across rotary pairs.
  if (s.qkt_smooth_scale.defined()) {
    out.q_proj = divide_rows(out.q_proj, s.qkt_query_rows());                // [H*D]
    out.k_proj = multiply_rows(out.k_proj, s.qkt_rows());                    // [KV*D]
  }
  return out;
}

}  // namespace mq
