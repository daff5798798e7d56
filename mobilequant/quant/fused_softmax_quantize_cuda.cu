// mobilequant/quant/fused_softmax_quantize_cuda.cu
// Softmax over the last axis of the [B, H, T, T] scores with its input and output quantizers.
// Every step rounds as the composed ops do (fp32 arithmetic, --fmad=false, results cast to the
// scores' dtype T where the composed ops produce a T tensor):
//   forward   a = T(fq_in(x)); c = T(a * scale); c = -inf where j > i; p = softmax_fp32(c);
//             y = T(fq_out(T(p)))
//   backward  gp = T(fq_out'(gy)); gc = T(p * (gp - sum_j gp p)); gc = 0 where masked;
//             ga = T(gc * scale); gx = fq_in'(ga)
// fq' is fake_quantize_element.cuh's straight-through backward; its d scale / d offset terms
// are summed per row, then over rows.
//
// Two forms of each kernel compute the same values:
//   rows in registers  a row's 16-byte vectors dealt to the threads of one warp (kWarpRows rows
//                      a block) or, for long rows, of one block, at most kPer vectors a thread
//                      (T a multiple of the vector, at most 32 * kMaxRowWarps * kPer of them).
//                      Only the vectors that start at or before the query (the causal half)
//                      are read and computed; the rest are only written (probability 0,
//                      gradient 0). In the backward pass the masked keys add nothing to the
//                      quantizers' sums while the output quantizer maps 0 inside its code
//                      range (its offset in [qmin, qmax]); otherwise their incoming gradient is
//                      read and summed as the composed ops do. A warp's reductions are its
//                      shuffles alone. Each vector's divisions take the reciprocal path
//                      together after one test (fake_quantize_element.cuh's fq_values,
//                      fq_backwards): no branch per element.
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
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "mobilequant/quant/block_reduce.cuh"
#include "mobilequant/quant/fake_quantize_element.cuh"
#include "mobilequant/quant/vec16.cuh"

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

