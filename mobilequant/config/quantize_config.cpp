// mobilequant/config/quantize_config.cpp
#include "mobilequant/config/quantize_config.h"

#include <filesystem>
#include <fstream>

#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"

namespace mq {

namespace fs = std::filesystem;

namespace {
constexpr const char* kManifestFormat = "mobilequant-quantized-model";
constexpr int kManifestVersion = 1;
}  // namespace

const char* to_string(QuantMethod m) {
  switch (m) {
    case QuantMethod::kRtn: return "rtn";
    case QuantMethod::kSmoothQuantStatic: return "smoothquant-static";
    case QuantMethod::kSmoothQuantEdge: return "smoothquant-edge";
  }
  throw make_error("QuantMethod: invalid value ", static_cast<int>(m));
}

const std::vector<QuantMethod>& EnumValues<QuantMethod>::values() {
  static const std::vector<QuantMethod> all = {QuantMethod::kRtn, QuantMethod::kSmoothQuantStatic,
                                               QuantMethod::kSmoothQuantEdge};
  return all;
}

void QuantizeConfig::validate(const std::string& where) const {
  MQ_CHECK(alpha >= 0.0 && alpha <= 1.0, where, ": alpha: got ", alpha, ", expected 0..1");
  MQ_CHECK(calib_samples >= 1, where, ": calib_samples: got ", calib_samples, ", expected >= 1");
  MQ_CHECK(calib_seqlen >= 0, where, ": calib_seqlen: got ", calib_seqlen,
           ", expected >= 0 (0: 2048 capped at the model's context)");
  MQ_CHECK(seed >= 0, where, ": seed: got ", seed, ", expected >= 0");
  MQ_CHECK(batch_size >= 1, where, ": batch_size: got ", batch_size, ", expected >= 1");
  MQ_CHECK(!quant.empty(), where, ": quant: empty; give a preset name or a JSON file");
}

void write_quantized_manifest(const std::string& path, const QuantizedManifest& m) {
  nlohmann::json j;
  j["format"] = kManifestFormat;
  j["version"] = kManifestVersion;
  j["base_model"] = m.base_model;
  j["tokenizer_source"] = m.tokenizer_source;
  j["method"] = m.method;
  j["created_by"] = m.created_by;
  j["git_revision"] = m.git_revision;
  j["settings"] = m.settings.is_null() ? nlohmann::json::object() : m.settings;
  j["quant"] = quant_config_to_json(m.quant);
  const fs::path target(path);
  const fs::path tmp = target.string() + ".tmp";
  {
    std::ofstream out(tmp);
    MQ_CHECK(out.good(), "cannot write '", tmp.string(), "'");
    out << j.dump(2) << "\n";
    MQ_CHECK(out.good(), "error while writing '", tmp.string(), "'");
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  MQ_CHECK(!ec, "cannot rename '", tmp.string(), "' to '", path, "': ", ec.message());
}

QuantizedManifest read_quantized_manifest(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  MQ_CHECK(j.is_object(), path, ": expected a JSON object");
  const auto format = j.find("format");
  MQ_CHECK(format != j.end() && format->is_string() && *format == kManifestFormat, path,
           ": format: expected \"", kManifestFormat, "\", got ",
           format == j.end() ? std::string("nothing") : format->dump());
  const auto version = j.find("version");
  MQ_CHECK(version != j.end() && version->is_number_integer() &&
               version->get<int>() == kManifestVersion,
           path, ": version: expected ", kManifestVersion, ", got ",
           version == j.end() ? std::string("nothing") : version->dump());
  const std::vector<std::string> allowed = {"format", "version", "base_model", "tokenizer_source",
                                            "method", "created_by", "git_revision", "settings",
                                            "quant"};
  QuantizedManifest m;
  for (const auto& [key, value] : j.items()) {
    if (key == "format" || key == "version") continue;
    if (key == "settings") {
      m.settings = value;
    } else if (key == "quant") {
      m.quant = quant_config_from_json(value, path + ": quant");
    } else {
      std::string* field = key == "base_model"         ? &m.base_model
                           : key == "tokenizer_source" ? &m.tokenizer_source
                           : key == "method"           ? &m.method
                           : key == "created_by"       ? &m.created_by
                           : key == "git_revision"     ? &m.git_revision
                                                       : nullptr;
      MQ_CHECK(field != nullptr, path, ": unknown key '", key, "'; allowed keys: ",
               format_key_list(allowed));
      detail::read_value(value, *field, path + ": " + key);
    }
  }
  MQ_CHECK(j.contains("quant"), path, ": missing key 'quant'");
  return m;
}

}  // namespace mq
