// mobilequant/export/export_check.h
// The export linter (`mobilequant export --check DIR`): verifies an export directory on its
// own, from export.json and the files, without the run or model it came from. Each finding
// names the rule, the file, the key (site, tensor or JSON key), what was expected and what was
// found. Rules (docs/export.md lists them with examples):
//
//   manifest       export.json is missing, not JSON, or lacks a key; a format's file is not listed
//   missing_file   a file the manifest lists is not there
//   checksum       a file's size or SHA-256 differs from the manifest (truncated or edited)
//   unlisted_file  a file in the directory that the manifest does not list
//   json           a JSON file does not parse
//   schema         a file's structure is wrong (version string, types, keys of an entry)
//   coverage       a quantized site has no encoding, more than one, or an encoding names no site
//   scale          a scale is not finite and positive
//   offset         an offset is not an integer or does not fit the bit-width
//   bitwidth       bit-width, dtype or symmetry disagrees with the site's spec
//   minmax         min/max disagree with scale/offset (min = offset*scale, max = min +
//                  scale*(2^b-1)), or a range is not finite with min <= max
//   shape          entries per tensor differ from the model's channels; HF tensor shapes
//                  differ from the manifest's
//   cross_file     two files disagree (0.6.1 vs 1.0.0, act_dict vs AIMET, default_qcfg vs the
//                  manifest's quant config, hf/config.json layers vs the manifest)
//   weights        a weight encoding differs from the one the exported weights give; integer
//                  weight codes do not dequantize to exactly the simulated weights
//   requant        an integer model's fixed-point multiplier is out of range or does not
//                  reproduce its real value (int_model.h)
#pragma once

#include <string>
#include <vector>

#include "mobilequant/config/field_visitor.h"

namespace mq {

/// A linter rule.
enum class CheckRule {
  kManifest,      ///< "manifest"
  kMissingFile,   ///< "missing_file"
  kChecksum,      ///< "checksum"
  kUnlistedFile,  ///< "unlisted_file"
  kJson,          ///< "json"
  kSchema,        ///< "schema"
  kCoverage,      ///< "coverage"
  kScale,         ///< "scale"
  kOffset,        ///< "offset"
  kBitwidth,      ///< "bitwidth"
  kMinMax,        ///< "minmax"
  kShape,         ///< "shape"
  kCrossFile,     ///< "cross_file"
  kWeights,       ///< "weights"
  kRequant,       ///< "requant"
};
/// The rule's name, e.g. "minmax".
const char* to_string(CheckRule r);
/// Every CheckRule.
template <>
struct EnumValues<CheckRule> {
  /// Every CheckRule.
  static const std::vector<CheckRule>& values();
};

/// One problem in an export.
struct CheckFinding {
  CheckRule rule = CheckRule::kSchema;  ///< which rule
  std::string file;      ///< relative path in the export ("aimet/encodings_0.6.1.json")
  std::string key;       ///< site, tensor or JSON key ("model.layers.0.mlp.w2.weight[3]")
  std::string message;   ///< what is wrong
  std::string expected;  ///< what the rule wants ("" when not a value)
  std::string actual;    ///< what was found
  /// "[rule] file: key: message (expected E, got A)".
  std::string str() const;
};

/// Lints the export directory `dir`. An empty result means the export is valid.
std::vector<CheckFinding> check_export(const std::string& dir);

/// One line per finding.
std::string format_findings(const std::vector<CheckFinding>& findings);

}  // namespace mq