/// gp <- the gradient reaching probabilities p (incoming g) through the output quantizer,
/// rounded to T as the composed ops round it; adds its d scale / d offset terms to acc[2] /
/// acc[3] and gp * p to dot, element by element.
template <typename T, int kVec>
__device__ __forceinline__ void prob_grads(const float (&p)[kVec], const float (&g)[kVec],
                                           const Quant& q, float (&acc)[4], float& dot,
                                           float (&gp)[kVec]) {
  if (q.out_on) {
    float pr[kVec];
#pragma unroll
    for (int v = 0; v < kVec; ++v) pr[v] = round_to<T>(p[v]);
    fq_backwards(pr, g, q.s_out, q.o_out, q.lo_out, q.hi_out, acc[2], acc[3], gp);
#pragma unroll
    for (int v = 0; v < kVec; ++v) gp[v] = round_to<T>(gp[v]);
  } else {
#pragma unroll
    for (int v = 0; v < kVec; ++v) gp[v] = g[v];
  }
#pragma unroll
  for (int v = 0; v < kVec; ++v) dot = __fadd_rn(dot, __fmul_rn(gp[v], p[v]));
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

/// stats: [2, rows] (each row's maximum score and sum of exponentials).
template <typename T>
__global__ void softmax_quantize_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                float* __restrict__ stats, int64_t rows,
                                                int64_t t, float scale, QuantArgs qa) {
  extern __shared__ float buf[];  // [t]
  const Quant q = load_quant(qa);
  const int64_t row = blockIdx.x;
  const int64_t query = row % t;
  const T* xr = x + row * t;
  T* yr = y + row * t;
  const float m = load_row(xr, buf, t, query, scale, q);
  const float total = exp_row(buf, t, m);
  if (threadIdx.x == 0) {
    stats[row] = m;
    stats[rows + row] = total;
  }
  const Divisor sum = divisor(total);
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
    const float p[1] = {div_rn(pbuf[j], sum)};  // the fp32 softmax output autograd saved
    const float g[1] = {static_cast<float>(gr[j])};
    float gp[1];
    prob_grads<T, 1>(p, g, q, acc, dot, gp);
    pbuf[j] = p[0];
    gbuf[j] = gp[0];
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

// ------------------------------------------ rows in registers (kPer 16-byte vectors a thread)

// kPer: the 16-byte vectors a thread holds. A row of t values spans row_warps warps, its
// t / vec vectors dealt to their threads in turn (vector k to thread k % threads), at most kPer
// each.
/// Rows of a block whose rows take one warp each (one row a block otherwise).
constexpr int kWarpRows = 4;
/// Most warps of one row: rows of up to 32 * kMaxRowWarps * kPer vectors.
constexpr int kMaxRowWarps = 8;

/// Vectors a thread holds in the register kernels. On the H100, 1.1B shape, bf16, T 2048, the
/// backward took 19.9 / 22.4 / 42.7 ms a step with 2 / 4 / 8 (fewer registers, more warps
/// resident; results/2026-11-22-training/gpu/bench-bf16-a8be295/tuning.md). The kernels take
/// any kPer; tests/cuda_emu drives 2, 4 and 8.
constexpr int kVectorsPerThread = 2;

/// A thread's place: its row, its index among the row's threads and their count.
struct RowLane {
  int64_t row;
  int lane;   // 0 .. lanes - 1
  int lanes;  // 32 * row_warps
};
__device__ __forceinline__ RowLane row_lane(int row_warps) {
  if (row_warps == 1)
    return RowLane{static_cast<int64_t>(blockIdx.x) * kWarpRows + threadIdx.x / 32,
                   static_cast<int>(threadIdx.x % 32), 32};
  return RowLane{static_cast<int64_t>(blockIdx.x), static_cast<int>(threadIdx.x),
                 static_cast<int>(blockDim.x)};
}

/// Reduces over the threads of one row: a warp's shuffles, or the block (one row a block).
template <typename Op, int kN>
__device__ __forceinline__ void row_reduce(float (&v)[kN], int row_warps) {
  if (row_warps == 1)
    warp_reduce<Op>(v);
  else
    block_reduce<Op>(v);
}

/// c <- the masked, scaled, quantized scores of the vector raw, whose first element is j0.
template <typename T, int kVec>
__device__ __forceinline__ void scores_vec(const uint4& raw, float (&c)[kVec], int j0, int query,
                                           float scale, const Quant& q) {
  unpack_vec<T, kVec>(raw, c);
  if (q.in_on) {
    fq_values(c, q.s_in, q.o_in, q.lo_in, q.hi_in);
#pragma unroll
    for (int v = 0; v < kVec; ++v) c[v] = round_to<T>(c[v]);
  }
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const float cv = round_to<T>(__fmul_rn(c[v], scale));
    c[v] = j0 + v > query ? kNegInf : cv;
  }
}

/// c[i] <- the scores of the thread's live vectors (those starting at or before the query);
/// returns their maximum. Vector i of the thread is the row's vector lane + lanes * i.
template <typename T, int kVec, int kPer>
__device__ __forceinline__ float scores_row(const T* __restrict__ xr, float (&c)[kPer][kVec],
                                            const RowLane& rl, int live, int query, float scale,
                                            const Quant& q) {
  float m = kNegInf;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k = rl.lane + rl.lanes * i;
    if (k < live) {
      scores_vec<T, kVec>(load_raw<T, kVec>(xr + k * kVec), c[i], k * kVec, query, scale, q);
#pragma unroll
      for (int v = 0; v < kVec; ++v) m = fmaxf(m, c[i][v]);
    }
  }
  return m;
}

/// c[i] <- exp(c - m) of the thread's live vectors; returns their sum.
template <int kVec, int kPer>
__device__ __forceinline__ float exp_row(float (&c)[kPer][kVec], const RowLane& rl, int live,
                                         float m) {
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    if (rl.lane + rl.lanes * i < live) {
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const float e = expf(__fsub_rn(c[i][v], m));
        c[i][v] = e;
        sum = __fadd_rn(sum, e);
      }
    }
  }
  return sum;
}

