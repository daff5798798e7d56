// mobilequant/transforms/quantized_model.cpp
#include "mobilequant/transforms/quantized_model.h"

#include <ATen/autocast_mode.h>

#include <array>
#include <set>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/core/error.h"
#include "mobilequant/quant/fused_softmax_quantize.h"

namespace mq {

namespace {

/// The dtype a quantized linear weight is handed to the block in: bf16 while training under
/// CUDA bf16 autocast (the matmul's cast, done by the quantizer's pass), else the stored
/// weight's. Only with gradients on, where the weights are not cached for later calls.
torch::ScalarType linear_weight_dtype(const torch::Tensor& stored) {
  const bool bf16 = torch::GradMode::is_enabled() && stored.is_cuda() &&
                    stored.scalar_type() == torch::kFloat32 &&
                    at::autocast::is_autocast_enabled(at::kCUDA) &&
                    at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
  return bf16 ? torch::kBFloat16 : stored.scalar_type();
}

/// "self_attn.qk_bmm.output" -> "self_attn.qk_bmm.output_quantizer" (the reference's module).
std::string act_quantizer_name(int64_t layer, ActSite site) {
  return qualified_site_name(layer, site) + "_quantizer";
}

/// "model.layers.3.mlp.w2.weight_quantizer".
std::string weight_quantizer_name(int64_t layer, WeightSite site) {
  return "model.layers." + std::to_string(layer) + "." + to_string(site) + ".weight_quantizer";
}

/// A name LibTorch accepts for a submodule (no dots).
std::string module_key(const std::string& name) {
  std::string out = name;
  for (char& c : out)
    if (c == '.') c = '_';
  return out;
}


/// The shape of a weight site's tensor in a model.
std::vector<int64_t> weight_shape(const ModelConfig& cfg, WeightSite site) {
  const int64_t c = cfg.hidden_size, f = cfg.intermediate_size;
  const int64_t q = cfg.num_attention_heads * cfg.head_dim;
  const int64_t kv = cfg.num_key_value_heads * cfg.head_dim;
  switch (site) {
    case WeightSite::kInputNorm:
    case WeightSite::kPostNorm: return {c};
    case WeightSite::kQProj: return {q, c};
    case WeightSite::kKProj:
    case WeightSite::kVProj: return {kv, c};
    case WeightSite::kOProj: return {c, q};
    case WeightSite::kGate:
    case WeightSite::kUp: return {f, c};
    case WeightSite::kDown: return {c, f};
    case WeightSite::kCount: break;
  }
  throw make_error("weight_shape: invalid weight site");
}


}  // namespace

torch::Tensor& weight_of(LayerWeights& w, WeightSite site) {
  switch (site) {
    case WeightSite::kInputNorm: return w.input_layernorm.weight;
    case WeightSite::kQProj: return w.q_proj.weight;
    case WeightSite::kKProj: return w.k_proj.weight;
    case WeightSite::kVProj: return w.v_proj.weight;
    case WeightSite::kOProj: return w.o_proj.weight;
    case WeightSite::kPostNorm: return w.post_attention_layernorm.weight;
    case WeightSite::kGate: return w.gate_proj.weight;
    case WeightSite::kUp: return w.up_proj.weight;
    case WeightSite::kDown: return w.down_proj.weight;
    case WeightSite::kCount: break;
  }
  throw make_error("weight_of: invalid weight site");
}

const torch::Tensor& weight_of(const LayerWeights& w, WeightSite site) {
  return weight_of(const_cast<LayerWeights&>(w), site);
}

// ---------------------------------------------------------------------------- QuantizedLayer

QuantizedLayerImpl::QuantizedLayerImpl(const ModelConfig& cfg,
                                       const QuantizedModelOptions& options, int64_t layer) {
  if (options.let().any()) scales = register_module("scales", LayerScales(cfg, options.let()));
  const QuantConfig& q = options.quant();
  for (const WeightSite site : EnumValues<WeightSite>::values()) {
    const QuantSpec& spec = q.weight(site);
    if (!spec.enabled) continue;
    const std::string name = weight_quantizer_name(layer, site);
    weight_quantizers[static_cast<size_t>(site)] = register_module(
        module_key(to_string(site)) + "_weight_quantizer",
        WeightFakeQuantizer(WeightFakeQuantizerOptions(spec, weight_shape(cfg, site), name)));
  }
  for (const ActSite site : EnumValues<ActSite>::values()) {
    if (!is_block_site(site)) continue;
    if (site == ActSite::kActIn2 && cfg.hidden_act != Activation::kSilu) continue;  // no sigmoid
    const QuantSpec& spec = q.act(site);
    if (!spec.enabled) continue;
    act_quantizers[static_cast<size_t>(site)] = register_module(
        module_key(to_string(site)) + "_quantizer",
        ActFakeQuantizer(ActFakeQuantizerOptions(spec, act_quantizer_name(layer, site))));
  }
}

// ---------------------------------------------------------------------------- QuantizedModel

QuantizedModelImpl::QuantizedModelImpl(CausalLm model, QuantizedModelOptions options_)
    : options(std::move(options_)), model_(std::move(model)) {
  MQ_CHECK(!model_.is_empty(), "QuantizedModel: no float model given");
  const ModelConfig& cfg = model_->config();
  options.quant().validate("quant config '" + options.quant().name + "'");
  options.quant().validate_for_model(cfg.hidden_size, cfg.intermediate_size,
                                     cfg.num_attention_heads * cfg.head_dim,
                                     "quant config '" + options.quant().name + "'");
  register_module("float_model", model_);
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    layers_->push_back(QuantizedLayer(cfg, options, i));
    layer_ptrs_.push_back(layers_->ptr<QuantizedLayerImpl>(static_cast<size_t>(i)).get());
  }
  for (const ActSite site : EnumValues<ActSite>::values()) {
    if (is_block_site(site) || !options.quant().act(site).enabled) continue;
    model_act_quantizers_[static_cast<size_t>(site)] = register_module(
        module_key(to_string(site)) + "_quantizer",
        ActFakeQuantizer(ActFakeQuantizerOptions(options.quant().act(site), act_quantizer_name(-1, site))));
  }
  // Quantization parameters live beside the weights: a scale on the CPU under a CUDA model
  // would be copied to the device at every site of every forward (a synchronising copy).
  const auto params = model_->parameters();
  if (!params.empty()) to(params.front().device());
  update_hooks();
}

