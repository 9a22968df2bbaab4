#pragma once
// CholeskyQR2 by one thread block (kernels/small_dense.h has the algorithm): x [m, w] float32, row-major, in global
// or shared memory. Used by orthonormalize (one matrix per block, global) and the fused power iteration (shared).
#include "kernels/dtype.cuh"
#include "kernels/small_dense.h"

namespace gear::kernels::detail {

// dst = src orthonormalised column by column (dst may be src): the Gram entries by warps over the pairs (float64
// sums of float32 products), the w×w factorisation by one thread, then each thread multiplies its rows (read whole
// first). g: w*w doubles and W: w*w floats of shared memory; w <= MaxW. src must be visible to the whole block
// (the caller synchronises after writing it); returns synchronised.
// FixedW > 0: w == FixedW, known to the compiler, and the factorisation runs on a copy in registers: thread 0 alone
// runs its dependent chain (the rest of the block waits at the barrier), and from shared memory each step paid a
// load's latency (the fused power iteration's round was mostly that wait).
template <int W_> __device__ __forceinline__ void orthonormalizer_of(double* g, int w, float* W) {
  if constexpr (W_ > 0) {
    double lg[W_ * W_];
    float lw[W_ * W_];
#pragma unroll
    for (int i = 0; i < W_ * W_; ++i) lg[i] = g[i];
    dense::cholesky_orthonormalizer(lg, W_, lw);
#pragma unroll
    for (int i = 0; i < W_ * W_; ++i) W[i] = lw[i];
  } else {
    dense::cholesky_orthonormalizer(g, w, W);
  }
}

template <int Threads, int MaxW, int FixedW = 0>
__device__ void block_cholqr2(const float* src, float* dst, long long m, int w, double* g, float* W) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, pairs = w * (w + 1) / 2;
  for (int pass = 0; pass < 2; ++pass) {
    const float* in = pass == 0 ? src : dst;
    for (int p = warp; p < pairs; p += Threads / 32) {
      int i = 0;  // pair p = (i, j), j <= i: rows of the lower triangle hold 1, 2, 3, ... pairs
      while ((i + 1) * (i + 2) / 2 <= p) ++i;
      const int j = p - i * (i + 1) / 2;
      double s = 0;
      for (long long t = lane; t < m; t += 32) s += static_cast<double>(in[t * w + i]) * static_cast<double>(in[t * w + j]);
      for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) g[i * w + j] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) orthonormalizer_of<FixedW>(g, w, W);
    __syncthreads();
    for (long long t = threadIdx.x; t < m; t += Threads) {
      float row[MaxW];
      for (int k = 0; k < w; ++k) row[k] = in[t * w + k];
      for (int c = 0; c < w; ++c) {
        float acc = 0;
        for (int k = 0; k <= c; ++k) acc = fmaf(row[k], W[k * w + c], acc);
        dst[t * w + c] = acc;
      }
    }
    __syncthreads();
  }
}

}  // namespace gear::kernels::detail