/// c <- c / sum, correctly rounded (0 for a masked key, as 0 / sum): the fp32 softmax output.
template <int kVec>
__device__ __forceinline__ void probs_vec(float (&c)[kVec], const Divisor& sum) {
  bool fast = true;
#pragma unroll
  for (int v = 0; v < kVec; ++v) fast = fast & rcp_exact(c[v], sum);
  if (fast) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) c[v] = div_rcp(c[v], sum);
  } else {
#pragma unroll
    for (int v = 0; v < kVec; ++v) c[v] = div_rn(c[v], sum);
  }
}

/// The row's live vectors: those whose first element is at or before the query.
template <int kVec>
__device__ __forceinline__ int live_vectors(int query) {
  return query / kVec + 1;
}

/// Rows of t values (t / kVec vectors); row_warps warps a row (kWarpRows rows a block when 1).
/// stats: [2, rows] (each row's maximum score and sum of exponentials, for the backward pass).
template <typename T, int kVec, int kPer>
__global__ void __launch_bounds__(32 * kMaxRowWarps)
    softmax_quantize_forward_regs(const T* __restrict__ x, T* __restrict__ y,
                                  float* __restrict__ stats, int64_t rows, int t, float scale,
                                  QuantArgs qa, int row_warps) {
  const RowLane rl = row_lane(row_warps);
  if (rl.row >= rows) return;  // a warp of the last block of one-warp rows
  const Quant q = load_quant(qa);
  const int query = static_cast<int>(rl.row % t);
  const int vecs = t / kVec;
  const int live = live_vectors<kVec>(query);
  const T* xr = x + rl.row * t;
  T* yr = y + rl.row * t;
  float c[kPer][kVec];
  float r[1] = {scores_row<T, kVec, kPer>(xr, c, rl, live, query, scale, q)};
  row_reduce<MaxOp>(r, row_warps);
  const float m = r[0];
  r[0] = exp_row<kVec, kPer>(c, rl, live, m);
  row_reduce<SumOp>(r, row_warps);
  if (rl.lane == 0) {
    stats[rl.row] = m;
    stats[rows + rl.row] = r[0];
  }
  const Divisor sum = divisor(r[0]);
  // A key past the query: probability 0, quantized (not 0 where fq_out maps 0 outside its codes).
  const float masked = q.out_on ? fq_value(0.0f, q.s_out, q.o_out, q.lo_out, q.hi_out) : 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k = rl.lane + rl.lanes * i;
    if (k >= vecs) break;
    float out[kVec];
    if (k < live) {
      probs_vec(c[i], sum);
#pragma unroll
      for (int v = 0; v < kVec; ++v) out[v] = round_to<T>(c[i][v]);
      if (q.out_on) fq_values(out, q.s_out, q.o_out, q.lo_out, q.hi_out);
    } else {
#pragma unroll
      for (int v = 0; v < kVec; ++v) out[v] = masked;
    }
    store_vec<T, kVec>(yr + k * kVec, out);
  }
}

