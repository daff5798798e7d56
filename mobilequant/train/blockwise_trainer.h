// mobilequant/train/blockwise_trainer.h
// Block-wise training, the OmniQuant way (reference-implementation.md §4.2; the baselines and
// "OmniQuant-Edge w ARL"): one decoder block at a time. The embeddings of the calibration
// windows (through the model-level `embed` site) are the inputs of block 0, kept twice: the
// float-propagated inputs fp_in and the quantized-propagated inputs quant_in. For block i:
//
//   target_i   = float block i (quantization off, its transforms at their initial value)(fp_in_i)
//   train        block i (quantizers on; only its LET scales, LWC bounds and activation ranges
//                learn) on quant_in_i, MSE to target_i, `epochs` passes over the windows, a
//                fresh GroupedOptimizer (train/param_groups.h) with its cosine over the block
//   fold         block i in place (QuantizedModelImpl::fold_layer)
//   fp_in_{i+1}    = target_i
//   quant_in_{i+1} = quantized folded block i (no gradient)(quant_in_i)
//
// Model-level sites (embedding output, final norm, lm_head) are not trained. After the last
// block every block is folded.
//
// Checkpoints (`checkpoint_dir`): after each block, its folded weights go to
// `blockwise_layer_{i}.safetensors`, then the quantization state of the whole model and the
// number of finished blocks to `blockwise_state.safetensors`, each written through a temporary
// file and a rename (the state file last, so it never names a block whose weights are missing).
// With `resume`, the float inputs are recomputed through the caller's freshly loaded model for
// the finished blocks, their folded weights and the quantization state are loaded, the
// quantized inputs recomputed through them, and training continues with the next block; the
// run ends with the same parameters, bit for bit on the CPU, as one never interrupted.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mobilequant/config/train_config.h"
#include "mobilequant/train/param_groups.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

/// Options of train_blockwise (defaults: the reference's `mobilequant.py` defaults, 20 epochs
/// as the block-wise scripts run).
struct BlockwiseOptions {
  ParamGroupOptions let{true, 1e-3, 1e-3, 0.0};   ///< equivalent-transform scales
  ParamGroupOptions lwc{true, 1e-2, 1e-2, 0.0};   ///< weight-clipping bounds
  ParamGroupOptions lrl{false, 1e-6, 1e-6, 0.0};  ///< activation scales and offsets (ARL)
  int64_t epochs = 20;            ///< passes over the windows, per block
  int64_t batch_size = 1;         ///< windows per forward pass
  int64_t grad_accum = 1;         ///< forward passes per optimizer step
  int64_t warmup_steps = 0;       ///< linear warm-up of every group, per block
  bool bf16 = false;              ///< autocast matmuls to bf16 (quantizers stay fp32)
  bool inputs_on_device = false;  ///< keep the cached fp/quant block inputs on the model's
                                  ///< device (else on the CPU)
  std::string checkpoint_dir;     ///< where the per-block state goes ("": no checkpoints)
  bool resume = false;            ///< continue after the blocks checkpoint_dir holds, if any
  /// Stop (unfolded blocks untouched) once this many blocks are finished; -1: run them all.
  /// For tests of resume and for splitting a long run.
  int64_t stop_after_layers = -1;
  /// Called after every optimizer step; TrainStep.layer is the block, step and total_steps
  /// count within the block (may be empty).
  std::function<void(const TrainStep&)> on_step;
  /// Called after block `layer` is folded with its first and last epoch's mean loss (may be
  /// empty).
  std::function<void(int64_t layer, double first_loss, double last_loss)> on_layer;
  /// Called with a line of text for each phase (may be empty).
  std::function<void(const std::string&)> log;
};

/// What a run ends with.
struct BlockwiseResult {
  int64_t layers = 0;          ///< blocks finished (trained and folded), resumed ones included
  int64_t steps = 0;           ///< optimizer steps this call ran
  int64_t resumed_layers = 0;  ///< blocks restored from a checkpoint (0: fresh start)
  /// Mean loss of the first and last epoch of each block this call trained, in block order
  /// (resumed blocks have no entry).
  std::vector<double> first_epoch_loss, last_epoch_loss;
};

/// The state file of a checkpoint directory (`blockwise_state.safetensors`).
std::string blockwise_checkpoint_path(const std::string& checkpoint_dir);

/// Trains `qm` block by block in place on windows [N, T] (int64) and folds every block. The
/// model must have its activation ranges set; LWC bounds are created per block when
/// `lwc.enabled`. Throws mq::Error before any step if nothing is trainable, the windows do not
/// divide into steps, or a checkpoint does not fit the model; during training, on a non-finite
/// loss or gradient, naming the block, the step, the parameter group and the last checkpoint.
BlockwiseResult train_blockwise(QuantizedModelImpl& qm, const torch::Tensor& windows,
                                const BlockwiseOptions& opts);

}  // namespace mq
