// mobilequant/quant/fused_fake_quantize_cuda.cu
// Grid-stride kernels: y = (clamp(rint(x / s) + o, qmin, qmax) - o) * s per element, in fp32,
// each operation rounded as the composed torch ops round it (no contraction into FMAs: the
// division is __fdiv_rn, the rest are separate adds/multiplies with --fmad=false); and its
// backward pass, which autograd would otherwise run as ~15 kernels over [x]-sized tensors.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <tuple>

#include <ATen/Dispatch.h>

namespace mq {

namespace {

/// The scale/offset index of flat element i: 0 per tensor, i / cols per row, i % cols per
/// column (channel of the last dimension).
__device__ __forceinline__ int64_t channel_of(int64_t i, int mode, int64_t cols) {
  return mode == 0 ? 0 : (mode == 1 ? i / cols : i % cols);
}

template <typename T>
__global__ void fake_quantize_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                     const float* __restrict__ scale,
                                     const float* __restrict__ offset, int mode, int64_t cols,
                                     float qmin, float qmax) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t c = channel_of(i, mode, cols);
    const float s = scale[c];
    const float o = offset[c];
    float q = __fadd_rn(rintf(__fdiv_rn(static_cast<float>(x[i]), s)), o);
    q = q < qmin ? qmin : (q > qmax ? qmax : q);  // NaN passes through, as torch.clamp
    y[i] = static_cast<T>(__fmul_rn(__fsub_rn(q, o), s));
  }
}

/// The backward pass of the composed ops, element by element, as autograd computes it:
///   t1 = x / s, t2 = round(t1) + o, in = qmin <= t2 <= qmax, t3 = clamp(t2) - o, g3 = gy * s
///   gx = in ? g3 / s : 0                       (MulBackward, ClampBackward mask, DivBackward)
///   gs = gy * t3 + (in ? -g3 * (t1 / s) : 0)   (MulBackward for s, DivBackward for s)
///   go = in ? 0 : -g3                          (AddBackward + SubBackward for o)
/// gs and go are per element (fp32); the host sums them per scale.
template <typename T>
__global__ void fake_quantize_backward_kernel(const T* __restrict__ x, const T* __restrict__ gy,
                                              T* __restrict__ gx, float* __restrict__ gs,
                                              float* __restrict__ go, int64_t n,
                                              const float* __restrict__ scale,
                                              const float* __restrict__ offset, int mode,
                                              int64_t cols, float qmin, float qmax) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t c = channel_of(i, mode, cols);
    const float s = scale[c];
    const float o = offset[c];
    const float g = static_cast<float>(gy[i]);
    const float t1 = __fdiv_rn(static_cast<float>(x[i]), s);
    const float t2 = __fadd_rn(rintf(t1), o);
    const bool in = t2 >= qmin && t2 <= qmax;  // false for NaN, as ClampBackward's mask
    const float q = t2 < qmin ? qmin : (t2 > qmax ? qmax : t2);
    const float t3 = __fsub_rn(q, o);
    const float g3 = __fmul_rn(g, s);
    gx[i] = static_cast<T>(in ? __fdiv_rn(g3, s) : 0.0f);
    const float from_mul = __fmul_rn(g, t3);
    gs[i] = in ? __fadd_rn(from_mul, -__fmul_rn(g3, __fdiv_rn(t1, s))) : from_mul;
    go[i] = in ? 0.0f : -g3;
  }
}

/// Grid for a grid-stride loop over n elements.
int grid_for(int64_t n, int threads) {
  const int64_t want = (n + threads - 1) / threads;
  return static_cast<int>(want < 65535 * 32 ? want : 65535 * 32);
}

/// `t` as contiguous fp32 on `device`, converting only what needs it: every dispatch costs
/// microseconds of host time per site.
at::Tensor ready_params(const at::Tensor& t, const at::Device& device) {
  if (t.device() == device && t.scalar_type() == at::kFloat && t.is_contiguous()) return t;
  return t.to(device, at::kFloat).contiguous();
}

}  // namespace

at::Tensor fused_fake_quantize_cuda(const at::Tensor& x_in, const at::Tensor& scale_in,
                                    const at::Tensor& offset_in, int64_t qmin, int64_t qmax,
                                    int mode) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.is_contiguous() ? x_in : x_in.contiguous();
  const at::Tensor scale = ready_params(scale_in, x.device());
  const at::Tensor offset = ready_params(offset_in, x.device());
  at::Tensor y = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return y;
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1);
  constexpr int kThreads = 256;
  const int blocks = grid_for(n, kThreads);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "fused_fake_quantize", [&] {
    fake_quantize_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, scale.data_ptr<float>(),
        offset.data_ptr<float>(), mode, cols, lo, hi);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_fake_quantize_backward_cuda(
    const at::Tensor& x_in, const at::Tensor& gy_in, const at::Tensor& scale_in,
    const at::Tensor& offset_in, int64_t qmin, int64_t qmax, int mode) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.is_contiguous() ? x_in : x_in.contiguous();
  const at::Tensor gy = gy_in.scalar_type() == x.scalar_type() && gy_in.is_contiguous()
                            ? gy_in
                            : gy_in.to(x.scalar_type()).contiguous();
  const at::Tensor scale = ready_params(scale_in, x.device());
  const at::Tensor offset = ready_params(offset_in, x.device());
  at::Tensor gx = at::empty_like(x);
  at::Tensor per_elem = at::empty({2, x.numel()}, x.options().dtype(at::kFloat));  // [2, n]
  const int64_t n = x.numel();
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1);
  if (n > 0) {
    constexpr int kThreads = 256;
    const int blocks = grid_for(n, kThreads);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
    float* gs = per_elem.data_ptr<float>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                    "fused_fake_quantize_backward", [&] {
      fake_quantize_backward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), gs, gs + n,
          n, scale.data_ptr<float>(), offset.data_ptr<float>(), mode, cols, lo, hi);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // One reduction for both: per tensor [2], per row [2, rows], per column [2, cols].
  at::Tensor sums;
  if (mode == 0) {
    sums = per_elem.sum(1);                          // [2]
  } else if (mode == 1) {
    sums = per_elem.view({2, -1, cols}).sum(2);      // [2, rows]
  } else {
    sums = per_elem.view({2, -1, cols}).sum(1);      // [2, cols]
  }
  return {gx, sums[0], sums[1]};
}

}  // namespace mq
