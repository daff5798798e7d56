// mobilequant/quant/fused_softmax_quantize_cuda.cu
// One block per row (b, h, query i) of the [B, H, T, T] scores; the row lives in shared memory.
// Every step rounds as the composed ops do (fp32 arithmetic, --fmad=false, results cast to the
// scores' dtype T where the composed ops produce a T tensor):
//   forward   a = T(fq_in(x)); c = T(a * scale); c = -inf where j > i; p = softmax_fp32(c);
//             y = T(fq_out(T(p)))
//   backward  gp = T(fq_out'(gy)); gc = T(p * (gp - sum_j gp p)); gc = 0 where masked;
//             ga = T(gc * scale); gx = fq_in'(ga)
// fq' is fused_fake_quantize_cuda.cu's straight-through backward; its d scale / d offset terms
// are summed per block (row), then over rows.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <array>
#include <cstdint>
#include <utility>

namespace mq {

namespace {

constexpr int kThreads = 256;

/// -inf as a device constant (std::numeric_limits is host-only constexpr).
#define kNegInf __int_as_float(0xff800000)

/// Fake quantization of one value (fp32): (clamp(rint(v / s) + o, qmin, qmax) - o) * s.
__device__ __forceinline__ float fq_value(float v, float s, float o, float qmin, float qmax) {
  float q = __fadd_rn(rintf(__fdiv_rn(v, s)), o);
  q = q < qmin ? qmin : (q > qmax ? qmax : q);
  return __fmul_rn(__fsub_rn(q, o), s);
}

/// Straight-through backward of fq_value for input v and output gradient g: returns dv and
/// adds the terms of d scale / d offset (see fused_fake_quantize_cuda.cu).
__device__ __forceinline__ float fq_backward(float v, float g, float s, float o, float qmin,
                                             float qmax, float& acc_s, float& acc_o) {
  const float t1 = __fdiv_rn(v, s);
  const float t2 = __fadd_rn(rintf(t1), o);
  const bool in = t2 >= qmin && t2 <= qmax;
  const float q = t2 < qmin ? qmin : (t2 > qmax ? qmax : t2);
  const float t3 = __fsub_rn(q, o);
  const float g3 = __fmul_rn(g, s);
  const float from_mul = __fmul_rn(g, t3);
  acc_s += in ? __fadd_rn(from_mul, -__fmul_rn(g3, __fdiv_rn(t1, s))) : from_mul;
  acc_o += in ? 0.0f : -g3;
  return in ? __fdiv_rn(g3, s) : 0.0f;
}

/// v rounded to T and back (identity for fp32).
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}

/// Block-wide reduction of up to 4 values; every thread gets the results. kOps: 0 sum, 1 max.
template <int kN, int kOp>
__device__ __forceinline__ void block_reduce(float (&v)[kN]) {
  __shared__ float part[kN][kThreads / 32];
  for (int k = 0; k < kN; ++k)
    for (int off = 16; off > 0; off >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, v[k], off);
      v[k] = kOp == 0 ? v[k] + other : fmaxf(v[k], other);
    }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // part may still be read by a previous call
  if (lane == 0)
    for (int k = 0; k < kN; ++k) part[k][warp] = v[k];
  __syncthreads();
  for (int k = 0; k < kN; ++k) {
    float r = part[k][0];
    for (int w = 1; w < kThreads / 32; ++w) r = kOp == 0 ? r + part[k][w] : fmaxf(r, part[k][w]);
    v[k] = r;
  }
}

/// Both quantizers: codes and switches by value, scale/offset read from the device.
struct QuantArgs {
  const float* params;  // [4]: in scale, in offset, out scale, out offset (device memory)
  float lo_in, hi_in, lo_out, hi_out;
  bool in_on, out_on;
};
/// The same with the scales and offsets loaded.
struct Quant {
  float s_in, o_in, s_out, o_out;
  float lo_in, hi_in, lo_out, hi_out;
  bool in_on, out_on;
};
__device__ __forceinline__ Quant load_quant(const QuantArgs& a) {
  return Quant{a.params[0], a.params[1], a.params[2], a.params[3], a.lo_in, a.hi_in,
               a.lo_out,    a.hi_out,    a.in_on,     a.out_on};
}

/// The masked, scaled, quantized scores of one row into buf (fp32 values of T); returns the
/// row's maximum.
template <typename T>
__device__ __forceinline__ float load_row(const T* __restrict__ x, float* buf, int64_t t,
                                          int64_t query, float scale, const Quant& q) {
  float m = kNegInf;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    float a = static_cast<float>(x[j]);
    if (q.in_on) a = round_to<T>(fq_value(a, q.s_in, q.o_in, q.lo_in, q.hi_in));
    float c = round_to<T>(__fmul_rn(a, scale));
    if (j > query) c = kNegInf;
    buf[j] = c;
    m = fmaxf(m, c);
  }
  float r[1] = {m};
  block_reduce<1, 1>(r);
  return r[0];
}

/// buf[j] <- exp(buf[j] - m); returns the row's sum.
__device__ __forceinline__ float exp_row(float* buf, int64_t t, float m) {
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    const float e = expf(__fsub_rn(buf[j], m));
    buf[j] = e;
    sum = __fadd_rn(sum, e);
  }
  float r[1] = {sum};
  block_reduce<1, 0>(r);
  return r[0];
}

