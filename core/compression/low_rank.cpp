#include "core/compression/low_rank.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/model/cuda_ops.h"
#include "core/util/error.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"

namespace gear {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

void check_rank(int64_t rank, int64_t hd) {
  require(rank >= 0, "low-rank: rank must be >= 0, got " + str(rank));
  require(rank <= hd, "low-rank: rank " + str(rank) + " exceeds the head dimension " + str(hd));
}

at::Tensor orthonormal(const at::Tensor& x) { return std::get<0>(at::linalg_qr(x, "reduced")); }

std::atomic<LowRankSpec::Linalg> auto_linalg{LowRankSpec::Linalg::Auto};

bool sync_free(const LowRankSpec& spec, const at::Tensor& r) {
  using L = LowRankSpec::Linalg;
  const L l = spec.linalg == L::Auto ? auto_linalg.load() : spec.linalg;
  return l == L::SyncFree || (l == L::Auto && r.is_cuda());
}

// ---- LowRankSpec::Linalg::SyncFree: batched products in ATen, the w×w factorisations in kernels/small_dense ----

// Gram matrices Xᵀ·X [N, w, w] of x [N, m, w] float32, in float64 (products of float32 values are exact there):
// CholeskyQR then orthonormalises columns up to a condition number of ~1e7 (float32 Grams: ~1e3).
at::Tensor gram(const at::Tensor& x) {
  const at::Tensor d = x.to(at::kDouble);
  return at::matmul(d.transpose(1, 2), d).contiguous();
}

// W [N, w, w] float32 with x·W orthonormal, from gram(x) (consumed).
at::Tensor cholesky_orthonormalizer(at::Tensor g) {
  const int n = int(g.size(0)), w = int(g.size(2));
  if (g.is_cuda()) {
    at::Tensor out = at::empty(g.sizes(), g.options().dtype(at::kFloat));
    kernels::cholesky_orthonormalizer(g.data_ptr<double>(), n, w, out.data_ptr<float>(), cuda_ops::current_stream());
    return out;
  }
  at::Tensor out = at::empty(g.sizes(), g.options());
  kernels::ref::cholesky_orthonormalizer(g.data_ptr<double>(), n, w, out.data_ptr<double>());
  return out.to(at::kFloat);
}

// CholeskyQR2: the second pass restores the orthogonality the first loses to float32 rounding of x·W (~1e-7 times
// x's condition number). Numerically dependent columns come out zero (see small_dense.h), where Householder QR
// would return arbitrary unit columns; either way they add nothing to A·B.
at::Tensor orthonormal_sync_free(const at::Tensor& in) {
  if (in.is_cuda() && in.size(2) <= kernels::kMaxFusedOrthonormalize) {  // the same in one launch
    const at::Tensor x = in.contiguous();
    at::Tensor y = at::empty_like(x);
    kernels::orthonormalize(x.data_ptr<float>(), y.data_ptr<float>(), int(x.size(0)), x.size(1), int(x.size(2)),
                            cuda_ops::current_stream());
    return y;
  }
  at::Tensor x = in;
  for (int pass = 0; pass < 2; ++pass) x = at::matmul(x, cholesky_orthonormalizer(gram(x)));
  return x;
}

// Eigenvalues [N, w] (descending) and eigenvectors [N, w, w] (columns) of symmetric a [N, w, w] float64 (consumed).
std::pair<at::Tensor, at::Tensor> symmetric_eigen(at::Tensor a) {
  const int n = int(a.size(0)), w = int(a.size(2));
  at::Tensor evals = at::empty({n, w}, a.options()), evecs = at::empty(a.sizes(), a.options());
  if (a.is_cuda())
    kernels::symmetric_eigen(a.data_ptr<double>(), n, w, evals.data_ptr<double>(), evecs.data_ptr<double>(),
                             cuda_ops::current_stream());
  else
    kernels::ref::symmetric_eigen(a.data_ptr<double>(), n, w, evals.data_ptr<double>(), evecs.data_ptr<double>());
  return {evals, evecs};
}

// truncate_in_basis without an SVD: QtR = U·S·Vᵀ from the eigenpairs of QtR·QtRᵀ = U·S²·Uᵀ (float64), then
// A = Q·U_r·S_r and B = S_r⁻¹·U_rᵀ·QtR = V_rᵀ, the same factors. A direction with σ <= 1e-6·σ_1 holds nothing
// float32 factors can carry: it gets a zero row of B (its column of A is ~0 anyway) rather than 1/σ of noise.
std::pair<at::Tensor, at::Tensor> truncate_in_basis_sync_free(const at::Tensor& Q, const at::Tensor& QtR, int64_t r) {
  const at::Tensor m = QtR.to(at::kDouble);
  const auto [evals, U] = symmetric_eigen(at::matmul(m, m.transpose(1, 2)).contiguous());
  const at::Tensor s = evals.narrow(1, 0, r).clamp_min(0).sqrt();  // [N, r]
  const at::Tensor ur = U.narrow(2, 0, r);                         // [N, w, r]
  const at::Tensor inv = at::where(s > s.narrow(1, 0, 1) * 1e-6, s.reciprocal(), at::zeros_like(s));
  return {at::matmul(Q, (ur * s.unsqueeze(1)).to(at::kFloat)),
          at::matmul((ur * inv.unsqueeze(1)).transpose(1, 2).to(at::kFloat), QtR)};
}

// The random starts [rows * nkv, hd, width] float32, row r's block from seeds[r]: kernels/small_dense.h's
// counter-based uniform [0, 1) stream (like GEAR's torch.rand), bit-identical on every device. On CUDA one launch
// fills every row's start; the seeds travel from pinned memory without making the host wait.
at::Tensor random_starts(const std::vector<uint64_t>& seeds, int64_t nkv, int64_t hd, int64_t width, at::Device dev) {
  const int rows = int(seeds.size());
  const int64_t per_row = nkv * hd * width;
  static_assert(sizeof(uint64_t) == sizeof(unsigned long long), "seeds are passed as unsigned long long");
  const auto* host_seeds = reinterpret_cast<const unsigned long long*>(seeds.data());
  if (!dev.is_cuda()) {
    at::Tensor out = at::empty({rows * nkv, hd, width}, at::kFloat);
    kernels::ref::uniform_start(host_seeds, rows, per_row, out.data_ptr<float>());
    return out.to(dev);
  }
  const at::Tensor s = at::from_blob(const_cast<unsigned long long*>(host_seeds), {rows}, at::kLong)
                           .pin_memory()
                           .to(dev, at::kLong, /*non_blocking=*/true);
  at::Tensor out = at::empty({rows * nkv, hd, width}, at::TensorOptions().dtype(at::kFloat).device(dev));
  kernels::uniform_start(reinterpret_cast<const unsigned long long*>(s.data_ptr<int64_t>()), rows, per_row,
                         out.data_ptr<float>(), cuda_ops::current_stream());
  return out;
}

// Columns carried through the iteration: rank + oversample, at most min(T, hd) (a wider basis
// would not be linearly independent).
int64_t basis_width(int64_t rank, int64_t oversample, int64_t T, int64_t hd) {
  const int64_t extra = oversample < 0 ? rank : oversample;
  return std::min(rank + extra, std::min(T, hd));
}

// Rayleigh–Ritz: the best rank-r approximation of R inside span(Q), from the SVD of the small
// [width, hd] matrix Qᵀ·R (Halko, Martinsson & Tropp 2011, alg. 5.1). Returns A = Q·U_r·S_r, B = V_rᵀ.
std::pair<at::Tensor, at::Tensor> truncate_in_basis(const at::Tensor& Q, const at::Tensor& QtR, int64_t r) {
  const auto [U, S, Vh] = at::linalg_svd(QtR, /*full_matrices=*/false);
  return {at::matmul(Q, U.slice(2, 0, r) * S.slice(1, 0, r).unsqueeze(1)), Vh.slice(1, 0, r)};
}

// GEAR's loop (GEARLM compress_function.py): P0 random [hd, w]; iters times { Q = R·P; P = Rᵀ·Q };
// A = Q, B = Pᵀ. Two changes, both measured on stories260K residuals (see test_low_rank.cpp):
//  - P and Q are orthonormalised on every round, not only the last. The span, and so the result,
//    is the same in exact arithmetic, but without it the columns collapse onto the top singular
//    vector: 10 rounds already lose the 4th direction of a synthetic head, 30 overflow to NaN.
//  - the basis is oversampled (w = rank + oversample) and truncated back to the rank by
//    Rayleigh–Ritz. GEAR's 3 rounds at w = rank are 3.2% (rank 2) / 5.5% (rank 4) worse than the
//    truncated SVD on average and up to 5.4% / 11.7%; oversampled, the worst is 1.6% at rank 2.
//    oversample = 0 reproduces GEAR's reference.
// P0: the random start [heads, hd, width] (random_start of each block's seed) on R's device.
// no_sync: LowRankSpec::Linalg::SyncFree's factorisations instead of LAPACK's.
std::pair<at::Tensor, at::Tensor> power_iteration(const at::Tensor& R, int64_t r, at::Tensor P0, int iters, bool no_sync) {
  const auto orth = no_sync ? orthonormal_sync_free : orthonormal;
  const at::Tensor Rt = R.transpose(1, 2);
  const int64_t width = P0.size(2);
  at::Tensor P = std::move(P0), Q;
  for (int i = 0; i < iters; ++i) {
    Q = orth(at::matmul(R, orth(P)));
    P = at::matmul(Rt, Q);
  }
  if (width == r) return {Q, P.transpose(1, 2)};
  return no_sync ? truncate_in_basis_sync_free(Q, P.transpose(1, 2), r) : truncate_in_basis(Q, P.transpose(1, 2), r);
}

// Truncated SVD: A = U_r·diag(S_r), B = Vh_r — the best rank-r approximation (Eckart–Young).
std::pair<at::Tensor, at::Tensor> truncated_svd(const at::Tensor& R, int64_t r) {
  const auto [U, S, Vh] = at::linalg_svd(R, /*full_matrices=*/false);
  return {U.slice(2, 0, r) * S.slice(1, 0, r).unsqueeze(1), Vh.slice(1, 0, r)};
}

}  // namespace

