// The power iteration's small dense factorisations on the GPU (kernels/small_dense.h): one thread per w×w matrix,
// float64, in place in global memory (L1-cached; the matrices are a few KB). A low-rank call runs a few of these
// launches between its cuBLAS products, with no host round trip and no per-matrix launch.
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

void symmetric_eigen(double* a, int n, int w, double* evals, double* evecs, void* stream) {
  check_sizes("symmetric_eigen", n, w);
  if (n == 0) return;
  if (!a || !evals || !evecs) fail("symmetric_eigen", "null pointer");
  symmetric_eigen_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(a, n, w, evals, evecs);
  check_launch("symmetric_eigen");
}

}  // namespace gear::kernels
