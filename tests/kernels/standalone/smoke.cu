// A GPU check without LibTorch (scripts/kernel-smoke.sh builds it in seconds): rope_qkv_append with slots,
// orthonormalize, uniform_start and fused_power_iteration against the float64 references, the last against the same
// algorithm re-run in float64 here; then the fused power iteration's time for a batch-16 streamed block of a 7B
// layer. The Catch tests (test_kernels / test_compression "[cuda]") check the same kernels more widely; this is for
// a device session whose time does not cover scripts/gpu-check.sh's full build.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/small_dense.h"

using namespace gear::kernels;

static int failures = 0;
#define CHECK(cond, ...)                 \
  do {                                   \
    if (!(cond)) {                       \
      ++failures;                        \
      std::printf("FAIL: " __VA_ARGS__); \
      std::printf("\n");                 \
    }                                    \
  } while (0)

template <typename T> T* dev(const std::vector<T>& h) {
  T* d = nullptr;
  cudaMalloc(&d, h.size() * sizeof(T));
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}
template <typename T> std::vector<T> host(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

std::mt19937 rng(1);
double randn() { return std::normal_distribution<double>(0, 1)(rng); }

void check_rope_slots() {
  const int B = 4, nh = 32, nkv = 8, hd = 128;
  const long long rows = 4096, cap = 64;
  std::vector<int64_t> pos = {4095, 0, 1000, 77};
  std::vector<int32_t> slots = {63, 0, 31, 64};  // row 3: bad slot
  std::vector<float> cs(rows * hd / 2), sn(rows * hd / 2);
  for (long long p = 0; p < rows; ++p)
    for (int i = 0; i < hd / 2; ++i) {
      const double f = std::pow(10000.0, -2.0 * i / hd) * p;
      cs[p * hd / 2 + i] = float(std::cos(f));
      sn[p * hd / 2 + i] = float(std::sin(f));
    }
  const size_t nq = size_t(B) * (nh + 2 * nkv) * hd, nc = size_t(B) * nkv * cap * hd;
  std::vector<__half> qkv(nq), k0(nc), v0(nc);
  std::vector<double> qkv_d(nq), k_d(nc), v_d(nc);
  for (size_t i = 0; i < nq; ++i) qkv_d[i] = __half2float(qkv[i] = __float2half(float(randn())));
  for (size_t i = 0; i < nc; ++i) {
    k_d[i] = __half2float(k0[i] = __float2half(float(randn())));
    v_d[i] = __half2float(v0[i] = __float2half(float(randn())));
  }
  __half *dq = dev(qkv), *dk = dev(k0), *dv = dev(v0), *dout = dev(std::vector<__half>(size_t(B) * nh * hd));
  int64_t* dpos = dev(pos);
  int32_t* dslots = dev(slots);
  float *dcs = dev(cs), *dsn = dev(sn);
  rope_qkv_append(DType::F16, dq, dpos, dcs, dsn, dout, dk, dv, B, nh, nkv, hd, cap, false, nullptr, dslots, rows);
  cudaDeviceSynchronize();
  const auto q = host(dout, size_t(B) * nh * hd);
  const auto k = host(dk, nc), v = host(dv, nc);
  const int good = 3;
  std::vector<double> q_want(size_t(good) * nh * hd);
  ref::rope_qkv_append(DType::F16, qkv_d.data(), pos.data(), cs.data(), sn.data(), q_want.data(), k_d.data(), v_d.data(), good, nh,
                       nkv, hd, cap, false, slots.data(), rows);
  double worst = 0;
  for (size_t i = 0; i < q_want.size(); ++i) worst = std::max(worst, std::fabs(__half2float(q[i]) - q_want[i]) / (std::fabs(q_want[i]) + 1e-3));
  for (size_t i = 0; i < size_t(good) * nkv * cap * hd; ++i)
    worst = std::max(worst, std::fabs(__half2float(k[i]) - k_d[i]) / (std::fabs(k_d[i]) + 1e-3));
  bool v_ok = true, bad_row_ok = true;
  for (size_t i = 0; i < size_t(good) * nkv * cap * hd; ++i) v_ok = v_ok && __half2float(v[i]) == float(v_d[i]);
  for (size_t i = size_t(good) * nh * hd; i < q.size(); ++i) bad_row_ok = bad_row_ok && std::isnan(__half2float(q[i]));
  for (size_t i = size_t(good) * nkv * cap * hd; i < nc; ++i)
    bad_row_ok = bad_row_ok && __half2float(k[i]) == __half2float(k0[i]) && __half2float(v[i]) == __half2float(v0[i]);
  std::printf("rope_qkv_append slots: worst rel diff %.2e, v exact %d, bad slot row NaN q + untouched %d\n", worst, v_ok, bad_row_ok);
  CHECK(worst < 2e-3, "rope slots worst %g", worst);
  CHECK(v_ok && bad_row_ok, "rope slots v / bad row");
}

void check_orthonormalize() {
  for (long long m : {3LL, 64LL, 1000LL}) {
    for (int w : {1, 4, 8, 32}) {
      const int n = 5;
      std::vector<float> x(size_t(n) * m * w);
      std::vector<double> xd(x.size()), want(x.size());
      for (size_t i = 0; i < x.size(); ++i) xd[i] = x[i] = float(randn() * std::pow(10.0, -2.0 * double(i % w) / w));
      ref::orthonormalize(xd.data(), want.data(), n, m, w);
      float *dx = dev(x), *dy = dev(std::vector<float>(x.size()));
      orthonormalize(dx, dy, n, m, w, nullptr);
      const auto y = host(dy, x.size());
      double worst = 0;
      for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - want[i]));
      CHECK(worst < 2e-5, "orthonormalize m %lld w %d worst %g", m, w, worst);
      if (worst >= 2e-5) std::printf("  orthonormalize m %lld w %d: %g\n", m, w, worst);
    }
  }
  std::printf("orthonormalize: done\n");
}

