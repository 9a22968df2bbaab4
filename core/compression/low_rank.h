#pragma once
// GEAR's low-rank term L: per kv head, a rank-r approximation A·B of the quantization residual
// [T, hd], found by GEAR's power iteration (or a truncated SVD, for comparison).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace gear {

struct LowRankFactors {
  int64_t rank = 0;
  at::Tensor a;  // fp16 [nkv, T, rank]
  at::Tensor b;  // fp16 [nkv, rank, hd]
  int64_t bytes() const;
};

struct LowRankSpec {
  int64_t rank = 0;  // 0 = no low-rank term
  int power_iters = 3;
  bool exact_svd = false;  // truncated SVD instead of power iteration (for comparison)
  uint64_t seed = 0;       // random start (deterministic for a given seed)
  // Extra basis columns during power iteration, truncated away at the end (randomized SVD):
  // -1 = as many as the rank; 0 = GEAR's reference (A = Q, B = Pᵀ directly). Capped at min(T, hd).
  int64_t oversample = -1;
  // How the small factorisations of the power iteration run (exact_svd always uses ATen's linalg_svd):
  //  - Lapack: ATen's linalg_qr (Householder) and linalg_svd (Rayleigh–Ritz). On CUDA that is cuSOLVER, which
  //    loops over the batch (one launch per head and row) and checks its info flags on the host (a sync).
  //  - SyncFree: CholeskyQR2 with float64 Gram matrices, and Rayleigh–Ritz from a Jacobi eigensolver of the
  //    small Gram matrix (kernels/small_dense.h). On CUDA a fixed number of launches per call (cuBLAS batched
  //    products and one-thread-per-matrix kernels) and no host sync; on the CPU the same code (for tests).
  //  - Auto: SyncFree on CUDA tensors, Lapack on the CPU.
  // The approximation is the same up to rounding (and the factors' column signs).
  enum class Linalg { Auto, Lapack, SyncFree };
  Linalg linalg = Linalg::Auto;
};

// The rank to use for a [T, hd] head: `rank` (>= 0; > hd is a gear::Error, clamped silently to T
// when the sequence is shorter), or, when ratio > 0, ceil(ratio * min(T, hd)) for ratio in (0, 1].
int64_t resolve_rank(int64_t rank, double ratio, int64_t T, int64_t hd);

// residual [nkv, T, hd] float -> factors with A·B ≈ residual per head. spec.rank must be <= hd and
// is clamped to T. Power iteration as GEAR's reference code runs it (P0 = rand[nkv, hd, w];
// iters times { Q = R·P; P = Rᵀ·Q }; A = Q, B = Pᵀ), with P and Q orthonormalised on every round
// and w = rank + oversample columns truncated back to the rank (see low_rank.cpp for why).
// Computed in float32 on the residual's device; A and B stored as fp16.
LowRankFactors low_rank(const at::Tensor& residual, const LowRankSpec& spec);
// What LowRankSpec::Linalg::Auto means in this process (itself Auto by default: SyncFree on CUDA, Lapack on the
// CPU); for benchmarks that compare the two inside caches, which build their specs themselves.
void set_auto_low_rank_linalg(LowRankSpec::Linalg linalg);
// The same for several rows' blocks at once (residuals [rows, nkv, T, hd], one seed per row): one batched
// power iteration over every row's heads; row i's factors equal low_rank(residual[i], spec with seeds[i])
// up to the batched kernels' rounding.
std::vector<LowRankFactors> low_rank_rows(const at::Tensor& residual, const LowRankSpec& spec,
                                          const std::vector<uint64_t>& seeds);
// low_rank_rows' factors as two batched tensors, A [rows, nkv, T, r] and B [rows, nkv, r, hd] fp16 (r = the rank
// clamped to T; 0 gives empty tensors), for callers that store every row at once.
std::pair<at::Tensor, at::Tensor> low_rank_batched(const at::Tensor& residual, const LowRankSpec& spec,
                                                   const std::vector<uint64_t>& seeds);
at::Tensor reconstruct(const LowRankFactors& f);  // float32 [nkv, T, hd]
// Closed form of LowRankFactors::bytes() (rank clamped to T like low_rank does).
int64_t low_rank_bytes(int64_t nkv, int64_t T, int64_t hd, int64_t rank);

}  // namespace gear
