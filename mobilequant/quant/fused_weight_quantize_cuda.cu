// mobilequant/quant/fused_weight_quantize_cuda.cu
// The kernels of fused_weight_quantize.h. Per row: one block per row (group) reduces the row's
// min and max, derives the row's scale and offset (thread 0), and fake-quantizes the row,
// which is still in L1/L2; backward, one block per row writes the straight-through gradient
// and sums d scale and the ties of min and max, derives the row's gradient chain, and adds the
// min / max shares to the tied elements. Per tensor: the same as three grid-wide kernels each
// way (partial reductions, one block for the scalars, the elementwise pass).
// Every operation rounds as the composed torch ops round it (fp32, --fmad=false): see
// make_params for the forward's scalars and chain() for the backward's.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <tuple>
#include <utility>

#include "mobilequant/quant/block_reduce.cuh"
#include "mobilequant/quant/fake_quantize_element.cuh"

namespace mq {

namespace {

constexpr int kThreads = 256;
/// The slots of a group's saved statistics; kStats of them.
enum Stat { kMin0 = 0, kMax0, kScale, kOffset, kUnclamped, kSigUp, kSigLow, kStats };
/// primitives.h's kMinScale / kMaxScale as PyTorch's clamp and its backward compare them: fp32.
constexpr float kMinScaleF = 1e-5f;
constexpr float kMaxScaleF = 1e6f;

#define kPosInf __int_as_float(0x7f800000)
#define kNegInf __int_as_float(0xff800000)

/// The code range and switches.
struct Codes {
  float qmin, qmax;
  float inv_qmax;  // fp32(1 / qmax): PyTorch divides a CUDA tensor by a host scalar this way
  bool symmetric, lwc;
};

/// Block-wide min and max (every thread gets both).
__device__ __forceinline__ void block_min_max(float& mn, float& mx) {
  float lo[1] = {mn}, hi[1] = {mx};
  block_reduce<MinOp>(lo);
  block_reduce<MaxOp>(hi);
  mn = lo[0];
  mx = hi[0];
}

/// Block-wide sums of one float and two counts (every thread gets them).
__device__ __forceinline__ void block_sums(float& a, int& c0, int& c1) {
  float f[1] = {a};
  int c[2] = {c0, c1};
  block_reduce<SumOp>(f);
  block_reduce<SumOp>(c);
  a = f[0];
  c0 = c[0];
  c1 = c[1];
}

/// choose_qparams of the (clipped) range, as primitives.cpp computes it with torch ops:
///   mx = sig_up * max0, mn = sig_low * min0                  (LWC; else the raw min / max)
///   v = (mx - mn) * fp32(1/qmax)  or  max(|mn|, |mx|) * fp32(1/qmax)   (symmetric)
///   scale = clamp(v, kMinScale, kMaxScale) (NaN stays), offset = -round(mn / scale) or 0
/// st: the group's kStats slots.
__device__ __forceinline__ void make_params(float mn0, float mx0, const float* __restrict__ su_p,
                                            const float* __restrict__ sl_p, int64_t g,
                                            const Codes& c, float* st) {
  const float su = c.lwc ? su_p[g] : 1.0f;
  const float sl = c.lwc ? sl_p[g] : 1.0f;
  const float mx = c.lwc ? __fmul_rn(su, mx0) : mx0;
  const float mn = c.lwc ? __fmul_rn(sl, mn0) : mn0;
  float v;
  if (c.symmetric) {
    const float a = fabsf(mn), b = fabsf(mx);
    v = __fmul_rn(a > b ? a : b, c.inv_qmax);
  } else {
    v = __fmul_rn(__fsub_rn(mx, mn), c.inv_qmax);
  }
  const float scale = isnan(v) ? v : fminf(fmaxf(v, kMinScaleF), kMaxScaleF);
  st[kMin0] = mn0;
  st[kMax0] = mx0;
  st[kScale] = scale;
  st[kOffset] = c.symmetric ? 0.0f : -rintf(__fdiv_rn(mn, scale));
  st[kUnclamped] = v;
  st[kSigUp] = su;
  st[kSigLow] = sl;
}

/// fq_backward without the d offset terms: the offset comes from round(), whose gradient is
/// zero. Returns dx; adds the element's d scale term to acc.
__device__ __forceinline__ float fq_backward_scale(float x, float g, const Divisor& s, float o,
                                                   float qmin, float qmax, float& acc) {
  float unused = 0.0f;
  return fq_backward(x, g, s, o, qmin, qmax, acc, unused);
}

/// sign(v) as torch.sgn: -1, 0 or 1.
__device__ __forceinline__ float sgn(float v) {
  return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
}

/// The gradient chain from d scale to the LWC sigmoids and to min0 / max0, as autograd runs it
/// over the composed ops: ClampBackward (inside the clamp only), the division by qmax (times
/// fp32(1/qmax)), SubBackward or the maximum / abs backward (ties share half), MulBackward of
/// the LWC product; the offset's round contributes zero. amax / amin hand d max0 / count and
/// d min0 / count to each tied element.
struct Chain {
  float d_sig_up, d_sig_low, inc_max, inc_min;
};
__device__ __forceinline__ Chain chain(const float* st, float d_scale, int n_max, int n_min,
                                       const Codes& c) {
  const float mn0 = st[kMin0], mx0 = st[kMax0], su = st[kSigUp], sl = st[kSigLow];
  const float v = st[kUnclamped];
  const float d_v = (v >= kMinScaleF && v <= kMaxScaleF) ? d_scale : 0.0f;
  const float g = __fmul_rn(d_v, c.inv_qmax);
  float d_mx, d_mn;
  if (!c.symmetric) {
    d_mx = g;
    d_mn = -g;
  } else {
    const float mx = c.lwc ? __fmul_rn(su, mx0) : mx0;
    const float mn = c.lwc ? __fmul_rn(sl, mn0) : mn0;
    const float a = fabsf(mn), b = fabsf(mx);
    const float half = __fmul_rn(g, 0.5f);
    const float ga = a == b ? half : (a < b ? 0.0f : g);
    const float gb = a == b ? half : (a > b ? 0.0f : g);
    d_mn = __fmul_rn(ga, sgn(mn));
    d_mx = __fmul_rn(gb, sgn(mx));
  }
  Chain r;
  r.d_sig_up = c.lwc ? __fmul_rn(d_mx, mx0) : 0.0f;
  r.d_sig_low = c.lwc ? __fmul_rn(d_mn, mn0) : 0.0f;
  const float d_mx0 = c.lwc ? __fmul_rn(d_mx, su) : d_mx;
  const float d_mn0 = c.lwc ? __fmul_rn(d_mn, sl) : d_mn;
  r.inc_max = __fdiv_rn(d_mx0, static_cast<float>(n_max));
  r.inc_min = __fdiv_rn(d_mn0, static_cast<float>(n_min));
  return r;
}

// ---------------------------------------------------------------- the equivalent transform

/// The equivalent transform (LET) a [rows, cols] weight takes before its quantizer, as
/// quant/weight_transform.cpp's composed ops apply it: w' = (w * col[j]) * row[i], or
/// / row[i] when row_divides; a null factor is skipped. Device pointers.
struct Transform {
  const float* col;  // [cols] or null
  const float* row;  // [rows] or null
  bool row_divides;
};

/// Row i's factor, its reciprocal taken once for the row (div_rn).
struct RowFactor {
  bool on, divides;
  Divisor d;
};
__device__ __forceinline__ RowFactor row_factor(const Transform& t, int64_t i) {
  if (t.row == nullptr) return RowFactor{false, false, Divisor{1.0f, 1.0f, true}};
  return RowFactor{true, t.row_divides, divisor(t.row[i])};
}

/// w' of element (row with factor r, column j): w * col[j], then * or / the row's factor.
__device__ __forceinline__ float transformed(float w, const Transform& t, int64_t j,
                                             const RowFactor& r) {
  const float v = t.col != nullptr ? __fmul_rn(w, t.col[j]) : w;
  if (!r.on) return v;
  return r.divides ? div_rn(v, r.d) : __fmul_rn(v, r.d.b);
}
// ---------------------------------------------------------------- per row: one block each

template <typename Out>
__global__ void forward_rows_kernel(const float* __restrict__ w, Out* __restrict__ y,
                                    float* __restrict__ stats, int64_t cols,
                                    const float* __restrict__ su, const float* __restrict__ sl,
                                    Transform t, Codes c) {
  const int64_t row = blockIdx.x;
  const RowFactor r = row_factor(t, row);
  const float* wr = w + row * cols;
  Out* yr = y + row * cols;
  float mn = kPosInf, mx = kNegInf;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = transformed(wr[j], t, j, r);
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
  }
  block_min_max(mn, mx);
  __shared__ float st[kStats];
  if (threadIdx.x == 0) {
    make_params(mn, mx, su, sl, row, c, st);
    for (int k = 0; k < kStats; ++k) stats[row * kStats + k] = st[k];
  }
  __syncthreads();
  const Divisor s = divisor(st[kScale]);
  const float o = st[kOffset];
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    yr[j] = static_cast<Out>(fq_value(transformed(wr[j], t, j, r), s, o, c.qmin, c.qmax));
}

/// d_su / d_sl: [rows] (written only with LWC). gx: the gradient of the (transformed) weight
/// [rows, cols], or null: then shares [rows, 2] takes each row's shares of its tied maximum and
/// minimum for scaled_grads_kernel, and nothing else is written per element.
template <typename G>
__global__ void backward_rows_kernel(const float* __restrict__ w, const G* __restrict__ gy,
                                     float* __restrict__ gx, const float* __restrict__ stats,
                                     float* __restrict__ d_su, float* __restrict__ d_sl,
                                     float* __restrict__ shares, int64_t cols, Transform t,
                                     Codes c) {
  const int64_t row = blockIdx.x;
  const RowFactor r = row_factor(t, row);
  const float* st = stats + row * kStats;
  const float mn0 = st[kMin0], mx0 = st[kMax0], o = st[kOffset];
  const Divisor s = divisor(st[kScale]);
  const float* wr = w + row * cols;
  const G* gr = gy + row * cols;
  float* gxr = gx == nullptr ? nullptr : gx + row * cols;
  float acc = 0.0f;
  int n_max = 0, n_min = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = transformed(wr[j], t, j, r);
    const float d = fq_backward_scale(v, static_cast<float>(gr[j]), s, o, c.qmin, c.qmax, acc);
    if (gxr != nullptr) gxr[j] = d;
    n_max += v == mx0;
    n_min += v == mn0;
  }
  block_sums(acc, n_max, n_min);
  const Chain ch = chain(st, acc, n_max, n_min, c);  // every thread: same inputs, same result
  if (threadIdx.x == 0) {
    if (c.lwc) {
      d_su[row] = ch.d_sig_up;
      d_sl[row] = ch.d_sig_low;
    }
    if (gxr == nullptr) {
      shares[2 * row] = ch.inc_max;
      shares[2 * row + 1] = ch.inc_min;
    }
  }
  if (gxr == nullptr) return;
  // The same thread wrote gxr[j] above: no barrier needed for its own elements.
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = transformed(wr[j], t, j, r);
    if (v == mx0) gxr[j] = __fadd_rn(gxr[j], ch.inc_max);
    if (v == mn0) gxr[j] = __fadd_rn(gxr[j], ch.inc_min);
  }
}

