#pragma once
// Standard scaled-dot-product attention on full-precision K/V, grouped-query aware.
// Policies that reconstruct K/V call these; the math runs in float32 on CPU and in the model
// dtype (with float32 softmax) on CUDA.
#include <ATen/core/Tensor.h>

namespace gear {

// q [n_heads, n, hd] for positions start..start+n-1 of one sequence; k, v [n_kv_heads, S, hd]
// with S >= start+n (keys 0..S-1). Causal: query i sees keys <= start+i. Returns [n_heads, n, hd].
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start);

// q [B, n_heads, 1, hd]; k, v [B, n_kv_heads, S, hd]; lengths [B] int64 (keys < lengths[b] are
// valid). Returns [B, n_heads, 1, hd]. No host synchronisation.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lengths);

}  // namespace gear
