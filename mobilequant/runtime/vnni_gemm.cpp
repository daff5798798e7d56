// mobilequant/runtime/vnni_gemm.cpp
#include "mobilequant/runtime/vnni_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MQ_VNNI_X86 1
#endif

#include "mobilequant/core/error.h"
#include "mobilequant/runtime/parallel.h"

namespace mq::rt {
namespace {

constexpr int64_t kMaxK = 33025;  // K * 255^2 < 2^31
constexpr int kMr = 6;            // rows per micro-tile
constexpr int kNb = 4;            // 16-column blocks per micro-tile (64 columns)
constexpr int kTileCols = 16 * kNb;

GemmBackend initial_backend() {
  const char* env = std::getenv("MQ_RUNTIME_GEMM");
  if (env == nullptr || std::strcmp(env, "") == 0 || std::strcmp(env, "auto") == 0) {
    return GemmBackend::kAuto;
  }
  if (std::strcmp(env, "gemmlowp") == 0) return GemmBackend::kGemmlowp;
  if (std::strcmp(env, "vnni") == 0) return GemmBackend::kVnni;
  throw Error(std::string("MQ_RUNTIME_GEMM='") + env + "': expected auto, gemmlowp or vnni");
}

std::atomic<int>& backend_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_backend())};
  return slot;
}

#ifdef MQ_VNNI_X86
/// One micro-tile: c[r, j] (r < MR, j < 16 NB, clipped to n_valid columns) =
/// sum_k a[r, k] (b[j, k] - 128) + corr[r], a [MR, lda] uint8 padded to k4. Written so that
/// GCC 12 keeps the MR x NB sums in registers and folds the b loads into vpdpbusd (checked in
/// the disassembly: 24 vpdpbusd and 6 broadcasts per depth step for 6 x 4, nothing else).
template <int MR, int NB>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void micro_tile(
    const uint8_t* a, int64_t lda,           // [MR, k4]
    const int8_t* b, int64_t block_stride,   // NB blocks of [k4 / 4, 16, 4]
    int64_t k4, const int32_t* corr,         // [MR] 128 sum_k a
    int32_t (*tile)[kTileCols]) {            // [MR, 64] the sums
  // The sums start at the correction (an add after the loop makes GCC 12 copy every sum
  // through the stack on each step).
  __m512i acc[MR][NB];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const __m512i cr = _mm512_set1_epi32(corr[r]);
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[r][j] = cr;
  }
  const int8_t* bp = b;
  for (int64_t kk = 0; kk < k4; kk += 4, bp += 64) {
    __m512i bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = _mm512_loadu_si512(bp + j * block_stride);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + kk, sizeof(quad));
      const __m512i av = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, bv[j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) _mm512_store_si512(tile[r] + 16 * j, acc[r][j]);
}

using TileFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, const int32_t*,
                        int32_t (*)[kTileCols]);

template <int MR>
constexpr TileFn tile_for(int nb) {
  return nb == 1 ? micro_tile<MR, 1> : nb == 2 ? micro_tile<MR, 2>
                                     : nb == 3 ? micro_tile<MR, 3>
                                               : micro_tile<MR, 4>;
}

TileFn tile_fn(int mr, int nb) {
  switch (mr) {
    case 1: return tile_for<1>(nb);
    case 2: return tile_for<2>(nb);
    case 3: return tile_for<3>(nb);
    case 4: return tile_for<4>(nb);
    case 5: return tile_for<5>(nb);
    default: return tile_for<6>(nb);
  }
}
#endif

}  // namespace

bool vnni_supported() {
#ifdef MQ_VNNI_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
#else
  return false;
#endif
}

void set_gemm_backend(GemmBackend b) {
  MQ_CHECK(b != GemmBackend::kVnni || vnni_supported(),
           "gemm backend vnni: this CPU has no AVX-512 VNNI (use auto or gemmlowp)");
  backend_slot().store(static_cast<int>(b));
}

