// mobilequant/runtime/int_ops.h
// The integer kernels of the reference runtime (docs/integer-model.md, "The prefill"). Every
// kernel works on integer codes only; the single float step is the logits dequantization at
// the end of int_lm_head. Activation codes travel as int32 buffers (any site of up to 16 bits
// fits), weights as uint8 codes (one per byte, 4-bit weights unpacked at load).
//
// Numerics, precisely:
// - requant(a, M, n) = (a * M + 2^(n-1)) >> n, arithmetic shift (round half up), with M of 62
//   bits (|M| in [2^62, 2^63)), computed in a 128-bit intermediate, so it is exact for every
//   int64 a. int32 accumulators take the same value in 64-bit arithmetic (PreparedMultiplier),
//   128-bit values of up to 94 bits in two 128-bit products (requant_wide).
// - Linear: acc[t, n] = sum_k (x[t,k] - z_x)(W[n,k] - z_w[n]) is exact in int64: the uint8 x
//   uint8 products sum_k x*W run in int32 (at most K * 255^2 < 2^31, checked at load: K <=
//   33025); a 16-bit input is split into its high and low bytes (x = 256 x_h + x_l), two uint8
//   GEMMs; the zero points are applied afterwards through row sums:
//   acc = P - z_w[n] sum_k x - z_x sum_k W[n] + K z_x z_w[n].
//   The uint8 GEMM is gemmlowp's (AVX2 kernels when built with MQ_RUNTIME_NATIVE). Measured
//   on the project's 2-core AMD EPYC (AVX2, no VNNI), one thread, CPU time, 256x2048x2048:
//   gemmlowp ~34 GMAC/s, an own register-blocked int16 vpmaddwd kernel ~25 GMAC/s, LibTorch
//   fp32 ~32 GMAC/s. So the W8A8 linears run at about fp32 speed here, not faster; a
//   vpmaddubsw kernel (exact for 4-bit weights: 255 * 15 * 2 < 2^15) or VNNI would be the
//   next step.
// - RMSNorm: out = clamp(z_out + round(d * m_c / sqrt(den))), den = sum d^2 + E 2^-F. Per row,
//   D = (sum d^2 + E 2^-F) 4^k exactly in unsigned 128 bits, with k >= 24 the largest that
//   keeps D < 2^126 (so the final norm's int32 input, the residual >> 31, cannot overflow
//   it); s = floor(sqrt(D)) by an integer Newton iteration (s in [2^62, 2^63): relative error
//   < 2^-62) and the reciprocal r = floor(2^W / s), W = bitlen(s) + 61 (r in (2^61, 2^62]),
//   once per row. Then per element out = z_out + round_half_up(d * M_c * r / 2^(n_c + W - k)),
//   defined exactly (requant_wide of d r). With the 62-bit gain M_c the total relative
//   error is < 2^-60, i.e. < 2^-43 of a code for 17-bit values. The runtime evaluates a row
//   in double precision (within |x| 2^-50.9 of the definition) and redoes it in 128-bit
//   arithmetic when a value lies that close to a rounding tie: the codes equal the definition
//   exactly.
// - SiLU and elementwise products: requant of (a - z_a)(b - z_b) in 64-bit arithmetic
//   (PreparedMultiplier) when the products stay below 2^31 in magnitude, else 128-bit.
// - Softmax: exactly the doc's p_j = clamp(z_p + round(e_j M / (S 2^n))). Because e_j M >= 0
//   this equals floor(((e_j M >> (n-1)) + S) / (2S)), one unsigned 64-bit division, done with
//   a per-row reciprocal and one exact correction step (no rounding difference at all).
// - qk and pv matmuls: when k (resp. v) codes are 8-bit and q (resp. p) codes at most 16-bit,
//   they run as the same exact uint8 GEMMs (int_matmul; the causal [T, T] is computed in full,
//   masked probabilities at code clamp(z_p)). Otherwise: qk sums in int32 when
//   D * max|q - z_q| * max|k - z_k| < 2^31, else in int64; pv sums blocks of B keys in int32
//   (B * max|p - z_p| * max|v - z_v| < 2^31) and adds each block to an int64 accumulator.
// - 8-bit linears fuse the zero-point correction into the requant epilogue: since
//   |acc| <= K * 255^2 < 2^31, acc is computed exactly in uint32 wrap-around arithmetic. On the
//   VNNI kernels the epilogue runs on each GEMM tile while it is in cache.
// - lm_head: int16 x int16 products summed in pairs in int32 (vpmaddwd; 2 * 32767^2 < 2^31);
//   such pair sums are added in int32 for as many steps B as B * 2 * 32767 * max|y| < 2^31
//   allows (B >= 1, from each token row's actual max|y|; lm_head codes are never -32768), then
//   widened to int64; logits = float(double(s_f) * double(s_lm[v]) * double(acc)). Where
//   use_vnni(), vnni_lm_head computes the same exact sum (vnni_gemm.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "mobilequant/runtime/fixed_point.h"
#include "mobilequant/runtime/vnni_gemm.h"

