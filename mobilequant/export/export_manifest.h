// mobilequant/export/export_manifest.h
// export.json, the manifest at the root of an export directory: what was exported (formats),
// from what (the source run or model directory and its config), with which code (provenance:
// git revision, command line, time), the quantization config and model shape facts the linter
// checks the files against, and the size and SHA-256 of every other file in the directory.
//
//   {"format": "mobilequant-export", "format_version": 1,
//    "formats": ["hf", "reference", "aimet"],
//    "source": {"kind": "run", "path": ..., "model_dir": ..., "method": ..., "base_model": ...},
//    "config": {...}, "provenance": {"git_revision": ..., "command_line": ..., "created_at": ...},
//    "quant": {...resolved QuantConfig...},
//    "model": {"num_hidden_layers": 2, "silu": true, "norm_one_plus": false,
//              "weights": {"model.layers.0.mlp.w2.weight":
//                  {"hf_name": "model.layers.0.mlp.down_proj.weight", "shape": [64, 128]}}},
//    "float_bitwidth": 32, "ranges_excluding_zero": [...], "notes": [...],
//    "files": {"aimet/encodings_0.6.1.json": {"bytes": 1234, "sha256": "..."}, ...}}
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/config/quant_config.h"
#include "mobilequant/export/export_options.h"

namespace mq {

/// The manifest's file name.
constexpr const char* kExportManifestFile = "export.json";
/// The "format" value of a manifest.
constexpr const char* kExportFormatName = "mobilequant-export";
/// The manifest layout version this code writes and reads.
constexpr int64_t kExportFormatVersion = 1;

/// A file of the export: its size and checksum.
struct ExportedFile {
  int64_t bytes = 0;   ///< size
  std::string sha256;  ///< 64 lowercase hex digits
};

/// A quantized weight as the model holds it.
struct ExportedWeight {
  std::string hf_name;         ///< e.g. "model.layers.0.mlp.down_proj.weight"
  std::vector<int64_t> shape;  ///< [out, in] or [C]
};

/// export.json.
struct ExportManifest {
  std::vector<ExportFormat> formats;       ///< what the directory holds
  nlohmann::json source = nlohmann::json::object();      ///< the run / model directory read
  nlohmann::json config = nlohmann::json::object();      ///< its config
  nlohmann::json provenance = nlohmann::json::object();  ///< git revision, command line, time
  QuantConfig quant;                       ///< every site's spec
  int64_t num_layers = 0;                  ///< decoder blocks
  bool silu = true;                        ///< SiLU MLP (mlp.act_fn.input2 is a site)
  bool norm_one_plus = false;              ///< gemma: the norm weights' encodings are of 1 + w
  /// Reference weight name ("model.layers.0.mlp.w2.weight") -> HF name and shape.
  std::map<std::string, ExportedWeight> weights;
  int64_t float_bitwidth = 32;             ///< AIMET float entries' bit-width
  std::vector<std::string> ranges_excluding_zero;  ///< encoding_table.h
  std::vector<std::string> notes;          ///< what the export changed or could not keep
  std::map<std::string, ExportedFile> files;  ///< relative path -> size and checksum
};

/// The files a format writes, relative to the export directory ("hf/config.json", ...).
std::vector<std::string> export_format_files(ExportFormat f);

/// The manifest as JSON.
nlohmann::ordered_json export_manifest_json(const ExportManifest& m);
/// Parses a manifest; errors name `where` (the file) and the key.
ExportManifest export_manifest_from_json(const nlohmann::json& j, const std::string& where);
/// Reads `dir`/export.json; errors name the file and the key.
ExportManifest read_export_manifest(const std::string& dir);
/// Writes `dir`/export.json (atomically).
void write_export_manifest(const std::string& dir, const ExportManifest& m);

/// Records the size and SHA-256 of every file under `dir` except export.json in m.files.
void stamp_checksums(const std::string& dir, ExportManifest& m);
/// Checks every file m.files lists against its size and checksum (the loader's check); throws
/// mq::Error naming the file: missing, truncated/grown (size), or edited (checksum).
void verify_export_files(const std::string& dir, const ExportManifest& m);

}  // namespace mq