// ---------------------------------------------------------------- per tensor: grid-wide

/// partial: [2, gridDim.x] (min, then max per block). Grid-wide passes take rows blockIdx.x,
/// blockIdx.x + gridDim.x, ..., each row's factor ready once.
__global__ void min_max_partial_kernel(const float* __restrict__ w, int64_t rows, int64_t cols,
                                       Transform t, float* __restrict__ partial) {
  float mn = kPosInf, mx = kNegInf;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const RowFactor r = row_factor(t, i);
    const float* wr = w + i * cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = transformed(wr[j], t, j, r);
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
    }
  }
  block_min_max(mn, mx);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = mn;
    partial[gridDim.x + blockIdx.x] = mx;
  }
}

/// One block: the tensor's min / max from `blocks` partials, then its statistics.
__global__ void params_tensor_kernel(const float* __restrict__ partial, int blocks,
                                     float* __restrict__ stats, const float* __restrict__ su,
                                     const float* __restrict__ sl, Codes c) {
  float mn = kPosInf, mx = kNegInf;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
    mn = fminf(mn, partial[b]);
    mx = fmaxf(mx, partial[blocks + b]);
  }
  block_min_max(mn, mx);
  if (threadIdx.x == 0) {
    float st[kStats];
    make_params(mn, mx, su, sl, 0, c, st);
    for (int k = 0; k < kStats; ++k) stats[k] = st[k];
  }
}