namespace mq::rt {

/// 128-bit integers for exact intermediates (__extension__: GCC/Clang builtins, not ISO C++).
__extension__ typedef __int128 Int128;
__extension__ typedef unsigned __int128 UInt128;

/// A fixed-point multiplier m ~= M * 2^-n (docs/integer-model.md, "Requantization").
struct Multiplier {
  int64_t m = 0;       ///< M, |M| in [2^62, 2^63) or 0
  int32_t shift = 32;  ///< n: >= 32, except a residual add's (>= -30, a left shift when <= 0)
};

/// The encoding of an activation site: b-bit unsigned codes with a zero point.
struct ActQuant {
  int bits = 8;            ///< b, 1 … 16
  int32_t zero_point = 0;  ///< z
  double scale = 0.0;      ///< s (informational; no kernel reads it)
  /// The largest code, 2^b - 1.
  int32_t qmax() const { return static_cast<int32_t>((int64_t{1} << bits) - 1); }
};

/// The bound at which requant and requant_wide saturate, 2^62: far past every code range,
/// and a zero point (|z| < 2^32) added to a saturated value cannot overflow int64.
inline constexpr int64_t kRequantSaturation = int64_t{1} << 62;

/// Saturates a 128-bit value to [-2^62, 2^62].
inline int64_t saturate_requant(Int128 q) {
  if (q > kRequantSaturation) return kRequantSaturation;
  if (q < -kRequantSaturation) return -kRequantSaturation;
  return static_cast<int64_t>(q);
}

/// requant(a, M, n) = floor((a*M + 2^(n-1)) / 2^n), exact (|a*M| < 2^126 in a 128-bit
/// intermediate), saturated to [-2^62, 2^62]; n >= 1 (n >= 127 gives 0, the exact value too).
inline int64_t requant(int64_t a, int64_t m, int32_t n) {
  if (n >= 127) return 0;
  return saturate_requant((static_cast<Int128>(a) * m + (static_cast<Int128>(1) << (n - 1))) >> n);
}

/// requant of a 128-bit value, |v| < 2^94, with n >= 32: exact, by M = M_h 2^31 + M_l (M_l in
/// [0, 2^31)): floor((v M + 2^(n-1)) / 2^n) = floor((v M_h + floor(v M_l / 2^31) + 2^(n-32)) /
/// 2^(n-31)), every term below 2^127. n > 157 gives 0 (|v M| < 2^157), the exact value too.
/// Saturated to [-2^62, 2^62].
inline int64_t requant_wide(Int128 v, int64_t m, int32_t n) {
  if (n > kMaxShift) return 0;
  const Int128 hi = v * (m >> 31);                                       // |.| < 2^126
  const Int128 lo = (v * (m & ((int64_t{1} << 31) - 1))) >> 31;         // |.| < 2^94
  return saturate_requant((hi + lo + (static_cast<Int128>(1) << (n - 32))) >> (n - 31));
}

/// A multiplier (shift n >= 32) prepared for inputs |a| < 2^31 in 64-bit arithmetic:
/// apply(a) = requant(a, M, n) exactly, as Y = a M_h + ((a M_l) >> 31) = floor(a M / 2^31)
/// (M_h = M >> 31, M_l = M mod 2^31; |Y| < 2^63) and ((Y >> (n - 32)) + 1) >> 1. Shifts above
/// 94 give 0 (|a M| < 2^94), the exact value too; |apply(a)| <= 2^62. Vectorizes (no 128-bit
/// step).
struct PreparedMultiplier {
  int64_t hi = 0;  ///< M_h in [-2^32, 2^32)
  int64_t lo = 0;  ///< M_l in [0, 2^31)
  int64_t s1 = 0;  ///< n - 32, in [0, 62]
  /// Prepares m; throws naming the shift when it is below kMinShift.
  static PreparedMultiplier from(Multiplier m);
  /// Prepares (M, n) for n >= kMinShift, unchecked (the loader checked it).
  static PreparedMultiplier unchecked(int64_t m, int32_t n) {
    if (n >= 95 || m == 0) return {0, 0, 0};  // |a M| < 2^94: 0
    return {m >> 31, m & ((int64_t{1} << 31) - 1), n - kMinShift};
  }
  int64_t apply(int64_t a) const { return (((a * hi + ((a * lo) >> 31)) >> s1) + 1) >> 1; }
};

/// requant of an int32 accumulator without a 128-bit step (PreparedMultiplier; n >= 32).
inline int64_t requant32(int32_t a, int64_t m, int32_t n) {
  return PreparedMultiplier::unchecked(m, n).apply(a);
}

/// The softmax normalization of one row (docs step 2.6): for the row's exponential sum
/// S in (0, 2^62] and the multiplier (M in [0, 2^63), n in [32, 127]), quotient(e) for
/// e <= S is round_half_up(e M / (S 2^n)) = floor(x / 2S), x = (e M >> (n-1)) + S < 2^126,
/// exactly. The quotient is below 2^31 + 1 (e <= S, M 2^-n < 2^31); the double estimate
/// x / 2S is within 2^-20 of it (relative error under 2^-50), and is corrected in 128-bit
/// integers.
class SoftmaxDivider {
 public:
  SoftmaxDivider(uint64_t sum, Multiplier m)
      : sum_(sum), div_(static_cast<UInt128>(sum) * 2), m_(static_cast<uint64_t>(m.m)),
        sh_(m.shift - 1), inv_(0.5 / static_cast<double>(sum)) {}
  /// floor(((e M >> (n-1)) + S) / 2S).
  uint64_t quotient(uint64_t e) const {
    const UInt128 x = ((static_cast<UInt128>(e) * m_) >> sh_) + sum_;
    auto q = static_cast<uint64_t>(static_cast<double>(x) * inv_);  // floor(x/2S) (+ 1)
    UInt128 qd = static_cast<UInt128>(q) * div_;
    while (qd > x) {
      --q;
      qd -= div_;
    }
    while (x - qd >= div_) {
      ++q;
      qd += div_;
    }
    return q;
  }

