// mobilequant/config/quant_config.h
// How every weight and activation site is quantized: a QuantSpec per site (bits, symmetry,
// granularity, on/off), read from a preset in configs/quant/ or any JSON file of that form:
//
//   {
//     "name": "w8a8", "description": "the paper's W8A8",
//     "weights":     {"default": {"bits": 8}, "mlp.w2": {"granularity": "per_channel"},
//                     "input_layernorm": {"bits": 16}, "post_attention_layernorm": {"bits": 16}},
//     "activations": {"default": {"bits": 8}, "self_attn.qk_bmm.output": {"bits": 16}}
//   }
//
// Resolution: a site's spec is "default" with the site's own fields laid over it. Every
// weight site and every reference activation site (is_reference_site) takes "default"; the
// other activation sites (redundant repeats such as q_proj.input, the residual adds, the
// model-level sites) are off unless the file lists them. A spec's omitted fields keep their
// defaults (enabled, 8 bits, asymmetric, per tensor). Unknown sites and keys are errors; both
// "weights" and "activations" must be present ({"default": {"enabled": false}} turns a group
// off), "name" and "description" are optional. configs/quant/README.md lists the presets.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/config/field_visitor.h"
#include "mobilequant/config/quant_sites.h"
#include "mobilequant/config/quant_spec.h"

namespace mq {

/// Every site's QuantSpec, resolved.
struct QuantConfig {
  std::string name;                                    ///< preset or file name, for reports
  std::string description;                             ///< one line, for reports
  std::array<QuantSpec, kNumWeightSites> weights{};    ///< indexed by WeightSite
  std::array<QuantSpec, kNumActSites> activations{};   ///< indexed by ActSite

  /// The spec of a weight site.
  const QuantSpec& weight(WeightSite s) const { return weights[static_cast<int>(s)]; }
  /// The spec of an activation site.
  const QuantSpec& act(ActSite s) const { return activations[static_cast<int>(s)]; }
  /// True if any site is enabled (false for the "fp" preset).
  bool any_enabled() const;
  /// Validates every spec and the combinations: norm weights per tensor only; activation
  /// sites per_tensor or per_channel (per_channel only where has_channel_dim); no per_group
  /// activations. Every spec's fields are checked (QuantSpec::validate); the combinations only
  /// where the site is enabled. Errors name `where` and the site, e.g.
  /// "configs/quant/x.json: activations.self_attn.qk_bmm.output: per_channel ...".
  void validate(const std::string& where) const;
  /// Checks the config against a model's shapes: group sizes must divide the input dimension
  /// of every weight they apply to. `hidden`, `intermediate`, `attn_width` = H*D.
  void validate_for_model(int64_t hidden, int64_t intermediate, int64_t attn_width,
                          const std::string& where) const;
};

/// Parses the JSON form above; `where` (the file) prefixes every error. Validates.
QuantConfig quant_config_from_json(const nlohmann::json& j, const std::string& where);
/// The fully resolved form: "weights" and "activations" list every site explicitly.
nlohmann::json quant_config_to_json(const QuantConfig& cfg);
/// A preset name ("w8a8", looked up as <presets_dir>/w8a8.json) or a path to a JSON file.
/// Throws mq::Error naming the preset and the available ones when neither exists.
QuantConfig load_quant_config(const std::string& name_or_path, const std::string& presets_dir);
/// A per-site table for printing (`--print-config`): one line per site, "site  spec".
std::string format_quant_table(const QuantConfig& cfg);
/// Applies one `--set`-style override "GROUP.SITE.FIELD=VALUE" to `cfg`, e.g.
/// "activations.self_attn.qk_bmm.output.bits=16" or "weights.mlp.w2.granularity=per_channel";
/// SITE "all" sets the field at every currently enabled site of the group
/// ("activations.all.bits=16"), and "name=..." / "description=..." set those strings. The value
/// is parsed as in config_json.h's apply_override. "GROUP.SITE=<JSON object>" lays several
/// fields over the spec at once, as a file does; that is how a site becomes per_group, since
/// granularity and group_size are only valid together
/// ('weights.all={"granularity": "per_group", "group_size": 64}'). Re-validates; on any error
/// (unknown group, site or field, ill-typed value, invalid result) throws mq::Error naming
/// `where` and the text, and leaves `cfg` unchanged.
void apply_quant_override(QuantConfig& cfg, const std::string& text, const std::string& where);
/// The names of the presets in `presets_dir` (the stems of its *.json files), sorted.
std::vector<std::string> list_quant_presets(const std::string& presets_dir);

}  // namespace mq
