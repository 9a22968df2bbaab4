// The power iteration's small dense factorisations (kernels/small_dense.h): the CPU references against LAPACK
// (ATen's linalg_eigh / linalg_qr) on every build, the kernels against the references on a GPU.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <vector>

#include "kernels/kernels.h"
#include "kernels/reference.h"

namespace {

namespace ref = gear::kernels::ref;

double max_abs(const at::Tensor& t) { return t.numel() ? t.abs().max().item<double>() : 0.0; }

// n symmetric w×w float64 matrices with eigenvalues spread over `decades` decades, some repeated.
at::Tensor symmetric_batch(int n, int w, double decades, uint64_t seed) {
  at::manual_seed(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor q = std::get<0>(at::linalg_qr(at::randn({n, w, w}, f64)));
  at::Tensor ev = at::pow(10.0, -decades * at::rand({n, w}, f64));
  if (w >= 3) ev.narrow(1, 1, 1).copy_(ev.narrow(1, 2, 1));  // a double eigenvalue
  return at::matmul(q * ev.unsqueeze(1), q.transpose(1, 2)).contiguous();
}

struct Eigen {
  at::Tensor evals, evecs;
};

Eigen ref_eigen(const at::Tensor& a) {
  const int n = int(a.size(0)), w = int(a.size(1));
  at::Tensor work = a.clone(), evals = at::empty({n, w}, a.options()), evecs = at::empty_like(a);
  ref::symmetric_eigen(work.data_ptr<double>(), n, w, evals.data_ptr<double>(), evecs.data_ptr<double>());
  return {evals, evecs};
}

at::Tensor ref_cholesky(const at::Tensor& g) {
  at::Tensor work = g.clone(), w_out = at::empty_like(g);
  ref::cholesky_orthonormalizer(work.data_ptr<double>(), int(g.size(0)), int(g.size(1)), w_out.data_ptr<double>());
  return w_out;
}

// Checks that (evals, evecs) is an eigendecomposition of a: A·V = V·Λ, VᵀV = I, descending, LAPACK's values.
void check_eigen(const at::Tensor& a, const Eigen& e) {
  const double scale = max_abs(a);
  CHECK(max_abs(at::matmul(a, e.evecs) - e.evecs * e.evals.unsqueeze(1)) <= 1e-12 * scale);
  const at::Tensor eye = at::eye(a.size(1), a.options()).expand_as(a);
  CHECK(max_abs(at::matmul(e.evecs.transpose(1, 2), e.evecs) - eye) <= 1e-12);
  const at::Tensor lapack = std::get<0>(at::linalg_eigh(a)).flip(1);  // ascending there
  CHECK(max_abs(e.evals - lapack) <= 1e-12 * scale);
  if (a.size(1) > 1) CHECK(bool((e.evals.narrow(1, 0, a.size(1) - 1) >= e.evals.narrow(1, 1, a.size(1) - 1)).all().item<bool>()));
}

}  // namespace

TEST_CASE("ref symmetric_eigen: LAPACK's eigenvalues, orthonormal eigenvectors, descending", "[kernels][ref][dense]") {
  for (int w : {1, 2, 3, 8, 16, 33}) {
    for (double decades : {0.0, 3.0, 12.0}) {
      INFO("w " << w << ", eigenvalues over " << decades << " decades");
      const at::Tensor a = symmetric_batch(5, w, decades, uint64_t(w * 10 + int(decades)));
      check_eigen(a, ref_eigen(a));
    }
  }
  SECTION("signs: each eigenvector's largest component is positive, so the result is unique") {
    const at::Tensor a = symmetric_batch(4, 6, 2.0, 7);
    const Eigen e = ref_eigen(a);
    const at::Tensor big = std::get<1>(e.evecs.abs().max(1));  // [n, w] row of each column's largest entry
    CHECK(bool((e.evecs.gather(1, big.unsqueeze(1)) > 0).all().item<bool>()));
  }
  SECTION("zero, diagonal and rank-one matrices") {
    const auto f64 = at::TensorOptions().dtype(at::kDouble);
    const Eigen z = ref_eigen(at::zeros({1, 4, 4}, f64));
    CHECK(max_abs(z.evals) == 0);
    CHECK(at::equal(z.evecs[0], at::eye(4, f64)));
    const at::Tensor d = at::diag(at::tensor({1.0, 5.0, 3.0}, f64)).unsqueeze(0);
    const Eigen de = ref_eigen(d);
    CHECK(at::equal(de.evals[0], at::tensor({5.0, 3.0, 1.0}, f64)));
    const at::Tensor v = at::randn({1, 7, 1}, f64);
    const at::Tensor r1 = at::matmul(v, v.transpose(1, 2));
    check_eigen(r1, ref_eigen(r1));
  }
  SECTION("bad sizes throw") {
    double x = 0;
    CHECK_THROWS_WITH(ref::symmetric_eigen(&x, 1, 0, &x, &x), Catch::Contains("invalid sizes"));
    CHECK_THROWS_WITH(ref::symmetric_eigen(&x, -1, 2, &x, &x), Catch::Contains("invalid sizes"));
  }
}

TEST_CASE("ref cholesky_orthonormalizer: X·W is orthonormal, spans X, and drops dependent columns", "[kernels][ref][dense]") {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  for (int w : {1, 4, 8, 17}) {
    INFO("w " << w);
    at::manual_seed(uint64_t(w));
    // Columns with norms over 2 decades (one CholeskyQR pass in float64 loses ~1e-16 cond² of orthogonality).
    const at::Tensor x = at::randn({3, 200, w}, f64) * at::pow(10.0, at::linspace(0, -2, w, f64)) * 1e3;
    const at::Tensor W = ref_cholesky(at::matmul(x.transpose(1, 2), x));
    CHECK(max_abs(at::tril(W, -1)) == 0);  // upper triangular: column j of Q mixes columns 0..j of X
    const at::Tensor q = at::matmul(x, W);
    CHECK(max_abs(at::matmul(q.transpose(1, 2), q) - at::eye(w, f64).expand({3, w, w})) <= 1e-9);
    // Same basis as Householder QR up to the sign of each column.
    const at::Tensor qr = std::get<0>(at::linalg_qr(x));
    CHECK(max_abs(q.abs() - qr.abs()) <= 1e-8);
  }
  SECTION("dependent and zero columns become zero columns; the rest stay orthonormal and span X") {
    at::manual_seed(11);
    at::Tensor x = at::randn({1, 50, 6}, f64);
    x.select(2, 2).copy_(x.select(2, 0) * 2 - x.select(2, 1) * 0.5);  // in the span of columns 0, 1
    x.select(2, 4).zero_();
    const at::Tensor q = at::matmul(x, ref_cholesky(at::matmul(x.transpose(1, 2), x)));
    const at::Tensor norms = q.norm(2, 1)[0];
    CHECK(norms[0].item<double>() == Approx(1).epsilon(1e-12));
    CHECK(norms[1].item<double>() == Approx(1).epsilon(1e-12));
    CHECK(norms[2].item<double>() <= 1e-6);
    CHECK(norms[3].item<double>() == Approx(1).epsilon(1e-12));
    CHECK(norms[4].item<double>() == 0);
    CHECK(norms[5].item<double>() == Approx(1).epsilon(1e-12));
    CHECK(max_abs(x - at::matmul(q, at::matmul(q.transpose(1, 2), x))) <= 1e-10);  // the projection keeps X
    const at::Tensor all_zero = ref_cholesky(at::zeros({1, 3, 3}, f64));
    CHECK(max_abs(all_zero) == 0);
  }
  SECTION("bad sizes throw") {
    double x = 0;
    CHECK_THROWS_WITH(ref::cholesky_orthonormalizer(&x, 1, gear::kernels::kMaxSmallDense + 1, &x),
                      Catch::Contains("invalid sizes"));
  }
}

TEST_CASE("cuda small dense factorisations match their references", "[kernels][cuda][dense]") {
  if (!at::hasCUDA() || !gear::kernels::cuda_available()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  const auto dev = at::TensorOptions().dtype(at::kDouble).device(at::kCUDA);
  for (int w : {1, 2, 8, 16, 40}) {
    for (int n : {1, 7, 300}) {
      INFO("w " << w << ", n " << n);
      const at::Tensor a = symmetric_batch(n, w, 6.0, uint64_t(n * 100 + w));
      // Eigen: poisoned outputs, the same decomposition as the reference to float64 rounding.
      at::Tensor work = a.to(dev), evals = at::full({n, w}, NAN, dev), evecs = at::full({n, w, w}, NAN, dev);
      gear::kernels::symmetric_eigen(work.data_ptr<double>(), n, w, evals.data_ptr<double>(), evecs.data_ptr<double>(),
                                     nullptr);
      const Eigen gpu{evals.cpu(), evecs.cpu()};
      check_eigen(a, gpu);
      const Eigen cpu = ref_eigen(a);
      CHECK(max_abs(gpu.evals - cpu.evals) <= 1e-13 * max_abs(a));
      // Cholesky: Gram of a random X, float32 W against the reference's float64 W.
      const at::Tensor x = at::randn({n, 3 * w, w}, at::kDouble) * at::pow(10.0, at::linspace(0, -3, w, at::kDouble));
      const at::Tensor g = at::matmul(x.transpose(1, 2), x).contiguous();
      at::Tensor gw = g.to(dev), W = at::full({n, w, w}, NAN, dev.dtype(at::kFloat));
      gear::kernels::cholesky_orthonormalizer(gw.data_ptr<double>(), n, w, W.data_ptr<float>(), nullptr);
      const at::Tensor Wr = ref_cholesky(g);
      CHECK(max_abs(W.cpu().to(at::kDouble) - Wr) <= 2e-7 * max_abs(Wr));
    }
  }
  SECTION("bad sizes throw; n = 0 is a no-op") {
    CHECK_THROWS_WITH(gear::kernels::symmetric_eigen(nullptr, 1, 0, nullptr, nullptr, nullptr),
                      Catch::Contains("symmetric_eigen: invalid sizes"));
    CHECK_THROWS_WITH(gear::kernels::cholesky_orthonormalizer(nullptr, 1, 4, nullptr, nullptr),
                      Catch::Contains("cholesky_orthonormalizer: null pointer"));
    CHECK_NOTHROW(gear::kernels::symmetric_eigen(nullptr, 0, 4, nullptr, nullptr, nullptr));
  }
}

TEST_CASE("ref uniform_start: each seed gives a deterministic uniform stream between 0 and 1", "[kernels][ref][dense]") {
  const std::vector<unsigned long long> seeds = {0, 1, 12345678901234ull, 1};
  std::vector<float> out(seeds.size() * 4096);
  ref::uniform_start(seeds.data(), int(seeds.size()), 4096, out.data());
  const at::Tensor u = at::from_blob(out.data(), {int64_t(seeds.size()), 4096}, at::kFloat).clone();
  CHECK(u.min().item<float>() >= 0);
  CHECK(u.max().item<float>() < 1);
  CHECK(u.mean().item<double>() == Approx(0.5).margin(0.01));
  CHECK(u.var().item<double>() == Approx(1.0 / 12).margin(0.005));
  CHECK(at::equal(u[1], u[3]));          // same seed, same stream
  CHECK_FALSE(at::equal(u[0], u[1]));    // neighbouring seeds differ
  CHECK(bool((u * 16777216).frac().eq(0).all().item<bool>()));  // on the 2^-24 grid: exact in float32
  // Neighbouring elements are uncorrelated (a counter-based stream with a weak mixer would show it here).
  const at::Tensor a = u[2].narrow(0, 0, 4095) - 0.5, b = u[2].narrow(0, 1, 4095) - 0.5;
  CHECK(std::abs((a * b).mean().item<double>()) < 0.005);
}

TEST_CASE("cuda uniform_start equals its reference bit for bit", "[kernels][cuda][dense]") {
  if (!at::hasCUDA() || !gear::kernels::cuda_available()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  std::vector<unsigned long long> seeds;
  for (int i = 0; i < 37; ++i) seeds.push_back(0x9E3779B97F4A7C15ull * unsigned(i) + 3);
  const long long per_row = 32 * 128 * 8 + 3;
  std::vector<float> want(seeds.size() * size_t(per_row));
  ref::uniform_start(seeds.data(), int(seeds.size()), per_row, want.data());
  const at::Tensor s = at::from_blob(seeds.data(), {int64_t(seeds.size())}, at::kLong).to(at::kCUDA);
  at::Tensor got = at::full({int64_t(seeds.size()), per_row}, NAN, at::TensorOptions().device(at::kCUDA));
  gear::kernels::uniform_start(reinterpret_cast<const unsigned long long*>(s.data_ptr<int64_t>()), int(seeds.size()),
                               per_row, got.data_ptr<float>(), nullptr);
  CHECK(at::equal(got.cpu(), at::from_blob(want.data(), {int64_t(seeds.size()), per_row}, at::kFloat)));
  CHECK_THROWS_WITH(gear::kernels::uniform_start(nullptr, 2, 4, nullptr, nullptr), Catch::Contains("null pointer"));
}

TEST_CASE("ref orthonormalize: CholeskyQR2 gives Householder's basis up to signs", "[kernels][ref][dense]") {
  at::manual_seed(21);
  const at::Tensor x = at::randn({3, 70, 6}, at::kDouble) * at::pow(10.0, at::linspace(0, -5, 6, at::kDouble));
  at::Tensor y = at::empty_like(x);
  ref::orthonormalize(x.data_ptr<double>(), y.data_ptr<double>(), 3, 70, 6);
  // cond ~1e5: one CholeskyQR pass would lose ~1e-6 of orthogonality, the second restores it
  CHECK(max_abs(at::matmul(y.transpose(1, 2), y) - at::eye(6, at::kDouble).expand({3, 6, 6})) <= 1e-13);
  CHECK(max_abs(y.abs() - std::get<0>(at::linalg_qr(x)).abs()) <= 1e-9);
  at::Tensor z = x.clone();  // in place
  ref::orthonormalize(z.data_ptr<double>(), z.data_ptr<double>(), 3, 70, 6);
  CHECK(at::equal(z, y));
}

TEST_CASE("cuda orthonormalize matches its reference", "[kernels][cuda][dense]") {
  if (!at::hasCUDA() || !gear::kernels::cuda_available()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  for (long long m : {1LL, 3LL, 64LL, 1000LL, 33000LL}) {
    for (int w : {1, 4, 8, 32}) {
      INFO("m " << m << ", w " << w);
      const int n = m > 5000 ? 2 : 7;
      at::manual_seed(uint64_t(m * 100 + w));
      at::Tensor x = at::randn({n, m, w}, at::kFloat) * at::pow(10.0, at::linspace(0, -2, w, at::kFloat));
      if (w >= 4 && m >= 8) {
        x.select(2, 2).copy_(x.select(2, 0) - x.select(2, 1));  // dependent
        x.select(2, 3).zero_();
      }
      const at::Tensor xd = x.to(at::kDouble);
      at::Tensor want = at::empty_like(xd);
      ref::orthonormalize(xd.data_ptr<double>(), want.data_ptr<double>(), n, m, w);
      const at::Tensor xc = x.cuda();
      at::Tensor got = at::full({n, m, w}, NAN, xc.options());
      gear::kernels::orthonormalize(xc.data_ptr<float>(), got.data_ptr<float>(), n, m, w, nullptr);
      CHECK(max_abs(got.cpu().to(at::kDouble) - want) <= 2e-5);
      gear::kernels::orthonormalize(xc.data_ptr<float>(), xc.data_ptr<float>(), n, m, w, nullptr);  // in place
      CHECK(at::equal(xc.cpu(), got.cpu()));
    }
  }
  CHECK_THROWS_WITH(gear::kernels::orthonormalize(nullptr, nullptr, 1, 4, 33, nullptr), Catch::Contains("invalid sizes"));
}
