// mobilequant/quant/fused_softmax_quantize_cuda.cu
// One block per row (b, h, query i) of the [B, H, T, T] scores; the row lives in shared memory.
// Every step rounds as the composed ops do (fp32 arithmetic, --fmad=false, results cast to the
// scores' dtype T where the composed ops produce a T tensor):
//   forward   a = T(fq_in(x)); c = T(a * scale); c = -inf where j > i; p = softmax_fp32(c);
//             y = T(fq_out(T(p)))
//   backward  gp = T(fq_out'(gy)); gc = T(p * (gp - sum_j gp p)); gc = 0 where masked;
//             ga = T(gc * scale); gx = fq_in'(ga)
// fq' is fake_quantize_element.cuh's straight-through backward; its d scale / d offset terms
// are summed per block (row), then over rows.
//
// Two forms of each kernel compute the same values:
//   rows in registers  one block per row, one 16-byte vector of the row per thread (T a
//                      multiple of the vector and at most kMaxRowThreads vectors): the row is
//                      read once into registers; vectors past the query (the causal half) are
//                      neither read nor computed, only written (their probability is 0, their
//                      gradient 0). In the backward pass the masked keys add nothing to the
//                      quantizers' sums while the output quantizer maps 0 inside its code range
//                      (its offset in [qmin, qmax]); otherwise their incoming gradient is read
//                      and summed as the composed ops do.
//   rows in shared     one 256-thread block per row, any T up to kMaxSoftmaxRow: the fallback.
// The two differ from each other, as from the composed ops, only in the order of the sums.
// Divisions by the quantizers' scales and by a row's sum go through div_rn (the bits of IEEE
// division from a reciprocal taken once).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <array>
#include <cstdint>
#include <utility>

#include "mobilequant/quant/block_reduce.cuh"
#include "mobilequant/quant/fake_quantize_element.cuh"

namespace mq {

namespace {

constexpr int kThreads = 256;

/// -inf as a device constant (std::numeric_limits is host-only constexpr).
#define kNegInf __int_as_float(0xff800000)

/// v rounded to T and back (identity for fp32).
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}

/// Both quantizers: codes and switches by value, scale/offset read from the device.
struct QuantArgs {
  const float* params;  // [4]: in scale, in offset, out scale, out offset (device memory)
  float lo_in, hi_in, lo_out, hi_out;
  bool in_on, out_on;
};
/// The same with the scales (as divisors) and offsets loaded.
struct Quant {
  Divisor s_in;
  float o_in;
  Divisor s_out;
  float o_out;
  float lo_in, hi_in, lo_out, hi_out;
  bool in_on, out_on;
};
__device__ __forceinline__ Quant load_quant(const QuantArgs& a) {
  return Quant{divisor(a.params[0]), a.params[1], divisor(a.params[2]), a.params[3], a.lo_in,
               a.hi_in, a.lo_out, a.hi_out, a.in_on, a.out_on};
}

/// The gradient reaching probability p (incoming g) through the output quantizer, rounded to
/// T as the composed ops round it; adds its d scale / d offset terms to acc[2] / acc[3] and
/// gp * p to dot.
template <typename T>
__device__ __forceinline__ float prob_grad(float p, float g, const Quant& q, float (&acc)[4],
                                           float& dot) {
  if (q.out_on)
    g = round_to<T>(fq_backward(round_to<T>(p), g, q.s_out, q.o_out, q.lo_out, q.hi_out, acc[2],
                                acc[3]));
  dot = __fadd_rn(dot, __fmul_rn(g, p));
  return g;
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
  block_reduce<MaxOp>(r);
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
  block_reduce<SumOp>(r);
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
  const Divisor sum = divisor(exp_row(buf, t, m));
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    float p = round_to<T>(div_rn(buf[j], sum));
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
  const Divisor sum = divisor(exp_row(pbuf, t, m));
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    const float p = div_rn(pbuf[j], sum);  // the fp32 softmax output autograd saved
    pbuf[j] = p;
    gbuf[j] = prob_grad<T>(p, static_cast<float>(gr[j]), q, acc, dot);
  }
  float d[1] = {dot};
  block_reduce<SumOp>(d);
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    float gc = j > query ? 0.0f : round_to<T>(__fmul_rn(pbuf[j], __fsub_rn(gbuf[j], d[0])));
    float ga = round_to<T>(__fmul_rn(gc, scale));
    if (q.in_on) ga = fq_backward(static_cast<float>(xr[j]), ga, q.s_in, q.o_in, q.lo_in, q.hi_in,
                                  acc[0], acc[1]);
    gxr[j] = static_cast<T>(ga);
  }
  block_reduce<SumOp>(acc);
  if (threadIdx.x == 0)
    for (int k = 0; k < 4; ++k) partial[k * rows + row] = acc[k];
}

