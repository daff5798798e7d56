// mobilequant/quant/fake_quantizer.h
// The two learnable fake quantizers of MobileQuant (reference-implementation.md §2, §3.2):
//
//   WeightFakeQuantizer  the weight's own min/max, recomputed from the current (transformed)
//                        weight at every call, optionally scaled by learnable weight clipping
//                        (LWC: sigmoid of two bounds initialised at 4.0), then fake-quantized.
//   ActFakeQuantizer     static range (per tensor, or per channel of the last dim): a learnable
//                        scale and offset (activation range learning, ARL/"LRL"), initialised
//                        from calibration min/max, frozen unless made learnable.
//
// Both are LibTorch modules whose parameters carry the reference's names
// (`upbound_factor`/`lowbound_factor`, `scale`/`offset`), so state dicts and exports line up.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/config/quant_spec.h"
#include "mobilequant/quant/primitives.h"
#include "mobilequant/quant/weight_transform.h"

namespace mq {

/// Initial value of both LWC bounds (sigmoid(4.0) = 0.982).
constexpr double kLwcInit = 4.0;

/// Options of a WeightFakeQuantizer.
struct WeightFakeQuantizerOptions {
  /// `spec` of the site; `shape` of the weight ([out, in], or [C] for a norm); `name` for errors.
  WeightFakeQuantizerOptions(QuantSpec spec, std::vector<int64_t> shape, std::string name)
      : spec_(spec), shape_(std::move(shape)), name_(std::move(name)) {}
  TORCH_ARG(QuantSpec, spec);
  TORCH_ARG(std::vector<int64_t>, shape);
  TORCH_ARG(std::string, name);
};

/// Fake quantization of a weight with optional learnable weight clipping (§2).
class WeightFakeQuantizerImpl : public torch::nn::Module {
 public:
  /// Validates the spec against the shape (bits 2..16, group size divides the input dim; 1-D
  /// weights per tensor only; 1-D or 2-D shapes only) when the spec is enabled; errors name the
  /// quantizer.
  explicit WeightFakeQuantizerImpl(WeightFakeQuantizerOptions options);
  /// w (shape of the options) -> fake-quantized w (same shape, dtype). Identity when the spec
  /// is disabled. With LWC: max *= sigmoid(upbound_factor), min *= sigmoid(lowbound_factor).
  torch::Tensor forward(const torch::Tensor& w);
  /// forward(transform_weight(w, t)) in `out_dtype` (fp32, or bf16 as a cast rounds): the LET
  /// transform taken into the quantizer. On CUDA, for a 2-D fp32 weight that needs no gradient,
  /// per tensor or per channel, one fused pass each way (fused_weight_quantize.h); elsewhere the
  /// composed ops and a cast. The same values either way; differentiable in t's factors, the
  /// LWC bounds and (composed path) w.
  torch::Tensor forward_transformed(const torch::Tensor& w, const WeightTransform& t,
                                    torch::ScalarType out_dtype);
  /// The integer export's quantization of `w`: the parameters (fp32, [1], [out, 1] or
  /// [groups, 1]) and the codes in [qmin, qmax] (int32, shaped as w), both computed from w
  /// rounded to fp32, in fp32. Under no-grad. Requires an enabled spec and integral offsets.
  std::pair<QParams, torch::Tensor> export_codes(const torch::Tensor& w) const;
  /// forward(w) as the integer export quantizes: export_codes(w), then (q - offset) * scale
  /// in w's dtype, exact in fp64. An fp64 model so runs on the export's own codes (its fp64 arithmetic
  /// would otherwise move the codes whose w / scale lands near a rounding tie). Under no-grad;
  /// identity when the spec is disabled. w: shape of the options -> same shape and dtype.
  torch::Tensor forward_export_codes(const torch::Tensor& w) const;
  /// Registers `upbound_factor` and `lowbound_factor` (shape [1], [out, 1] or [groups, 1]),
  /// both `init`, learnable, fp32 on the CPU (module->to() moves them; forward also moves a
  /// copy to the weight's device and dtype, keeping the gradient). Calling it again resets
  /// them. Does nothing when the spec is disabled (a float site has no range to clip).
  void enable_lwc(double init = kLwcInit);
  /// Removes the LWC bounds from the module's parameters (after folding, the clipped weight
  /// carries them).
  void disable_lwc();
  /// True while LWC bounds exist.
  bool lwc_enabled() const { return upbound_factor.defined(); }
  /// The quantization parameters for weight `w` (with the clipping bounds if enabled), shaped
  /// to broadcast against grouped_weight(w): [1], [out, 1] or [groups, 1]; fp32 (fp64 for an
  /// fp64 weight). Differentiable in w and the bounds through the scale.
  QParams qparams(const torch::Tensor& w) const;
  /// `w` clamped to its LWC range [min * sigmoid(low), max * sigmoid(up)] per group (§1.4:
  /// what the reference writes into the folded weight); `w` itself when LWC is off.
  torch::Tensor clip(const torch::Tensor& w) const;