/// stats: [2, rows], the forward pass's (each row's maximum score and sum of exponentials);
/// partial: [4, rows] (d in scale, d in offset, d out scale, d out offset per row). Rows as
/// softmax_quantize_forward_regs's.
template <typename T, int kVec, int kPer>
__global__ void __launch_bounds__(32 * kMaxRowWarps)
    softmax_quantize_backward_regs(const T* __restrict__ x, const T* __restrict__ gy,
                                   T* __restrict__ gx, const float* __restrict__ stats,
                                   float* __restrict__ partial, int64_t rows, int t, float scale,
                                   QuantArgs qa, int row_warps) {
  const RowLane rl = row_lane(row_warps);
  if (rl.row >= rows) return;
  const Quant q = load_quant(qa);
  const int query = static_cast<int>(rl.row % t);
  const int vecs = t / kVec;
  const int live = live_vectors<kVec>(query);
  const int64_t base = rl.row * t;
  float c[kPer][kVec];  // scores, exp, then p
  scores_row<T, kVec, kPer>(x + base, c, rl, live, query, scale, q);
  exp_row<kVec, kPer>(c, rl, live, stats[rl.row]);
  const Divisor sum = divisor(stats[rows + rl.row]);
  // A masked key has p = 0; its fq_out' terms vanish when fq_out maps 0 inside the code range.
  // Otherwise the keys past the query count as the composed ops count them.
  const bool masked_silent = !q.out_on || (q.o_out >= q.lo_out && q.o_out <= q.hi_out);
  uint4 gp[kPer];  // the gradients reaching p, values of T (prob_grads rounds them to T)
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float dot = 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k = rl.lane + rl.lanes * i;
    if (k >= vecs) break;
    if (k < live) {
      float g[kVec];
      unpack_vec<T, kVec>(load_raw<T, kVec>(gy + base + k * kVec), g);
      probs_vec(c[i], sum);
      float gpv[kVec];
      prob_grads<T, kVec>(c[i], g, q, acc, dot, gpv);
      gp[i] = pack_vec<T, kVec>(gpv);
    } else if (!masked_silent) {
      const uint4 raw = load_raw<T, kVec>(gy + base + k * kVec);
      float g[kVec], zero[kVec], unused[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        g[v] = raw_at<T>(raw, v);
        zero[v] = 0.0f;
      }
      prob_grads<T, kVec>(zero, g, q, acc, dot, unused);
    }
  }
  float d[1] = {dot};
  row_reduce<SumOp>(d, row_warps);
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k = rl.lane + rl.lanes * i;
    if (k >= vecs) break;
    const int j0 = k * kVec;
    float out[kVec];
    if (k < live) {
      float ga[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const float gc = round_to<T>(__fmul_rn(c[i][v], __fsub_rn(raw_at<T>(gp[i], v), d[0])));
        ga[v] = j0 + v > query ? 0.0f : round_to<T>(__fmul_rn(gc, scale));
      }
      if (q.in_on) {
        // The scores as read; a masked key's (its gradient 0) counts as 0, adding nothing.
        const uint4 raw = load_raw<T, kVec>(x + base + j0);
        float a[kVec];
#pragma unroll
        for (int v = 0; v < kVec; ++v) a[v] = j0 + v > query ? 0.0f : raw_at<T>(raw, v);
        fq_backwards(a, ga, q.s_in, q.o_in, q.lo_in, q.hi_in, acc[0], acc[1], out);
      } else {
#pragma unroll
        for (int v = 0; v < kVec; ++v) out[v] = ga[v];
      }
    } else {
#pragma unroll
      for (int v = 0; v < kVec; ++v) out[v] = 0.0f;
    }
    store_vec<T, kVec>(gx + base + j0, out);
  }
  row_reduce<SumOp>(acc, row_warps);
  if (rl.lane == 0)
    for (int k = 0; k < 4; ++k) partial[k * rows + rl.row] = acc[k];
}

/// Warps a row of t values of T takes in the register kernels of kPer vectors a thread, or 0
/// where they do not take it: T not fp64, t a multiple of the 16-byte vector, at most
/// 32 * kMaxRowWarps * kPer vectors, every pointer 16-byte aligned.
template <typename T, int kPer>
int row_warps_for(int64_t t, std::initializer_list<const void*> ptrs) {
  constexpr int64_t vec = 16 / sizeof(T);
  if (std::is_same_v<T, double> || !aligned16(ptrs) || t % vec != 0) return 0;
  const int64_t vecs = t / vec;
  for (int w = 1; w <= kMaxRowWarps; w *= 2)
    if (32 * w * kPer >= vecs) return w;
  return 0;
}

