// mobilequant/export/reference_files.cpp
#include "mobilequant/export/reference_files.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"
#include "mobilequant/quant/primitives.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

namespace {

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

/// One (module, field) of the reference's quantizer layout, in a block.
struct RefSlot {
  std::string module;  // without the layer prefix: "self_attn.qk_bmm"
  std::string field;   // "input", "input2", "output", "weight"
  bool is_param;
  ActSite act = ActSite::kCount;
  WeightSite weight = WeightSite::kCount;
};

/// The reference's quantizers in one block: its activation sites and its weights, grouped by
/// module in site order (a module's weight follows its input, before its output).
std::vector<RefSlot> reference_slots(bool silu) {
  std::vector<RefSlot> slots;
  for (const ActSite site : EnumValues<ActSite>::values()) {
    if (!is_block_site(site) || !is_reference_site(site)) continue;
    if (site == ActSite::kActIn2 && !silu) continue;
    const auto [module, field] = split_site_name(site);
    slots.push_back({module, field, false, site, WeightSite::kCount});
  }
  for (const WeightSite site : EnumValues<WeightSite>::values())
    slots.push_back({to_string(site), "weight", true, ActSite::kCount, site});
  return slots;
}

/// Module names of the reference's block in forward order (first appearance among the slots:
/// every reference module has an activation site, so the weights add no module of their own).
std::vector<std::string> reference_modules(const std::vector<RefSlot>& slots) {
  std::vector<std::string> order;
  for (const auto& s : slots)
    if (std::find(order.begin(), order.end(), s.module) == order.end()) order.push_back(s.module);
  return order;
}

nlohmann::ordered_json qcfg_entry(const QuantSpec& spec) {
  const bool pc = spec.enabled && spec.granularity != Granularity::kPerTensor;
  const int64_t group = spec.enabled && spec.granularity == Granularity::kPerGroup
                            ? spec.group_size
                            : -1;
  return {{"bitwidth", spec.enabled ? std::to_string(spec.bits) : std::string("32")},
          {"group_size", std::to_string(group)},
          {"is_symmetric", spec.enabled && spec.symmetric ? "True" : "False"},
          {"is_per_channel", pc ? "True" : "False"},
          {"is_dynamic", "False"}};
}

/// A "True"/"False" string of default_qcfg.json (the reference also accepts "true"; anything
/// else would silently mean false there, so it is an error here).
bool parse_bool_string(const nlohmann::json& v, const std::string& where) {
  MQ_CHECK(v.is_string(), where, ": expected the string \"True\" or \"False\", got ", v.dump());
  const std::string s = v.get<std::string>();
  if (s == "True" || s == "true") return true;
  if (s == "False" || s == "false") return false;
  throw make_error(where, ": expected \"True\" or \"False\", got \"", s, "\"");
}

int64_t parse_int_string(const nlohmann::json& v, const std::string& where) {
  MQ_CHECK(v.is_string() || v.is_number_integer(), where,
           ": expected an integer as a string (e.g. \"8\"), got ", v.dump());
  if (v.is_number_integer()) return v.get<int64_t>();
  const std::string s = v.get<std::string>();
  size_t used = 0;
  int64_t out = 0;
  try {
    out = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MQ_CHECK(used == s.size() && !s.empty(), where, ": expected an integer string, got \"", s, "\"");
  return out;
}

/// One default_qcfg entry -> QuantSpec; errors name `where`.
QuantSpec parse_qcfg_entry(const nlohmann::json& e, const std::string& where) {
  MQ_CHECK(e.is_object(), where, ": expected an object with bitwidth, group_size, is_symmetric, "
           "is_per_channel, is_dynamic, got ", e.dump());
  for (const char* key : {"bitwidth", "group_size", "is_symmetric", "is_per_channel", "is_dynamic"})
    MQ_CHECK(e.contains(key), where, ": missing key '", key, "'");
  for (auto it = e.begin(); it != e.end(); ++it) {
    const std::string& k = it.key();
    MQ_CHECK(k == "bitwidth" || k == "group_size" || k == "is_symmetric" ||
                 k == "is_per_channel" || k == "is_dynamic",
             where, ": unknown key '", k, "'");
  }
  QuantSpec spec;
  const int64_t bits = parse_int_string(e["bitwidth"], where + ".bitwidth");
  const int64_t group = parse_int_string(e["group_size"], where + ".group_size");
  const bool sym = parse_bool_string(e["is_symmetric"], where + ".is_symmetric");
  const bool pc = parse_bool_string(e["is_per_channel"], where + ".is_per_channel");
  const bool dyn = parse_bool_string(e["is_dynamic"], where + ".is_dynamic");
  if (bits > 16) {  // the reference's float: its Quantizer skips bitwidth > 16
    spec.enabled = false;
    return spec;
  }
  MQ_CHECK(bits >= 2, where, ".bitwidth: got ", bits, ", expected 2..16 (or 32: float)");
  MQ_CHECK(!dyn, where, ".is_dynamic: \"True\" is not supported (static ranges only)");
  spec.bits = bits;
  spec.symmetric = sym;
  if (!pc) {
    MQ_CHECK(group == -1, where, ".group_size: got ", group,
             ", expected -1 when is_per_channel is \"False\"");
    spec.granularity = Granularity::kPerTensor;
  } else if (group == -1) {
    spec.granularity = Granularity::kPerChannel;
  } else {
    MQ_CHECK(group > 0, where, ".group_size: got ", group, ", expected -1 or a positive size");
    spec.granularity = Granularity::kPerGroup;
    spec.group_size = group;
  }
  return spec;
}

bool same_spec(const QuantSpec& a, const QuantSpec& b) {
  if (a.enabled != b.enabled) return false;
  if (!a.enabled) return true;
  return a.bits == b.bits && a.symmetric == b.symmetric && a.granularity == b.granularity &&
         a.group_size == b.group_size;
}

}  // namespace

void check_reference_expressible(const QuantConfig& quant) {
  for (const ActSite site : EnumValues<ActSite>::values()) {
    const QuantSpec& spec = quant.act(site);
    if (!spec.enabled) continue;
    MQ_CHECK(is_reference_site(site), "export --format reference: preset '", quant.name,
             "' quantizes activations.", to_string(site),
             ", where the reference has no quantizer; act_dict.json/default_qcfg.json cannot "
             "express it (disable the site or leave out the reference format)");
    MQ_CHECK(spec.granularity == Granularity::kPerTensor, "export --format reference: preset '",
             quant.name, "' quantizes activations.", to_string(site), " ",
             to_string(spec.granularity),
             "; act_dict.json holds one [min, max] per tensor (expected per_tensor)");
  }
}

nlohmann::ordered_json act_dict_json(const EncodingTable& table) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const SiteEncoding& e : table.entries) {
    const ExportSite& s = e.site;
    if (s.is_param) continue;
    MQ_CHECK(is_reference_site(s.act) || !s.spec.enabled, "act_dict.json: ", s.tensor_name(),
             " is not a reference site (check_reference_expressible first)");
    if (!is_reference_site(s.act)) continue;
    if (!out.contains(s.module)) out[s.module] = nlohmann::ordered_json::object();
    if (!s.spec.enabled) continue;
    MQ_CHECK(e.scale.size() == 1, "act_dict.json: ", s.tensor_name(), " has ", e.scale.size(),
             " channels, expected one range per tensor");
    double mn = e.min(0), mx = e.max(0);
    if (s.spec.symmetric) {  // compute_min_max_from_scale_offset, symmetric branch
      mx = e.scale[0] * static_cast<double>(s.spec.qmax());
      mn = -mx;
    }
    out[s.module][s.field] = {mn, mx};
  }
  return out;
}

