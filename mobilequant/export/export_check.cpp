// mobilequant/export/export_check.cpp
#include "mobilequant/export/export_check.h"

#include <sys/stat.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "mobilequant/core/error.h"
#include "mobilequant/export/aimet_encodings.h"
#include "mobilequant/export/encoding_table.h"
#include "mobilequant/export/export_files.h"
#include "mobilequant/export/export_manifest.h"
#include "mobilequant/export/int_model.h"
#include "mobilequant/export/reference_files.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/quant/fake_quantizer.h"

namespace mq {

namespace {

using json = nlohmann::json;

// Relative tolerance of float comparisons between values this code computed in double and
// wrote with round-trip precision: they agree exactly unless a file was edited, so the bound
// only absorbs the last-bit differences of recomputing offset*scale by another route.
constexpr double kRelTol = 1e-9;

bool close(double a, double b, double scale_hint) {
  return std::fabs(a - b) <= kRelTol * std::fmax(std::fmax(std::fabs(a), std::fabs(b)), scale_hint);
}

/// j[key] if it is a string, else "" (value() would throw on another type).
std::string str_at(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

/// JSON text parsed, with the keys that occur twice in one object (which a plain parse hides:
/// the later value wins).
struct ParsedJson {
  json value;
  bool ok = false;
  std::string error;
  std::vector<std::string> duplicates;  ///< "parent.key" paths
};

ParsedJson parse_json_checked(const std::string& text) {
  struct Frame {
    std::string name;
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<Frame> stack;
  ParsedJson out;
  auto cb = [&](int /*depth*/, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start: {
        std::string name;
        if (!stack.empty()) {
          name = stack.back().name.empty() ? stack.back().last_key
                                           : stack.back().name + "." + stack.back().last_key;
        }
        stack.push_back({name, {}, ""});
        break;
      }
      case json::parse_event_t::object_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string k = parsed.get<std::string>();
        if (!stack.empty()) {
          if (!stack.back().keys.insert(k).second)
            out.duplicates.push_back(stack.back().name.empty() ? k : stack.back().name + "." + k);
          stack.back().last_key = k;
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    out.value = json::parse(text, cb);
    out.ok = true;
  } catch (const json::exception& e) {
    out.error = e.what();
  }
  return out;
}

/// The linter's state for one directory.
class Checker {
 public:
  explicit Checker(std::string dir) : dir_(std::move(dir)) {}

  std::vector<CheckFinding> run() {
    if (!load_manifest()) return findings_;
    check_files();
    sites_ = export_sites(m_.quant, m_.num_layers, m_.silu);
    check_manifest_weights();
    if (has(ExportFormat::kHf)) check_hf();
    if (has(ExportFormat::kAimet)) {
      check_aimet_061();
      check_aimet_100();
      check_aimet_versions_agree();
      if (has(ExportFormat::kHf)) check_weights();
    }
    if (has(ExportFormat::kReference)) check_reference();
    if (has(ExportFormat::kInt))
      check_int_model_files(dir_, m_, has(ExportFormat::kHf) ? hf_tensors() : nullptr, findings_);
    return findings_;
  }

 private:
  void add(CheckRule rule, const std::string& file, const std::string& key, const std::string& msg,
           const std::string& expected = "", const std::string& actual = "") {
    findings_.push_back({rule, file, key, msg, expected, actual});
  }
  bool has(ExportFormat f) const {
    for (const auto g : m_.formats)
      if (g == f) return true;
    return false;
  }
  std::string path(const std::string& rel) const { return dir_ + "/" + rel; }

  /// hf/model.safetensors, read once for every rule that needs the weights; null (and one
  /// schema finding) when it does not read.
  const TensorMap* hf_tensors() {
    if (!hf_read_) {
      hf_read_ = true;
      try {
        hf_ = read_safetensors(path("hf/model.safetensors"));
        hf_ok_ = true;
      } catch (const Error& e) {
        add(CheckRule::kSchema, "hf/model.safetensors", "", e.what());
      }
    }
    return hf_ok_ ? &hf_ : nullptr;
  }

  bool load_manifest() {
    const std::string p = path(kExportManifestFile);
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) {
      add(CheckRule::kManifest, kExportManifestFile, "", "missing: not an export directory",
          "a file", "none");
      return false;
    }
    ParsedJson pj = parse_json_checked(read_file_bytes(p));
    if (!pj.ok) {
      add(CheckRule::kManifest, kExportManifestFile, "", "not valid JSON: " + pj.error);
      return false;
    }
    try {
      m_ = export_manifest_from_json(pj.value, kExportManifestFile);
    } catch (const Error& e) {
      add(CheckRule::kManifest, kExportManifestFile, "", e.what());
      return false;
    }
    return true;
  }

  void check_files() {
    for (const ExportFormat f : m_.formats)
      for (const std::string& rel : export_format_files(f))
        if (m_.files.count(rel) == 0)
          add(CheckRule::kManifest, kExportManifestFile, "files." + rel,
              std::string("format '") + to_string(f) + "' writes this file but the manifest does "
              "not list it", "listed", "absent");
    std::set<std::string> on_disk;
    for (const std::string& rel : list_files(dir_)) on_disk.insert(rel);
    for (const auto& [rel, f] : m_.files) {
      if (on_disk.count(rel) == 0) {
        add(CheckRule::kMissingFile, rel, "", "listed in the manifest but missing", "a file",
            "none");
        continue;
      }
      const auto [sha, bytes] = sha256_file(path(rel));
      if (bytes != f.bytes) {
        add(CheckRule::kChecksum, rel, "bytes", "size differs from the manifest (truncated or "
            "edited after the export)", std::to_string(f.bytes), std::to_string(bytes));
      } else if (sha != f.sha256) {
        add(CheckRule::kChecksum, rel, "sha256", "SHA-256 differs from the manifest (edited after "
            "the export)", f.sha256, sha);
      }
    }
    for (const std::string& rel : on_disk)
      if (rel != kExportManifestFile && m_.files.count(rel) == 0)
        add(CheckRule::kUnlistedFile, rel, "", "not listed in the manifest", "no such file",
            "a file");
  }

  /// Parses a JSON file of the export; reports json/coverage (duplicate keys) findings.
  bool load_json(const std::string& rel, json& out) {
    struct stat st;
    if (::stat(path(rel).c_str(), &st) != 0) return false;  // reported by check_files
    ParsedJson pj = parse_json_checked(read_file_bytes(path(rel)));
    if (!pj.ok) {
      add(CheckRule::kJson, rel, "", "not valid JSON (truncated or edited?): " + pj.error);
      return false;
    }
    for (const std::string& d : pj.duplicates)
      add(CheckRule::kCoverage, rel, d, "key occurs more than once (exactly one encoding per "
          "site expected)", "1", ">1");
    out = std::move(pj.value);
    return true;
  }

  /// Entries a site's encoding must have: channels for a per-channel weight, else 1.
  int64_t expected_entries(const ExportSite& s) {
    if (!s.spec.enabled || !s.is_param || s.spec.granularity == Granularity::kPerTensor) return 1;
    const auto it = m_.weights.find(s.tensor_name());
    if (it == m_.weights.end() || it->second.shape.empty()) return -1;
    if (s.spec.granularity == Granularity::kPerChannel) return it->second.shape[0];
    int64_t n = 1;
    for (const int64_t d : it->second.shape) n *= d;
    return s.spec.group_size > 0 ? n / s.spec.group_size : -1;
  }

  void check_manifest_weights() {
    for (const ExportSite& s : sites_) {
      if (!s.is_param) continue;
      if (m_.weights.count(s.tensor_name()) == 0)
        add(CheckRule::kManifest, kExportManifestFile, "model.weights." + s.tensor_name(),
            "the manifest does not give this weight's shape", "an entry", "none");
    }
  }

  /// Checks one integer encoding's values (shared by both AIMET versions). `min`/`max` are
  /// null for 1.0.0.
  void check_values(const std::string& rel, const std::string& key, const ExportSite& s,
                    const json& scale_j, const json& offset_j, const json* min_j,
                    const json* max_j) {
    if (!scale_j.is_number()) {
      add(CheckRule::kSchema, rel, key + ".scale", "scale is not a number", "a number",
          scale_j.dump());
      return;
    }
    const double scale = scale_j.get<double>();
    if (!(std::isfinite(scale) && scale > 0)) {
      add(CheckRule::kScale, rel, key + ".scale", "scale must be finite and positive", "> 0",
          num(scale));
    }
    if (!offset_j.is_number()) {
      add(CheckRule::kSchema, rel, key + ".offset", "offset is not a number", "an integer",
          offset_j.dump());
      return;
    }
    const double off = offset_j.get<double>();
    const int64_t bits = s.spec.bits;
    const double span = code_span(bits);
    if (!offset_j.is_number_integer() || off != std::nearbyint(off)) {
      add(CheckRule::kOffset, rel, key + ".offset", "offset must be an integer", "an integer",
          offset_j.dump());
    } else if (s.spec.symmetric) {
      const double want = -std::ldexp(1.0, static_cast<int>(bits - 1));
      if (off != want)
        add(CheckRule::kOffset, rel, key + ".offset",
            "a symmetric " + std::to_string(bits) + "-bit encoding has offset -2^(b-1)", num(want),
            num(off));
    } else {
      const bool zero_outside =
          std::find(m_.ranges_excluding_zero.begin(), m_.ranges_excluding_zero.end(),
                    s.tensor_name()) != m_.ranges_excluding_zero.end();
      if (!zero_outside && (off > 0 || off < -span))
        add(CheckRule::kOffset, rel, key + ".offset",
            "offset does not fit " + std::to_string(bits) + " bits (zero-point -offset must be a "
            "code)", "[" + num(-span) + ", 0]", num(off));
      if (zero_outside && std::fabs(off) > 2147483647.0)
        add(CheckRule::kOffset, rel, key + ".offset", "offset does not fit int32",
            "|offset| <= 2^31-1", num(off));
    }
    if (min_j == nullptr || max_j == nullptr) return;
    if (!min_j->is_number() || !max_j->is_number()) {
      add(CheckRule::kSchema, rel, key, "min/max are not numbers", "numbers",
          min_j->dump() + ", " + max_j->dump());
      return;
    }
    const double mn = min_j->get<double>(), mx = max_j->get<double>();
    const double want_min = off * scale, want_max = want_min + scale * span;
    if (!close(mn, want_min, scale))
      add(CheckRule::kMinMax, rel, key + ".min", "min disagrees with offset * scale",
          num(want_min), num(mn));
    if (!close(mx, want_max, scale))
      add(CheckRule::kMinMax, rel, key + ".max", "max disagrees with min + scale * (2^b - 1)",
          num(want_max), num(mx));
  }

  // ------------------------------------------------------------------------ AIMET 0.6.1
  void check_enc_061(const std::string& rel, const std::string& key, const ExportSite& s,
                     const json& enc) {
    if (!enc.is_object()) {
      add(CheckRule::kSchema, rel, key, "an encoding must be an object", "an object", enc.dump());
      return;
    }
    if (!s.spec.enabled) {
      const std::string dtype = str_at(enc, "dtype");
      if (dtype != "float")
        add(CheckRule::kBitwidth, rel, key + ".dtype", "the preset leaves this site in float",
            "float", enc.contains("dtype") ? enc["dtype"].dump() : "none");
      if (!enc.contains("bitwidth") || enc["bitwidth"] != m_.float_bitwidth)
        add(CheckRule::kBitwidth, rel, key + ".bitwidth", "float bit-width differs from the "
            "manifest's float_bitwidth", std::to_string(m_.float_bitwidth),
            enc.contains("bitwidth") ? enc["bitwidth"].dump() : "none");
      return;
    }
    for (const char* k : {"bitwidth", "dtype", "is_symmetric", "max", "min", "offset", "scale"}) {
      if (!enc.contains(k)) {
        add(CheckRule::kSchema, rel, key, std::string("missing key '") + k + "'", k, "none");
        return;
      }
    }
    if (!enc["bitwidth"].is_number_integer() || enc["bitwidth"].get<int64_t>() != s.spec.bits)
      add(CheckRule::kBitwidth, rel, key + ".bitwidth", "bit-width differs from the site's spec (" +
          s.spec.describe() + ")", std::to_string(s.spec.bits), enc["bitwidth"].dump());
    if (enc["dtype"] != "int")
      add(CheckRule::kBitwidth, rel, key + ".dtype", "a quantized site has an integer encoding",
          "\"int\"", enc["dtype"].dump());
    const std::string want_sym = s.spec.symmetric ? "True" : "False";
    if (enc["is_symmetric"] != want_sym)
      add(CheckRule::kBitwidth, rel, key + ".is_symmetric", "symmetry differs from the site's spec",
          "\"" + want_sym + "\"", enc["is_symmetric"].dump());
    check_values(rel, key, s, enc["scale"], enc["offset"], &enc["min"], &enc["max"]);
  }

  void check_aimet_061() {
    const std::string rel = std::string("aimet/") + kAimet061File;
    if (!load_json(rel, v061_)) return;
    const json& j = v061_;
    if (!j.is_object() || str_at(j, "version") != "0.6.1" ||
        !j.contains("activation_encodings") || !j["activation_encodings"].is_object() ||
        !j.contains("param_encodings") || !j["param_encodings"].is_object()) {
      add(CheckRule::kSchema, rel, "version", "expected an object with version \"0.6.1\" and "
          "activation_encodings / param_encodings objects", "0.6.1 layout",
          j.is_object() && j.contains("version") ? j["version"].dump() : "other");
      return;
    }
    v061_ok_ = true;
    const json& acts = j["activation_encodings"];
    const json& params = j["param_encodings"];
    std::set<std::string> expected_acts, expected_params;
    for (const ExportSite& s : sites_) {
      const std::string name = s.tensor_name();
      if (s.is_param) {
        expected_params.insert(name);
        if (!params.contains(name)) {
          add(CheckRule::kCoverage, rel, "param_encodings." + name, "no encoding for this weight",
              "1 encoding", "none");
          continue;
        }
        const json& list = params[name];
        if (!list.is_array()) {
          add(CheckRule::kSchema, rel, "param_encodings." + name, "expected a list of encodings",
              "a list", list.dump().substr(0, 80));
          continue;
        }
        const int64_t want = expected_entries(s);
        if (want >= 0 && static_cast<int64_t>(list.size()) != want)
          add(CheckRule::kShape, rel, "param_encodings." + name,
              "entries differ from the weight's " + std::string(s.spec.granularity ==
                  Granularity::kPerTensor ? "one per-tensor encoding" : "channels"),
              std::to_string(want), std::to_string(list.size()));
        for (size_t i = 0; i < list.size(); ++i)
          check_enc_061(rel, "param_encodings." + name + "[" + std::to_string(i) + "]", s, list[i]);
      } else {
        const auto [io, index] = aimet_io_slot(s.field);
        expected_acts.insert(s.module + "/" + io + "/" + index);
        const std::string key = "activation_encodings." + s.module + "." + io + "." + index;
        if (!acts.contains(s.module) || !acts[s.module].is_object() ||
            !acts[s.module].contains(io) || !acts[s.module][io].is_object() ||
            !acts[s.module][io].contains(index)) {
          add(CheckRule::kCoverage, rel, key, "no encoding for " + name, "1 encoding", "none");
          continue;
        }
        check_enc_061(rel, key, s, acts[s.module][io][index]);
      }
    }
    for (auto m = acts.begin(); m != acts.end(); ++m) {
      if (!m.value().is_object()) {
        add(CheckRule::kSchema, rel, "activation_encodings." + m.key(), "expected an object");
        continue;
      }
      for (auto io = m.value().begin(); io != m.value().end(); ++io) {
        if (!io.value().is_object()) {
          add(CheckRule::kSchema, rel, "activation_encodings." + m.key() + "." + io.key(),
              "expected an object of indices");
          continue;
        }
        for (auto ix = io.value().begin(); ix != io.value().end(); ++ix)
          if (expected_acts.count(m.key() + "/" + io.key() + "/" + ix.key()) == 0)
            add(CheckRule::kCoverage, rel,
                "activation_encodings." + m.key() + "." + io.key() + "." + ix.key(),
                "encoding for a tensor that is no site of this export", "none", "1 encoding");
      }
    }
    for (auto p = params.begin(); p != params.end(); ++p)
      if (expected_params.count(p.key()) == 0)
        add(CheckRule::kCoverage, rel, "param_encodings." + p.key(),
            "encoding for a tensor that is no weight site of this export", "none", "1 encoding");
  }

  // ------------------------------------------------------------------------ AIMET 1.0.0
  void check_aimet_100() {
    const std::string rel = std::string("aimet/") + kAimet100File;
    if (!load_json(rel, v100_)) return;
    const json& j = v100_;
    if (!j.is_object() || str_at(j, "version") != "1.0.0" ||
        !j.contains("activation_encodings") || !j["activation_encodings"].is_array() ||
        !j.contains("param_encodings") || !j["param_encodings"].is_array()) {
      add(CheckRule::kSchema, rel, "version", "expected an object with version \"1.0.0\" and "
          "activation_encodings / param_encodings lists", "1.0.0 layout",
          j.is_object() && j.contains("version") ? j["version"].dump() : "other");
      return;
    }
    v100_ok_ = true;
    std::map<std::string, const ExportSite*> by_name;
    for (const ExportSite& s : sites_) by_name[s.tensor_name()] = &s;
    std::map<std::string, int> seen;
    for (const char* group : {"activation_encodings", "param_encodings"}) {
      const bool params = std::string(group) == "param_encodings";
      const json& list = j[group];
      for (size_t i = 0; i < list.size(); ++i) {
        const json& e = list[i];
        const std::string at = std::string(group) + "[" + std::to_string(i) + "]";
        if (!e.is_object() || !e.contains("name") || !e["name"].is_string()) {
          add(CheckRule::kSchema, rel, at, "an encoding must be an object with a \"name\"");
          continue;
        }
        const std::string name = e["name"].get<std::string>();
        const std::string key = std::string(group) + "." + name;
        const auto it = by_name.find(name);
        if (it == by_name.end() || it->second->is_param != params) {
          add(CheckRule::kCoverage, rel, key,
              "encoding for a tensor that is no site of this export", "none", "1 encoding");
          continue;
        }
        if (++seen[name] > 1) {
          add(CheckRule::kCoverage, rel, key, "more than one encoding for this site", "1",
              std::to_string(seen[name]));
          continue;
        }
        check_enc_100(rel, key, *it->second, e);
        v100_by_name_[name] = &e;
      }
    }
    for (const ExportSite& s : sites_)
      if (seen.count(s.tensor_name()) == 0)
        add(CheckRule::kCoverage, rel,
            std::string(s.is_param ? "param_encodings." : "activation_encodings.") +
                s.tensor_name(),
            "no encoding for this site", "1 encoding", "none");
  }

  void check_enc_100(const std::string& rel, const std::string& key, const ExportSite& s,
                     const json& e) {
    if (!s.spec.enabled) {
      if (str_at(e, "dtype") != "FLOAT")
        add(CheckRule::kBitwidth, rel, key + ".dtype", "the preset leaves this site in float",
            "\"FLOAT\"", e.contains("dtype") ? e["dtype"].dump() : "none");
      if (!e.contains("bw") || e["bw"] != m_.float_bitwidth)
        add(CheckRule::kBitwidth, rel, key + ".bw", "float bit-width differs from the manifest's "
            "float_bitwidth", std::to_string(m_.float_bitwidth),
            e.contains("bw") ? e["bw"].dump() : "none");
      return;
    }
    for (const char* k : {"dtype", "enc_type", "bw", "is_sym", "scale", "offset"}) {
      if (!e.contains(k)) {
        add(CheckRule::kSchema, rel, key, std::string("missing key '") + k + "'", k, "none");
        return;
      }
    }
    if (e["dtype"] != "INT")
      add(CheckRule::kBitwidth, rel, key + ".dtype", "a quantized site has an integer encoding",
          "\"INT\"", e["dtype"].dump());
    if (!e["bw"].is_number_integer() || e["bw"].get<int64_t>() != s.spec.bits)
      add(CheckRule::kBitwidth, rel, key + ".bw", "bit-width differs from the site's spec (" +
          s.spec.describe() + ")", std::to_string(s.spec.bits), e["bw"].dump());
    if (!e["is_sym"].is_boolean() || e["is_sym"].get<bool>() != s.spec.symmetric)
      add(CheckRule::kBitwidth, rel, key + ".is_sym", "symmetry differs from the site's spec",
          s.spec.symmetric ? "true" : "false", e["is_sym"].dump());
    const bool pc = s.is_param && s.spec.granularity == Granularity::kPerChannel;
    const std::string want_type = pc ? "PER_CHANNEL" : "PER_TENSOR";
    if (e["enc_type"] != want_type)
      add(CheckRule::kShape, rel, key + ".enc_type", "encoding type differs from the site's "
          "granularity", want_type, e["enc_type"].dump());
    const json& sc = e["scale"];
    const json& of = e["offset"];
    if (!sc.is_array() || !of.is_array()) {
      add(CheckRule::kSchema, rel, key, "scale and offset must be lists", "lists",
          sc.dump().substr(0, 40));
      return;
    }
    const int64_t want = expected_entries(s);
    if (want >= 0 && (static_cast<int64_t>(sc.size()) != want ||
                      static_cast<int64_t>(of.size()) != want))
      add(CheckRule::kShape, rel, key, "scale/offset lengths differ from the tensor's " +
          std::string(pc ? "channels" : "single per-tensor entry"), std::to_string(want),
          std::to_string(sc.size()) + "/" + std::to_string(of.size()));
    const size_t n = std::min(sc.size(), of.size());
    for (size_t i = 0; i < n; ++i)
      check_values(rel, key + "[" + std::to_string(i) + "]", s, sc[i], of[i], nullptr, nullptr);
  }

  /// The 0.6.1 entries of a site (param list, or the one activation object), or empty.
  std::vector<const json*> v061_entries(const ExportSite& s) const {
    std::vector<const json*> out;
    if (s.is_param) {
      const json& p = v061_["param_encodings"];
      if (p.contains(s.tensor_name()) && p[s.tensor_name()].is_array())
        for (const auto& e : p[s.tensor_name()]) out.push_back(&e);
      return out;
    }
    const auto [io, index] = aimet_io_slot(s.field);
    const json& a = v061_["activation_encodings"];
    if (a.contains(s.module) && a[s.module].is_object() && a[s.module].contains(io) &&
        a[s.module][io].is_object() && a[s.module][io].contains(index))
      out.push_back(&a[s.module][io][index]);
    return out;
  }

  void check_aimet_versions_agree() {
    if (!v061_ok_ || !v100_ok_) return;
    const std::string rel = std::string("aimet/") + kAimet100File;
    for (const ExportSite& s : sites_) {
      if (!s.spec.enabled) continue;
      const auto it = v100_by_name_.find(s.tensor_name());
      if (it == v100_by_name_.end()) continue;
      const json& e = *it->second;
      if (!e.contains("scale") || !e["scale"].is_array() || !e.contains("offset") ||
          !e["offset"].is_array())
        continue;
      const auto old = v061_entries(s);
      if (old.size() != e["scale"].size()) continue;  // reported as shape
      for (size_t i = 0; i < old.size(); ++i) {
        const json& o = *old[i];
        if (!o.is_object() || !o.contains("scale") || !o.contains("offset")) continue;
        if (o["scale"] != e["scale"][i] || o["offset"] != e["offset"][i]) {
          add(CheckRule::kCrossFile, rel, s.tensor_name() + "[" + std::to_string(i) + "]",
              std::string("scale/offset differ from ") + kAimet061File,
              o["scale"].dump() + "/" + o["offset"].dump(),
              e["scale"][i].dump() + "/" + e["offset"][i].dump());
          break;
        }
      }
    }
  }

  // ------------------------------------------------------------------------ HF model
  void check_hf() {
    const std::string cfg_rel = "hf/config.json";
    json cfg;
    if (load_json(cfg_rel, cfg)) {
      if (!cfg.is_object() || !cfg.contains("num_hidden_layers") ||
          !cfg["num_hidden_layers"].is_number_integer()) {
        add(CheckRule::kSchema, cfg_rel, "num_hidden_layers", "missing or not an integer");
      } else if (cfg["num_hidden_layers"].get<int64_t>() != m_.num_layers) {
        add(CheckRule::kCrossFile, cfg_rel, "num_hidden_layers", "differs from the manifest",
            std::to_string(m_.num_layers), cfg["num_hidden_layers"].dump());
      }
    }
    const std::string st_rel = "hf/model.safetensors";
    struct stat st;
    if (::stat(path(st_rel).c_str(), &st) != 0) return;
    try {
      header_ = read_safetensors_header(path(st_rel));
      header_ok_ = true;
    } catch (const Error& e) {
      add(CheckRule::kSchema, st_rel, "", std::string("not a valid safetensors file: ") + e.what());
      return;
    }
    for (const auto& [name, w] : m_.weights) {
      const auto it = header_.tensors.find(w.hf_name);
      if (it == header_.tensors.end()) {
        add(CheckRule::kShape, st_rel, w.hf_name,
            "the model has no such tensor (manifest: " + name + ")", "a tensor", "none");
        continue;
      }
      if (it->second.shape != w.shape)
        add(CheckRule::kShape, st_rel, w.hf_name, "shape differs from the manifest's",
            shape_str(w.shape), shape_str(it->second.shape));
    }
  }

  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }

  /// Weight encodings against the exported weights: WeightFakeQuantizer's qparams of each
  /// folded weight must give the 0.6.1 entries' scale and offset.
  void check_weights() {
    if (!header_ok_ || !v061_ok_) return;
    const std::string rel = std::string("aimet/") + kAimet061File;
    const TensorMap* hf = hf_tensors();
    if (hf == nullptr) return;
    const TensorMap& tensors = *hf;
    torch::NoGradGuard no_grad;
    for (const ExportSite& s : sites_) {
      if (!s.is_param || !s.spec.enabled) continue;
      const auto w_it = m_.weights.find(s.tensor_name());
      if (w_it == m_.weights.end()) continue;
      const auto t_it = tensors.find(w_it->second.hf_name);
      if (t_it == tensors.end() || t_it->second.sizes().vec() != w_it->second.shape) continue;
      const auto entries = v061_entries(s);
      torch::Tensor w = t_it->second.to(torch::kFloat32);
      const bool norm = s.weight == WeightSite::kInputNorm || s.weight == WeightSite::kPostNorm;
      if (norm && m_.norm_one_plus) w = 1.0 + w;
      QParams p;
      try {
        WeightFakeQuantizer wq(WeightFakeQuantizerOptions(s.spec, w_it->second.shape,
                                                          s.tensor_name()));
        p = wq->qparams(w);
      } catch (const Error& e) {
        add(CheckRule::kWeights, rel, s.tensor_name(), e.what());
        continue;
      }
      const torch::Tensor sc = p.scale.flatten().to(torch::kFloat64).contiguous();
      const torch::Tensor of = p.offset.flatten().to(torch::kFloat64).contiguous();
      if (static_cast<size_t>(sc.numel()) != entries.size()) continue;  // reported as shape
      const int64_t qmin = s.spec.qmin();
      for (size_t i = 0; i < entries.size(); ++i) {
        const json& e = *entries[i];
        if (!e.is_object() || !e.contains("scale") || !e["scale"].is_number() ||
            !e.contains("offset") || !e["offset"].is_number())
          continue;
        const double want_s = sc[static_cast<int64_t>(i)].item<double>();
        const double want_o =
            static_cast<double>(qmin) - of[static_cast<int64_t>(i)].item<double>();
        const double got_s = e["scale"].get<double>(), got_o = e["offset"].get<double>();
        if (!close(got_s, want_s, 0.0) || got_o != want_o) {
          add(CheckRule::kWeights, rel, "param_encodings." + s.tensor_name() + "[" +
              std::to_string(i) + "]", "encoding differs from the one the exported weight " +
              w_it->second.hf_name + " gives", num(want_s) + "/" + num(want_o),
              num(got_s) + "/" + num(got_o));
          break;
        }
      }
    }
  }

  // ------------------------------------------------------------------------ reference files
  void check_reference() {
    const std::string qrel = std::string("reference/") + kDefaultQcfgFile;
    json qcfg;
    if (load_json(qrel, qcfg)) {
      const nlohmann::ordered_json want = default_qcfg_json(m_.quant, m_.num_layers, m_.silu);
      if (!qcfg.is_object()) {
        add(CheckRule::kSchema, qrel, "", "expected an object of modules");
      } else {
        for (auto it = want.begin(); it != want.end(); ++it) {
          if (!qcfg.contains(it.key())) {
            add(CheckRule::kCoverage, qrel, it.key(), "module missing", "an entry", "none");
            continue;
          }
          if (!qcfg[it.key()].is_object()) {
            add(CheckRule::kSchema, qrel, it.key(), "expected an object of quantizer configs");
            continue;
          }
          for (auto f = it.value().begin(); f != it.value().end(); ++f) {
            const std::string key = it.key() + "." + f.key();
            if (!qcfg[it.key()].contains(f.key())) {
              add(CheckRule::kCoverage, qrel, key, "quantizer config missing", "an entry", "none");
              continue;
            }
            const json want_f = json::parse(f.value().dump());
            if (qcfg[it.key()][f.key()] != want_f)
              add(CheckRule::kCrossFile, qrel, key, "differs from the manifest's quant config",
                  want_f.dump(), qcfg[it.key()][f.key()].dump());
          }
          for (auto f = qcfg[it.key()].begin(); f != qcfg[it.key()].end(); ++f)
            if (!it.value().contains(f.key()))
              add(CheckRule::kCoverage, qrel, it.key() + "." + f.key(),
                  "quantizer the reference's module does not have", "none", "an entry");
        }
        for (auto it = qcfg.begin(); it != qcfg.end(); ++it)
          if (!want.contains(it.key()))
            add(CheckRule::kCoverage, qrel, it.key(), "module that is not in the model", "none",
                "an entry");
      }
    }
    const std::string arel = std::string("reference/") + kActDictFile;
    json act;
    if (!load_json(arel, act)) return;
    if (!act.is_object()) {
      add(CheckRule::kSchema, arel, "", "expected an object of modules");
      return;
    }
    std::set<std::string> expected;
    for (const ExportSite& s : sites_) {
      if (s.is_param || !is_reference_site(s.act)) continue;
      if (!s.spec.enabled) continue;
      expected.insert(s.module + "/" + s.field);
      const std::string key = s.module + "." + s.field;
      if (!act.contains(s.module) || !act[s.module].is_object() ||
          !act[s.module].contains(s.field)) {
        add(CheckRule::kCoverage, arel, key, "no range for a quantized site", "[min, max]", "none");
        continue;
      }
      const json& r = act[s.module][s.field];
      if (!r.is_array() || r.size() != 2 || !r[0].is_number() || !r[1].is_number()) {
        add(CheckRule::kSchema, arel, key, "expected [min, max]", "two numbers", r.dump());
        continue;
      }
      const double mn = r[0].get<double>(), mx = r[1].get<double>();
      if (!(std::isfinite(mn) && std::isfinite(mx) && mn <= mx)) {
        add(CheckRule::kMinMax, arel, key, "range must be finite with min <= max", "min <= max",
            "[" + num(mn) + ", " + num(mx) + "]");
        continue;
      }
      if (s.spec.symmetric && mn != -mx)
        add(CheckRule::kMinMax, arel, key, "a symmetric range has min = -max", num(-mx), num(mn));
      if (!v061_ok_) continue;
      const auto entries = v061_entries(s);
      if (entries.size() != 1 || !entries[0]->is_object() || !entries[0]->contains("min") ||
          !entries[0]->contains("max") || !(*entries[0])["min"].is_number() ||
          !(*entries[0])["max"].is_number())
        continue;
      const double amin = (*entries[0])["min"].get<double>();
      const double amax = (*entries[0])["max"].get<double>();
      const double hint = std::fabs(amax - amin) * 1e-6;
      const bool agree = s.spec.symmetric ? close(mx, amax, hint)
                                          : close(mn, amin, hint) && close(mx, amax, hint);
      if (!agree)
        add(CheckRule::kCrossFile, arel, key, std::string("range differs from ") + kAimet061File,
            "[" + num(s.spec.symmetric ? -amax : amin) + ", " + num(amax) + "]",
            "[" + num(mn) + ", " + num(mx) + "]");
    }
    for (auto m = act.begin(); m != act.end(); ++m) {
      if (!m.value().is_object()) {
        add(CheckRule::kSchema, arel, m.key(), "expected an object of fields");
        continue;
      }
      for (auto f = m.value().begin(); f != m.value().end(); ++f)
        if (expected.count(m.key() + "/" + f.key()) == 0)
          add(CheckRule::kCoverage, arel, m.key() + "." + f.key(),
              "range for a site this export does not quantize", "none", "[min, max]");
    }
  }

  std::string dir_;
  ExportManifest m_;
  std::vector<ExportSite> sites_;
  std::vector<CheckFinding> findings_;
  json v061_, v100_;
  bool v061_ok_ = false, v100_ok_ = false;
  std::map<std::string, const json*> v100_by_name_;
  SafetensorsHeader header_;
  bool header_ok_ = false;
  TensorMap hf_;  // hf_tensors()
  bool hf_read_ = false, hf_ok_ = false;
};

}  // namespace

const char* to_string(CheckRule r) {
  switch (r) {
    case CheckRule::kManifest: return "manifest";
    case CheckRule::kMissingFile: return "missing_file";
    case CheckRule::kChecksum: return "checksum";
    case CheckRule::kUnlistedFile: return "unlisted_file";
    case CheckRule::kJson: return "json";
    case CheckRule::kSchema: return "schema";
    case CheckRule::kCoverage: return "coverage";
    case CheckRule::kScale: return "scale";
    case CheckRule::kOffset: return "offset";
    case CheckRule::kBitwidth: return "bitwidth";
    case CheckRule::kMinMax: return "minmax";
    case CheckRule::kShape: return "shape";
    case CheckRule::kCrossFile: return "cross_file";
    case CheckRule::kWeights: return "weights";
    case CheckRule::kRequant: return "requant";
  }
  return "?";
}

const std::vector<CheckRule>& EnumValues<CheckRule>::values() {
  static const std::vector<CheckRule> all = {
      CheckRule::kManifest, CheckRule::kMissingFile, CheckRule::kChecksum, CheckRule::kUnlistedFile,
      CheckRule::kJson,     CheckRule::kSchema,      CheckRule::kCoverage, CheckRule::kScale,
      CheckRule::kOffset,   CheckRule::kBitwidth,    CheckRule::kMinMax,   CheckRule::kShape,
      CheckRule::kCrossFile, CheckRule::kWeights, CheckRule::kRequant};
  return all;
}

std::string CheckFinding::str() const {
  std::string out = std::string("[") + to_string(rule) + "] " + file;
  if (!key.empty()) out += ": " + key;
  out += ": " + message;
  if (!expected.empty() || !actual.empty())
    out += " (expected " + expected + ", got " + actual + ")";
  return out;
}

std::vector<CheckFinding> check_export(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return {{CheckRule::kManifest, dir, "", "not a directory", "an export directory", "none"}};
  try {
    return Checker(dir).run();
  } catch (const std::exception& e) {  // a structure the rules did not foresee
    return {{CheckRule::kSchema, dir, "", std::string("unexpected structure: ") + e.what(), "",
             ""}};
  }
}

std::string format_findings(const std::vector<CheckFinding>& findings) {
  std::string out;
  for (const auto& f : findings) out += f.str() + "\n";
  return out;
}

}  // namespace mq
