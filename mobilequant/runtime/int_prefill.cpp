// mobilequant/runtime/int_prefill.cpp
#include "mobilequant/runtime/int_prefill.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <initializer_list>
#include <map>
#include <memory>

#include "mobilequant/core/error.h"
#include "mobilequant/runtime/int_attention.h"
#include "mobilequant/runtime/int_ops.h"
#include "mobilequant/runtime/parallel.h"
#include "mobilequant/runtime/scratch.h"

namespace mq::rt {
namespace {

/// Runs fn(begin, end) over rows [0, t), each row `width` elements, elementwise kernels.
void rows_parallel(int64_t t, int threads, const std::function<void(int64_t, int64_t)>& fn) {
  parallel_for(t, threads, fn);
}

struct NormCenteredTag;

/// RMSNorm of a block (docs 2.1-2.2): residual -> input codes -> centered -> normalized codes,
/// one pass over each chunk of rows.
void block_norm(const IntNorm& nm, const std::vector<int64_t>& r,  // [T, C]
                int64_t t, int64_t c, int threads,
                std::vector<int32_t>& x,                          // [T, C] input codes
                std::vector<int32_t>& y) {                        // [T, C] output codes
  rows_parallel(t, threads, [&](int64_t b, int64_t e) {
    int_requant(r.data() + b * c, (e - b) * c, nm.input, nm.in.zero_point, 0, nm.in.qmax(),
                x.data() + b * c);
    int32_t* d = scratch<int32_t, NormCenteredTag>(static_cast<size_t>((e - b) * c));  // x - z_in
    for (int64_t i = 0; i < (e - b) * c; ++i) d[i] = x[static_cast<size_t>(b * c + i)] - nm.in.zero_point;
    int_rmsnorm(d, e - b, c, nm.eps_term, nm.eps_shift, nm.gain_m.data(), nm.gain_n.data(),
                nm.out.zero_point, 0, nm.out.qmax(), 1, y.data() + b * c);
  });
}

struct SharedInputTag;
struct SharedSumTag;
struct ActRowTag;
struct MulRowTag;

/// One linear of several that read the same input.
struct LinearOut {
  const IntLinearWeights* w;
  const ActQuant* out;
  int32_t* y;  // [T, N]
};

/// The linears `outs` on one input x [T, K] of encoding `in`: 8-bit inputs are put in byte
/// form once for all of them (to_bytes, int_linear_u8).
void linears(const int32_t* x, int64_t t, int64_t k, const ActQuant& in,
             std::initializer_list<LinearOut> outs, int threads, Uint8Gemm& gemm) {
  if (in.bits > 8) {
    for (const LinearOut& o : outs) int_linear(x, t, in, *o.w, *o.out, threads, gemm, o.y);
    return;
  }
  uint8_t* xu = scratch<uint8_t, SharedInputTag>(static_cast<size_t>(t * k));  // [T, K]
  uint32_t* sums = scratch<uint32_t, SharedSumTag>(static_cast<size_t>(t));    // [T]
  to_bytes(x, t, k, threads, xu, sums);
  for (const LinearOut& o : outs) int_linear_u8(xu, sums, t, in, *o.w, *o.out, threads, gemm, o.y);
}

/// Copies head h of x [T, heads, D] into out [T, D].
void gather_head(const int32_t* x, int64_t t, int64_t heads, int64_t d, int64_t h, int32_t* out) {
  for (int64_t i = 0; i < t; ++i) std::copy_n(x + (i * heads + h) * d, d, out + i * d);
}

struct AttnQTag;
struct AttnKTag;
struct AttnVTag;
struct AttnCtxTag;
struct AttnScoresTag;
struct AttnProbsTag;

/// Attention of one layer (docs 2.5-2.7): the context [T, H, D] and, when asked for (non-null),
/// the scores [H, T, T] (0 above the diagonal) and probabilities [H, T, T] (clamp(z_p) above
/// it). On the uint8 GEMM path (q and probabilities of at most 16 bits, k and v of at most 8)
/// the (head, block of query rows) pairs are spread over the threads, heaviest (last) blocks
/// first, each block reading only the keys it can see and reading q and writing the context in
/// place (int_attention.h); otherwise one head per task through int_qk and int_pv (on loops:
/// those sites are wider than the uint8 GEMMs take). Both are exact, so the results do not
/// depend on the path or the thread count.
void attention(const IntLayer& L, const int32_t* qr,  // [T, H, D]
               const int32_t* kr,                     // [T, KV, D]
               const int32_t* vr,                     // [T, KV, D]
               int64_t t, int64_t nh, int64_t kv, int64_t d, int threads,
               int32_t* scores,                       // [H, T, T] or null
               int32_t* probs,                        // [H, T, T] or null
               int32_t* ctx) {                        // [T, H, D]
  const int64_t group = nh / kv;
  AttentionQuant aq;
  aq.q = L.qk_in;
  aq.k = L.qk_in2;
  aq.qk = L.qk_bmm;
  aq.scores = L.qk_out;
  aq.exp_lut = L.exp_lut.data();
  aq.exp_lut_size = static_cast<int64_t>(L.exp_lut.size());
  aq.softmax = L.softmax;
  aq.probs = L.pv_in;
  aq.v = L.pv_in2;
  aq.pv = L.pv_bmm;
  aq.context = L.pv_out;
  const int workers = resolve_threads(threads);
  if (causal_head_applies(aq)) {
    std::vector<CausalHead> kv_heads(static_cast<size_t>(kv));
    parallel_for(kv, threads, [&](int64_t b, int64_t e) {
      for (int64_t g = b; g < e; ++g) {
        kv_heads[static_cast<size_t>(g)] =
            prepare_causal_head(kr + g * d, vr + g * d, t, d, aq, kv * d);
      }
    });
    // About 4 tasks per thread, blocks of 16 to 128 query rows.
    const int64_t want = std::max<int64_t>(1, (4 * workers + nh - 1) / nh);
    const int64_t rb = std::clamp<int64_t>((t + want - 1) / want, 16, 128);
    const int64_t blocks = (t + rb - 1) / rb;
    const int64_t tasks = blocks * nh;
    std::atomic<int64_t> next{0};
    parallel_for(std::min<int64_t>(workers, tasks), threads, [&](int64_t b, int64_t e) {
      static thread_local Uint8Gemm head_gemm(1);  // one per worker thread
      for (int64_t w = b; w < e; ++w) {
        for (int64_t idx = next++; idx < tasks; idx = next++) {
          const int64_t blk = blocks - 1 - idx / nh, h = idx % nh;  // heaviest blocks first
          const int64_t i0 = blk * rb, i1 = std::min(t, i0 + rb);
          causal_head_rows(kv_heads[static_cast<size_t>(h / group)], aq, qr + h * d, i0, i1,
                           head_gemm, scores != nullptr ? scores + h * t * t : nullptr,
                           probs != nullptr ? probs + h * t * t : nullptr, ctx + h * d,
                           nh * d, nh * d);
        }
      }
    });
    return;
  }
  // Loops, one head per task: heads gathered to [heads, T, D].
  int32_t* qh = scratch<int32_t, AttnQTag>(static_cast<size_t>(nh * t * d));   // [H, T, D]
  int32_t* kh = scratch<int32_t, AttnKTag>(static_cast<size_t>(kv * t * d));   // [KV, T, D]
  int32_t* vh = scratch<int32_t, AttnVTag>(static_cast<size_t>(kv * t * d));   // [KV, T, D]
  int32_t* ch = scratch<int32_t, AttnCtxTag>(static_cast<size_t>(nh * t * d)); // [H, T, D]
  // Every head's full [T, T] scores and probabilities, kept only if asked for.
  int32_t* s_all = scores != nullptr
                       ? scores
                       : scratch<int32_t, AttnScoresTag>(static_cast<size_t>(nh * t * t));
  int32_t* p_all = probs != nullptr
                       ? probs
                       : scratch<int32_t, AttnProbsTag>(static_cast<size_t>(nh * t * t));
  parallel_for(nh + 2 * kv, threads, [&](int64_t b, int64_t e) {
    for (int64_t idx = b; idx < e; ++idx) {
      if (idx < nh) {
        gather_head(qr, t, nh, d, idx, qh + idx * t * d);
      } else if (idx < nh + kv) {
        gather_head(kr, t, kv, d, idx - nh, kh + (idx - nh) * t * d);
      } else {
        gather_head(vr, t, kv, d, idx - nh - kv, vh + (idx - nh - kv) * t * d);
      }
    }
  });
  const int32_t masked_p = clamp_code(L.pv_in.zero_point, 0, L.pv_in.qmax());
  parallel_for(nh, threads, [&](int64_t hb, int64_t he) {
    static thread_local Uint8Gemm head_gemm(1);  // one per worker thread
    for (int64_t h = hb; h < he; ++h) {
      const int64_t g = h / group;
      int32_t* s = s_all + h * t * t;  // [T, T]
      int32_t* p = p_all + h * t * t;  // [T, T]
      int_qk(qh + h * t * d, kh + g * t * d, t, d, L.qk_in.zero_point, L.qk_in2.zero_point,
             L.qk_bmm, L.qk_out, s, &head_gemm);
      for (int64_t i = 0; i < t; ++i) {
        int_softmax_row(s + i * t, i + 1, L.exp_lut.data(),
                        static_cast<int64_t>(L.exp_lut.size()), L.softmax, L.pv_in, p + i * t);
        std::fill(s + i * t + i + 1, s + (i + 1) * t, 0);
        std::fill(p + i * t + i + 1, p + (i + 1) * t, masked_p);
      }
      int_pv(p, vh + g * t * d, t, d, L.pv_in.zero_point, L.pv_in2.zero_point, L.pv_in.qmax(),
             L.pv_bmm, L.pv_out, ch + h * t * d, &head_gemm);
    }
  });
  parallel_for(t, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int64_t h = 0; h < nh; ++h)
        std::copy_n(ch + (h * t + i) * d, d, ctx + (i * nh + h) * d);
  });
}

