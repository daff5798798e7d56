// mobilequant/train/param_groups.h
// What both trainers share (reference-implementation.md §4.1 steps 6-8): AdamW over three
// parameter groups (LET scales, LWC bounds, activation scales and offsets), each with its own
// learning rate, minimum learning rate (a cosine per optimizer step, train/lr_schedule.h),
// warm-up and weight decay; the gradient norm of every group read back with one device
// synchronisation and checked for non-finite values; the optimizer state saved and restored
// bit for bit for checkpoints.
//
// The update is PyTorch's fused AdamW (at::_fused_adamw_, betas 0.9/0.999, eps 1e-8, the
// defaults of torch.optim.AdamW): one multi-tensor kernel per group instead of ~10 kernels per
// parameter. A model has ~50 quantization parameters per block, so the per-parameter loop of
// torch::optim::AdamW costs ~20k kernel launches a step (measured 137 ms of a 1 s step on an
// H100 for SmolLM2-135M).
#pragma once

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mobilequant/config/train_config.h"
#include "mobilequant/core/tensor_map.h"
#include "mobilequant/train/lr_schedule.h"

namespace mq {

/// The three trainable groups (the paper's LET / LWC / ARL).
enum class ParamGroup { kLet = 0, kLwc = 1, kLrl = 2 };
/// Number of ParamGroup values.
inline constexpr int kNumParamGroups = 3;
/// "let", "lwc" or "lrl".
const char* to_string(ParamGroup g);

/// What one optimizer step reports.
struct TrainStep {
  int64_t layer = -1;        ///< block being trained (block-wise), -1 end to end
  int64_t step = 0;          ///< optimizer step, 0-based (block-wise: within the layer)
  int64_t total_steps = 0;   ///< optimizer steps of the run (block-wise: of the layer)
  int64_t epoch = 0;         ///< pass over the windows, 0-based
  double loss = 0.0;         ///< loss of the step's windows (mean over its micro-batches)
  double grad_norm = 0.0;    ///< L2 norm of every trainable gradient
  std::array<double, kNumParamGroups> lr{};  ///< learning rate used per group (0: off)
  int64_t tokens = 0;        ///< tokens the step consumed
};

/// AdamW over the groups that are enabled and have parameters, each with its schedule.
class GroupedOptimizer {
 public:
  /// `params[g]` are group g's tensors; a group trains when `opts[g].enabled` and it has
  /// tensors. Sets requires_grad on every tensor given (false for disabled groups). Throws
  /// mq::Error when no group trains.
  GroupedOptimizer(std::array<std::vector<torch::Tensor>, kNumParamGroups> params,
                   const std::array<ParamGroupOptions, kNumParamGroups>& opts,
                   int64_t warmup_steps, int64_t total_steps);

  /// Sets each group's learning rate for optimizer step `step` and records it in `info`.
  void set_lr(int64_t step, TrainStep& info);
  /// Clears every gradient (undefined until the next backward).
  void zero_grad();
  /// Sets every defined gradient to zero in place (a captured CUDA graph accumulates into
  /// them); undefined ones stay undefined.
  void zero_grad_in_place();
  /// Names a trainable tensor in errors (e.g. "layers.3.scales.qkv_smooth_scale").
  using ParamNamer = std::function<std::string(const torch::Tensor&)>;
  /// Sets how grad_norm's error names the tensor whose gradient is not finite (default: its
  /// index in the group).
  void set_namer(ParamNamer namer) { namer_ = std::move(namer); }
  /// The L2 norm of every trainable gradient, read with one device synchronisation; throws
  /// mq::Error naming `where`, the step, the group and its first tensor with a non-finite
  /// gradient (name, shape, how many elements are NaN and infinite, whether the tensor's own
  /// values are finite), and how many of the group's tensors are affected and the last of them
  /// in model order (the backward pass runs from the loss back, so the last bounds where the
  /// non-finite values arose) when a group's gradient is not finite.
  double grad_norm(const std::string& where, int64_t step);
  /// One AdamW step.
  void step();
  /// The optimizer state: per group g and parameter i, "optimizer.G.I.exp_avg", ".exp_avg_sq"
  /// and ".step" (G the group's name).
  TensorMap state() const;
  /// Restores a state(); every tensor must be present with its shape (`source` in errors).
  void load_state(const TensorMap& tensors, const std::string& source);
  /// The trainable tensors of every live group, in optimizer order.
  std::vector<torch::Tensor> parameters() const;

 private:
  struct Live {
    ParamGroup group;
    std::vector<torch::Tensor> params;
    CosineSchedule schedule;
    double weight_decay = 0.0;
    double lr = 0.0;                    // of the current step
    std::vector<torch::Tensor> exp_avg, exp_avg_sq, steps;  // per parameter, [p] and [] fp32
  };
  /// Throws the non-finite-gradient error for group `g`, naming its first bad tensor.
  [[noreturn]] void throw_non_finite(const Live& g, const std::string& where, int64_t step) const;

  std::vector<Live> live_;
  ParamNamer namer_;
};

}  // namespace mq