QuantizedModelImpl::~QuantizedModelImpl() {
  if (!model_.is_empty() && model_->hooks() == this) model_->set_hooks(nullptr);
}

QuantizedLayer QuantizedModelImpl::layer(int64_t i) const {
  MQ_CHECK(i >= 0 && i < static_cast<int64_t>(layers_->size()), "QuantizedModel: layer ", i,
           " out of range [0, ", layers_->size(), ")");
  return QuantizedLayer(layers_->ptr<QuantizedLayerImpl>(static_cast<size_t>(i)));
}

void QuantizedModelImpl::update_hooks() {
  const bool transform = options.let().any();
  const bool active = transform || static_cast<bool>(observer_) ||
                      (quant_on_ && options.quant().any_enabled());
  if (active) {
    model_->set_hooks(this);
  } else if (model_->hooks() == this) {
    model_->set_hooks(nullptr);
  }
}

torch::Tensor QuantizedModelImpl::forward(const torch::Tensor& input_ids,
                                          const torch::Tensor& attention_mask) {
  return model_->forward(input_ids, attention_mask);
}

LayerWeights QuantizedModelImpl::layer_weights(int64_t layer, const LayerWeights& stored) {
  const bool use_cache = cache_on_ && !torch::GradMode::is_enabled();
  if (use_cache && cache_valid_[static_cast<size_t>(layer)])
    return cache_[static_cast<size_t>(layer)];
  LayerWeights w = export_codes_ && quant_on_ ? export_code_weights(layer, stored)
                                              : simulated_weights(layer, stored);
  if (use_cache) {
    cache_[static_cast<size_t>(layer)] = w;
    cache_valid_[static_cast<size_t>(layer)] = true;
  }
  return w;
}

