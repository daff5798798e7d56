// mobilequant/runtime/int_ops.cpp
#include "mobilequant/runtime/int_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <tuple>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "gemmlowp/public/gemmlowp.h"
#include "mobilequant/core/error.h"
#include "mobilequant/runtime/parallel.h"
#include "mobilequant/runtime/scratch.h"

namespace mq::rt {
namespace {

// Scratch buffer tags (scratch.h): one per temporary of each kernel.
struct MatmulLoTag;
struct MatmulHiTag;
struct MatmulSumTag;
struct MatmulProdLoTag;
struct MatmulProdHiTag;
struct LinearAccTag;
struct LinearInputTag;
struct LinearSumTag;
struct LinearColTag;
struct LinearZwTag;
struct LinearMultHiTag;
struct LinearShiftTag;
struct LinearMultLoTag;
struct LinearRawTag;

/// round_half_up(v / 2^s) for a signed 128-bit v with |v| < 2^126; s >= 1.
inline Int128 round_shift(Int128 v, int s) {
  if (s >= 127) return 0;
  return (v + (static_cast<Int128>(1) << (s - 1))) >> s;
}

/// Number of significant bits of v (0 for v == 0).
inline int bit_length(UInt128 v) {
  int n = 0;
  while (v != 0) {
    v >>= 1;
    ++n;
  }
  return n;
}

}  // namespace

PreparedMultiplier PreparedMultiplier::from(Multiplier m) {
  MQ_CHECK(m.shift >= kMinShift, "requantization: shift ", m.shift, " below ", kMinShift,
           " (M ", m.m, "): the multiplier is 2^31 or more");
  return unchecked(m.m, m.shift);
}

bool all_in_range(const int32_t* v, int64_t n, int32_t lo, int32_t hi) {
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] < lo || v[i] > hi) return false;
  }
  return true;
}

void split_bytes(const int32_t* c, int64_t n, bool wide, uint8_t* lo, uint8_t* hi,
                 uint32_t* lo_sum, uint32_t* hi_sum) {
  uint32_t sl = 0, sh = 0;
  for (int64_t j = 0; j < n; ++j) {
    const auto v = static_cast<uint32_t>(c[j]) & 0xffu;
    lo[j] = static_cast<uint8_t>(v);
    sl += v;
  }
  if (wide) {
    for (int64_t j = 0; j < n; ++j) {
      const auto v = (static_cast<uint32_t>(c[j]) >> 8) & 0xffu;
      hi[j] = static_cast<uint8_t>(v);
      sh += v;
    }
  }
  *lo_sum = sl;
  *hi_sum = sh;
}

void IntLinearWeights::pack_for_cpu() {
  packed = vnni_supported() ? VnniPackedB::pack(codes.data(), out_features, in_features)
                            : VnniPackedB{};
}

void IntLinearWeights::compute_row_sums() {
  row_sum.assign(static_cast<size_t>(out_features), 0);
  for (int64_t n = 0; n < out_features; ++n) {
    int64_t s = 0;
    const uint8_t* w = codes.data() + n * in_features;
    for (int64_t k = 0; k < in_features; ++k) s += w[k];
    row_sum[static_cast<size_t>(n)] = s;
  }
}

// ---------------------------------------------------------------- uint8 GEMM (gemmlowp)

struct Uint8Gemm::Impl {
  gemmlowp::GemmContext context;
  int threads = 1;
};

Uint8Gemm::Uint8Gemm(int threads) : impl_(std::make_unique<Impl>()) {
  impl_->threads = std::max(threads, 1);
  impl_->context.set_max_num_threads(impl_->threads);
}

Uint8Gemm::~Uint8Gemm() = default;

void Uint8Gemm::multiply(const uint8_t* a, const uint8_t* b, int64_t t, int64_t n, int64_t k,
                         int32_t* c, const VnniPackedB* packed, int64_t ldb,
                         const uint32_t* a_row_sums) {
  MQ_CHECK(k * 255 * 255 < (int64_t{1} << 31), "uint8 gemm: K = ", k,
           " could overflow the int32 accumulator (at most 33025)");
  if (ldb == 0) ldb = k;
  MQ_CHECK(ldb >= k, "uint8 gemm: row stride ", ldb, " < K = ", k);
  if (use_vnni()) {
    if (packed != nullptr && !packed->empty()) {
      MQ_CHECK(packed->n >= n && packed->k >= k, "uint8 gemm: packed operand [", packed->n, ", ",
               packed->k, "], expected at least [", n, ", ", k, "]");
      vnni_multiply(a, t, *packed, impl_->threads, c, n, k, a_row_sums);
    } else if (ldb == k) {
      vnni_multiply(a, t, VnniPackedB::pack(b, n, k), impl_->threads, c, -1, -1, a_row_sums);
    } else {
      std::vector<uint8_t> dense(static_cast<size_t>(n * k));  // [N, K]
      for (int64_t r = 0; r < n; ++r) std::memcpy(dense.data() + r * k, b + r * ldb, k);
      vnni_multiply(a, t, VnniPackedB::pack(dense.data(), n, k), impl_->threads, c, -1, -1,
                    a_row_sums);
    }
    return;
  }
  const int rows = static_cast<int>(t);
  const int cols = static_cast<int>(n);
  const int depth = static_cast<int>(k);
  gemmlowp::MatrixMap<const uint8_t, gemmlowp::MapOrder::RowMajor> lhs(a, rows, depth);
  gemmlowp::MatrixMap<const uint8_t, gemmlowp::MapOrder::ColMajor> rhs(b, depth, cols,
                                                                        static_cast<int>(ldb));
  gemmlowp::MatrixMap<int32_t, gemmlowp::MapOrder::RowMajor> res(c, rows, cols);
  // Offsets 0 and an empty output pipeline: the raw int32 sums, zero points applied by the caller.
  gemmlowp::GemmWithOutputPipeline<uint8_t, int32_t, gemmlowp::DefaultL8R8BitDepthParams>(
      &impl_->context, lhs, rhs, &res, 0, 0, std::make_tuple());
}

