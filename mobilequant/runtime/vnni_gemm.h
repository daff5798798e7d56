// mobilequant/runtime/vnni_gemm.h
// uint8 x uint8 -> int32 matrix products with AVX-512 VNNI (vpdpbusd: u8 x s8 pairs of four
// summed into int32 lanes), for CPUs that have it; gemmlowp (int_ops.h, Uint8Gemm) stays the
// portable path and the one every result is checked against.
//
// vpdpbusd multiplies unsigned by signed bytes, so the right operand is stored as b - 128 and the
// product corrected exactly: sum_k a b = sum_k a (b - 128) + 128 sum_k a. Both terms and the
// result fit int32 when K * 255^2 < 2^31 (K <= 33025), the bound gemmlowp's products have too.
// The right operand (the weights) is packed once, in blocks of 16 columns x 4 depths, one
// 64-byte vector per block row (VnniPackedB); the micro-kernel keeps a 6 x 64 tile of sums in
// 24 zmm registers. The int16 lm_head has its own packed GEMM (vnni_lm_head, vpdpwssd).
//
// The kernels are compiled for AVX-512 by function attributes, so the rest of the runtime keeps
// the build's target; vnni_supported() checks the CPU at run time. Results are exact integers,
// bitwise equal to gemmlowp's for every shape and thread count (tests/runtime/test_vnni_gemm.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mq::rt {

/// Which uint8 GEMM the runtime uses.
enum class GemmBackend {
  kAuto,      ///< VNNI where the CPU has it, else gemmlowp (the default)
  kGemmlowp,  ///< gemmlowp always
  kVnni,      ///< AVX-512 VNNI (an error on a CPU without it)
};

/// True if this CPU runs AVX-512 F, BW and VNNI.
bool vnni_supported();

/// Sets the process-wide backend (the environment variable MQ_RUNTIME_GEMM = auto | gemmlowp |
/// vnni sets the initial one). Throws mq::Error for kVnni on a CPU without VNNI.
void set_gemm_backend(GemmBackend b);

/// True if products run on the VNNI kernels now (the backend resolved against the CPU).
bool use_vnni();

/// The name of the backend in use: "vnni" or "gemmlowp".
std::string gemm_backend_name();

/// A right operand b [N, K] of uint8 codes, packed for vnni_multiply.
struct VnniPackedB {
  int64_t n = 0;        ///< N
  int64_t k = 0;        ///< K
  int64_t k4 = 0;       ///< K rounded up to a multiple of 4
  int64_t blocks = 0;   ///< ceil(N / 16)
  std::vector<int8_t> data;  // [blocks, k4 / 4, 16, 4] b - 128; padding 0

  /// Packs b (row-major [N, K], K <= 33025).
  static VnniPackedB pack(const uint8_t* b, int64_t n, int64_t k);
  /// True if nothing is packed.
  bool empty() const { return data.empty(); }
};

/// Receives one finished tile of vnni_multiply's exact sums: rows [r0, r0 + rows) and columns
/// [c0, c0 + cols) of c, at tile[r * 64 + j] (r < rows <= 6, j < cols <= 64). Called from the
/// worker threads, each tile once; tiles do not overlap.
using VnniTileSink =
    std::function<void(int64_t r0, int rows, int64_t c0, int cols, const int32_t* tile)>;

/// c[t, n] = sum_k a[t, k] * b[n, k], exact, on at most `threads` threads. Requires
/// vnni_supported(). n_cols / depth (>= 0) take a view of b: its first n_cols rows and first
/// depth depths (a is then [T, depth], c [T, n_cols]); -1 takes all of b. a_row_sums, if given,
/// are sum_k a[t, k] mod 2^32 (else computed here). With a `sink`, each tile goes to the sink
/// (a fused epilogue, c is not written and may be null) instead of into c.
void vnni_multiply(const uint8_t* a,  // [T, K]
                   int64_t t, const VnniPackedB& b, int threads,
                   int32_t* c,        // [T, N] or null with a sink
                   int64_t n_cols = -1, int64_t depth = -1,
                   const uint32_t* a_row_sums = nullptr,  // [T] or null
                   const VnniTileSink* sink = nullptr);

/// The lm_head's weights w [V, C] (int16, |w| <= 32767) packed for vnni_lm_head: blocks of 16
/// rows x 2 depths, one 64-byte vector per block and depth pair.
struct VnniPackedI16 {
  int64_t n = 0;       ///< V
  int64_t k = 0;       ///< C
  int64_t k2 = 0;      ///< ceil(C / 2): depth pairs
  int64_t blocks = 0;  ///< ceil(V / 16)
  std::vector<int16_t> data;  // [blocks, k2, 16, 2]; padding 0

  /// Packs w (row-major [N, K]).
  static VnniPackedI16 pack(const int16_t* w, int64_t n, int64_t k);
  /// True if nothing is packed.
  bool empty() const { return data.empty(); }
};

/// logits[t, j] = float(double(s_f) * double(w_scale[j]) * S[t, j]) with S[t, j] = sum_c
/// y[t, c] w[j, c] exact (int64), for int16 y in [-32767, 32767], the same value int_lm_head
/// gives. y = 256 hi + lo (hi in [-128, 127], lo in [0, 255]) makes two vpdpwssd products whose
/// int32 lanes cannot overflow within 128 depth pairs (128 * 2 * 32767 * 255 < 2^31); every 128
/// pairs they are added into int64 as 256 hi + lo. Requires vnni_supported().
void vnni_lm_head(const int16_t* y,     // [T, C]
                  int64_t t, const VnniPackedI16& w,
                  const float* w_scale,  // [V]
                  float s_f, int threads,
                  float* logits);        // [T, V]

}  // namespace mq::rt
