// RMSNorm: one block per row, warp-shuffle reductions, 16-byte loads/stores when the row allows
// (rows of up to 4096 vectors, e.g. dim 32768 in f16, stay in registers), scalar otherwise.
#include "kernels/dtype.cuh"

namespace gear::kernels {
namespace {
using namespace detail;

// out = round_T(x * rsqrt(mean(x^2) + eps)) * w, the product rounded to T once.

// Vector path with the row in registers: thread i holds vectors i, i + blockDim.x, ... (at most PER of
// them) of x and of w, loaded together before the reduction, so the row costs one memory round trip.
template <typename T, int PER>
__global__ void __launch_bounds__(1024) rmsnorm_vec_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                           T* __restrict__ out, int dim, float eps) {
  constexpr int N = kVec<T>;
  const int nvec = dim / N;
  const T* xr = x + static_cast<size_t>(blockIdx.x) * dim;
  T* outr = out + static_cast<size_t>(blockIdx.x) * dim;
  uint4 xv[PER], wv[PER];
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int v = threadIdx.x + p * blockDim.x;
    if (v < nvec) {
      xv[p] = ldg16(xr + v * N);
      wv[p] = ldg16(w + v * N);
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    if (threadIdx.x + p * blockDim.x < nvec) {
      float f[N];
      unpack<T>(xv[p], f);
#pragma unroll
      for (int j = 0; j < N; ++j) ss = fmaf(f[j], f[j], ss);
    }
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int v = threadIdx.x + p * blockDim.x;
    if (v < nvec) {
      float f[N], g[N];
      unpack<T>(xv[p], f);
      unpack<T>(wv[p], g);
#pragma unroll
      for (int j = 0; j < N; ++j) f[j] = round_f<T>(f[j] * inv) * g[j];
      store_vec(outr + v * N, f);
    }
  }
}

// Any row: scalar loads, two passes (the second hits L1/L2).
template <typename T>
__global__ void __launch_bounds__(1024) rmsnorm_scalar_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                              T* __restrict__ out, int dim, float eps) {
  const T* xr = x + static_cast<size_t>(blockIdx.x) * dim;
  T* outr = out + static_cast<size_t>(blockIdx.x) * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float f = to_f(xr[i]);
    ss = fmaf(f, f, ss);
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) outr[i] = from_f<T>(round_f<T>(to_f(xr[i]) * inv) * to_f(w[i]));
}

}  // namespace

void rmsnorm(DType t, const void* x, const void* w, void* out, int rows, int dim, float eps, void* stream) {
  if (rows < 0 || dim <= 0)
    fail("rmsnorm", "invalid shape rows=" + std::to_string(rows) + " dim=" + std::to_string(dim));
  if (rows == 0) return;
  if (!x || !w || !out) fail("rmsnorm", "null pointer");
  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = kVec<T>;
    const T* xp = static_cast<const T*>(x);
    const T* wp = static_cast<const T*>(w);
    T* op = static_cast<T*>(out);
    const dim3 grid(static_cast<unsigned>(rows));
    cudaStream_t s = as_stream(stream);
    const int nvec = dim / N;
    if (dim % N == 0 && aligned16(x) && aligned16(w) && aligned16(out) && nvec <= 4 * 1024) {
      const int threads = nvec >= 1024 ? 1024 : ((nvec + 31) / 32) * 32;
      const int per = (nvec + threads - 1) / threads;
      if (per == 1)
        rmsnorm_vec_kernel<T, 1><<<grid, threads, 0, s>>>(xp, wp, op, dim, eps);
      else if (per == 2)
        rmsnorm_vec_kernel<T, 2><<<grid, threads, 0, s>>>(xp, wp, op, dim, eps);
      else
        rmsnorm_vec_kernel<T, 4><<<grid, threads, 0, s>>>(xp, wp, op, dim, eps);
    } else {
      const int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
      rmsnorm_scalar_kernel<T><<<grid, threads, 0, s>>>(xp, wp, op, dim, eps);
    }
  });
  check_launch("rmsnorm");
}

}  // namespace gear::kernels