// ---------------------------------------------------------------- linear

void int_matmul(const int32_t* x, int64_t t, int64_t k, int x_bits, int32_t z_x,
                const uint8_t* w, int64_t n, const int32_t* z_w, const int64_t* w_row_sum,
                int threads, Uint8Gemm& gemm, int64_t* acc, const VnniPackedB* w_packed,
                int64_t ldw) {
  const bool wide = x_bits > 8;
  uint8_t* lo = scratch<uint8_t, MatmulLoTag>(static_cast<size_t>(t * k));             // [T, K]
  uint8_t* hi = wide ? scratch<uint8_t, MatmulHiTag>(static_cast<size_t>(t * k)) : nullptr;
  int64_t* x_sum = scratch<int64_t, MatmulSumTag>(static_cast<size_t>(t));             // [T]
  parallel_for(t, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint32_t lo_sum = 0, hi_sum = 0;
      split_bytes(x + i * k, k, wide, lo + i * k, wide ? hi + i * k : nullptr, &lo_sum, &hi_sum);
      x_sum[i] = int64_t{lo_sum} + 256 * int64_t{hi_sum};  // codes < 2^16: exact
    }
  });
  int32_t* p_lo = scratch<int32_t, MatmulProdLoTag>(static_cast<size_t>(t * n));  // [T, N]
  int32_t* p_hi = wide ? scratch<int32_t, MatmulProdHiTag>(static_cast<size_t>(t * n)) : nullptr;
  gemm.multiply(lo, w, t, n, k, p_lo, w_packed, ldw);
  if (wide) gemm.multiply(hi, w, t, n, k, p_hi, w_packed, ldw);
  const int64_t zx = z_x;
  parallel_for(t, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t xs = x_sum[i];
      for (int64_t j = 0; j < n; ++j) {
        const int64_t zw = z_w[j];
        int64_t a = p_lo[i * n + j];
        if (wide) a += int64_t{256} * p_hi[i * n + j];
        acc[i * n + j] = a - zw * xs - zx * w_row_sum[j] + k * zx * zw;
      }
    }
  });
}

void int_linear(const int32_t* x, int64_t t, const ActQuant& in, const IntLinearWeights& w,
                const ActQuant& out, int threads, Uint8Gemm& gemm, int32_t* y) {
  const int64_t n_out = w.out_features;
  const int64_t k_in = w.in_features;
  const int32_t qmax = out.qmax();
  if (in.bits > 8) {
    int64_t* acc = scratch<int64_t, LinearAccTag>(static_cast<size_t>(t * n_out));  // [T, N]
    int_matmul(x, t, k_in, in.bits, in.zero_point, w.codes.data(), n_out, w.zero_point.data(),
               w.row_sum.data(), threads, gemm, acc, &w.packed);
    parallel_for(t, threads, [&](int64_t b, int64_t e) {
      for (int64_t i = b * n_out; i < e * n_out; ++i) {
        const size_t ni = static_cast<size_t>(i % n_out);
        const int64_t q = requant(acc[i], w.multiplier[ni], w.shift[ni]);
        y[i] = clamp_code(q + out.zero_point, 0, qmax);
      }
    });
    return;
  }
  // 8-bit input: one GEMM and a fused epilogue.
  uint8_t* xu = scratch<uint8_t, LinearInputTag>(static_cast<size_t>(t * k_in));  // [T, K]
  uint32_t* x_sum = scratch<uint32_t, LinearSumTag>(static_cast<size_t>(t));      // [T] mod 2^32
  to_bytes(x, t, k_in, threads, xu, x_sum);
  int_linear_u8(xu, x_sum, t, in, w, out, threads, gemm, y);
}

void to_bytes(const int32_t* x, int64_t t, int64_t k, int threads, uint8_t* xu,
              uint32_t* x_sum) {
  parallel_for(t, threads, [&](int64_t b, int64_t e) {
    uint32_t none = 0;
    for (int64_t i = b; i < e; ++i)
      split_bytes(x + i * k, k, false, xu + i * k, nullptr, x_sum + i, &none);
  });
}