  WeightFakeQuantizerOptions options;
  torch::Tensor upbound_factor;   ///< [groups, 1] or [1]; undefined without LWC
  torch::Tensor lowbound_factor;  ///< [groups, 1] or [1]; undefined without LWC

 private:
  /// Number of (scale, offset) pairs: 1, out, or out * in / group_size.
  int64_t num_groups() const;
  /// Min and max of `w` per group, with the LWC bounds applied if enabled (compute dtype).
  std::pair<torch::Tensor, torch::Tensor> clipped_min_max(const torch::Tensor& w) const;
  /// The sigmoids of the LWC bounds ([groups, 1] or [1]) in `opts`, differentiable in the
  /// bounds; both undefined without LWC.
  std::pair<torch::Tensor, torch::Tensor> lwc_sigmoids(const torch::TensorOptions& opts) const;
  /// Throws mq::Error naming the quantizer unless `w` has the shape of the options.
  void check_shape(const torch::Tensor& w) const;
};
TORCH_MODULE(WeightFakeQuantizer);

/// Options of an ActFakeQuantizer.
struct ActFakeQuantizerOptions {
  /// `spec` of the site; `name` (e.g. "model.layers.3.self_attn.qk_bmm.input2") for errors.
  ActFakeQuantizerOptions(QuantSpec spec, std::string name)
      : spec_(spec), name_(std::move(name)) {}
  TORCH_ARG(QuantSpec, spec);
  TORCH_ARG(std::string, name);
};

/// Static activation fake quantizer with learnable scale and offset (§3.2).
class ActFakeQuantizerImpl : public torch::nn::Module {
 public:
  /// Validates an enabled spec (bits 2..16; per_group is an error naming the site) and
  /// registers placeholder `scale` = 1 and `offset` = 0 of shape [], frozen.
  explicit ActFakeQuantizerImpl(ActFakeQuantizerOptions options);
  /// x [..., C] -> fake-quantized x (same shape and dtype). Identity when the spec is disabled.
  /// Throws mq::Error naming the site if the range was never set.
  torch::Tensor forward(const torch::Tensor& x);
  /// Sets scale and offset from a calibrated range (eq. 3-4, choose_qparams, under no-grad):
  /// one-element tensors per tensor (stored as []), [C] per channel. Same shape: values are
  /// copied in place (optimizers keep their parameters); a new shape replaces the registered
  /// parameters, keeping their dtype, device and learnability. Throws mq::Error naming the
  /// site when a bound is NaN/inf, min > max, or the shapes do not fit the spec.
  void set_range(const torch::Tensor& min, const torch::Tensor& max);
  /// The range the parameters represent (§3.4): min = -offset * scale,
  /// max = scale * (qmax - qmin) + min; symmetric: max = scale * qmax, min = -max.
  std::pair<torch::Tensor, torch::Tensor> range() const;
  /// True once set_range (or a load) gave the parameters values.
  bool initialized() const { return initialized_; }
  /// Makes scale and offset trainable (ARL) or frozen (the default); kept across set_range.
  void set_learnable(bool learnable);
  /// Sets scale and offset directly (loading a saved model); shapes must match the spec
  /// ([] or one element per tensor, [C] per channel), scale finite and > 0, offset finite.
  void set_qparams(const torch::Tensor& scale, const torch::Tensor& offset);

  ActFakeQuantizerOptions options;
  torch::Tensor scale;   ///< [] per tensor or [C] per channel, fp32, registered parameter
  torch::Tensor offset;  ///< same shape, fp32 (integral at init), registered parameter

 private:
  /// Writes new values into `scale` and `offset` (in place when the shape is unchanged, else by
  /// replacing the registered parameters) keeping their dtype, device and learnability.
  void assign(const torch::Tensor& scale, const torch::Tensor& offset);  // [] or [C] each

  bool initialized_ = false;
  bool learnable_ = false;
};
TORCH_MODULE(ActFakeQuantizer);

}  // namespace mq
