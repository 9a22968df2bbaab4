// The sparse outlier term: which entries are picked, what replaces them, and exact restoration.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <set>

#include "core/compression/outlier_filter.h"
#include "core/util/error.h"

namespace {

// Rows of small fp16-representable values (multiples of 1/64 in [-1, 1)), distinct within a row.
at::Tensor small_rows(int64_t rows, int64_t cols) {
  at::manual_seed(11);
  return at::stack({at::randperm(cols, at::kLong).to(at::kFloat), at::randperm(cols, at::kLong).to(at::kFloat)})
             .slice(0, 0, rows)
             .sub(double(cols) / 2)
             .div(64)
             .contiguous();
}

std::set<int64_t> row_set(const at::Tensor& index_row) {
  std::set<int64_t> s;
  const at::Tensor i = index_row.to(at::kLong);
  for (int64_t j = 0; j < i.numel(); ++j) s.insert(i[j].item<int64_t>());
  return s;
}

}  // namespace

TEST_CASE("outlier filter: per_side formula and sparsity range", "[compression]") {
  CHECK(gear::outliers_per_side(100, 2) == 1);
  CHECK(gear::outliers_per_side(100, 4) == 2);
  CHECK(gear::outliers_per_side(64, 2) == 0);
  CHECK(gear::outliers_per_side(4096, 2) == 40);
  CHECK(gear::outliers_per_side(1000, 0.7) == 3);
  CHECK(gear::outliers_per_side(1000, 0.6) == 3);
  CHECK(gear::outliers_per_side(100, 50) == 25);
  CHECK(gear::outliers_per_side(100, 0) == 0);
  CHECK_THROWS_WITH(gear::outliers_per_side(100, 60), "outlier filter: sparsity must be in [0, 50] percent, got 60");
  CHECK_THROWS_WITH(gear::extract_outliers(at::zeros({2, 8}), -1),
                    "outlier filter: sparsity must be in [0, 50] percent, got -1");
  CHECK_THROWS_AS(gear::outlier_bytes(2, 8, 50.5), gear::Error);
  CHECK_THROWS_WITH(gear::extract_outliers(at::zeros({8}), 2), Catch::Contains("[rows, cols]"));
}

TEST_CASE("outlier filter: picks the planted extremes, one per side", "[compression]") {
  const at::Tensor m = small_rows(2, 100);
  m[0][17] = 100;
  m[0][42] = -100;
  m[1][0] = 50;
  m[1][99] = -60;
  const gear::OutlierSplit split = gear::extract_outliers(m, 2);
  const gear::SparseOutliers& s = split.sparse;
  REQUIRE(s.per_side == 1);
  REQUIRE(s.rows == 2);
  REQUIRE(s.cols == 100);
  CHECK(s.count() == 4);
  CHECK(at::equal(s.index.to(at::kLong), at::tensor({17, 42, 0, 99}, at::kLong).view({2, 2})));
  CHECK(at::equal(s.values.to(at::kFloat), at::tensor({100.f, -100.f, 50.f, -60.f}).view({2, 2})));
  // Outlier positions now hold the mean of the other 98 entries of their row; the rest is untouched.
  for (int64_t r = 0; r < 2; ++r) {
    const std::set<int64_t> picked = row_set(s.index[r]);
    at::Tensor keep = at::ones({100}, at::kBool);
    for (int64_t c : picked) keep[c] = false;
    const float mean = m[r].masked_select(keep).mean().item<float>();
    for (int64_t c : picked) CHECK(split.inliers[r][c].item<float>() == Approx(mean).margin(1e-6));
    CHECK(at::equal(split.inliers[r].masked_select(keep), m[r].masked_select(keep)));
  }
  // The range the quantizer sees no longer includes the outliers.
  CHECK(split.inliers.abs().max().item<float>() < 1);
}

TEST_CASE("outlier filter: two per side, restore gives back the exact input", "[compression]") {
  const at::Tensor m = small_rows(2, 100);
  m[0][3] = 7;
  m[0][5] = 9;
  m[0][60] = -8;
  m[0][61] = -6.5;
  m[1][10] = 3;
  m[1][11] = 2.5;
  m[1][12] = -4;
  m[1][13] = -3.25;
  const gear::OutlierSplit split = gear::extract_outliers(m, 4);
  REQUIRE(split.sparse.per_side == 2);
  // Largest first (descending), then smallest (ascending).
  const at::Tensor expected = at::tensor({5, 3, 60, 61, 10, 11, 12, 13}, at::kLong).view({2, 4});
  CHECK(at::equal(split.sparse.index.to(at::kLong), expected));
  at::Tensor back = split.inliers.clone();
  gear::restore_outliers(back, split.sparse);
  CHECK(at::equal(back, m));
  // The dense view is the input at the outliers and 0 elsewhere.
  const at::Tensor dense = gear::outliers_dense(split.sparse);
  CHECK(dense.scalar_type() == at::kFloat);
  CHECK(at::equal(dense.ne(0), m.abs() > 2));
  CHECK(at::equal(dense.masked_select(dense.ne(0)), m.masked_select(m.abs() > 2)));
}

