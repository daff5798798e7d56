// mobilequant/bench/train_bench.h
// Times the end-to-end training step (train/e2e_trainer.h) of a simulated-quantized model:
// tokens per second, the median time of one optimizer step, peak GPU memory (the caching
// allocator's peak, reset before each measurement) and peak host RSS (VmHWM, reset through
// /proc/self/clear_refs), the achieved matrix throughput from an analytic FLOP count and its
// fraction of the device's peak dense matrix throughput. With `profile`, where the time goes:
// forward / backward / optimizer of the same step timed apart, and the top operators by self
// time (CPU) and the top device kernels (CUDA) from one step under the Kineto profiler.
// Speed is measured here, never in tests.
//
// Usage (`mobilequant bench train`; a model by path, or random weights by shape):
//   mobilequant bench train -m SmolLM2-135M-Instruct.Q4_1.gguf --device cuda
//       --precision fp32,tf32,bf16 --seqlen 2048 --batch 1 -o train_smollm2.json
//   mobilequant bench train --shape tinyllama-1.1b --device cuda --precision bf16 --profile
//   mobilequant bench train --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128
//       --vocab 256 --seqlen 64 --steps 2 --warmup 1        (tiny, on the CPU)
// (each command on one line).
// Options: --shape smollm2-135m|tinyllama-1.1b (the --hidden/--layers/--heads/--kv-heads/
// --intermediate/--vocab flags override a preset's fields, or give a whole shape), --seed
// (random weights: N(0, 0.02) like transformers' init, ids and ranges from the same seed),
// --quant (preset of configs/quant/, default w8a8), --let (pairs with learnable scales, comma
// list or all|none; default all, as MobileQuant trains), --steps/--warmup (optimizer steps timed
// / untimed; at least one warm-up), --precision (one table row each), --profile,
// --profile-top N, --references (bench_train_references: the float step and the matmuls
// alone, per precision), --threads, -o FILE (JSON with the command line and the machine).
//
// Precisions: fp32 = fp32 weights and matmuls, TF32 off; tf32 = fp32 weights, cuBLAS/cuDNN
// matmuls in TF32; bf16 = fp32 weights, the trainer's bf16 autocast (TF32 off for what stays
// fp32). On the CPU tf32 computes as fp32.
//
// Step time: the trainer's own loop (train_end_to_end), the time between consecutive on_step
// callbacks with the device synchronised before each clock read; the float targets are computed
// before the first step and never timed. The activation ranges come from one random window
// (collect_act_stats), outside the timing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/config/quant_config.h"
#include "mobilequant/config/train_config.h"
#include "mobilequant/models/decoder.h"

