// mobilequant/runtime/int_attention.cpp
#include "mobilequant/runtime/int_attention.h"

#include <algorithm>

#include "mobilequant/core/error.h"

namespace mq::rt {
bool causal_head_applies(const AttentionQuant& aq) {
  return aq.q.bits <= 16 && aq.probs.bits <= 16 && aq.k.bits <= 8 && aq.v.bits <= 8;
}

CausalHead prepare_causal_head(const int32_t* k, const int32_t* v, int64_t t, int64_t d,
                               const AttentionQuant& aq) {
  MQ_CHECK(causal_head_applies(aq) && all_in_range(k, t * d, 0, 255) &&
               all_in_range(v, t * d, 0, 255),
           "prepare_causal_head: k or v codes outside [0, 255] (check causal_head_applies first)");
  CausalHead h;
  h.t = t;
  h.d = d;
  h.k.assign(k, k + t * d);
  h.k_sum.assign(static_cast<size_t>(t), 0);
  for (int64_t j = 0; j < t; ++j)
    for (int64_t x = 0; x < d; ++x) h.k_sum[static_cast<size_t>(j)] += k[j * d + x];
  h.vt.resize(static_cast<size_t>(d * t));
  h.v_prefix.assign(static_cast<size_t>((t + 1) * d), 0);
  for (int64_t j = 0; j < t; ++j) {
    for (int64_t x = 0; x < d; ++x) {
      h.vt[static_cast<size_t>(x * t + j)] = static_cast<uint8_t>(v[j * d + x]);
      h.v_prefix[static_cast<size_t>((j + 1) * d + x)] =
          h.v_prefix[static_cast<size_t>(j * d + x)] + v[j * d + x];
    }
  }
  if (use_vnni()) {
    h.k_packed = VnniPackedB::pack(h.k.data(), t, d);
    h.vt_packed = VnniPackedB::pack(h.vt.data(), d, t);
  }
  h.z_k.assign(static_cast<size_t>(t), aq.k.zero_point);
  h.z_v.assign(static_cast<size_t>(d), aq.v.zero_point);
  return h;
}

void causal_head_rows(const CausalHead& h, const AttentionQuant& aq, const int32_t* q,
                      int64_t i0, int64_t i1, Uint8Gemm& gemm, int32_t* s, int32_t* p,
                      int32_t* c) {
  const int64_t t = h.t, d = h.d, rows = i1 - i0;
  MQ_CHECK(i0 >= 0 && i0 < i1 && i1 <= t, "causal_head_rows: rows [", i0, ", ", i1,
           ") outside [0, ", t, ")");
  // Scores: acc [rows, i1] = (q_i - z_q) . (k_j - z_k) for the block's rows and keys j < i1.
  std::vector<int64_t> acc(static_cast<size_t>(rows * i1));  // [rows, i1]
  int_matmul(q + i0 * d, rows, d, aq.q.bits <= 8 ? 8 : 16, aq.q.zero_point, h.k.data(), i1,
             h.z_k.data(), h.k_sum.data(), 1, gemm, acc.data(), h.k_packed.empty() ? nullptr : &h.k_packed);
  const int32_t s_qmax = aq.scores.qmax();
  const int32_t p_qmax = aq.probs.qmax();
  const int32_t masked_code = clamp_code(aq.probs.zero_point, 0, p_qmax);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    int32_t* sr = s + i * t;  // [T]
    int32_t* pr = p + i * t;  // [T]
    for (int64_t j = 0; j <= i; ++j) {
      sr[j] = clamp_code(requant(acc[static_cast<size_t>(r * i1 + j)], aq.qk.m, aq.qk.shift) +
                             aq.scores.zero_point, 0, s_qmax);
    }
    std::fill(sr + i + 1, sr + t, 0);
    int_softmax_row(sr, i + 1, aq.exp_lut, aq.exp_lut_size, aq.softmax, aq.probs, pr);
    std::fill(pr + i + 1, pr + t, masked_code);
  }
  // Context: the block's probabilities over keys j < i1 (masked ones at masked_code) times v,
  // plus the masked keys j >= i1: (masked_code - z_p) * sum_{j >= i1} (v_j - z_v).
  std::vector<int32_t> pf(static_cast<size_t>(rows * i1));  // [rows, i1]
  for (int64_t r = 0; r < rows; ++r) std::copy_n(p + (i0 + r) * t, i1, pf.data() + r * i1);
  std::vector<int64_t> ctx(static_cast<size_t>(rows * d));  // [rows, D]
  int_matmul(pf.data(), rows, i1, 16, aq.probs.zero_point, h.vt.data(), d, h.z_v.data(),
             h.v_prefix.data() + i1 * d, 1, gemm, ctx.data(),
             h.vt_packed.empty() ? nullptr : &h.vt_packed, t);
  const int64_t masked = static_cast<int64_t>(masked_code) - aq.probs.zero_point;
  const int32_t c_qmax = aq.context.qmax();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t x = 0; x < d; ++x) {
      int64_t a = ctx[static_cast<size_t>(r * d + x)];
      if (masked != 0) {
        const int64_t later = h.v_prefix[static_cast<size_t>(t * d + x)] -
                              h.v_prefix[static_cast<size_t>(i1 * d + x)] -
                              int64_t{aq.v.zero_point} * (t - i1);  // sum_{j >= i1} v - z_v
        a += masked * later;
      }
      c[(i0 + r) * d + x] =
          clamp_code(requant(a, aq.pv.m, aq.pv.shift) + aq.context.zero_point, 0, c_qmax);
    }
  }
}

}  // namespace mq::rt