void check_small_dense() {
  const int n = 300;
  for (int w : {1, 4, 16}) {
    std::vector<double> a(size_t(n) * w * w);
    for (int m = 0; m < n; ++m)  // symmetric positive semi-definite: XᵀX of a random 2w×w X
      for (int i = 0; i < w; ++i)
        for (int j = 0; j <= i; ++j) {
          double s = 0;
          for (int t = 0; t < 2 * w; ++t) s += std::sin(1.0 + m + 3.0 * t * (i + 1)) * std::sin(2.0 + m + 5.0 * t * (j + 1));
          a[(size_t(m) * w + i) * w + j] = a[(size_t(m) * w + j) * w + i] = s;
        }
    std::vector<double> work = a, ev(size_t(n) * w), vec(a.size()), w_ref(a.size());
    ref::symmetric_eigen(work.data(), n, w, ev.data(), vec.data());
    double *da = dev(a), *dev_ = dev(std::vector<double>(ev.size())), *dvec = dev(std::vector<double>(a.size()));
    symmetric_eigen(da, n, w, dev_, dvec, nullptr);
    const auto gev = host(dev_, ev.size());
    double worst = 0;  // against each matrix's largest eigenvalue (the Jacobi's absolute accuracy)
    for (size_t i = 0; i < ev.size(); ++i) worst = std::max(worst, std::fabs(gev[i] - ev[i]) / (std::fabs(ev[i / w * w]) + 1e-300));
    work = a;
    ref::cholesky_orthonormalizer(work.data(), n, w, w_ref.data());
    double* dg = dev(a);
    float* dw = dev(std::vector<float>(a.size()));
    cholesky_orthonormalizer(dg, n, w, dw, nullptr);
    const auto gw = host(dw, a.size());
    double worst_w = 0, scale = 0;
    for (size_t i = 0; i < gw.size(); ++i) worst_w = std::max(worst_w, std::fabs(gw[i] - w_ref[i])), scale = std::max(scale, std::fabs(w_ref[i]));
    std::printf("small dense w %d: eigenvalues rel %.1e, cholesky W rel %.1e\n", w, worst, worst_w / scale);
    CHECK(worst < 1e-12, "symmetric_eigen w %d: %g", w, worst);
    CHECK(worst_w <= 1e-6 * scale, "cholesky_orthonormalizer w %d: %g", w, worst_w / scale);
    cudaFree(da), cudaFree(dev_), cudaFree(dvec), cudaFree(dg), cudaFree(dw);
  }
}