void int_linear_u8(const uint8_t* xu, const uint32_t* x_sum, int64_t t, const ActQuant& in,
                   const IntLinearWeights& w, const ActQuant& out, int threads, Uint8Gemm& gemm,
                   int32_t* y) {
  MQ_CHECK(in.bits <= 8, "int_linear_u8: input codes of ", in.bits, " bits (at most 8)");
  const int64_t n_out = w.out_features;
  const int64_t k_in = w.in_features;
  const int32_t qmax = out.qmax();
  // |acc| <= K * 255^2 < 2^31, so the zero-point correction is exact in uint32 wrap-around
  // arithmetic, then read as int32. Per output column: K z_x z_w - z_x sum_k w and z_w (mod
  // 2^32), and the multiplier prepared for int32 accumulators (PreparedMultiplier), so that the
  // epilogue is the same 64-bit arithmetic for every column, without a branch.
  uint32_t* col = scratch<uint32_t, LinearColTag>(static_cast<size_t>(n_out));   // [N]
  uint32_t* zw = scratch<uint32_t, LinearZwTag>(static_cast<size_t>(n_out));     // [N]
  int64_t* mult_hi = scratch<int64_t, LinearMultHiTag>(static_cast<size_t>(n_out)); // [N] M_h
  int64_t* mult_lo = scratch<int64_t, LinearMultLoTag>(static_cast<size_t>(n_out)); // [N] M_l
  int64_t* shift = scratch<int64_t, LinearShiftTag>(static_cast<size_t>(n_out)); // [N] n - 32
  for (int64_t n = 0; n < n_out; ++n) {
    const int64_t z = w.zero_point[static_cast<size_t>(n)];
    col[n] = static_cast<uint32_t>(k_in * in.zero_point * z -
                                   int64_t{in.zero_point} * w.row_sum[static_cast<size_t>(n)]);
    zw[n] = static_cast<uint32_t>(z);
    const PreparedMultiplier pm = PreparedMultiplier::from(
        {w.multiplier[static_cast<size_t>(n)], w.shift[static_cast<size_t>(n)]});
    mult_hi[n] = pm.hi;
    mult_lo[n] = pm.lo;
    shift[n] = pm.s1;
  }
  const int64_t z_out = out.zero_point;
  // y[r0 + r, c0 + j] from the raw sums raw[r * ld + j] (r < rows, j < cols).
  auto requant_block = [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols,
                           const int32_t* raw, int64_t ld) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint32_t xs = x_sum[r0 + r];
      const int32_t* rr = raw + r * ld;
      int32_t* yr = y + (r0 + r) * n_out + c0;
      const uint32_t* cc = col + c0;
      const uint32_t* zc = zw + c0;
      const int64_t* hc = mult_hi + c0;
      const int64_t* lc = mult_lo + c0;
      const int64_t* sc = shift + c0;
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t acc =
            static_cast<int32_t>(static_cast<uint32_t>(rr[j]) - zc[j] * xs + cc[j]);
        // PreparedMultiplier::apply: floor(acc M / 2^31), then round half up by 2^(n - 31).
        const int64_t y31 = acc * hc[j] + ((acc * lc[j]) >> 31);
        const int64_t q = (((y31 >> sc[j]) + 1) >> 1) + z_out;
        yr[j] = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(q, 0), qmax));
      }
    }
  };
  if (use_vnni() && !w.packed.empty()) {
    // The epilogue runs on each tile while it is in cache: no [T, N] int32 sums in memory.
    const VnniTileSink sink = [&](int64_t r0, int rows, int64_t c0, int cols, const int32_t* tile) {
      requant_block(r0, rows, c0, cols, tile, 64);
    };
    vnni_multiply(xu, t, w.packed, threads, nullptr, -1, -1, x_sum, &sink);
    return;
  }
  int32_t* raw = scratch<int32_t, LinearRawTag>(static_cast<size_t>(t * n_out));  // [T, N]
  gemm.multiply(xu, w.codes.data(), t, n_out, k_in, raw, &w.packed);
  parallel_for(t, threads, [&](int64_t b, int64_t e) {
    requant_block(b, e - b, 0, n_out, raw + b * n_out, n_out);
  });
}

// ---------------------------------------------------------------- requant, RMSNorm

void int_requant(const int64_t* a, int64_t n, Multiplier m, int32_t z, int32_t lo, int32_t hi,
                 int32_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = clamp_code(requant(a[i], m.m, m.shift) + z, lo, hi);
}

UInt128 isqrt_u128(UInt128 v) {
  if (v < 2) return v;
  // Start above the root (2^ceil(bits/2) > sqrt(v)); Newton decreases monotonically to floor.
  UInt128 x = static_cast<UInt128>(1) << ((bit_length(v) + 1) / 2);
  while (true) {
    const UInt128 next = (x + v / x) >> 1;
    if (next >= x) return x;
    x = next;
  }
}

