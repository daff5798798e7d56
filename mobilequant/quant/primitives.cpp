// mobilequant/quant/primitives.cpp
// Pure quantization functions (paper eq. 2-4; reference-implementation.md §2, §3.2). The
// arithmetic follows the reference's `qmodule.py` operation for operation (division by the
// scale, torch.round half to even, the scale clamp after the division, the offset from the
// clamped scale) so that results agree bit for bit. No state: fake_quantizer.cpp composes these.
#include "mobilequant/quant/primitives.h"

#include "mobilequant/core/dtype.h"
#include "mobilequant/core/error.h"
#include "mobilequant/quant/fused_fake_quantize.h"

namespace mq {
namespace {

/// Checks that `p` can be applied: both tensors defined and a non-empty code range.
void check_qparams(const QParams& p, const char* where) {
  MQ_CHECK(p.scale.defined() && p.offset.defined(), where,
           ": QParams has an undefined scale or offset");
  MQ_CHECK(p.qmin < p.qmax, where, ": code range [", p.qmin, ", ", p.qmax,
           "] is empty (expected qmin < qmax)");
}

}  // namespace

std::pair<int64_t, int64_t> code_range(int64_t bits, bool symmetric) {
  MQ_CHECK(bits >= 2 && bits <= 16, "bits: got ", bits, ", expected 2..16");
  if (symmetric) return {-(int64_t{1} << (bits - 1)), (int64_t{1} << (bits - 1)) - 1};
  return {0, (int64_t{1} << bits) - 1};
}

QParams choose_qparams(const torch::Tensor& min, const torch::Tensor& max, int64_t bits,
                       bool symmetric) {
  const auto [qmin, qmax] = code_range(bits, symmetric);
  MQ_CHECK(min.defined() && max.defined(), "choose_qparams: min or max is undefined");
  MQ_CHECK(min.sizes() == max.sizes(), "choose_qparams: min ", min.sizes(), " and max ",
           max.sizes(), " differ in shape");
  const auto dtype = compute_dtype(min);
  const torch::Tensor mn = min.to(dtype);  // [any]
  const torch::Tensor mx = max.to(dtype);  // [any], same shape
  QParams p;
  p.qmin = qmin;
  p.qmax = qmax;
  if (symmetric) {
    // Eq. 3 (symmetric): alpha = max(|min|, |max|), scale = alpha / (2^(b-1) - 1).
    p.scale = (torch::maximum(mn.abs(), mx.abs()) / static_cast<double>(qmax))
                  .clamp(kMinScale, kMaxScale);  // [any]
    p.offset = torch::zeros_like(p.scale);       // [any]
  } else {
    // Eq. 3-4: scale = (max - min) / (2^b - 1), clamped, then offset = -round(min / scale)
    // from the clamped scale. torch::round has zero gradient: no STE on the offset (§2).
    p.scale = ((mx - mn) / static_cast<double>(qmax)).clamp(kMinScale, kMaxScale);  // [any]
    p.offset = -torch::round(mn / p.scale);                                           // [any]
  }
  return p;
}

torch::Tensor round_ste(const torch::Tensor& x) {
  // Forward round(x) (exactly: round(x) - x is exact by Sterbenz, and adding x back gives the
  // representable integer); backward identity.
  return (torch::round(x) - x).detach() + x;
}

torch::Tensor quantize(const torch::Tensor& x, const QParams& p) {
  check_qparams(p, "quantize");
  torch::NoGradGuard no_grad;
  const auto dtype = compute_dtype(x);
  const torch::Tensor s = p.scale.to(dtype);   // broadcastable to x
  const torch::Tensor o = p.offset.to(dtype);  // broadcastable to x
  const torch::Tensor off_integral = torch::round(o) == o;  // [o]
  if (!off_integral.all().item<bool>()) {
    const int64_t bad = (~off_integral).flatten().nonzero()[0][0].item<int64_t>();
    throw make_error("quantize: offset ", o.flatten()[bad].item<double>(), " at flat index ",
                     bad, " is not an integer (expected integral offsets; round a learned ",
                     "offset before exporting integer codes)");
  }
  // q = clamp(round(x / scale) + offset, qmin, qmax), eq. 2
  const torch::Tensor q = (torch::round(x.to(dtype) / s) + o)
                              .clamp(static_cast<double>(p.qmin), static_cast<double>(p.qmax));
  return q.to(torch::kInt32);  // [x]
}

torch::Tensor dequantize(const torch::Tensor& q, const QParams& p) {
  check_qparams(p, "dequantize");
  const auto dtype = compute_dtype(p.scale);
  // x^ = (q - offset) * scale
  return (q.to(dtype) - p.offset.to(dtype)) * p.scale.to(dtype);  // [q]
}

torch::Tensor fake_quantize(const torch::Tensor& x, const QParams& p) {
  check_qparams(p, "fake_quantize");
  const auto dtype = compute_dtype(x);
  const torch::Tensor s = p.scale.to(dtype);   // broadcastable to x
  const torch::Tensor o = p.offset.to(dtype);  // broadcastable to x
  // CUDA: the fused kernels (forward values bit for bit the composed ops').
  const bool fused = dtype == torch::kFloat32 && fused_fake_quantize_supported(x) &&
                     fused_fake_quantize_layout_supported(x, s);
  if (!torch::GradMode::is_enabled() ||
      !(x.requires_grad() || s.requires_grad() || o.requires_grad())) {
    // No gradient wanted: one kernel on CUDA, else the same ops in place on one buffer
    // (round_ste's forward is round exactly).
    if (fused) return fused_fake_quantize(x, s, o, p.qmin, p.qmax);
    torch::Tensor y = x.to(dtype) / s;  // [x], a fresh buffer
    y.round_().add_(o).clamp_(static_cast<double>(p.qmin), static_cast<double>(p.qmax));
    y.sub_(o).mul_(s);
    return y.to(x.scalar_type());
  }
  if (fused) return fused_fake_quantize_learnable(x, s, o, p.qmin, p.qmax);  // [x]
  return fake_quantize_composed(x, p);
}

torch::Tensor fake_quantize_composed(const torch::Tensor& x, const QParams& p) {
  check_qparams(p, "fake_quantize");
  const auto dtype = compute_dtype(x);
  const torch::Tensor s = p.scale.to(dtype);   // broadcastable to x
  const torch::Tensor o = p.offset.to(dtype);  // broadcastable to x
  // Eq. 2 with the straight-through rounding, as the reference's Quantizer.forward.
  const torch::Tensor q = (round_ste(x.to(dtype) / s) + o)
                              .clamp(static_cast<double>(p.qmin), static_cast<double>(p.qmax));
  return ((q - o) * s).to(x.scalar_type());  // [x]
}

torch::Tensor grouped_weight(const torch::Tensor& w, const QuantSpec& spec) {
  MQ_CHECK(w.dim() == 1 || w.dim() == 2, "weight quantization: expected a 1-D or 2-D weight, ",
           "got shape ", w.sizes());
  const torch::Tensor w2 = w.dim() == 1 ? w.reshape({1, w.size(0)}) : w;  // [rows, cols]
  if (spec.granularity != Granularity::kPerGroup) return w2;
  const int64_t g = spec.group_size;
  const int64_t cols = w2.size(1);
  MQ_CHECK(g > 0 && cols % g == 0, "group_size ", g, " does not divide the input dimension ",
           cols);
  return w2.reshape({-1, g});  // [rows * cols / g, g]
}

std::pair<torch::Tensor, torch::Tensor> weight_min_max(const torch::Tensor& w,
                                                       const QuantSpec& spec) {
  const torch::Tensor wg = grouped_weight(w, spec);  // [groups, g] (or [rows, cols])
  if (spec.granularity == Granularity::kPerTensor) {
    const torch::Tensor flat = wg.flatten();  // [rows * cols]
    return {flat.amin(0).reshape({1}), flat.amax(0).reshape({1})};  // [1], [1]
  }
  return {wg.amin(-1, /*keepdim=*/true), wg.amax(-1, /*keepdim=*/true)};  // [groups, 1] each
}

}  // namespace mq
