// mobilequant/export/reference_files.h
// The MobileQuant authors' two quantization files (reference-implementation.md §6.1), which
// their tools read (eval/harness_eval.py --mode custom, device/utils.py):
//
//   act_dict.json      {"<module>": {"input": [min, max], "input2": [...], "output": [...]}}
//                      one entry per module that has an activation quantizer in the reference
//                      (q/k/v/o_proj, qk_bmm, pv_bmm, w1/w3/w2, act_fn, both norms); a field
//                      only where the site is quantized. min/max follow the reference's
//                      compute_min_max_from_scale_offset: min = -o*s, max = s*(2^b-1) + min;
//                      symmetric: max = s*(2^(b-1)-1), min = -max. Written from the encoding
//                      table (so they equal the AIMET min/max, asymmetric case).
//   default_qcfg.json  {"<module>": {"input"|"weight"|"output"|"input2": {"bitwidth": "8",
//                      "group_size": "-1", "is_symmetric": "False", "is_per_channel": "False",
//                      "is_dynamic": "False"}}}: every value a string, as QuantConfig.to_dict
//                      writes it; a float site is "bitwidth": "32" (the reference skips > 16).
//
// The reader turns both back into a QuantConfig and activation scales/offsets, computing the
// scale and offset from [min, max] in double: for ranges exported from calibrated (integral)
// offsets this gives back our fp32 scale and offset exactly, so the rebuilt model computes the
// same bits (tests/export/test_export_writer.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "mobilequant/config/quant_config.h"
#include "mobilequant/export/encoding_table.h"

namespace mq {

class QuantizedModelImpl;

/// act_dict.json's file name.
constexpr const char* kActDictFile = "act_dict.json";
/// default_qcfg.json's file name.
constexpr const char* kDefaultQcfgFile = "default_qcfg.json";

/// Throws mq::Error naming the site when `quant` cannot be written in the reference's files:
/// an enabled activation site where the reference has no quantizer (e.g. self_attn.q_proj.input,
/// resid_add_1.output, lm_head.output), or a per-channel activation (act_dict holds one
/// [min, max] per tensor).
void check_reference_expressible(const QuantConfig& quant);

/// act_dict.json from the encoding table (reference modules only).
nlohmann::ordered_json act_dict_json(const EncodingTable& table);
/// default_qcfg.json for `quant` on a model of `num_layers` blocks (`silu`: SiLU MLP).
nlohmann::ordered_json default_qcfg_json(const QuantConfig& quant, int64_t num_layers, bool silu);

/// The two files read back.
struct ReferenceFiles {
  QuantConfig quant;  ///< from default_qcfg.json (name "default_qcfg")
  /// From act_dict.json: qualified site name ("model.layers.0.mlp.w2.input") -> [min, max].
  std::map<std::string, std::pair<double, double>> ranges;
};

/// Reads act_dict.json and default_qcfg.json of a model with `num_layers` blocks. Every
/// reference module of every layer must be in default_qcfg.json, with the same spec at every
/// layer (our QuantConfig is one spec per site); every quantized activation site needs a
/// finite [min, max] with min <= max. Errors name the file, the key, what was expected and
/// what was found. Unknown modules and fields are errors.
ReferenceFiles read_reference_files(const std::string& act_dict_path,
                                    const std::string& default_qcfg_path, int64_t num_layers,
                                    bool silu);

/// The scale and offset that [min, max] encodes (the inverse of the reference's
/// compute_min_max_from_scale_offset), in double: asymmetric s = (max - min) / (2^b - 1),
/// o = -round(min / s); symmetric s = max(|min|, |max|) / (2^(b-1) - 1), o = 0. Unlike the
/// reference's compute_scale_offset_from_min_max, s is not clamped to [1e-5, 1e6]: a scale
/// learned below 1e-5 (range learning does not clamp) is the run's, and stays so.
std::pair<double, double> scale_offset_from_range(double min, double max, const QuantSpec& spec);

/// Sets every enabled activation quantizer of `qm` (whose config is files.quant) from the
/// ranges; throws naming `where` and the site when one is missing.
void apply_reference_ranges(QuantizedModelImpl& qm, const ReferenceFiles& files,
                            const std::string& where);

}  // namespace mq
