// mobilequant/export/aimet_encodings.h
// AIMET quantization encodings (ecosystem.md §1a) for QNN's `--quantization_overrides`,
// versions 0.6.1 and 1.0.0, written from the encoding table (encoding_table.h: convention
// real = scale * (q + offset), min = offset * scale, max = min + scale * (2^b - 1), exactly).
//
// 0.6.1, layer-keyed (the `*_torch.encodings` layout the MobileQuant authors edit):
//   {"version": "0.6.1",
//    "activation_encodings": {"model.layers.0.self_attn.qk_bmm":
//        {"input": {"0": enc, "1": enc}, "output": {"0": enc}}, ...},     input2 -> input "1"
//    "param_encodings": {"model.layers.0.mlp.w2.weight": [enc, enc, ...], ...},  one per channel
//    "excluded_layers": [], "quantizer_args": {...}}
//   enc = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "max": .., "min": ..,
//          "offset": -114, "scale": ..};  a float site: {"bitwidth": 32, "dtype": "float"}
// 1.0.0, tensor-keyed lists (aimet_torch v2 `_export_to_1_0_0`):
//   {"version": "1.0.0",
//    "activation_encodings": [{"name": "model.layers.0.self_attn.qk_bmm.input2", "dtype": "INT",
//        "enc_type": "PER_TENSOR", "bw": 8, "is_sym": false, "scale": [..], "offset": [..]}],
//    "param_encodings": [{"name": "model.layers.0.mlp.w2.weight", "dtype": "INT",
//        "enc_type": "PER_CHANNEL", "bw": 8, "is_sym": false, "scale": [..], "offset": [..]}],
//    "excluded_layers": [], "quantizer_args": {...}}
//   a float site: {"name": .., "dtype": "FLOAT", "enc_type": "PER_TENSOR", "bw": 32}
// Names are the reference's module names (encoding_table.h); an ONNX exporter names its graph
// tensors the same way so that these files apply to it unchanged.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "mobilequant/config/quant_config.h"
#include "mobilequant/export/encoding_table.h"

namespace mq {

/// The 0.6.1 file's name.
constexpr const char* kAimet061File = "encodings_0.6.1.json";
/// The 1.0.0 file's name.
constexpr const char* kAimet100File = "encodings_1.0.0.json";

/// Smallest bit-width an AIMET encoding holds.
constexpr int64_t kAimetMinBits = 4;

/// Throws mq::Error naming the site when `quant` cannot be written as AIMET encodings: a
/// bit-width below 4 (AIMET's range is 4..32), per-group weights (0.6.1 has no block
/// encodings), per-channel activations (QNN's activation encodings are per tensor).
void check_aimet_expressible(const QuantConfig& quant);

/// The 0.6.1 encodings; float sites get {"bitwidth": float_bits, "dtype": "float"}.
nlohmann::ordered_json aimet_encodings_v061(const EncodingTable& table, const QuantConfig& quant,
                                            int64_t float_bits);
/// The 1.0.0 encodings.
nlohmann::ordered_json aimet_encodings_v100(const EncodingTable& table, const QuantConfig& quant,
                                            int64_t float_bits);

/// The 0.6.1 location of an activation field: input -> ("input", "0"), input2 -> ("input",
/// "1"), output -> ("output", "0").
std::pair<std::string, std::string> aimet_io_slot(const std::string& field);

}  // namespace mq
