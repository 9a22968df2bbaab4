#pragma once
// What the two flash-decoding attention kernels (full cache, compressed cache) share: the second pass
// that merges a row's per-split partial outputs, and the device facts that size their grids.
#include <cuda_runtime.h>

#include <cmath>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kernels/dtype.cuh"

namespace gear::kernels::detail {

// Where a split kernel's block sits in its grid (n_splits, nkv * n_sub, B): split, kv head kvh, its tile of
// GT query heads (the first h0, of which nq are real) and row b. On sm_90 it first lets the grid's combine
// kernel be scheduled; that one waits for this grid with griddepcontrol.wait.
struct SplitBlock {
  int split, kvh, b, h0, nq;
};
// The decode of a position (split, y = kv head x n_sub + query-head tile, row b) of that grid; v7's stream-K segments
// name their rows this way too. (y unsigned, as blockIdx.y: ptxas sizes the split kernels by this division.)
template <int GT> __device__ __forceinline__ SplitBlock split_block_at(int split, unsigned y, int b, int group, int n_sub) {
  const int kvh = y / n_sub, sub = y - kvh * n_sub;
  return {split, kvh, b, kvh * group + sub * GT, min(GT, group - sub * GT)};
}
// split_block_position: the grid's decode alone, for kernels on the same grid shape that trigger nothing.
template <int GT> __device__ __forceinline__ SplitBlock split_block_position(int group, int n_sub) {
  return split_block_at<GT>(static_cast<int>(blockIdx.x), blockIdx.y, static_cast<int>(blockIdx.z), group, n_sub);
}
template <int GT> __device__ __forceinline__ SplitBlock begin_split_block(int group, int n_sub) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
  return split_block_position<GT>(group, n_sub);
}
// First thing in a combine kernel (launch_combine, a programmatic dependent of the split grid on sm_90): waits
// until the split grid has finished and its partial outputs are visible. A no-op before sm_90.
__device__ __forceinline__ void wait_for_split_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// One output row of HD threads (d = threadIdx.x): out[d] = sum_s 2^(lse_s - M) o_s[d] / sum_s 2^(lse_s - M)
// over the `live` splits, M the largest lse. `s_w` is shared scratch of at least `live` floats.
template <typename T, int HD>
__device__ __forceinline__ void merge_splits(const float* lse, const float* o, int live, float* s_w, T* out, int d) {
  float mx = -INFINITY;
  for (int s = d; s < live; s += HD) mx = fmaxf(mx, lse[s]);
  __shared__ float red[HD / 32];  // the block max, one partial per warp
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if ((d & 31) == 0) red[d >> 5] = mx;
  __syncthreads();
  mx = red[0];
#pragma unroll
  for (int w = 1; w < HD / 32; ++w) mx = fmaxf(mx, red[w]);
  for (int s = d; s < live; s += HD) s_w[s] = exp2f(lse[s] - mx);
  __syncthreads();
  float L = 0.f, A = 0.f;
#pragma unroll 8
  for (int s = 0; s < live; ++s) {
    L += s_w[s];
    A = fmaf(s_w[s], o[static_cast<size_t>(s) * HD + d], A);
  }
  out[d] = from_f<T>(A / L);
}

// Launches a combine kernel on grid (nh, B) with HD threads and n_splits floats of dynamic shared memory
// (merge_splits' scratch), as a programmatic dependent launch when `pdl` (sm_90+: its grid is set up while
// the split grid runs); throws naming `what` when the launch fails.
template <typename... Params, typename... Args>
void launch_combine(const char* what, void (*kernel)(Params...), int nh, int B, int HD, int n_splits, bool pdl,
                    cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(nh), static_cast<unsigned>(B));
  cfg.blockDim = dim3(static_cast<unsigned>(HD));
  cfg.dynamicSmemBytes = static_cast<size_t>(n_splits) * sizeof(float);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) fail(what, std::string("launch failed: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
  check_launch(what);
}

// The current device's SM count and whether it has programmatic dependent launch (sm_90+), cached per
// device (inline: one cache for every kernel file).
struct DeviceInfo {
  int sms = 132;
  bool pdl = false;
};
inline DeviceInfo device_info() {
  static std::mutex mu;
  static std::vector<DeviceInfo> cache;
  static std::vector<bool> known;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int>(cache.size()) <= dev) {
    cache.resize(dev + 1);
    known.resize(dev + 1, false);
  }
  if (!known[dev]) {
    int n = 0, major = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && n > 0) cache[dev].sms = n;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess) cache[dev].pdl = major >= 9;
    cudaGetLastError();
    known[dev] = true;
  }
  return cache[dev];
}

}  // namespace gear::kernels::detail