/// Adds the wall time from construction to destruction to a profile's stage (no-op if null).
class StageTimer {
 public:
  StageTimer(PrefillProfile* p, const char* stage) : p_(p), stage_(stage) {
    if (p_ != nullptr) t0_ = std::chrono::steady_clock::now();  // no clock reads unprofiled
  }
  ~StageTimer() {
    if (p_ == nullptr) return;
    const std::chrono::duration<double> d = std::chrono::steady_clock::now() - t0_;
    p_->add(stage_, d.count());
  }
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;

 private:
  PrefillProfile* p_;
  const char* stage_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

void PrefillProfile::add(const std::string& stage, double s) {
  for (auto& [name, total] : seconds) {
    if (name == stage) {
      total += s;
      return;
    }
  }
  seconds.emplace_back(stage, s);
}

std::vector<float> prefill(const IntModel& m, const std::vector<int32_t>& tokens,
                           const PrefillOptions& opts) {
  const IntModelConfig& cfg = m.config();
  const int64_t t = static_cast<int64_t>(tokens.size());
  const int64_t c = cfg.hidden_size, ff = cfg.intermediate_size, nh = cfg.num_attention_heads,
                kv = cfg.num_key_value_heads, d = cfg.head_dim, v = cfg.vocab_size;
  MQ_CHECK(t >= 1 && t <= cfg.max_positions, "prefill: ", t,
           " tokens, expected 1 … max_positions = ", cfg.max_positions);
  for (int64_t i = 0; i < t; ++i) {
    MQ_CHECK(tokens[static_cast<size_t>(i)] >= 0 && tokens[static_cast<size_t>(i)] < v,
             "prefill: token ", tokens[static_cast<size_t>(i)], " at position ", i,
             " outside the vocabulary [0, ", v, ")");
  }
  const int threads = resolve_threads(opts.threads);
  const auto& tap = opts.observer;
  PrefillProfile* prof = opts.profile;
  if (prof != nullptr) ++prof->calls;
  auto emit = [&](int64_t layer, const char* site, const std::vector<int32_t>& codes,
                  std::vector<int64_t> shape) {
    if (tap) tap(layer, site, codes, shape);
  };
  // gemmlowp contexts keep their worker threads: one per calling thread and thread count,
  // kept for the process (starting them per prefill cost more than small prefills compute).
  static thread_local std::map<int, std::unique_ptr<Uint8Gemm>> contexts;
  std::unique_ptr<Uint8Gemm>& context = contexts[threads];
  if (!context) context = std::make_unique<Uint8Gemm>(threads);
  Uint8Gemm& gemm = *context;

  std::vector<int64_t> r(static_cast<size_t>(t * c));           // [T, C] residual (int64, s_r)
  std::vector<int32_t> x(static_cast<size_t>(t * c));           // [T, C] norm input codes
  std::vector<int32_t> xn(static_cast<size_t>(t * c));          // [T, C] norm output codes
  std::vector<int32_t> q(static_cast<size_t>(t * nh * d));      // [T, H, D] q_proj.output
  std::vector<int32_t> k(static_cast<size_t>(t * kv * d));      // [T, KV, D] k_proj.output
  std::vector<int32_t> vv(static_cast<size_t>(t * kv * d));     // [T, KV, D] v_proj.output
  std::vector<int32_t> qr(static_cast<size_t>(t * nh * d));     // [T, H, D] qk_bmm.input
  std::vector<int32_t> kr(static_cast<size_t>(t * kv * d));     // [T, KV, D] qk_bmm.input2
  std::vector<int32_t> vr(static_cast<size_t>(t * kv * d));     // [T, KV, D] pv_bmm.input2
  // [H, T, T] qk_bmm.output and pv_bmm.input: kept only for an activation tap.
  std::vector<int32_t> scores(tap ? static_cast<size_t>(nh * t * t) : 0);
  std::vector<int32_t> probs(tap ? static_cast<size_t>(nh * t * t) : 0);
  std::vector<int32_t> ctx(static_cast<size_t>(t * nh * d));    // [T, H, D] pv_bmm.output
  std::vector<int32_t> o(static_cast<size_t>(t * c));           // [T, C] o_proj.output
  std::vector<int32_t> gate(static_cast<size_t>(t * ff));       // [T, F] w1.output
  std::vector<int32_t> up(static_cast<size_t>(t * ff));         // [T, F] w3.output
  // [T, F] act_fn.output and w2.input: only for a tap or a w2.input wider than 8 bits.
  std::vector<int32_t> act;
  std::vector<int32_t> hmul;
  std::vector<int32_t> down(static_cast<size_t>(t * c));        // [T, C] w2.output

  // 1. Embedding rows -> residual.
  {
    StageTimer st(prof, "embed");
    int_embed(m.embed_q.data(), tokens.data(), t, c, r.data());
  }

  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const IntLayer& L = m.layers()[static_cast<size_t>(l)];
    // 2.1-2.2 input_layernorm.
    {
      StageTimer st(prof, "norm");
      block_norm(L.input_layernorm, r, t, c, threads, x, xn);
    }
    emit(l, "input_layernorm.input", x, {t, c});
    emit(l, "input_layernorm.output", xn, {t, c});
    // 2.3 q, k, v.
    const ActQuant& nin = L.input_layernorm.out;
    {
      StageTimer st(prof, "qkv");
      linears(xn.data(), t, c, nin, {{&L.q_proj, &L.q_out, q.data()},
                                     {&L.k_proj, &L.k_out, k.data()},
                                     {&L.v_proj, &L.v_out, vv.data()}},
              threads, gemm);
    }
    emit(l, "self_attn.q_proj.output", q, {t, nh, d});
    emit(l, "self_attn.k_proj.output", k, {t, kv, d});
    emit(l, "self_attn.v_proj.output", vv, {t, kv, d});
    // 2.4 RoPE on q and k; v requantized.
    {
      StageTimer st(prof, "rope");
      parallel_for(t, threads, [&](int64_t b, int64_t e) {
        int_rope(q.data() + b * nh * d, e - b, nh, d, L.q_out.zero_point,
                 m.rope_cos.data() + b * (d / 2), m.rope_sin.data() + b * (d / 2), L.rope_q,
                 L.qk_in, qr.data() + b * nh * d);
        int_rope(k.data() + b * kv * d, e - b, kv, d, L.k_out.zero_point,
                 m.rope_cos.data() + b * (d / 2), m.rope_sin.data() + b * (d / 2), L.rope_k,
                 L.qk_in2, kr.data() + b * kv * d);
        for (int64_t i = b * kv * d; i < e * kv * d; ++i) {
          const size_t ii = static_cast<size_t>(i);
          vr[ii] = clamp_code(requant32(vv[ii] - L.v_out.zero_point, L.v_requant.m,
                                        L.v_requant.shift) + L.pv_in2.zero_point,
                              0, L.pv_in2.qmax());
        }
      });
    }
    emit(l, "self_attn.qk_bmm.input", qr, {t, nh, d});
    emit(l, "self_attn.qk_bmm.input2", kr, {t, kv, d});
    emit(l, "self_attn.pv_bmm.input2", vr, {t, kv, d});
    // 2.5-2.7 attention.
    {
      StageTimer st(prof, "attention");
      attention(L, qr.data(), kr.data(), vr.data(), t, nh, kv, d, threads,
                tap ? scores.data() : nullptr, tap ? probs.data() : nullptr, ctx.data());
    }
    emit(l, "self_attn.qk_bmm.output", scores, {nh, t, t});
    emit(l, "self_attn.pv_bmm.input", probs, {nh, t, t});
    emit(l, "self_attn.pv_bmm.output", ctx, {t, nh, d});
    {
      StageTimer st(prof, "o_proj");
      int_linear(ctx.data(), t, L.pv_out, L.o_proj, L.o_out, threads, gemm, o.data());
    }
    emit(l, "self_attn.o_proj.output", o, {t, c});
    // 2.8 residual add.
    {
      StageTimer st(prof, "residual");
      rows_parallel(t, threads, [&](int64_t b, int64_t e) {
        int_residual_add(r.data() + b * c, o.data() + b * c, L.o_out.zero_point, (e - b) * c,
                         L.resid_add_1);
      });
    }
    // 2.9 post_attention_layernorm, gate and up.
    {
      StageTimer st(prof, "norm");
      block_norm(L.post_attention_layernorm, r, t, c, threads, x, xn);
    }
    emit(l, "post_attention_layernorm.input", x, {t, c});
    emit(l, "post_attention_layernorm.output", xn, {t, c});
    const ActQuant& pin = L.post_attention_layernorm.out;
    {
      StageTimer st(prof, "gate_up");
      linears(xn.data(), t, c, pin, {{&L.w1, &L.w1_out, gate.data()},
                                     {&L.w3, &L.w3_out, up.data()}},
              threads, gemm);
    }
    emit(l, "mlp.w1.output", gate, {t, ff});
    emit(l, "mlp.w3.output", up, {t, ff});
    // 2.10-2.11 SiLU gate, product, down. Row by row (a row stays in L1): act_fn.output and
    // w2.input are kept in [T, F] only for a tap; an 8-bit w2.input goes straight to the byte
    // form the down projection reads.
    const bool down_u8 = L.w2_in.bits <= 8;
    uint8_t* hu = down_u8 ? scratch<uint8_t, SharedInputTag>(static_cast<size_t>(t * ff)) : nullptr;
    uint32_t* hu_sum = down_u8 ? scratch<uint32_t, SharedSumTag>(static_cast<size_t>(t)) : nullptr;
    const bool keep = tap || !down_u8;
    if (keep) {
      act.resize(static_cast<size_t>(t * ff));
      hmul.resize(static_cast<size_t>(t * ff));
    }
    {
      StageTimer st(prof, "silu_mul");
      rows_parallel(t, threads, [&](int64_t b, int64_t e) {
        int32_t* act_row = keep ? nullptr : scratch<int32_t, ActRowTag>(static_cast<size_t>(ff));
        int32_t* h_row = keep ? nullptr : scratch<int32_t, MulRowTag>(static_cast<size_t>(ff));
        for (int64_t i = b; i < e; ++i) {
          int32_t* ar = keep ? act.data() + i * ff : act_row;
          int32_t* hr = keep ? hmul.data() + i * ff : h_row;
          int_silu(gate.data() + i * ff, ff, L.w1_out.zero_point, L.sigmoid_lut.data(),
                   L.act_in2.zero_point, L.act_fn, L.act_out, ar);
          int_mul(ar, L.act_out.zero_point, up.data() + i * ff, L.w3_out.zero_point, ff, L.mul,
                  L.w2_in, hr);
          uint32_t none = 0;
          if (down_u8) split_bytes(hr, ff, false, hu + i * ff, nullptr, hu_sum + i, &none);
        }
      });
    }
    if (tap) {
      std::vector<int32_t> sig(gate.size());  // [T, F] act_fn.input2
      for (size_t i = 0; i < gate.size(); ++i) sig[i] = L.sigmoid_lut[static_cast<size_t>(gate[i])];
      emit(l, "mlp.act_fn.input2", sig, {t, ff});
    }
    emit(l, "mlp.act_fn.output", act, {t, ff});
    emit(l, "mlp.w2.input", hmul, {t, ff});
    {
      StageTimer st(prof, "down");
      if (down_u8) {
        int_linear_u8(hu, hu_sum, t, L.w2_in, L.w2, L.w2_out, threads, gemm, down.data());
      } else {
        int_linear(hmul.data(), t, L.w2_in, L.w2, L.w2_out, threads, gemm, down.data());
      }
    }
    emit(l, "mlp.w2.output", down, {t, c});
    // 2.12 residual add.
    {
      StageTimer st(prof, "residual");
      rows_parallel(t, threads, [&](int64_t b, int64_t e) {
        int_residual_add(r.data() + b * c, down.data() + b * c, L.w2_out.zero_point, (e - b) * c,
                         L.resid_add_2);
      });
    }
    if (tap) {
      std::vector<int32_t> r32(r.size());  // [T, C] at s_r 2^final_norm_shift
      int_residual_to_i32(r.data(), static_cast<int64_t>(r.size()), m.final_norm_shift, r32.data());
      emit(l, "residual", r32, {t, c});
    }
  }

  // 3. Final norm on the residual >> final_norm_shift (int32): codes in [-32767, 32767] at s_f.
  std::vector<int32_t> yn(static_cast<size_t>(t * c));  // [T, C]
  {
    StageTimer st(prof, "final_norm");
    std::vector<int32_t> r32(r.size());  // [T, C]
    int_residual_to_i32(r.data(), static_cast<int64_t>(r.size()), m.final_norm_shift, r32.data());
    int_rmsnorm(r32.data(), t, c, m.norm_eps_term, m.norm_eps_shift, m.norm_gain_m.data(),
                m.norm_gain_n.data(), 0, -32767, 32767, threads, yn.data());
  }
  emit(-1, "model.norm.output", yn, {t, c});
  std::vector<int16_t> y16(yn.begin(), yn.end());  // [T, C]
  // 4. lm_head, the only float step.
  std::vector<float> logits(static_cast<size_t>(t * v));  // [T, V]
  {
    StageTimer st(prof, "lm_head");
    int_lm_head(y16.data(), m.lm_head_q.data(), m.lm_head_scale.data(), m.final_norm_scale, t, v,
                c, threads, logits.data(), &m.lm_head_packed);
  }
  return logits;
}

}  // namespace mq::rt