namespace {

/// One row of int_rmsnorm's output in double precision, exact unless it says otherwise:
/// y = ((double(d) * double(gain_m)) * rs) * 2^-gain_n with rs = r 2^-(W - k) rounds four
/// times, so |y - Y| <= |Y| 2^-50.9 for the definition Y = d gain_m r / 2^(gain_n + W - k).
/// floor(y + 1/2) can differ from floor(Y + 1/2) only when y + 1/2 lies within that distance
/// of an integer; such rows (and |y| >= 2^50, where y + 1/2 may round) return false, and the
/// caller redoes them in 128-bit arithmetic. The loop has no 128-bit step and vectorizes.
bool rmsnorm_row_double(const int32_t* dr, int64_t c, const double* gain, const double* chan_pow,
                        double rs, int32_t z_out, int32_t lo, int32_t hi, int32_t* yr) {
  constexpr double kMax = 1125899906842624.0;  // 2^50
  constexpr double kRel = 3.552713678800501e-15;  // 2^-48 (the bound above, with margin)
  constexpr double kAbs = 9.094947017729282e-13;  // 2^-40
  bool bad = false;
  for (int64_t k = 0; k < c; ++k) {
    const double y = ((static_cast<double>(dr[k]) * gain[k]) * rs) * chan_pow[k];
    const double h = y + 0.5;
    const double f = std::floor(h);
    const double frac = h - f;
    const double tol = std::fabs(y) * kRel + kAbs;
    bad |= !(std::fabs(y) < kMax) | (frac < tol) | (frac > 1.0 - tol);
    const double q = std::min(std::max(f + z_out, static_cast<double>(lo)), static_cast<double>(hi));
    yr[k] = static_cast<int32_t>(q);
  }
  return !bad;
}

}  // namespace

void int_rmsnorm(const int32_t* d, int64_t t, int64_t c, int64_t eps_term, int32_t eps_shift,
                 const int64_t* gain_m, const int32_t* gain_n, int32_t z_out, int32_t lo,
                 int32_t hi, int threads, int32_t* out) {
  constexpr int kQ = 24;  // the smallest sqrt fraction: 2k >= 48 >= eps_shift keeps E exact
  MQ_CHECK(eps_term >= 0 && eps_term < (int64_t{1} << 62) && eps_shift >= 0 && eps_shift <= 2 * kQ,
           "int_rmsnorm: eps term ", eps_term, " * 2^-", eps_shift,
           ", expected a term in [0, 2^62) and a shift in [0, 48]");
  // E * 2^-F in units of 2^-48 (squared codes): < 2^110.
  const UInt128 eps48 = static_cast<UInt128>(static_cast<uint64_t>(eps_term)) << (2 * kQ - eps_shift);
  // 2^-gain_n per channel and the gains as doubles; the double path needs them (and the row's
  // 2^-(W - k)) far from the subnormal range, which gain_n in [0, 400] and W - k <= 100 give.
  std::vector<double> chan_pow(static_cast<size_t>(c));  // [C]
  std::vector<double> gain(static_cast<size_t>(c));      // [C]
  bool double_ok = true;
  for (int64_t k = 0; k < c; ++k) {
    MQ_CHECK(gain_n[k] >= kMinShift, "int_rmsnorm: gain shift ", gain_n[k], " of channel ", k,
             " below ", kMinShift);
    double_ok &= gain_n[k] <= 400;
    chan_pow[static_cast<size_t>(k)] = std::ldexp(1.0, -std::min(gain_n[k], 400));
    gain[static_cast<size_t>(k)] = static_cast<double>(gain_m[k]);
  }
  parallel_for(t, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int32_t* dr = d + i * c;
      int32_t* yr = out + i * c;
      UInt128 sum_sq = 0;  // sum_c d^2 < C * 2^62
      for (int64_t k = 0; k < c; ++k) {
        const int64_t v = dr[k];
        sum_sq += static_cast<UInt128>(static_cast<uint64_t>(v * v));
      }
      const UInt128 den48 = (sum_sq << (2 * kQ)) + eps48;  // (sum + E 2^-F) 2^48 < 2^126
      if (den48 == 0) {
        for (int64_t k = 0; k < c; ++k) yr[k] = clamp_code(z_out, lo, hi);
        continue;
      }
      const int j2 = (126 - bit_length(den48)) / 2;       // D = den48 4^j2 < 2^126
      const int k_frac = kQ + j2;                          // s ~ sqrt(sum + E 2^-F) 2^k_frac
      const UInt128 s = isqrt_u128(den48 << (2 * j2));     // in [2^62, 2^63)
      const int w_bits = bit_length(s) + 61;
      const UInt128 r = (static_cast<UInt128>(1) << w_bits) / s;  // in (2^61, 2^62]
      const auto r64 = static_cast<int64_t>(r);
      if (double_ok &&
          rmsnorm_row_double(dr, c, gain.data(), chan_pow.data(),
                             std::ldexp(static_cast<double>(r64), k_frac - w_bits), z_out, lo,
                             hi, yr)) {
        continue;
      }
      for (int64_t k = 0; k < c; ++k) {
        const Int128 dr64 = static_cast<Int128>(dr[k]) * r64;  // |.| < 2^93
        const int64_t q = requant_wide(dr64, gain_m[k], gain_n[k] + w_bits - k_frac);
        yr[k] = clamp_code(q + z_out, lo, hi);
      }
    }
  });
}

// ---------------------------------------------------------------- RoPE

