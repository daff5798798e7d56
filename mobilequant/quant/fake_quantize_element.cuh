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

/// True if a / d.b is correctly rounded by div_rcp: d in its range and |a| in [2^-80, 2^80],
/// where no step underflows or overflows, or a = +0 (the path then gives the zero of the
/// quotient's sign; -0 it would turn into +0). No branch: for testing many values at once.
__device__ __forceinline__ bool rcp_exact(float a, const Divisor& d) {
  const float aa = fabsf(a);
  return d.fast & (((aa >= 0x1p-80f) & (aa <= 0x1p80f)) | (__float_as_uint(a) == 0u));
}

/// a / b by the reciprocal: q = RN(a y), then one correction q + (a - b q) y with the residual
/// exact in an fma (Markstein's theorem: y within half an ulp of 1/b makes the corrected
/// quotient the correctly rounded one). The bits of __fdiv_rn(a, b) where rcp_exact(a, d);
/// anything elsewhere.
__device__ __forceinline__ float div_rcp(float a, const Divisor& d) {
  const float q = __fmul_rn(a, d.y);
  const float r = __fmaf_rn(-d.b, q, a);
  return __fmaf_rn(r, d.y, q);
}

/// a / b correctly rounded, the bits of __fdiv_rn(a, b): div_rcp, the fast path of the device's
/// own division with y taken exactly, where rcp_exact holds, else __fdiv_rn itself (also for
/// -0, inf and NaN). tests/cuda_emu/emu_divide.cpp checks it against IEEE division.
__device__ __forceinline__ float div_rn(float a, const Divisor& d) {
  return rcp_exact(a, d) ? div_rcp(a, d) : __fdiv_rn(a, d.b);
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

/// (clamp(rint(t) + o, qmin, qmax) - o) * s for the quotient t = v / s.
__device__ __forceinline__ float fq_of_quotient(float t, float s, float o, float qmin,
                                                float qmax) {
  const float q = clamp_code(__fadd_rn(rintf(t), o), qmin, qmax);
  return __fmul_rn(__fsub_rn(q, o), s);
}

/// (clamp(rint(v / s) + o, qmin, qmax) - o) * s; NaN passes through, as torch.clamp. S: a
/// Divisor (s shared by many elements) or a float.
template <typename S>
__device__ __forceinline__ float fq_value(float v, const S& s, float o, float qmin, float qmax) {
  return fq_of_quotient(div_rn(v, s), value_of(s), o, qmin, qmax);
}

/// fq_value of each of N values, with one test that every quotient takes the reciprocal path
/// and then the arithmetic without a branch per value (the same bits).
template <int N>
__device__ __forceinline__ void fq_values(float (&v)[N], const Divisor& s, float o, float qmin,
                                          float qmax) {
  bool fast = true;
#pragma unroll
  for (int i = 0; i < N; ++i) fast = fast & rcp_exact(v[i], s);
  if (fast) {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = fq_of_quotient(div_rcp(v[i], s), s.b, o, qmin, qmax);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = fq_value(v[i], s, o, qmin, qmax);
  }
}

/// fq_backward given its quotients: t1 = v / s, t1s = t1 / s, g3 = g * s, g3s = g3 / s.
__device__ __forceinline__ float fq_backward_terms(float t1, float t1s, float g, float g3,
                                                   float g3s, float o, float qmin, float qmax,
                                                   float& acc_s, float& acc_o) {
  const float t2 = __fadd_rn(rintf(t1), o);
  const float q = clamp_code(t2, qmin, qmax);
  const bool in = q == t2;  // qmin <= t2 <= qmax; false for NaN, as ClampBackward's mask
  const float t3 = __fsub_rn(q, o);
  const float from_mul = __fmul_rn(g, t3);
  acc_s += in ? __fadd_rn(from_mul, -__fmul_rn(g3, t1s)) : from_mul;
  acc_o += in ? 0.0f : -g3;
  return in ? g3s : 0.0f;
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
  const float g3 = __fmul_rn(g, value_of(s));
  return fq_backward_terms(t1, div_rn(t1, s), g, g3, div_rn(g3, s), o, qmin, qmax, acc_s, acc_o);
}

/// fq_backward of N elements (v, g) into dv, each element's terms added to acc_s / acc_o in
/// element order; one test that every quotient takes the reciprocal path, then the arithmetic
/// without a branch per element (the same bits).
template <int N>
__device__ __forceinline__ void fq_backwards(const float (&v)[N], const float (&g)[N],
                                             const Divisor& s, float o, float qmin, float qmax,
                                             float& acc_s, float& acc_o, float (&dv)[N]) {
  float t1[N], g3[N];
  bool fast = true;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    t1[i] = div_rcp(v[i], s);
    g3[i] = __fmul_rn(g[i], s.b);
    fast = fast & rcp_exact(v[i], s) & rcp_exact(t1[i], s) & rcp_exact(g3[i], s);
  }
  if (fast) {
#pragma unroll
    for (int i = 0; i < N; ++i)
      dv[i] = fq_backward_terms(t1[i], div_rcp(t1[i], s), g[i], g3[i], div_rcp(g3[i], s), o, qmin,
                                qmax, acc_s, acc_o);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) dv[i] = fq_backward(v[i], g[i], s, o, qmin, qmax, acc_s, acc_o);
  }
}

}  // namespace mq
