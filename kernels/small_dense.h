#pragma once
// The small dense factorisations of the power iteration (core/compression/low_rank.cpp), one w×w float64
// matrix at a time: a Cholesky orthonormaliser (CholeskyQR) and a cyclic Jacobi eigensolver (Rayleigh–Ritz).
//
// Why our own: LAPACK-style solvers on the GPU (ATen's linalg_qr / linalg_svd through cuSOLVER) loop over the
// batch (hundreds of tiny launches per call for B rows × heads) and check their info flags on the host, which
// synchronises. The power iteration only ever factors w×w matrices (w = rank + oversample, a few to a few tens),
// so one thread per matrix, no pivots and no host round trip is enough; the big products stay cuBLAS GEMMs.
//
// The same code runs in the kernels (kernels/small_dense.cu, one thread per matrix) and in their CPU references
// (kernels/reference.cpp), which are themselves tested against LAPACK (at::linalg_eigh, at::linalg_qr).
// Plain C++ (no CUDA header needed): __host__ __device__ only when nvcc compiles it.
#include <cmath>

#include "kernels/host_device.h"

namespace gear::kernels::dense {

// The power iteration's random start, the same on every device: element i of `seed`'s stream is uniform in [0, 1)
// on a 2^-24 grid (exact in float32), from splitmix64 (Steele, Lea & Flood 2014) of the seed and the index. A
// counter-based stream lets the GPU fill every row's start in one launch (the CPU generator took ~1 ms of host
// time per side and layer at batch 16).
GEARLAB_HOST_DEVICE inline unsigned long long splitmix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
GEARLAB_HOST_DEVICE inline float uniform01(unsigned long long seed, unsigned long long i) {
  return static_cast<float>(splitmix64(splitmix64(seed) ^ i) >> 40) * (1.0f / 16777216.0f);
}

// A column whose part orthogonal to the columns before it has a squared norm <= kDropTol times its own (below
// float32 resolution: < 1e-6 of its norm), or that is zero, is numerically dependent: it is dropped (a zero
// column of Q) instead of being amplified from rounding noise.
constexpr double kDropTol = 1e-12;
// Jacobi stops when the off-diagonal squared Frobenius norm is <= kOffTol times the diagonal's (off-diagonal
// entries ~1e-14 of the diagonal: far below the float32 factors made from the result), or after kMaxSweeps.
constexpr double kOffTol = 1e-28;
constexpr int kMaxSweeps = 60;

// g: row-major w×w symmetric positive semi-definite Gram matrix XᵀX (only its lower triangle is read), overwritten
// by its Cholesky factor L in the lower triangle (a dropped column's entries 0) and scratch above it. w_out: row-major w×w upper-triangular
// W = L⁻ᵀ over the kept columns (zero rows and columns for dropped ones), so that X·W has orthonormal columns
// (dropped ones zero) spanning span(X). Returns the number of kept columns.
template <typename Out>
GEARLAB_HOST_DEVICE int cholesky_orthonormalizer(double* g, int w, Out* w_out) {
  int kept = 0;
  for (int j = 0; j < w; ++j) {
    const double gjj = g[j * w + j];
    double d = gjj;
    for (int k = 0; k < j; ++k) d -= g[j * w + k] * g[j * w + k];
    if (!(gjj > 0 && d > kDropTol * gjj)) {  // also NaN: dropped
      for (int i = j; i < w; ++i) g[i * w + j] = 0;
      continue;
    }
    ++kept;
    const double ljj = sqrt(d);
    g[j * w + j] = ljj;
    for (int i = j + 1; i < w; ++i) {
      double s = g[i * w + j];
      for (int k = 0; k < j; ++k) s -= g[i * w + k] * g[j * w + k];
      g[i * w + j] = s / ljj;
    }
  }
  // Row c of W is column c of M = L⁻¹, by forward substitution down the column in float64; M[i][c] (i > c) is
  // kept in g's upper triangle (g[c][i], free once L is built) for the rows below it.
  for (int c = 0; c < w; ++c) {
    const double lcc = g[c * w + c];
    for (int i = 0; i < w; ++i) {
      double m = 0;
      if (i == c && lcc != 0) {
        m = 1 / lcc;
      } else if (i > c) {
        const double lii = g[i * w + i];
        if (lcc != 0 && lii != 0) {
          double s = g[i * w + c] / lcc;
          for (int k = c + 1; k < i; ++k) s += g[i * w + k] * g[c * w + k];
          m = -s / lii;
        }
        g[c * w + i] = m;
      }
      w_out[c * w + i] = Out(m);
    }
  }
  return kept;
}

// a: row-major w×w symmetric matrix, destroyed (left nearly diagonal). evals [w]: its eigenvalues, descending;
// evecs: row-major w×w, column j the unit eigenvector of evals[j], its largest-magnitude component positive (the
// first of equal ones), so the result does not depend on rounding-level sign flips. Cyclic Jacobi rotations
// (Numerical Recipes §11.1 convention) until kOffTol or kMaxSweeps. Returns the sweeps run.
GEARLAB_HOST_DEVICE inline int symmetric_eigen(double* a, int w, double* evals, double* evecs) {
  for (int i = 0; i < w * w; ++i) evecs[i] = (i / w == i % w) ? 1 : 0;
  int sweep = 0;
  for (; sweep < kMaxSweeps; ++sweep) {
    double off = 0, on = 0;
    for (int p = 0; p < w; ++p) {
      on += a[p * w + p] * a[p * w + p];
      for (int q = p + 1; q < w; ++q) off += a[p * w + q] * a[p * w + q];
    }
    if (!(off > kOffTol * on)) break;  // also a zero or NaN matrix
    for (int p = 0; p + 1 < w; ++p) {
      for (int q = p + 1; q < w; ++q) {
        const double apq = a[p * w + q];
        if (apq == 0) continue;
        // tan of the angle that zeroes a[p][q]: the smaller root of t² + 2θt − 1 = 0 (θ² may overflow to inf:
        // then t = 0 and this entry is already negligible against the diagonal gap).
        const double theta = (a[q * w + q] - a[p * w + p]) / (2 * apq);
        double t = 1 / (fabs(theta) + sqrt(theta * theta + 1));
        if (theta < 0) t = -t;
        const double c = 1 / sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < w; ++k) {  // A·J (columns p, q)
          const double akp = a[k * w + p], akq = a[k * w + q];
          a[k * w + p] = c * akp - s * akq;
          a[k * w + q] = s * akp + c * akq;
        }
        for (int k = 0; k < w; ++k) {  // Jᵀ·(A·J) (rows p, q)
          const double apk = a[p * w + k], aqk = a[q * w + k];
          a[p * w + k] = c * apk - s * aqk;
          a[q * w + k] = s * apk + c * aqk;
        }
        a[p * w + q] = a[q * w + p] = 0;
        for (int k = 0; k < w; ++k) {  // V·J
          const double vkp = evecs[k * w + p], vkq = evecs[k * w + q];
          evecs[k * w + p] = c * vkp - s * vkq;
          evecs[k * w + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  for (int j = 0; j < w; ++j) evals[j] = a[j * w + j];
  for (int j = 0; j < w; ++j) {  // exchange sort, descending, columns along (constant indices once unrolled:
    for (int i = j + 1; i < w; ++i) {  // a kernel with a fixed w keeps the arrays in registers)
      if (evals[i] > evals[j]) {
        const double e = evals[j];
        evals[j] = evals[i];
        evals[i] = e;
        for (int k = 0; k < w; ++k) {
          const double v = evecs[k * w + j];
          evecs[k * w + j] = evecs[k * w + i];
          evecs[k * w + i] = v;
        }
      }
    }
    double big = evecs[j];  // the column's first entry of largest magnitude made positive
    for (int k = 1; k < w; ++k)
      if (fabs(evecs[k * w + j]) > fabs(big)) big = evecs[k * w + j];
    if (big < 0)
      for (int k = 0; k < w; ++k) evecs[k * w + j] = -evecs[k * w + j];
  }
  return sweep;
}

}  // namespace gear::kernels::dense
