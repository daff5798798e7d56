// mobilequant/transforms/quantized_checkpoint.cpp
#include "mobilequant/transforms/quantized_checkpoint.h"

#include <unistd.h>

#include <filesystem>

#include "mobilequant/core/error.h"
#include "mobilequant/core/file_util.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/models/hf_export.h"

namespace mq {

namespace fs = std::filesystem;

namespace {
constexpr const char* kManifestFile = "quantization.json";
constexpr const char* kQuantizersFile = "quantizers.safetensors";
}  // namespace

void save_quantized_model(const std::string& dir, QuantizedModelImpl& qm,
                          const QuantizedManifest& manifest) {
  qm.fold();
  CausalLm model = qm.float_model();
  const fs::path target = fs::absolute(dir);
  const fs::path partial = target.string() + ".partial-" + std::to_string(::getpid());
  remove_tree(partial.string());
  TensorMap tensors;
  for (const auto& p : model->named_parameters()) tensors[p.key()] = p.value().detach();
  write_hf_directory(partial.string(), model->config(), tensors);
  write_safetensors((partial / kQuantizersFile).string(), qm.quant_state(),
                    {{"format", "mobilequant quantizers"}, {"quant", qm.quant_config().name}});
  QuantizedManifest m = manifest;
  m.quant = qm.quant_config();
  write_quantized_manifest((partial / kManifestFile).string(), m);
  // Swap into place: the old directory (if any) moves aside first, then goes.
  const fs::path old = target.string() + ".old-" + std::to_string(::getpid());
  std::error_code ec;
  if (fs::exists(target)) {
    MQ_CHECK(fs::is_directory(target), "output '", dir, "' exists and is not a directory");
    fs::rename(target, old, ec);
    MQ_CHECK(!ec, "cannot move the old '", dir, "' aside: ", ec.message());
  }
  fs::rename(partial, target, ec);
  MQ_CHECK(!ec, "cannot rename '", partial.string(), "' to '", dir, "': ", ec.message());
  remove_tree(old.string());
}

LetPairs let_pairs_in(const TensorMap& quant_state) {
  auto has = [&](const char* tail) {
    const std::string t = tail;
    for (const auto& kv : quant_state) {
      const std::string& k = kv.first;
      if (k.size() >= t.size() && k.compare(k.size() - t.size(), t.size(), t) == 0) return true;
    }
    return false;
  };
  LetPairs p{false, false, false, false, false};
  p.qkv = has(".qkv_smooth_scale");
  p.fc1 = has(".fc1_smooth_scale");
  p.fc2 = has(".fc2_smooth_scale");
  p.out = has(".out_smooth_scale");
  p.qkt = has(".qkt_smooth_scale");
  return p;
}

bool is_quantized_model_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / kManifestFile, ec);
}

LoadedQuantizedModel load_quantized_model(const std::string& dir, const LoadOptions& opts) {
  const fs::path root(dir);
  MQ_CHECK(is_quantized_model_dir(dir), "'", dir, "' is not a quantized model directory (no ",
           kManifestFile, ")");
  LoadedQuantizedModel out;
  out.manifest = read_quantized_manifest((root / kManifestFile).string());
  const std::string& src = out.manifest.tokenizer_source;
  LoadOptions float_opts = opts;
  const bool spm_file = fs::path(src).extension() == ".model";
  if (float_opts.tokenizer_path.empty() && spm_file) float_opts.tokenizer_path = src;
  out.base = load_model(dir, float_opts);
  if (!out.base.tokenizer && !src.empty() && !spm_file) {
    // The tokenizer lives inside the base model's file (GGUF) or beside it (llama2.c).
    MQ_CHECK(fs::exists(src), dir, "/", kManifestFile, ": tokenizer_source '", src,
             "' no longer exists; pass --tokenizer");
    out.base.tokenizer = read_checkpoint(src).tokenizer;
  }
  const fs::path qfile = root / kQuantizersFile;
  MQ_CHECK(fs::exists(qfile), dir, ": missing ", kQuantizersFile);
  const TensorMap state = read_safetensors(qfile.string());
  out.model = QuantizedModel(out.base.model,
                             QuantizedModelOptions(out.manifest.quant).let(let_pairs_in(state)));
  out.model->load_quant_state(state, qfile.string());
  out.model->to(opts.device);
  return out;
}

}  // namespace mq
