#pragma once
// Shared helpers of the kernels/*.cu files: element conversions, 16-byte vector loads/stores,
// DType dispatch and the host-side error checks. CUDA only; not for .cpp files (use kernels.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

namespace gear::kernels::detail {

// ---- element conversions (float32 arithmetic, storage in T) ----
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Rounds a float32 value to T and back (what storing an intermediate in the dtype does).
template <typename T> __device__ __forceinline__ float round_f(float x) { return to_f(from_f<T>(x)); }

// ---- 16-byte vectors: kVec<T> elements ----
template <typename T> inline constexpr int kVec = 16 / static_cast<int>(sizeof(T));

__device__ __forceinline__ float2 unpack2(uint32_t u, __half) { return __half22float2(*reinterpret_cast<const __half2*>(&u)); }
__device__ __forceinline__ float2 unpack2(uint32_t u, __nv_bfloat16) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
}
__device__ __forceinline__ uint32_t pack2(float a, float b, __half) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(float a, float b, __nv_bfloat16) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

template <typename T> __device__ __forceinline__ void unpack(const uint4& u, float (&f)[kVec<T>]) {
  if constexpr (sizeof(T) == 4) {
    f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
  } else {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 p = unpack2(w[i], T{});
      f[2 * i] = p.x;
      f[2 * i + 1] = p.y;
    }
  }
}

template <typename T> __device__ __forceinline__ uint4 pack(const float (&f)[kVec<T>]) {
  uint4 u;
  if constexpr (sizeof(T) == 4) {
    u.x = __float_as_uint(f[0]); u.y = __float_as_uint(f[1]); u.z = __float_as_uint(f[2]); u.w = __float_as_uint(f[3]);
  } else {
    u.x = pack2(f[0], f[1], T{}); u.y = pack2(f[2], f[3], T{}); u.z = pack2(f[4], f[5], T{}); u.w = pack2(f[6], f[7], T{});
  }
  return u;
}

// Read-only 16-byte load (p 16-byte aligned) through the non-coherent path.
__device__ __forceinline__ uint4 ldg16(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

template <typename T> __device__ __forceinline__ void load_vec(const T* p, float (&f)[kVec<T>]) { unpack<T>(ldg16(p), f); }
template <typename T> __device__ __forceinline__ void store_vec(T* p, const float (&f)[kVec<T>]) {
  *reinterpret_cast<uint4*>(p) = pack<T>(f);
}

// ---- warp / block reductions ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? partial[lane] : 0.f;
  t = warp_sum(t);
  return t;
}

// ---- host side ----
template <typename T> struct Tag { using type = T; };

// Calls f(Tag<T>{}) with T the storage type of t.
template <typename F> void dispatch(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(Tag<float>{}); return;
    case DType::F16: f(Tag<__half>{}); return;
    case DType::BF16: f(Tag<__nv_bfloat16>{}); return;
  }
  throw std::runtime_error("gear::kernels: unknown dtype");
}

[[noreturn]] inline void fail(const char* kernel, const std::string& what) {
  throw std::runtime_error(std::string("gear::kernels::") + kernel + ": " + what);
}

// After every launch: a launch error (bad configuration, no device, an earlier sticky fault) throws.
inline void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail(kernel, std::string("launch failed: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// Opts `kernel` in to `bytes` of dynamic shared memory, once per device; `done` (guarded by `mu`) holds the
// devices already done for this kernel, kept by the caller: one pair per kernel instantiation.
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes, std::mutex& mu, std::set<int>& done, const char* who = "compressed_attention") {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(dev)) return;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e != cudaSuccess)
    fail(who, std::string("cannot allow the shared memory it needs: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
  done.insert(dev);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }
inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
__host__ __device__ inline long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

}  // namespace gear::kernels::detail
