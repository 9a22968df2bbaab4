#pragma once
// GEAR on one block of K or V: X [n_kv_heads, T, hd] becomes Q + L + S.
//   S: per vector of the quantization layout, the s/2 % largest and s/2 % smallest entries, exact (fp16);
//   Q: the rest (outliers replaced by their vector's inlier mean) quantized by the backbone;
//   L: per head, a rank-r approximation of what remains, R = X - dequant(Q) - S.
// Reconstruction is dequant(Q) + A·B with the outliers written back exactly last.
#include <ATen/core/Tensor.h>

#include <optional>

#include "core/compression/low_rank.h"
#include "core/compression/outlier_filter.h"
#include "core/compression/quantizer.h"

namespace gear {

struct BlockSettings {
  QuantSpec quant;
  double sparsity = 0;  // percent; 0 = no S
  LowRankSpec low_rank;  // rank 0 = no L
};

struct GearBlock {
  QuantizedBlock q;
  std::optional<SparseOutliers> s;
  LowRankFactors l;
  int64_t tokens() const { return q.T; }
  int64_t code_bytes() const { return q.m.codes.numel() * q.m.codes.element_size(); }
  int64_t scale_bytes() const { return q.bytes() - code_bytes(); }
  int64_t sparse_bytes() const { return s ? s->bytes() : 0; }
  int64_t low_rank_bytes() const { return l.bytes(); }
  int64_t bytes() const { return q.bytes() + sparse_bytes() + low_rank_bytes(); }
};

// The backbone's group clamped to the block: a group at least as long as its axis is the whole axis.
QuantSpec fit_spec(const QuantSpec& spec, int64_t nkv, int64_t T, int64_t hd);

GearBlock compress_block(const at::Tensor& x, const BlockSettings& settings);
// float32 [nkv, T, hd] on the block's device.
at::Tensor decompress_block(const GearBlock& b);

// The pieces separately, for analysis: each float32 [nkv, T, hd].
struct BlockParts {
  at::Tensor quantized;  // dequant(Q) with the outliers written back (what Q + S alone gives)
  at::Tensor low_rank;   // A·B (zeros without L)
  at::Tensor sparse;     // S as a dense tensor (zeros without S)
};
BlockParts block_parts(const GearBlock& b);

}  // namespace gear