// ------------------------------------------------- rows in registers (a 16-byte vector a thread)

/// Most threads of a register kernel's block: rows of up to kMaxRowThreads vectors.
constexpr int kMaxRowThreads = 512;

/// kVec consecutive T values from 16-byte-aligned p, raw.
template <typename T, int kVec>
__device__ __forceinline__ uint4 load_raw(const T* __restrict__ p) {
  static_assert(kVec * sizeof(T) == 16, "one 16-byte load");
  return *reinterpret_cast<const uint4*>(p);
}

/// Element v of a raw vector, as fp32.
template <typename T>
__device__ __forceinline__ float raw_at(const uint4& raw, int v) {
  return static_cast<float>(reinterpret_cast<const T*>(&raw)[v]);
}

/// Stores kVec fp32 values as T at 16-byte-aligned p.
template <typename T, int kVec>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float (&in)[kVec]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int v = 0; v < kVec; ++v) e[v] = static_cast<T>(in[v]);
  *reinterpret_cast<uint4*>(p) = raw;
}

/// The thread's vector of its block's row: c[v] <- exp(c - m) of the masked, scaled, quantized
/// scores of element j0 + v (0 past the query), raw <- the scores as read (live threads only);
/// returns the row's sum of exponentials. A thread whose vector starts past the query reads
/// nothing.
template <typename T, int kVec>
__device__ __forceinline__ float exp_vec(const T* __restrict__ xr, float (&c)[kVec], uint4& raw,
                                         int j0, int query, float scale, const Quant& q) {
  const bool live = j0 <= query;
  float m = kNegInf;
  if (live) {
    raw = load_raw<T, kVec>(xr + j0);
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      float a = raw_at<T>(raw, v);
      if (q.in_on) a = round_to<T>(fq_value(a, q.s_in, q.o_in, q.lo_in, q.hi_in));
      float cv = round_to<T>(__fmul_rn(a, scale));
      if (j0 + v > query) cv = kNegInf;
      c[v] = cv;
      m = fmaxf(m, cv);
    }
  }
  float r[1] = {m};
  block_reduce<MaxOp>(r);
  float sum = 0.0f;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const float e = live ? expf(__fsub_rn(c[v], r[0])) : 0.0f;
    c[v] = e;
    sum = __fadd_rn(sum, e);
  }
  r[0] = sum;
  block_reduce<SumOp>(r);
  return r[0];
}

/// The thread's first element: vector threadIdx.x of the row.
template <int kVec>
__device__ __forceinline__ int vec_start() {
  return static_cast<int>(threadIdx.x) * kVec;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kMaxRowThreads)
    softmax_quantize_forward_regs(const T* __restrict__ x, T* __restrict__ y, int t, float scale,
                                  QuantArgs qa) {
  const Quant q = load_quant(qa);
  const int64_t row = blockIdx.x;
  const int query = static_cast<int>(row % t);
  const int j0 = vec_start<kVec>();
  const int64_t base = row * t;
  float c[kVec];
  uint4 raw;
  const Divisor sum = divisor(exp_vec<T, kVec>(x + base, c, raw, j0, query, scale, q));
  if (j0 >= t) return;
  float out[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    // c = 0 (a masked key) gives p = +0, as 0 / sum.
    float p = c[v] != 0.0f ? round_to<T>(div_rn(c[v], sum)) : 0.0f;
    if (q.out_on) p = fq_value(p, q.s_out, q.o_out, q.lo_out, q.hi_out);
    out[v] = p;
  }
  store_vec<T, kVec>(y + base + j0, out);
}

