// The low-rank term: power iteration against the truncated SVD on synthetic and real residuals,
// rank resolution, fp16 storage and byte accounting.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "core/compression/low_rank.h"
#include "core/compression/quantizer.h"
#include "core/io/loader.h"
#include "core/model/cuda_ops.h"
#include "kernels/kernels.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "test_paths.h"

namespace {

double fro(const at::Tensor& x) { return x.norm().item<double>(); }

double approx_error(const at::Tensor& r, const gear::LowRankSpec& spec) {
  return fro(r - gear::reconstruct(gear::low_rank(r, spec)));
}

// Per head U·diag(sigma)·Vᵀ with random orthonormal U [T, n], V [hd, n].
at::Tensor with_spectrum(int64_t nkv, int64_t T, int64_t hd, const at::Tensor& sigma, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t n = sigma.numel();
  const at::Tensor U = std::get<0>(at::linalg_qr(at::randn({nkv, T, n}), "reduced"));
  const at::Tensor V = std::get<0>(at::linalg_qr(at::randn({nkv, hd, n}), "reduced"));
  return at::matmul(U * sigma, V.transpose(1, 2));
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";
const char* kText = "reference/once_upon_a_time.text";

}  // namespace

TEST_CASE("low-rank: rank resolution from integers and ratios", "[compression]") {
  CHECK(gear::resolve_rank(2, 0, 100, 8) == 2);
  CHECK(gear::resolve_rank(8, 0, 100, 8) == 8);
  CHECK(gear::resolve_rank(0, 0, 100, 8) == 0);
  CHECK(gear::resolve_rank(4, 0, 3, 8) == 3);  // a short sequence clamps silently
  CHECK(gear::resolve_rank(4, 0, 0, 8) == 0);
  CHECK(gear::resolve_rank(99, 0.25, 100, 8) == 2);  // a ratio overrides the integer
  CHECK(gear::resolve_rank(0, 0.3, 100, 8) == 3);    // ceil(2.4)
  CHECK(gear::resolve_rank(0, 1.0, 100, 8) == 8);
  CHECK(gear::resolve_rank(0, 0.02, 200, 128) == 3);  // GEAR's "rank 0.02" on Llama heads: ceil(2.56)
  CHECK(gear::resolve_rank(0, 0.5, 3, 8) == 2);       // of min(T, hd) = 3
  CHECK(gear::resolve_rank(0, 1e-6, 100, 8) == 1);
  CHECK_THROWS_WITH(gear::resolve_rank(9, 0, 100, 8), "low-rank: rank 9 exceeds the head dimension 8");
  CHECK_THROWS_WITH(gear::resolve_rank(-1, 0, 100, 8), "low-rank: rank must be >= 0, got -1");
  CHECK_THROWS_WITH(gear::resolve_rank(0, 1.5, 100, 8), "low-rank: rank ratio must be in (0, 1], got 1.5");
}

TEST_CASE("low-rank: power iteration recovers a matrix of exact rank", "[compression]") {
  for (int64_t r : {1, 3, 6}) {
    INFO("rank " << r);
    at::manual_seed(uint64_t(r));
    const at::Tensor x = at::matmul(at::randn({3, 64, r}), at::randn({3, r, 16}));
    const gear::LowRankFactors f = gear::low_rank(x, {r, 3, false, 42});
    CHECK(f.rank == r);
    CHECK(fro(x - gear::reconstruct(f)) / fro(x) < 1e-3);
  }
}

TEST_CASE("low-rank: truncated SVD error is the spectrum's tail; power iteration is close", "[compression]") {
  const at::Tensor sigma = at::tensor({8.f, 4.f, 2.f, 1.f, 0.5f, 0.25f});
  const at::Tensor x = with_spectrum(2, 50, 8, sigma, 3);
  for (int64_t r : {1, 2, 4}) {
    INFO("rank " << r);
    // Eckart–Young: per head sqrt(sum of the dropped sigma^2); two heads.
    const double tail = std::sqrt(2 * sigma.slice(0, r).pow(2).sum().item<double>());
    const double svd = approx_error(x, {r, 3, true, 0});
    CHECK(svd == Approx(tail).epsilon(2e-3));
    CHECK(approx_error(x, {r, 3, false, 0}) <= 1.05 * svd);
  }
}

TEST_CASE("low-rank: oversampled power iteration on wide heads with a slowly decaying spectrum", "[compression]") {
  // hd 64 (oversampling covers only part of the head), sigma_i = 1/sqrt(i): a hard case for 3 rounds.
  const at::Tensor sigma = at::arange(1, 65, at::kFloat).rsqrt();
  const at::Tensor x = with_spectrum(4, 256, 64, sigma, 5);
  for (int64_t r : {2, 4, 8}) {
    const double svd = approx_error(x, {r, 3, true, 0});
    const double power = approx_error(x, {r, 3, false, 1});
    const double gear_ref = approx_error(x, {r, 3, false, 1, /*oversample=*/0});
    INFO("rank " << r << ": svd " << svd << " power " << power << " GEAR reference " << gear_ref);
    CHECK(power <= 1.05 * svd);
    CHECK(power <= gear_ref);
  }
}

TEST_CASE("low-rank: orthonormalising every round keeps many rounds stable", "[compression]") {
  const at::Tensor sigma = at::tensor({1000.f, 300.f, 100.f, 1.f, 0.5f, 0.25f});
  const at::Tensor x = with_spectrum(2, 50, 8, sigma, 8);
  const double svd = approx_error(x, {4, 3, true, 0});
  for (int iters : {1, 3, 10, 50}) {
    INFO(iters << " rounds");
    const double power = approx_error(x, {4, iters, false, 0, 0});
    REQUIRE(std::isfinite(power));
    if (iters >= 3) CHECK(power <= 1.05 * svd);
  }
}

TEST_CASE("low-rank: power iteration is within 5% of the truncated SVD on real stories260K residuals",
          "[compression][shared]") {
  if (!gear::test::have_shared(kModel) || !gear::test::have_shared(kText)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {"cpu", "f32"});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  std::vector<int> ids = tok->encode(read_text(gear::test::shared(kText)), true);
  REQUIRE(ids.size() >= 180);
  ids.resize(std::min<size_t>(ids.size(), 200));
  gear::KvCache cache = model.make_full_cache(1, 512);
  model.prefill(cache, 0, ids);
  // Worst power/SVD error ratio by rank, for the default and for GEAR's reference (no oversampling).
  std::map<int64_t, double> worst, worst_ref;
  for (int l = 0; l < model.config().n_layers; ++l) {
    const auto [K, V] = cache.layer(l).view(0);
    for (const auto& [name, X] : {std::pair{"K", K}, std::pair{"V", V}}) {
      REQUIRE(X.size(1) == int64_t(ids.size()));
      const at::Tensor x = X.to(at::kFloat);
      for (gear::QuantAxis axis : {gear::QuantAxis::Token, gear::QuantAxis::Channel}) {
        for (int bits : {2, 4}) {
          const at::Tensor residual = x - gear::dequantize_block(gear::quantize_block(x, {bits, axis, 0}));
          for (int64_t rank : {2, 4}) {
            const double svd = approx_error(residual, {rank, 3, true, 0});
            const double power = approx_error(residual, {rank, 3, false, uint64_t(l)});
            const double ref = approx_error(residual, {rank, 3, false, uint64_t(l), 0});
            INFO("layer " << l << " " << name << " " << gear::axis_name(axis) << " " << bits << "-bit rank "
                          << rank << ": |R| " << fro(residual) << " svd " << svd << " power " << power
                          << " GEAR reference " << ref);
            CHECK(power <= 1.05 * svd);
            CHECK(svd < 0.9 * fro(residual));  // the residual has structure to remove
            worst[rank] = std::max(worst[rank], power / svd);
            worst_ref[rank] = std::max(worst_ref[rank], ref / svd);
          }
        }
      }
    }
  }
  INFO("worst power/svd: rank 2 " << worst[2] << ", rank 4 " << worst[4] << "; GEAR reference: rank 2 "
                                  << worst_ref[2] << ", rank 4 " << worst_ref[4]);
  CHECK(worst[2] >= 1.0 - 1e-3);  // the SVD is optimal (up to fp16 storage of the factors)
  // GEAR's own 3 rounds without oversampling miss the 5% on these heads (hd 8): the reason for the
  // default oversampling. Pinned loosely so a change of algorithm shows up here.
  CHECK(worst_ref[4] > 1.05);
  CHECK(worst_ref[4] < 1.25);
}

TEST_CASE("low-rank: factors are fp16 with exact byte accounting", "[compression]") {
  at::manual_seed(9);
  const at::Tensor x = at::randn({4, 30, 8});
  for (bool exact : {false, true}) {
    const gear::LowRankFactors f = gear::low_rank(x, {3, 2, exact, 1});
    CHECK(f.rank == 3);
    CHECK(f.a.scalar_type() == at::kHalf);
    CHECK(f.b.scalar_type() == at::kHalf);
    CHECK(f.a.sizes() == at::IntArrayRef{4, 30, 3});
    CHECK(f.b.sizes() == at::IntArrayRef{4, 3, 8});
    CHECK(f.bytes() == 2 * 4 * 3 * (30 + 8));
    CHECK(f.bytes() == gear::low_rank_bytes(4, 30, 8, 3));
    const at::Tensor back = gear::reconstruct(f);
    CHECK(back.scalar_type() == at::kFloat);
    CHECK(back.sizes() == x.sizes());
  }
  // A sequence shorter than the rank clamps it, in the factors and in the closed form alike.
  const gear::LowRankFactors short_f = gear::low_rank(at::randn({2, 3, 8}), {5, 3, false, 0});
  CHECK(short_f.rank == 3);
  CHECK(short_f.bytes() == gear::low_rank_bytes(2, 3, 8, 5));
}

TEST_CASE("low-rank: rank 0 is an empty term", "[compression]") {
  const at::Tensor x = at::randn({2, 10, 8});
  const gear::LowRankFactors f = gear::low_rank(x, {0, 3, false, 0});
  CHECK(f.rank == 0);
  CHECK(f.bytes() == 0);
  CHECK(gear::low_rank_bytes(2, 10, 8, 0) == 0);
  CHECK(at::equal(gear::reconstruct(f), at::zeros({2, 10, 8})));
}

TEST_CASE("low-rank: the seed makes the random start deterministic", "[compression]") {
  at::manual_seed(4);
  const at::Tensor x = at::randn({2, 40, 8});
  const gear::LowRankFactors a = gear::low_rank(x, {2, 1, false, 7}), b = gear::low_rank(x, {2, 1, false, 7});
  const gear::LowRankFactors c = gear::low_rank(x, {2, 1, false, 8});
  CHECK(at::equal(a.a, b.a));
  CHECK(at::equal(a.b, b.b));
  CHECK_FALSE(at::equal(a.a, c.a));
  // The global generator does not leak in.
  at::manual_seed(123);
  CHECK(at::equal(gear::low_rank(x, {2, 1, false, 7}).a, a.a));
}

TEST_CASE("low-rank: bad ranks and iteration counts are errors", "[compression]") {
  const at::Tensor x = at::zeros({2, 10, 8});
  CHECK_THROWS_WITH(gear::low_rank(x, {9, 3, false, 0}), "low-rank: rank 9 exceeds the head dimension 8");
  CHECK_THROWS_WITH(gear::low_rank(x, {2, 0, false, 0}), "low-rank: power_iters must be >= 1, got 0");
  CHECK_THROWS_WITH(gear::low_rank(at::zeros({10, 8}), {2, 3, false, 0}), Catch::Contains("[n_kv_heads, T, hd]"));
  CHECK_THROWS_AS(gear::low_rank_bytes(2, 10, 8, 9), gear::Error);
}

TEST_CASE("low-rank: CUDA matches the CPU's approximation error", "[compression][cuda]") {
  if (!at::hasCUDA()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  const at::Tensor sigma = at::arange(1, 33, at::kFloat).rsqrt();
  const at::Tensor x = with_spectrum(4, 128, 32, sigma, 6);
  for (bool exact : {false, true}) {
    INFO((exact ? "svd" : "power iteration"));
    const gear::LowRankSpec spec{4, 3, exact, 2};
    const gear::LowRankFactors gpu = gear::low_rank(x.cuda(), spec);
    CHECK(gpu.a.is_cuda());
    CHECK(fro(x.cuda() - gear::reconstruct(gpu)) == Approx(approx_error(x, spec)).epsilon(1e-3));
  }
}

TEST_CASE("low-rank: on CUDA the power iteration never waits for the GPU", "[compression][cuda]") {
  if (!at::hasCUDA()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  // A streamed block of a 7B layer at batch 4 (4 rows x 32 heads, 64 tokens, hd 128) and a prompt block.
  at::manual_seed(1);
  for (int64_t T : {64, 1000}) {
    INFO("T " << T);
    const at::Tensor res = at::randn({4, 32, T, 128}, at::kCUDA);
    gear::LowRankSpec spec;
    spec.rank = 4;
    const std::vector<uint64_t> seeds = {1, 2, 3, 4};
    const auto warm = gear::low_rank_rows(res, spec, seeds);  // first call: cuBLAS handles, pinned blocks
    std::vector<gear::LowRankFactors> f;
    {
      gear::cuda_ops::SyncCheck no_sync;
      CHECK_THROWS(at::ones({1}, at::kCUDA).sum().item<float>());  // the check is live
      CHECK_NOTHROW(f = gear::low_rank_rows(res, spec, seeds));
    }
    REQUIRE(f.size() == 4);
    for (int i = 0; i < 4; ++i) {
      CHECK(at::equal(f[size_t(i)].a, warm[size_t(i)].a));  // deterministic
      spec.linalg = gear::LowRankSpec::Linalg::Lapack;
      spec.seed = seeds[size_t(i)];
      const gear::LowRankFactors lapack = gear::low_rank(res[i].cpu(), spec);
      spec.linalg = gear::LowRankSpec::Linalg::Auto;
      const double err_gpu = fro(res[i] - gear::reconstruct(f[size_t(i)])), err_cpu = fro(res[i].cpu() - gear::reconstruct(lapack));
      CHECK(err_gpu == Approx(err_cpu).epsilon(1e-3));
    }
  }
}

TEST_CASE("low-rank: the fused power iteration (small blocks on CUDA) gives the CPU's sync-free factors",
          "[compression][cuda]") {
  if (!at::hasCUDA()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  using Linalg = gear::LowRankSpec::Linalg;
  // Streamed blocks of 64 tokens (and odd small ones) with a decaying spectrum plus noise, several rows.
  for (int64_t T : {64, 37, 3}) {
    for (int64_t hd : {128, 64}) {
      const at::Tensor x = (with_spectrum(2 * 4, T, hd, at::linspace(4, 0.5, std::min<int64_t>(T, 8)), 7) +
                            0.01 * at::randn({2 * 4, T, hd}))
                               .reshape({2, 4, T, hd});
      for (int64_t rank : {1, 2, 4}) {
        for (int64_t over : {-1, 0}) {
          gear::LowRankSpec spec;
          spec.rank = rank;
          spec.oversample = over;
          const int64_t r = std::min(rank, T), w = std::min(r + (over < 0 ? r : over), std::min(T, hd));
          INFO("T " << T << " hd " << hd << " rank " << rank << " oversample " << over);
          REQUIRE(gear::kernels::fused_power_iteration_fits(T, hd, int(w)));
          spec.linalg = Linalg::SyncFree;
          const auto [ac, bc] = gear::low_rank_batched(x, spec, {11, 12});
          const auto [ag, bg] = gear::low_rank_batched(x.cuda(), spec, {11, 12});
          REQUIRE(ag.is_cuda());
          CHECK(ag.sizes() == ac.sizes());
          CHECK(bg.sizes() == bc.sizes());
          const at::Tensor rc = at::matmul(ac.to(at::kFloat), bc.to(at::kFloat));
          const at::Tensor rg = at::matmul(ag.cpu().to(at::kFloat), bg.cpu().to(at::kFloat));
          // fp16 factors from float32 steps in another order: a few fp16 roundings apart
          CHECK((rg - rc).abs().max().item<double>() <= 5e-3 * rc.abs().max().item<double>() + 1e-6);
          CHECK(fro(x - rg) == Approx(fro(x - rc)).epsilon(1e-3));
        }
      }
    }
  }
}

TEST_CASE("low_rank_rows: one batched power iteration gives each row what low_rank gives it alone", "[low_rank]") {
  at::manual_seed(3);
  const at::Tensor res = at::randn({3, 2, 40, 16});
  const std::vector<uint64_t> seeds = {5, 9, 5};
  for (bool svd : {false, true}) {
    gear::LowRankSpec spec;
    spec.rank = 4;
    spec.exact_svd = svd;
    const auto batched = gear::low_rank_rows(res, spec, seeds);
    REQUIRE(batched.size() == 3);
    for (int i = 0; i < 3; ++i) {
      spec.seed = seeds[size_t(i)];
      const gear::LowRankFactors alone = gear::low_rank(res[i], spec);
      INFO("row " << i << (svd ? " (svd)" : ""));
      CHECK(batched[size_t(i)].rank == alone.rank);
      // fp16 factors: equal up to one rounding of the float32 results
      CHECK((gear::reconstruct(batched[size_t(i)]) - gear::reconstruct(alone)).abs().max().item<double>() < 1e-2);
      CHECK((batched[size_t(i)].a.to(at::kFloat) - alone.a.to(at::kFloat)).abs().max().item<double>() < 2e-3);
    }
  }
  gear::LowRankSpec spec;
  spec.rank = 2;
  CHECK_THROWS_WITH(gear::low_rank_rows(res[0], spec, {1, 2}), Catch::Contains("[rows, n_kv_heads, T, hd]"));
  CHECK_THROWS_WITH(gear::low_rank_rows(res, spec, {1, 2}), Catch::Contains("2 seeds for 3 rows"));
}

TEST_CASE("low-rank: the sync-free factorisations (CholeskyQR2, Jacobi Rayleigh-Ritz) give LAPACK's approximation",
          "[compression]") {
  // Same random start, so both bases span the same subspaces and A·B agrees to float32 rounding.
  using Linalg = gear::LowRankSpec::Linalg;
  auto both = [](const at::Tensor& x, gear::LowRankSpec spec) {
    spec.linalg = Linalg::Lapack;
    const at::Tensor lapack = gear::reconstruct(gear::low_rank(x, spec));
    spec.linalg = Linalg::SyncFree;
    const gear::LowRankFactors f = gear::low_rank(x, spec);
    CHECK(f.a.scalar_type() == at::kHalf);
    CHECK(f.rank == spec.rank);
    return std::make_pair(lapack, gear::reconstruct(f));
  };
  SECTION("slowly decaying spectrum, oversampled and GEAR's reference width") {
    const at::Tensor x = with_spectrum(4, 256, 64, at::arange(1, 65, at::kFloat).rsqrt(), 5);
    for (int64_t r : {1, 4, 8}) {
      for (int64_t over : {-1, 0, 3}) {
        INFO("rank " << r << " oversample " << over);
        gear::LowRankSpec spec{r, 3, false, 9};
        spec.oversample = over;
        const auto [lapack, sync_free] = both(x, spec);
        // fp16 factors: one rounding of A and B each (~1e-3 relative), same on both sides
        CHECK((lapack - sync_free).abs().max().item<double>() <= 2e-3 * x.abs().max().item<double>());
        CHECK(fro(x - sync_free) == Approx(fro(x - lapack)).epsilon(2e-3));
      }
    }
  }
  SECTION("exact rank below the basis width (dependent columns), and a zero head") {
    at::manual_seed(4);
    at::Tensor x = at::matmul(at::randn({3, 64, 3}), at::randn({3, 3, 16}));
    x[1].zero_();
    const auto [lapack, sync_free] = both(x, {6, 3, false, 42});
    CHECK(fro(x - sync_free) / fro(x) < 1e-3);
    CHECK(sync_free[1].abs().max().item<double>() == 0);
    CHECK(std::isfinite(fro(sync_free)));
  }
  SECTION("many rounds stay finite and accurate") {
    const at::Tensor x = with_spectrum(2, 50, 8, at::tensor({1000.f, 300.f, 100.f, 1.f, 0.5f, 0.25f}), 8);
    const double svd = approx_error(x, {4, 3, true, 0});
    gear::LowRankSpec spec{4, 50, false, 0, 0};
    spec.linalg = Linalg::SyncFree;
    CHECK(approx_error(x, spec) <= 1.05 * svd);
  }
}
