// mobilequant/export/onnx_qdq.h
// The ONNX QDQ export (docs/onnx.md; ecosystem.md §1b): the full prefill graph of a folded
// LLaMA-family QuantizedModel as an ONNX model whose every quantized tensor is a
// QuantizeLinear -> DequantizeLinear pair (activations) or an integer initializer followed by
// DequantizeLinear (weights), with the encodings of the export's EncodingTable. Between the
// pairs the float ops mirror models/decoder.cpp's hooked forward one for one, so ONNX Runtime
// (graph optimizations off) computes the simulated model's logits up to fp32 operation order.
//
//   input   input_ids  int64 [1, T]   (T symbolic, "T"; T <= OnnxOptions::max_positions)
//   output  logits     float [1, T, V]
//
// Conventions:
//   activation  Q/DQ per tensor in the unsigned domain: uint4/uint8/uint16 codes
//               u = q - qmin, zero_point = -offset_aimet (EncodingTable) = o - qmin. A range
//               whose zero-point is no code of that container (ranges_excluding_zero: it does
//               not contain 0, e.g. a sigmoid range starting above 0) is written as Q/DQ with
//               zero_point 0 in the next wider container (uint16 or int16) followed by a
//               float Clip to the site's [lo*s, hi*s]: the same values, bit for bit.
//   weight      the simulated weight quantizer's own codes (quantize() of qparams()):
//               asymmetric -> uint4/uint8/uint16 with zero_point = o; symmetric -> int4/int8/
//               int16 with zero_point 0; per tensor (scalar scale) or per output channel.
//               Linear weights are stored transposed, [in, out], with DequantizeLinear axis=1,
//               so that MatMul(x, W^T) needs no Transpose. 4-bit codes are packed two per byte,
//               first element in the low nibble. A weight whose zero-point is no code of its
//               container (RMSNorm weights are all positive: their range excludes 0) is
//               stored as int32 values q - o with no zero-point (DequantizeLinear's int32
//               form): (q - o) * s exactly as the simulation computes it.
//   names       every quantized float tensor carries its encoding name ("model.layers.0.
//               self_attn.qk_bmm.input2"), weights their "<module>.weight" (the AIMET files'
//               names, encoding_table.h); "<name>_scale", "<name>_zero_point", "<name>_q",
//               "<name>_dq" for the Q/DQ operands and results.
//   opset       13 when every quantized tensor is 8-bit (and every activation zero-point fits
//               uint8); else 21, the first opset with uint16/int16 and uint4/int4 Q/DQ.
#pragma once

#include <cstdint>
#include <string>

#include "mobilequant/config/model_config.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/export/encoding_table.h"

namespace mq {

class QuantizedModelImpl;

/// The ONNX model's path inside an export directory.
constexpr const char* kOnnxModelFile = "onnx/model.onnx";

/// Options of the ONNX QDQ export.
struct OnnxOptions {
  /// Longest sequence the graph accepts (length of its RoPE tables); 0: the model's
  /// max_position_embeddings.
  int64_t max_positions = 0;
  /// The ai.onnx opset: 0 picks onnx_opset_for(quant, table); 13 or 21 otherwise (an opset
  /// below the one the encodings need is an error naming the site).
  int64_t opset = 0;
  /// ModelProto.producer_version, e.g. the git revision of the export.
  std::string producer_version;
};

/// Throws mq::Error naming the first site a QDQ graph cannot express: a per_group weight, a
/// per_channel activation, an enabled site with bits other than 4, 8 or 16. Needs no model.
void check_onnx_expressible(const QuantConfig& quant);

/// Throws mq::Error naming what the ONNX graph builder does not support in `cfg`: only the
/// LLaMA family (RMSNorm, SiLU, full rotary, no embedding scale) is built.
void check_onnx_model(const ModelConfig& cfg);

/// The ai.onnx opset `quant` needs: 13 when every enabled site is 8-bit, else 21 (uint16/int16
/// and uint4/int4 QuantizeLinear/DequantizeLinear). check_onnx_expressible first.
int64_t onnx_opset_for(const QuantConfig& quant);

/// onnx_opset_for(quant), raised to 21 when an 8-bit activation range of `table` has no uint8
/// zero-point (its wider-container form needs uint16/int16).
int64_t onnx_opset_for(const QuantConfig& quant, const EncodingTable& table);

/// The .onnx bytes of `qm` (folded: no LWC bounds, equivalent-transform scales all 1; on any
/// device) with the encodings of `table` (build_encoding_table(qm)). Checks
/// check_onnx_expressible and check_onnx_model; throws mq::Error naming the site when the
/// table and the model disagree (a weight's scale), an activation range cannot be expressed
/// at the opset, or the model would reach protobuf's 2 GiB limit.
std::string onnx_qdq_model_bytes(const QuantizedModelImpl& qm, const EncodingTable& table,
                                 const OnnxOptions& opts);

}  // namespace mq