bool use_vnni() {
  const auto b = static_cast<GemmBackend>(backend_slot().load());
  if (b == GemmBackend::kVnni) {
    MQ_CHECK(vnni_supported(), "MQ_RUNTIME_GEMM=vnni: this CPU has no AVX-512 VNNI");
    return true;
  }
  return b == GemmBackend::kAuto && vnni_supported();
}

std::string gemm_backend_name() { return use_vnni() ? "vnni" : "gemmlowp"; }

VnniPackedB VnniPackedB::pack(const uint8_t* b, int64_t n, int64_t k) {
  MQ_CHECK(n >= 1 && k >= 1 && k <= kMaxK, "vnni pack: [", n, ", ", k,
           "] needs N >= 1 and 1 <= K <= ", kMaxK, " (exact int32 sums)");
  VnniPackedB p;
  p.n = n;
  p.k = k;
  p.k4 = (k + 3) / 4 * 4;
  p.blocks = (n + 15) / 16;
  p.data.assign(static_cast<size_t>(p.blocks * p.k4 * 16), 0);
  for (int64_t row = 0; row < n; ++row) {
    const int64_t blk = row / 16, lane = row % 16;
    int8_t* dst = p.data.data() + blk * p.k4 * 16 + lane * 4;
    const uint8_t* src = b + row * k;
    for (int64_t kk = 0; kk < k; ++kk) {
      dst[(kk / 4) * 64 + kk % 4] = static_cast<int8_t>(static_cast<int32_t>(src[kk]) - 128);
    }
  }
  return p;
}

void vnni_multiply(const uint8_t* a, int64_t t, const VnniPackedB& b, int threads, int32_t* c,
                   int64_t n_cols, int64_t depth, const uint32_t* a_row_sums,
                   const VnniTileSink* sink) {
#ifdef MQ_VNNI_X86
  MQ_CHECK(vnni_supported(), "vnni_multiply: this CPU has no AVX-512 VNNI");
  MQ_CHECK(!b.empty() && t >= 1, "vnni_multiply: empty operand (T = ", t, ", N = ", b.n, ")");
  MQ_CHECK(c != nullptr || sink != nullptr, "vnni_multiply: neither an output nor a tile sink");
  const int64_t n = n_cols < 0 ? b.n : n_cols, k = depth < 0 ? b.k : depth;
  MQ_CHECK(n >= 1 && n <= b.n && k >= 1 && k <= b.k, "vnni_multiply: a [", n, ", ", k,
           "] view of a packed [", b.n, ", ", b.k, "] operand");
  const int64_t k4 = (k + 3) / 4 * 4, blocks = (n + 15) / 16;
  // a with rows padded to k4 (the kernel reads depths four at a time) when K is not. The
  // padding is 0, so the packed depths k … k4 - 1 (padding, or a longer operand's next
  // depths when this is a depth prefix) add nothing.
  const uint8_t* ap = a;
  std::vector<uint8_t> padded;  // [T, k4]
  if (k4 != k) {
    padded.resize(static_cast<size_t>(t * k4));
    for (int64_t i = 0; i < t; ++i) {
      std::memcpy(padded.data() + i * k4, a + i * k, k);
      std::memset(padded.data() + i * k4 + k, 0, k4 - k);
    }
    ap = padded.data();
  }
  std::vector<int32_t> corr(static_cast<size_t>(t));  // [T] 128 sum_k a (mod 2^32)
  if (a_row_sums != nullptr) {
    for (int64_t i = 0; i < t; ++i) corr[static_cast<size_t>(i)] = static_cast<int32_t>(a_row_sums[i] * 128u);
  } else {
    parallel_for(t, threads, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        uint32_t s = 0;
        for (int64_t kk = 0; kk < k; ++kk) s += a[i * k + kk];
        corr[static_cast<size_t>(i)] = static_cast<int32_t>(s * 128u);
      }
    });
  }
  const int64_t n_tiles = (blocks + kNb - 1) / kNb;
  const int64_t m_tiles = (t + kMr - 1) / kMr;
  const int64_t block_stride = b.k4 * 16;  // the packing's, not the view's
  // Column tiles outermost: a thread's contiguous chunk reuses one packed panel across rows.
  parallel_for(n_tiles * m_tiles, threads, [&](int64_t lo, int64_t hi) {
    alignas(64) int32_t tile[kMr][kTileCols];  // [MR, 64]
    for (int64_t idx = lo; idx < hi; ++idx) {
      const int64_t nt = idx / m_tiles, mt = idx % m_tiles;
      const int64_t r0 = mt * kMr, b0 = nt * kNb;
      const int mr = static_cast<int>(std::min<int64_t>(kMr, t - r0));
      const int nb = static_cast<int>(std::min<int64_t>(kNb, blocks - b0));
      tile_fn(mr, nb)(ap + r0 * k4, k4, b.data.data() + b0 * block_stride, block_stride, k4,
                      corr.data() + r0, tile);
      const int cols = static_cast<int>(std::min<int64_t>(n - 16 * b0, kTileCols));
      if (sink != nullptr) {
        (*sink)(r0, mr, 16 * b0, cols, &tile[0][0]);
      } else {
        for (int r = 0; r < mr; ++r)
          std::memcpy(c + (r0 + r) * n + 16 * b0, tile[r], sizeof(int32_t) * cols);
      }
    }
  });