void int_rope(const int32_t* x, int64_t t, int64_t heads, int64_t d, int32_t z_in,
              const int64_t* cos, const int64_t* sin, Multiplier m, const ActQuant& out,
              int32_t* y) {
  MQ_CHECK(m.shift >= kMinShift, "int_rope: shift ", m.shift, " below ", kMinShift);
  const int64_t half = d / 2;
  const int32_t qmax = out.qmax();
  for (int64_t i = 0; i < t; ++i) {
    const int64_t* cr = cos + i * half;
    const int64_t* sr = sin + i * half;
    for (int64_t h = 0; h < heads; ++h) {
      const int32_t* xr = x + (i * heads + h) * d;
      int32_t* yr = y + (i * heads + h) * d;
      for (int64_t j = 0; j < half; ++j) {
        const Int128 a = xr[j] - z_in;  // |a|, |b| < 2^17
        const Int128 b = xr[j + half] - z_in;
        const Int128 o1 = a * cr[j] - b * sr[j];  // |.| < 2^80
        const Int128 o2 = b * cr[j] + a * sr[j];
        yr[j] = clamp_code(requant_wide(o1, m.m, m.shift) + out.zero_point, 0, qmax);
        yr[j + half] = clamp_code(requant_wide(o2, m.m, m.shift) + out.zero_point, 0, qmax);
      }
    }
  }
}

// ---------------------------------------------------------------- attention

void int_qk(const int32_t* q, const int32_t* k, int64_t t, int64_t d, int32_t z_q, int32_t z_k,
            Multiplier m, const ActQuant& out, int32_t* s, Uint8Gemm* gemm) {
  std::vector<int32_t> qc(static_cast<size_t>(t * d));  // [T, D] centered q
  std::vector<int32_t> kc(static_cast<size_t>(t * d));  // [T, D] centered k
  int64_t q_abs = 0, k_abs = 0;
  for (int64_t i = 0; i < t * d; ++i) {
    qc[static_cast<size_t>(i)] = q[i] - z_q;
    kc[static_cast<size_t>(i)] = k[i] - z_k;
    q_abs = std::max<int64_t>(q_abs, std::abs(qc[static_cast<size_t>(i)]));
    k_abs = std::max<int64_t>(k_abs, std::abs(kc[static_cast<size_t>(i)]));
  }
  const int32_t qmax_out = out.qmax();
  if (gemm != nullptr && all_in_range(q, t * d, 0, 65535) && all_in_range(k, t * d, 0, 255)) {
    // As a uint8 GEMM (k codes as the 8-bit operand): the full [T, T], upper triangle unused.
    std::vector<uint8_t> ku(k, k + t * d);                        // [T, D]
    std::vector<int32_t> zk(static_cast<size_t>(t), z_k);         // [T]
    std::vector<int64_t> ks(static_cast<size_t>(t), 0);           // [T] sum_x k[j, x]
    for (int64_t j = 0; j < t; ++j)
      for (int64_t x = 0; x < d; ++x) ks[static_cast<size_t>(j)] += k[j * d + x];
    std::vector<int64_t> acc(static_cast<size_t>(t * t));         // [T, T]
    const int q_bits = all_in_range(q, t * d, 0, 255) ? 8 : 16;
    int_matmul(q, t, d, q_bits, z_q, ku.data(), t, zk.data(), ks.data(), 1, *gemm, acc.data());
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        s[i * t + j] = clamp_code(requant(acc[static_cast<size_t>(i * t + j)], m.m, m.shift) +
                                      out.zero_point, 0, qmax_out);
      }
    }
    return;
  }
  // int32 sums are exact when every partial sum is bounded by D * max|q| * max|k| < 2^31.
  const bool narrow = q_abs * k_abs * d < (int64_t{1} << 31);
  const int32_t qmax = out.qmax();
  if (narrow) {
    // k transposed so that the inner loop runs over keys j (contiguous, no reductions).
    std::vector<int32_t> kt(static_cast<size_t>(d * t));  // [D, T]
    for (int64_t j = 0; j < t; ++j)
      for (int64_t x = 0; x < d; ++x) kt[static_cast<size_t>(x * t + j)] = kc[static_cast<size_t>(j * d + x)];
    std::vector<int32_t> row(static_cast<size_t>(t));     // [T] sums of query i
    for (int64_t i = 0; i < t; ++i) {
      const int32_t* qr = qc.data() + i * d;
      int32_t* acc = row.data();
      std::fill(acc, acc + i + 1, 0);
      for (int64_t x = 0; x < d; ++x) {
        const int32_t qx = qr[x];
        const int32_t* kr = kt.data() + x * t;
        for (int64_t j = 0; j <= i; ++j) acc[j] += qx * kr[j];
      }
      for (int64_t j = 0; j <= i; ++j) {
        s[i * t + j] = clamp_code(requant32(acc[j], m.m, m.shift) + out.zero_point, 0, qmax);
      }
    }
    return;
  }
  for (int64_t i = 0; i < t; ++i) {
    const int32_t* qr = qc.data() + i * d;
    for (int64_t j = 0; j <= i; ++j) {
      const int32_t* kr = kc.data() + j * d;
      int64_t acc = 0;
      for (int64_t x = 0; x < d; ++x) acc += static_cast<int64_t>(qr[x]) * kr[x];
      s[i * t + j] = clamp_code(requant(acc, m.m, m.shift) + out.zero_point, 0, qmax);
    }
  }
}

