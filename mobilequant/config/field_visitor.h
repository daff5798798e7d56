// mobilequant/config/field_visitor.h
// The one-field-list mechanism of every config struct (style.md §3.4): a struct declares each
// of its fields once, in
//
//   template <class V> void for_each_field(V& v) {
//     v("max_length", max_length, "Window length of wikitext and docs");
//     ...
//   }
//
// and JSON reading and writing, `--set key=value` overrides and printing (config/config_json.h)
// are visitors over that list, so a new field needs one line. This header holds no JSON: only
// the field list convention and the enum helpers every visitor shares.
//
// Enums: an enum a config holds provides `const char* to_string(E)` (found by ADL) and a
// specialisation of EnumValues<E> listing its values; parse_enum<E>() then parses by name and
// names the allowed set when the name is unknown.
#pragma once

#include <string>
#include <vector>

#include "mobilequant/core/error.h"

namespace mq {

/// Specialise for every enum a config struct holds:
///   template <> struct EnumValues<E> { static const std::vector<E>& values(); };
template <class E>
struct EnumValues;

/// The names of every value of `E`, as "[a, b, c]", for error messages.
template <class E>
std::string enum_choices() {
  std::string out = "[";
  const auto& values = EnumValues<E>::values();
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += to_string(values[i]);
  }
  return out + "]";
}

/// The names of every value of `E`, in declaration order.
template <class E>
std::vector<std::string> enum_names() {
  std::vector<std::string> out;
  for (const E value : EnumValues<E>::values()) out.emplace_back(to_string(value));
  return out;
}

/// The value of `E` called `name`; throws mq::Error "<where>: got '<name>', expected one of
/// [...]" when there is none.
template <class E>
E parse_enum(const std::string& name, const std::string& where) {
  for (const E value : EnumValues<E>::values()) {
    if (name == to_string(value)) return value;
  }
  throw make_error(where, ": got '", name, "', expected one of ", enum_choices<E>());
}

/// A visitor that collects the keys of a struct's field list, in order.
struct FieldKeyCollector {
  std::vector<std::string> keys;  ///< every key for_each_field named
  /// Records `key`.
  template <class T>
  void operator()(const char* key, T& /*member*/, const char* /*help*/) {
    keys.emplace_back(key);
  }
};

/// The keys of `T`'s field list, in declaration order.
template <class T>
std::vector<std::string> field_keys(const T& config) {
  T copy = config;
  FieldKeyCollector collect;
  copy.for_each_field(collect);
  return collect.keys;
}

}  // namespace mq
