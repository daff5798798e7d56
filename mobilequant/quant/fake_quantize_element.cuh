// mobilequant/quant/fake_quantize_element.cuh
// Fake quantization of one fp32 value and its straight-through backward, as device functions
// shared by the fused kernels (fused_softmax_quantize_cuda.cu, fused_weight_quantize_cuda.cu).
// Each operation rounds as the composed torch ops round it: the division is __fdiv_rn, the
// rest separate adds and multiplies (the kernels build with --fmad=false).
#pragma once

namespace mq {

/// (clamp(rint(v / s) + o, qmin, qmax) - o) * s; NaN passes through, as torch.clamp.
__device__ __forceinline__ float fq_value(float v, float s, float o, float qmin, float qmax) {
  float q = __fadd_rn(rintf(__fdiv_rn(v, s)), o);
  q = q < qmin ? qmin : (q > qmax ? qmax : q);
  return __fmul_rn(__fsub_rn(q, o), s);
}

/// The backward of fq_value for input v and output gradient g, as autograd computes it over
/// the composed ops with straight-through rounding:
///   t1 = v / s, t2 = round(t1) + o, in = qmin <= t2 <= qmax, t3 = clamp(t2) - o, g3 = g * s
///   dv = in ? g3 / s : 0;  d s += g * t3 + (in ? -g3 * (t1 / s) : 0);  d o += in ? 0 : -g3
/// Returns dv; adds the element's terms to acc_s and acc_o.
__device__ __forceinline__ float fq_backward(float v, float g, float s, float o, float qmin,
                                             float qmax, float& acc_s, float& acc_o) {
  const float t1 = __fdiv_rn(v, s);
  const float t2 = __fadd_rn(rintf(t1), o);
  const bool in = t2 >= qmin && t2 <= qmax;  // false for NaN, as ClampBackward's mask
  const float q = t2 < qmin ? qmin : (t2 > qmax ? qmax : t2);
  const float t3 = __fsub_rn(q, o);
  const float g3 = __fmul_rn(g, s);
  const float from_mul = __fmul_rn(g, t3);
  acc_s += in ? __fadd_rn(from_mul, -__fmul_rn(g3, __fdiv_rn(t1, s))) : from_mul;
  acc_o += in ? 0.0f : -g3;
  return in ? __fdiv_rn(g3, s) : 0.0f;
}

}  // namespace mq
