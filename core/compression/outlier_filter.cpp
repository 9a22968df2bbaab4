#include "core/compression/outlier_filter.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "core/util/error.h"

namespace gear {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

// int16 indices halve the index storage whenever a row is short enough (always for per-token rows).
at::ScalarType index_type(int64_t cols) { return cols <= 32767 ? at::kShort : at::kInt; }
int64_t index_size(int64_t cols) { return cols <= 32767 ? 2 : 4; }

// Largest k, then smallest k among the rest: masking the chosen ones with +inf keeps the indices
// of a row distinct even when all its entries are equal.
at::Tensor pick_outliers(const at::Tensor& x, int64_t k) {
  const at::Tensor hi = std::get<1>(x.topk(k, 1, /*largest=*/true, /*sorted=*/true));
  const at::Tensor rest = x.scatter(1, hi, std::numeric_limits<float>::infinity());
  const at::Tensor lo = std::get<1>(rest.topk(k, 1, /*largest=*/false, /*sorted=*/true));
  return at::cat({hi, lo}, 1);
}

SparseOutliers empty_outliers(const at::Tensor& x) {
  SparseOutliers s;
  s.rows = x.size(0);
  s.cols = x.size(1);
  s.values = at::empty({s.rows, 0}, x.options().dtype(at::kHalf));
  s.index = at::empty({s.rows, 0}, x.options().dtype(index_type(s.cols)));
  return s;
}

}  // namespace

int64_t SparseOutliers::bytes() const {
  return values.numel() * values.element_size() + index.numel() * index.element_size();
}

int64_t outliers_per_side(int64_t cols, double sparsity_percent) {
  std::ostringstream s;
  s << sparsity_percent;
  require(sparsity_percent >= 0 && sparsity_percent <= 50,
          "outlier filter: sparsity must be in [0, 50] percent, got " + s.str());
  require(cols >= 0, "outlier filter: row length must be >= 0, got " + str(cols));
  // The epsilon keeps an exact product such as 0.7% of 1000 = 7/2 from flooring one lower
  // because 0.7 is not exact in binary.
  return int64_t(std::floor(double(cols) * sparsity_percent / 200.0 + 1e-9));
}

OutlierSplit extract_outliers(const at::Tensor& m, double sparsity_percent) {
  require(m.dim() == 2, "outlier filter: expected a [rows, cols] matrix, got " + str(m.dim()) + " dims");
  const int64_t k = outliers_per_side(m.size(1), sparsity_percent);
  const at::Tensor x = m.to(at::kFloat).contiguous();
  OutlierSplit out;
  if (k == 0) {
    out.inliers = x.clone();
    out.sparse = empty_outliers(x);
    return out;
  }
  const at::Tensor index = pick_outliers(x, k);
  const at::Tensor picked = x.gather(1, index);
  // Mean of the cols - 2k inliers (k <= cols/4, so there are always some).
  const at::Tensor mean = (x.sum(1, true) - picked.sum(1, true)) / double(x.size(1) - 2 * k);
  out.inliers = x.scatter(1, index, mean.expand({x.size(0), 2 * k}));
  out.sparse.rows = x.size(0);
  out.sparse.cols = x.size(1);
  out.sparse.per_side = k;
  out.sparse.values = picked.to(at::kHalf);
  out.sparse.index = index.to(index_type(x.size(1)));
  return out;
}

void restore_outliers(at::Tensor& m, const SparseOutliers& s) {
  require(m.dim() == 2 && m.size(0) == s.rows && m.size(1) == s.cols,
          "outlier filter: cannot restore outliers of a [" + str(s.rows) + ", " + str(s.cols) +
              "] matrix into a tensor of " + str(m.numel()) + " entries");
  if (s.per_side == 0) return;
  m.scatter_(1, s.index.to(at::kLong), s.values.to(m.scalar_type()));
}

at::Tensor outliers_dense(const SparseOutliers& s) {
  const at::TensorOptions on = s.values.defined() ? s.values.options() : at::TensorOptions();
  at::Tensor dense = at::zeros({s.rows, s.cols}, on.dtype(at::kFloat));
  restore_outliers(dense, s);
  return dense;
}

int64_t outlier_bytes(int64_t rows, int64_t cols, double sparsity_percent) {
  return rows * 2 * outliers_per_side(cols, sparsity_percent) * (2 /*fp16 value*/ + index_size(cols));
}

}  // namespace gear