 private:
  uint64_t sum_;
  UInt128 div_;
  uint64_t m_;
  int sh_;
  double inv_;
};

/// Splits n codes in [0, 2^16) into their low bytes lo and, if `wide`, their high bytes hi
/// (else hi is not touched and *hi_sum = 0), with the sum of each (< 2^32 for n < 2^24).
void split_bytes(const int32_t* c, int64_t n, bool wide,
                 uint8_t* lo,        // [n]
                 uint8_t* hi,        // [n] or null when !wide
                 uint32_t* lo_sum, uint32_t* hi_sum);

/// Whether every v[i] lies in [lo, hi].
bool all_in_range(const int32_t* v, int64_t n, int32_t lo, int32_t hi);

/// Clamps v to [lo, hi].
inline int32_t clamp_code(int64_t v, int64_t lo, int64_t hi) {
  return static_cast<int32_t>(v < lo ? lo : (v > hi ? hi : v));
}

/// A linear layer's integer weights, as the runtime holds them.
struct IntLinearWeights {
  int64_t out_features = 0;          ///< N
  int64_t in_features = 0;           ///< K
  int bits = 8;                      ///< weight bits (<= 8)
  std::vector<uint8_t> codes;        // [N, K] one code per byte
  std::vector<int32_t> zero_point;   // [N] z_w (per-tensor encodings expanded)
  std::vector<int64_t> multiplier;   // [N] M
  std::vector<int32_t> shift;        // [N] n
  std::vector<int64_t> row_sum;      // [N] sum_k codes[n, k]
  VnniPackedB packed;                // codes packed for the VNNI kernels (empty without VNNI)

