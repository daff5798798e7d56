// mobilequant/config/quant_config.cpp
// QuantConfig: reading the preset form (a "default" spec per group with per-site fields laid
// over it), writing the resolved form, validation against the quantizer placement of the
// reference (reference-implementation.md §2, §3.1), presets and `--set`-style overrides.
#include "mobilequant/config/quant_config.h"

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"

namespace mq {

namespace {

using nlohmann::json;

constexpr const char* kWeights = "weights";
constexpr const char* kActivations = "activations";
constexpr const char* kDefault = "default";
constexpr const char* kAll = "all";

/// The sites of a group that take "default" when the file does not list them.
bool on_by_default(WeightSite /*site*/) { return true; }
bool on_by_default(ActSite site) { return is_reference_site(site); }

/// "[default, <every site name>]" or "[all, <every site name>]".
template <class Site>
std::string site_choices(const char* first) {
  std::vector<std::string> names{first};
  for (const auto& n : enum_names<Site>()) names.push_back(n);
  return format_key_list(names);
}

/// Reads one group ("weights" or "activations") of the preset form into `out`.
template <class Site, size_t N>
void read_group(const json& j, const char* group, std::array<QuantSpec, N>& out,
                const std::string& where) {
  const std::string gw = where + ": " + group;
  if (!j.is_object()) detail::throw_ill_typed(gw, "an object of site specs", j);
  QuantSpec def;
  if (const auto it = j.find(kDefault); it != j.end()) {
    config_from_json(*it, def, gw + "." + kDefault);
  }
  std::array<const json*, N> listed{};
  for (const auto& item : j.items()) {
    if (item.key() == kDefault) continue;
    bool known = false;
    for (const Site s : EnumValues<Site>::values()) {
      if (item.key() == to_string(s)) {
        listed[static_cast<size_t>(s)] = &item.value();
        known = true;
      }
    }
    MQ_CHECK(known, gw, ": unknown site '", item.key(), "'; allowed sites: ",
             site_choices<Site>(kDefault));
  }
  for (const Site s : EnumValues<Site>::values()) {
    const auto i = static_cast<size_t>(s);
    QuantSpec spec = def;
    if (listed[i] != nullptr) {
      config_from_json(*listed[i], spec, gw + "." + to_string(s));
    } else if (!on_by_default(s)) {
      spec.enabled = false;
    }
    out[i] = spec;
  }
}

/// Every site of a group in the resolved form.
template <class Site, size_t N>
json write_group(const std::array<QuantSpec, N>& specs) {
  json out = json::object();
  for (const Site s : EnumValues<Site>::values()) {
    out[to_string(s)] = config_to_json(specs[static_cast<size_t>(s)]);
  }
  return out;
}

/// Lays the override value `raw` over `spec`: one field, or (`field` empty) a JSON object of
/// fields. Returns false if `field` names no field of QuantSpec.
bool set_spec_fields(QuantSpec& spec, const std::string& field, const std::string& raw,
                     const std::string& where) {
  if (field.empty()) {
    config_from_json(parse_override_value(raw), spec, where);
    return true;
  }
  detail::OverrideSetter setter{field, raw, where};
  spec.for_each_field(setter);
  return setter.found;
}

/// The override of one group: "SITE.FIELD", "SITE" (a JSON object of fields), or the same with
/// "all" for SITE, applied to `specs`.
template <class Site, size_t N>
void override_group(std::array<QuantSpec, N>& specs, const char* group, const std::string& rest,
                    const std::string& raw, const std::string& prefix) {
  std::vector<Site> targets;
  std::string site_label;
  size_t site_len = 0;
  const std::string all = kAll;
  if (rest == all || rest.rfind(all + ".", 0) == 0) {
    site_label = all;
    site_len = all.size();
    for (const Site s : EnumValues<Site>::values()) {
      if (specs[static_cast<size_t>(s)].enabled) targets.push_back(s);
    }
    MQ_CHECK(!targets.empty(), prefix, ": ", group, ".", kAll,
             ": no site of the group is enabled ('all' sets the enabled sites only; enable a "
             "site by name, e.g. ",
             group, ".", to_string(EnumValues<Site>::values().front()), ".enabled=true)");
  } else {
    // Site names contain dots: take the longest site name that is the whole rest or is
    // followed by ".FIELD".
    for (const Site s : EnumValues<Site>::values()) {
      const std::string name = to_string(s);
      const bool match =
          rest.rfind(name, 0) == 0 && (rest.size() == name.size() || rest[name.size()] == '.');
      if (match && name.size() > site_len) {
        site_len = name.size();
        targets.assign(1, s);
      }
    }
    MQ_CHECK(!targets.empty(), prefix, ": no site of ", group, " in '", rest, "', expected ",
             group, ".SITE.FIELD or ", group, ".SITE with SITE one of ",
             site_choices<Site>(kAll));
    site_label = to_string(targets.front());
  }
  const std::string field = site_len < rest.size() ? rest.substr(site_len + 1) : "";
  for (const Site s : targets) {
    QuantSpec& spec = specs[static_cast<size_t>(s)];
    const bool found =
        set_spec_fields(spec, field, raw, prefix + ": " + group + "." + to_string(s));
    MQ_CHECK(found, prefix, ": ", group, ".", site_label, ": unknown field '", field,
             "'; allowed fields: ", format_key_list(field_keys(spec)));
  }
}

}  // namespace

bool QuantConfig::any_enabled() const {
  for (const auto& s : weights) {
    if (s.enabled) return true;
  }
  for (const auto& s : activations) {
    if (s.enabled) return true;
  }
  return false;
}

void QuantConfig::validate(const std::string& where) const {
  for (const WeightSite s : EnumValues<WeightSite>::values()) {
    const QuantSpec& spec = weight(s);
    const std::string w = where + ": " + kWeights + "." + to_string(s);
    spec.validate(w);
    if (!spec.enabled) continue;
    MQ_CHECK(!is_norm(s) || spec.granularity == Granularity::kPerTensor, w,
             ": granularity: got ", to_string(spec.granularity),
             ", expected per_tensor (a norm weight is one vector [C]; it is quantized per tensor)");
  }
  for (const ActSite s : EnumValues<ActSite>::values()) {
    const QuantSpec& spec = act(s);
    const std::string w = where + ": " + kActivations + "." + to_string(s);
    spec.validate(w);
    if (!spec.enabled) continue;
    MQ_CHECK(spec.granularity != Granularity::kPerGroup, w,
             ": granularity: got per_group, expected one of [per_tensor, per_channel] "
             "(activations have no groups)");
    MQ_CHECK(spec.granularity != Granularity::kPerChannel || has_channel_dim(s), w,
             ": granularity: got per_channel, expected per_tensor (the last dimension of this "
             "[B, H, T, T] tensor is the sequence, not a channel)");
  }
}

void QuantConfig::validate_for_model(int64_t hidden, int64_t intermediate, int64_t attn_width,
                                     const std::string& where) const {
  validate(where);
  MQ_CHECK(hidden > 0 && intermediate > 0 && attn_width > 0, where,
           ": model dimensions must be positive, got hidden ", hidden, ", intermediate ",
           intermediate, ", attention width ", attn_width);
  for (const WeightSite s : EnumValues<WeightSite>::values()) {
    const QuantSpec& spec = weight(s);
    if (!spec.enabled || spec.granularity != Granularity::kPerGroup) continue;
    int64_t in = hidden;
    const char* what = "hidden_size";
    if (s == WeightSite::kOProj) {
      in = attn_width;
      what = "num_heads * head_dim";
    } else if (s == WeightSite::kDown) {
      in = intermediate;
      what = "intermediate_size";
    }
    MQ_CHECK(in % spec.group_size == 0, where, ": ", kWeights, ".", to_string(s),
             ": group_size: got ", spec.group_size, ", which does not divide the input dimension ",
             in, " (", what, ") of the weight; expected a divisor of ", in);
  }
}

QuantConfig quant_config_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) detail::throw_ill_typed(where, "a JSON object", j);
  const std::vector<std::string> keys = {"name", "description", kWeights, kActivations};
  for (const auto& item : j.items()) {
    MQ_CHECK(std::find(keys.begin(), keys.end(), item.key()) != keys.end(), where,
             ": unknown key '", item.key(), "'; allowed keys: ", format_key_list(keys));
  }
  for (const char* group : {kWeights, kActivations}) {
    MQ_CHECK(j.contains(group), where, ": missing key '", group,
             "' (write {\"default\": {\"enabled\": false}} to leave every ", group,
             " site in float)");
  }
  QuantConfig cfg;
  if (const auto it = j.find("name"); it != j.end()) {
    detail::read_value(*it, cfg.name, where + ": name");
  }
  if (const auto it = j.find("description"); it != j.end()) {
    detail::read_value(*it, cfg.description, where + ": description");
  }
  read_group<WeightSite>(j.at(kWeights), kWeights, cfg.weights, where);
  read_group<ActSite>(j.at(kActivations), kActivations, cfg.activations, where);
  cfg.validate(where);
  return cfg;
}

