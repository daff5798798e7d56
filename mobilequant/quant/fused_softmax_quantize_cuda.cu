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
//   rows in registers  one warp per row, T <= 2048 and a multiple of 16 bytes' worth of T: the
//                      row is read once with 16-byte loads into registers; keys past the query
//                      (the causal half) are neither read nor computed, only written (their
//                      probability is 0, their gradient 0). In the backward pass the masked
//                      keys add nothing to the quantizers' sums while the output quantizer
//                      maps 0 inside its code range (its offset in [qmin, qmax]); otherwise
//                      their incoming gradient is read and summed as the composed ops do.
//   rows in shared     one 256-thread block per row, any T up to kMaxSoftmaxRow: the fallback.
// The two differ from each other, as from the composed ops, only in the order of the sums.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <array>
#include <cstdint>
#include <utility>

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

// ------------------------------------------------------------ rows in registers (one warp each)

/// Rows per 128-thread block of the register kernels (one warp per row).
constexpr int kRowsPerBlock = 4;
/// Values of one row a lane holds at most (T <= 32 * kRegValues).
constexpr int kRegValues = 64;

/// kVec consecutive T values from 16-byte-aligned p, as fp32.
template <typename T, int kVec>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, float (&out)[kVec]) {
  static_assert(kVec * sizeof(T) == 16, "one 16-byte load");
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int v = 0; v < kVec; ++v) out[v] = static_cast<float>(e[v]);
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

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

/// The register kernels' view of their warp's row.
struct WarpRow {
  int64_t row;    // [B * H * T] index; past the last row when the grid overhangs
  int64_t query;  // row % T: keys past it are masked
  int lane;       // 0..31
  int nch;        // chunks of 32 * kVec values the row has
};
template <int kVec>
__device__ __forceinline__ WarpRow warp_row(int64_t t) {
  WarpRow r;
  r.row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  r.query = r.row % t;
  r.lane = threadIdx.x & 31;
  r.nch = static_cast<int>((t + 32 * kVec - 1) / (32 * kVec));
  return r;
}

/// The warp's row: c[k][v] <- exp(c - m) of the masked, scaled, quantized scores of element
/// j = (k * 32 + lane) * kVec + v (0 past the query); returns the row's sum of exponentials.
/// Chunks wholly past the query are not read.
template <typename T, int kVec, int kChunks>
__device__ __forceinline__ float exp_row_regs(const T* __restrict__ xr, float (&c)[kChunks][kVec],
                                              int nch, int64_t query, float scale,
                                              const Quant& q) {
  const int lane = threadIdx.x & 31;
  float m = kNegInf;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int64_t j0 = (static_cast<int64_t>(k) * 32 + lane) * kVec;
    if (k < nch && j0 <= query) {
      float a[kVec];
      load_vec<T, kVec>(xr + j0, a);
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        float av = a[v];
        if (q.in_on) av = round_to<T>(fq_value(av, q.s_in, q.o_in, q.lo_in, q.hi_in));
        float cv = round_to<T>(__fmul_rn(av, scale));
        if (j0 + v > query) cv = kNegInf;
        c[k][v] = cv;
        m = fmaxf(m, cv);
      }
    } else {
#pragma unroll
      for (int v = 0; v < kVec; ++v) c[k][v] = kNegInf;
    }
  }
  m = warp_max(m);
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int64_t j0 = (static_cast<int64_t>(k) * 32 + lane) * kVec;
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const float e = (k < nch && j0 <= query) ? expf(__fsub_rn(c[k][v], m)) : 0.0f;
      c[k][v] = e;
      sum = __fadd_rn(sum, e);
    }
  }
  return warp_sum(sum);
}

template <typename T, int kVec>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    softmax_quantize_forward_regs(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                                  int64_t t, float scale, QuantArgs qa) {
  constexpr int kChunks = kRegValues / kVec;
  const Quant q = load_quant(qa);
  const WarpRow w = warp_row<kVec>(t);
  if (w.row >= rows) return;  // the whole warp
  const int64_t row = w.row, query = w.query;
  const int lane = w.lane, nch = w.nch;
  float c[kChunks][kVec];
  const float sum = exp_row_regs<T, kVec, kChunks>(x + row * t, c, nch, query, scale, q);
  T* yr = y + row * t;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int64_t j0 = (static_cast<int64_t>(k) * 32 + lane) * kVec;
    if (k < nch && j0 < t) {
      float out[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        float p = round_to<T>(__fdiv_rn(c[k][v], sum));
        if (q.out_on) p = fq_value(p, q.s_out, q.o_out, q.lo_out, q.hi_out);
        out[v] = p;
      }
      store_vec<T, kVec>(yr + j0, out);
    }
  }
}

