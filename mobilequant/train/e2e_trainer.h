// mobilequant/train/e2e_trainer.h
// End-to-end training, the MobileQuant method (paper §4.2-4.3; reference-implementation.md
// §4.1): the float model's last-decoder-layer outputs on the calibration windows are computed
// once (quantization off) as targets; then the quantized model (transforms applied, fake
// quantizers on) is trained to match them with MSE, by AdamW over three parameter groups
// (LET scales, LWC bounds, activation ranges), each with its own cosine schedule
// (train/param_groups.h). Windows are visited in order, `batch_size` per forward pass and
// `grad_accum` passes per optimizer step, for `epochs` passes; no gradient clipping.
//
// Ablations: the loss may instead be KL(float || quantized) of the next-token distributions
// (the float logits recomputed from the stored last-layer targets) or the language-modelling
// loss; matmuls may run in bf16 autocast.
//
// Checkpoints (`checkpoint_dir`): every `checkpoint_every` steps and at the end of every epoch
// the trainable parameters, the optimizer state and the step go to `e2e_state.pt`, written
// through a temporary file and a rename. With `resume`, training continues from that file and
// ends with the same parameters, bit for bit on the CPU, as a run never interrupted.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>

#include "mobilequant/config/train_config.h"
#include "mobilequant/train/param_groups.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

/// Options of train_end_to_end (defaults: the reference's `mobilequant.py` defaults).
struct EndToEndOptions {
  ParamGroupOptions let{true, 1e-3, 1e-3, 0.0};  ///< equivalent-transform scales
  ParamGroupOptions lwc{true, 1e-2, 1e-2, 0.0};  ///< weight-clipping bounds
  ParamGroupOptions lrl{true, 1e-6, 1e-6, 0.0};  ///< activation scales and offsets (ARL)
  int64_t epochs = 1;             ///< passes over the windows
  int64_t batch_size = 1;         ///< windows per forward pass
  int64_t grad_accum = 1;         ///< forward passes per optimizer step
  int64_t warmup_steps = 0;       ///< linear warm-up of every group
  TrainLoss loss = TrainLoss::kMse;  ///< what is minimised
  bool bf16 = false;              ///< autocast matmuls to bf16 (quantizers stay fp32)
  /// Recompute each decoder block in the backward pass instead of keeping its activations
  /// (train/recompute.h): memory of one block, one more forward of compute. MSE loss only.
  bool recompute = false;
  /// On a CUDA device with the MSE loss: capture one micro-batch (forward, loss, backward) as
  /// a CUDA graph after the first step and replay it (train/cuda_graph_step.h); falls back to
  /// eager steps, with a log line, when capture fails. Same arithmetic, fewer host launches.
  bool cuda_graph = false;
  bool targets_on_device = false; ///< keep the float targets on the model's device (else CPU)
  std::string checkpoint_dir;     ///< where e2e_state.pt goes ("": no checkpoints)
  int64_t checkpoint_every = 0;   ///< also checkpoint every N steps (0: at epoch ends only)
  bool resume = false;            ///< continue from checkpoint_dir/e2e_state.pt if it exists
  std::function<void(const TrainStep&)> on_step;  ///< called after every step (may be empty)
  /// Called after each checkpoint with its path and the steps it holds (may be empty).
  std::function<void(const std::string&, int64_t)> on_checkpoint;
  /// Called with a line of text for each phase (may be empty).
  std::function<void(const std::string&)> log;
};

/// What a run ends with.
struct EndToEndResult {
  int64_t steps = 0;             ///< optimizer steps of the whole run
  int64_t resumed_from = 0;      ///< steps restored from a checkpoint (0: fresh start)
  double first_epoch_loss = 0.0; ///< mean loss of the first epoch
  double last_epoch_loss = 0.0;  ///< mean loss of the last epoch
};

/// The last decoder layer's output [B, T, C] for input_ids [B, T] through qm's hooks, as the
/// trainer's MSE sees it: the last block's second residual add before its fake quantization
/// (if that site is quantized). The final norm and the logits are not computed.
torch::Tensor last_layer_output(QuantizedModelImpl& qm, const torch::Tensor& ids);

/// The file a checkpoint directory holds.
std::string e2e_checkpoint_path(const std::string& checkpoint_dir);

/// Trains `qm` in place on windows [N, T] (int64). The model must have its activation ranges
/// set; LWC bounds are created if `lwc.enabled`. Throws mq::Error before any step if nothing
/// is trainable or the windows do not divide into steps, and during training, on a non-finite
/// loss or gradient, naming the step, the parameter group and the last checkpoint; the
/// parameters are then those of the last good step.
EndToEndResult train_end_to_end(QuantizedModelImpl& qm, const torch::Tensor& windows,
                                const EndToEndOptions& opts);

}  // namespace mq
