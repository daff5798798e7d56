// mobilequant/export/export_reader.cpp
#include "mobilequant/export/export_reader.h"

#include "mobilequant/core/error.h"
#include "mobilequant/export/reference_files.h"

namespace mq {

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
  out.base = load_model(dir + "/hf", opts);
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