LayerWeights QuantizedModelImpl::simulated_weights(int64_t layer, const LayerWeights& stored) {
  auto& q = *layer_ptrs_[static_cast<size_t>(layer)];
  LayerWeights w = stored;
  const NormKind norm = model_->config().norm;
  // The linears' quantizers take the LET transform themselves (one fused pass on CUDA).
  std::array<bool, kNumWeightSites> in_quantizer{};
  for (const WeightSite site : EnumValues<WeightSite>::values()) {
    const auto& wq = q.weight_quantizers[static_cast<size_t>(site)];
    in_quantizer[static_cast<size_t>(site)] =
        quant_on_ && !is_norm(site) && !wq.is_empty() && wq->options.spec().enabled;
  }
  LinearTransforms transforms;
  if (!q.scales.is_empty()) {
    q.scales->truncate();
    transforms = linear_transforms(*q.scales);
    w = apply_smooth_scales(w, *q.scales, norm, in_quantizer);
  }
  if (!quant_on_) return w;
  const torch::ScalarType linear_dtype = linear_weight_dtype(stored.q_proj.weight);
  for (const WeightSite site : EnumValues<WeightSite>::values()) {
    auto& wq = q.weight_quantizers[static_cast<size_t>(site)];
    if (wq.is_empty()) continue;
    torch::Tensor& t = weight_of(w, site);
    if (in_quantizer[static_cast<size_t>(site)]) {
      t = wq->forward_transformed(t, transforms[static_cast<size_t>(site)], linear_dtype);
    } else if (is_norm(site) && norm == NormKind::kRmsOnePlus) {
      t = wq(1.0 + t) - 1.0;  // quantize the multiplier 1 + w the norm computes
    } else {
      t = wq(t);
    }
  }
  return w;
}

LayerWeights QuantizedModelImpl::export_code_weights(int64_t layer, const LayerWeights& stored) {
  auto& q = *layer_ptrs_[static_cast<size_t>(layer)];
  MQ_CHECK(q.scales.is_empty(), "QuantizedModel: block ", layer, " has LET scales; the ",
           "export's codes (set_export_codes) are defined for a folded model only");
  LayerWeights w = stored;
  const bool one_plus = model_->config().norm == NormKind::kRmsOnePlus;
  for (const WeightSite site : EnumValues<WeightSite>::values()) {
    auto& wq = q.weight_quantizers[static_cast<size_t>(site)];
    if (wq.is_empty()) continue;
    torch::Tensor& t = weight_of(w, site);
    t = is_norm(site) && one_plus ? wq->forward_export_codes(1.0 + t) - 1.0  // multiplier 1 + w
                                  : wq->forward_export_codes(t);
  }
  return w;
}

void QuantizedModelImpl::set_export_codes(bool on) {
  export_codes_ = on;
  invalidate_weight_cache();
}

torch::Tensor QuantizedModelImpl::activation(int64_t layer, ActSite site, const torch::Tensor& x) {
  if (observer_) observer_(layer, site, x);
  if (!quant_on_) return x;
  auto& q = act_quantizer(layer, site);
  return q.is_empty() ? x : q(x);
}

namespace {

/// The fused softmax's view of an activation quantizer: float (absent or disabled) or per
/// tensor with a range. False when the fused kernel cannot take it (per channel, no range yet:
/// the composed ops then run, and report an unset range).
bool as_softmax_quantizer(const ActFakeQuantizer& q, SoftmaxQuantizer& out) {
  out = SoftmaxQuantizer{};
  if (q.is_empty() || !q->options.spec().enabled) return true;
  const QuantSpec& spec = q->options.spec();
  if (spec.granularity != Granularity::kPerTensor || !q->initialized()) return false;
  out.enabled = true;
  out.scale = q->scale;
  out.offset = q->offset;
  out.qmin = spec.qmin();
  out.qmax = spec.qmax();
  return true;
}

}  // namespace