nlohmann::ordered_json default_qcfg_json(const QuantConfig& quant, int64_t num_layers, bool silu) {
  const auto slots = reference_slots(silu);
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    for (const std::string& module : reference_modules(slots)) {
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      for (const char* field : {"input", "weight", "input2", "output"}) {
        for (const RefSlot& s : slots) {
          if (s.module != module || s.field != field) continue;
          entry[field] = qcfg_entry(s.is_param ? quant.weight(s.weight) : quant.act(s.act));
        }
      }
      out[layer_prefix(layer) + module] = entry;
    }
  }
  return out;
}

std::pair<double, double> scale_offset_from_range(double min, double max, const QuantSpec& spec) {
  if (spec.symmetric) {
    return {std::fmax(std::fabs(min), std::fabs(max)) / static_cast<double>(spec.qmax()), 0.0};
  }
  const double s = (max - min) / code_span(spec.bits);
  return {s, -std::nearbyint(min / s)};
}

ReferenceFiles read_reference_files(const std::string& act_dict_path,
                                    const std::string& default_qcfg_path, int64_t num_layers,
                                    bool silu) {
  const auto slots = reference_slots(silu);
  ReferenceFiles out;
  out.quant.name = "default_qcfg";
  out.quant.description = "read from " + default_qcfg_path;
  for (auto& s : out.quant.activations) s.enabled = false;
  for (auto& s : out.quant.weights) s.enabled = false;

  // default_qcfg.json: every reference module of every layer, one spec per site.
  const nlohmann::json qcfg = read_json_file(default_qcfg_path, "reference file");
  MQ_CHECK(qcfg.is_object(), default_qcfg_path, ": expected a JSON object of modules");
  std::set<std::string> known;
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    for (const std::string& module : reference_modules(slots)) {
      const std::string key = layer_prefix(layer) + module;
      known.insert(key);
      MQ_CHECK(qcfg.contains(key), default_qcfg_path, ": missing module '", key, "'");
      const nlohmann::json& entry = qcfg[key];
      MQ_CHECK(entry.is_object(), default_qcfg_path, ": ", key, ": expected an object, got ",
               entry.dump());
      for (auto it = entry.begin(); it != entry.end(); ++it) {
        bool ok = false;
        for (const RefSlot& s : slots) ok = ok || (s.module == module && s.field == it.key());
        MQ_CHECK(ok, default_qcfg_path, ": ", key, ": unknown field '", it.key(),
                 "' (the reference's ", module, " has no such quantizer)");
      }
      for (const RefSlot& s : slots) {
        if (s.module != module) continue;
        const std::string where = default_qcfg_path + ": " + key + "." + s.field;
        MQ_CHECK(entry.contains(s.field), where, ": missing");
        const QuantSpec spec = parse_qcfg_entry(entry[s.field], where);
        QuantSpec& dst = s.is_param ? out.quant.weights[static_cast<size_t>(s.weight)]
                                    : out.quant.activations[static_cast<size_t>(s.act)];
        if (layer == 0) {
          dst = spec;
        } else {
          MQ_CHECK(same_spec(dst, spec), where, ": ", spec.describe(), " differs from layer 0's ",
                   dst.describe(), " (one spec per site across layers is expected)");
        }
      }
    }
  }
  for (auto it = qcfg.begin(); it != qcfg.end(); ++it)
    MQ_CHECK(known.count(it.key()) != 0, default_qcfg_path, ": unknown module '", it.key(),
             "' (expected the reference modules of ", num_layers, " layers)");
  out.quant.validate(default_qcfg_path);

  // act_dict.json: a range for every quantized activation site.
  const nlohmann::json act = read_json_file(act_dict_path, "reference file");
  MQ_CHECK(act.is_object(), act_dict_path, ": expected a JSON object of modules");
  for (auto it = act.begin(); it != act.end(); ++it) {
    MQ_CHECK(known.count(it.key()) != 0, act_dict_path, ": unknown module '", it.key(), "'");
    MQ_CHECK(it.value().is_object(), act_dict_path, ": ", it.key(), ": expected an object");
  }
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    for (const RefSlot& s : slots) {
      if (s.is_param) continue;
      const std::string module = layer_prefix(layer) + s.module;
      const std::string where = act_dict_path + ": " + module + "." + s.field;
      const bool present = act.contains(module) && act[module].contains(s.field);
      if (!out.quant.act(s.act).enabled) continue;  // a float site needs no range
      MQ_CHECK(present, where, ": missing (", kDefaultQcfgFile, " quantizes it)");
      const nlohmann::json& r = act[module][s.field];
      MQ_CHECK(r.is_array() && r.size() == 2 && r[0].is_number() && r[1].is_number(), where,
               ": expected [min, max] (two numbers), got ", r.dump());
      const double mn = r[0].get<double>(), mx = r[1].get<double>();
      MQ_CHECK(std::isfinite(mn) && std::isfinite(mx) && mn <= mx, where,
               ": expected finite min <= max, got [", mn, ", ", mx, "]");
      out.ranges[module + "." + s.field] = {mn, mx};
    }
    for (const std::string& m : reference_modules(slots)) {
      const std::string module = layer_prefix(layer) + m;
      if (!act.contains(module)) continue;
      for (auto f = act[module].begin(); f != act[module].end(); ++f) {
        bool ok = false;
        for (const RefSlot& s : slots)
          ok = ok || (!s.is_param && s.module == m && s.field == f.key());
        MQ_CHECK(ok, act_dict_path, ": ", module, ": unknown field '", f.key(), "'");
      }
    }
  }
  return out;
}

