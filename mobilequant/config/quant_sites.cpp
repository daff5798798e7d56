// mobilequant/config/quant_sites.cpp
#include "mobilequant/config/quant_sites.h"

#include <array>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

struct ActSiteInfo {
  const char* name;
  bool reference;    // quantized by the reference's GPU simulation (§3.1)
  bool channel_dim;  // last dim is a fixed channel dim
};

// In ActSite order.
constexpr std::array<ActSiteInfo, kNumActSites> kActSites = {{
    {"input_layernorm.input", true, true},
    {"input_layernorm.output", true, true},
    {"self_attn.q_proj.input", false, true},
    {"self_attn.k_proj.input", false, true},
    {"self_attn.v_proj.input", false, true},
    {"self_attn.q_proj.output", true, true},
    {"self_attn.k_proj.output", true, true},
    {"self_attn.v_proj.output", true, true},
    {"self_attn.qk_bmm.input", true, true},
    {"self_attn.qk_bmm.input2", true, true},
    {"self_attn.qk_bmm.output", true, false},
    {"self_attn.pv_bmm.input", true, false},
    {"self_attn.pv_bmm.input2", true, true},
    {"self_attn.pv_bmm.output", true, true},
    {"self_attn.o_proj.input", false, true},
    {"self_attn.o_proj.output", true, true},
    {"resid_add_1.output", false, true},
    {"post_attention_layernorm.input", true, true},
    {"post_attention_layernorm.output", true, true},
    {"mlp.w1.input", false, true},
    {"mlp.w3.input", false, true},
    {"mlp.w1.output", true, true},
    {"mlp.w3.output", true, true},
    {"mlp.act_fn.input", false, true},
    {"mlp.act_fn.input2", true, true},
    {"mlp.act_fn.output", true, true},
    {"mlp.w2.input", true, true},
    {"mlp.w2.output", true, true},
    {"resid_add_2.output", false, true},
    {"model.embed_tokens.output", false, true},
    {"model.norm.input", false, true},
    {"model.norm.output", false, true},
    {"lm_head.output", false, true},
}};

constexpr std::array<const char*, kNumWeightSites> kWeightNames = {
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
    "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
    "mlp.w1",          "mlp.w3",           "mlp.w2"};

constexpr std::array<const char*, kNumWeightSites> kWeightHfNames = {
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
    "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
    "mlp.gate_proj",   "mlp.up_proj",      "mlp.down_proj"};

const ActSiteInfo& info(ActSite site) {
  const int i = static_cast<int>(site);
  if (i < 0 || i >= kNumActSites) throw make_error("ActSite: invalid value ", i);
  return kActSites[static_cast<size_t>(i)];
}

}  // namespace

const char* to_string(ActSite site) { return info(site).name; }

const char* to_string(WeightSite site) {
  const int i = static_cast<int>(site);
  if (i < 0 || i >= kNumWeightSites) throw make_error("WeightSite: invalid value ", i);
  return kWeightNames[static_cast<size_t>(i)];
}

const char* hf_module_name(WeightSite site) {
  (void)to_string(site);  // range check
  return kWeightHfNames[static_cast<size_t>(static_cast<int>(site))];
}

std::pair<std::string, std::string> split_site_name(ActSite site) {
  const std::string name = to_string(site);
  const auto dot = name.rfind('.');
  return {name.substr(0, dot), name.substr(dot + 1)};
}

std::string qualified_site_name(int64_t layer, ActSite site) {
  if (!is_block_site(site)) return to_string(site);
  return "model.layers." + std::to_string(layer) + "." + to_string(site);
}

bool is_reference_site(ActSite site) { return info(site).reference; }

bool has_channel_dim(ActSite site) { return info(site).channel_dim; }

const std::vector<ActSite>& EnumValues<ActSite>::values() {
  static const std::vector<ActSite> all = [] {
    std::vector<ActSite> v;
    for (int i = 0; i < kNumActSites; ++i) v.push_back(static_cast<ActSite>(i));
    return v;
  }();
  return all;
}

const std::vector<WeightSite>& EnumValues<WeightSite>::values() {
  static const std::vector<WeightSite> all = [] {
    std::vector<WeightSite> v;
    for (int i = 0; i < kNumWeightSites; ++i) v.push_back(static_cast<WeightSite>(i));
    return v;
  }();
  return all;
}

}  // namespace mq
