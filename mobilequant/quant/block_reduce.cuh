// mobilequant/quant/block_reduce.cuh
// Block-wide reductions shared by the fused kernels (fused_*_quantize_cuda.cu): xor shuffles in
// each warp, then the warps' results combined in warp order by every thread. The order is fixed,
// so the same inputs give the same bits.
#pragma once

namespace mq {

/// The reductions' operations.
struct SumOp {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct MinOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fminf(a, b); }
};

/// Reduces each of kN values of V with Op over the warp by xor shuffles; every lane gets the
/// same results (each step combines the same two values in every lane of a pair).
template <typename Op, int kN, typename V>
__device__ __forceinline__ void warp_reduce(V (&v)[kN]) {
  const Op op;
  for (int k = 0; k < kN; ++k)
    for (int off = 16; off > 0; off >>= 1) v[k] = op(v[k], __shfl_xor_sync(0xffffffffu, v[k], off));
}

/// Reduces each of kN values of V with Op over the block (a multiple of 32 threads, at most
/// 1024); every thread gets the results. Safe to call again right away: it waits for the
/// previous call's readers before writing its shared slots.
template <typename Op, int kN, typename V>
__device__ __forceinline__ void block_reduce(V (&v)[kN]) {
  __shared__ V part[kN][32];
  const Op op;
  warp_reduce<Op>(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  __syncthreads();  // part may still be read by a previous call
  if (lane == 0)
    for (int k = 0; k < kN; ++k) part[k][warp] = v[k];
  __syncthreads();
  for (int k = 0; k < kN; ++k) {
    V r = part[k][0];
    for (int w = 1; w < warps; ++w) r = op(r, part[k][w]);
    v[k] = r;
  }
}

}  // namespace mq