template <typename Out>
__global__ void apply_tensor_kernel(const float* __restrict__ w, Out* __restrict__ y,
                                    int64_t rows, int64_t cols, Transform t,
                                    const float* __restrict__ stats, Codes c) {
  const Divisor s = divisor(stats[kScale]);
  const float o = stats[kOffset];
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const RowFactor r = row_factor(t, i);
    const float* wr = w + i * cols;
    Out* yr = y + i * cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      yr[j] = static_cast<Out>(fq_value(transformed(wr[j], t, j, r), s, o, c.qmin, c.qmax));
  }
}

/// partial_f: [gridDim.x] d scale sums; partial_n: [2, gridDim.x] ties of max, then of min. gx
/// (the gradient without the tied elements' shares) may be null: only the sums are wanted.
template <typename G>
__global__ void backward_partial_kernel(const float* __restrict__ w, const G* __restrict__ gy,
                                        float* __restrict__ gx, int64_t rows, int64_t cols,
                                        Transform t, const float* __restrict__ stats,
                                        float* __restrict__ partial_f,
                                        int* __restrict__ partial_n, Codes c) {
  const float mn0 = stats[kMin0], mx0 = stats[kMax0], o = stats[kOffset];
  const Divisor s = divisor(stats[kScale]);
  float acc = 0.0f;
  int n_max = 0, n_min = 0;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const RowFactor r = row_factor(t, i);
    const int64_t base = i * cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = transformed(w[base + j], t, j, r);
      const float d =
          fq_backward_scale(v, static_cast<float>(gy[base + j]), s, o, c.qmin, c.qmax, acc);
      if (gx != nullptr) gx[base + j] = d;
      n_max += v == mx0;
      n_min += v == mn0;
    }
  }
  block_sums(acc, n_max, n_min);
  if (threadIdx.x == 0) {
    partial_f[blockIdx.x] = acc;
    partial_n[blockIdx.x] = n_max;
    partial_n[gridDim.x + blockIdx.x] = n_min;
  }
}

