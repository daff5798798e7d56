// mobilequant/models/hf_config_keys.h
// HfConfigKeys: typed, checked access to the keys of a Hugging Face config.json, shared by
// the per-family readers (llama.cpp, gemma.cpp, stablelm.cpp; transformers' three configs
// derive from the llama one). It applies transformers' conventions once: absent keys take
// the family's dataclass default, special-token ids may be lists or null, and RoPE settings
// are standardised from rope_scaling / rope_parameters / the top-level keys.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace mq {

/// Typed access to the keys of a Hugging Face config.json. Absent keys take the caller's
/// default (transformers' dataclass default); a key of the wrong type throws mq::Error naming
/// `where`, the key, the expected type and the value found. Unknown keys are ignored.
class HfConfigKeys {
 public:
  /// `config` must outlive this object; `where` names the file in messages.
  HfConfigKeys(const nlohmann::json& config, std::string where);

  /// Whether `key` is present with a non-null value.
  bool has(const char* key) const;
  /// An integer key; absent -> `fallback`; null -> `fallback` only if `nullable`.
  int64_t integer(const char* key, int64_t fallback, bool nullable = false) const;
  /// A numeric key (integers accepted); absent -> `fallback`.
  double number(const char* key, double fallback) const;
  /// A boolean key; absent -> `fallback`.
  bool boolean(const char* key, bool fallback) const;
  /// A string key; absent -> `fallback`.
  std::string string(const char* key, const std::string& fallback) const;
  /// A special-token id: an integer, a list of integers (the first is taken) or null (-1).
  int64_t token_id(const char* key, int64_t fallback) const;

  /// RoPE settings after transformers' standardisation (rope_scaling, else rope_parameters,
  /// each key falling back to the top-level rope_theta / partial_rotary_factor).
  struct Rope {
    double theta = 10000.0;                       ///< rope_theta (default 10000)
    std::optional<double> partial_rotary_factor;  ///< unset unless the config or family sets it
  };
  /// Reads the RoPE settings; any rope_type other than "default" is an "unsupported" error.
  /// `default_partial` is the family's partial_rotary_factor default (stablelm: 0.25).
  Rope rope(std::optional<double> default_partial = std::nullopt) const;

  /// Throws "<where>: <key> = <value> is unsupported (<why>)" when `cond` is false.
  void require_supported(bool cond, const char* key, const std::string& why) const;
  /// The file name used in messages.
  const std::string& where() const { return where_; }

 private:
  /// The value of `key` (must be present), for messages.
  std::string found(const char* key) const;
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace mq
