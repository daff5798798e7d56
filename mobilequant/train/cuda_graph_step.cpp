// mobilequant/train/cuda_graph_step.cpp
// at::cuda::CUDAGraph around one micro-batch, captured on a side stream with the autocast
// weight cache off (a cached cast would point into the graph's pool after capture), as
// PyTorch's whole-network capture does.
#include "mobilequant/train/cuda_graph_step.h"

#include "mobilequant/core/error.h"

#ifdef MQ_HAVE_TORCH_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace mq {

struct CudaGraphStep::State {
#ifdef MQ_HAVE_TORCH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
  torch::Tensor ids;     // [B, T] static input
  torch::Tensor target;  // static target
  torch::Tensor loss;    // [] static output
  bool captured = false;
};

CudaGraphStep::CudaGraphStep() : state_(std::make_unique<State>()) {}
CudaGraphStep::~CudaGraphStep() = default;

bool CudaGraphStep::available(const torch::Device& device) {
#ifdef MQ_HAVE_TORCH_CUDA
  return device.is_cuda();
#else
  (void)device;
  return false;
#endif
}

bool CudaGraphStep::captured() const { return state_->captured; }

bool CudaGraphStep::capture(const Body& body, const torch::Tensor& ids,
                            const torch::Tensor& target, std::string& why) {
#ifdef MQ_HAVE_TORCH_CUDA
  MQ_CHECK(available(ids.device()), "CudaGraphStep: ids on ", ids.device(), " (expected CUDA)");
  State& s = *state_;
  s.ids = ids.clone();                       // [B, T]
  s.target = target.to(ids.device()).clone();
  torch::cuda::synchronize();
  // Memory cached by earlier work cannot be freed while capturing (cudaFree is not allowed
  // then), so a capture could run out of memory with gigabytes cached: hand it back first.
  c10::cuda::CUDACachingAllocator::emptyCache();
  const c10::cuda::CUDAGuard device_guard(ids.device());
  c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, ids.device().index());
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  bool ok = true;
  {
    const c10::cuda::CUDAStreamGuard stream_guard(stream);
    s.graph = std::make_unique<at::cuda::CUDAGraph>();
    try {
      s.graph->capture_begin();
      s.loss = body(s.ids, s.target);
      s.graph->capture_end();
    } catch (const std::exception& e) {
      ok = false;
      why = e.what();
      try {
        s.graph->capture_end();  // ends the stream's capture; the half graph is discarded
      } catch (const std::exception&) {
      }
      s.graph.reset();
    }
  }
  at::autocast::set_autocast_cache_enabled(cache);
  torch::cuda::synchronize();
  s.captured = ok;
  return ok;
#else
  (void)body;
  (void)ids;
  (void)target;
  why = "this build's LibTorch has no CUDA";
  return false;
#endif
}

torch::Tensor CudaGraphStep::replay(const torch::Tensor& ids, const torch::Tensor& target) {
  State& s = *state_;
  MQ_CHECK(s.captured, "CudaGraphStep: replay before a successful capture");
  MQ_CHECK(ids.sizes() == s.ids.sizes() && target.sizes() == s.target.sizes(),
           "CudaGraphStep: inputs of shape ", ids.sizes(), " and ", target.sizes(),
           ", captured with ", s.ids.sizes(), " and ", s.target.sizes());
#ifdef MQ_HAVE_TORCH_CUDA
  s.ids.copy_(ids);
  s.target.copy_(target);
  s.graph->replay();
#endif
  return s.loss;
}

}  // namespace mq
