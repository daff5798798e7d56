// mobilequant/export/aimet_encodings.cpp
#include "mobilequant/export/aimet_encodings.h"

#include <map>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

const char* py_bool(bool b) { return b ? "True" : "False"; }

/// The most frequent bit-width among enabled specs (for quantizer_args), `fallback` if none.
template <class Specs>
int64_t common_bits(const Specs& specs, int64_t fallback) {
  std::map<int64_t, int> count;
  for (const QuantSpec& s : specs)
    if (s.enabled) ++count[s.bits];
  int64_t best = fallback;
  int best_n = 0;
  for (const auto& [bits, n] : count)
    if (n > best_n) {
      best = bits;
      best_n = n;
    }
  return best;
}

/// quantizer_args: informational defaults (QNN reads the per-tensor entries).
nlohmann::ordered_json quantizer_args(const QuantConfig& quant) {
  bool per_channel = false, symmetric = false;
  for (const WeightSite s : EnumValues<WeightSite>::values()) {
    const QuantSpec& spec = quant.weight(s);
    if (!spec.enabled) continue;
    per_channel = per_channel || spec.granularity == Granularity::kPerChannel;
    symmetric = symmetric || spec.symmetric;
  }
  return {{"activation_bitwidth", common_bits(quant.activations, 8)},
          {"dtype", "int"},
          {"is_symmetric", py_bool(symmetric)},
          {"param_bitwidth", common_bits(quant.weights, 8)},
          {"per_channel_quantization", py_bool(per_channel)},
          {"quant_scheme", "post_training_tf"}};
}

nlohmann::ordered_json enc_v061(const SiteEncoding& e, size_t i) {
  return {{"bitwidth", e.site.spec.bits},
          {"dtype", "int"},
          {"is_symmetric", py_bool(e.site.spec.symmetric)},
          {"max", e.max(i)},
          {"min", e.min(i)},
          {"offset", e.offset[i]},
          {"scale", e.scale[i]}};
}

nlohmann::ordered_json enc_v100(const SiteEncoding& e, int64_t float_bits) {
  const QuantSpec& spec = e.site.spec;
  if (!spec.enabled)
    return {{"name", e.site.tensor_name()}, {"dtype", "FLOAT"}, {"enc_type", "PER_TENSOR"},
            {"bw", float_bits}};
  const bool pc = e.site.is_param && spec.granularity == Granularity::kPerChannel;
  return {{"name", e.site.tensor_name()},
          {"dtype", "INT"},
          {"enc_type", pc ? "PER_CHANNEL" : "PER_TENSOR"},
          {"bw", spec.bits},
          {"is_sym", spec.symmetric},
          {"scale", e.scale},
          {"offset", e.offset}};
}

}  // namespace

std::pair<std::string, std::string> aimet_io_slot(const std::string& field) {
  if (field == "input") return {"input", "0"};
  if (field == "input2") return {"input", "1"};
  if (field == "output") return {"output", "0"};
  throw make_error("aimet_io_slot: unknown activation field '", field, "'");
}

void check_aimet_expressible(const QuantConfig& quant) {
  auto check = [&](const QuantSpec& spec, const std::string& site, bool act) {
    if (!spec.enabled) return;
    MQ_CHECK(spec.bits >= kAimetMinBits, "export --format aimet: preset '", quant.name, "': ",
             site, " is ", spec.bits, "-bit; AIMET encodings hold ", kAimetMinBits,
             "..32 bits");
    MQ_CHECK(spec.granularity != Granularity::kPerGroup, "export --format aimet: preset '",
             quant.name, "': ", site, " is per_group(", spec.group_size,
             "); AIMET 0.6.1 encodings have no per-block form (expected per_tensor or "
             "per_channel)");
    MQ_CHECK(!act || spec.granularity == Granularity::kPerTensor, "export --format aimet: preset '",
             quant.name, "': ", site,
             " is per_channel; QNN activation encodings are per tensor (expected per_tensor)");
  };
  for (const WeightSite s : EnumValues<WeightSite>::values())
    check(quant.weight(s), std::string("weights.") + to_string(s), false);
  for (const ActSite s : EnumValues<ActSite>::values())
    check(quant.act(s), std::string("activations.") + to_string(s), true);
}

nlohmann::ordered_json aimet_encodings_v061(const EncodingTable& table, const QuantConfig& quant,
                                            int64_t float_bits) {
  nlohmann::ordered_json acts = nlohmann::ordered_json::object();
  nlohmann::ordered_json params = nlohmann::ordered_json::object();
  const nlohmann::ordered_json float_enc = {{"bitwidth", float_bits}, {"dtype", "float"}};
  for (const SiteEncoding& e : table.entries) {
    const ExportSite& s = e.site;
    if (s.is_param) {
      nlohmann::ordered_json list = nlohmann::ordered_json::array();
      if (!s.spec.enabled) {
        list.push_back(float_enc);
      } else {
        for (size_t i = 0; i < e.scale.size(); ++i) list.push_back(enc_v061(e, i));
      }
      params[s.tensor_name()] = list;
      continue;
    }
    MQ_CHECK(!s.spec.enabled || e.scale.size() == 1, "AIMET 0.6.1: ", s.tensor_name(), " has ",
             e.scale.size(), " channels, expected a per-tensor activation encoding");
    const auto [io, index] = aimet_io_slot(s.field);
    acts[s.module][io][index] = s.spec.enabled ? enc_v061(e, 0) : float_enc;
  }
  return {{"version", "0.6.1"},
          {"activation_encodings", acts},
          {"param_encodings", params},
          {"excluded_layers", nlohmann::ordered_json::array()},
          {"quantizer_args", quantizer_args(quant)}};
}

nlohmann::ordered_json aimet_encodings_v100(const EncodingTable& table, const QuantConfig& quant,
                                            int64_t float_bits) {
  nlohmann::ordered_json acts = nlohmann::ordered_json::array();
  nlohmann::ordered_json params = nlohmann::ordered_json::array();
  for (const SiteEncoding& e : table.entries)
    (e.site.is_param ? params : acts).push_back(enc_v100(e, float_bits));
  return {{"version", "1.0.0"},
          {"activation_encodings", acts},
          {"param_encodings", params},
          {"excluded_layers", nlohmann::ordered_json::array()},
          {"quantizer_args", quantizer_args(quant)}};
}

}  // namespace mq
