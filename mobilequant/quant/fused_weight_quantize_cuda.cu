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

// ---------------------------------------------------------------- per row: one block each

__global__ void forward_rows_kernel(const float* __restrict__ w, float* __restrict__ y,
                                    float* __restrict__ stats, int64_t cols,
                                    const float* __restrict__ su, const float* __restrict__ sl,
                                    Codes c) {
  const int64_t row = blockIdx.x;
  const float* wr = w + row * cols;
  float* yr = y + row * cols;
  float mn = kPosInf, mx = kNegInf;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = wr[j];
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
    yr[j] = fq_value(wr[j], s, o, c.qmin, c.qmax);
}

/// d_su / d_sl: [rows] (written only with LWC).
__global__ void backward_rows_kernel(const float* __restrict__ w, const float* __restrict__ gy,
                                     float* __restrict__ gx, const float* __restrict__ stats,
                                     float* __restrict__ d_su, float* __restrict__ d_sl,
                                     int64_t cols, Codes c) {
  const int64_t row = blockIdx.x;
  const float* st = stats + row * kStats;
  const float mn0 = st[kMin0], mx0 = st[kMax0], o = st[kOffset];
  const Divisor s = divisor(st[kScale]);
  const float* wr = w + row * cols;
  const float* gr = gy + row * cols;
  float* gxr = gx + row * cols;
  float acc = 0.0f;
  int n_max = 0, n_min = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = wr[j];
    gxr[j] = fq_backward_scale(v, gr[j], s, o, c.qmin, c.qmax, acc);
    n_max += v == mx0;
    n_min += v == mn0;
  }
  block_sums(acc, n_max, n_min);
  const Chain ch = chain(st, acc, n_max, n_min, c);  // every thread: same inputs, same result
  if (threadIdx.x == 0 && c.lwc) {
    d_su[row] = ch.d_sig_up;
    d_sl[row] = ch.d_sig_low;
  }
  // The same thread wrote gxr[j] above: no barrier needed for its own elements.
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = wr[j];
    if (v == mx0) gxr[j] = __fadd_rn(gxr[j], ch.inc_max);
    if (v == mn0) gxr[j] = __fadd_rn(gxr[j], ch.inc_min);
  }
}

// ---------------------------------------------------------------- per tensor: grid-wide