#else
  (void)a; (void)t; (void)b; (void)threads; (void)c; (void)n_cols; (void)depth;
  (void)a_row_sums; (void)sink;
  throw Error("vnni_multiply: not an x86-64 build");
#endif
}

VnniPackedI16 VnniPackedI16::pack(const int16_t* w, int64_t n, int64_t k) {
  MQ_CHECK(n >= 1 && k >= 1, "vnni pack (int16): [", n, ", ", k, "] must not be empty");
  VnniPackedI16 p;
  p.n = n;
  p.k = k;
  p.k2 = (k + 1) / 2;
  p.blocks = (n + 15) / 16;
  p.data.assign(static_cast<size_t>(p.blocks * p.k2 * 32), 0);
  for (int64_t row = 0; row < n; ++row) {
    int16_t* dst = p.data.data() + (row / 16) * p.k2 * 32 + (row % 16) * 2;
    for (int64_t kk = 0; kk < k; ++kk) dst[(kk / 2) * 32 + kk % 2] = w[row * k + kk];
  }
  return p;
}

#ifdef MQ_VNNI_X86
namespace {

constexpr int kLmMr = 3;         // token rows per tile
constexpr int kLmNb = 4;         // 16-row vocabulary blocks per tile
constexpr int64_t kLmFlush = 128;  // depth pairs summed in int32 before the int64 flush

/// One tile: sums[r][j] += S over depth pairs [p0, p1) for MR token rows (hi/lo pair arrays
/// as int32 [rows, k2]) and NB vocabulary blocks.
template <int MR, int NB>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void lm_tile(
    const int32_t* hi, const int32_t* lo, int64_t k2,  // [MR, k2] packed (y0, y1) pairs
    const int16_t* w, int64_t block_stride,            // NB blocks of [k2, 16, 2]
    int64_t p0, int64_t p1, int64_t (*sums)[16 * kLmNb]) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i ah[MR][NB], al[MR][NB];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) ah[r][j] = al[r][j] = zero;
  const int16_t* wp = w + p0 * 32;
  for (int64_t pp = p0; pp < p1; ++pp, wp += 32) {
    __m512i wv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) wv[j] = _mm512_loadu_si512(wp + j * block_stride);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m512i vh = _mm512_set1_epi32(hi[r * k2 + pp]);
      const __m512i vl = _mm512_set1_epi32(lo[r * k2 + pp]);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) {
        ah[r][j] = _mm512_dpwssd_epi32(ah[r][j], vh, wv[j]);
        al[r][j] = _mm512_dpwssd_epi32(al[r][j], vl, wv[j]);
      }
    }
  }
  // Constant indices only (unrolled): an indexed read of ah/al would keep them in memory.
  alignas(64) int32_t th[MR][16 * NB], tl[MR][16 * NB];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      _mm512_store_si512(th[r] + 16 * j, ah[r][j]);
      _mm512_store_si512(tl[r] + 16 * j, al[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 16 * NB; ++i) sums[r][i] += 256 * int64_t{th[r][i]} + tl[r][i];
}