/// One block: the sums in a fixed order, then the chain. out: [4] d sig_up, d sig_low, the
/// shares of max and min.
__global__ void chain_tensor_kernel(const float* __restrict__ partial_f,
                                    const int* __restrict__ partial_n, int blocks,
                                    const float* __restrict__ stats, float* __restrict__ out,
                                    Codes c) {
  float acc = 0.0f;
  int n_max = 0, n_min = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
    acc += partial_f[b];
    n_max += partial_n[b];
    n_min += partial_n[blocks + b];
  }
  block_sums(acc, n_max, n_min);
  if (threadIdx.x == 0) {
    const Chain ch = chain(stats, acc, n_max, n_min, c);
    out[0] = ch.d_sig_up;
    out[1] = ch.d_sig_low;
    out[2] = ch.inc_max;
    out[3] = ch.inc_min;
  }
}

__global__ void ties_tensor_kernel(const float* __restrict__ w, float* __restrict__ gx, int64_t n,
                                   const float* __restrict__ stats,
                                   const float* __restrict__ shares) {
  const float mn0 = stats[kMin0], mx0 = stats[kMax0];
  const float inc_max = shares[2], inc_min = shares[3];
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float v = w[i];
    if (v == mx0) gx[i] = __fadd_rn(gx[i], inc_max);
    if (v == mn0) gx[i] = __fadd_rn(gx[i], inc_min);
  }
}

// ---------------------------------------------------------------- the transform's gradients