void check_uniform_start() {
  std::vector<unsigned long long> seeds = {0, 1, 99, 12345678901234ull};
  const long long per_row = 32 * 128 * 8 + 3;
  std::vector<float> want(seeds.size() * per_row);
  ref::uniform_start(seeds.data(), int(seeds.size()), per_row, want.data());
  unsigned long long* ds = dev(seeds);
  float* dout = dev(std::vector<float>(want.size(), NAN));
  uniform_start(ds, int(seeds.size()), per_row, dout, nullptr);
  const auto got = host(dout, want.size());
  bool equal = true;
  for (size_t i = 0; i < got.size(); ++i) equal = equal && got[i] == want[i];
  std::printf("uniform_start: bit-identical %d\n", equal);
  CHECK(equal, "uniform_start");
}

// The fused power iteration against the same algorithm in float64 on the host.
void check_power_iteration() {
  for (int T : {64, 37, 3}) {
    for (int hd : {128, 64}) {
      for (int rank : {1, 2, 4}) {
        for (int over : {-1, 0}) {
          const int n = 8;
          const int r = std::min(rank, T), w = std::min(r + (over < 0 ? r : over), std::min(T, hd));
          if (!fused_power_iteration_fits(T, hd, w)) {
            CHECK(false, "fits T %d hd %d w %d", T, hd, w);
            continue;
          }
          // R: a decaying spectrum plus noise.
          std::vector<float> R(size_t(n) * T * hd);
          for (int h = 0; h < n; ++h) {
            std::vector<double> u(size_t(T) * 8), v(size_t(hd) * 8);
            for (auto& x : u) x = randn();
            for (auto& x : v) x = randn();
            for (int t = 0; t < T; ++t)
              for (int d = 0; d < hd; ++d) {
                double s = 0.01 * randn();
                for (int c = 0; c < 8; ++c) s += (4.0 - 0.45 * c) * u[t * 8 + c] * v[d * 8 + c] / std::sqrt(double(T * hd));
                R[(size_t(h) * T + t) * hd + d] = float(s);
              }
          }
          std::vector<unsigned long long> seeds(n);
          for (int h = 0; h < n; ++h) seeds[h] = 1000 + h;
          std::vector<float> P0(size_t(n) * hd * w);
          ref::uniform_start(seeds.data(), n, (long long)hd * w, P0.data());
          float *dR = dev(R), *dP = dev(P0);
          __half *dA = dev(std::vector<__half>(size_t(n) * T * r)), *dB = dev(std::vector<__half>(size_t(n) * r * hd));
          fused_power_iteration(dR, dP, n, T, hd, w, r, 3, dA, dB, nullptr);
          const cudaError_t e = cudaDeviceSynchronize();
          CHECK(e == cudaSuccess, "power iteration: %s", cudaGetErrorString(e));
          const auto A = host(dA, size_t(n) * T * r), Bh = host(dB, size_t(n) * r * hd);
          double worst = 0, scale = 0;
          for (int h = 0; h < n; ++h) {
            const float* Rh = R.data() + size_t(h) * T * hd;
            std::vector<double> P(size_t(hd) * w), Q(size_t(T) * w);
            for (size_t i = 0; i < P.size(); ++i) P[i] = P0[size_t(h) * hd * w + i];
            for (int it = 0; it < 3; ++it) {
              ref::orthonormalize(P.data(), P.data(), 1, hd, w);
              for (int t = 0; t < T; ++t)
                for (int j = 0; j < w; ++j) {
                  double s = 0;
                  for (int d = 0; d < hd; ++d) s += double(Rh[t * hd + d]) * P[d * w + j];
                  Q[t * w + j] = s;
                }
              ref::orthonormalize(Q.data(), Q.data(), 1, T, w);
              for (int d = 0; d < hd; ++d)
                for (int j = 0; j < w; ++j) {
                  double s = 0;
                  for (int t = 0; t < T; ++t) s += double(Rh[t * hd + d]) * Q[t * w + j];
                  P[d * w + j] = s;
                }
            }
            // A·B on the host: Q·Pᵀ (w == r) or the Rayleigh–Ritz truncation
            std::vector<double> AB(size_t(T) * hd, 0.0);
            if (w == r) {
              for (int t = 0; t < T; ++t)
                for (int d = 0; d < hd; ++d)
                  for (int j = 0; j < w; ++j) AB[t * hd + d] += Q[t * w + j] * P[d * w + j];
            } else {
              std::vector<double> K(size_t(w) * w), ev(w), U(size_t(w) * w);
              for (int i = 0; i < w; ++i)
                for (int j = 0; j < w; ++j) {
                  double s = 0;
                  for (int d = 0; d < hd; ++d) s += P[d * w + i] * P[d * w + j];
                  K[i * w + j] = s;
                }
              dense::symmetric_eigen(K.data(), w, ev.data(), U.data());
              // A·B = Q·U_r·U_rᵀ·M, M = Pᵀ
              for (int t = 0; t < T; ++t)
                for (int d = 0; d < hd; ++d) {
                  double s = 0;
                  for (int j = 0; j < r; ++j) {
                    double qu = 0, um = 0;
                    for (int k = 0; k < w; ++k) qu += Q[t * w + k] * U[k * w + j];
                    for (int k = 0; k < w; ++k) um += U[k * w + j] * P[d * w + k];
                    s += qu * um;
                  }
                  AB[t * hd + d] = s;
                }
            }
            for (int t = 0; t < T; ++t)
              for (int d = 0; d < hd; ++d) {
                double g = 0;
                for (int j = 0; j < r; ++j)
                  g += double(__half2float(A[(size_t(h) * T + t) * r + j])) * double(__half2float(Bh[(size_t(h) * r + j) * hd + d]));
                worst = std::max(worst, std::fabs(g - AB[t * hd + d]));
                scale = std::max(scale, std::fabs(AB[t * hd + d]));
              }
          }
          const double rel = worst / (scale + 1e-30);
          CHECK(rel < 5e-3, "power iteration T %d hd %d rank %d over %d: rel %g", T, hd, rank, over, rel);
          if (rel >= 5e-3 || (T == 64 && hd == 128))
            std::printf("  fused_power_iteration T %d hd %d rank %d oversample %d (w %d): max |AB - ref| / max |ref| = %.2e\n", T, hd,
                        rank, over, w, rel);
          cudaFree(dR), cudaFree(dP), cudaFree(dA), cudaFree(dB);
        }
      }
    }
  }
  std::printf("fused_power_iteration: done\n");
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing checked\n");
    return 2;
  }
  check_uniform_start();
  check_small_dense();
  check_orthonormalize();
  check_rope_slots();
  check_power_iteration();
  // timing: a batch-16 streamed block of a 7B layer (512 heads, T 64, hd 128, rank 2 -> w 4)
  {
    const int n = 512, T = 64, hd = 128, w = 4, r = 2;
    float *dR = dev(std::vector<float>(size_t(n) * T * hd, 0.5f)), *dP = dev(std::vector<float>(size_t(n) * hd * w, 0.25f));
    __half *dA = dev(std::vector<__half>(size_t(n) * T * r)), *dB = dev(std::vector<__half>(size_t(n) * r * hd));
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    fused_power_iteration(dR, dP, n, T, hd, w, r, 3, dA, dB, nullptr);
    cudaEventRecord(a);
    for (int i = 0; i < 20; ++i) fused_power_iteration(dR, dP, n, T, hd, w, r, 3, dA, dB, nullptr);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    std::printf("fused_power_iteration 512 heads T 64 hd 128 w 4: %.1f us per call\n", 1000 * ms / 20);
  }
  std::printf(failures ? "SMOKE FAILED (%d)\n" : "SMOKE OK\n", failures);
  return failures ? 1 : 0;
}
