#include "core/cache/full_cache.h"

#include <ATen/ATen.h>

#include "core/cache/attention.h"
#include "core/model/cuda_ops.h"
#include "core/util/error.h"

namespace gear {

FullCache::FullCache(int batch, int n_kv_heads, int head_dim, int64_t capacity, at::TensorOptions options)
    : k_(at::zeros({batch, n_kv_heads, capacity, head_dim}, options)),
      v_(at::zeros({batch, n_kv_heads, capacity, head_dim}, options)),
      lengths_(batch, 0) {
  element_size_ = k_.element_size();
  per_token_bytes_ = 2 * int64_t(n_kv_heads) * head_dim * element_size_;
}

void FullCache::append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) {
  const int64_t capacity = k_.size(2);
  if (step.kind == StepInfo::Kind::Prefill) {
    const int64_t end = step.start + step.n_new;
    require(end <= capacity, "kv cache: " + std::to_string(end) + " tokens exceed the context of " +
                                 std::to_string(capacity));
    k_[step.row].narrow(1, step.start, step.n_new).copy_(k);
    v_[step.row].narrow(1, step.start, step.n_new).copy_(v);
    lengths_.at(step.row) = end;
    return;
  }
  require(step.max_len <= capacity, "kv cache: context of " + std::to_string(capacity) + " tokens is full");
  // Scatter each row's token at its own position, read from the device (no host sync).
  const int64_t B = k_.size(0), H = k_.size(1), D = k_.size(3);
  at::Tensor index = step.positions.view({B, 1, 1, 1}).expand({B, H, 1, D});
  k_.scatter_(2, index, k);
  v_.scatter_(2, index, v);
  for (auto& n : lengths_) ++n;
}

at::Tensor FullCache::append_fused(const StepInfo& step, const FusedQkv& in) {
  if (!cuda_ops::applies(in.qkv)) return at::Tensor();
  require(step.max_len <= k_.size(2), "kv cache: context of " + std::to_string(k_.size(2)) + " tokens is full");
  at::Tensor q = cuda_ops::rope_qkv_append(in.qkv, step.positions, in.cos, in.sin, k_, v_, in.n_heads, in.n_kv_heads,
                                           in.layout);
  for (auto& n : lengths_) ++n;
  return q.unsqueeze(2);
}

at::Tensor FullCache::attend(const StepInfo& step, const at::Tensor& q) {
  if (step.kind == StepInfo::Kind::Prefill) {
    const int64_t end = step.start + step.n_new;
    return prefill_attention(q, k_[step.row].narrow(1, 0, end), v_[step.row].narrow(1, 0, end), step.start);
  }
  if (cuda_ops::applies(q) && cuda_ops::decode_attention_supports(q.size(3))) {  // flash-decoding kernel
    const int64_t B = q.size(0), H = q.size(1), D = q.size(3);
    return cuda_ops::decode_attention(q.view({B, H, D}), k_, v_, step.positions, step.max_len, workspace_)
        .view({B, H, 1, D});
  }
  return decode_attention(q, k_.narrow(2, 0, step.max_len), v_.narrow(2, 0, step.max_len), step.positions + 1);
}

std::pair<at::Tensor, at::Tensor> FullCache::view(int row) const {
  const int64_t n = lengths_.at(row);
  return {k_[row].narrow(1, 0, n), v_[row].narrow(1, 0, n)};
}

ByteBreakdown FullCache::bytes() const {
  ByteBreakdown b;
  for (int64_t n : lengths_) b.full += n * per_token_bytes_;
  b.reserved = 2 * k_.numel() * element_size_;
  return b;
}

}  // namespace gear
