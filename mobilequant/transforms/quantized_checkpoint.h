// mobilequant/transforms/quantized_checkpoint.h
// A quantized model on disk: one directory that both `transformers` (the float part) and
// `mobilequant eval` (the simulated-quantization model) read.
//
//   config.json, model.safetensors   the folded float model (transforms and clipping applied),
//                                    a Hugging Face directory (fp32)
//   quantizers.safetensors           every quantization parameter under the reference's
//                                    names (QuantizedModelImpl::quant_state)
//   quantization.json                the manifest: base model, tokenizer source, method,
//                                    settings, and every site's QuantSpec
//
// The directory is written beside its final place and renamed into it, so a crash leaves
// either the old directory or the new one, never half of one.
#pragma once

#include <string>

#include "mobilequant/config/quantize_config.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

/// Folds `qm` (QuantizedModelImpl::fold) and writes it to `dir`, replacing what was there.
void save_quantized_model(const std::string& dir, QuantizedModelImpl& qm,
                          const QuantizedManifest& manifest);

/// The equivalent-transform pairs whose scales a quantizers file holds (saved models keep the
/// folded scales, all 1, under their names; the wrapper must have them to load the file).
LetPairs let_pairs_in(const TensorMap& quant_state);

/// True if `path` is a directory holding a quantization.json.
bool is_quantized_model_dir(const std::string& path);

/// A quantized model read back: the float model inside its wrapper, the tokenizer, the manifest.
struct LoadedQuantizedModel {
  LoadedModel base;          ///< the float model (hooks installed by `model`) and tokenizer
  QuantizedModel model{nullptr};  ///< the simulated-quantization wrapper
  QuantizedManifest manifest;     ///< what the directory says about itself
};

/// Reads a directory written by save_quantized_model. The tokenizer comes from
/// opts.tokenizer_path, else the directory, else the manifest's tokenizer_source. Errors name
/// the directory and the file.
LoadedQuantizedModel load_quantized_model(const std::string& dir, const LoadOptions& opts = {});

}  // namespace mq
