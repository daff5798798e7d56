// mobilequant/config/run_config.cpp
#include "mobilequant/config/run_config.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"

namespace mq {

namespace fs = std::filesystem;

void RunConfig::validate(const std::string& where) const {
  MQ_CHECK(!quant.empty(), where, ": quant: empty; give a preset name or a JSON file");
  MQ_CHECK(alpha >= 0.0 && alpha <= 1.0, where, ": alpha: got ", alpha, ", expected 0..1");
  MQ_CHECK(calib.samples >= 1, where, ": calib.samples: got ", calib.samples, ", expected >= 1");
  MQ_CHECK(calib.seqlen >= 0, where, ": calib.seqlen: got ", calib.seqlen,
           ", expected >= 0 (0: 2048 capped at the model's context)");
  MQ_CHECK(calib.seed >= 0, where, ": calib.seed: got ", calib.seed, ", expected >= 0");
  MQ_CHECK(calib.batch_size >= 1, where, ": calib.batch_size: got ", calib.batch_size,
           ", expected >= 1");
  MQ_CHECK(eval.max_length >= 0 && eval.seqlen >= 0, where,
           ": eval.max_length and eval.seqlen must be >= 0, got ", eval.max_length, " and ",
           eval.seqlen);
  MQ_CHECK(eval.batch_size >= 1, where, ": eval.batch_size: got ", eval.batch_size,
           ", expected >= 1");
  MQ_CHECK(eval.limit >= -1, where, ": eval.limit: got ", eval.limit, ", expected >= -1");
  train.validate(where);
  if (train.trainer != TrainerKind::kNone) {
    const int64_t per_step = train.batch_size * train.grad_accum;
    MQ_CHECK(calib.samples % per_step == 0, where, ": calib.samples ", calib.samples,
             " is not a multiple of train.batch_size x train.grad_accum = ", per_step);
  }
}

namespace {

/// The path of a method: a JSON file as given, else methods_dir/NAME.json.
std::string method_path(const std::string& name, const std::string& methods_dir) {
  if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) return name;
  const fs::path p = fs::path(methods_dir) / (name + ".json");
  if (!fs::exists(p)) {
    std::vector<std::string> names;
    for (const auto& [n, d] : list_methods(methods_dir)) names.push_back(n);
    throw make_error("method '", name, "': no file ", p.string(), "; known methods: ",
                     format_key_list(names), " (or give a .json file)");
  }
  return p.string();
}

/// The method file split into its run-config keys and its per-preset entries.
struct MethodFile {
  nlohmann::json fields = nlohmann::json::object();
  nlohmann::json for_quant = nlohmann::json::object();
  std::string description;
};

MethodFile read_method_file(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  MQ_CHECK(j.is_object(), path, ": expected a JSON object");
  MethodFile m;
  for (const auto& [key, value] : j.items()) {
    if (key == "description") {
      MQ_CHECK(value.is_string(), path, ": description: expected a string, got ", value.dump());
      m.description = value.get<std::string>();
    } else if (key == "for_quant") {
      MQ_CHECK(value.is_object(), path, ": for_quant: expected an object of preset -> settings");
      m.for_quant = value;
    } else {
      MQ_CHECK(key != "method" && key != "model" && key != "output", path, ": key '", key,
               "' does not belong in a method file (it belongs to the run config)");
      m.fields[key] = value;
    }
  }
  return m;
}

/// The value of "method" or "quant" after the file and the sets, without resolving the rest.
std::string peek(const nlohmann::json& file, const std::vector<std::string>& sets,
                 const std::string& key, const std::string& fallback) {
  std::string value = fallback;
  if (file.is_object() && file.contains(key) && file[key].is_string())
    value = file[key].get<std::string>();
  for (const auto& s : sets) {
    const auto [k, v] = split_override(s, "--set");
    if (k == key) value = v;
  }
  return value;
}

void collect_differences(const nlohmann::json& a, const nlohmann::json& b,
                         const std::string& prefix, std::vector<std::string>& out) {
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (const auto& item : a.items()) keys.insert(item.key());
    for (const auto& item : b.items()) keys.insert(item.key());
    for (const auto& k : keys) {
      const std::string name = prefix.empty() ? k : prefix + "." + k;
      if (!a.contains(k) || !b.contains(k)) {
        out.push_back(name);
      } else {
        collect_differences(a[k], b[k], name, out);
      }
    }
  } else if (a != b) {
    out.push_back(prefix);
  }
}

}  // namespace

RunConfig resolve_run_config(const std::string& file, const std::vector<std::string>& sets,
                             const std::string& methods_dir) {
  const nlohmann::json file_json = file.empty() ? nlohmann::json::object() : read_json_file(file);
  const std::string where = file.empty() ? std::string("run") : file;
  RunConfig defaults;
  const std::string method = peek(file_json, sets, "method", defaults.method);
  const std::string mpath = method_path(method, methods_dir);
  const MethodFile m = read_method_file(mpath);

  RunConfig c;
  config_from_json(m.fields, c, mpath);
  const std::string quant = m.fields.contains("quant") ? c.quant
                                                       : peek(file_json, sets, "quant", c.quant);
  if (m.for_quant.contains(quant)) config_from_json(m.for_quant[quant], c, mpath + ": for_quant." + quant);
  for (const auto& [preset, value] : m.for_quant.items()) {
    MQ_CHECK(value.is_object(), mpath, ": for_quant.", preset, ": expected an object");
  }
  config_from_json(file_json, c, where);
  for (const auto& s : sets) apply_override(c, s, "--set");
  c.method = method;
  if (m.fields.contains("quant")) c.quant = m.fields["quant"].get<std::string>();
  if (c.description.empty()) c.description = m.description;
  c.validate(where);
  return c;
}

std::vector<std::pair<std::string, std::string>> list_methods(const std::string& methods_dir) {
  std::vector<std::pair<std::string, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(methods_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(methods_dir)) {
    if (entry.path().extension() != ".json") continue;
    std::string description;
    try {
      description = read_method_file(entry.path().string()).description;
    } catch (const std::exception& e) {
      description = std::string("(unreadable: ") + e.what() + ")";
    }
    out.emplace_back(entry.path().stem().string(), description);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> differing_keys(const nlohmann::json& a, const nlohmann::json& b) {
  std::vector<std::string> out;
  collect_differences(a, b, "", out);
  return out;
}

}  // namespace mq
