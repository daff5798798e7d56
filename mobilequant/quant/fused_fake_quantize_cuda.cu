// mobilequant/quant/fused_fake_quantize_cuda.cu
// Grid-stride kernels: y = (clamp(rint(x / s) + o, qmin, qmax) - o) * s per element, in fp32,
// each operation rounded as the composed torch ops round it (fake_quantize_element.cuh: IEEE
// division, from the reciprocal where one scale serves the whole tensor or row; the rest are
// separate adds/multiplies with --fmad=false); and its backward pass, which autograd would
// otherwise run as ~15 kernels over [x]-sized tensors. Per tensor, on 16-byte-aligned data, the
// forward moves whole 16-byte vectors and tests once a vector that every division takes the
// reciprocal path (the same bits, no branch per element).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include <ATen/Dispatch.h>

#include "mobilequant/quant/block_reduce.cuh"
#include "mobilequant/quant/fake_quantize_element.cuh"
#include "mobilequant/quant/vec16.cuh"

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
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (mode == 0) {  // one scale: its reciprocal once
    const Divisor s = divisor(scale[0]);
    const float o = offset[0];
    for (int64_t i = first; i < n; i += stride)
      y[i] = static_cast<T>(fq_value(static_cast<float>(x[i]), s, o, qmin, qmax));
    return;
  }
  for (int64_t i = first; i < n; i += stride) {
    const int64_t c = channel_of(i, mode, cols);
    y[i] = static_cast<T>(fq_value(static_cast<float>(x[i]), scale[c], offset[c], qmin, qmax));
  }
}

/// Per tensor, in 16-byte vectors of kVec values (x and y 16-byte aligned): a grid-stride loop
/// over the n / kVec vectors (fq_values: one reciprocal-path test a vector, no branch per
/// element), then the n % kVec values left.
template <typename T, int kVec>
__global__ void fake_quantize_vec_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                         const float* __restrict__ scale,
                                         const float* __restrict__ offset, float qmin,
                                         float qmax) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const Divisor s = divisor(scale[0]);
  const float o = offset[0];
  const int64_t vecs = n / kVec;
  for (int64_t k = first; k < vecs; k += stride) {
    float v[kVec];
    unpack_vec<T, kVec>(load_raw<T, kVec>(x + k * kVec), v);
    fq_values(v, s, o, qmin, qmax);
    store_vec<T, kVec>(y + k * kVec, v);
  }
  for (int64_t i = vecs * kVec + first; i < n; i += stride)
    y[i] = static_cast<T>(fq_value(static_cast<float>(x[i]), s, o, qmin, qmax));
}

/// The backward pass of the composed ops for element i (fake_quantize_element.cuh's
/// fq_backward): writes gx[i]; adds the element's terms of d scale and d offset to gs and go.
/// S as fq_backward's.
template <typename T, typename S>
__device__ __forceinline__ void backward_element(const T* __restrict__ x,
                                                 const T* __restrict__ gy, T* __restrict__ gx,
                                                 int64_t i, const S& s, float o, float qmin,
                                                 float qmax, float& gs, float& go) {
  gx[i] = static_cast<T>(
      fq_backward(static_cast<float>(x[i]), static_cast<float>(gy[i]), s, o, qmin, qmax, gs, go));
}

/// Per channel of the last dimension: every element's terms to gs/go ([n] each, fp32); the
/// host sums them per channel.
template <typename T>
__global__ void fake_quantize_backward_kernel(const T* __restrict__ x, const T* __restrict__ gy,
                                              T* __restrict__ gx, float* __restrict__ gs,
                                              float* __restrict__ go, int64_t n,
                                              const float* __restrict__ scale,
                                              const float* __restrict__ offset, int64_t cols,
                                              float qmin, float qmax) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t c = i % cols;
    float es = 0.0f, eo = 0.0f;
    backward_element(x, gy, gx, i, scale[c], offset[c], qmin, qmax, es, eo);
    gs[i] = es;
    go[i] = eo;
  }
}

constexpr int kReduceThreads = 256;

