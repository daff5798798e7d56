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

}  // namespace

LinearWeights& linear_of(LayerWeights& w, WeightSite site) {
  switch (site) {
    case WeightSite::kQProj: return w.q_proj;
    case WeightSite::kKProj: return w.k_proj;
    case WeightSite::kVProj: return w.v_proj;
    case WeightSite::kOProj: return w.o_proj;
    case WeightSite::kGate: return w.gate_proj;
    case WeightSite::kUp: return w.up_proj;
    case WeightSite::kDown: return w.down_proj;
    default: break;
  }
  throw make_error("linear_of: weight site ", static_cast<int>(site), " is not a linear");
}

LinearTransforms linear_transforms(const LayerScalesImpl& s) {
  LinearTransforms t;
  const auto at = [&t](WeightSite site) -> WeightTransform& {
    return t[static_cast<size_t>(site)];
  };
  // norm -> fcs (smooth_ln_fcs): fc columns * s.
  if (s.qkv_smooth_scale.defined())
    for (const WeightSite site : {WeightSite::kQProj, WeightSite::kKProj, WeightSite::kVProj})
      at(site).col = s.qkv_smooth_scale;                                     // [C]
  if (s.fc1_smooth_scale.defined())
    for (const WeightSite site : {WeightSite::kGate, WeightSite::kUp})
      at(site).col = s.fc1_smooth_scale;                                     // [C]
  // fc -> fc (smooth_fc_fc): producer rows / s, consumer columns * s (per KV head for o).
  if (s.out_smooth_scale.defined()) {
    at(WeightSite::kVProj).row = s.out_smooth_scale;                          // [KV*D]
    at(WeightSite::kVProj).row_divides = true;
    at(WeightSite::kOProj).col = s.out_columns();                             // [H*D]
  }
  if (s.fc2_smooth_scale.defined()) {
    at(WeightSite::kUp).row = s.fc2_smooth_scale;                             // [F]
    at(WeightSite::kUp).row_divides = true;
    at(WeightSite::kDown).col = s.fc2_smooth_scale;                           // [F]
  }
  // q <-> k (smooth_q_k): q rows / s, k rows * s, tied across rotary pairs.
  if (s.qkt_smooth_scale.defined()) {
    at(WeightSite::kQProj).row = s.qkt_query_rows();                          // [H*D]
    at(WeightSite::kQProj).row_divides = true;
    at(WeightSite::kKProj).row = s.qkt_rows();                                // [KV*D]
  }
  return t;
}

LayerWeights apply_smooth_scales(const LayerWeights& w, const LayerScalesImpl& s, NormKind norm,
                                 const std::array<bool, kNumWeightSites>& keep_weight) {
  LayerWeights out = w;
  // norm -> fcs (smooth_ln_fcs): norm / s.
  if (s.qkv_smooth_scale.defined())
    out.input_layernorm = scale_norm(out.input_layernorm, s.qkv_smooth_scale, norm);
  if (s.fc1_smooth_scale.defined())
    out.post_attention_layernorm = scale_norm(out.post_attention_layernorm, s.fc1_smooth_scale,
                                              norm);
  const LinearTransforms transforms = linear_transforms(s);
  for (const WeightSite site : EnumValues<WeightSite>::values()) {
    const WeightTransform& t = transforms[static_cast<size_t>(site)];
    if (!t.any()) continue;
    LinearWeights& l = linear_of(out, site);
    if (!keep_weight[static_cast<size_t>(site)]) l.weight = transform_weight(l.weight, t);
    if (l.bias.defined() && t.row.defined())
      l.bias = t.row_divides ? l.bias / t.row : l.bias * t.row;  // [out]
  }
  return out;
}

}  // namespace mq
