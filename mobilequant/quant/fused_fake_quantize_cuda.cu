// mobilequant/quant/fused_fake_quantize_cuda.cu
// One grid-stride kernel: y = (clamp(rint(x / s) + o, qmin, qmax) - o) * s per element, in fp32,
// each operation rounded as the composed torch ops round it (no contraction into FMAs: the
// division is __fdiv_rn, the rest are separate adds/multiplies with --fmad=false).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>

namespace mq {

namespace {

template <typename T>
__global__ void fake_quantize_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                     const float* __restrict__ scale,
                                     const float* __restrict__ offset, int64_t channels,
                                     float qmin, float qmax) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t c = channels == 1 ? 0 : i % channels;
    const float s = scale[c];
    const float o = offset[c];
    float q = __fadd_rn(rintf(__fdiv_rn(static_cast<float>(x[i]), s)), o);
    q = q < qmin ? qmin : (q > qmax ? qmax : q);  // NaN passes through, as torch.clamp
    y[i] = static_cast<T>(__fmul_rn(__fsub_rn(q, o), s));
  }
}

}  // namespace

at::Tensor fused_fake_quantize_cuda(const at::Tensor& x_in, const at::Tensor& scale_in,
                                    const at::Tensor& offset_in, int64_t qmin,
                                       int64_t qmax) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  // Convert only what needs it: every dispatch costs microseconds of host time per site.
  auto ready = [&](const at::Tensor& t) {
    return t.device() == x_in.device() && t.scalar_type() == at::kFloat && t.is_contiguous();
  };
  const at::Tensor x = x_in.is_contiguous() ? x_in : x_in.contiguous();
  const at::Tensor scale = ready(scale_in) ? scale_in : scale_in.to(x.device(), at::kFloat).contiguous();
  const at::Tensor offset =
      ready(offset_in) ? offset_in : offset_in.to(x.device(), at::kFloat).contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return y;
  const int64_t channels = scale.numel();
  constexpr int kThreads = 256;
  const int64_t want = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(want < 65535 * 32 ? want : 65535 * 32);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  switch (x.scalar_type()) {
    case at::kFloat:
      fake_quantize_kernel<float><<<blocks, kThreads, 0, stream>>>(
          x.data_ptr<float>(), y.data_ptr<float>(), n, scale.data_ptr<float>(),
          offset.data_ptr<float>(), channels, lo, hi);
      break;
    case at::kBFloat16:
      fake_quantize_kernel<at::BFloat16><<<blocks, kThreads, 0, stream>>>(
          x.data_ptr<at::BFloat16>(), y.data_ptr<at::BFloat16>(), n, scale.data_ptr<float>(),
          offset.data_ptr<float>(), channels, lo, hi);
      break;
    case at::kHalf:
      fake_quantize_kernel<at::Half><<<blocks, kThreads, 0, stream>>>(
          x.data_ptr<at::Half>(), y.data_ptr<at::Half>(), n, scale.data_ptr<float>(),
          offset.data_ptr<float>(), channels, lo, hi);
      break;
    default:
      TORCH_CHECK(false, "fused_fake_quantize: unsupported dtype ", x.scalar_type());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace mq
