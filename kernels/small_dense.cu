// The power iteration's small dense factorisations on the GPU (kernels/small_dense.h): one thread per w×w matrix,
// float64, in place in global memory (L1-cached; the matrices are a few KB). A low-rank call runs a few of these
// launches between its cuBLAS products, with no host round trip and no per-matrix launch.
#include "kernels/block_cholqr.cuh"
#include "kernels/dtype.cuh"
#include "kernels/small_dense.h"

namespace gear::kernels {
namespace {
using namespace detail;

constexpr int kThreads = 64;  // few matrices per block: a batch of B rows × heads spreads over the SMs

__global__ void __launch_bounds__(kThreads) cholesky_orthonormalizer_kernel(double* g, int n, int w, float* w_out) {
  const long long i = blockIdx.x * static_cast<long long>(kThreads) + threadIdx.x;
  if (i >= n) return;
  const long long ww = static_cast<long long>(w) * w;
  dense::cholesky_orthonormalizer(g + i * ww, w, w_out + i * ww);
}

__global__ void __launch_bounds__(kThreads) symmetric_eigen_kernel(double* a, int n, int w, double* evals, double* evecs) {
  const long long i = blockIdx.x * static_cast<long long>(kThreads) + threadIdx.x;
  if (i >= n) return;
  const long long ww = static_cast<long long>(w) * w;
  dense::symmetric_eigen(a + i * ww, w, evals + i * w, evecs + i * ww);
}

__global__ void __launch_bounds__(256) uniform_start_kernel(const unsigned long long* seeds, int rows, long long per_row,
                                                            float* out) {
  const long long total = rows * per_row;
  for (long long i = blockIdx.x * 256LL + threadIdx.x; i < total; i += static_cast<long long>(gridDim.x) * 256) {
    const long long r = i / per_row;
    out[i] = dense::uniform01(seeds[r], static_cast<unsigned long long>(i - r * per_row));
  }
}

constexpr int kOrthThreads = 256;

// CholeskyQR2 of one [m, w] float32 matrix per block (block_cholqr.cuh), y = x·W1·W2, in one launch instead of a
// dozen ATen ops.
__global__ void __launch_bounds__(kOrthThreads) orthonormalize_kernel(const float* x, float* y, long long m, int w) {
  __shared__ double g[kMaxFusedOrthonormalize * kMaxFusedOrthonormalize];
  __shared__ float W[kMaxFusedOrthonormalize * kMaxFusedOrthonormalize];
  const long long mw = m * w;
  block_cholqr2<kOrthThreads, kMaxFusedOrthonormalize>(x + blockIdx.x * mw, y + blockIdx.x * mw, m, w, g, W);
}

void check_sizes(const char* kernel, int n, int w) {
  if (n < 0 || w < 1 || w > kMaxSmallDense)
    fail(kernel, "invalid sizes n=" + std::to_string(n) + " w=" + std::to_string(w) + " (need n >= 0, 1 <= w <= " +
                     std::to_string(kMaxSmallDense) + ")");
}

unsigned blocks_for(int n) { return static_cast<unsigned>(ceil_div(static_cast<long long>(n), kThreads)); }

}  // namespace

void cholesky_orthonormalizer(double* g, int n, int w, float* w_out, void* stream) {
  check_sizes("cholesky_orthonormalizer", n, w);
  if (n == 0) return;
  if (!g || !w_out) fail("cholesky_orthonormalizer", "null pointer");
  cholesky_orthonormalizer_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(g, n, w, w_out);
  check_launch("cholesky_orthonormalizer");
}

void orthonormalize(const float* x, float* y, int n, long long m, int w, void* stream) {
  if (n < 0 || m < 0 || w < 1 || w > kMaxFusedOrthonormalize)
    fail("orthonormalize", "invalid sizes n=" + std::to_string(n) + " m=" + std::to_string(m) + " w=" +
                               std::to_string(w) + " (need 1 <= w <= " + std::to_string(kMaxFusedOrthonormalize) + ")");
  if (n == 0 || m == 0) return;
  if (!x || !y) fail("orthonormalize", "null pointer");
  orthonormalize_kernel<<<static_cast<unsigned>(n), kOrthThreads, 0, as_stream(stream)>>>(x, y, m, w);
  check_launch("orthonormalize");
}

void uniform_start(const unsigned long long* seeds, int rows, long long per_row, float* out, void* stream) {
  if (rows < 0 || per_row < 0)
    fail("uniform_start", "invalid sizes rows=" + std::to_string(rows) + " per_row=" + std::to_string(per_row));
  if (rows == 0 || per_row == 0) return;
  if (!seeds || !out) fail("uniform_start", "null pointer");
  const long long blocks = ceil_div(rows * per_row, 256);
  uniform_start_kernel<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0, as_stream(stream)>>>(seeds, rows,
                                                                                                       per_row, out);
  check_launch("uniform_start");
}

void symmetric_eigen(double* a, int n, int w, double* evals, double* evecs, void* stream) {
  check_sizes("symmetric_eigen", n, w);
  if (n == 0) return;
  if (!a || !evals || !evecs) fail("symmetric_eigen", "null pointer");
  symmetric_eigen_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(a, n, w, evals, evecs);
  check_launch("symmetric_eigen");
}

}  // namespace gear::kernels
