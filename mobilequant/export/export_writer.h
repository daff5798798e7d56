// mobilequant/export/export_writer.h
// `mobilequant export`: one directory, written atomically, holding the requested formats of a
// finished run's (or a quantized model directory's) model, and export.json (export_manifest.h)
// with the source, config, provenance and the checksum of every file:
//
//   OUT/export.json
//   OUT/hf/config.json, OUT/hf/model.safetensors          --format hf
//   OUT/reference/act_dict.json, default_qcfg.json        --format reference
//   OUT/aimet/encodings_0.6.1.json, encodings_1.0.0.json  --format aimet
//   OUT/int/manifest.json, OUT/int/model.safetensors      --format int (docs/integer-model.md)
//   OUT/onnx/model.onnx                                   --format onnx (docs/onnx.md)
//
// Everything is written into a sibling OUT.partial-<pid>, linted (export_check.h), and only then
// renamed to OUT; a failure at any point removes the partial directory, so OUT is either the
// complete new export, the old one (without --force), or absent. Whether the preset can be
// expressed in each format is checked before the model is loaded (the model's architecture,
// for int and onnx, after). With the default "all" (ExportOptions::all_formats), int and onnx
// are left out with a note when they cannot express the preset or the model.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "mobilequant/export/export_manifest.h"
#include "mobilequant/export/export_options.h"

namespace mq {

/// What an export reads.
struct ExportSource {
  std::string path;       ///< the directory given (absolute)
  bool is_run = false;    ///< a run directory (else a quantized model directory)
  std::string model_dir;  ///< the quantized model directory (absolute)
  nlohmann::json config = nlohmann::json::object();  ///< the run's config.json, or the settings
                                                     ///< of the model's quantization.json
};

/// Resolves `path`: a finished run directory (results.json written, model/ present) or a
/// quantized model directory (quantization.json). Errors say what is missing: a run that did
/// not finish (no results.json), a run without a quantized model (the fp method), a directory
/// that is neither.
ExportSource resolve_export_source(const std::string& path);

/// The default output directory: <run>/export for a run, <model dir>-export otherwise.
std::string default_export_dir(const ExportSource& source);

/// Exports `source` (resolve_export_source) into `out_dir` as `opts` says; returns the manifest
/// written. Throws mq::Error (before writing anything) when a format cannot express the preset
/// (naming the site), when `out_dir` exists without opts.force, or when it is the source itself;
/// and (after removing the partial directory) when writing or the self-check fails.
ExportManifest export_model(const std::string& source, const std::string& out_dir,
                            const ExportOptions& opts);

}  // namespace mq