/// Per tensor (kPerRow false: a grid-stride loop, one partial sum per block) or per row of a
/// [rows, cols] x (kPerRow true: one block per row, the row's sums). sums: [2, gridDim.x], the
/// d scale partials then the d offset partials. No per-element buffers.
template <typename T, bool kPerRow>
__global__ void fake_quantize_backward_reduce_kernel(
    const T* __restrict__ x, const T* __restrict__ gy, T* __restrict__ gx,
    float* __restrict__ sums, int64_t n, const float* __restrict__ scale,
    const float* __restrict__ offset, int64_t cols, float qmin, float qmax) {
  float acc[2] = {0.0f, 0.0f};  // d scale, d offset
  if (kPerRow) {
    const int64_t row = blockIdx.x;
    const Divisor s = divisor(scale[row]);
    const float o = offset[row];
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      backward_element(x, gy, gx, row * cols + j, s, o, qmin, qmax, acc[0], acc[1]);
  } else {
    const Divisor s = divisor(scale[0]);
    const float o = offset[0];
    const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += stride)
      backward_element(x, gy, gx, i, s, o, qmin, qmax, acc[0], acc[1]);
  }
  block_reduce<SumOp>(acc);
  if (threadIdx.x == 0) {
    sums[blockIdx.x] = acc[0];
    sums[gridDim.x + blockIdx.x] = acc[1];
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
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "fused_fake_quantize", [&] {
    if constexpr (!std::is_same_v<scalar_t, double>) {
      if (mode == 0 && aligned16({x.data_ptr(), y.data_ptr()})) {
        constexpr int vec = 16 / sizeof(scalar_t);
        fake_quantize_vec_kernel<scalar_t, vec>
            <<<grid_for(std::max<int64_t>(n / vec, 1), kThreads), kThreads, 0, stream>>>(
                x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, scale.data_ptr<float>(),
                offset.data_ptr<float>(), lo, hi);
        return;
      }
    }
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
  const int64_t n = x.numel();
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  if (n == 0) {
    at::Tensor zero = at::zeros({scale.numel()}, scale.options());
    return {gx, zero, zero.clone()};
  }
  if (mode == 2) {
    // Per channel of the last dimension: per-element terms, then one column reduction.
    at::Tensor per_elem = at::empty({2, n}, x.options().dtype(at::kFloat));  // [2, n]
    float* gs = per_elem.data_ptr<float>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                    "fused_fake_quantize_backward", [&] {
      fake_quantize_backward_kernel<scalar_t>
          <<<grid_for(n, kReduceThreads), kReduceThreads, 0, stream>>>(
              x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), gs,
              gs + n, n, scale.data_ptr<float>(), offset.data_ptr<float>(), cols, lo, hi);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor sums = per_elem.view({2, -1, cols}).sum(1);  // [2, cols]
    return {gx, sums[0], sums[1]};
  }
  // Per tensor: at most 1024 blocks of partial sums (a count fixed by n, so the sums are
  // reproducible), then one small reduction. Per row: one block per row, no second pass. (A
  // 16-byte-vector form of the per-tensor kernel, one vector a thread at 55 registers, measured
  // slower on the H100: 8.0-9.0 ms a 1.1B bf16 step against 7.6.)
  const bool per_row = mode == 1;
  const int64_t rows = n / cols;
  const int64_t want = (n + kReduceThreads * 4 - 1) / (kReduceThreads * 4);
  const int blocks = per_row ? static_cast<int>(rows) : static_cast<int>(want < 1024 ? want : 1024);
  at::Tensor partial = at::empty({2, blocks}, x.options().dtype(at::kFloat));  // [2, blocks]
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "fused_fake_quantize_backward", [&] {
    if (per_row) {
      fake_quantize_backward_reduce_kernel<scalar_t, true><<<blocks, kReduceThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
          partial.data_ptr<float>(), n, scale.data_ptr<float>(), offset.data_ptr<float>(), cols,
          lo, hi);
    } else {
      fake_quantize_backward_reduce_kernel<scalar_t, false><<<blocks, kReduceThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
          partial.data_ptr<float>(), n, scale.data_ptr<float>(), offset.data_ptr<float>(), cols,
          lo, hi);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (per_row) return {gx, partial[0], partial[1]};  // [rows] each
  const at::Tensor sums = partial.sum(1);             // [2]
  return {gx, sums[0], sums[1]};
}

}  // namespace mq