/// The grid and block of a register kernel over `rows` rows of row_warps warps each.
std::pair<unsigned, unsigned> row_launch(int64_t rows, int row_warps) {
  if (row_warps == 1)
    return {static_cast<unsigned>((rows + kWarpRows - 1) / kWarpRows), 32u * kWarpRows};
  return {static_cast<unsigned>(rows), 32u * static_cast<unsigned>(row_warps)};
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

// The launches (host code with the launch syntax, outside what the CUDA emulation compiles).
namespace {

/// Runs the register forward kernel of kPer vectors a thread if it takes these rows.
template <typename T, int kPer>
bool forward_regs(const at::Tensor& x, at::Tensor& y, at::Tensor& stats, int64_t rows, int64_t t,
                  float scale, const QuantArgs& qp, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, double>) {
    return false;
  } else {
    const int w = row_warps_for<T, kPer>(t, {x.data_ptr(), y.data_ptr()});
    if (w == 0) return false;
    const auto [grid, block] = row_launch(rows, w);
    softmax_quantize_forward_regs<T, 16 / sizeof(T), kPer><<<grid, block, 0, stream>>>(
        x.data_ptr<T>(), y.data_ptr<T>(), stats.data_ptr<float>(), rows, static_cast<int>(t), scale,
        qp, w);
    return true;
  }
}

/// Runs the register backward kernel of kPer vectors a thread if it takes these rows.
template <typename T, int kPer>
bool backward_regs(const at::Tensor& x, const at::Tensor& gy, at::Tensor& gx,
                   const at::Tensor& stats, at::Tensor& partial, int64_t rows, int64_t t,
                   float scale, const QuantArgs& qp, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, double>) {
    return false;
  } else {
    const int w = row_warps_for<T, kPer>(t, {x.data_ptr(), gy.data_ptr(), gx.data_ptr()});
    if (w == 0) return false;
    const auto [grid, block] = row_launch(rows, w);
    softmax_quantize_backward_regs<T, 16 / sizeof(T), kPer><<<grid, block, 0, stream>>>(
        x.data_ptr<T>(), gy.data_ptr<T>(), gx.data_ptr<T>(), stats.data_ptr<float>(),
        partial.data_ptr<float>(), rows, static_cast<int>(t), scale, qp, w);
    return true;
  }
}

}  // namespace

std::pair<at::Tensor, at::Tensor> fused_softmax_quantize_cuda(const at::Tensor& scores_in,
                                                              double scale, const at::Tensor& q,
                                                              std::array<int64_t, 4> codes,
                                                              std::array<bool, 2> enabled) {
  const c10::cuda::CUDAGuard guard(scores_in.device());
  const at::Tensor x = scores_in.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t t = x.size(-1);
  const int64_t rows = x.numel() / t;
  at::Tensor stats = at::empty({2, rows}, x.options().dtype(at::kFloat));  // [2, rows]
  if (rows == 0) return {y, stats};
  const at::Tensor qd = ready(q, x.device());
  const QuantArgs qp = make_quant(qd, codes, enabled);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float sc = static_cast<float>(scale);
  const size_t shmem = static_cast<size_t>(t) * sizeof(float);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "fused_softmax_quantize", [&] {
    if (!forward_regs<scalar_t, kVectorsPerThread>(x, y, stats, rows, t, sc, qp, stream)) {
      softmax_quantize_forward_kernel<scalar_t>
          <<<static_cast<unsigned>(rows), kThreads, shmem, stream>>>(
              x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), stats.data_ptr<float>(), rows, t,
              sc, qp);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, stats};
}

std::pair<at::Tensor, at::Tensor> fused_softmax_quantize_backward_cuda(
    const at::Tensor& scores_in, const at::Tensor& grad_in, const at::Tensor& stats_in,
    double scale, const at::Tensor& q, std::array<int64_t, 4> codes,
    std::array<bool, 2> enabled) {
  const c10::cuda::CUDAGuard guard(scores_in.device());
  const at::Tensor x = scores_in.contiguous();
  const at::Tensor gy = grad_in.to(x.scalar_type()).contiguous();
  at::Tensor gx = at::empty_like(x);
  const int64_t t = x.size(-1);
  const int64_t rows = x.numel() / t;
  at::Tensor partial = at::zeros({4, rows}, x.options().dtype(at::kFloat));  // [4, rows]
  TORCH_CHECK(stats_in.numel() == 2 * rows, "fused_softmax_quantize_backward: row statistics of ",
              stats_in.numel(), " values for ", rows, " rows (expected ", 2 * rows, ")");
  const at::Tensor stats = stats_in.to(x.device(), at::kFloat).contiguous();  // [2, rows]
  if (rows > 0) {
    const at::Tensor qd = ready(q, x.device());
    const QuantArgs qp = make_quant(qd, codes, enabled);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const float sc = static_cast<float>(scale);
    const size_t shmem = 2 * static_cast<size_t>(t) * sizeof(float);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                    "fused_softmax_quantize_backward", [&] {
      if (backward_regs<scalar_t, kVectorsPerThread>(x, gy, gx, stats, partial, rows, t, sc, qp,
                                                     stream))
        return;
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