using LmTileFn = void (*)(const int32_t*, const int32_t*, int64_t, const int16_t*, int64_t,
                          int64_t, int64_t, int64_t (*)[16 * kLmNb]);

template <int MR>
LmTileFn lm_tile_for(int nb) {
  return nb == 1 ? lm_tile<MR, 1> : nb == 2 ? lm_tile<MR, 2> : nb == 3 ? lm_tile<MR, 3>
                                                                       : lm_tile<MR, 4>;
}

}  // namespace

void vnni_lm_head(const int16_t* y, int64_t t, const VnniPackedI16& w, const float* w_scale,
                  float s_f, int threads, float* logits) {
  MQ_CHECK(vnni_supported(), "vnni_lm_head: this CPU has no AVX-512 VNNI");
  MQ_CHECK(!w.empty() && t >= 1, "vnni_lm_head: empty operand (T = ", t, ", V = ", w.n, ")");
  const int64_t c = w.k, k2 = w.k2, v = w.n;
  // y = 256 hi + lo, as (element 2p, element 2p + 1) int16 pairs in one int32 each.
  std::vector<int32_t> hi(static_cast<size_t>(t * k2)), lo(hi.size());  // [T, k2]
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t pp = 0; pp < k2; ++pp) {
      int16_t h[2] = {0, 0}, l[2] = {0, 0};
      for (int e = 0; e < 2; ++e) {
        const int64_t cc = 2 * pp + e;
        if (cc >= c) break;
        const int32_t x = y[i * c + cc];
        h[e] = static_cast<int16_t>(x >> 8);  // arithmetic: floor(x / 256)
        l[e] = static_cast<int16_t>(x & 0xff);
      }
      std::memcpy(&hi[static_cast<size_t>(i * k2 + pp)], h, sizeof(int32_t));
      std::memcpy(&lo[static_cast<size_t>(i * k2 + pp)], l, sizeof(int32_t));
    }
  }
  const int64_t n_tiles = (w.blocks + kLmNb - 1) / kLmNb;
  const int64_t block_stride = k2 * 32;
  parallel_for(n_tiles, threads, [&](int64_t lo_tile, int64_t hi_tile) {
    for (int64_t nt = lo_tile; nt < hi_tile; ++nt) {
      const int64_t b0 = nt * kLmNb;
      const int nb = static_cast<int>(std::min<int64_t>(kLmNb, w.blocks - b0));
      const int64_t j0 = 16 * b0, j1 = std::min<int64_t>(v, j0 + 16 * nb);
      for (int64_t r0 = 0; r0 < t; r0 += kLmMr) {
        const int mr = static_cast<int>(std::min<int64_t>(kLmMr, t - r0));
        const LmTileFn fn = mr == 1 ? lm_tile_for<1>(nb) : mr == 2 ? lm_tile_for<2>(nb)
                                                                   : lm_tile_for<3>(nb);
        int64_t sums[kLmMr][16 * kLmNb] = {};
        for (int64_t p0 = 0; p0 < k2; p0 += kLmFlush) {
          fn(hi.data() + r0 * k2, lo.data() + r0 * k2, k2, w.data.data() + b0 * block_stride,
             block_stride, p0, std::min(k2, p0 + kLmFlush), sums);
        }
        for (int r = 0; r < mr; ++r) {
          for (int64_t j = j0; j < j1; ++j) {
            const double scale = static_cast<double>(s_f) * static_cast<double>(w_scale[j]);
            logits[(r0 + r) * v + j] =
                static_cast<float>(scale * static_cast<double>(sums[r][j - j0]));
          }
        }
      }
    }
  });
}
#else
void vnni_lm_head(const int16_t*, int64_t, const VnniPackedI16&, const float*, float, int,
                  float*) {
  throw Error("vnni_lm_head: not an x86-64 build");
}
#endif

}  // namespace mq::rt
