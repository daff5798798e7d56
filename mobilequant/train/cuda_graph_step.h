// mobilequant/train/cuda_graph_step.h
// One micro-batch of the end-to-end step (forward to the last layer, loss, backward) captured
// once as a CUDA graph and replayed for every later micro-batch: the ~16,000-22,000 kernel
// launches of a step become one graph launch, so the host no longer bounds the step. The
// inputs are copied into static buffers; gradients accumulate into the .grad tensors that
// existed at capture (zero them in place, never reset them, between steps). Needs LibTorch
// with CUDA (MQ_HAVE_TORCH_CUDA); elsewhere available() is false.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

namespace mq {

/// A captured micro-batch.
class CudaGraphStep {
 public:
  /// ids [B, T], target -> the micro-batch's loss [] (unscaled; its backward already run).
  using Body = std::function<torch::Tensor(const torch::Tensor& ids, const torch::Tensor& target)>;

  CudaGraphStep();
  ~CudaGraphStep();
  CudaGraphStep(const CudaGraphStep&) = delete;
  CudaGraphStep& operator=(const CudaGraphStep&) = delete;

  /// True if this build can capture graphs on `device` (a CUDA device, LibTorch with CUDA).
  static bool available(const torch::Device& device);
  /// True once capture() succeeded.
  bool captured() const;
  /// Captures `body` on static copies of ids and target (on ids' device). The body's work is
  /// recorded, not run: call replay() to run it. Returns false with `why` set when capture
  /// failed (an operation that synchronises the host, say); the caller then runs eagerly.
  bool capture(const Body& body, const torch::Tensor& ids, const torch::Tensor& target,
               std::string& why);
  /// Copies ids [B, T] and target into the static buffers (shapes as captured) and replays.
  /// Returns the loss [] (a static buffer, overwritten by the next replay).
  torch::Tensor replay(const torch::Tensor& ids, const torch::Tensor& target);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mq
