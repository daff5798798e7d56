// mobilequant/export/export_reader.cpp
#include "mobilequant/export/export_reader.h"

#include <filesystem>

#include "mobilequant/core/error.h"
#include "mobilequant/transforms/quantized_checkpoint.h"
#include "mobilequant/export/reference_files.h"

namespace mq {

namespace fs = std::filesystem;

LoadedExport load_export(const std::string& dir, const LoadOptions& opts) {
  LoadedExport out;
  out.manifest = read_export_manifest(dir);
  verify_export_files(dir, out.manifest);
  bool hf = false, ref = false;
  for (const ExportFormat f : out.manifest.formats) {
    hf = hf || f == ExportFormat::kHf;
    ref = ref || f == ExportFormat::kReference;
  }
  MQ_CHECK(hf && ref, dir, "/", kExportManifestFile,
           ": formats: loading needs 'hf' and 'reference', the export has ",
           out.manifest.formats.size(), " format(s) without ", hf ? "'reference'" : "'hf'");
  // Exports carry no tokenizer: take the one the source model was quantized with, if that
  // model directory still exists (as load_quantized_model does), unless opts names one.
  std::string tokenizer_source;
  if (out.manifest.source.is_object() && out.manifest.source.contains("model_dir") &&
      out.manifest.source["model_dir"].is_string()) {
    const std::string qjson =
        out.manifest.source["model_dir"].get<std::string>() + "/quantization.json";
    if (fs::exists(qjson)) tokenizer_source = read_quantized_manifest(qjson).tokenizer_source;
  }
  LoadOptions float_opts = opts;
  const bool spm_file = fs::path(tokenizer_source).extension() == ".model";
  if (float_opts.tokenizer_path.empty() && spm_file) float_opts.tokenizer_path = tokenizer_source;
  out.base = load_model(dir + "/hf", float_opts);
  if (!out.base.tokenizer && !tokenizer_source.empty() && !spm_file &&
      fs::exists(tokenizer_source))
    out.base.tokenizer = read_checkpoint(tokenizer_source).tokenizer;
  const ModelConfig& cfg = out.base.model->config();
  MQ_CHECK(cfg.num_hidden_layers == out.manifest.num_layers, dir,
           "/hf/config.json: num_hidden_layers = ", cfg.num_hidden_layers, ", expected ",
           out.manifest.num_layers, " as ", kExportManifestFile, " says");
  const ReferenceFiles files = read_reference_files(
      dir + "/reference/" + kActDictFile, dir + "/reference/" + kDefaultQcfgFile,
      cfg.num_hidden_layers, cfg.hidden_act == Activation::kSilu);
  out.model = QuantizedModel(out.base.model, QuantizedModelOptions(files.quant));
  apply_reference_ranges(*out.model, files, dir + "/reference/" + kActDictFile);
  out.model->to(opts.device);
  return out;
}

}  // namespace mq