void int_softmax_row(const int32_t* s, int64_t n, const int64_t* exp_lut, int64_t lut_size,
                     Multiplier m, const ActQuant& out, int32_t* p) {
  MQ_CHECK(m.m >= 0 && m.shift >= 32 && m.shift <= 127, "softmax: multiplier (", m.m, ", ",
           m.shift, ") must be >= 0 with shift in [32, 127]");
  int32_t c_max = s[0];
  for (int64_t j = 1; j < n; ++j) c_max = std::max(c_max, s[j]);
  uint64_t sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t idx = static_cast<int64_t>(c_max) - s[j];
    MQ_CHECK(idx >= 0 && idx < lut_size, "softmax: exp_lut index ", idx, " outside [0, ",
             lut_size, ")");
    sum += static_cast<uint64_t>(exp_lut[idx]);
  }
  const int32_t qmax = out.qmax();
  if (sum == 0) {
    for (int64_t j = 0; j < n; ++j) p[j] = clamp_code(out.zero_point, 0, qmax);
    return;
  }
  const SoftmaxDivider div(sum, m);
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t q =
        div.quotient(static_cast<uint64_t>(exp_lut[static_cast<int64_t>(c_max) - s[j]]));
    p[j] = clamp_code(static_cast<int64_t>(std::min<uint64_t>(q, INT32_MAX)) + out.zero_point,
                      0, qmax);
  }
}

void int_pv(const int32_t* p, const int32_t* v, int64_t t, int64_t d, int32_t z_p, int32_t z_v,
            int32_t p_qmax, Multiplier m, const ActQuant& out, int32_t* c, Uint8Gemm* gemm) {
  const int64_t masked = static_cast<int64_t>(clamp_code(z_p, 0, p_qmax)) - z_p;
  if (gemm != nullptr && p_qmax <= 65535 && all_in_range(v, t * d, 0, 255)) {
    // As a uint8 GEMM: probabilities [T, T] (masked j > i at code clamp(z_p)) x v^T [D, T].
    const int32_t masked_code = clamp_code(z_p, 0, p_qmax);
    std::vector<int32_t> pf(static_cast<size_t>(t * t));          // [T, T]
    for (int64_t i = 0; i < t; ++i) {
      std::copy_n(p + i * t, i + 1, pf.data() + i * t);
      std::fill(pf.data() + i * t + i + 1, pf.data() + (i + 1) * t, masked_code);
    }
    std::vector<uint8_t> vt(static_cast<size_t>(d * t));          // [D, T]
    std::vector<int64_t> vs(static_cast<size_t>(d), 0);           // [D] sum_j v[j, x]
    for (int64_t j = 0; j < t; ++j) {
      for (int64_t x = 0; x < d; ++x) {
        vt[static_cast<size_t>(x * t + j)] = static_cast<uint8_t>(v[j * d + x]);
        vs[static_cast<size_t>(x)] += v[j * d + x];
      }
    }
    std::vector<int32_t> zv(static_cast<size_t>(d), z_v);        // [D]
    std::vector<int64_t> acc(static_cast<size_t>(t * d));         // [T, D]
    int_matmul(pf.data(), t, t, 16, z_p, vt.data(), d, zv.data(), vs.data(), 1, *gemm,
               acc.data());
    const int32_t qmax_out = out.qmax();
    for (int64_t i = 0; i < t * d; ++i) {
      c[i] = clamp_code(requant(acc[static_cast<size_t>(i)], m.m, m.shift) + out.zero_point, 0,
                        qmax_out);
    }
    return;
  }
  std::vector<int32_t> vc(static_cast<size_t>(t * d));   // [T, D] centered v
  int64_t v_abs = 1;
  for (int64_t i = 0; i < t * d; ++i) {
    vc[static_cast<size_t>(i)] = v[i] - z_v;
    v_abs = std::max<int64_t>(v_abs, std::abs(vc[static_cast<size_t>(i)]));
  }
  // Blocked accumulation: `block` products of at most p_abs * v_abs each sum to < 2^31 in
  // int32, then the block is added to the int64 accumulator.
  const int64_t p_abs = std::max<int64_t>({std::abs(int64_t{z_p}), std::abs(int64_t{p_qmax} - z_p), 1});
  const int64_t block = std::max<int64_t>(1, ((int64_t{1} << 31) - 1) / (p_abs * v_abs));
  std::vector<int64_t> tail(static_cast<size_t>(d), 0);  // [D] sum_{j > i} (v_j - z_v)
  if (masked != 0) {
    for (int64_t j = 1; j < t; ++j)
      for (int64_t x = 0; x < d; ++x) tail[static_cast<size_t>(x)] += vc[static_cast<size_t>(j * d + x)];
  }
  std::vector<int64_t> acc(static_cast<size_t>(d));      // [D]
  std::vector<int32_t> acc32(static_cast<size_t>(d));    // [D] the current block
  const int32_t qmax = out.qmax();
  for (int64_t i = 0; i < t; ++i) {
    std::fill(acc.begin(), acc.end(), 0);
    const int32_t* pr = p + i * t;
    for (int64_t j0 = 0; j0 <= i; j0 += block) {
      const int64_t j1 = std::min(i + 1, j0 + block);
      std::fill(acc32.begin(), acc32.end(), 0);
      int32_t* a32 = acc32.data();
      for (int64_t j = j0; j < j1; ++j) {
        const int32_t pj = pr[j] - z_p;
        const int32_t* vr = vc.data() + j * d;
        for (int64_t x = 0; x < d; ++x) a32[x] += pj * vr[x];
      }
      for (int64_t x = 0; x < d; ++x) acc[static_cast<size_t>(x)] += a32[x];
    }
    for (int64_t x = 0; x < d; ++x) {
      int64_t a = acc[static_cast<size_t>(x)];
      if (masked != 0) a += masked * tail[static_cast<size_t>(x)];
      c[i * d + x] = clamp_code(requant(a, m.m, m.shift) + out.zero_point, 0, qmax);
    }
    if (masked != 0 && i + 1 < t) {
      for (int64_t x = 0; x < d; ++x)
        tail[static_cast<size_t>(x)] -= vc[static_cast<size_t>((i + 1) * d + x)];
    }
  }
}

