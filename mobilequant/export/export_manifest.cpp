// mobilequant/export/export_manifest.cpp
#include "mobilequant/export/export_manifest.h"

#include <sys/stat.h>

#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/export/aimet_encodings.h"
#include "mobilequant/export/export_files.h"
#include "mobilequant/export/int_model.h"
#include "mobilequant/export/onnx_qdq.h"
#include "mobilequant/export/reference_files.h"

namespace mq {

namespace {

const nlohmann::json& need(const nlohmann::json& j, const char* key, const std::string& where) {
  MQ_CHECK(j.is_object() && j.contains(key), where, ": missing key '", key, "'");
  return j[key];
}

template <class T>
T need_as(const nlohmann::json& j, const char* key, const std::string& where) {
  const nlohmann::json& v = need(j, key, where);
  try {
    return v.get<T>();
  } catch (const nlohmann::json::exception&) {
    throw make_error(where, ": key '", key, "' has the wrong type: ", v.dump());
  }
}

}  // namespace

std::vector<std::string> export_format_files(ExportFormat f) {
  switch (f) {
    case ExportFormat::kHf: return {"hf/config.json", "hf/model.safetensors"};
    case ExportFormat::kReference:
      return {std::string("reference/") + kActDictFile,
              std::string("reference/") + kDefaultQcfgFile};
    case ExportFormat::kAimet:
      return {std::string("aimet/") + kAimet061File, std::string("aimet/") + kAimet100File};
    case ExportFormat::kInt:
      return {std::string(kIntModelDir) + "/" + kIntManifestFile,
              std::string(kIntModelDir) + "/" + kIntTensorsFile};
    case ExportFormat::kOnnx: return {kOnnxModelFile};
  }
  throw make_error("export_format_files: invalid format");
}

nlohmann::ordered_json export_manifest_json(const ExportManifest& m) {
  nlohmann::ordered_json formats = nlohmann::ordered_json::array();
  for (const ExportFormat f : m.formats) formats.push_back(to_string(f));
  nlohmann::ordered_json weights = nlohmann::ordered_json::object();
  for (const auto& [name, w] : m.weights)
    weights[name] = {{"hf_name", w.hf_name}, {"shape", w.shape}};
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  for (const auto& [path, f] : m.files) files[path] = {{"bytes", f.bytes}, {"sha256", f.sha256}};
  return {{"format", kExportFormatName},
          {"format_version", kExportFormatVersion},
          {"formats", formats},
          {"source", m.source},
          {"config", m.config},
          {"provenance", m.provenance},
          {"quant", quant_config_to_json(m.quant)},
          {"model",
           {{"num_hidden_layers", m.num_layers},
            {"silu", m.silu},
            {"norm_one_plus", m.norm_one_plus},
            {"weights", weights}}},
          {"float_bitwidth", m.float_bitwidth},
          {"ranges_excluding_zero", m.ranges_excluding_zero},
          {"notes", m.notes},
          {"files", files}};
}

ExportManifest export_manifest_from_json(const nlohmann::json& j, const std::string& where) {
  MQ_CHECK(j.is_object(), where, ": expected a JSON object");
  const std::string format = need_as<std::string>(j, "format", where);
  MQ_CHECK(format == kExportFormatName, where, ": format: got '", format, "', expected '",
           kExportFormatName, "'");
  const int64_t version = need_as<int64_t>(j, "format_version", where);
  MQ_CHECK(version == kExportFormatVersion, where, ": format_version: got ", version,
           ", expected ", kExportFormatVersion, " (written by another version of mobilequant?)");
  ExportManifest m;
  const nlohmann::json& formats = need(j, "formats", where);
  MQ_CHECK(formats.is_array(), where, ": formats: expected a list of names");
  for (const auto& f : formats) {
    MQ_CHECK(f.is_string(), where, ": formats: expected names, got ", f.dump());
    m.formats.push_back(parse_enum<ExportFormat>(f.get<std::string>(), where + ": formats"));
  }
  m.source = need(j, "source", where);
  m.config = need(j, "config", where);
  m.provenance = need(j, "provenance", where);
  m.quant = quant_config_from_json(need(j, "quant", where), where + ": quant");
  const nlohmann::json& model = need(j, "model", where);
  const std::string mw = where + ": model";
  m.num_layers = need_as<int64_t>(model, "num_hidden_layers", mw);
  MQ_CHECK(m.num_layers > 0, mw, ": num_hidden_layers: got ", m.num_layers, ", expected > 0");
  m.silu = need_as<bool>(model, "silu", mw);
  m.norm_one_plus = need_as<bool>(model, "norm_one_plus", mw);
  const nlohmann::json& weights = need(model, "weights", mw);
  MQ_CHECK(weights.is_object(), mw, ": weights: expected an object");
  for (auto it = weights.begin(); it != weights.end(); ++it) {
    const std::string ww = mw + ": weights." + it.key();
    ExportedWeight w;
    w.hf_name = need_as<std::string>(it.value(), "hf_name", ww);
    w.shape = need_as<std::vector<int64_t>>(it.value(), "shape", ww);
    m.weights[it.key()] = w;
  }
  m.float_bitwidth = need_as<int64_t>(j, "float_bitwidth", where);
  m.ranges_excluding_zero = need_as<std::vector<std::string>>(j, "ranges_excluding_zero", where);
  m.notes = need_as<std::vector<std::string>>(j, "notes", where);
  const nlohmann::json& files = need(j, "files", where);
  MQ_CHECK(files.is_object(), where, ": files: expected an object");
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string fw = where + ": files." + it.key();
    ExportedFile f;
    f.bytes = need_as<int64_t>(it.value(), "bytes", fw);
    f.sha256 = need_as<std::string>(it.value(), "sha256", fw);
    m.files[it.key()] = f;
  }
  return m;
}

ExportManifest read_export_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kExportManifestFile;
  std::ifstream in(path, std::ios::binary);
  MQ_CHECK(in.good(), "'", dir, "' is not an export directory: ", kExportManifestFile,
           " is missing");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw make_error(path, ": not valid JSON (truncated or edited?): ", e.what());
  }
  return export_manifest_from_json(j, path);
}

void write_export_manifest(const std::string& dir, const ExportManifest& m) {
  write_file_atomically(dir + "/" + kExportManifestFile, export_manifest_json(m).dump(2) + "\n");
}

void stamp_checksums(const std::string& dir, ExportManifest& m) {
  m.files.clear();
  for (const std::string& rel : list_files(dir)) {
    if (rel == kExportManifestFile) continue;
    const auto [sha, bytes] = sha256_file(dir + "/" + rel);
    m.files[rel] = ExportedFile{bytes, sha};
  }
}

void verify_export_files(const std::string& dir, const ExportManifest& m) {
  for (const auto& [rel, f] : m.files) {
    const std::string path = dir + "/" + rel;
    struct stat st;
    MQ_CHECK(::stat(path.c_str(), &st) == 0, path, ": missing (", kExportManifestFile,
             " lists it)");
    MQ_CHECK(static_cast<int64_t>(st.st_size) == f.bytes, path, ": ", st.st_size,
             " bytes, expected ", f.bytes, " as ", kExportManifestFile,
             " records (truncated or edited after the export)");
    const auto [sha, bytes] = sha256_file(path);
    (void)bytes;
    MQ_CHECK(sha == f.sha256, path, ": SHA-256 ", sha, ", expected ", f.sha256, " as ",
             kExportManifestFile, " records (the file was edited after the export)");
  }
}

}  // namespace mq
