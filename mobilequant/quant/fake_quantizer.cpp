// mobilequant/quant/fake_quantizer.cpp
// WeightFakeQuantizer (weight min/max recomputed every call, learnable weight clipping, §2) and
// ActFakeQuantizer (static range with learnable scale/offset, §3.2). The arithmetic is
// primitives.cpp's; this file owns the parameters, their shapes and the error messages.
#include "mobilequant/quant/fake_quantizer.h"

#include <cmath>

#include "mobilequant/core/dtype.h"
#include "mobilequant/core/error.h"
#include "mobilequant/quant/fused_weight_quantize.h"

namespace mq {
namespace {

/// Registers `value` under `name`, or replaces the tensor already registered under it (LibTorch's
/// register_parameter throws on an existing name). Returns the registered handle.
torch::Tensor put_parameter(torch::OrderedDict<std::string, torch::Tensor>& params,
                            const std::string& name, torch::Tensor value, bool requires_grad) {
  value.set_requires_grad(requires_grad);
  if (torch::Tensor* slot = params.find(name)) {
    *slot = value;
    return *slot;
  }
  return params.insert(name, std::move(value));
}

/// "i (min a, max b)" for the first element of the 1-D/0-D mask that is set.
std::string first_bad(const torch::Tensor& bad, const torch::Tensor& mn, const torch::Tensor& mx) {
  const int64_t i = bad.flatten().nonzero()[0][0].item<int64_t>();
  return detail::str_cat("min ", mn.flatten()[i].item<double>(), ", max ",
                         mx.flatten()[i].item<double>(),
                         mn.dim() == 0 ? std::string() : detail::str_cat(" (channel ", i, ")"));
}

}  // namespace

// ---------------------------------------------------------------- WeightFakeQuantizerImpl

WeightFakeQuantizerImpl::WeightFakeQuantizerImpl(WeightFakeQuantizerOptions opts)
    : options(std::move(opts)) {
  const QuantSpec& spec = options.spec();
  const std::string& name = options.name();
  const std::vector<int64_t>& shape = options.shape();
  MQ_CHECK(shape.size() == 1 || shape.size() == 2, name, ": expected a 1-D ([C]) or 2-D ",
           "([out, in]) weight shape, got ", c10::IntArrayRef(shape));
  if (!spec.enabled) return;
  spec.validate(name);
  if (shape.size() == 1) {
    MQ_CHECK(spec.granularity == Granularity::kPerTensor, name, ": a 1-D weight of shape ",
             c10::IntArrayRef(shape), " is quantized per_tensor only, got ",
             to_string(spec.granularity));
  }
  if (spec.granularity == Granularity::kPerGroup) {
    MQ_CHECK(shape[1] % spec.group_size == 0, name, ": group_size ", spec.group_size,
             " does not divide the input dimension ", shape[1]);
  }
}

int64_t WeightFakeQuantizerImpl::num_groups() const {
  const std::vector<int64_t>& shape = options.shape();
  switch (options.spec().granularity) {
    case Granularity::kPerTensor: return 1;
    case Granularity::kPerChannel: return shape[0];
    case Granularity::kPerGroup: return shape[0] * shape[1] / options.spec().group_size;
  }
  throw make_error(options.name(), ": invalid granularity");
}

void WeightFakeQuantizerImpl::check_shape(const torch::Tensor& w) const {
  MQ_CHECK(w.defined(), options.name(), ": weight is undefined");
  MQ_CHECK(w.sizes() == c10::IntArrayRef(options.shape()), options.name(), ": weight of shape ",
           w.sizes(), ", but the quantizer was built for ", c10::IntArrayRef(options.shape()));
}

std::pair<torch::Tensor, torch::Tensor> WeightFakeQuantizerImpl::clipped_min_max(
    const torch::Tensor& w) const {
  const auto dtype = compute_dtype(w);
  // [1], [out, 1] or [groups, 1] each; recomputed from the current weight (§2)
  auto [mn, mx] = weight_min_max(w.to(dtype), options.spec());
  if (lwc_enabled()) {
    // §2: max *= sigmoid(upbound_factor), min *= sigmoid(lowbound_factor). `.to` is a no-op
    // unless the bounds live elsewhere; it keeps the gradient either way.
    const auto opts = mx.options();
    mx = torch::sigmoid(upbound_factor.to(opts)) * mx;   // [groups, 1] or [1]
    mn = torch::sigmoid(lowbound_factor.to(opts)) * mn;  // [groups, 1] or [1]
  }
  return {mn, mx};
}

std::pair<torch::Tensor, torch::Tensor> WeightFakeQuantizerImpl::lwc_sigmoids(
    const torch::TensorOptions& opts) const {
  if (!lwc_enabled()) return {};
  return {torch::sigmoid(upbound_factor.to(opts)), torch::sigmoid(lowbound_factor.to(opts))};
}

QParams WeightFakeQuantizerImpl::qparams(const torch::Tensor& w) const {
  check_shape(w);
  const QuantSpec& spec = options.spec();
  auto [mn, mx] = clipped_min_max(w);  // [groups, 1] or [1]
  return choose_qparams(mn, mx, spec.bits, spec.symmetric);
}

torch::Tensor WeightFakeQuantizerImpl::forward(const torch::Tensor& w) {
  const QuantSpec& spec = options.spec();
  if (!spec.enabled) return w;
  check_shape(w);
  const torch::Tensor wg = grouped_weight(w, spec);  // [groups, g]
  if (fused_weight_quantize_supported(wg)) {
    // CUDA fp32: the range, the clipping, the qparams and the fake quantization in one kernel
    // pass each way; the same values as the composed ops below.
    const auto [sig_up, sig_low] = lwc_sigmoids(wg.options());  // [groups, 1] or [1]
    return fused_weight_quantize(wg, sig_up, sig_low, spec.bits, spec.symmetric,
                                 spec.granularity != Granularity::kPerTensor)
        .reshape(w.sizes());  // [w]
  }
  const QParams p = qparams(w);                // scale/offset [groups, 1]
  return fake_quantize(wg, p).reshape(w.sizes());  // [w], w's dtype
}

torch::Tensor WeightFakeQuantizerImpl::forward_transformed(const torch::Tensor& w,
                                                           const WeightTransform& t,
                                                           torch::ScalarType out_dtype) {
  const QuantSpec& spec = options.spec();
  const bool fusable = spec.enabled && spec.granularity != Granularity::kPerGroup &&
                       (out_dtype == torch::kFloat32 || out_dtype == torch::kBFloat16);
  if (!fusable || !fused_weight_quantize_supported(w, t))
    return forward(transform_weight(w, t)).to(out_dtype);  // [w]
  check_shape(w);
  const auto [sig_up, sig_low] = lwc_sigmoids(w.options());  // [groups, 1] or [1]
  return fused_weight_quantize(w, t, sig_up, sig_low, spec.bits, spec.symmetric,
                               spec.granularity == Granularity::kPerChannel, out_dtype);  // [w]
}

std::pair<QParams, torch::Tensor> WeightFakeQuantizerImpl::export_codes(
    const torch::Tensor& w) const {
  const QuantSpec& spec = options.spec();
  MQ_CHECK(spec.enabled, "weight quantizer '", options.name(), "': no codes for a float site");
  torch::NoGradGuard no_grad;
  const torch::Tensor w32 = w.to(torch::kFloat32);  // [w]
  const QParams p = qparams(w32);                    // fp32 [groups, 1] or [1]
  return {p, quantize(grouped_weight(w32, spec), p).reshape(w.sizes())};  // [w] int32
}

torch::Tensor WeightFakeQuantizerImpl::forward_export_codes(const torch::Tensor& w) const {
  const QuantSpec& spec = options.spec();
  if (!spec.enabled) return w;
  torch::NoGradGuard no_grad;
  const auto [p, codes] = export_codes(w);                   // [groups, 1], [w]
  const torch::Tensor q = grouped_weight(codes, spec);       // [groups, g]
  QParams pw = p;
  pw.scale = p.scale.to(w.scalar_type());    // exact: widening an fp32 value
  pw.offset = p.offset.to(w.scalar_type());
  return dequantize(q, pw).reshape(w.sizes()).to(w.scalar_type());  // [w]
}

torch::Tensor WeightFakeQuantizerImpl::clip(const torch::Tensor& w) const {
  if (!lwc_enabled()) return w;
  check_shape(w);
  auto [mn, mx] = clipped_min_max(w);                                         // [groups, 1]
  const torch::Tensor wg = grouped_weight(w.to(compute_dtype(w)), options.spec());  // [groups, g]
  return torch::clamp(wg, mn, mx).reshape(w.sizes()).to(w.scalar_type());    // [w]
}

void WeightFakeQuantizerImpl::enable_lwc(double init) {
  if (!options.spec().enabled) return;  // a float site has no range to clip
  MQ_CHECK(std::isfinite(init), options.name(), ": LWC init must be finite, got ", init);
  const std::vector<int64_t> shape =
      options.spec().granularity == Granularity::kPerTensor
          ? std::vector<int64_t>{1}
          : std::vector<int64_t>{num_groups(), 1};
  upbound_factor = put_parameter(parameters_, "upbound_factor",
                                 torch::full(shape, init, torch::kFloat32), true);
  lowbound_factor = put_parameter(parameters_, "lowbound_factor",
                                  torch::full(shape, init, torch::kFloat32), true);
}

void WeightFakeQuantizerImpl::disable_lwc() {
  if (parameters_.contains("upbound_factor")) parameters_.erase("upbound_factor");
  if (parameters_.contains("lowbound_factor")) parameters_.erase("lowbound_factor");
  upbound_factor = torch::Tensor();
  lowbound_factor = torch::Tensor();
}

// ---------------------------------------------------------------- ActFakeQuantizerImpl

ActFakeQuantizerImpl::ActFakeQuantizerImpl(ActFakeQuantizerOptions opts)
    : options(std::move(opts)) {
  const QuantSpec& spec = options.spec();
  if (spec.enabled) {
    spec.validate(options.name());
    MQ_CHECK(spec.granularity != Granularity::kPerGroup, options.name(),
             ": granularity per_group is not supported for activations (expected per_tensor or ",
             "per_channel)");
  }
  // Placeholders until set_range / set_qparams: [] each, frozen.
  scale = register_parameter("scale", torch::ones({}, torch::kFloat32), false);
  offset = register_parameter("offset", torch::zeros({}, torch::kFloat32), false);
}

void ActFakeQuantizerImpl::assign(const torch::Tensor& new_scale, const torch::Tensor& new_offset) {
  torch::NoGradGuard no_grad;
  const auto opts = scale.options().requires_grad(false);
  if (new_scale.sizes() == scale.sizes()) {
    // In place: optimizers holding these parameters keep seeing them.
    scale.copy_(new_scale.to(opts));
    offset.copy_(new_offset.to(opts));
  } else {
    scale = put_parameter(parameters_, "scale", new_scale.to(opts).clone(), learnable_);
    offset = put_parameter(parameters_, "offset", new_offset.to(opts).clone(), learnable_);
  }
  initialized_ = true;
}

void ActFakeQuantizerImpl::set_range(const torch::Tensor& min, const torch::Tensor& max) {
  const QuantSpec& spec = options.spec();
  const std::string& name = options.name();
  MQ_CHECK(min.defined() && max.defined(), name, ": set_range got an undefined min or max");
  torch::NoGradGuard no_grad;
  torch::Tensor mn, mx;  // [] per tensor, [C] per channel
  if (spec.granularity == Granularity::kPerChannel) {
    MQ_CHECK(min.dim() == 1 && min.numel() > 0 && min.sizes() == max.sizes(), name,
             ": per_channel range expects min and max of one shape [C], got ", min.sizes(),
             " and ", max.sizes());
    mn = min.to(torch::kFloat32);
    mx = max.to(torch::kFloat32);
  } else {
    MQ_CHECK(min.numel() == 1 && max.numel() == 1, name,
             ": per_tensor range expects scalar min and max, got shapes ", min.sizes(), " and ",
             max.sizes());
    mn = min.to(torch::kFloat32).reshape({});
    mx = max.to(torch::kFloat32).reshape({});
  }
  const torch::Tensor not_finite = ~(torch::isfinite(mn) & torch::isfinite(mx));
  MQ_CHECK(!not_finite.any().item<bool>(), name, ": calibration range is not finite: ",
           first_bad(not_finite, mn, mx), " (expected finite bounds)");
  const torch::Tensor inverted = mn > mx;
  MQ_CHECK(!inverted.any().item<bool>(), name, ": calibration range has min > max: ",
           first_bad(inverted, mn, mx));
  const QParams p = choose_qparams(mn, mx, spec.bits, spec.symmetric);  // [] or [C]
  assign(p.scale, p.offset);
}

void ActFakeQuantizerImpl::set_qparams(const torch::Tensor& new_scale,
                                       const torch::Tensor& new_offset) {
  const QuantSpec& spec = options.spec();
  const std::string& name = options.name();
  MQ_CHECK(new_scale.defined() && new_offset.defined(), name,
           ": set_qparams got an undefined scale or offset");
  torch::NoGradGuard no_grad;
  torch::Tensor s, o;  // [] per tensor, [C] per channel
  if (spec.granularity == Granularity::kPerChannel) {
    MQ_CHECK(new_scale.dim() == 1 && new_scale.numel() > 0 &&
                 new_scale.sizes() == new_offset.sizes(),
             name, ": per_channel scale and offset must share one shape [C], got ",
             new_scale.sizes(), " and ", new_offset.sizes());
    s = new_scale.to(torch::kFloat32);
    o = new_offset.to(torch::kFloat32);
  } else {
    MQ_CHECK(new_scale.numel() == 1 && new_offset.numel() == 1, name,
             ": per_tensor scale and offset must be scalars, got shapes ", new_scale.sizes(),
             " and ", new_offset.sizes());
    s = new_scale.to(torch::kFloat32).reshape({});
    o = new_offset.to(torch::kFloat32).reshape({});
  }
  MQ_CHECK((torch::isfinite(s) & (s > 0)).all().item<bool>(), name,
           ": scale must be finite and > 0, got ", s.min().item<double>(), " (smallest)");
  MQ_CHECK(torch::isfinite(o).all().item<bool>(), name, ": offset must be finite");
  assign(s, o);
}

std::pair<torch::Tensor, torch::Tensor> ActFakeQuantizerImpl::range() const {
  MQ_CHECK(initialized_, options.name(), ": range() of an activation quantizer whose range ",
           "was never set");
  const QuantSpec& spec = options.spec();
  const torch::Tensor s = scale.detach();   // [] or [C]
  const torch::Tensor o = offset.detach();  // [] or [C]
  // §3.4 (compute_min_max_from_scale_offset): alpha = scale * qmax, beta = -offset * scale.
  const torch::Tensor alpha = s * static_cast<double>(spec.qmax());
  const torch::Tensor beta = -o * s;
  const torch::Tensor mx = alpha + beta;
  const torch::Tensor mn = spec.symmetric ? -mx : beta;
  return {mn, mx};
}

void ActFakeQuantizerImpl::set_learnable(bool learnable) {
  learnable_ = learnable;
  scale.set_requires_grad(learnable);
  offset.set_requires_grad(learnable);
}

torch::Tensor ActFakeQuantizerImpl::forward(const torch::Tensor& x) {
  const QuantSpec& spec = options.spec();
  if (!spec.enabled) return x;
  const std::string& name = options.name();
  MQ_CHECK(initialized_, name, ": activation quantizer used before its range was set ",
           "(expected calibration via set_range or loaded scale/offset)");
  if (spec.granularity == Granularity::kPerChannel) {
    MQ_CHECK(x.dim() >= 1 && x.size(-1) == scale.size(0), name, ": input of shape ", x.sizes(),
             ", expected the last dimension to be the ", scale.size(0), " calibrated channels");
  }
  QParams p;
  p.scale = scale;    // [] or [C]; not clamped here: the reference learns it unclamped (§3.2)
  p.offset = offset;  // [] or [C]; may drift off-integer while learned
  p.qmin = spec.qmin();
  p.qmax = spec.qmax();
  // fake_quantize computes in fp32 (fp64 for gradient checks) whatever the input (bf16 cannot
  // hold x / scale for 16-bit codes) and returns x's dtype (bf16 models, autocast training).
  return fake_quantize(x, p);  // [x]
}

}  // namespace mq