/// partial: [4, rows] as softmax_quantize_backward_kernel's.
template <typename T, int kVec>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    softmax_quantize_backward_regs(const T* __restrict__ x, const T* __restrict__ gy,
                                   T* __restrict__ gx, float* __restrict__ partial, int64_t rows,
                                   int64_t t, float scale, QuantArgs qa) {
  constexpr int kChunks = kRegValues / kVec;
  const Quant q = load_quant(qa);
  const WarpRow w = warp_row<kVec>(t);
  if (w.row >= rows) return;  // the whole warp
  const int64_t row = w.row, query = w.query;
  const int lane = w.lane, nch = w.nch;
  const T* xr = x + row * t;
  const T* gr = gy + row * t;
  float c[kChunks][kVec];  // exp, then p
  const float sum = exp_row_regs<T, kVec, kChunks>(xr, c, nch, query, scale, q);
  // A masked key has p = 0; its fq_out' terms vanish when fq_out maps 0 inside the code range.
  const bool masked_silent = !q.out_on || (q.o_out >= q.lo_out && q.o_out <= q.hi_out);
  float gp[kChunks][kVec];
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float dot = 0.0f;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int64_t j0 = (static_cast<int64_t>(k) * 32 + lane) * kVec;
    if (k < nch && (j0 <= query || (!masked_silent && j0 < t))) {
      float g[kVec];
      load_vec<T, kVec>(gr + j0, g);
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const float p = __fdiv_rn(c[k][v], sum);  // the fp32 softmax output autograd saved
        c[k][v] = p;
        float gv = g[v];
        if (q.out_on) {
          gv = round_to<T>(fq_backward(round_to<T>(p), gv, q.s_out, q.o_out, q.lo_out, q.hi_out,
                                       acc[2], acc[3]));
        }
        gp[k][v] = gv;
        dot = __fadd_rn(dot, __fmul_rn(gv, p));
      }
    } else {
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        c[k][v] = 0.0f;
        gp[k][v] = 0.0f;
      }
    }
  }
  dot = warp_sum(dot);
  T* gxr = gx + row * t;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int64_t j0 = (static_cast<int64_t>(k) * 32 + lane) * kVec;
    if (!(k < nch && j0 < t)) continue;
    float out[kVec];
    if (j0 <= query) {
      float a[kVec];
      if (q.in_on) load_vec<T, kVec>(xr + j0, a);
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        if (j0 + v > query) {
          out[v] = 0.0f;
          continue;
        }
        const float gc = round_to<T>(__fmul_rn(c[k][v], __fsub_rn(gp[k][v], dot)));
        float ga = round_to<T>(__fmul_rn(gc, scale));
        if (q.in_on) ga = fq_backward(a[v], ga, q.s_in, q.o_in, q.lo_in, q.hi_in, acc[0], acc[1]);
        out[v] = ga;
      }
    } else {
#pragma unroll
      for (int v = 0; v < kVec; ++v) out[v] = 0.0f;
    }
    store_vec<T, kVec>(gxr + j0, out);
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) acc[k] = warp_sum(acc[k]);
  if (lane == 0)
    for (int k = 0; k < 4; ++k) partial[k * rows + row] = acc[k];
}

/// True if the register kernels take rows of t values of T at x (and at every other pointer,
/// which comes from the same allocator): 16-byte vectors that tile the row, at most
/// 32 * kRegValues values.
template <typename T>
bool rows_fit_registers(int64_t t, const void* x) {
  constexpr int64_t vec = 16 / sizeof(T);
  return t % vec == 0 && t <= 32 * kRegValues && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

/// Blocks for the register kernels.
unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
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
          <<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream>>>(
              x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), rows, t, sc, qp);
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
            <<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream>>>(
                x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
                partial.data_ptr<float>(), rows, t, sc, qp);
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
