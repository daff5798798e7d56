// tests/cuda_emu/emu.h
// A small CPU emulation of the CUDA features the fused kernels of mobilequant/quant/*_cuda.cu
// use, so that their source runs, unchanged, where no GPU is: one std::thread per CUDA thread
// of a block, the grid's blocks one after another on the same threads; __shared__ becomes
// static storage (one block runs at a time); __syncthreads is a barrier of the block; the warp
// shuffles exchange through per-warp slots between two barriers of the warp. The fp32
// intrinsics are the IEEE operations they name (built with -ffp-contract=off). Not emulated:
// the launch syntax (the checks call the kernels through emu_launch), streams, atomics, and the
// device's expf (the host's may differ in the last ulp). Warps that return early must not take
// part in a __syncthreads afterwards (true of CUDA as well). Build with -fno-strict-aliasing:
// CUDA code reinterprets memory through pointer casts (16-byte vector loads).
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static

using std::isnan;

inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float v) {
  unsigned u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float b) { return 1.0f / b; }

/// The running launch's synchronisation and exchange state.
struct EmuLaunch {
  std::unique_ptr<std::barrier<>> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> slots;
  std::vector<float> dynamic_shared;
};
inline EmuLaunch emu;
inline float* emu_dynamic_shared() { return emu.dynamic_shared.data(); }

inline void __syncthreads() { emu.block->arrive_and_wait(); }

/// The value lane `src` of this warp passed in.
template <typename V>
V emu_exchange(V v, unsigned src_lane) {
  static_assert(sizeof(V) <= sizeof(uint64_t), "one slot per value");
  const unsigned t = threadIdx.x, w = t / 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  emu.slots[t] = bits;
  emu.warps[w]->arrive_and_wait();
  const uint64_t got = emu.slots[w * 32 + src_lane];
  emu.warps[w]->arrive_and_wait();
  V r;
  std::memcpy(&r, &got, sizeof(V));
  return r;
}
template <typename V>
V __shfl_xor_sync(unsigned, V v, int off) {
  return emu_exchange(v, (threadIdx.x % 32) ^ static_cast<unsigned>(off));
}
template <typename V>
V __shfl_down_sync(unsigned, V v, int off) {
  const unsigned lane = threadIdx.x % 32;
  return emu_exchange(v, lane + off < 32 ? lane + off : lane);
}

/// kernel<<<grid, block, shared_bytes>>>(args...), emulated; returns when every block ran (the
/// grid's x index fastest).
template <typename F, typename... A>
void emu_launch(dim3 grid, unsigned block, size_t shared_bytes, F kernel, A... args) {
  gridDim = grid;
  blockDim.x = block;
  emu.dynamic_shared.assign(shared_bytes / sizeof(float) + 1, 0.0f);
  emu.slots.assign(block, 0);
  emu.block = std::make_unique<std::barrier<>>(block);
  emu.warps.clear();
  for (unsigned w = 0; w * 32 < block; ++w)
    emu.warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, block - w * 32)));
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < block; ++t)
    threads.emplace_back([=] {
      threadIdx.x = t;
      for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          blockIdx.x = bx;
          blockIdx.y = by;
          kernel(args...);
          emu.block->arrive_and_wait();  // the next block reuses the shared storage
        }
      }
    });
  for (auto& th : threads) th.join();
}
template <typename F, typename... A>
void emu_launch(unsigned grid, unsigned block, size_t shared_bytes, F kernel, A... args) {
  emu_launch(dim3{grid, 1, 1}, block, shared_bytes, kernel, args...);
}
