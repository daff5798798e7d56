// mobilequant/export/encoding_table.cpp
#include "mobilequant/export/encoding_table.h"

#include <cmath>
#include <sstream>

#include "mobilequant/core/error.h"
#include "mobilequant/models/decoder.h"
#include "mobilequant/quant/fake_quantizer.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

namespace {

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

ExportSite act_site(int64_t layer, ActSite site, const QuantSpec& spec) {
  ExportSite e;
  e.layer = layer;
  e.is_param = false;
  e.act = site;
  e.spec = spec;
  const auto [module, field] = split_site_name(site);
  e.module = is_block_site(site) ? layer_prefix(layer) + module : module;
  e.field = field;
  return e;
}

/// How far a scale lies outside the reference's clamp [kMinScale, kMaxScale]: |log(s / clamp(s))|,
/// 0 inside it.
double clamp_distance(double s) {
  return std::abs(std::log(s / std::fmin(std::fmax(s, kMinScale), kMaxScale)));
}

}  // namespace

double code_span(int64_t bits) { return std::ldexp(1.0, static_cast<int>(bits)) - 1.0; }

double SiteEncoding::max(size_t i) const { return min(i) + scale[i] * code_span(site.spec.bits); }

std::vector<ExportSite> export_sites(const QuantConfig& quant, int64_t num_layers, bool silu) {
  std::vector<ExportSite> out;
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    for (const ActSite site : EnumValues<ActSite>::values()) {
      if (!is_block_site(site)) continue;
      if (site == ActSite::kActIn2 && !silu) continue;  // no sigmoid in a GELU MLP
      const QuantSpec& spec = quant.act(site);
      if (spec.enabled || is_reference_site(site)) out.push_back(act_site(layer, site, spec));
    }
    for (const WeightSite site : EnumValues<WeightSite>::values()) {
      ExportSite e;
      e.layer = layer;
      e.is_param = true;
      e.weight = site;
      e.spec = quant.weight(site);
      e.module = layer_prefix(layer) + to_string(site);
      e.field = "weight";
      out.push_back(e);
    }
  }
  for (const ActSite site : EnumValues<ActSite>::values()) {
    if (is_block_site(site) || !quant.act(site).enabled) continue;
    out.push_back(act_site(-1, site, quant.act(site)));
  }
  return out;
}

EncodingTable build_encoding_table(QuantizedModelImpl& qm) {
  torch::NoGradGuard no_grad;
  CausalLm model = qm.float_model();
  const ModelConfig& cfg = model->config();
  const TensorMap state = qm.quant_state();
  EncodingTable table;
  int64_t rounded = 0;
  double worst_drift = 0.0;
  std::string worst_site;
  // Learned activation scales outside the reference's clamp [kMinScale, kMaxScale].
  int64_t unclamped = 0;
  double worst_scale = 0.0, worst_beyond = 0.0;  // the farthest one and its clamp_distance
  std::string worst_scale_site;
  const bool silu = cfg.hidden_act == Activation::kSilu;
  for (const ExportSite& site : export_sites(qm.quant_config(), cfg.num_hidden_layers, silu)) {
    SiteEncoding enc;
    enc.site = site;
    const QuantSpec& spec = site.spec;
    const std::string name = site.tensor_name();
    if (!spec.enabled) {
      table.entries.push_back(enc);
      continue;
    }
    torch::Tensor scale, offset;  // fp32, one element per channel/group (flattened)
    if (site.is_param) {
      QuantizedLayer ql = qm.layer(site.layer);
      const WeightFakeQuantizer& wq = ql->weight_quantizers[static_cast<size_t>(site.weight)];
      MQ_CHECK(!wq.is_empty(), "export: ", name, ": the model has no weight quantizer there");
      MQ_CHECK(!wq->lwc_enabled(), "export: ", name,
               ": the weight quantizer still has learnable clipping bounds; fold the model "
               "first (a saved quantized model is folded)");
      torch::Tensor w = weight_of(model->layer(site.layer)->weights(), site.weight)
                            .detach()
                            .to(torch::kCPU, torch::kFloat32);  // [out, in] or [C]
      if (is_norm(site.weight) && cfg.norm == NormKind::kRmsOnePlus) w = 1.0 + w;
      const QParams p = wq->qparams(w);  // [groups, 1] or [1]
      scale = p.scale.flatten().to(torch::kFloat32).contiguous();
      offset = p.offset.flatten().to(torch::kFloat32).contiguous();
    } else {
      // quant_state() names every initialised activation quantizer, model-level ones too.
      const std::string base = qualified_site_name(site.layer, site.act) + "_quantizer";
      const auto s_it = state.find(base + ".scale");
      const auto o_it = state.find(base + ".offset");
      MQ_CHECK(s_it != state.end() && o_it != state.end(), "export: ", name,
               ": the activation quantizer was never calibrated (no scale/offset)");
      scale = s_it->second.flatten().to(torch::kCPU, torch::kFloat32).contiguous();  // [1] or [C]
      offset = o_it->second.flatten().to(torch::kCPU, torch::kFloat32).contiguous();  // [1] or [C]
    }
    const int64_t n = scale.numel();
    const float* s = scale.data_ptr<float>();
    const float* o = offset.data_ptr<float>();
    const int64_t qmin = spec.qmin();
    const double span = code_span(spec.bits);
    bool excludes_zero = false;
    for (int64_t i = 0; i < n; ++i) {
      MQ_CHECK(std::isfinite(s[i]) && s[i] > 0.0f, "export: ", name, ": scale[", i, "] = ", s[i],
               ", expected a finite positive scale (a learned range collapsed?)");
      MQ_CHECK(std::isfinite(o[i]), "export: ", name, ": offset[", i, "] = ", o[i],
               ", expected a finite offset");
      const double r = std::nearbyint(static_cast<double>(o[i]));
      const double drift = std::abs(r - o[i]);
      if (drift > 0) {
        ++rounded;
        if (drift > worst_drift) {
          worst_drift = drift;
          worst_site = name;
        }
      }
      const double beyond = site.is_param ? 0.0 : clamp_distance(s[i]);
      if (beyond > 0.0) ++unclamped;
      if (beyond > worst_beyond) {
        worst_beyond = beyond;
        worst_scale = s[i];
        worst_scale_site = name;
      }
      const int64_t off = qmin - static_cast<int64_t>(r);
      enc.scale.push_back(static_cast<double>(s[i]));
      enc.offset.push_back(off);
      if (!spec.symmetric && (off > 0 || off < -static_cast<int64_t>(span))) excludes_zero = true;
    }
    if (excludes_zero) table.ranges_excluding_zero.push_back(name);
    table.entries.push_back(std::move(enc));
  }
  if (rounded > 0) {
    std::ostringstream os;
    os << rounded << " learned activation offset(s) were not integers and were rounded to the "
       << "nearest integer (largest change " << worst_drift << " at " << worst_site << ")";
    table.notes.push_back(os.str());
  }
  if (unclamped > 0) {
    std::ostringstream os;
    os << unclamped << " learned activation scale(s) lie outside the reference's clamp ["
       << kMinScale << ", " << kMaxScale << "] (the farthest " << worst_scale << " at "
       << worst_scale_site << "); they are exported as learned, and every reader here keeps "
       << "them, but the authors' harness, which recomputes scales from act_dict.json with that "
       << "clamp, would evaluate a different model there";
    table.notes.push_back(os.str());
  }
  return table;
}

}  // namespace mq
