#pragma once
// Fused CUDA kernels of the decode hot path, on raw device pointers and streams.
//
// Plain C++: no CUDA or LibTorch header is needed to include this (a stream is passed as the
// `cudaStream_t` value cast to void*; nullptr is the legacy default stream). The definitions live in
// kernels/*.cu and are linked only in CUDA builds (gearlab_kernels); the float64 CPU references of
// the same computations are in kernels/reference.h (gearlab_kernels_ref, always built).
//
// Conventions shared by every kernel:
//  - all data pointers are device pointers; tensors are dense, row-major, with the shapes given;
//  - activations and caches have the element type `DType`; arithmetic accumulates in float32;
//  - an invalid argument or a failed launch (cudaGetLastError after every launch) throws
//    std::runtime_error with a message that starts with the kernel's name, e.g.
//    "gear::kernels::rmsnorm: launch failed: <CUDA error string>"; kernels/ does not depend on core/;
//  - zero rows / B == 0 is a no-op;
//  - nothing synchronises with the host, nothing allocates: every call is graph-capturable.
#include <cstddef>
#include <cstdint>

namespace gear::kernels {

enum class DType { F32, F16, BF16 };

// Bytes of one element of `t` (4, 2, 2), and its short name.
constexpr std::size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
constexpr const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

// out[r,:] = to_dtype(x[r,:] * rsqrt(mean(x[r,:]^2) + eps)) * w   (x, w, out: [rows, dim], [dim])
// The normalisation runs in float32, is rounded to the dtype, and only then multiplied by w, as
// Llama / Hugging Face do ((x_normed.to(dtype)) * w). One block per row; 16-byte loads when
// dim * sizeof(dtype) is a multiple of 16 and the pointers are 16-byte aligned.
void rmsnorm(DType t, const void* x, const void* w, void* out, int rows, int dim, float eps, void* stream);

// gate_up [rows, 2*hidden] (gate first, then up); out [rows, hidden]:
// out[r,i] = to_dtype(silu(gate[r,i])) * up[r,i]   (silu in float32, rounded to the dtype before the
// product, as Hugging Face's act_fn(gate) * up does).
void silu_mul(DType t, const void* gate_up, void* out, int rows, int hidden, void* stream);

// qkv [B, (nh + 2*nkv)*hd] (q heads, then k heads, then v heads); positions [B] int64 (device);
// cos/sin [max_pos, hd/2] float32 (device), max_pos >= cap. Pair i of a head uses cos[pos][i], sin[pos][i]:
//   half_split == false: the pairs are (2i, 2i+1)  (llama2.c / Meta layout);
//   half_split == true:  the pairs are (i, i+hd/2) (Hugging Face rotate_half).
// Rotation (a, b) -> (a*c - b*s, a*s + b*c) in float32, rounded once to the dtype.
// Writes the rotated q to q_out [B, nh, hd] and the rotated k and raw v into
// k_cache / v_cache [B, nkv, cap, hd] at token index positions[b]; nothing else of the caches is
// touched. A row whose position is outside [0, cap) writes nothing to the caches and NaN to its q_out
// (a caller bug made visible, since the device cannot throw). hd must be even.
void rope_qkv_append(DType t, const void* qkv, const int64_t* positions, const float* cos, const float* sin,
                     void* q_out, void* k_cache, void* v_cache, int B, int nh, int nkv, int hd, long long cap,
                     bool half_split, void* stream);

// Bytes of float32 scratch that decode_attention needs, at most, for these sizes on the current device
// (the split policy depends on its SM count): valid for every call on that device with the same or
// smaller B, nh, hd and max_len. 0 when no call can need scratch. Allocate once, grow when it grows.
std::size_t decode_attention_workspace_bytes(int B, int nh, int hd, long long max_len);

// Flash-decoding attention for one new token per row.
// q [B, nh, hd]; k_cache / v_cache [B, nkv, cap, hd] (16-byte aligned); out [B, nh, hd]; nh % nkv == 0.
// Row b attends keys 0..positions[b] inclusive (positions read on the device, never on the host);
// GQA: query head h uses kv head h / (nh / nkv). out = softmax(q k^T * scale) v, computed in float32
// (scores, online-softmax max / sum and accumulator), rounded once to the dtype. hd must be 64 or 128.
// max_len is a host-known upper bound of positions[b] + 1: it sizes the grid (the sequence is split in
// chunks of 64..512 keys so that even batch 1 fills the GPU). A row whose position is outside [0, cap),
// or whose length exceeds what the grid covers (only possible when positions[b] >= max_len), gets NaN.
// One block serves all query heads of a kv head (up to 8; larger groups take ceil(group / 8) blocks),
// so K/V are read once per group of up to 8 query heads.
// workspace: device scratch of at least decode_attention_workspace_bytes(B, nh, hd, max_len) bytes
// (16-byte aligned), its size given as workspace_bytes (the call throws if it needs more); it may be
// nullptr when the call needs none. Contents need no initialisation and are garbage afterwards.
// Launches one kernel when the context fits one split, else a split kernel plus a small combine kernel
// (a programmatic dependent launch on sm_90+).
void decode_attention(DType t, const void* q, const void* k_cache, const void* v_cache, const int64_t* positions,
                      void* out, int B, int nh, int nkv, int hd, long long cap, long long max_len, float scale,
                      void* workspace, std::size_t workspace_bytes, void* stream);

// True when this build has the kernels and a CUDA device is present (defined in a .cu: a build without
// CUDA does not link the kernels at all, so callers guard with GEARLAB_WITH_CUDA).
bool cuda_available();

}  // namespace gear::kernels
