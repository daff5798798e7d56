// mobilequant/quant/fake_quantize_element.cuh
// Fake quantization of one fp32 value and its straight-through backward, as device functions
// shared by the fused kernels (fused_softmax_quantize_cuda.cu, fused_weight_quantize_cuda.cu).
// Each operation rounds as the composed torch ops round it: every division is IEEE's correctly
// rounded one (div_rn below), the rest separate adds and multiplies (the kernels build with
// --fmad=false).
#pragma once

namespace mq {

/// A divisor b with its correctly rounded reciprocal y = RN(1/b), for dividing many values by
/// the same b (a quantizer's scale, a softmax row's sum) at the cost of three multiplies.
struct Divisor {
  float b;    ///< the divisor
  float y;    ///< RN(1 / b)
  bool fast;  ///< |b| in [2^-40, 2^40]: div_rn may take the reciprocal path
};

/// b ready for div_rn.
__device__ __forceinline__ Divisor divisor(float b) {
  const float ab = fabsf(b);
  return Divisor{b, __frcp_rn(b), ab >= 0x1p-40f && ab <= 0x1p40f};
}

/// a / b correctly rounded, the bits of __fdiv_rn(a, b): q = RN(a y), then one correction
/// q + (a - b q) y with the residual exact in an fma (Markstein's theorem: y within half an ulp
/// of 1/b makes the corrected quotient the correctly rounded one). This is the fast path of the
/// device's own division with y taken exactly; outside the range where no step underflows or
/// overflows (|a| in [2^-80, 2^80], |b| in [2^-40, 2^40]), and for 0, inf and NaN, it is
/// __fdiv_rn itself. tests/cuda_emu/emu_divide.cpp checks it against IEEE division.
__device__ __forceinline__ float div_rn(float a, const Divisor& d) {
  const float aa = fabsf(a);
  if (d.fast && aa >= 0x1p-80f && aa <= 0x1p80f) {
    const float q = __fmul_rn(a, d.y);
    const float r = __fmaf_rn(-d.b, q, a);
    return __fmaf_rn(r, d.y, q);
  }
  return __fdiv_rn(a, d.b);
}
/// a / b correctly rounded, for a divisor that changes from element to element.
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }

/// The divisor's value.
__device__ __forceinline__ float value_of(const Divisor& d) { return d.b; }
__device__ __forceinline__ float value_of(float b) { return b; }

/// clamp(v, lo, hi) as torch.clamp: NaN passes through. On the device, PTX's NaN-propagating
/// max and min (two instructions where the comparisons and selects take four).
__device__ __forceinline__ float clamp_code(float v, float lo, float hi) {
#ifdef __CUDA_ARCH__
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(v), "f"(lo));
  asm("min.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(r), "f"(hi));
  return r;
#else
  return v < lo ? lo : (v > hi ? hi : v);
#endif
}

/// (clamp(rint(v / s) + o, qmin, qmax) - o) * s; NaN passes through, as torch.clamp. S: a
/// Divisor (s shared by many elements) or a float.
template <typename S>
__device__ __forceinline__ float fq_value(float v, const S& s, float o, float qmin, float qmax) {
  const float q = clamp_code(__fadd_rn(rintf(div_rn(v, s)), o), qmin, qmax);
  return __fmul_rn(__fsub_rn(q, o), value_of(s));
}

/// The backward of fq_value for input v and output gradient g, as autograd computes it over
/// the composed ops with straight-through rounding:
///   t1 = v / s, t2 = round(t1) + o, in = qmin <= t2 <= qmax, t3 = clamp(t2) - o, g3 = g * s
///   dv = in ? g3 / s : 0;  d s += g * t3 + (in ? -g3 * (t1 / s) : 0);  d o += in ? 0 : -g3
/// Returns dv; adds the element's terms to acc_s and acc_o. S as fq_value's.
template <typename S>
__device__ __forceinline__ float fq_backward(float v, float g, const S& s, float o, float qmin,
                                             float qmax, float& acc_s, float& acc_o) {
  const float t1 = div_rn(v, s);
  const float t2 = __fadd_rn(rintf(t1), o);
  const float q = clamp_code(t2, qmin, qmax);
  const bool in = q == t2;  // qmin <= t2 <= qmax; false for NaN, as ClampBackward's mask
  const float t3 = __fsub_rn(q, o);
  const float g3 = __fmul_rn(g, value_of(s));
  const float from_mul = __fmul_rn(g, t3);
  acc_s += in ? __fadd_rn(from_mul, -__fmul_rn(g3, div_rn(t1, s))) : from_mul;
  acc_o += in ? 0.0f : -g3;
  return in ? div_rn(g3, s) : 0.0f;
}

}  // namespace mq
