// mobilequant/runtime/int_attention.h
// Causal attention of one head in blocks of query rows (docs 2.5-2.7), on uint8 GEMMs. A
// prefill spreads (head, row block) pairs over its threads, and a block of rows [i0, i1) reads
// only the keys and values j < i1: about half the work of the full [T, T] products that
// int_qk and int_pv compute. The head's operands (k and v^T as uint8, packed once for the VNNI
// kernels, v's prefix sums) are prepared once and shared by its blocks, read-only.
//
// Per block, the scores and probabilities live only in per-thread scratch rows: the [T, T]
// scores and probabilities are written out only when the caller asks for them (an activation
// tap). Where the centered scores fit int32 (causal_head_narrow: D max|q - z_q| max|k - z_k| <
// 2^31, true of every 8-bit q and of 16-bit q up to D = 128), the zero-point correction,
// requantization, softmax and the probabilities' bytes are one pass per row in 64-bit
// arithmetic; otherwise the int64 / 128-bit path of int_matmul and int_softmax_row runs.
//
// The results equal int_qk + int_softmax_row + int_pv exactly: every sum is an exact integer,
// and the probabilities of the masked keys j > i (code clamp(z_p), zero after centering when
// z_p is in range) enter as (clamp(z_p) - z_p) * sum_{j > i} (v_j - z_v), split into the
// block's own masked keys i < j < i1, which the GEMM sees, and the keys j >= i1, added from
// v's prefix sums.
#pragma once

#include <cstdint>
#include <vector>

#include "mobilequant/runtime/int_ops.h"

namespace mq::rt {

/// The encodings and multipliers of one layer's attention (the IntLayer fields it reads).
struct AttentionQuant {
  ActQuant q;                   ///< qk_bmm.input
  ActQuant k;                   ///< qk_bmm.input2
  Multiplier qk;                ///< scores requantization
  ActQuant scores;              ///< qk_bmm.output
  const int64_t* exp_lut = nullptr;  ///< [exp_lut_size] softmax exponentials
  int64_t exp_lut_size = 0;
  Multiplier softmax;           ///< softmax normalization
  ActQuant probs;               ///< pv_bmm.input (z_p, qmax)
  ActQuant v;                   ///< pv_bmm.input2
  Multiplier pv;                ///< context requantization
  ActQuant context;             ///< pv_bmm.output
};

/// The keys and values of one head (or of a group of heads sharing them) prepared for
/// causal_head_rows. Built from the codes; holds copies.
struct CausalHead {
  int64_t t = 0;                ///< T
  int64_t d = 0;                ///< D
  std::vector<uint8_t> k;       // [T, D] k codes
  std::vector<int64_t> k_sum;   // [T] sum_x k[j, x]
  std::vector<uint8_t> vt;      // [D, T] v codes, transposed
  std::vector<int64_t> v_prefix;  // [T + 1, D] sum_{j < i} v[j, x]
  VnniPackedB k_packed;         // k packed where the CPU has VNNI (else empty)
  VnniPackedB vt_packed;        // vt packed likewise
  std::vector<int32_t> z_k;     // [T] z_k per key (int_matmul's per-row zero points)
  std::vector<int32_t> z_v;     // [D] z_v per channel
};

/// True when the GEMM path applies to the layer's encodings: q and probabilities of at most 16
/// bits, k and v of at most 8 (every code of a b-bit site lies in [0, 2^b - 1]).
bool causal_head_applies(const AttentionQuant& aq);

/// Prepares one head's keys and values: k, v are [T, ld] codes (the head's D codes first in
/// each row; ld = 0: D) of sites that causal_head_applies accepts.
CausalHead prepare_causal_head(const int32_t* k, const int32_t* v, int64_t t, int64_t d,
                               const AttentionQuant& aq, int64_t ld = 0);

/// True when the centered scores of depth d fit int32 and the LUT covers every score
/// difference: causal_head_rows then takes its one-pass 64-bit path.
bool causal_head_narrow(const AttentionQuant& aq, int64_t d);

/// Rows [i0, i1) of the head: s[i, j] for j <= i and 0 for j > i; p[i, j] for j <= i and
/// clamp(z_p) for j > i; c[i, :]. Equal to int_qk / int_softmax_row / int_pv exactly. s and p
/// may be null (not written). q's and c's rows are ldq and ldc elements apart (0: D), so that
/// a head can be read from and written into [T, H, D] in place. Runs on the calling thread
/// (`gemm` with one thread). Requires T * max(exp_lut) <= 2^62 (IntModel::load checks it for
/// T <= max_positions).
void causal_head_rows(const CausalHead& h, const AttentionQuant& aq,
                      const int32_t* q,  // [T, ldq] the head's q codes (first D of each row)
                      int64_t i0, int64_t i1, Uint8Gemm& gemm,
                      int32_t* s,        // [T, T] scores (rows i0 … i1 - 1 written) or null
                      int32_t* p,        // [T, T] probabilities (rows i0 … i1 - 1) or null
                      int32_t* c,        // [T, ldc] context (rows i0 … i1 - 1 written)
                      int64_t ldq = 0, int64_t ldc = 0);

}  // namespace mq::rt
