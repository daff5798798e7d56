// mobilequant/export/export_options.h
// What `mobilequant export` is asked to write: which formats, how float sites are marked,
// whether an existing directory may be replaced, and who asked (for the manifest). Parsed at
// the edge (cli/export_command.cpp); the export code sees enums, never strings.
//
// Formats today (docs/export.md):
//   hf         hf/config.json + hf/model.safetensors: the folded float model (for transformers)
//   reference  reference/act_dict.json + reference/default_qcfg.json: the authors' files
//   aimet      aimet/encodings_0.6.1.json + aimet/encodings_1.0.0.json: QNN quantization overrides
//   int        int/manifest.json + int/model.safetensors: the integer model (docs/integer-model.md)
//   onnx       onnx/model.onnx: the prefill graph in QDQ form, written from C++ (docs/onnx.md)
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/config/field_visitor.h"

namespace mq {

/// One output format of an export.
enum class ExportFormat {
  kHf,         ///< "hf": the folded float model as a Hugging Face directory
  kReference,  ///< "reference": act_dict.json + default_qcfg.json (the authors' schema)
  kAimet,      ///< "aimet": AIMET encodings, versions 0.6.1 and 1.0.0
  kInt,        ///< "int": the integer model (docs/integer-model.md)
  kOnnx,       ///< "onnx": the full prefill graph in ONNX QDQ form (docs/onnx.md)
};
/// "hf", "reference", "aimet", "int" or "onnx".
const char* to_string(ExportFormat f);
/// Streams the name (for messages and test output).
inline std::ostream& operator<<(std::ostream& os, ExportFormat f) { return os << to_string(f); }
/// Every ExportFormat, for parse_enum and allowed-set messages.
template <>
struct EnumValues<ExportFormat> {
  /// Every ExportFormat, in the order exports list them.
  static const std::vector<ExportFormat>& values();
};

/// Parses a comma list ("hf,aimet"); "" or "all" gives every format. Unknown names and
/// repeats are errors naming `where`, the value and the allowed set. The result is in
/// EnumValues order.
std::vector<ExportFormat> parse_export_formats(const std::string& list, const std::string& where);

/// Settings of one export.
struct ExportOptions {
  std::vector<ExportFormat> formats = EnumValues<ExportFormat>::values();  ///< what to write
  /// True when `formats` is the default "all": a format that cannot express the preset or
  /// the model (int, onnx) is then left out with a note instead of failing the export.
  bool all_formats = true;
  bool force = false;        ///< replace an existing output directory
  int64_t float_bits = 32;   ///< bit-width of the AIMET float entries of float sites (16 or 32)
  bool self_check = true;    ///< lint the export before moving it into place (export_check.h)
  /// Who and what wrote the export (git revision, command line, time): copied into the
  /// manifest as "provenance". The CLI fills it; the library never asks git itself.
  nlohmann::json provenance = nlohmann::json::object();

  /// True if `f` is among `formats`.
  bool has(ExportFormat f) const;
  /// Throws mq::Error naming the option (no formats; float_bits not 16 or 32).
  void validate() const;
};

}  // namespace mq
