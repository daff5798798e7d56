// mobilequant/quant/fused_fake_quantize.cpp
// The host side: without MQ_HAVE_CUDA_KERNELS (CPU builds) the fused path is never taken.
#include "mobilequant/quant/fused_fake_quantize.h"

#include "mobilequant/core/error.h"

namespace mq {

#ifdef MQ_HAVE_CUDA_KERNELS
/// Defined in fused_fake_quantize_cuda.cu.
torch::Tensor fused_fake_quantize_cuda(const torch::Tensor& x, const torch::Tensor& scale,
                                       const torch::Tensor& offset, int64_t qmin, int64_t qmax);
#endif

bool fused_fake_quantize_supported(const torch::Tensor& x) {
#ifdef MQ_HAVE_CUDA_KERNELS
  const auto t = x.scalar_type();
  return x.is_cuda() &&
         (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16);
#else
  (void)x;
  return false;
#endif
}

torch::Tensor fused_fake_quantize(const torch::Tensor& x, const torch::Tensor& scale,
                                  const torch::Tensor& offset, int64_t qmin, int64_t qmax) {
  MQ_CHECK(fused_fake_quantize_supported(x), "fused_fake_quantize: not available for a ",
           x.scalar_type(), " tensor on ", x.device(), " in this build");
  MQ_CHECK(scale.numel() == offset.numel(), "fused_fake_quantize: scale has ", scale.numel(),
           " elements, offset ", offset.numel());
  MQ_CHECK(scale.numel() == 1 || (x.dim() >= 1 && scale.numel() == x.size(-1)),
           "fused_fake_quantize: ", scale.numel(), " scales for an input of shape ", x.sizes(),
           " (expected 1 or the last dimension)");
#ifdef MQ_HAVE_CUDA_KERNELS
  return fused_fake_quantize_cuda(x, scale, offset, qmin, qmax);
#else
  (void)qmin;
  (void)qmax;
  return x;
#endif
}

}  // namespace mq
