// mobilequant/export/int_model.h
// The integer model of an export (docs/integer-model.md): int/manifest.json and
// int/model.safetensors, every weight as integer codes with its scale and zero-point, every
// activation site's encoding, the fixed-point multipliers and shifts of every requantization,
// and the lookup tables of the non-linearities, so that an integer engine (runtime/) runs the
// prefill without floating point until the logits.
//
// The tables are built from the folded simulated model and its EncodingTable (the same
// integer offsets every other format exports), in the simulation's own fp32 arithmetic where
// the simulation defines the value (weight codes, the sigmoid table), in double elsewhere.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "mobilequant/config/model_config.h"
#include "mobilequant/core/tensor_map.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/export/encoding_table.h"
#include "mobilequant/runtime/fixed_point.h"

namespace mq {

class QuantizedModelImpl;
struct ExportManifest;
struct CheckFinding;

/// The integer model's directory inside an export.
inline constexpr const char* kIntModelDir = "int";
/// Its manifest and tensor file.
inline constexpr const char* kIntManifestFile = "manifest.json";
inline constexpr const char* kIntTensorsFile = "model.safetensors";
/// The manifest's "format" and "version".
inline constexpr const char* kIntFormatName = "mobilequant-int";
inline constexpr int64_t kIntFormatVersion = 6;

/// The most fraction bits of an RMSNorm eps term (docs/integer-model.md, "Tensors").
inline constexpr int32_t kEpsTermMaxShift = 48;

/// The most fraction bits of the softmax's exponential table: past 52 bits the double
/// exp() that builds it carries no more.
inline constexpr int32_t kExpLutMaxBits = 52;

/// Fraction bits F of the softmax's exponential table for rows of up to `max_positions`
/// scores: the largest F <= kExpLutMaxBits with max_positions * 2^F <= 2^62, so that a row's
/// sum of exponentials fits in 62 bits (docs/integer-model.md, step 2.6). Throws when F would
/// be below 30 (more than 2^32 positions).
int32_t exp_lut_bits(int64_t max_positions);

/// The softmax's exponential table: round(2^bits exp(-k step)) for k = 0 .. size - 1, where
/// step = s(qk_bmm.output) / sqrt(D) is the real distance between two score codes.
std::vector<int64_t> exp_lut(double step, int64_t size, int32_t bits);

/// An RMSNorm's eps term e = eps * C / s_in^2 (in squared input codes) in fixed point:
/// e ~ value * 2^-shift, shift the largest in [0, kEpsTermMaxShift] with value < 2^62.
struct EpsTerm {
  int64_t value = 0;  ///< >= 0
  int32_t shift = 0;  ///< fraction bits, in [0, kEpsTermMaxShift]
};

/// The fixed-point form of e (finite, >= 0); throws naming `what` when e >= 2^62.
EpsTerm to_eps_term(double e, const std::string& what);

/// A real multiplier m in fixed point: m ~ multiplier * 2^-shift, |multiplier| in
/// [2^62, 2^63) (0 when m is 0), shift >= 32 (a residual add's may be down to -30: a left
/// shift) (docs/integer-model.md, "Requantization").
struct FixedPoint {
  int64_t multiplier = 0;  ///< signed
  int32_t shift = 32;      ///< >= min_shift of to_fixed_point (32 unless said)
  /// The real value it represents.
  long double value() const;
};

// The shift limits and the multiplier range: one definition, the runtime's
// (runtime/fixed_point.h).
using rt::kMaxShift;
using rt::kMinShift;
using rt::kResidualAddMinShift;
using rt::multiplier_in_range;

/// m as a FixedPoint with shift >= min_shift, M the 63-bit rounding of m's mantissa (m is
/// computed in long double, so that M carries 62 correct bits). Throws mq::Error naming `what`
/// when m is not finite or too large for that (|m| >= 2^(63 - min_shift)). Values below 2^-95
/// become 0.
FixedPoint to_fixed_point(long double m, const std::string& what, int32_t min_shift = kMinShift);

/// A block operator's requantization (docs/integer-model.md, "the other operators").
struct IntOpMultiplier {
  std::string name;       ///< tensor prefix inside the block, e.g. "self_attn.qk_bmm"
  long double value;      ///< the real multiplier m
  int32_t min_shift = kMinShift;  ///< the smallest shift it may take (< 1: a left shift, residual adds)
};

/// The residual stream: int64 codes at a power-of-two scale s_r = 2^(e - kResidualHeadroomBits)
/// for the bound B <= 2^e, so |r| <= 2^61 and every residual add (an fp32 scale over s_r) is
/// exact (docs/integer-model.md, "The residual stream").
inline constexpr int kResidualHeadroomBits = 61;
/// The final norm reads the residual shifted right by this many bits (int32 values).
inline constexpr int kFinalNormShift = 31;
/// The fraction bits of the rotary tables: round(2^62 cos), round(2^62 sin) (I64).
inline constexpr int kRopeFractionBits = 62;

/// The operator multipliers of one block from its activation scales `s` (per site) and the
/// residual scale `s_r`: the writer stores them, the linter recomputes them.
std::vector<IntOpMultiplier> int_block_op_multipliers(
    const std::function<long double(ActSite)>& s, long double s_r);

/// The activation site a linear weight site reads and the one it writes.
std::pair<ActSite, ActSite> int_linear_io(WeightSite site);

/// Throws mq::Error naming the site when the integer model cannot express `quant`: the
/// enabled activation sites must be exactly the reference sites (SiLU models: with
/// mlp.act_fn.input2), per tensor; linear weights of at most 8 bits per tensor or per channel;
/// norm weights per tensor of at most 16 bits.
void check_int_model_expressible(const QuantConfig& quant);

/// Throws mq::Error naming the field when the integer model cannot express the architecture:
/// it needs RMSNorm (w * x / rms), SiLU, full rotary embeddings, no biases, unscaled
/// embeddings, and an even head dimension.
void check_int_model_supported(const ModelConfig& cfg);

/// Lints the integer model of the export in `export_dir` (manifest `m`): tensors present with
/// the documented dtype and shape, codes within their bits, zero-points in range, multipliers
/// reproducing their real values, and (given `hf`, the export's hf/ tensors) weight codes that
/// dequantize to exactly the simulated weights. Appends findings (export_check.h).
void check_int_model_files(const std::string& export_dir, const ExportManifest& m,
                           const TensorMap* hf, std::vector<CheckFinding>& findings);

/// Writes `dir`/manifest.json and `dir`/model.safetensors (`dir` is created) for the folded
/// model `qm` whose encodings are `table` (build_encoding_table(qm)). `preset` names the
/// quantization for the manifest. Checks expressibility first (errors name the site).
void write_int_model(const std::string& dir, QuantizedModelImpl& qm, const EncodingTable& table);

}  // namespace mq
