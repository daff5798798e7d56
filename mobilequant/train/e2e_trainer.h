// mobilequant/train/e2e_trainer.h
// End-to-end training, the MobileQuant method (paper §4.2-4.3; reference-implementation.md
// §4.1): the float model's last-decoder-layer outputs on the calibration windows are computed
// once (quantization off) as targets; then the quantized model (transforms applied, fake
// quantizers on) is trained to match them with MSE, by AdamW over three parameter groups
// (LET scales, LWC bounds, activation ranges), each with its own cosine schedule. Windows are
// visited in order, `batch_size` at a time, for `epochs` passes; no gradient clipping.
//
// This is the training core: run directories, checkpoints and resume come with `mobilequant
// run` (train/ and cli/, next steps of the training issue).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>

#include "mobilequant/train/lr_schedule.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

/// One parameter group's switch and optimizer settings.
struct ParamGroupOptions {
  bool enabled = true;        ///< train this group (the paper's LET / LWC / ARL switches)
  double lr = 1e-3;           ///< peak learning rate
  double min_lr = 1e-3;       ///< learning rate at the end of the cosine
  double weight_decay = 0.0;  ///< AdamW weight decay (the reference: 0)
};

/// What one optimizer step reports.
struct TrainStep {
  int64_t step = 0;        ///< optimizer step, 0-based
  int64_t epoch = 0;       ///< pass over the windows, 0-based
  double loss = 0.0;       ///< MSE of the step's batch
  double grad_norm = 0.0;  ///< L2 norm of every trainable gradient
  double lr_let = 0.0, lr_lwc = 0.0, lr_lrl = 0.0;  ///< learning rates used
};

/// Options of train_end_to_end (defaults: the reference's `mobilequant.py` defaults).
struct EndToEndOptions {
  ParamGroupOptions let{true, 1e-3, 1e-3, 0.0};  ///< equivalent-transform scales
  ParamGroupOptions lwc{true, 1e-2, 1e-2, 0.0};  ///< weight-clipping bounds
  ParamGroupOptions lrl{true, 1e-6, 1e-6, 0.0};  ///< activation scales and offsets (ARL)
  int64_t epochs = 1;             ///< passes over the windows
  int64_t batch_size = 1;         ///< windows per optimizer step
  int64_t warmup_steps = 0;       ///< linear warm-up of every group
  bool targets_on_device = false; ///< keep the float targets on the model's device (else CPU)
  std::function<void(const TrainStep&)> on_step;  ///< called after every step (may be empty)
};

/// What a run ends with.
struct EndToEndResult {
  int64_t steps = 0;             ///< optimizer steps taken
  double first_epoch_loss = 0.0; ///< mean loss of the first epoch
  double last_epoch_loss = 0.0;  ///< mean loss of the last epoch
};

/// Trains `qm` in place on windows [N, T] (int64). The model must have its activation ranges
/// set; LWC bounds are created if `lwc.enabled`. Throws mq::Error before any step if nothing
/// is trainable or the windows do not divide into batches, and during training, on a non-finite
/// loss or gradient, naming the step and the parameter group; the parameters are then those of
/// the last good step.
EndToEndResult train_end_to_end(QuantizedModelImpl& qm, const torch::Tensor& windows,
                                const EndToEndOptions& opts);

}  // namespace mq
