// mobilequant/export/export_reader.h
// Reading an export back (export_writer.h): the simulated-quantization model rebuilt from the
// exported files alone, as the authors' eval/harness_eval.py --mode custom does (the float
// model, then default_qcfg.json, then act_dict.json). Used to prove that an export reproduces
// the model it came from, and by anything that consumes exports.
#pragma once

#include <string>

#include "mobilequant/export/export_manifest.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

/// An export read back.
struct LoadedExport {
  /// hf/ as the float model; its tokenizer is opts.tokenizer_path, else the source model's
  /// (quantization.json's tokenizer_source) while that still exists, else null.
  LoadedModel base;
  QuantizedModel model{nullptr};  ///< built from reference/default_qcfg.json + act_dict.json
  ExportManifest manifest;        ///< export.json
};

/// Reads an export holding the hf and reference formats. First checks every file against the
/// manifest's size and SHA-256 (an edited or truncated file is an error naming it), then loads
/// the float model and the quantizers. Errors name the file and the key.
LoadedExport load_export(const std::string& dir, const LoadOptions& opts = {});

}  // namespace mq
