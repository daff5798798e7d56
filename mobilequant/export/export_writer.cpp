// mobilequant/export/export_writer.cpp
#include "mobilequant/export/export_writer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <map>

#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"
#include "mobilequant/core/file_util.h"
#include "mobilequant/export/aimet_encodings.h"
#include "mobilequant/export/encoding_table.h"
#include "mobilequant/export/export_check.h"
#include "mobilequant/export/export_files.h"
#include "mobilequant/export/int_model.h"
#include "mobilequant/export/onnx_qdq.h"
#include "mobilequant/export/reference_files.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/models/hf_export.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/transforms/quantized_checkpoint.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void write_json(const std::string& path, const nlohmann::ordered_json& j) {
  write_file_atomically(path, j.dump(2) + "\n");
}

void make_dir(const std::string& p) {
  MQ_CHECK(::mkdir(p.c_str(), 0755) == 0 || errno == EEXIST, "export: cannot create '", p, "': ",
           std::strerror(errno));
}

}  // namespace

ExportSource resolve_export_source(const std::string& path) {
  MQ_CHECK(is_dir(path), "export: '", path, "' is not a directory (expected a run directory or a "
           "quantized model directory)");
  ExportSource src;
  src.path = fs::absolute(path).lexically_normal().string();
  while (src.path.size() > 1 && src.path.back() == '/') src.path.pop_back();
  if (is_quantized_model_dir(src.path)) {
    src.model_dir = src.path;
    const nlohmann::json qj = read_json_file(src.path + "/quantization.json", "model file");
    src.config = qj.value("settings", nlohmann::json::object());
    return src;
  }
  const bool run_like = exists(src.path + "/env.json") || exists(src.path + "/log.txt") ||
                        exists(src.path + "/results.json") || exists(src.path + "/checkpoint");
  MQ_CHECK(run_like, "export: '", path, "' is neither a run directory (config.json, env.json, "
           "results.json, model/) nor a quantized model directory (quantization.json)");
  src.is_run = true;
  MQ_CHECK(exists(src.path + "/results.json"), "export: run '", path,
           "' did not finish: results.json is missing (finish it with `mobilequant run ... "
           "--resume`, then export)");
  const nlohmann::json results = read_json_file(src.path + "/results.json", "run file");
  const bool has_model = results.contains("model_dir") && results["model_dir"].is_string() &&
                         !results["model_dir"].get<std::string>().empty();
  MQ_CHECK(has_model, "export: run '", path, "' has no quantized model (results.json: model_dir "
           "is empty; a float run, method fp?): nothing to export");
  src.model_dir = src.path + "/model";
  MQ_CHECK(is_quantized_model_dir(src.model_dir), "export: run '", path, "': ", src.model_dir,
           " is missing or has no quantization.json, although results.json names a model");
  src.config = results.value("config", nlohmann::json::object());
  if (exists(src.path + "/config.json")) src.config = read_json_file(src.path + "/config.json", "run file");
  return src;
}

std::string default_export_dir(const ExportSource& source) {
  return source.is_run ? source.path + "/export" : source.path + "-export";
}

