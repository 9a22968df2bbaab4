#pragma once
// Float64 CPU references of the kernels in kernels/kernels.h, on host arrays (no CUDA, no LibTorch).
//
// Inputs are the values of the dtype-`t` tensors converted to double (so they are exactly representable
// in `t`). Where the kernel rounds an intermediate or its result to `t`, the reference rounds the exact
// (float64) value the same way with round_to(t, .), so a kernel and its reference agree to a unit or two
// in the last place of `t`; everything else is computed in float64. Shapes, layouts and argument meanings
// are those of kernels.h. Invalid arguments throw std::runtime_error naming the reference.
#include <cstdint>

#include "kernels/kernels.h"

namespace gear::kernels::ref {

// v rounded to the nearest value of `t` (ties to even; beyond the largest finite value -> +-inf, as a
// float32 -> half/bf16 conversion does; subnormals kept), returned as double. NaN and inf pass through.
double round_to(DType t, double v);

void rmsnorm(DType t, const double* x, const double* w, double* out, int rows, int dim, double eps);

void silu_mul(DType t, const double* gate_up, double* out, int rows, int hidden);

// cos / sin: [>= cap, hd/2] float32, as the kernel reads them. Writes q_out and position positions[b] (or
// slots[b]) of the caches only. A position outside [0, cap) (with slots: [0, table_rows), and a slot outside
// [0, cap)) throws.
void rope_qkv_append(DType t, const double* qkv, const int64_t* positions, const float* cos, const float* sin,
                     double* q_out, double* k_cache, double* v_cache, int B, int nh, int nkv, int hd, long long cap,
                     bool half_split, const int32_t* slots = nullptr, long long table_rows = 0);

// softmax(q k^T * scale) v over keys 0..positions[b] of each row; no rounding (the kernel keeps the
// probabilities and the accumulator in float32 and rounds only its output). Any hd >= 1.
void decode_attention(const double* q, const double* k_cache, const double* v_cache, const int64_t* positions,
                      double* out, int B, int nh, int nkv, int hd, long long cap, double scale);

// ---- GEAR / KIVI compressed layout (CompressedKV of kernels.h, here with HOST pointers) ----
//
// fp16 helpers: the bits of round_to(F16, v) (ties to even), the value of fp16 bits, and core's directed
// rounding of a float32 value (fp16_directed in core/compression/quantizer.cpp: the largest fp16 <= v
// when down, the smallest fp16 >= v when up, reached by one step of the bit pattern from the nearest).
uint16_t half_bits(double v);
double half_value(uint16_t h);
uint16_t half_directed(float v, bool up);

// The references of the kernels of the same names, with the same arguments (x, out: host arrays of the
// values as double; dst_row / dst_tile / src_row / src_tile host int32 arrays or nullptr). Quantization
// converts x to float32 (exact for dtype values) and follows core/'s arithmetic in float32, so codes,
// scales and zeros are bit-exact with core's quantize_block; dequantization returns core's float32 values.
// Every size check of the kernels throws here (std::runtime_error naming the reference), including an
// out-of-range destination or source.
void quantize_keys(const double* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                   const int32_t* dst_tile, bool whole_block = false);
void quantize_values(const double* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                     const int32_t* dst_tile);
void dequantize_keys(const CompressedKV& kv, double* out, long long out_cap, int n, int T, const int32_t* src_row,
                     const int32_t* src_tile);
void dequantize_values(const CompressedKV& kv, double* out, long long out_cap, int n, int T, const int32_t* src_row,
                       const int32_t* src_tile);

// Per-vector outliers (see kernels.h): values fp16 bits / index [n, rows, 2k], inliers [n, nkv, T, hd]
// (float32 values; nullptr: not written). Ties: the lower column first. The inlier mean is the float64 sum
// of the other entries in column order, divided by their count and rounded once to float32.
void extract_outliers(const double* x, long long x_cap, int n, int T, int nkv, int hd, bool per_channel, int k,
                      uint16_t* values, int32_t* index, double* inliers);

// The sparse store (see kernels.h); throws when a (row, head) pool would pass sparse_cap.
void sparse_to_tiles(const CompressedKV& kv, bool keys, const uint16_t* values, const int32_t* index, int n, int T, int k,
                     const int32_t* dst_row, const int32_t* dst_tile);

// outlier_corrections' values in float64 (outlier - dequant as core's float32 - lowrank), written to k_corr /
// v_corr: host arrays parallel to the pools ([B, nkv, sparse_cap] each); NaN where a tile's low-rank block is
// out of range, 0 for a position outside its tile; tiles outside the layout are skipped.
void outlier_corrections(const CompressedKV& kv, const int32_t* dst_row, const int32_t* dst_tile, int n, int ntiles, double* k_corr,
                         double* v_corr);

// K and V of row b as attention sees them, [nkv, n_comp[b] + n_buf[b], hd] each (dequantized codes as
// core's float32, plus A·B, outliers replacing both, then the buffer), in float64. Invalid lengths throw.
void reconstruct_row(const CompressedKV& kv, int b, double* k_out, double* v_out);

// The attention of compressed_attention, in float64 and in the kernel's factored form: per tile,
// s_t = q·dequant(K_t) + (q·B_l^T)·A_t + sum over the tile's entries at t of q_d (o - dequant - lowrank);
// online softmax over tiles and the buffer; V likewise (sum_t p_t dequant(V_t), (sum_t p_t A_t)·B_l per
// low-rank block, p_t (o - dequant - lowrank) at the entries; where the layout carries fp16 corrections
// (k_sp_corr / v_sp_corr) those instead, as the kernels read them). q, out [B, nh, hd]. Invalid rows throw.
void compressed_attention(const double* q, const CompressedKV& kv, double* out, int nh, double scale);

// ---- the power iteration's small dense factorisations (kernels/small_dense.h's code on the host) ----
// The same arguments as the kernels (host arrays), with W in float64 here; invalid sizes throw.
void cholesky_orthonormalizer(double* g, int n, int w, double* w_out);
void symmetric_eigen(double* a, int n, int w, double* evals, double* evecs);
void uniform_start(const unsigned long long* seeds, int rows, long long per_row, float* out);
// orthonormalize's CholeskyQR2 in float64 throughout (Gram, W and products); y may be x.
void orthonormalize(const double* x, double* y, int n, long long m, int w);

}  // namespace gear::kernels::ref