  /// Recomputes row_sum from codes.
  void compute_row_sums();
  /// Packs codes for the VNNI kernels if the CPU has them (else leaves `packed` empty).
  void pack_for_cpu();
};

/// Runs uint8 x uint8 -> int32 matrix products: on the VNNI kernels (vnni_gemm.h) when
/// use_vnni(), else on gemmlowp, reusing one gemmlowp context. Not thread-safe: one per prefill.
class Uint8Gemm {
 public:
  /// A context that uses at most `threads` threads (>= 1).
  explicit Uint8Gemm(int threads);
  ~Uint8Gemm();
  Uint8Gemm(const Uint8Gemm&) = delete;
  Uint8Gemm& operator=(const Uint8Gemm&) = delete;

  /// c[t, n] = sum_k a[t, k] * b[n, k], exact when k * 255^2 < 2^31. `packed`, if given and
  /// not empty, is b packed (VnniPackedB::pack) or a larger operand whose first n rows and
  /// first k depths are b; else the VNNI path packs b per call. b's rows are ldb >= k apart
  /// (0: k). a_row_sums, if given, are sum_k a[t, k] mod 2^32 (the VNNI path needs them).
  void multiply(const uint8_t* a,  // [T, K]
                const uint8_t* b,  // [N, ldb]
                int64_t t, int64_t n, int64_t k,
                int32_t* c,        // [T, N]
                const VnniPackedB* packed = nullptr, int64_t ldb = 0,
                const uint32_t* a_row_sums = nullptr);  // [T] or null

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Exact zero-point-corrected integer matrix product through uint8 GEMMs:
/// acc[t, n] = sum_k (x[t,k] - z_x)(w[n,k] - z_w[n]), x codes of up to 16 bits (split into
/// bytes when x_bits > 8), w uint8 codes with row sums w_row_sum[n] = sum_k w[n,k].
void int_matmul(const int32_t* x,          // [T, K] codes in [0, 2^x_bits)
                int64_t t, int64_t k, int x_bits, int32_t z_x,
                const uint8_t* w,          // [N, K]
                int64_t n,
                const int32_t* z_w,        // [N]
                const int64_t* w_row_sum,  // [N]
                int threads, Uint8Gemm& gemm,
                int64_t* acc,              // [T, N]
                const VnniPackedB* w_packed = nullptr,  // see Uint8Gemm::multiply
                int64_t ldw = 0);                       // w's row stride (0: K)

/// Integer linear: y[t, n] = clamp(requant(acc[t, n], M[n], n[n]) + z_out, 0, 2^b_out - 1) with
/// acc the exact zero-point-corrected dot product (see the file comment). Inputs of up to 16
/// bits.
void int_linear(const int32_t* x,  // [T, K] codes of `in`
                int64_t t, const ActQuant& in, const IntLinearWeights& w, const ActQuant& out,
                int threads, Uint8Gemm& gemm,
                int32_t* y);       // [T, N] codes of `out`

/// The byte form of 8-bit codes x [T, K] for int_linear_u8: xu = x (each in [0, 255]) and
/// x_sum[t] = sum_k x[t, k] mod 2^32.
void to_bytes(const int32_t* x,  // [T, K] codes in [0, 255]
              int64_t t, int64_t k, int threads,
              uint8_t* xu,       // [T, K]
              uint32_t* x_sum);  // [T]

/// int_linear for input codes of at most 8 bits already in byte form (to_bytes), so that
/// several linears on one input convert it once. On the VNNI kernels the requantization runs
/// on each GEMM tile while it is in cache.
void int_linear_u8(const uint8_t* xu,       // [T, K]
                   const uint32_t* x_sum,   // [T] sum_k xu mod 2^32
                   int64_t t, const ActQuant& in, const IntLinearWeights& w,
                   const ActQuant& out, int threads, Uint8Gemm& gemm,
                   int32_t* y);             // [T, N] codes of `out`

/// y[i] = clamp(requant(a[i], m) + z, lo, hi) for int64 inputs (the residual -> norm input).
void int_requant(const int64_t* a,  // [n]
                 int64_t n, Multiplier m, int32_t z, int32_t lo, int32_t hi,
                 int32_t* y);       // [n]

/// The integer square root floor(sqrt(v)) of an unsigned 128-bit value (Newton iteration).
UInt128 isqrt_u128(UInt128 v);

/// RMSNorm on centered values d (see the file comment): per row
/// den = sum_c d^2 + eps_term * 2^-eps_shift (eps_term in [0, 2^62), eps_shift in [0, 48]),
/// out[t, c] = clamp(z_out + round(d[t,c] * gain_m[c] * 2^-gain_n[c] / sqrt(den)), lo, hi);
/// den == 0 gives z_out. Gains: |gain_m| in [2^62, 2^63) or 0, gain_n in [32, 400].
void int_rmsnorm(const int32_t* d,       // [T, C]
                 int64_t t, int64_t c, int64_t eps_term, int32_t eps_shift,
                 const int64_t* gain_m,  // [C]
                 const int32_t* gain_n,  // [C]
                 int32_t z_out, int32_t lo, int32_t hi, int threads,
                 int32_t* out);          // [T, C]

/// Half-split RoPE on codes x of `heads` heads at positions 0 … T-1: a = x_i - z_in,
/// b = x_{i+D/2} - z_in, y_i = a cos - b sin, y_{i+D/2} = b cos + a sin (Q62 tables: |a|,
/// |b| < 2^17 keep |y| < 2^80), then clamp(requant_wide(., m) + z_out, 0, 2^b - 1).
void int_rope(const int32_t* x,    // [T, heads, D] codes
              int64_t t, int64_t heads, int64_t d, int32_t z_in,
              const int64_t* cos,  // [P >= T, D/2] round(2^62 cos)
              const int64_t* sin,  // [P >= T, D/2] round(2^62 sin)
              Multiplier m, const ActQuant& out,
              int32_t* y);         // [T, heads, D]

/// Causal scores of one head: s[i, j] = clamp(requant(sum_d (q - z_q)(k - z_k), m) + z_s) for
/// j <= i; entries j > i are left untouched. With `gemm` (and q codes < 2^16, k codes < 2^8)
/// the sums run as a uint8 GEMM (int_matmul), else as int32/int64 loops; both are exact.
void int_qk(const int32_t* q,  // [T, D] codes
            const int32_t* k,  // [T, D] codes
            int64_t t, int64_t d, int32_t z_q, int32_t z_k, Multiplier m, const ActQuant& out,
            int32_t* s,        // [T, T]
            Uint8Gemm* gemm = nullptr);

/// Softmax of one row of n valid scores (docs step 2.6): c_max = max s; e_j =
/// exp_lut[c_max - s_j]; S = sum e_j; p_j = clamp(z_p + round(e_j M / (S 2^n))), exactly.
/// Requires n * max(exp_lut) <= 2^62 (IntModel::load checks it for n <= max_positions).
void int_softmax_row(const int32_t* s,        // [n] score codes
                     int64_t n,
                     const int64_t* exp_lut,  // [lut_size], entries in [0, 2^62]
                     int64_t lut_size, Multiplier m, const ActQuant& out,
                     int32_t* p);             // [n] probability codes

/// Context of one head: c[i, :] = clamp(requant(sum_j (p[i,j] - z_p)(v[j,:] - z_v), m) + z_c),
/// summing j <= i from p and every masked j > i at code clamp(z_p) (zero when z_p is in range).
/// With `gemm` (and v codes < 2^8, p codes < 2^16) the sums run as uint8 GEMMs (int_matmul),
/// else as blocked int32 loops flushed to int64; both are exact.
void int_pv(const int32_t* p,  // [T, T] probability codes (j <= i read)
            const int32_t* v,  // [T, D] codes
            int64_t t, int64_t d, int32_t z_p, int32_t z_v, int32_t p_qmax, Multiplier m,
            const ActQuant& out,
            int32_t* c,        // [T, D]
            Uint8Gemm* gemm = nullptr);

/// SiLU gate: sigma = sigmoid_lut[g]; y = clamp(requant((g - z_g)(sigma - z_sigma), m) + z_y).
void int_silu(const int32_t* g,            // [n] gate codes
              int64_t n, int32_t z_g,
              const int32_t* sigmoid_lut,  // [2^b_g]
              int32_t z_sigma, Multiplier m, const ActQuant& out,
              int32_t* y);                 // [n]

/// Elementwise product: y = clamp(requant((a - z_a)(b - z_b), m) + z_y).
void int_mul(const int32_t* a,  // [n]
             int32_t z_a,
             const int32_t* b,  // [n]
             int32_t z_b, int64_t n, Multiplier m, const ActQuant& out,
             int32_t* y);       // [n]

/// Residual add: r = saturate_int64(r + (x - z_x) M 2^-n), rounded half up when n >= 1, a left
/// shift (exact) when n <= 0 (n >= -30): the residual's scale is a power of two, so an fp32
/// branch scale over it is exactly M 2^-n.
void int_residual_add(int64_t* r,        // [n] residual (in place)
                      const int32_t* x,  // [n] branch codes
                      int32_t z_x, int64_t n, Multiplier m);

/// Embedding: r[t, c] = E[tok_t, c] (the rows are residual codes).
void int_embed(const int64_t* table,       // [V, C] residual codes
               const int32_t* tokens,      // [T]
               int64_t t, int64_t c,
               int64_t* r);                // [T, C]

/// The final norm's input: y[i] = round_half_up(r[i] / 2^shift), saturated to int32.
void int_residual_to_i32(const int64_t* r,  // [n]
                         int64_t n, int shift,
                         int32_t* y);       // [n]

/// lm_head: logits[t, v] = s_f * s_lm[v] * sum_c w[v, c] y[t, c] (int64 accumulator; the only
/// float step).
void int_lm_head(const int16_t* y,        // [T, C] final norm codes
                 const int16_t* w,        // [V, C]
                 const float* w_scale,    // [V] s_lm
                 float s_f, int64_t t, int64_t v, int64_t c, int threads,
                 float* logits,           // [T, V]
                 const VnniPackedI16* packed = nullptr);  // w packed: the VNNI GEMM path

/// Unpacks 4-bit codes: element 2k in the low nibble of byte k, 2k+1 in the high nibble.
std::vector<uint8_t> unpack_4bit(const std::vector<uint8_t>& packed,  // [rows, cols/2]
                                 int64_t rows, int64_t cols);         // -> [rows, cols]

}  // namespace mq::rt