torch::Tensor QuantizedModelImpl::attention_probs(int64_t layer, const torch::Tensor& scores,
                                                  double scale, const torch::Tensor& mask) {
  SoftmaxQuantizer in, out;
  if (quant_on_ && !observer_ && !mask.defined() && fused_softmax_quantize_supported(scores) &&
      as_softmax_quantizer(act_quantizer(layer, ActSite::kQkBmmOut), in) &&
      as_softmax_quantizer(act_quantizer(layer, ActSite::kPvBmmIn), out))
    return fused_softmax_quantize(scores, scale, in, out);  // [B, H, T, T]
  return ForwardHooks::attention_probs(layer, scores, scale, mask);
}

ActFakeQuantizer& QuantizedModelImpl::act_quantizer(int64_t layer, ActSite site) {
  if (layer < 0) return model_act_quantizers_[static_cast<size_t>(site)];
  return layer_ptrs_[static_cast<size_t>(layer)]->act_quantizers[static_cast<size_t>(site)];
}

template <class F>
void QuantizedModelImpl::for_each_act_quantizer(F&& fn) const {
  const int64_t n = static_cast<int64_t>(layer_ptrs_.size());
  for (int64_t layer = -1; layer < n; ++layer) {
    for (const ActSite site : EnumValues<ActSite>::values()) {
      if ((layer < 0) == is_block_site(site)) continue;
      ActFakeQuantizer q = layer < 0 ? model_act_quantizers_[static_cast<size_t>(site)]
                                     : layer_ptrs_[static_cast<size_t>(layer)]
                                           ->act_quantizers[static_cast<size_t>(site)];
      if (!q.is_empty()) fn(layer, site, q);
    }
  }
}

void QuantizedModelImpl::set_quantization(bool on) {
  quant_on_ = on;
  invalidate_weight_cache();
  update_hooks();
}

void QuantizedModelImpl::set_observer(ActivationObserver observer) {
  observer_ = std::move(observer);
  update_hooks();
}

void QuantizedModelImpl::set_weight_cache(bool on) {
  cache_on_ = on;
  invalidate_weight_cache();
}

void QuantizedModelImpl::invalidate_weight_cache() {
  cache_.assign(cache_on_ ? layers_->size() : 0, LayerWeights{});
  cache_valid_.assign(cache_.size(), false);
}

void QuantizedModelImpl::set_act_ranges(const ActStats& stats) {
  for_each_act_quantizer([&](int64_t layer, ActSite site, ActFakeQuantizer& q) {
    MQ_CHECK(stats.contains(layer, site), "calibration statistics have no range for '",
             qualified_site_name(layer, site),
             "' (was the calibration run on this model, with its activation?)");
    const SiteStats& s = stats.at(layer, site);
    if (q->options.spec().granularity == Granularity::kPerChannel) {
      q->set_range(s.min, s.max);
    } else {
      q->set_range(s.tensor_min(), s.tensor_max());
    }
  });
  invalidate_weight_cache();
}

void QuantizedModelImpl::set_act_ranges_learnable(bool learnable) {
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* q = m->as<ActFakeQuantizerImpl>()) q->set_learnable(learnable);
  }
}

void QuantizedModelImpl::enable_lwc(double init) {
  for (int64_t i = 0; i < static_cast<int64_t>(layers_->size()); ++i) enable_lwc(i, init);
}

void QuantizedModelImpl::fold() {
  for (int64_t i = 0; i < static_cast<int64_t>(layers_->size()); ++i) fold_layer(i);
}