/// partial: [4, rows] as softmax_quantize_backward_kernel's.
template <typename T, int kVec>
__global__ void __launch_bounds__(kMaxRowThreads)
    softmax_quantize_backward_regs(const T* __restrict__ x, const T* __restrict__ gy,
                                   T* __restrict__ gx, float* __restrict__ partial, int64_t rows,
                                   int t, float scale, QuantArgs qa) {
  const Quant q = load_quant(qa);
  const int64_t row = blockIdx.x;
  const int query = static_cast<int>(row % t);
  const int j0 = vec_start<kVec>();
  const int64_t base = row * t;
  const bool live = j0 <= query;
  float c[kVec];  // exp, then p
  uint4 raw;      // the scores as read (live threads)
  const Divisor sum = divisor(exp_vec<T, kVec>(x + base, c, raw, j0, query, scale, q));
  // A masked key has p = 0; its fq_out' terms vanish when fq_out maps 0 inside the code range.
  const bool masked_silent = !q.out_on || (q.o_out >= q.lo_out && q.o_out <= q.hi_out);
  float gp[kVec];
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float dot = 0.0f;
  if (j0 < t && (live || !masked_silent)) {
    const uint4 g = load_raw<T, kVec>(gy + base + j0);
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      // The fp32 softmax output autograd saved (+0 for a masked key, as 0 / sum).
      const float p = c[v] != 0.0f ? div_rn(c[v], sum) : 0.0f;
      c[v] = p;
      gp[v] = prob_grad<T>(p, raw_at<T>(g, v), q, acc, dot);
    }
  }
  float d[1] = {dot};
  block_reduce<SumOp>(d);
  if (j0 < t) {
    float out[kVec];
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      if (!live || j0 + v > query) {
        out[v] = 0.0f;
        continue;
      }
      const float gc = round_to<T>(__fmul_rn(c[v], __fsub_rn(gp[v], d[0])));
      float ga = round_to<T>(__fmul_rn(gc, scale));
      if (q.in_on)
        ga = fq_backward(raw_at<T>(raw, v), ga, q.s_in, q.o_in, q.lo_in, q.hi_in, acc[0], acc[1]);
      out[v] = ga;
    }
    store_vec<T, kVec>(gx + base + j0, out);
  }
  block_reduce<SumOp>(acc);
  if (threadIdx.x == 0)
    for (int k = 0; k < 4; ++k) partial[k * rows + row] = acc[k];
}

/// True if the register kernels take rows of t values of T at x (and at every other pointer,
/// which comes from the same allocator): 16-byte vectors that tile the row, at most
/// kMaxRowThreads of them.
template <typename T>
bool rows_fit_registers(int64_t t, const void* x) {
  constexpr int64_t vec = 16 / sizeof(T);
  return t % vec == 0 && t / vec <= kMaxRowThreads && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

/// Threads of a register kernel's block for rows of t values of T: one per vector, in warps.
template <typename T>
unsigned row_threads(int64_t t) {
  const int64_t vecs = t / (16 / static_cast<int64_t>(sizeof(T)));
  return static_cast<unsigned>((vecs + 31) / 32 * 32);
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
    constexpr int vec = 16 / sizeof(scalar_t);
    if (rows_fit_registers<scalar_t>(t, x.data_ptr()) &&
        reinterpret_cast<uintptr_t>(y.data_ptr()) % 16 == 0) {
      softmax_quantize_forward_regs<scalar_t, vec>
          <<<static_cast<unsigned>(rows), row_threads<scalar_t>(t), 0, stream>>>(
              x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), static_cast<int>(t), sc, qp);
    } else {
      softmax_quantize_forward_kernel<scalar_t>
          <<<static_cast<unsigned>(rows), kThreads, shmem, stream>>>(
              x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), t, sc, qp);
    }
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
      constexpr int vec = 16 / sizeof(scalar_t);
      if (rows_fit_registers<scalar_t>(t, x.data_ptr()) &&
          reinterpret_cast<uintptr_t>(gy.data_ptr()) % 16 == 0 &&
          reinterpret_cast<uintptr_t>(gx.data_ptr()) % 16 == 0) {
        softmax_quantize_backward_regs<scalar_t, vec>
            <<<static_cast<unsigned>(rows), row_threads<scalar_t>(t), 0, stream>>>(
                x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
                partial.data_ptr<float>(), rows, static_cast<int>(t), sc, qp);
        return;
      }
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
