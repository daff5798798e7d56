// mobilequant/models/hf_config_keys.cpp
// HfConfigKeys: the typed config.json reader; RoPE standardisation follows transformers'
// convert_rope_params_to_dict.
#include "mobilequant/models/hf_config_keys.h"

#include "mobilequant/core/error.h"

namespace mq {

HfConfigKeys::HfConfigKeys(const nlohmann::json& config, std::string where)
    : j_(config), where_(std::move(where)) {
  MQ_CHECK(j_.is_object(), where_, ": expected a JSON object, found ", j_.type_name());
}

bool HfConfigKeys::has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

std::string HfConfigKeys::found(const char* key) const {
  const auto& v = j_[key];
  return v.dump() + " (" + v.type_name() + ")";
}

int64_t HfConfigKeys::integer(const char* key, int64_t fallback, bool nullable) const {
  if (!j_.contains(key) || (nullable && j_[key].is_null())) return fallback;
  MQ_CHECK(j_[key].is_number_integer(), where_, ": key '", key, "' must be an integer",
           nullable ? " or null" : "", ", found ", found(key));
  return j_[key].get<int64_t>();
}

double HfConfigKeys::number(const char* key, double fallback) const {
  if (!j_.contains(key)) return fallback;
  MQ_CHECK(j_[key].is_number(), where_, ": key '", key, "' must be a number, found ", found(key));
  return j_[key].get<double>();
}

bool HfConfigKeys::boolean(const char* key, bool fallback) const {
  if (!j_.contains(key)) return fallback;
  MQ_CHECK(j_[key].is_boolean(), where_, ": key '", key, "' must be true or false, found ",
           found(key));
  return j_[key].get<bool>();
}

std::string HfConfigKeys::string(const char* key, const std::string& fallback) const {
  if (!j_.contains(key)) return fallback;
  MQ_CHECK(j_[key].is_string(), where_, ": key '", key, "' must be a string, found ", found(key));
  return j_[key].get<std::string>();
}

int64_t HfConfigKeys::token_id(const char* key, int64_t fallback) const {
  if (!j_.contains(key)) return fallback;
  const auto& v = j_[key];
  if (v.is_null()) return -1;
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  MQ_CHECK(v.is_number_integer(), where_, ": key '", key,
           "' must be an integer, a list of integers or null, found ", found(key));
  return v.get<int64_t>();
}

void HfConfigKeys::require_supported(bool cond, const char* key, const std::string& why) const {
  MQ_CHECK(cond, where_, ": ", key, " = ", j_.contains(key) ? j_[key].dump() : "?",
           " is unsupported (", why, ")");
}

HfConfigKeys::Rope HfConfigKeys::rope(std::optional<double> default_partial) const {
  // transformers' convert_rope_params_to_dict: a non-empty rope_scaling replaces
  // rope_parameters; keys missing there come from the top level, then from the defaults.
  const nlohmann::json* params = nullptr;
  std::string params_key;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!has(key)) continue;
    MQ_CHECK(j_[key].is_object(), where_, ": key '", key, "' must be an object or null, found ",
             found(key));
    if (j_[key].empty()) continue;  // an empty dict is falsy in Python: fall through
    params = &j_[key];
    params_key = key;
    break;
  }
  Rope r;
  r.theta = number("rope_theta", 10000.0);
  r.partial_rotary_factor = default_partial;
  if (has("partial_rotary_factor")) r.partial_rotary_factor = number("partial_rotary_factor", 1.0);
  if (params == nullptr) return r;

  const HfConfigKeys nested(*params, where_ + " (" + params_key + ")");
  if (nested.has("rope_theta")) r.theta = nested.number("rope_theta", r.theta);
  if (nested.has("partial_rotary_factor"))
    r.partial_rotary_factor = nested.number("partial_rotary_factor", 1.0);
  std::string type = "default";
  if (nested.has("rope_type")) {
    type = nested.string("rope_type", type);
  } else if (nested.has("type")) {
    type = nested.string("type", type);
  }
  MQ_CHECK(type == "default", where_, ": ", params_key, ".rope_type = '", type,
           "' is unsupported (only the plain 'default' RoPE is implemented, not linear, dynamic, "
           "yarn, longrope or llama3 scaling)");
  return r;
}

}  // namespace mq
