#pragma once
// The uncompressed cache: K/V in the model's dtype (FP16/BF16 on GPU, FP32 on CPU), preallocated
// for `capacity` tokens per row. The reference every compressed policy is judged against.
#include <ATen/core/Tensor.h>

#include "core/cache/kv_cache.h"

namespace gear {

class FullCache : public CachePolicy {
 public:
  FullCache(int batch, int n_kv_heads, int head_dim, int64_t capacity, at::TensorOptions options);

  std::string name() const override { return "fp" + std::to_string(8 * element_size_); }
  void append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) override;
  at::Tensor append_fused(const StepInfo& step, const FusedQkv& in) override;  // CUDA kernels
  at::Tensor attend(const StepInfo& step, const at::Tensor& q) override;
  std::pair<at::Tensor, at::Tensor> view(int row) const override;
  ByteBreakdown bytes() const override;
  void clear_row(int row) override { lengths_.at(row) = 0; }

 private:
  at::Tensor k_, v_;              // [B, n_kv_heads, capacity, hd]
  std::vector<int64_t> lengths_;  // tokens held per row (host copy; decode adds one to every row)
  int64_t per_token_bytes_ = 0;   // K and V of one token of one row
  int64_t element_size_ = 0;
  at::Tensor workspace_;          // decode-attention scratch on CUDA, grown on demand
};

}  // namespace gear
