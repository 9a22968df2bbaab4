#pragma once
// ATen-facing wrappers of the fused CUDA kernels in kernels/ (the decode hot path). Each returns
// an undefined tensor / false when the fused path does not apply (CPU tensors, a CPU-only
// build), and the caller falls back to the ATen reference ops, which compute the same thing.
#include <ATen/core/Tensor.h>

#include "core/model/config.h"

namespace gear::cuda_ops {

// True when this build has the kernels and `t` lives on a CUDA device.
bool applies(const at::Tensor& t);

// The current CUDA stream (of the current device) as the `void* stream` argument the kernels of
// kernels/kernels.h take; nullptr in a build without CUDA. Lets callers launch kernels without
// including ATen's CUDA headers.
void* current_stream();

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);  // x [rows, dim]
at::Tensor silu_mul(const at::Tensor& gate_up);                                  // [rows, 2h] -> [rows, h]

// Rotates q/k of raw qkv rows [B, (nh+2nkv)*hd] and stores k, v into caches [B, nkv, cap, hd]
// at `positions` (or, given int32 `slots` [B] on the device, at slots[b]). Returns rotated q [B, nh, hd].
at::Tensor rope_qkv_append(const at::Tensor& qkv, const at::Tensor& positions, const at::Tensor& cos,
                           const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache, int n_heads,
                           int n_kv_heads, RopeLayout layout, const at::Tensor& slots = at::Tensor());

// RoPE of x [T, H, hd] (heads contiguous, rows any stride: q or k inside qkv rows) by cos / sin [T, 1, hd/2] or
// [T, hd/2] (float32, row t for x's row t): kernels::rope_rows, the arithmetic of rope_qkv_append. Undefined when
// the kernel cannot take these tensors (then apply_rope computes the same rotation with ATen ops).
at::Tensor rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, RopeLayout layout);

// True when decode_attention takes this head size (the kernel is specialised for 64 and 128; other
// sizes, e.g. stories260K's 8, use the ATen path).
bool decode_attention_supports(int64_t head_dim);

// Flash-decoding attention of q [B, nh, hd] over caches [B, nkv, cap, hd], row b reading keys
// 0..positions[b]. `workspace` is grown as needed and reused across calls.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& positions, int64_t max_len, at::Tensor& workspace);

// While alive, a host synchronisation that ATen performs on CUDA (item(), a blocking copy, a stream or device
// sync) throws instead of waiting (c10's sync debug mode "error"); the previous mode comes back after. Tests use
// it to show that a path never waits for the GPU. Does nothing in a build without CUDA.
class SyncCheck {
 public:
  SyncCheck();
  ~SyncCheck();
  SyncCheck(const SyncCheck&) = delete;
  SyncCheck& operator=(const SyncCheck&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace gear::cuda_ops
