// mobilequant/config/config_json.h
// JSON reading and writing and `--set key=value` overrides of any config struct with a
// for_each_field list (config/field_visitor.h). Field types: int64_t, double, bool,
// std::string, enums (to_string + EnumValues), std::vector of those, and
// std::map<std::string, std::string>, and nested sections (a struct with its own
// for_each_field: a JSON object whose keys present replace the section's fields, and
// `--set section.field=value`).
//
// Every error is an mq::Error naming where the value came from (the file, or "--set"), the key,
// what was expected and what was found:
//   configs/x.json: unknown key 'max_lenght'; allowed keys: [model, tokenizer, ...]
//   configs/x.json: max_length: expected an integer, got "2048"
//   configs/x.json: tasks[0]: got 'wiki', expected one of [wikitext, wikitext-gptq, docs]
// Unknown keys are errors, so a typo never passes silently. nlohmann::json stays in config/.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/config/field_visitor.h"
#include "mobilequant/core/error.h"

namespace mq {

/// Parses the JSON file at `path`; throws mq::Error naming the file (as "<what> '<path>'") on
/// I/O or syntax errors.
nlohmann::json read_json_file(const std::string& path, const std::string& what = "config file");

/// `keys` as "[a, b, c]".
std::string format_key_list(const std::vector<std::string>& keys);

/// Splits "key=value" at the first '='; throws mq::Error naming `where` and the text when there
/// is no '=' or the key is empty.
std::pair<std::string, std::string> split_override(const std::string& text,
                                                   const std::string& where);

/// The JSON value of an override's text: the text parsed as JSON if it parses, else the text
/// as a JSON string.
nlohmann::json parse_override_value(const std::string& text);

template <class T>
void config_from_json(const nlohmann::json& j, T& config, const std::string& where);
template <class T>
nlohmann::json config_to_json(const T& config);
template <class T>
void apply_override(T& config, const std::string& text, const std::string& where = "--set");

namespace detail {

/// True for a struct with a for_each_field list (a nested section of a config).
template <class T, class = void>
struct HasFields : std::false_type {};
template <class T>
struct HasFields<T, std::void_t<decltype(std::declval<T&>().for_each_field(
                        std::declval<FieldKeyCollector&>()))>> : std::true_type {};

template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {};

/// Throws "<where>: expected <what>, got <found value>".
[[noreturn]] void throw_ill_typed(const std::string& where, const char* what,
                                  const nlohmann::json& found);

/// Reads `j` into `out`; `where` is "<file>: <key>" and prefixes every error.
template <class T>
void read_value(const nlohmann::json& j, T& out, const std::string& where) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) throw_ill_typed(where, "a boolean (true or false)", j);
    out = j.get<bool>();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (!j.is_number_integer()) throw_ill_typed(where, "an integer", j);
    if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      throw_ill_typed(where, "an integer that fits in 64 bits", j);
    }
    out = j.get<int64_t>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!j.is_number()) throw_ill_typed(where, "a number", j);
    out = j.get<double>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!j.is_string()) throw_ill_typed(where, "a string", j);
    out = j.get<std::string>();
  } else if constexpr (std::is_enum_v<T>) {
    if (!j.is_string()) {
      throw_ill_typed(where, ("one of " + enum_choices<T>()).c_str(), j);
    }
    out = parse_enum<T>(j.get<std::string>(), where);
  } else if constexpr (HasFields<T>::value) {
    config_from_json(j, out, where);  // a section: keys present replace, absent keep
  } else if constexpr (IsVector<T>::value) {
    if (!j.is_array()) throw_ill_typed(where, "an array", j);
    T values(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
      read_value(j[i], values[i], where + "[" + std::to_string(i) + "]");
    }
    out = std::move(values);
  } else if constexpr (std::is_same_v<T, std::map<std::string, std::string>>) {
    if (!j.is_object()) throw_ill_typed(where, "an object of strings", j);
    T values;
    for (const auto& [key, value] : j.items()) {
      read_value(value, values[key], where + "." + key);
    }
    out = std::move(values);
  } else {
    static_assert(sizeof(T) == 0, "config field type not supported by config_json.h");
  }
}