json quant_config_to_json(const QuantConfig& cfg) {
  json out = json::object();
  out["name"] = cfg.name;
  out["description"] = cfg.description;
  out[kWeights] = write_group<WeightSite>(cfg.weights);
  out[kActivations] = write_group<ActSite>(cfg.activations);
  return out;
}

std::vector<std::string> list_quant_presets(const std::string& presets_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::is_directory(presets_dir, ec)) return names;
  for (const auto& entry : fs::directory_iterator(presets_dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") {
      names.push_back(entry.path().stem().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

QuantConfig load_quant_config(const std::string& name_or_path, const std::string& presets_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string file;
  const bool looks_like_path = name_or_path.find('/') != std::string::npos ||
                               fs::path(name_or_path).extension() == ".json";
  if (!looks_like_path && !name_or_path.empty()) {
    const fs::path preset = fs::path(presets_dir) / (name_or_path + ".json");
    if (fs::is_regular_file(preset, ec)) file = preset.string();
  }
  if (file.empty() && !name_or_path.empty() && fs::is_regular_file(name_or_path, ec)) {
    file = name_or_path;
  }
  if (file.empty()) {
    const auto presets = list_quant_presets(presets_dir);
    throw make_error("quant config '", name_or_path, "': neither a preset (no file ",
                     (fs::path(presets_dir) / (name_or_path + ".json")).string(),
                     ") nor a JSON file; available presets in ", presets_dir, ": ",
                     presets.empty() ? std::string("none (no such directory?)")
                                     : format_key_list(presets));
  }
  QuantConfig cfg = quant_config_from_json(read_json_file(file), file);
  if (cfg.name.empty()) cfg.name = fs::path(file).stem().string();
  return cfg;
}

std::string format_quant_table(const QuantConfig& cfg) {
  size_t width = 0;
  for (const auto& n : enum_names<WeightSite>()) width = std::max(width, n.size());
  for (const auto& n : enum_names<ActSite>()) width = std::max(width, n.size());
  std::ostringstream os;
  os << "quant config '" << cfg.name << "'";
  if (!cfg.description.empty()) os << ": " << cfg.description;
  os << "\n" << kWeights << ":\n";
  for (const WeightSite s : EnumValues<WeightSite>::values()) {
    os << "  " << std::left << std::setw(static_cast<int>(width)) << to_string(s) << "  "
       << cfg.weight(s).describe() << "\n";
  }
  int enabled = 0;
  for (const auto& spec : cfg.activations) enabled += spec.enabled ? 1 : 0;
  os << kActivations << " (" << enabled << " of " << kNumActSites << " sites quantized):\n";
  for (const ActSite s : EnumValues<ActSite>::values()) {
    os << "  " << std::left << std::setw(static_cast<int>(width)) << to_string(s) << "  "
       << cfg.act(s).describe() << "\n";
  }
  return os.str();
}

void apply_quant_override(QuantConfig& cfg, const std::string& text, const std::string& where) {
  const auto [key, raw] = split_override(text, where);
  const std::string prefix = where + " '" + text + "'";
  QuantConfig next = cfg;
  if (key == "name" || key == "description") {
    std::string& member = key == "name" ? next.name : next.description;
    member = raw;
  } else {
    const size_t dot = key.find('.');
    const std::string group = key.substr(0, dot);
    MQ_CHECK(dot != std::string::npos && (group == kWeights || group == kActivations), prefix,
             ": unknown key '", key,
             "', expected weights.SITE.FIELD, activations.SITE.FIELD (SITE may be 'all'), "
             "name or description");
    const std::string rest = key.substr(dot + 1);
    if (group == kWeights) {
      override_group<WeightSite>(next.weights, kWeights, rest, raw, prefix);
    } else {
      override_group<ActSite>(next.activations, kActivations, rest, raw, prefix);
    }
  }
  next.validate(prefix);
  cfg = std::move(next);
}

}  // namespace mq