template <typename T>
__global__ void softmax_quantize_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                int64_t t, float scale, QuantArgs qa) {
  extern __shared__ float buf[];  // [t]
  const Quant q = load_quant(qa);
  const int64_t row = blockIdx.x;
  const int64_t query = row % t;
  const T* xr = x + row * t;
  T* yr = y + row * t;
  const float m = load_row(xr, buf, t, query, scale, q);
  const float sum = exp_row(buf, t, m);
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    float p = round_to<T>(__fdiv_rn(buf[j], sum));
    if (q.out_on) p = fq_value(p, q.s_out, q.o_out, q.lo_out, q.hi_out);
    yr[j] = static_cast<T>(p);
  }
}

/// partial: [4, rows] (d in scale, d in offset, d out scale, d out offset per row).
template <typename T>
__global__ void softmax_quantize_backward_kernel(const T* __restrict__ x,
                                                 const T* __restrict__ gy, T* __restrict__ gx,
                                                 float* __restrict__ partial, int64_t rows,
                                                 int64_t t, float scale, QuantArgs qa) {
  extern __shared__ float buf[];  // [2 t]: p, then gp
  const Quant q = load_quant(qa);
  float* pbuf = buf;
  float* gbuf = buf + t;
  const int64_t row = blockIdx.x;
  const int64_t query = row % t;
  const T* xr = x + row * t;
  const T* gr = gy + row * t;
  T* gxr = gx + row * t;
  const float m = load_row(xr, pbuf, t, query, scale, q);
  const float sum = exp_row(pbuf, t, m);
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    const float p = __fdiv_rn(pbuf[j], sum);  // the fp32 softmax output autograd saved
    pbuf[j] = p;
    float gp = static_cast<float>(gr[j]);
    if (q.out_on) {
      gp = round_to<T>(fq_backward(round_to<T>(p), gp, q.s_out, q.o_out, q.lo_out, q.hi_out,
                                   acc[2], acc[3]));
    }
    gbuf[j] = gp;
    dot = __fadd_rn(dot, __fmul_rn(gp, p));
  }
  float d[1] = {dot};
  block_reduce<1, 0>(d);
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    float gc = j > query ? 0.0f : round_to<T>(__fmul_rn(pbuf[j], __fsub_rn(gbuf[j], d[0])));
    float ga = round_to<T>(__fmul_rn(gc, scale));
    if (q.in_on) ga = fq_backward(static_cast<float>(xr[j]), ga, q.s_in, q.o_in, q.lo_in, q.hi_in,
                                  acc[0], acc[1]);
    gxr[j] = static_cast<T>(ga);
  }
  block_reduce<4, 0>(acc);
  if (threadIdx.x == 0)
    for (int k = 0; k < 4; ++k) partial[k * rows + row] = acc[k];
}

/// The kernels' view of the quantizers; q must stay alive until they ran.
QuantArgs make_quant(const at::Tensor& q, std::array<int64_t, 4> codes, std::array<bool, 2> on) {
  return QuantArgs{q.data_ptr<float>(),
                   static_cast<float>(codes[0]), static_cast<float>(codes[1]),
                   static_cast<float>(codes[2]), static_cast<float>(codes[3]), on[0], on[1]};
}

/// q as contiguous fp32 on `device` (a no-op when it already is).
at::Tensor ready(const at::Tensor& q, const at::Device& device) {
  return q.to(device, at::kFloat).contiguous();
}

}  // namespace

at::Tensor fused_softmax_quantize_cuda(const at::Tensor& scores_in, double scale,
                                       const at::Tensor& q, std::array<int64_t, 4> codes,
                                       std::array<bool, 2> enabled) {
  const c10::cuda::CUDAGuard guard(scores_in.device());
  const at::Tensor x = scores_in.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t t = x.size(-1);
  const int64_t rows = x.numel() / t;
  if (rows == 0) return y;
  const at::Tensor qd = ready(q, x.device());
  const QuantArgs qp = make_quant(qd, codes, enabled);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float sc = static_cast<float>(scale);
  const size_t shmem = static_cast<size_t>(t) * sizeof(float);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "fused_softmax_quantize", [&] {
    softmax_quantize_forward_kernel<scalar_t><<<static_cast<unsigned>(rows), kThreads, shmem, stream>>>(
        x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), t, sc, qp);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

std::pair<at::Tensor, at::Tensor> fused_softmax_quantize_backward_cuda(
    const at::Tensor& scores_in, const at::Tensor& grad_in, double scale, const at::Tensor& q,
    std::array<int64_t, 4> codes, std::array<bool, 2> enabled) {
  const c10::cuda::CUDAGuard guard(scores_in.device());
  const at::Tensor x = scores_in.contiguous();
  const at::Tensor gy = grad_in.to(x.scalar_type()).contiguous();
  at::Tensor gx = at::empty_like(x);
  const int64_t t = x.size(-1);
  const int64_t rows = x.numel() / t;
  at::Tensor partial = at::zeros({4, rows}, x.options().dtype(at::kFloat));  // [4, rows]
  if (rows > 0) {
    const at::Tensor qd = ready(q, x.device());
    const QuantArgs qp = make_quant(qd, codes, enabled);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const float sc = static_cast<float>(scale);
    const size_t shmem = 2 * static_cast<size_t>(t) * sizeof(float);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                    "fused_softmax_quantize_backward", [&] {
      auto kernel = softmax_quantize_backward_kernel<scalar_t>;
      if (shmem > 48 * 1024)
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(shmem)));
      kernel<<<static_cast<unsigned>(rows), kThreads, shmem, stream>>>(
          x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
          partial.data_ptr<float>(), rows, t, sc, qp);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {gx, partial.sum(1)};  // [4]
}

}  // namespace mq