/// A block of scaled_grads_kernel: kBandWarps warps, each walking kRowsPerWarp rows of the
/// block's band over the block's tile of kTileCols columns (kColsPerLane a lane).
constexpr int kBandWarps = 8;
constexpr int kRowsPerWarp = 4;
constexpr int kBandRows = kBandWarps * kRowsPerWarp;
constexpr int kTileCols = 256;
constexpr int kColsPerLane = kTileCols / 32;

/// The gradients of the transform's factors, as autograd gives them over the composed ops
/// (weight_transform.cpp) with the weight frozen: for element (i, j) with t1 = w * col[j],
/// t2 = t1 op row[i] and g2 the quantizer's gradient of t2 (fq_backward plus the tied
/// extremes' shares),
///   divides:    g1 = g2 / row[i],  d row[i] += -g2 * ((t1 / row[i]) / row[i])  (t1 / row = t2)
///   multiplies: g1 = g2 * row[i],  d row[i] += g2 * t1
///   d col[j] += g1 * w.
/// Grid (bands of kBandRows rows, tiles of kTileCols columns). stats / shares: a group's
/// kStats statistics and (inc_max, inc_min), at group i * group_stride (1 per row, 0 per
/// tensor). partial_col: [bands, cols]; partial_row: [rows, tiles] (sums of a warp's row).
template <typename G>
__global__ void __launch_bounds__(kBandWarps * 32)
    scaled_grads_kernel(const float* __restrict__ w, const G* __restrict__ gy, int64_t rows,
                        int64_t cols, Transform t, const float* __restrict__ stats,
                        const float* __restrict__ shares, int64_t group_stride, Codes c,
                        float* __restrict__ partial_col, float* __restrict__ partial_row) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t band = blockIdx.x, tile = blockIdx.y, tiles = gridDim.y;
  const int64_t j0 = tile * kTileCols + lane;
  float cf[kColsPerLane], acc[kColsPerLane];
#pragma unroll
  for (int m = 0; m < kColsPerLane; ++m) {
    const int64_t j = j0 + 32 * m;
    cf[m] = t.col != nullptr && j < cols ? t.col[j] : 1.0f;
    acc[m] = 0.0f;
  }
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t i = band * kBandRows + k * kBandWarps + warp;
    if (i >= rows) break;  // the same for the whole warp
    const int64_t gi = i * group_stride;
    const float* st = stats + gi * kStats;
    const float mn0 = st[kMin0], mx0 = st[kMax0], o = st[kOffset];
    const Divisor s = divisor(st[kScale]);
    const float inc_max = shares[2 * gi], inc_min = shares[2 * gi + 1];
    const RowFactor r = row_factor(t, i);
    const float* wr = w + i * cols;
    const G* gr = gy + i * cols;
    float wv[kColsPerLane], gv[kColsPerLane];  // the lane's elements, all loads issued first
#pragma unroll
    for (int m = 0; m < kColsPerLane; ++m) {
      const int64_t j = j0 + 32 * m;
      wv[m] = j < cols ? wr[j] : 0.0f;
      gv[m] = j < cols ? static_cast<float>(gr[j]) : 0.0f;
    }
    float row_acc = 0.0f;
#pragma unroll
    for (int m = 0; m < kColsPerLane; ++m) {
      if (j0 + 32 * m >= cols) break;
      const float t1 = t.col != nullptr ? __fmul_rn(wv[m], cf[m]) : wv[m];
      float t2 = t1;
      if (r.on) t2 = r.divides ? div_rn(t1, r.d) : __fmul_rn(t1, r.d.b);
      float unused = 0.0f;
      float g2 = fq_backward_scale(t2, gv[m], s, o, c.qmin, c.qmax, unused);
      if (t2 == mx0) g2 = __fadd_rn(g2, inc_max);
      if (t2 == mn0) g2 = __fadd_rn(g2, inc_min);
      float g1 = g2;
      if (r.on) {
        if (r.divides) {
          g1 = div_rn(g2, r.d);
          row_acc = __fadd_rn(row_acc, __fmul_rn(-g2, div_rn(t2, r.d)));
        } else {
          g1 = __fmul_rn(g2, r.d.b);
          row_acc = __fadd_rn(row_acc, __fmul_rn(g2, t1));
        }
      }
      acc[m] = __fadd_rn(acc[m], __fmul_rn(g1, wv[m]));
    }
    if (t.row != nullptr) {
      for (int off = 16; off > 0; off >>= 1)
        row_acc += __shfl_xor_sync(0xffffffffu, row_acc, off);
      if (lane == 0) partial_row[i * tiles + tile] = row_acc;
    }
  }
  if (t.col == nullptr) return;  // the whole block
  __shared__ float part[kBandWarps][kTileCols];