// ---------------------------------------------------------------- MLP, residual, embedding

namespace {

/// y[i] = clamp(requant(prod_i, m) + z, 0, qmax) for the products prod_i = a_i * b_i that
/// `prod(i, a, b)` yields as int64 pairs. The products of codes are usually below 2^31 in
/// magnitude, so that requant is PreparedMultiplier::apply, in 64-bit arithmetic. That loop
/// vectorizes; if any product is 2^31 or more in magnitude, the 128-bit requant redoes the
/// whole range.
template <class Factors>
void requant_products(int64_t n, Multiplier m, const ActQuant& out, int32_t* y,
                      Factors&& factors) {
  const int32_t qmax = out.qmax();
  const int64_t z = out.zero_point;
  const PreparedMultiplier pm = PreparedMultiplier::from(m);
  constexpr int64_t kLimit = int64_t{1} << 31;
  bool wide = false;
  for (int64_t i = 0; i < n; ++i) {
    int64_t a, b;
    factors(i, a, b);
    const int64_t prod = a * b;  // codes minus int32 zero points: |a|, |b| < 2^31 + 2^16
    wide |= prod >= kLimit || prod <= -kLimit;
    // A wide product is clamped into range here (its result is redone below).
    const int64_t p = std::min(std::max(prod, -kLimit + 1), kLimit - 1);
    y[i] = clamp_code(pm.apply(p) + z, 0, qmax);
  }
  if (!wide) return;
  for (int64_t i = 0; i < n; ++i) {
    int64_t a, b;
    factors(i, a, b);
    y[i] = clamp_code(requant(a * b, m.m, m.shift) + z, 0, qmax);
  }
}

}  // namespace

void int_silu(const int32_t* g, int64_t n, int32_t z_g, const int32_t* sigmoid_lut,
              int32_t z_sigma, Multiplier m, const ActQuant& out, int32_t* y) {
  requant_products(n, m, out, y, [&](int64_t i, int64_t& a, int64_t& b) {
    a = int64_t{g[i]} - z_g;
    b = int64_t{sigmoid_lut[g[i]]} - z_sigma;
  });
}

void int_mul(const int32_t* a, int32_t z_a, const int32_t* b, int32_t z_b, int64_t n,
             Multiplier m, const ActQuant& out, int32_t* y) {
  requant_products(n, m, out, y, [&](int64_t i, int64_t& fa, int64_t& fb) {
    fa = int64_t{a[i]} - z_a;
    fb = int64_t{b[i]} - z_b;
  });
}

void int_residual_add(int64_t* r, const int32_t* x, int32_t z_x, int64_t n, Multiplier m) {
  MQ_CHECK(m.shift >= kResidualAddMinShift, "int_residual_add: shift ", m.shift, " below ",
           kResidualAddMinShift);
  for (int64_t i = 0; i < n; ++i) {
    const Int128 d = static_cast<int64_t>(x[i]) - z_x;  // |d| < 2^32
    // Exact, unsaturated: a rounded shift of |d M| < 2^95, or a left shift to below 2^125.
    const Int128 add = m.shift >= 1 ? (d * m.m + (Int128{1} << (m.shift - 1))) >> m.shift
                                    : (d * m.m) * (Int128{1} << -m.shift);
    const Int128 sum = static_cast<Int128>(r[i]) + add;
    r[i] = sum > INT64_MAX ? INT64_MAX : sum < INT64_MIN ? INT64_MIN : static_cast<int64_t>(sum);
  }
}

void int_embed(const int64_t* table, const int32_t* tokens, int64_t t, int64_t c, int64_t* r) {
  for (int64_t i = 0; i < t; ++i) std::copy_n(table + tokens[i] * c, c, r + i * c);
}

void int_residual_to_i32(const int64_t* r, int64_t n, int shift, int32_t* y) {
  for (int64_t i = 0; i < n; ++i) {
    y[i] = clamp_code(static_cast<int64_t>(round_shift(r[i], shift)), INT32_MIN, INT32_MAX);
  }
}

// ---------------------------------------------------------------- lm_head

