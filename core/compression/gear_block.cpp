#include "core/compression/gear_block.h"

#include <ATen/ATen.h>

namespace gear {

QuantSpec fit_spec(const QuantSpec& spec, int64_t nkv, int64_t T, int64_t hd) {
  QuantSpec s = spec;
  if (s.group >= matrix_cols(s.axis, nkv, T, hd)) s.group = 0;
  return s;
}

GearBlock compress_block(const at::Tensor& x_in, const BlockSettings& st) {
  const at::Tensor x = x_in.to(at::kFloat);
  const int64_t nkv = x.size(0), T = x.size(1), hd = x.size(2);
  GearBlock b;
  const QuantSpec spec = fit_spec(st.quant, nkv, T, hd);
  at::Tensor m = to_matrix(x, spec.axis);
  if (st.sparsity > 0) {
    // Outliers out first so they do not stretch the quantization ranges of their vectors.
    OutlierSplit split = extract_outliers(m, st.sparsity);
    m = split.inliers;
    b.s = std::move(split.sparse);
  }
  b.q = quantize_block(from_matrix(m, spec.axis, nkv, T, hd), spec);
  if (st.low_rank.rank > 0) {
    at::Tensor deq = to_matrix(dequantize_block(b.q), spec.axis);
    if (b.s) restore_outliers(deq, *b.s);
    b.l = low_rank(x - from_matrix(deq, spec.axis, nkv, T, hd), st.low_rank);
  }
  return b;
}

at::Tensor decompress_block(const GearBlock& b) {
  const QuantSpec& spec = b.q.spec;
  at::Tensor x = dequantize_block(b.q);
  if (b.l.rank > 0) x = x + reconstruct(b.l);
  if (!b.s) return x;
  // The outliers are exact: written back last, over the low-rank term too.
  at::Tensor m = to_matrix(x, spec.axis);
  restore_outliers(m, *b.s);
  return from_matrix(m, spec.axis, b.q.nkv, b.q.T, b.q.hd);
}

BlockParts block_parts(const GearBlock& b) {
  const QuantSpec& spec = b.q.spec;
  BlockParts p;
  at::Tensor m = to_matrix(dequantize_block(b.q), spec.axis);
  if (b.s) restore_outliers(m, *b.s);
  p.quantized = from_matrix(m, spec.axis, b.q.nkv, b.q.T, b.q.hd);
  p.low_rank = b.l.rank > 0 ? reconstruct(b.l) : at::zeros_like(p.quantized);
  p.sparse = b.s ? from_matrix(outliers_dense(*b.s), spec.axis, b.q.nkv, b.q.T, b.q.hd) : at::zeros_like(p.quantized);
  return p;
}

}  // namespace gear