#pragma unroll
  for (int m = 0; m < kColsPerLane; ++m) part[warp][lane + 32 * m] = acc[m];
  __syncthreads();
  for (int jj = static_cast<int>(threadIdx.x); jj < kTileCols; jj += blockDim.x) {
    const int64_t j = tile * kTileCols + jj;
    if (j >= cols) break;
    float sum = part[0][jj];
    for (int q = 1; q < kBandWarps; ++q) sum = __fadd_rn(sum, part[q][jj]);
    partial_col[band * cols + j] = sum;
  }
}

// ---------------------------------------------------------------- host helpers

Codes make_codes(int64_t qmin, int64_t qmax, bool symmetric, bool lwc) {
  const float q = static_cast<float>(qmax);
  return Codes{static_cast<float>(qmin), q, 1.0f / q, symmetric, lwc};
}

/// Threads per row block: the row's length rounded up to whole warps, at most kThreads.
int row_threads(int64_t cols) {
  const int64_t warps = (cols + 31) / 32;
  return static_cast<int>(warps >= kThreads / 32 ? kThreads : (warps < 1 ? 32 : warps * 32));
}

/// Blocks of a grid-wide pass over `rows` rows: one a row, at most 1024 (the partials stay
/// small and the count is fixed by the shape, so the sums are reproducible).
int tensor_blocks(int64_t rows) {
  return static_cast<int>(rows < 1 ? 1 : (rows < 1024 ? rows : 1024));
}

/// Blocks of the flat pass over n elements (the ties of an untransformed weight).
int flat_blocks(int64_t n) {
  const int64_t want = (n + kThreads * 4 - 1) / (kThreads * 4);
  return static_cast<int>(want < 1 ? 1 : (want < 1024 ? want : 1024));
}

const float* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

/// The kernels' view of a transform (factors as contiguous fp32 device tensors, or undefined).
Transform make_transform(const at::Tensor& col, const at::Tensor& row, bool row_divides) {
  return Transform{ptr_or_null(col), ptr_or_null(row), row_divides};
}

/// f(Out{}) with Out the C++ type of an fp32 or bf16 dtype.
template <typename F>
void with_float_or_bf16(at::ScalarType dtype, const char* what, F&& f) {
  if (dtype == at::kFloat) {
    f(float{});
  } else if (dtype == at::kBFloat16) {
    f(c10::BFloat16{});
  } else {
    TORCH_CHECK(false, what, ": expected fp32 or bf16, got ", dtype);
  }
}

}  // namespace