/// The JSON of one field value.
template <class T>
nlohmann::json write_value(const T& value) {
  if constexpr (std::is_enum_v<T>) {
    return std::string(to_string(value));
  } else if constexpr (HasFields<T>::value) {
    return config_to_json(value);
  } else if constexpr (IsVector<T>::value) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : value) out.push_back(write_value(v));
    return out;
  } else {
    return nlohmann::json(value);
  }
}

/// Reads the fields present in a JSON object.
struct JsonReader {
  const nlohmann::json& object;
  const std::string& where;
  template <class T>
  void operator()(const char* key, T& member, const char* /*help*/) {
    const auto it = object.find(key);
    if (it != object.end()) read_value(*it, member, where + ": " + key);
  }
};

/// Writes every field into a JSON object.
struct JsonWriter {
  nlohmann::json& object;
  template <class T>
  void operator()(const char* key, T& member, const char* /*help*/) {
    object[key] = write_value(member);
  }
};

/// Sets the one field called `key` from an override value.
struct OverrideSetter {
  const std::string& key;
  const std::string& raw;  ///< the value's text as given
  const std::string& where;
  bool found = false;
  template <class T>
  void operator()(const char* name, T& member, const char* /*help*/) {
    if constexpr (HasFields<T>::value) {
      // "section.field=value" reaches into a nested section.
      const std::string prefix = std::string(name) + ".";
      if (key.compare(0, prefix.size(), prefix) == 0) {
        found = true;
        apply_override(member, key.substr(prefix.size()) + "=" + raw, where + ": " + name);
        return;
      }
    }
    if (key != name) return;
    found = true;
    nlohmann::json j = parse_override_value(raw);
    // A string field takes the text as written (--set model=123 names the file "123"); a list
    // takes a single value as a one-element list (--set tasks=docs).
    if constexpr (std::is_same_v<T, std::string>) {
      if (!j.is_string()) j = raw;
    } else if constexpr (IsVector<T>::value) {
      if (!j.is_array()) j = nlohmann::json::array({j});
      if constexpr (std::is_same_v<typename T::value_type, std::string>) {
        if (j.size() == 1 && !j[0].is_string()) j[0] = raw;
      }
    }
    read_value(j, member, where + ": " + key);
  }
};

}  // namespace detail

/// Reads `config` from the JSON object `j`: keys present replace the fields, keys absent keep
/// them. `where` (usually the file name) prefixes every error. Throws mq::Error on a value that
/// is not an object, an unknown key (naming the allowed keys) or an ill-typed value.
template <class T>
void config_from_json(const nlohmann::json& j, T& config, const std::string& where) {
  if (!j.is_object()) detail::throw_ill_typed(where, "a JSON object", j);
  const std::vector<std::string> keys = field_keys(config);
  for (const auto& item : j.items()) {
    bool known = false;
    for (const auto& k : keys) known = known || k == item.key();
    MQ_CHECK(known, where, ": unknown key '", item.key(), "'; allowed keys: ",
             format_key_list(keys));
  }
  detail::JsonReader reader{j, where};
  config.for_each_field(reader);
}

/// Every field of `config` as one JSON object (nlohmann::json sorts the keys).
template <class T>
nlohmann::json config_to_json(const T& config) {
  T copy = config;
  nlohmann::json out = nlohmann::json::object();
  detail::JsonWriter writer{out};
  copy.for_each_field(writer);
  return out;
}

/// Reads `config` from the JSON file at `path` (config_from_json with the path as `where`).
template <class T>
void read_config_file(const std::string& path, T& config) {
  config_from_json(read_json_file(path), config, path);
}

/// Applies one "key=value" override: the value is parsed as JSON if it parses, else taken as a
/// string; a string field takes the text as written, a list field a single value as a
/// one-element list. Throws mq::Error naming `where`, the key and the allowed keys, or the
/// expected type and the value.
template <class T>
void apply_override(T& config, const std::string& text, const std::string& where) {
  const auto [key, raw] = split_override(text, where);
  detail::OverrideSetter setter{key, raw, where};
  config.for_each_field(setter);
  MQ_CHECK(setter.found, where, " '", text, "': unknown key '", key, "'; allowed keys: ",
           format_key_list(field_keys(config)));
}

}  // namespace mq
