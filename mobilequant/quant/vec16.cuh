// mobilequant/quant/vec16.cuh
// 16-byte vectors of kVec values of T (8 bf16 / fp16, 4 fp32) for the fused kernels
// (fused_*_quantize_cuda.cu): one load or store moves a whole vector; values are handed out as
// fp32 and packed back as T.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace mq {

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

/// The kVec elements of a raw vector, as fp32.
template <typename T, int kVec>
__device__ __forceinline__ void unpack_vec(const uint4& raw, float (&out)[kVec]) {
#pragma unroll
  for (int v = 0; v < kVec; ++v) out[v] = raw_at<T>(raw, v);
}

/// kVec fp32 values as T, packed in one 16-byte vector.
template <typename T, int kVec>
__device__ __forceinline__ uint4 pack_vec(const float (&in)[kVec]) {
  static_assert(kVec * sizeof(T) == 16, "one 16-byte vector");
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int v = 0; v < kVec; ++v) e[v] = static_cast<T>(in[v]);
  return raw;
}

/// Stores kVec fp32 values as T at 16-byte-aligned p.
template <typename T, int kVec>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float (&in)[kVec]) {
  *reinterpret_cast<uint4*>(p) = pack_vec<T, kVec>(in);
}

/// True if every pointer is 16-byte aligned (host side).
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

}  // namespace mq
