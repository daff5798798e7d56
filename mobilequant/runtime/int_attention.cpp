// mobilequant/runtime/int_attention.cpp
#include "mobilequant/runtime/int_attention.h"

#include <algorithm>
#include <cstdlib>

#include "mobilequant/core/error.h"
#include "mobilequant/runtime/scratch.h"

namespace mq::rt {
bool causal_head_applies(const AttentionQuant& aq) {
  return aq.q.bits <= 16 && aq.probs.bits <= 16 && aq.k.bits <= 8 && aq.v.bits <= 8;
}

CausalHead prepare_causal_head(const int32_t* k, const int32_t* v, int64_t t, int64_t d,
                               const AttentionQuant& aq, int64_t ld) {
  if (ld == 0) ld = d;
  MQ_CHECK(causal_head_applies(aq), "prepare_causal_head: the layer's encodings do not take "
           "the GEMM path (check causal_head_applies first)");
  CausalHead h;
  h.t = t;
  h.d = d;
  h.k.resize(static_cast<size_t>(t * d));
  h.k_sum.assign(static_cast<size_t>(t), 0);
  h.vt.resize(static_cast<size_t>(d * t));
  h.v_prefix.assign(static_cast<size_t>((t + 1) * d), 0);
  bool in_range = true;
  for (int64_t j = 0; j < t; ++j) {
    const int32_t* kr = k + j * ld;
    const int32_t* vr = v + j * ld;
    int64_t ks = 0;
    for (int64_t x = 0; x < d; ++x) {
      in_range &= kr[x] >= 0 && kr[x] <= 255 && vr[x] >= 0 && vr[x] <= 255;
      h.k[static_cast<size_t>(j * d + x)] = static_cast<uint8_t>(kr[x]);
      ks += kr[x];
      h.vt[static_cast<size_t>(x * t + j)] = static_cast<uint8_t>(vr[x]);
      h.v_prefix[static_cast<size_t>((j + 1) * d + x)] =
          h.v_prefix[static_cast<size_t>(j * d + x)] + vr[x];
    }
    h.k_sum[static_cast<size_t>(j)] = ks;
  }
  MQ_CHECK(in_range, "prepare_causal_head: k or v codes outside [0, 255]");
  if (use_vnni()) {
    h.k_packed = VnniPackedB::pack(h.k.data(), t, d);
    h.vt_packed = VnniPackedB::pack(h.vt.data(), d, t);
  }
  h.z_k.assign(static_cast<size_t>(t), aq.k.zero_point);
  h.z_v.assign(static_cast<size_t>(d), aq.v.zero_point);
  return h;
}

namespace {

// Scratch buffer tags (scratch.h).
struct QLoTag;
struct QHiTag;
struct QSumTag;
struct ScoreLoTag;
struct ScoreHiTag;
struct ScoreRowTag;
struct ExpRowTag;
struct ProbLoTag;
struct ProbHiTag;
struct ProbSumTag;
struct CtxLoTag;
struct CtxHiTag;
struct WideAccTag;
struct WideQTag;
struct ProbRowTag;

/// The largest |code - z| of a b-bit site: codes lie in [0, qmax], z anywhere.
int64_t max_centered(const ActQuant& a) {
  return std::max<int64_t>(std::abs(int64_t{a.zero_point}),
                           std::abs(int64_t{a.qmax()} - a.zero_point));
}

}  // namespace

bool causal_head_narrow(const AttentionQuant& aq, int64_t d) {
  // The centered score sum_x (q - z_q)(k - z_k) then fits int32, and the byte products are
  // exact modulo 2^32; the LUT covers every index c_max - s in [0, qmax_s].
  return d * max_centered(aq.q) * max_centered(aq.k) < (int64_t{1} << 31) &&
         aq.exp_lut_size > aq.scores.qmax();
}

void causal_head_rows(const CausalHead& h, const AttentionQuant& aq, const int32_t* q,
                      int64_t i0, int64_t i1, Uint8Gemm& gemm, int32_t* s, int32_t* p,
                      int32_t* c, int64_t ldq, int64_t ldc) {
  const int64_t t = h.t, d = h.d, rows = i1 - i0;
  MQ_CHECK(i0 >= 0 && i0 < i1 && i1 <= t, "causal_head_rows: rows [", i0, ", ", i1,
           ") outside [0, ", t, ")");
  if (ldq == 0) ldq = d;
  if (ldc == 0) ldc = d;
  const int32_t s_qmax = aq.scores.qmax();
  const int32_t p_qmax = aq.probs.qmax();
  const int32_t masked_code = clamp_code(aq.probs.zero_point, 0, p_qmax);
  const bool q_wide = aq.q.bits > 8, p_wide = aq.probs.bits > 8;
  const VnniPackedB* k_packed = h.k_packed.empty() ? nullptr : &h.k_packed;
  const VnniPackedB* vt_packed = h.vt_packed.empty() ? nullptr : &h.vt_packed;
  // The block's probabilities over keys j < i1 as bytes (masked keys at masked_code) and
  // their row sums: the left operand of the context product.
  uint8_t* p_lo = scratch<uint8_t, ProbLoTag>(static_cast<size_t>(rows * i1));  // [rows, i1]
  uint8_t* p_hi = p_wide ? scratch<uint8_t, ProbHiTag>(static_cast<size_t>(rows * i1)) : nullptr;
  uint32_t* p_sums = scratch<uint32_t, ProbSumTag>(static_cast<size_t>(2 * rows));  // [2, rows]
  uint32_t *p_lo_sum = p_sums, *p_hi_sum = p_sums + rows;  // sums of the bytes (< 2^32)
  int32_t* prow = scratch<int32_t, ProbRowTag>(static_cast<size_t>(i1));          // [i1]
  if (causal_head_narrow(aq, d)) {
    // Scores: the byte products q . k over keys j < i1, then per row the exact centered sum
    // (mod 2^32, exact since it fits int32), requantization, softmax, probability bytes.
    uint8_t* q_lo = scratch<uint8_t, QLoTag>(static_cast<size_t>(rows * d));  // [rows, D]
    uint8_t* q_hi = q_wide ? scratch<uint8_t, QHiTag>(static_cast<size_t>(rows * d)) : nullptr;
    // Per row: sum of the low bytes, of the high bytes (the GEMMs' row sums) and of q.
    uint32_t* q_sums = scratch<uint32_t, QSumTag>(static_cast<size_t>(3 * rows));  // [3, rows]
    uint32_t *q_lo_sum = q_sums, *q_hi_sum = q_sums + rows, *q_sum = q_sums + 2 * rows;
    for (int64_t r = 0; r < rows; ++r) {
      split_bytes(q + (i0 + r) * ldq, d, q_wide, q_lo + r * d, q_wide ? q_hi + r * d : nullptr,
                  q_lo_sum + r, q_hi_sum + r);
      q_sum[r] = q_lo_sum[r] + 256u * q_hi_sum[r];
    }
    int32_t* sc_lo = scratch<int32_t, ScoreLoTag>(static_cast<size_t>(rows * i1));  // [rows, i1]
    int32_t* sc_hi = q_wide ? scratch<int32_t, ScoreHiTag>(static_cast<size_t>(rows * i1)) : nullptr;
    gemm.multiply(q_lo, h.k.data(), rows, i1, d, sc_lo, k_packed, 0, q_lo_sum);
    if (q_wide) gemm.multiply(q_hi, h.k.data(), rows, i1, d, sc_hi, k_packed, 0, q_hi_sum);
    const auto zq = static_cast<uint32_t>(aq.q.zero_point);
    const auto zk = static_cast<uint32_t>(aq.k.zero_point);
    const auto dzz = static_cast<uint32_t>(d * int64_t{aq.q.zero_point} * aq.k.zero_point);
    const int64_t z_s = aq.scores.zero_point;
    int32_t* srow = scratch<int32_t, ScoreRowTag>(static_cast<size_t>(i1));  // [i1]
    uint64_t* erow = scratch<uint64_t, ExpRowTag>(static_cast<size_t>(i1));  // [i1]
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r, n = i + 1;
      const int32_t* lo = sc_lo + r * i1;
      const int32_t* hi = q_wide ? sc_hi + r * i1 : nullptr;
      const uint32_t row_term = dzz - zk * q_sum[r];
      int32_t* sr = s != nullptr ? s + i * t : srow;
      int32_t c_max = 0;
      for (int64_t j = 0; j < n; ++j) {
        uint32_t a = static_cast<uint32_t>(lo[j]) + row_term - zq * static_cast<uint32_t>(h.k_sum[static_cast<size_t>(j)]);
        if (q_wide) a += 256u * static_cast<uint32_t>(hi[j]);
        const int32_t code =
            clamp_code(requant32(static_cast<int32_t>(a), aq.qk.m, aq.qk.shift) + z_s, 0, s_qmax);
        sr[j] = code;
        c_max = std::max(c_max, code);
      }
      if (s != nullptr) std::fill(sr + n, sr + t, 0);
      uint64_t sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        const auto e = static_cast<uint64_t>(aq.exp_lut[c_max - sr[j]]);
        erow[j] = e;
        sum += e;
      }
      // Probability codes: j < n from the softmax, the block's masked keys at masked_code.
      int32_t* pr = p != nullptr ? p + i * t : prow;
      if (sum == 0) {
        std::fill(pr, pr + n, masked_code);
      } else {
        const SoftmaxDivider div(sum, aq.softmax);  // as int_softmax_row
        const int64_t z_p = aq.probs.zero_point;
        for (int64_t j = 0; j < n; ++j) {
          const uint64_t qv = std::min<uint64_t>(div.quotient(erow[j]), INT32_MAX);
          pr[j] = clamp_code(static_cast<int64_t>(qv) + z_p, 0, p_qmax);
        }
      }
      std::fill(pr + n, pr + (p != nullptr ? t : i1), masked_code);
      split_bytes(pr, i1, p_wide, p_lo + r * i1, p_wide ? p_hi + r * i1 : nullptr,
                  p_lo_sum + r, p_hi_sum + r);
    }
  } else {
    // Scores wider than int32: the exact int64 path (int_matmul, int_softmax_row).
    int64_t* acc = scratch<int64_t, WideAccTag>(static_cast<size_t>(rows * i1));  // [rows, i1]
    int32_t* qb = scratch<int32_t, WideQTag>(static_cast<size_t>(rows * d));     // [rows, D]
    for (int64_t r = 0; r < rows; ++r) std::copy_n(q + (i0 + r) * ldq, d, qb + r * d);
    int_matmul(qb, rows, d, q_wide ? 16 : 8, aq.q.zero_point, h.k.data(), i1,
               h.z_k.data(), h.k_sum.data(), 1, gemm, acc, k_packed);
    int32_t* srow = scratch<int32_t, ScoreRowTag>(static_cast<size_t>(i1));  // [i1]
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      int32_t* sr = s != nullptr ? s + i * t : srow;
      int32_t* pr = p != nullptr ? p + i * t : prow;
      for (int64_t j = 0; j <= i; ++j) {
        sr[j] = clamp_code(requant(acc[r * i1 + j], aq.qk.m, aq.qk.shift) +
                               aq.scores.zero_point, 0, s_qmax);
      }
      if (s != nullptr) std::fill(sr + i + 1, sr + t, 0);
      int_softmax_row(sr, i + 1, aq.exp_lut, aq.exp_lut_size, aq.softmax, aq.probs, pr);
      std::fill(pr + i + 1, pr + (p != nullptr ? t : i1), masked_code);
      split_bytes(pr, i1, p_wide, p_lo + r * i1, p_wide ? p_hi + r * i1 : nullptr,
                  p_lo_sum + r, p_hi_sum + r);
    }
  }
  // Context: the block's probabilities over keys j < i1 times v (the byte products, exact
  // int32: i1 * 255^2 < 2^31), zero points through sums in int64, plus the masked keys
  // j >= i1: (masked_code - z_p) * sum_{j >= i1} (v_j - z_v).
  int32_t* cx_lo = scratch<int32_t, CtxLoTag>(static_cast<size_t>(rows * d));  // [rows, D]
  int32_t* cx_hi = p_wide ? scratch<int32_t, CtxHiTag>(static_cast<size_t>(rows * d)) : nullptr;
  gemm.multiply(p_lo, h.vt.data(), rows, d, i1, cx_lo, vt_packed, t, p_lo_sum);
  if (p_wide) gemm.multiply(p_hi, h.vt.data(), rows, d, i1, cx_hi, vt_packed, t, p_hi_sum);
  const int64_t masked = static_cast<int64_t>(masked_code) - aq.probs.zero_point;
  const int64_t z_p = aq.probs.zero_point, z_v = aq.v.zero_point;
  const int32_t c_qmax = aq.context.qmax();
  const int64_t* v_before = h.v_prefix.data() + i1 * d;  // [D] sum_{j < i1} v[j, x]
  const int64_t* v_all = h.v_prefix.data() + t * d;      // [D] sum_j v[j, x]
  for (int64_t r = 0; r < rows; ++r) {
    // sum_{j < i1} p = low + 256 high, each byte sum exact (i1 * 255 < 2^32).
    const int64_t ps = int64_t{p_lo_sum[r]} + 256 * int64_t{p_hi_sum[r]};
    int32_t* cr = c + (i0 + r) * ldc;
    for (int64_t x = 0; x < d; ++x) {
      int64_t a = cx_lo[r * d + x];
      if (p_wide) a += int64_t{256} * cx_hi[r * d + x];
      a += -z_v * ps - z_p * v_before[x] + i1 * z_p * z_v;
      if (masked != 0) a += masked * (v_all[x] - v_before[x] - z_v * (t - i1));
      cr[x] = clamp_code(requant(a, aq.pv.m, aq.pv.shift) + aq.context.zero_point, 0, c_qmax);
    }
  }
}

}  // namespace mq::rt