int64_t LowRankFactors::bytes() const {
  if (rank == 0) return 0;
  return a.numel() * a.element_size() + b.numel() * b.element_size();
}

int64_t resolve_rank(int64_t rank, double ratio, int64_t T, int64_t hd) {
  require(T >= 0 && hd > 0, "low-rank: bad head shape [" + str(T) + ", " + str(hd) + "]");
  if (ratio > 0) {
    std::ostringstream s;
    s << ratio;
    require(ratio <= 1, "low-rank: rank ratio must be in (0, 1], got " + s.str());
    // The epsilon keeps e.g. 0.25 * 8 = 2 from rounding up to 3 through binary noise.
    return int64_t(std::ceil(ratio * double(std::min(T, hd)) - 1e-9));
  }
  check_rank(rank, hd);
  return std::min(rank, T);
}

void set_auto_low_rank_linalg(LowRankSpec::Linalg linalg) { auto_linalg = linalg; }

LowRankFactors low_rank(const at::Tensor& residual, const LowRankSpec& spec) {
  require(residual.dim() == 3, "low-rank: residual must be [n_kv_heads, T, hd], got " + str(residual.dim()) +
                                   " dims");
  return low_rank_rows(residual.unsqueeze(0), spec, {spec.seed})[0];
}

std::pair<at::Tensor, at::Tensor> low_rank_batched(const at::Tensor& residual, const LowRankSpec& spec,
                                                   const std::vector<uint64_t>& seeds) {
  require(residual.dim() == 4, "low-rank: residuals must be [rows, n_kv_heads, T, hd], got " + str(residual.dim()) +
                                   " dims");
  const int64_t n = residual.size(0), nkv = residual.size(1), T = residual.size(2), hd = residual.size(3);
  require(int64_t(seeds.size()) == n, "low-rank: " + str(int64_t(seeds.size())) + " seeds for " + str(n) + " rows");
  check_rank(spec.rank, hd);
  require(spec.power_iters >= 1, "low-rank: power_iters must be >= 1, got " + str(spec.power_iters));
  const int64_t r = std::min(spec.rank, T);
  const auto half = residual.options().dtype(at::kHalf);
  if (r == 0) return {at::zeros({n, nkv, T, 0}, half), at::zeros({n, nkv, 0, hd}, half)};
  // All rows' heads as one batch; each row's start from its own seed, so row i's factors are what
  // low_rank(residual[i], spec with seeds[i]) computes.
  const at::Tensor R = residual.to(at::kFloat).reshape({n * nkv, T, hd});
  at::Tensor A, B;
  if (spec.exact_svd) {
    std::tie(A, B) = truncated_svd(R, r);
  } else {
    const int64_t width = basis_width(r, spec.oversample, T, hd);
    // (Wider bases than the kernels take, only possible with head dims > 256, stay on LAPACK.)
    const bool no_sync = sync_free(spec, R) && width <= kernels::kMaxSmallDense;
    const at::Tensor start = random_starts(seeds, nkv, hd, width, R.device());
    if (no_sync && R.is_cuda() && kernels::fused_power_iteration_fits(T, hd, int(width))) {
      // A streamed block: the whole iteration in one launch, one thread block per head.
      const at::Tensor Rc = R.contiguous();
      at::Tensor a = at::empty({n * nkv, T, r}, half), b = at::empty({n * nkv, r, hd}, half);
      kernels::fused_power_iteration(Rc.data_ptr<float>(), start.data_ptr<float>(), int(n * nkv), int(T), int(hd),
                                     int(width), int(r), spec.power_iters, a.data_ptr(), b.data_ptr(),
                                     cuda_ops::current_stream());
      return {a.view({n, nkv, T, r}), b.view({n, nkv, r, hd})};
    }
    std::tie(A, B) = power_iteration(R, r, start, spec.power_iters, no_sync);
  }
  return {A.to(at::kHalf).reshape({n, nkv, T, r}), B.to(at::kHalf).reshape({n, nkv, r, hd})};
}

std::vector<LowRankFactors> low_rank_rows(const at::Tensor& residual, const LowRankSpec& spec,
                                          const std::vector<uint64_t>& seeds) {
  const auto [A, B] = low_rank_batched(residual, spec, seeds);
  std::vector<LowRankFactors> out(static_cast<size_t>(A.size(0)));
  for (int64_t i = 0; i < A.size(0); ++i) {
    out[size_t(i)].rank = A.size(3);
    out[size_t(i)].a = A[i].contiguous();
    out[size_t(i)].b = B[i].contiguous();
  }
  return out;
}

at::Tensor reconstruct(const LowRankFactors& f) {
  require(f.a.defined() && f.b.defined(), "low-rank: reconstruct of empty factors");
  if (f.rank == 0) return at::zeros({f.a.size(0), f.a.size(1), f.b.size(2)}, f.a.options().dtype(at::kFloat));
  return at::matmul(f.a.to(at::kFloat), f.b.to(at::kFloat));
}

int64_t low_rank_bytes(int64_t nkv, int64_t T, int64_t hd, int64_t rank) {
  check_rank(rank, hd);
  return std::min(rank, T) * (T + hd) * nkv * 2 /*fp16*/;
}

}  // namespace gear
