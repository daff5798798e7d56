// mobilequant/config/train_config.h
// How a learned method trains (paper §4.2-4.3; reference-implementation.md §4): which trainer,
// which equivalent-transform pairs carry learnable scales, the three parameter groups'
// switches and learning rates, epochs, batches, loss and precision. A plain struct with one
// field list (config/field_visitor.h), read from method configs (configs/methods/*.json) and
// run configs, overridden with `--set train.FIELD=VALUE`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/config/field_visitor.h"

namespace mq {

/// Which pairs of a block carry an equivalent-transform scale.
struct LetPairs {
  bool qkv = true;  ///< input_layernorm -> q/k/v
  bool fc1 = true;  ///< post_attention_layernorm -> gate/up
  bool fc2 = true;  ///< up -> down
  bool out = true;  ///< v -> o (per KV head)
  bool qkt = true;  ///< q <-> k (tied across rotary pairs)
  /// True if any pair is on.
  bool any() const { return qkv || fc1 || fc2 || out || qkt; }

  /// The one field list.
  template <class V>
  void for_each_field(V& v) {
    v("qkv", qkv, "input_layernorm -> q/k/v");
    v("fc1", fc1, "post_attention_layernorm -> gate/up");
    v("fc2", fc2, "up -> down");
    v("out", out, "v -> o, per KV head");
    v("qkt", qkt, "q <-> k, tied across rotary pairs");
  }
};

/// One parameter group's switch and optimizer settings.
struct ParamGroupOptions {
  bool enabled = true;        ///< train this group (the paper's LET / LWC / ARL switches)
  double lr = 1e-3;           ///< peak learning rate
  double min_lr = 1e-3;       ///< learning rate at the end of the cosine
  double weight_decay = 0.0;  ///< AdamW weight decay (the reference: 0)

  /// The one field list.
  template <class V>
  void for_each_field(V& v) {
    v("enabled", enabled, "Train this group");
    v("lr", lr, "Peak learning rate");
    v("min_lr", min_lr, "Learning rate at the end of the cosine");
    v("weight_decay", weight_decay, "AdamW weight decay");
  }
};

/// Which trainer runs.
enum class TrainerKind {
  kNone,       ///< "none": closed form only
  kEndToEnd,   ///< "end-to-end": the whole model against the float last layer (MobileQuant)
  kBlockwise,  ///< "block-wise": one decoder layer at a time (OmniQuant)
};
/// "none", "end-to-end" or "block-wise".
const char* to_string(TrainerKind k);
template <>
struct EnumValues<TrainerKind> {
  /// Every TrainerKind.
  static const std::vector<TrainerKind>& values();
};

/// What the end-to-end trainer minimises.
enum class TrainLoss {
  kMse,  ///< "mse": MSE to the float model's last-decoder-layer outputs (the paper's)
  kKl,   ///< "kl": KL(float || quantized) of the next-token distributions
  kLm,   ///< "lm": cross-entropy of the quantized model on the next token
};
/// "mse", "kl" or "lm".
const char* to_string(TrainLoss l);
template <>
struct EnumValues<TrainLoss> {
  /// Every TrainLoss.
  static const std::vector<TrainLoss>& values();
};

/// The arithmetic of training.
enum class TrainPrecision {
  kFp32,  ///< "fp32": everything in fp32 (TF32 matmuls on the GPU where `tf32`)
  kBf16,  ///< "bf16": matmuls autocast to bf16, quantizers and losses in fp32
};
/// "fp32" or "bf16".
const char* to_string(TrainPrecision p);
template <>
struct EnumValues<TrainPrecision> {
  /// Every TrainPrecision.
  static const std::vector<TrainPrecision>& values();
};

/// Everything about training (defaults: the reference's `mobilequant.py` defaults).
struct TrainConfig {
  TrainerKind trainer = TrainerKind::kNone;    ///< which trainer
  LetPairs let_pairs;                          ///< pairs with learnable scales
  ParamGroupOptions let{true, 1e-3, 1e-3, 0.0};   ///< equivalent-transform scales
  ParamGroupOptions lwc{true, 1e-2, 1e-2, 0.0};   ///< weight-clipping bounds
  ParamGroupOptions lrl{false, 1e-6, 1e-6, 0.0};  ///< activation ranges (ARL)
  int64_t epochs = 10;                  ///< passes over the calibration windows
  int64_t batch_size = 1;               ///< windows per forward pass
  int64_t grad_accum = 1;               ///< forward passes per optimizer step
  int64_t warmup_steps = 0;             ///< linear warm-up of every group
  TrainLoss loss = TrainLoss::kMse;     ///< end to end: what is minimised
  TrainPrecision precision = TrainPrecision::kFp32;  ///< fp32 or bf16 autocast
  bool tf32 = true;                     ///< allow TF32 matmuls on the GPU (the reference does)
  bool targets_on_device = false;       ///< keep float targets/inputs on the GPU (else host)
  bool recompute = false;               ///< end to end: recompute blocks in the backward pass
  bool cuda_graph = false;              ///< end to end on CUDA: replay a captured micro-batch
  int64_t checkpoint_every = 0;         ///< end to end: also checkpoint every N steps (0: epochs)

  /// The one field list.
  template <class V>
  void for_each_field(V& v) {
    v("trainer", trainer, "none, end-to-end or block-wise");
    v("let_pairs", let_pairs, "Pairs with learnable scales: qkv, fc1, fc2, out, qkt");
    v("let", let, "Equivalent-transform scales: enabled, lr, min_lr, weight_decay");
    v("lwc", lwc, "Weight-clipping bounds: enabled, lr, min_lr, weight_decay");
    v("lrl", lrl, "Activation ranges (ARL): enabled, lr, min_lr, weight_decay");
    v("epochs", epochs, "Passes over the calibration windows");
    v("batch_size", batch_size, "Windows per forward pass");
    v("grad_accum", grad_accum, "Forward passes per optimizer step");
    v("warmup_steps", warmup_steps, "Linear warm-up steps of every group");
    v("loss", loss, "End to end: mse (last layer), kl (logits) or lm (next token)");
    v("precision", precision, "fp32, or bf16 autocast of the matmuls");
    v("tf32", tf32, "Allow TF32 matmuls on the GPU");
    v("targets_on_device", targets_on_device, "Keep float targets on the GPU instead of host");
    v("recompute", recompute,
      "End to end: recompute each block in the backward pass (activation checkpointing)");
    v("cuda_graph", cuda_graph,
      "End to end on a GPU, mse loss: capture one micro-batch as a CUDA graph and replay it");
    v("checkpoint_every", checkpoint_every, "End to end: checkpoint every N steps (0: per epoch)");
  }

  /// Throws mq::Error naming `where` and the field when a value is out of range.
  void validate(const std::string& where) const;
};

}  // namespace mq