void QuantizedModelImpl::fold_layer(int64_t i) {
  torch::NoGradGuard no_grad;
  const NormKind norm = model_->config().norm;
  auto& q = *layer(i);
  DecoderLayer block = model_->layer(i);
  LayerWeights w = block->weights();
  if (!q.scales.is_empty()) {
    q.scales->truncate();
    w = apply_smooth_scales(w, *q.scales, norm);
  }
  for (const WeightSite site : EnumValues<WeightSite>::values()) {
    auto& wq = q.weight_quantizers[static_cast<size_t>(site)];
    if (wq.is_empty() || !wq->lwc_enabled()) continue;
    torch::Tensor& t = weight_of(w, site);
    t = (is_norm(site) && norm == NormKind::kRmsOnePlus) ? wq->clip(1.0 + t) - 1.0 : wq->clip(t);
    wq->disable_lwc();
  }
  block->set_weights(w, "fold of block " + std::to_string(i));
  if (!q.scales.is_empty()) q.scales->reset();
  invalidate_weight_cache();
}

void QuantizedModelImpl::enable_lwc(int64_t i, double init) {
  // The bounds are created on the CPU; they live where the model does (as every other
  // quantization parameter), so that the optimizer updates them there.
  const auto device = model_->parameters().front().device();
  for (auto& wq : layer(i)->weight_quantizers)
    if (!wq.is_empty()) {
      wq->enable_lwc(init);
      wq->to(device);
    }
  invalidate_weight_cache();
}

void QuantizedModelImpl::disable_lwc(int64_t i) {
  for (auto& wq : layer(i)->weight_quantizers)
    if (!wq.is_empty() && wq->lwc_enabled()) wq->disable_lwc();
  invalidate_weight_cache();
}

std::string QuantizedModelImpl::parameter_name(const torch::Tensor& p) const {
  for (const auto& named : named_parameters(/*recurse=*/true))
    if (named.value().is_same(p)) return named.key();
  return "";
}

std::vector<torch::Tensor> QuantizedModelImpl::let_parameters() {
  std::vector<torch::Tensor> out;
  for (const auto& m : *layers_) {
    auto& q = *m->as<QuantizedLayerImpl>();
    if (q.scales.is_empty()) continue;
    for (auto& p : q.scales->parameters()) out.push_back(p);
  }
  return out;
}

std::vector<torch::Tensor> QuantizedModelImpl::lwc_parameters() {
  std::vector<torch::Tensor> out;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* q = m->as<WeightFakeQuantizerImpl>(); q != nullptr && q->lwc_enabled()) {
      out.push_back(q->upbound_factor);
      out.push_back(q->lowbound_factor);
    }
  }
  return out;
}

std::vector<torch::Tensor> QuantizedModelImpl::lrl_parameters() {
  std::vector<torch::Tensor> out;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* q = m->as<ActFakeQuantizerImpl>(); q != nullptr && q->initialized()) {
      out.push_back(q->scale);
      out.push_back(q->offset);
    }
  }
  return out;
}

std::vector<torch::Tensor> QuantizedModelImpl::let_parameters(int64_t i) {
  auto q = layer(i);
  return q->scales.is_empty() ? std::vector<torch::Tensor>{} : q->scales->parameters();
}

std::vector<torch::Tensor> QuantizedModelImpl::lwc_parameters(int64_t i) {
  std::vector<torch::Tensor> out;
  for (const auto& wq : layer(i)->weight_quantizers) {
    if (wq.is_empty() || !wq->lwc_enabled()) continue;
    out.push_back(wq->upbound_factor);
    out.push_back(wq->lowbound_factor);
  }
  return out;
}

std::vector<torch::Tensor> QuantizedModelImpl::lrl_parameters(int64_t i) {
  std::vector<torch::Tensor> out;
  for (const auto& aq : layer(i)->act_quantizers) {
    if (aq.is_empty() || !aq->initialized()) continue;
    out.push_back(aq->scale);
    out.push_back(aq->offset);
  }
  return out;
}