namespace {

constexpr int64_t kLmRows = 4;  // y rows per micro-kernel: each W load feeds 4 dot products

/// acc[r] = sum_c w[c] * y[r][c] for kLmRows rows of int16 codes in [-32767, 32767].
/// vpmaddwd sums pairs in int32 (each lane at most 2 * 32767 * y_abs); `block` such vectors
/// (block * 2 * 32767 * y_abs < 2^31, y_abs the rows' largest |y|) are summed in int32, then
/// widened to int64. block = 1 is the worst case (|y| near 32767); typical rows allow more.
void dot4_i16(const int16_t* w, const int16_t* const* y, int64_t n, int64_t block,
              int64_t* acc) {
  int64_t k = 0;
#ifdef __AVX2__
  __m256i sum[kLmRows];
  for (auto& s : sum) s = _mm256_setzero_si256();
  const int64_t n16 = n - n % 16;
  while (k < n16) {
    const int64_t k_end = std::min(n16, k + 16 * block);
    __m256i s32[kLmRows];
    for (auto& s : s32) s = _mm256_setzero_si256();
    for (; k < k_end; k += 16) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
#pragma GCC unroll 4
      for (int64_t r = 0; r < kLmRows; ++r) {
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[r] + k));
        s32[r] = _mm256_add_epi32(s32[r], _mm256_madd_epi16(wv, yv));
      }
    }
#pragma GCC unroll 4
    for (int64_t r = 0; r < kLmRows; ++r) {
      const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(s32[r]));
      const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(s32[r], 1));
      sum[r] = _mm256_add_epi64(sum[r], _mm256_add_epi64(lo, hi));
    }
  }
  for (int64_t r = 0; r < kLmRows; ++r) {
    alignas(32) int64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum[r]);
    acc[r] = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  }
#else
  (void)block;
  for (int64_t r = 0; r < kLmRows; ++r) acc[r] = 0;
#endif
  for (; k < n; ++k) {
    for (int64_t r = 0; r < kLmRows; ++r) acc[r] += static_cast<int32_t>(w[k]) * y[r][k];
  }
}

}  // namespace

void int_lm_head(const int16_t* y, const int16_t* w, const float* w_scale, float s_f, int64_t t,
                 int64_t v, int64_t c, int threads, float* logits, const VnniPackedI16* packed) {
  if (use_vnni()) {
    if (packed != nullptr && !packed->empty()) {
      MQ_CHECK(packed->n == v && packed->k == c, "int_lm_head: packed weights [", packed->n,
               ", ", packed->k, "], expected [", v, ", ", c, "]");
      vnni_lm_head(y, t, *packed, w_scale, s_f, threads, logits);
    } else {
      vnni_lm_head(y, t, VnniPackedI16::pack(w, v, c), w_scale, s_f, threads, logits);
    }
    return;
  }
  constexpr int64_t kTokenBlock = 32;  // y rows kept hot in cache while W streams
  std::vector<int64_t> row_abs(static_cast<size_t>(t), 0);  // [T] max_c |y[t, c]|
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t k = 0; k < c; ++k) {
      row_abs[static_cast<size_t>(i)] =
          std::max<int64_t>(row_abs[static_cast<size_t>(i)], std::abs(int64_t{y[i * c + k]}));
    }
  }
  parallel_for(v, threads, [&](int64_t vb, int64_t ve) {
    std::vector<int16_t> zero(static_cast<size_t>(c), 0);  // [C] padding row
    for (int64_t t0 = 0; t0 < t; t0 += kTokenBlock) {
      const int64_t t1 = std::min(t, t0 + kTokenBlock);
      for (int64_t j = vb; j < ve; ++j) {
        const int16_t* wr = w + j * c;
        const double scale = static_cast<double>(s_f) * static_cast<double>(w_scale[j]);
        for (int64_t i = t0; i < t1; i += kLmRows) {
          const int16_t* rows[kLmRows];
          int64_t y_abs = 1;
          for (int64_t r = 0; r < kLmRows; ++r) {
            rows[r] = i + r < t1 ? y + (i + r) * c : zero.data();
            if (i + r < t1) y_abs = std::max(y_abs, row_abs[static_cast<size_t>(i + r)]);
          }
          const int64_t block = std::max<int64_t>(1, ((int64_t{1} << 31) - 1) / (2 * 32767 * y_abs));
          int64_t acc[kLmRows];
          dot4_i16(wr, rows, c, block, acc);
          for (int64_t r = 0; r < kLmRows && i + r < t1; ++r) {
            logits[(i + r) * v + j] = static_cast<float>(scale * static_cast<double>(acc[r]));
          }
        }
      }
    }
  });
}

std::vector<uint8_t> unpack_4bit(const std::vector<uint8_t>& packed, int64_t rows,
                                 int64_t cols) {
  const int64_t pcols = (cols + 1) / 2;
  MQ_CHECK(static_cast<int64_t>(packed.size()) == rows * pcols, "unpack_4bit: ", packed.size(),
           " bytes, expected ", rows * pcols, " for [", rows, ", ", cols, "]");
  std::vector<uint8_t> out(static_cast<size_t>(rows * cols));  // [rows, cols]
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) {
      const uint8_t byte = packed[static_cast<size_t>(r * pcols + k / 2)];
      out[static_cast<size_t>(r * cols + k)] = (k % 2 == 0) ? (byte & 0x0f) : (byte >> 4);
    }
  }
  return out;
}

}  // namespace mq::rt
