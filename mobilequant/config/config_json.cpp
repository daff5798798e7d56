// mobilequant/config/config_json.cpp: the non-template helpers of config_json.h.
#include "mobilequant/config/config_json.h"

#include <fstream>
#include <sstream>

namespace mq {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  MQ_CHECK(in.good(), what, " '", path, "': cannot open it");
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    throw make_error(what, " '", path, "': not valid JSON: ", e.what());
  }
}

std::string format_key_list(const std::vector<std::string>& keys) {
  std::string out = "[";
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i > 0) out += ", ";
    out += keys[i];
  }
  return out + "]";
}

std::pair<std::string, std::string> split_override(const std::string& text,
                                                   const std::string& where) {
  const size_t eq = text.find('=');
  MQ_CHECK(eq != std::string::npos && eq > 0, where, " '", text,
           "': expected key=value, e.g. max_length=512");
  return {text.substr(0, eq), text.substr(eq + 1)};
}

nlohmann::json parse_override_value(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return nlohmann::json(text);
  return j;
}

namespace detail {

void throw_ill_typed(const std::string& where, const char* what, const nlohmann::json& found) {
  throw make_error(where, ": expected ", what, ", got ", found.dump());
}

}  // namespace detail

}  // namespace mq
