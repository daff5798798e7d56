// mobilequant/export/encoding_table.h
// The one internal table every exported quantization file is written from (ecosystem.md §1f):
// per quantizer site of the model, its spec and its scale/offset per channel, in AIMET's
// convention. The reference files (reference_files.h) and the AIMET encodings
// (aimet_encodings.h) are two renderings of it; the linter (export_check.h) rebuilds the list
// of sites from the manifest alone and checks every file against it.
//
// Conventions. Our quantizers (quant/primitives.h) compute x^ = (q - o) * s with codes
// q in [qmin, qmax] ([0, 2^b-1], or [-2^(b-1), 2^(b-1)-1] when symmetric). AIMET and QNN store
// codes u = q - qmin in an unsigned container and compute real = s * (u + offset), so
//   offset_aimet = qmin - o      (asymmetric: -o; symmetric: -2^(b-1))
//   min = offset_aimet * s,  max = min + s * (2^b - 1)
// computed in double from the fp32 scale: exact (a 24-bit mantissa times an integer below 2^30
// fits a double), so min, max, scale and offset agree with each other to the last bit. The
// reference's own converter (device/utils.py::update_encodings_from_min_max) instead computes
// offset = int(min * qmax / (max - min)), which truncates toward zero, and writes back the
// unadjusted min/max, so its four fields can disagree (ecosystem.md §0). A learned activation
// offset that drifted off-integer (range learning, §3.2) is rounded to the nearest integer,
// the grid a device can hold; the export notes each site where that changed the offset.
//
// Names: the reference's module names (quant_sites.h, act_dict keys):
//   activation  "<module>.<field>"   e.g. "model.layers.0.self_attn.qk_bmm.input2"
//   weight      "<module>.weight"    e.g. "model.layers.0.mlp.w2.weight" (HF: mlp.down_proj.weight)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/config/quant_config.h"
#include "mobilequant/config/quant_sites.h"
#include "mobilequant/config/quant_spec.h"

namespace mq {

class QuantizedModelImpl;

/// One tensor an export describes: a quantized site, or a site the preset leaves in float.
struct ExportSite {
  int64_t layer = 0;                   ///< block index; -1 for model-level activation sites
  bool is_param = false;               ///< a weight site (else an activation site)
  ActSite act = ActSite::kCount;       ///< the activation site (when !is_param)
  WeightSite weight = WeightSite::kCount;  ///< the weight site (when is_param)
  QuantSpec spec;                      ///< the preset's spec; !spec.enabled: a float site
  std::string module;                  ///< reference module, "model.layers.0.self_attn.qk_bmm"
  std::string field;                   ///< "input", "input2", "output" or "weight"

  /// "<module>.<field>": the tensor's name in the encodings and the act_dict field path.
  std::string tensor_name() const { return module + "." + field; }
};

/// Every site an export of `quant` on a model of `num_layers` blocks describes, block by block
/// in site order, then the model-level sites: each enabled activation site; each disabled
/// reference activation site (is_reference_site) as a float site (the other disabled sites
/// repeat a tensor that is already described, or are outside the reference's quantized graph);
/// every weight site (float when disabled). `silu`: the model's MLP has SiLU, whose sigmoid is a
/// site (mlp.act_fn.input2).
std::vector<ExportSite> export_sites(const QuantConfig& quant, int64_t num_layers, bool silu);

/// A site's encoding in AIMET's convention (see the file comment).
struct SiteEncoding {
  ExportSite site;              ///< which tensor
  std::vector<double> scale;    ///< one per channel or group, 1 per tensor; empty for float
  std::vector<int64_t> offset;  ///< AIMET offset per entry (qmin - o)
  /// min of entry i: offset * scale.
  double min(size_t i) const { return static_cast<double>(offset[i]) * scale[i]; }
  /// max of entry i: min + scale * (2^bits - 1).
  double max(size_t i) const;
};

/// The encodings of a folded quantized model, and what the export should tell about them.
struct EncodingTable {
  std::vector<SiteEncoding> entries;  ///< in export_sites order
  /// Tensor names whose range does not contain zero (offset > 0 or below -(2^b-1)): the grid
  /// is exported as it is (QNN's offsets are int32), but zero is not a code there. Typically
  /// RMSNorm weights, which are all positive.
  std::vector<std::string> ranges_excluding_zero;
  std::vector<std::string> notes;  ///< e.g. learned offsets rounded to integers
};

/// Reads every site's scale and offset from `qm` (which must be folded: no LWC bounds, as a
/// saved quantized model is; throws otherwise). Weights: WeightFakeQuantizer::qparams of the
/// folded weight (1 + w for a gemma norm), per tensor, channel or group as the spec says.
/// Activations: the quantizer's learned scale and offset. Throws mq::Error naming the site
/// when an activation quantizer was never calibrated or a scale is not finite and positive.
EncodingTable build_encoding_table(QuantizedModelImpl& qm);

/// 2^bits - 1 as a double.
double code_span(int64_t bits);

}  // namespace mq
