// mobilequant/transforms/smoothquant.cpp
#include "mobilequant/transforms/smoothquant.h"

#include "mobilequant/core/error.h"
#include "mobilequant/transforms/smooth_scales.h"

namespace mq {

namespace {

/// s = clamp(a^alpha / clamp(w, 1e-5)^(1-alpha), 1e-5); a, w: [N].
torch::Tensor smooth_scale(const torch::Tensor& a, const torch::Tensor& w, double alpha) {
  auto wc = w.clamp_min(kSmoothQuantFloor);
  return (a.pow(alpha) / wc.pow(1.0 - alpha)).clamp_min(kSmoothQuantFloor);
}

/// Per-input-column |max| over several weights [out_i, in] -> [in].
torch::Tensor column_absmax(std::initializer_list<torch::Tensor> weights) {
  torch::Tensor out;
  for (const auto& w : weights) {
    auto m = w.detach().abs().amax(0).to(torch::kFloat32).cpu();              // [in]
    out = out.defined() ? torch::maximum(out, m) : m;
  }
  return out;
}

/// The |max| per channel of a site, checked to be [n].
torch::Tensor site_absmax(const ActStats& stats, int64_t layer, ActSite site, int64_t n) {
  MQ_CHECK(stats.contains(layer, site), "SmoothQuant: calibration statistics have no '",
           qualified_site_name(layer, site), "'");
  auto a = stats.at(layer, site).absmax();                                    // [n]
  MQ_CHECK(a.numel() == n, "SmoothQuant: '", qualified_site_name(layer, site), "' has ",
           a.numel(), " channels, expected ", n);
  return a;
}

/// [H*D] -> [KV*D]: maximum over the query heads each KV head serves.
torch::Tensor max_over_group(const torch::Tensor& x, int64_t heads, int64_t kv_heads,
                             int64_t head_dim) {
  return x.view({kv_heads, heads / kv_heads, head_dim}).amax(1).reshape({-1});
}

}  // namespace

void apply_smoothquant(CausalLm& model, const ActStats& fp_stats, double alpha,
                       SmoothQuantVariant variant) {
  MQ_CHECK(alpha >= 0.0 && alpha <= 1.0, "SmoothQuant: alpha: got ", alpha, ", expected 0..1");
  torch::NoGradGuard no_grad;
  const ModelConfig& cfg = model->config();
  const bool edge = variant == SmoothQuantVariant::kEdge;
  LetPairs pairs{true, true, edge, edge, false};
  const int64_t c = cfg.hidden_size, f = cfg.intermediate_size;
  const int64_t h = cfg.num_attention_heads, kv = cfg.num_key_value_heads, d = cfg.head_dim;
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    DecoderLayer block = model->layer(i);
    const LayerWeights w = block->weights();
    LayerScalesImpl scales(cfg, pairs);
    auto set = [](torch::Tensor& p, const torch::Tensor& v) { p.copy_(v.to(p.device())); };
    set(scales.qkv_smooth_scale,
        smooth_scale(site_absmax(fp_stats, i, ActSite::kInputNormOut, c),
                     column_absmax({w.q_proj.weight, w.k_proj.weight, w.v_proj.weight}), alpha));
    set(scales.fc1_smooth_scale,
        smooth_scale(site_absmax(fp_stats, i, ActSite::kPostNormOut, c),
                     column_absmax({w.gate_proj.weight, w.up_proj.weight}), alpha));
    if (edge) {
      set(scales.fc2_smooth_scale,
          smooth_scale(site_absmax(fp_stats, i, ActSite::kDownIn, f),
                       column_absmax({w.down_proj.weight}), alpha));
      auto a_o = max_over_group(site_absmax(fp_stats, i, ActSite::kPvBmmOut, h * d), h, kv, d);
      auto w_o = max_over_group(column_absmax({w.o_proj.weight}), h, kv, d);
      set(scales.out_smooth_scale, smooth_scale(a_o, w_o, alpha));
    }
    // Scales are in fp32 on the CPU; the weights may be elsewhere or in another dtype.
    scales.to(w.q_proj.weight.device());
    LayerWeights smoothed = apply_smooth_scales(w, scales, cfg.norm);
    block->set_weights(smoothed, "SmoothQuant of block " + std::to_string(i));
  }
}

}  // namespace mq
