// GEAR's power iteration for one small block per thread block: the residual R [T, hd] of one head in shared memory,
// every round (CholeskyQR2 of P, Q = R·P, CholeskyQR2 of Q, P = Rᵀ·Q) and the Rayleigh–Ritz truncation inside, fp16
// A and B out. The same steps as core's LowRankSpec::Linalg::SyncFree path (low_rank.cpp), which runs them as ~50
// ATen ops per call: for a streamed block (T = 64) the host's time to issue those ops was most of a compression.
#include <cuda_fp16.h>

#include "kernels/block_cholqr.cuh"
#include "kernels/dtype.cuh"
#include "kernels/small_dense.h"

namespace gear::kernels {
namespace {
using namespace detail;

constexpr int kPiThreads = 256;
constexpr int kPiMaxW = 16;
constexpr std::size_t kPiMaxSmem = 160 * 1024;  // R, P and Q in dynamic shared memory (sm_90 allows 227 KB)

// R's rows padded to hd + 1 floats: Q = R·P reads 8 rows at one column per warp, which at a stride of hd (a multiple of
// 32 banks) were 8-way bank conflicts — most of the kernel's shared-memory traffic.
std::size_t pi_smem_bytes(long long T, long long hd, long long w) { return static_cast<std::size_t>(T * (hd + 1) + (T + hd) * w) * 4; }

// One block per head. smem: R [T][hd + 1], P [hd][w], Q [T][w] (float32). FW > 0: w == FW, a compile-time width, so
// thread 0's Cholesky factorisations (12 a call at 3 iterations) run in registers; 0: any w. At 4 blocks an SM: 64
// registers, which the width-4 instantiation needs without spilling.
template <int FW>
__global__ void __launch_bounds__(kPiThreads, 4) power_iteration_kernel(const float* __restrict__ R, const float* __restrict__ P0,
                                                                     int T, int hd, int w, int r, int iters, __half* A, __half* B) {
  extern __shared__ float smem[];
  __shared__ double g[kPiMaxW * kPiMaxW], evals[kPiMaxW], evecs[kPiMaxW * kPiMaxW];
  __shared__ float W[kPiMaxW * kPiMaxW], ua[kPiMaxW * kPiMaxW], ub[kPiMaxW * kPiMaxW];
  if constexpr (FW > 0) w = FW;
  const int ld = hd + 1;
  float* rs = smem;
  float* ps = rs + T * ld;
  float* qs = ps + hd * w;
  const long long head = blockIdx.x;
  const int tid = threadIdx.x;
  for (int i = tid; i < T * hd; i += kPiThreads) {
    const int t = i / hd;
    rs[t * ld + (i - t * hd)] = R[head * T * hd + i];
  }
  for (int i = tid; i < hd * w; i += kPiThreads) ps[i] = P0[head * hd * w + i];
  __syncthreads();
  for (int it = 0; it < iters; ++it) {
    block_cholqr2<kPiThreads, kPiMaxW, FW>(ps, ps, hd, w, g, W);
    for (int i = tid; i < T * w; i += kPiThreads) {  // Q = R·P
      const int t = i / w, j = i - t * w;
      float acc = 0;
      for (int d = 0; d < hd; ++d) acc = fmaf(rs[t * ld + d], ps[d * w + j], acc);
      qs[i] = acc;
    }
    __syncthreads();
    block_cholqr2<kPiThreads, kPiMaxW, FW>(qs, qs, T, w, g, W);
    for (int i = tid; i < hd * w; i += kPiThreads) {  // P = Rᵀ·Q
      const int d = i / w, j = i - d * w;
      float acc = 0;
      for (int t = 0; t < T; ++t) acc = fmaf(rs[t * ld + d], qs[t * w + j], acc);
      ps[i] = acc;
    }
    __syncthreads();
  }
  __half* a = A + head * T * r;
  __half* b = B + head * r * hd;
  if (w == r) {  // GEAR's reference: A = Q, B = Pᵀ
    for (int i = tid; i < T * r; i += kPiThreads) a[i] = __float2half_rn(qs[i]);
    for (int i = tid; i < r * hd; i += kPiThreads) {
      const int j = i / hd, d = i - j * hd;
      b[i] = __float2half_rn(ps[d * w + j]);
    }
    return;
  }
  // Rayleigh–Ritz: M = Qᵀ·R = Pᵀ [w, hd]; eigenpairs of M·Mᵀ (float64); A = Q·U_r·S_r, B = S_r⁻¹·U_rᵀ·M, with the
  // directions below 1e-6 of the largest singular value left out of B (as truncate_in_basis_sync_free).
  const int lane = tid & 31, warp = tid >> 5;
  for (int p = warp; p < w * w; p += kPiThreads / 32) {
    const int i = p / w, j = p - i * w;
    double s = 0;
    for (int d = lane; d < hd; d += 32) s += static_cast<double>(ps[d * w + i]) * static_cast<double>(ps[d * w + j]);
    for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) g[i * w + j] = s;
  }
  __syncthreads();
  if (tid == 0) {
    // (In shared memory even with a fixed width: once a call, and in registers its arrays cost the whole kernel's
    // occupancy.)
    dense::symmetric_eigen(g, w, evals, evecs);
    const double s0 = sqrt(fmax(evals[0], 0.0));
    for (int j = 0; j < r; ++j) {
      const double s = sqrt(fmax(evals[j], 0.0)), inv = s > s0 * 1e-6 ? 1 / s : 0;
      for (int i = 0; i < w; ++i) {
        ua[i * r + j] = static_cast<float>(evecs[i * w + j] * s);
        ub[i * r + j] = static_cast<float>(evecs[i * w + j] * inv);
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < T * r; i += kPiThreads) {
    const int t = i / r, j = i - t * r;
    float acc = 0;
    for (int k = 0; k < w; ++k) acc = fmaf(qs[t * w + k], ua[k * r + j], acc);
    a[i] = __float2half_rn(acc);
  }
  for (int i = tid; i < r * hd; i += kPiThreads) {
    const int j = i / hd, d = i - j * hd;
    float acc = 0;
    for (int k = 0; k < w; ++k) acc = fmaf(ub[k * r + j], ps[d * w + k], acc);
    b[i] = __float2half_rn(acc);
  }
}

}  // namespace

bool fused_power_iteration_fits(long long T, long long hd, int w) {
  return T >= 1 && hd >= 1 && w >= 1 && w <= kPiMaxW && w <= T && w <= hd && pi_smem_bytes(T, hd, w) <= kPiMaxSmem;
}

void fused_power_iteration(const float* R, const float* P0, int n, int T, int hd, int w, int r, int iters, void* A, void* B,
                           void* stream) {
  if (n < 0 || r < 1 || r > w || iters < 1 || !fused_power_iteration_fits(T, hd, w))
    fail("fused_power_iteration", "invalid sizes n=" + std::to_string(n) + " T=" + std::to_string(T) + " hd=" +
                                      std::to_string(hd) + " w=" + std::to_string(w) + " r=" + std::to_string(r) +
                                      " iters=" + std::to_string(iters) + " (see fused_power_iteration_fits)");
  if (n == 0) return;
  if (!R || !P0 || !A || !B) fail("fused_power_iteration", "null pointer");
  const std::size_t smem = pi_smem_bytes(T, hd, w);
  // Width 4: a streamed block's basis at rank 2, oversampled by the rank (the presets'). (Width 8 in registers
  // spilled at this occupancy.)
  auto launch = [&](auto kernel) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) fail("fused_power_iteration", std::string("shared memory: ") + cudaGetErrorString(e));
    kernel<<<static_cast<unsigned>(n), kPiThreads, smem, as_stream(stream)>>>(R, P0, T, hd, w, r, iters, static_cast<__half*>(A),
                                                                              static_cast<__half*>(B));
  };
  if (w == 4)
    launch(power_iteration_kernel<4>);
  else
    launch(power_iteration_kernel<0>);
  check_launch("fused_power_iteration");
}

}  // namespace gear::kernels