namespace mq {

/// How the matmuls of a timed training step compute (the bench's rows; tf32 is the
/// trainer's fp32 with TrainConfig::tf32 on).
enum class BenchPrecision {
  kFp32,  ///< fp32, TF32 off
  kTf32,  ///< fp32 weights, TF32 matmuls
  kBf16,  ///< fp32 weights, bf16 autocast
};
/// "fp32", "tf32" or "bf16".
const char* to_string(BenchPrecision p);
/// Parses "fp32", "tf32", "bf16"; throws mq::Error naming `where`, the value and the allowed set.
BenchPrecision parse_bench_precision(const std::string& name, const std::string& where);

/// How to time the training step.
struct TrainBenchOptions {
  int64_t seqlen = 2048;      ///< tokens per window
  int64_t batch = 1;          ///< windows per forward pass (= per optimizer step)
  int64_t warmup = 2;         ///< untimed optimizer steps first (>= 1)
  int64_t steps = 5;          ///< timed optimizer steps (median reported)
  BenchPrecision precision = BenchPrecision::kFp32;
  uint64_t seed = 0;          ///< seed of the random token ids
  bool profile = false;       ///< also time the phases apart and profile one step by operator
  int64_t profile_top = 15;   ///< operators / kernels listed by the profile
  bool recompute = false;     ///< recompute blocks in the backward pass (not with profile)
  bool cuda_graph = false;    ///< replay a captured micro-batch (train/cuda_graph_step.h)
};

/// One operator's (or kernel's) share of a profiled step.
struct OpTime {
  std::string name;
  double self_ms = 0;   ///< self time (CPU ops: minus nested ops) or kernel time (device)
  int64_t calls = 0;
};

/// Where the time of one step goes (profile); medians over the profiled steps.
struct TrainStepBreakdown {
  double forward_ms = 0;    ///< forward through the hooks to the last layer, and the loss
  double backward_ms = 0;   ///< loss.backward()
  double optimizer_ms = 0;  ///< gradient norm read-back, fused AdamW step and zero_grad
  double cpu_total_ms = 0;  ///< sum of CPU self times in the profiled step
  double device_total_ms = 0;  ///< sum of device kernel times in the profiled step (0 on CPU)
  std::vector<OpTime> top_cpu_ops;       ///< by self time, descending
  std::vector<OpTime> top_device_ops;    ///< kernels by time, descending (empty on CPU)
  std::string note;         ///< why the operator profile is missing, if it is
};

/// The figures of one precision.
struct TrainBenchResult {
  BenchPrecision precision = BenchPrecision::kFp32;
  int64_t seqlen = 0, batch = 0, steps = 0, warmup = 0;
  std::vector<double> step_seconds;  ///< every timed step
  double median_step_seconds = 0;
  double tokens_per_second = 0;      ///< batch * seqlen / median_step_seconds
  double flops_per_step = 0;         ///< train_step_flops
  double achieved_tflops = 0;        ///< flops_per_step / median_step_seconds / 1e12
  double peak_tflops = 0;            ///< the device's dense peak at this precision (0: unknown)
  double fraction_of_peak = -1;      ///< achieved / peak (-1: unknown)
  double peak_gpu_allocated_gib = -1;  ///< caching allocator's peak allocated (-1: not CUDA)
  double peak_gpu_reserved_gib = -1;   ///< caching allocator's peak reserved (-1: not CUDA)
  double peak_host_rss_gib = 0;      ///< VmHWM during the measurement
  bool host_peak_reset = false;      ///< false: VmHWM could not be reset (peak since start)
  double final_loss = 0;             ///< loss of the last step (a sanity figure)
  bool profiled = false;
  TrainStepBreakdown breakdown;      ///< when profiled
};

/// The references of one precision, on the same shape, device and token count as the
/// quantized step: the same matmul work without the quantizers. What the quantized step's
/// fraction of peak can be read against (`bench train --references`).
struct TrainReferenceResult {
  BenchPrecision precision = BenchPrecision::kFp32;
  std::vector<double> float_step_seconds;  ///< every timed float forward + backward
  double float_median_seconds = 0;
  std::vector<double> matmul_seconds;      ///< every timed pass of the matmuls alone
  double matmul_median_seconds = 0;
  double flops_per_step = 0;               ///< train_step_flops (the same as the step's)
  double peak_tflops = 0;                  ///< peak_matmul_tflops (0: unknown)
  double float_peak_gpu_allocated_gib = -1;  ///< the float step's peak (-1: not CUDA)
  bool float_step_graph = false;  ///< the float step was replayed as a CUDA graph
  std::string note;               ///< why the graph asked for was not used, if it was not
};

/// Times two references at opts.precision, each opts.warmup untimed then opts.steps timed
/// passes (medians), on random ids of opts.seed:
///  - float step: the float model's forward to the last layer and an MSE loss, then its
///    backward, with no hooks installed (SDPA causal attention) and every decoder block's
///    weights requiring gradients: the same 3 x forward matmul FLOPs as the quantized step
///    (input and weight gradients), no optimizer step. bf16 is autocast over fp32 weights.
///    With opts.cuda_graph (on CUDA) it is captured after one eager pass and replayed, its
///    gradients zeroed in place first, as the quantized step's graph runs.
///  - matmuls alone: per block, the 7 linear layers' forward, input gradient and weight
///    gradient as mm on random [batch * seqlen, in] inputs, and SDPA causal attention forward
///    and backward on [batch, heads, seqlen, head_dim], in the precision's dtype (bf16, or
///    fp32 with TF32 per the precision): the cuBLAS / SDPA time of the counted FLOPs.
/// opts.recompute and opts.profile do not apply to the references.
/// The model's weights, gradients and requires_grad flags are as before on return. Its hooks
/// must be cleared (bench_train clears them). Throws mq::Error on bad options.
TrainReferenceResult bench_train_references(CausalLm& model, const TrainBenchOptions& opts);

/// Matmul FLOPs of one end-to-end training step on `batch` windows of `seqlen` tokens: the
/// forward stops at the last decoder layer (the loss is on its output; no lm_head), so
///   forward  = 2 * P * N                      (P: q,k,v,o,gate,up,down weights of all layers,
///                                              N = batch * seqlen tokens)
///            + L * batch * 4 * T^2 * H * d / 2 (QK^T and PV, causal: half the T^2 products)
///   backward = 2 * forward  (the gradient of each matmul's input and of its weight: the
///                            weights are functions of the LET scales and LWC bounds)
///   step     = 3 * forward.
/// Elementwise work (fake quantization, norms, softmax) is not counted.
double train_step_flops(const ModelConfig& cfg, int64_t seqlen, int64_t batch);

/// The device's name: the CUDA device's, else "cpu".
std::string accelerator_name(const torch::Device& device);

/// Peak dense matrix TFLOP/s of a device by name at a precision; 0 when unknown. H100 SXM and
/// H200: bf16 989.4, TF32 494.7, fp32 (no tensor cores) 66.9; H100 PCIe 756 / 378 / 51.2;
/// A100 312 / 156 / 19.5.
double peak_matmul_tflops(const std::string& device_name, BenchPrecision p);

/// Times train_end_to_end on `model` (fp32 weights, on its device) wrapped in a fresh
/// QuantizedModel(quant, let), ranges from one random window, on random ids. The model's own
/// weights are untouched; its hooks are cleared afterwards. Throws mq::Error on bad options.
TrainBenchResult bench_train(CausalLm& model, const QuantConfig& quant, const LetPairs& let,
                             const TrainBenchOptions& opts);

}  // namespace mq