TensorMap QuantizedModelImpl::quant_state() const {
  TensorMap out;
  const int64_t n = static_cast<int64_t>(layers_->size());
  for (int64_t i = 0; i < n; ++i) {
    const auto& q = *layers_->ptr<QuantizedLayerImpl>(static_cast<size_t>(i));
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    if (!q.scales.is_empty()) {
      for (const auto& p : q.scales->named_parameters())
        out[prefix + p.key()] = p.value().detach().cpu();
    }
    for (const WeightSite site : EnumValues<WeightSite>::values()) {
      const auto& wq = q.weight_quantizers[static_cast<size_t>(site)];
      if (wq.is_empty() || !wq->lwc_enabled()) continue;
      out[weight_quantizer_name(i, site) + ".upbound_factor"] = wq->upbound_factor.detach().cpu();
      out[weight_quantizer_name(i, site) + ".lowbound_factor"] = wq->lowbound_factor.detach().cpu();
    }
  }
  for_each_act_quantizer([&](int64_t layer, ActSite site, const ActFakeQuantizer& q) {
    if (!q->initialized()) return;
    out[act_quantizer_name(layer, site) + ".scale"] = q->scale.detach().cpu();
    out[act_quantizer_name(layer, site) + ".offset"] = q->offset.detach().cpu();
  });
  return out;
}

void QuantizedModelImpl::load_quant_state(const TensorMap& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  auto take = [&](const std::string& name) -> const torch::Tensor* {
    auto it = tensors.find(name);
    if (it == tensors.end()) return nullptr;
    used.insert(name);
    return &it->second;
  };
  auto copy = [&](torch::Tensor& dst, const torch::Tensor& src, const std::string& name) {
    MQ_CHECK(src.sizes() == dst.sizes(), source, ": tensor '", name, "' has shape ", src.sizes(),
             ", expected ", dst.sizes());
    dst.copy_(src);
  };
  const int64_t n = static_cast<int64_t>(layers_->size());
  for (int64_t i = 0; i < n; ++i) {
    auto& q = *layers_->ptr<QuantizedLayerImpl>(static_cast<size_t>(i));
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    if (!q.scales.is_empty()) {
      for (auto& p : q.scales->named_parameters())
        if (const auto* t = take(prefix + p.key())) copy(p.value(), *t, prefix + p.key());
    }
    for (const WeightSite site : EnumValues<WeightSite>::values()) {
      auto& wq = q.weight_quantizers[static_cast<size_t>(site)];
      if (wq.is_empty()) continue;
      const std::string base = weight_quantizer_name(i, site);
      const auto* up = take(base + ".upbound_factor");
      const auto* low = take(base + ".lowbound_factor");
      if (up == nullptr && low == nullptr) continue;
      MQ_CHECK(up != nullptr && low != nullptr, source, ": '", base,
               "' needs both upbound_factor and lowbound_factor");
      if (!wq->lwc_enabled()) wq->enable_lwc();
      copy(wq->upbound_factor, *up, base + ".upbound_factor");
      copy(wq->lowbound_factor, *low, base + ".lowbound_factor");
    }
  }
  for_each_act_quantizer([&](int64_t layer, ActSite site, ActFakeQuantizer& q) {
    const std::string base = act_quantizer_name(layer, site);
    const auto* scale = take(base + ".scale");
    const auto* offset = take(base + ".offset");
    if (scale == nullptr && offset == nullptr) return;
    MQ_CHECK(scale != nullptr && offset != nullptr, source, ": '", base,
             "' needs both scale and offset");
    q->set_qparams(*scale, *offset);
  });
  for (const auto& kv : tensors) {
    MQ_CHECK(used.count(kv.first) != 0, source, ": unexpected tensor '", kv.first, "' with shape ",
             kv.second.sizes(),
             " (not a quantization parameter of this model and quantization config '",
             options.quant().name, "')");
  }
  invalidate_weight_cache();
}

}  // namespace mq