/// partial: [2, gridDim.x] (min, then max per block).
__global__ void min_max_partial_kernel(const float* __restrict__ w, int64_t n,
                                       float* __restrict__ partial) {
  float mn = kPosInf, mx = kNegInf;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float v = w[i];
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
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

__global__ void apply_tensor_kernel(const float* __restrict__ w, float* __restrict__ y,
                                    int64_t n, const float* __restrict__ stats, Codes c) {
  const Divisor s = divisor(stats[kScale]);
  const float o = stats[kOffset];
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    y[i] = fq_value(w[i], s, o, c.qmin, c.qmax);
}

/// partial_f: [gridDim.x] d scale sums; partial_n: [2, gridDim.x] ties of max, then of min.
__global__ void backward_partial_kernel(const float* __restrict__ w, const float* __restrict__ gy,
                                        float* __restrict__ gx, int64_t n,
                                        const float* __restrict__ stats,
                                        float* __restrict__ partial_f,
                                        int* __restrict__ partial_n, Codes c) {
  const float mn0 = stats[kMin0], mx0 = stats[kMax0], o = stats[kOffset];
  const Divisor s = divisor(stats[kScale]);
  float acc = 0.0f;
  int n_max = 0, n_min = 0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float v = w[i];
    gx[i] = fq_backward_scale(v, gy[i], s, o, c.qmin, c.qmax, acc);
    n_max += v == mx0;
    n_min += v == mn0;
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

/// Blocks of a grid-wide pass over n elements: at most 1024 (the partials stay small and the
/// count is fixed by n, so the sums are reproducible).
int tensor_blocks(int64_t n) {
  const int64_t want = (n + kThreads * 4 - 1) / (kThreads * 4);
  return static_cast<int>(want < 1 ? 1 : (want < 1024 ? want : 1024));
}

const float* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> fused_weight_quantize_forward_cuda(
    const at::Tensor& wg, const at::Tensor& sig_up, const at::Tensor& sig_low, int64_t qmin,
    int64_t qmax, bool symmetric, bool per_row) {
  const c10::cuda::CUDAGuard guard(wg.device());
  const int64_t rows = wg.size(0), cols = wg.size(1), n = wg.numel();
  const Codes c = make_codes(qmin, qmax, symmetric, sig_up.defined());
  const int64_t groups = per_row ? rows : 1;
  at::Tensor y = at::empty_like(wg);                                    // [rows, cols]
  at::Tensor stats = at::empty({groups, kStats}, wg.options());         // [groups, kStats]
  if (n == 0) return {y, stats};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (per_row) {
    forward_rows_kernel<<<static_cast<unsigned>(rows), row_threads(cols), 0, stream>>>(
        wg.data_ptr<float>(), y.data_ptr<float>(), stats.data_ptr<float>(), cols,
        ptr_or_null(sig_up), ptr_or_null(sig_low), c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {y, stats};
  }
  const int blocks = tensor_blocks(n);
  at::Tensor partial = at::empty({2, blocks}, wg.options());  // [2, blocks]
  min_max_partial_kernel<<<blocks, kThreads, 0, stream>>>(wg.data_ptr<float>(), n,
                                                          partial.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  params_tensor_kernel<<<1, kThreads, 0, stream>>>(partial.data_ptr<float>(), blocks,
                                                   stats.data_ptr<float>(), ptr_or_null(sig_up),
                                                   ptr_or_null(sig_low), c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  apply_tensor_kernel<<<blocks, kThreads, 0, stream>>>(wg.data_ptr<float>(), y.data_ptr<float>(),
                                                       n, stats.data_ptr<float>(), c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_weight_quantize_backward_cuda(
    const at::Tensor& wg, const at::Tensor& grad, const at::Tensor& stats, int64_t qmin,
    int64_t qmax, bool symmetric, bool lwc, bool per_row) {
  const c10::cuda::CUDAGuard guard(wg.device());
  const at::Tensor gy = grad.scalar_type() == at::kFloat && grad.is_contiguous()
                            ? grad
                            : grad.to(at::kFloat).contiguous();  // [rows, cols]
  const int64_t rows = wg.size(0), cols = wg.size(1), n = wg.numel();
  const Codes c = make_codes(qmin, qmax, symmetric, lwc);
  const int64_t groups = per_row ? rows : 1;
  at::Tensor gx = at::empty_like(wg);  // [rows, cols]
  at::Tensor d_su, d_sl;               // [groups] each with LWC, else undefined
  if (lwc && per_row) {
    d_su = at::empty({groups}, wg.options());
    d_sl = at::empty({groups}, wg.options());
  }
  if (n == 0) {
    if (lwc) {
      d_su = at::zeros({groups}, wg.options());
      d_sl = at::zeros({groups}, wg.options());
    }
    return {gx, d_su, d_sl};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (per_row) {
    backward_rows_kernel<<<static_cast<unsigned>(rows), row_threads(cols), 0, stream>>>(
        wg.data_ptr<float>(), gy.data_ptr<float>(), gx.data_ptr<float>(),
        stats.data_ptr<float>(), lwc ? d_su.data_ptr<float>() : nullptr,
        lwc ? d_sl.data_ptr<float>() : nullptr, cols, c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {gx, d_su, d_sl};
  }
  const int blocks = tensor_blocks(n);
  at::Tensor partial_f = at::empty({blocks}, wg.options());                       // [blocks]
  at::Tensor partial_n = at::empty({2, blocks}, wg.options().dtype(at::kInt));    // [2, blocks]
  at::Tensor out = at::empty({4}, wg.options());                                  // [4]
  backward_partial_kernel<<<blocks, kThreads, 0, stream>>>(
      wg.data_ptr<float>(), gy.data_ptr<float>(), gx.data_ptr<float>(), n,
      stats.data_ptr<float>(), partial_f.data_ptr<float>(), partial_n.data_ptr<int>(), c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  chain_tensor_kernel<<<1, kThreads, 0, stream>>>(partial_f.data_ptr<float>(),
                                                  partial_n.data_ptr<int>(), blocks,
                                                  stats.data_ptr<float>(), out.data_ptr<float>(),
                                                  c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  ties_tensor_kernel<<<blocks, kThreads, 0, stream>>>(wg.data_ptr<float>(), gx.data_ptr<float>(),
                                                      n, stats.data_ptr<float>(),
                                                      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (lwc) {
    d_su = out.narrow(0, 0, 1);
    d_sl = out.narrow(0, 1, 1);
  }
  return {gx, d_su, d_sl};
}

}  // namespace mq