std::pair<at::Tensor, at::Tensor> fused_weight_quantize_forward_cuda(
    const at::Tensor& wg, const at::Tensor& col, const at::Tensor& row, bool row_divides,
    const at::Tensor& sig_up, const at::Tensor& sig_low, int64_t qmin, int64_t qmax,
    bool symmetric, bool per_row, at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(wg.device());
  const int64_t rows = wg.size(0), cols = wg.size(1), n = wg.numel();
  const Codes c = make_codes(qmin, qmax, symmetric, sig_up.defined());
  const Transform t = make_transform(col, row, row_divides);
  const int64_t groups = per_row ? rows : 1;
  at::Tensor y = at::empty_like(wg, wg.options().dtype(out_dtype));     // [rows, cols]
  at::Tensor stats = at::empty({groups, kStats}, wg.options());         // [groups, kStats]
  if (n == 0) return {y, stats};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_float_or_bf16(out_dtype, "fused_weight_quantize output", [&](auto out) {
    using Out = decltype(out);
    Out* yp = reinterpret_cast<Out*>(y.data_ptr());
    if (per_row) {
      forward_rows_kernel<Out><<<static_cast<unsigned>(rows), row_threads(cols), 0, stream>>>(
          wg.data_ptr<float>(), yp, stats.data_ptr<float>(), cols, ptr_or_null(sig_up),
          ptr_or_null(sig_low), t, c);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int blocks = tensor_blocks(rows);
    at::Tensor partial = at::empty({2, blocks}, wg.options());  // [2, blocks]
    min_max_partial_kernel<<<blocks, kThreads, 0, stream>>>(wg.data_ptr<float>(), rows, cols, t,
                                                            partial.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    params_tensor_kernel<<<1, kThreads, 0, stream>>>(partial.data_ptr<float>(), blocks,
                                                     stats.data_ptr<float>(),
                                                     ptr_or_null(sig_up), ptr_or_null(sig_low), c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    apply_tensor_kernel<Out><<<blocks, kThreads, 0, stream>>>(wg.data_ptr<float>(), yp, rows,
                                                              cols, t, stats.data_ptr<float>(), c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, stats};
}

namespace {

/// The first backward pass, both forms: per row, the rows' LWC gradients into d_su / d_sl and,
/// without gx, their tie shares into shares [rows, 2]; per tensor, the partial sums and the
/// chain into out [4] (d sig_up, d sig_low, the tie shares). gx [rows, cols] or undefined.
void backward_sums(const at::Tensor& wg, const at::Tensor& gy, const at::Tensor& gx,
                   const at::Tensor& stats, const Transform& t, const Codes& c, bool per_row,
                   at::Tensor& d_su, at::Tensor& d_sl, at::Tensor& shares, at::Tensor& out) {
  const int64_t rows = wg.size(0), cols = wg.size(1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  float* gxp = gx.defined() ? gx.data_ptr<float>() : nullptr;
  with_float_or_bf16(gy.scalar_type(), "fused_weight_quantize gradient", [&](auto g) {
    using G = decltype(g);
    const G* gp = reinterpret_cast<const G*>(gy.data_ptr());
    if (per_row) {
      backward_rows_kernel<G><<<static_cast<unsigned>(rows), row_threads(cols), 0, stream>>>(
          wg.data_ptr<float>(), gp, gxp, stats.data_ptr<float>(),
          c.lwc ? d_su.data_ptr<float>() : nullptr, c.lwc ? d_sl.data_ptr<float>() : nullptr,
          shares.defined() ? shares.data_ptr<float>() : nullptr, cols, t, c);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int blocks = tensor_blocks(rows);
    at::Tensor partial_f = at::empty({blocks}, wg.options());                      // [blocks]
    at::Tensor partial_n = at::empty({2, blocks}, wg.options().dtype(at::kInt));   // [2, blocks]
    backward_partial_kernel<G><<<blocks, kThreads, 0, stream>>>(
        wg.data_ptr<float>(), gp, gxp, rows, cols, t, stats.data_ptr<float>(),
        partial_f.data_ptr<float>(), partial_n.data_ptr<int>(), c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    chain_tensor_kernel<<<1, kThreads, 0, stream>>>(partial_f.data_ptr<float>(),
                                                    partial_n.data_ptr<int>(), blocks,
                                                    stats.data_ptr<float>(),
                                                    out.data_ptr<float>(), c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

/// grad as a contiguous fp32 or bf16 tensor (other dtypes become fp32).
at::Tensor ready_grad(const at::Tensor& grad) {
  const bool ok = grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kBFloat16;
  return (ok ? grad : grad.to(at::kFloat)).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_weight_quantize_backward_cuda(
    const at::Tensor& wg, const at::Tensor& grad, const at::Tensor& stats, int64_t qmin,
    int64_t qmax, bool symmetric, bool lwc, bool per_row) {
  const c10::cuda::CUDAGuard guard(wg.device());
  const at::Tensor gy = ready_grad(grad);  // [rows, cols]
  const int64_t groups = per_row ? wg.size(0) : 1, n = wg.numel();
  const Codes c = make_codes(qmin, qmax, symmetric, lwc);
  at::Tensor gx = at::empty_like(wg);  // [rows, cols]
  at::Tensor d_su, d_sl;               // [groups] each with LWC, else undefined
  if (n == 0) {
    if (lwc) {
      d_su = at::zeros({groups}, wg.options());
      d_sl = at::zeros({groups}, wg.options());
    }
    return {gx, d_su, d_sl};
  }
  if (lwc && per_row) {
    d_su = at::empty({groups}, wg.options());
    d_sl = at::empty({groups}, wg.options());
  }
  at::Tensor shares;                                                // unused: gx is written
  at::Tensor out = per_row ? at::Tensor() : at::empty({4}, wg.options());  // [4] per tensor
  const Transform none{nullptr, nullptr, false};
  backward_sums(wg, gy, gx, stats, none, c, per_row, d_su, d_sl, shares, out);
  if (per_row) return {gx, d_su, d_sl};
  const int blocks = flat_blocks(n);
  ties_tensor_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      wg.data_ptr<float>(), gx.data_ptr<float>(), n, stats.data_ptr<float>(),
      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (lwc) {
    d_su = out.narrow(0, 0, 1);
    d_sl = out.narrow(0, 1, 1);
  }
  return {gx, d_su, d_sl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_weight_quantize_scaled_backward_cuda(
    const at::Tensor& w, const at::Tensor& col, const at::Tensor& row, bool row_divides,
    const at::Tensor& grad, const at::Tensor& stats, int64_t qmin, int64_t qmax, bool symmetric,
    bool lwc, bool per_row) {
  const c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor gy = ready_grad(grad);  // [rows, cols]
  const int64_t rows = w.size(0), cols = w.size(1), groups = per_row ? rows : 1;
  const Codes c = make_codes(qmin, qmax, symmetric, lwc);
  const Transform t = make_transform(col, row, row_divides);
  at::Tensor d_col = col.defined() ? at::zeros({cols}, w.options()) : at::Tensor();  // [cols]
  at::Tensor d_row = row.defined() ? at::zeros({rows}, w.options()) : at::Tensor();  // [rows]
  at::Tensor d_su, d_sl;  // [groups] each with LWC, else undefined
  if (lwc) {
    d_su = at::zeros({groups}, w.options());
    d_sl = at::zeros({groups}, w.options());
  }
  if (w.numel() == 0) return {d_col, d_row, d_su, d_sl};
  // Pass 1: the groups' d scale sums and tie counts, through the chain to the LWC gradients
  // and the tie shares ([groups, 2]; per tensor the last two of out's four).
  at::Tensor shares, out;
  if (per_row) {
    shares = at::empty({rows, 2}, w.options());
  } else {
    out = at::empty({4}, w.options());
    shares = out.narrow(0, 2, 2);
  }
  backward_sums(w, gy, at::Tensor(), stats, t, c, per_row, d_su, d_sl, shares, out);
  if (!per_row && lwc) {
    d_su = out.narrow(0, 0, 1);
    d_sl = out.narrow(0, 1, 1);
  }
  // Pass 2: every element's gradient, summed per column and per row in fixed order.
  const int64_t bands = (rows + kBandRows - 1) / kBandRows;
  const int64_t tiles = (cols + kTileCols - 1) / kTileCols;
  at::Tensor partial_col = col.defined() ? at::empty({bands, cols}, w.options()) : at::Tensor();
  at::Tensor partial_row = row.defined() ? at::empty({rows, tiles}, w.options()) : at::Tensor();
  const dim3 grid(static_cast<unsigned>(bands), static_cast<unsigned>(tiles));
  with_float_or_bf16(gy.scalar_type(), "fused_weight_quantize gradient", [&](auto g) {
    using G = decltype(g);
    scaled_grads_kernel<G><<<grid, kBandWarps * 32, 0, c10::cuda::getCurrentCUDAStream()>>>(
        w.data_ptr<float>(), reinterpret_cast<const G*>(gy.data_ptr()), rows, cols, t,
        stats.data_ptr<float>(), shares.data_ptr<float>(), per_row ? 1 : 0, c,
        col.defined() ? partial_col.data_ptr<float>() : nullptr,
        row.defined() ? partial_row.data_ptr<float>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (col.defined()) d_col = partial_col.sum(0);  // [cols]
  if (row.defined()) d_row = partial_row.sum(1);  // [rows]
  return {d_col, d_row, d_su, d_sl};
}

}  // namespace mq