void apply_reference_ranges(QuantizedModelImpl& qm, const ReferenceFiles& files,
                            const std::string& where) {
  torch::NoGradGuard no_grad;
  const int64_t n = qm.float_model()->config().num_hidden_layers;
  for (int64_t layer = 0; layer < n; ++layer) {
    QuantizedLayer ql = qm.layer(layer);
    for (const ActSite site : EnumValues<ActSite>::values()) {
      if (!is_block_site(site)) continue;
      ActFakeQuantizer& q = ql->act_quantizers[static_cast<size_t>(site)];
      if (q.is_empty()) continue;
      const std::string name = qualified_site_name(layer, site);
      const auto it = files.ranges.find(name);
      MQ_CHECK(it != files.ranges.end(), where, ": no range for ", name);
      const auto [s, o] = scale_offset_from_range(it->second.first, it->second.second,
                                                  q->options.spec());
      MQ_CHECK(std::isfinite(s) && s > 0.0, where, ": ", name, ": the range [",
               it->second.first, ", ", it->second.second, "] gives the scale ", s,
               ", expected a finite positive scale");
      q->set_qparams(torch::tensor(s, torch::kFloat64).to(torch::kFloat32),
                     torch::tensor(o, torch::kFloat64).to(torch::kFloat32));
    }
  }
  qm.invalidate_weight_cache();
}

}  // namespace mq
