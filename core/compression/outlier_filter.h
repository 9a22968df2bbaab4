#pragma once
// GEAR's sparse term S: the few entries of each row that would stretch the quantization range are
// taken out before quantizing and kept exactly (fp16) with their positions.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace gear {

// Per ROW of a [rows, cols] matrix: the k largest and the k smallest entries, k = floor(cols * s / 200)
// for sparsity s in percent (s/2 % each side), stored as fp16 values + indices into the row
// (int16 when cols <= 32767, else int32). Columns 0..k-1 of values/index are the largest (in
// descending order), columns k..2k-1 the smallest (ascending).
struct SparseOutliers {
  int64_t rows = 0, cols = 0, per_side = 0;
  at::Tensor values;  // fp16 [rows, 2*per_side]
  at::Tensor index;   // int16/int32 [rows, 2*per_side]
  int64_t bytes() const;  // values + index storage
  int64_t count() const { return rows * 2 * per_side; }
};

// floor(cols * s / 200); s in [0, 50] percent, else gear::Error.
int64_t outliers_per_side(int64_t cols, double sparsity_percent);

struct OutlierSplit {
  at::Tensor inliers;  // float32 [rows, cols]: the matrix with the outliers replaced by the mean of
                       // the row's remaining (inlier) entries, so they no longer stretch the range
  SparseOutliers sparse;
};

// The smallest k are chosen among the entries NOT already chosen as the largest k, so the 2k
// indices of a row are always distinct (it matters only for rows with many equal values). Ties go
// to whatever at::topk picks, which is deterministic for a given input and device.
OutlierSplit extract_outliers(const at::Tensor& m, double sparsity_percent);  // s in [0, 50]; else gear::Error
// Writes the outliers back (their fp16 values) into m [rows, cols] float, in place.
void restore_outliers(at::Tensor& m, const SparseOutliers& s);
// Dense float32 [rows, cols] with the outlier values at their positions and 0 elsewhere (for analysis).
at::Tensor outliers_dense(const SparseOutliers& s);
// Closed-form bytes for a given shape and sparsity.
int64_t outlier_bytes(int64_t rows, int64_t cols, double sparsity_percent);

}  // namespace gear