ExportManifest export_model(const std::string& source, const std::string& out_dir,
                            const ExportOptions& requested) {
  requested.validate();
  ExportOptions opts = requested;
  std::vector<std::string> left_out;  // formats "all" could not write, with the reason
  // With the default "all", a format that cannot hold this preset or model is left out.
  auto optional_check = [&](ExportFormat f, const std::function<void()>& check) {
    if (!opts.has(f)) return;
    if (!opts.all_formats) return check();
    try {
      check();
    } catch (const Error& e) {
      left_out.push_back(std::string("format '") + to_string(f) + "' left out: " + e.what());
      opts.formats.erase(std::find(opts.formats.begin(), opts.formats.end(), f));
    }
  };
  const ExportSource src = resolve_export_source(source);
  const std::string model_dir = src.model_dir;
  const QuantizedManifest qman = read_quantized_manifest(model_dir + "/quantization.json");
  const QuantConfig& quant = qman.quant;
  // Formats that cannot hold the preset fail now, before anything is loaded or written.
  if (opts.has(ExportFormat::kReference)) check_reference_expressible(quant);
  if (opts.has(ExportFormat::kAimet)) check_aimet_expressible(quant);
  optional_check(ExportFormat::kInt, [&] { check_int_model_expressible(quant); });
  optional_check(ExportFormat::kOnnx, [&] { check_onnx_expressible(quant); });

  MQ_CHECK(!out_dir.empty(), "export: no output directory given");
  std::string target = fs::absolute(out_dir).lexically_normal().string();
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  MQ_CHECK(target != src.path && target != model_dir &&
               src.path.rfind(target + "/", 0) != 0,
           "export: output '", out_dir, "' is (or holds) the source '", src.path,
           "'; choose another directory");
  if (exists(target)) {
    MQ_CHECK(opts.force, "export: '", out_dir, "' already exists; pass --force to replace it");
    MQ_CHECK(is_dir(target), "export: '", out_dir, "' exists and is not a directory");
  }
  const fs::path parent = fs::path(target).parent_path();
  MQ_CHECK(is_dir(parent.string()), "export: the parent directory of '", out_dir,
           "' does not exist");
  const std::string partial = target + ".partial-" + std::to_string(::getpid());
  remove_tree(partial);
  make_dir(partial);
  try {
    // The quantized model, on the CPU in fp32, folded (as saved models are; again to be sure).
    LoadOptions load;  // cpu, fp32
    LoadedModel lm = load_model(model_dir, load);
    const TensorMap state = read_safetensors(model_dir + "/quantizers.safetensors");
    QuantizedModel qm(lm.model, QuantizedModelOptions(quant).let(let_pairs_in(state)));
    qm->load_quant_state(state, model_dir + "/quantizers.safetensors");
    qm->fold();
    const ModelConfig& cfg = lm.model->config();
    const bool silu = cfg.hidden_act == Activation::kSilu;
    optional_check(ExportFormat::kInt, [&] { check_int_model_supported(cfg); });
    optional_check(ExportFormat::kOnnx, [&] { check_onnx_model(cfg); });
    const EncodingTable table = build_encoding_table(*qm);

    if (opts.has(ExportFormat::kHf)) {
      TensorMap tensors;
      for (const auto& p : lm.model->named_parameters()) tensors[p.key()] = p.value().detach();
      write_hf_directory(partial + "/hf", cfg, tensors);
    }
    if (opts.has(ExportFormat::kReference)) {
      make_dir(partial + "/reference");
      write_json(partial + "/reference/" + kActDictFile, act_dict_json(table));
      write_json(partial + "/reference/" + kDefaultQcfgFile,
                 default_qcfg_json(quant, cfg.num_hidden_layers, silu));
    }
    if (opts.has(ExportFormat::kAimet)) {
      make_dir(partial + "/aimet");
      write_json(partial + "/aimet/" + kAimet061File,
                 aimet_encodings_v061(table, quant, opts.float_bits));
      write_json(partial + "/aimet/" + kAimet100File,
                 aimet_encodings_v100(table, quant, opts.float_bits));
    }
    if (opts.has(ExportFormat::kInt))
      write_int_model(partial + "/" + kIntModelDir, *qm, table);
    if (opts.has(ExportFormat::kOnnx)) {
      OnnxOptions onnx;
      onnx.producer_version = opts.provenance.value("git_revision", std::string());
      std::string bytes;  // the graph builder may still find a site it cannot express
      optional_check(ExportFormat::kOnnx, [&] { bytes = onnx_qdq_model_bytes(*qm, table, onnx); });
      if (opts.has(ExportFormat::kOnnx)) {
        make_dir(partial + "/onnx");
        write_file_atomically(partial + "/" + kOnnxModelFile, bytes);
      }
    }

    ExportManifest m;
    m.formats = opts.formats;
    m.source = {{"kind", src.is_run ? "run" : "quantized_model"},
                {"path", src.path},
                {"model_dir", model_dir},
                {"method", qman.method},
                {"base_model", qman.base_model},
                {"quantized_by", qman.created_by},
                {"quantized_at_git_revision", qman.git_revision}};
    m.config = src.config;
    m.provenance = opts.provenance;
    m.quant = quant;
    m.num_layers = cfg.num_hidden_layers;
    m.silu = silu;
    m.norm_one_plus = cfg.norm == NormKind::kRmsOnePlus;
    std::map<std::string, std::vector<int64_t>> shapes;  // HF name -> shape
    for (const auto& p : lm.model->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
    for (const ExportSite& s : export_sites(quant, cfg.num_hidden_layers, silu)) {
      if (!s.is_param) continue;
      const std::string hf = "model.layers." + std::to_string(s.layer) + "." +
                             hf_module_name(s.weight) + ".weight";
      const auto it = shapes.find(hf);
      MQ_CHECK(it != shapes.end(), "export: the model has no tensor '", hf, "' for ",
               s.tensor_name());
      m.weights[s.tensor_name()] = ExportedWeight{hf, it->second};
    }
    m.float_bitwidth = opts.float_bits;
    m.ranges_excluding_zero = table.ranges_excluding_zero;
    m.notes = table.notes;
    m.notes.insert(m.notes.end(), left_out.begin(), left_out.end());
    stamp_checksums(partial, m);
    write_export_manifest(partial, m);

    if (opts.self_check) {
      const auto findings = check_export(partial);
      MQ_CHECK(findings.empty(), "export: the written export fails its own check (a bug; please "
               "report it):\n", format_findings(findings));
    }
    // Swap into place: the old directory (with --force) moves aside first, then goes.
    const std::string old = target + ".old-" + std::to_string(::getpid());
    if (exists(target)) {
      remove_tree(old);
      MQ_CHECK(std::rename(target.c_str(), old.c_str()) == 0, "export: cannot move the old '",
               out_dir, "' aside: ", std::strerror(errno));
    }
    if (std::rename(partial.c_str(), target.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      if (exists(old)) std::rename(old.c_str(), target.c_str());  // put the old one back
      throw make_error("export: cannot rename '", partial, "' to '", out_dir, "': ", why);
    }
    remove_tree(old);
    return m;
  } catch (...) {
    remove_tree(partial);
    throw;
  }
}

}  // namespace mq
