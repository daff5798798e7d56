// mobilequant/config/quant_sites.h
// The names of every place a quantizer can sit, as the MobileQuant reference names them in its
// act_dict.json / default_qcfg.json (reference-implementation.md §1.1, §3.1, §6.1): a module
// name plus the field "input", "input2" or "output" for activations, the module name alone for
// weights. The reference renames the MLP (gate_proj -> w1, up_proj -> w3, down_proj -> w2);
// these names follow it so that exported files interoperate with the authors' tools.
//
// The decoder reports every activation site to its hooks (models/decoder.h); which sites are
// quantized, and how, is the QuantConfig's business (config/quant_config.h).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "mobilequant/config/field_visitor.h"

namespace mq {

/// An activation site. Per-block sites first (in forward order), then the model-level ones.
enum class ActSite : int {
  kInputNormIn,    ///< "input_layernorm.input": the residual stream entering the block
  kInputNormOut,   ///< "input_layernorm.output": the q/k/v input
  kQProjIn,        ///< "self_attn.q_proj.input" (the norm output again; redundant site)
  kKProjIn,        ///< "self_attn.k_proj.input" (redundant site)
  kVProjIn,        ///< "self_attn.v_proj.input" (redundant site)
  kQProjOut,       ///< "self_attn.q_proj.output": q before RoPE [B, T, H*D]
  kKProjOut,       ///< "self_attn.k_proj.output": k before RoPE [B, T, KV*D]
  kVProjOut,       ///< "self_attn.v_proj.output": v [B, T, KV*D]
  kQkBmmIn,        ///< "self_attn.qk_bmm.input": q after RoPE [B, H, T, D]
  kQkBmmIn2,       ///< "self_attn.qk_bmm.input2": k after RoPE [B, KV, T, D]
  kQkBmmOut,       ///< "self_attn.qk_bmm.output": QK^T before 1/sqrt(D) and the mask [B, H, T, T]
  kPvBmmIn,        ///< "self_attn.pv_bmm.input": softmax probabilities [B, H, T, T]
  kPvBmmIn2,       ///< "self_attn.pv_bmm.input2": v [B, KV, T, D]
  kPvBmmOut,       ///< "self_attn.pv_bmm.output": attention context [B, T, H*D]
  kOProjIn,        ///< "self_attn.o_proj.input" (the context again; redundant site)
  kOProjOut,       ///< "self_attn.o_proj.output": the attention branch [B, T, C]
  kResidAdd1Out,   ///< "resid_add_1.output": residual after attention [B, T, C]
  kPostNormIn,     ///< "post_attention_layernorm.input" (= resid_add_1.output) [B, T, C]
  kPostNormOut,    ///< "post_attention_layernorm.output": the gate/up input [B, T, C]
  kGateIn,         ///< "mlp.w1.input" (redundant site)
  kUpIn,           ///< "mlp.w3.input" (redundant site)
  kGateOut,        ///< "mlp.w1.output": gate [B, T, F]
  kUpOut,          ///< "mlp.w3.output": up [B, T, F]
  kActIn,          ///< "mlp.act_fn.input" (= mlp.w1.output; redundant site)
  kActIn2,         ///< "mlp.act_fn.input2": sigmoid(gate) inside SiLU [B, T, F] (SiLU only)
  kActOut,         ///< "mlp.act_fn.output": act(gate) [B, T, F]
  kDownIn,         ///< "mlp.w2.input": act(gate) * up [B, T, F]
  kDownOut,        ///< "mlp.w2.output": the MLP branch [B, T, C]
  kResidAdd2Out,   ///< "resid_add_2.output": the block's output [B, T, C]
  kEmbedOut,       ///< "model.embed_tokens.output" (model level) [B, T, C]
  kFinalNormIn,    ///< "model.norm.input" (model level) [B, T, C]
  kFinalNormOut,   ///< "model.norm.output" (model level) [B, T, C]
  kLmHeadOut,      ///< "lm_head.output" (model level) [B, T, V]
  kCount,
};

/// Number of activation sites.
constexpr int kNumActSites = static_cast<int>(ActSite::kCount);
/// Sites before this one belong to a decoder block; the rest are model level (layer -1).
constexpr ActSite kFirstModelSite = ActSite::kEmbedOut;

/// A weight site of a decoder block.
enum class WeightSite : int {
  kInputNorm,  ///< "input_layernorm" (the norm weight, [C])
  kQProj,      ///< "self_attn.q_proj" [H*D, C]
  kKProj,      ///< "self_attn.k_proj" [KV*D, C]
  kVProj,      ///< "self_attn.v_proj" [KV*D, C]
  kOProj,      ///< "self_attn.o_proj" [C, H*D]
  kPostNorm,   ///< "post_attention_layernorm" [C]
  kGate,       ///< "mlp.w1" (gate_proj) [F, C]
  kUp,         ///< "mlp.w3" (up_proj) [F, C]
  kDown,       ///< "mlp.w2" (down_proj) [C, F]
  kCount,
};

/// Number of weight sites.
constexpr int kNumWeightSites = static_cast<int>(WeightSite::kCount);

/// True for the two norm weights of a block (quantized per tensor only, §2).
inline bool is_norm(WeightSite site) {
  return site == WeightSite::kInputNorm || site == WeightSite::kPostNorm;
}

/// The reference name, e.g. "self_attn.qk_bmm.input2" or "mlp.w2.output".
const char* to_string(ActSite site);
/// The reference name, e.g. "self_attn.q_proj" or "mlp.w2".
const char* to_string(WeightSite site);
/// Streams the reference name (for messages and test output).
inline std::ostream& operator<<(std::ostream& os, ActSite site) { return os << to_string(site); }
/// Streams the reference name.
inline std::ostream& operator<<(std::ostream& os, WeightSite site) { return os << to_string(site); }
/// True for the sites of a decoder block (reported with layer >= 0).
inline bool is_block_site(ActSite site) {
  return static_cast<int>(site) < static_cast<int>(kFirstModelSite);
}
/// The module part of a site's name ("self_attn.qk_bmm") and its field ("input2").
std::pair<std::string, std::string> split_site_name(ActSite site);
/// The full name of a site at a layer: "model.layers.3.self_attn.qk_bmm.input2", or the bare
/// name for model-level sites.
std::string qualified_site_name(int64_t layer, ActSite site);
/// The Hugging Face module that holds a weight site's tensor: "self_attn.q_proj",
/// "mlp.gate_proj", "input_layernorm", ...
const char* hf_module_name(WeightSite site);

/// Sites the reference quantizes (§3.1 table); every other site repeats a tensor that is
/// already quantized where it was produced, or is left in float by the reference.
bool is_reference_site(ActSite site);
/// Whether the site's last dimension is a fixed channel dimension (false for the [.., T, T]
/// attention scores and probabilities, whose last dimension is the sequence).
bool has_channel_dim(ActSite site);

/// Every ActSite, in declaration order (for parse_enum and allowed-set messages).
template <>
struct EnumValues<ActSite> {
  /// Every ActSite.
  static const std::vector<ActSite>& values();
};
/// Every WeightSite, in declaration order.
template <>
struct EnumValues<WeightSite> {
  /// Every WeightSite.
  static const std::vector<WeightSite>& values();
};

}  // namespace mq