TEST_CASE("outlier filter: indices stay distinct in constant rows", "[compression]") {
  const at::Tensor m = at::ones({3, 4});
  const gear::OutlierSplit split = gear::extract_outliers(m, 50);  // k = 1 of 4: two of the four entries
  REQUIRE(split.sparse.per_side == 1);
  for (int64_t r = 0; r < 3; ++r) CHECK(row_set(split.sparse.index[r]).size() == 2);
  CHECK(at::equal(split.inliers, m));
  const at::Tensor wide = at::zeros({2, 40});
  for (int64_t r = 0; r < 2; ++r) CHECK(row_set(gear::extract_outliers(wide, 50).sparse.index[r]).size() == 20);
}

TEST_CASE("outlier filter: zero sparsity keeps everything as inliers", "[compression]") {
  const at::Tensor m = small_rows(2, 30);
  const gear::OutlierSplit split = gear::extract_outliers(m, 2);  // 30 * 2 / 200 < 1
  CHECK(split.sparse.per_side == 0);
  CHECK(split.sparse.count() == 0);
  CHECK(split.sparse.bytes() == 0);
  CHECK(at::equal(split.inliers, m));
  at::Tensor back = split.inliers.clone();
  gear::restore_outliers(back, split.sparse);
  CHECK(at::equal(back, m));
  CHECK(at::equal(gear::outliers_dense(split.sparse), at::zeros_like(m)));
}

TEST_CASE("outlier filter: int16 indices for short rows, int32 beyond 32767, exact bytes", "[compression]") {
  const gear::OutlierSplit short_rows = gear::extract_outliers(small_rows(2, 100), 4);
  CHECK(short_rows.sparse.index.scalar_type() == at::kShort);
  CHECK(short_rows.sparse.values.scalar_type() == at::kHalf);
  CHECK(short_rows.sparse.bytes() == 2 * 4 * (2 + 2));
  CHECK(gear::outlier_bytes(2, 100, 4) == short_rows.sparse.bytes());

  at::manual_seed(5);
  const at::Tensor long_rows = at::randn({2, 40000});
  long_rows[1][39999] = 1000;
  const gear::OutlierSplit split = gear::extract_outliers(long_rows, 0.01);  // 2 per side
  REQUIRE(split.sparse.per_side == 2);
  CHECK(split.sparse.index.scalar_type() == at::kInt);
  CHECK(split.sparse.index[1][0].item<int64_t>() == 39999);
  CHECK(split.sparse.bytes() == 2 * 4 * (2 + 4));
  CHECK(gear::outlier_bytes(2, 40000, 0.01) == split.sparse.bytes());
  CHECK(gear::outlier_bytes(7, 32767, 2) == 7 * 2 * 327 * 4);
  CHECK(gear::outlier_bytes(7, 32768, 2) == 7 * 2 * 327 * 6);
}

TEST_CASE("outlier filter: restore checks the shape", "[compression]") {
  const gear::OutlierSplit split = gear::extract_outliers(small_rows(2, 100), 4);
  at::Tensor wrong = at::zeros({2, 99});
  CHECK_THROWS_AS(gear::restore_outliers(wrong, split.sparse), gear::Error);
}

TEST_CASE("outlier filter: CUDA picks the same outliers as the CPU", "[compression][cuda]") {
  if (!at::hasCUDA()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  at::manual_seed(8);
  const at::Tensor m = at::randn({64, 256});  // distinct values: no ties to break differently
  const gear::OutlierSplit cpu = gear::extract_outliers(m, 4), gpu = gear::extract_outliers(m.cuda(), 4);
  CHECK(gpu.sparse.index.is_cuda());
  CHECK(at::equal(gpu.sparse.index.cpu(), cpu.sparse.index));
  CHECK(at::equal(gpu.sparse.values.cpu(), cpu.sparse.values));
  CHECK(at::allclose(gpu.inliers.cpu(), cpu.inliers, 1e-6, 1e-6));
  at::Tensor back = gpu.inliers.clone();
  gear::restore_outliers(back, gpu.sparse);
  at::Tensor cpu_back = cpu.inliers.clone();
  gear::restore_outliers(cpu_back, cpu.sparse);
  CHECK(at::allclose(back.cpu(), cpu_back, 1e-6, 1e-6));
}
