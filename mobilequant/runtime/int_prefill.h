// mobilequant/runtime/int_prefill.h
// The prefill of docs/integer-model.md ("The prefill, as the reference runtime computes it"):
// tokens -> float logits [T, V], integer codes everywhere in between. Work is split over the
// runtime's thread pool (parallel.h) by rows (tokens) for the elementwise kernels and norms, by
// (head, block of query rows) for attention, by GEMM tiles (VNNI) or gemmlowp's own threads for
// the linears, by vocabulary rows for the lm_head; temporaries come from per-thread scratch
// (scratch.h). All kernels are exact integer functions of their inputs, so the logits are
// bitwise identical for every thread count and GEMM backend.
//
// Activation taps: PrefillOptions::observer, when set, receives the codes of every activation
// site of every block, named as in manifest.json's "activations" without the layer prefix
// ("input_layernorm.input", "self_attn.q_proj.output", …, "mlp.w2.output"), plus "residual"
// after each block (the int64 residual shifted right by final_norm_shift, as the final norm
// reads it: int32 values, not codes) and, with layer -1, "model.norm.output" [T, C].
// Attention sites have shape [T, heads, D]; "self_attn.qk_bmm.output" and
// "self_attn.pv_bmm.input" are [H, T, T] with the masked (j > i) entries of qk_bmm.output set to
// 0 and those of pv_bmm.input set to clamp(z_p).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mobilequant/runtime/int_model.h"

namespace mq::rt {

/// Receives the codes of one activation site of one layer (see the file comment).
using SiteObserver = std::function<void(int64_t layer, const std::string& site,
                                        const std::vector<int32_t>& codes,
                                        const std::vector<int64_t>& shape)>;

/// Wall seconds per stage of prefill(), summed over calls (`bench int --profile`). Stages:
/// "embed", "norm", "qkv", "rope", "attention", "o_proj", "gate_up", "silu_mul", "down",
/// "residual", "final_norm", "lm_head".
struct PrefillProfile {
  std::vector<std::pair<std::string, double>> seconds;  ///< in the order first seen
  int64_t calls = 0;                                     ///< prefills profiled
  /// Adds `s` seconds to `stage`.
  void add(const std::string& stage, double s);
};

/// Options of prefill().
struct PrefillOptions {
  int threads = 0;                    ///< worker threads; 0: all hardware threads
  SiteObserver observer;              ///< optional activation tap (empty: none, no copies made)
  PrefillProfile* profile = nullptr;  ///< optional per-stage wall time (not owned)
};

/// Runs the integer prefill of `tokens` (each in [0, V), 1 <= T <= P) and returns the logits,
/// row-major [T, V]. Throws mq::Error naming the bad token and its position, or T and P.
std::vector<float> prefill(const IntModel& m, const std::vector<int32_t>& tokens,
                           const PrefillOptions& opts = {});

}  // namespace mq::rt
