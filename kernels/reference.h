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

// cos / sin: [>= cap, hd/2] float32, as the kernel reads them. Writes q_out and position positions[b] of the
// caches only. A position outside [0, cap) throws.
void rope_qkv_append(DType t, const double* qkv, const int64_t* positions, const float* cos, const float* sin,
                     double* q_out, double* k_cache, double* v_cache, int B, int nh, int nkv, int hd, long long cap,
                     bool half_split);

// softmax(q k^T * scale) v over keys 0..positions[b] of each row; no rounding (the kernel keeps the
// probabilities and the accumulator in float32 and rounds only its output). Any hd >= 1.
void decode_attention(const double* q, const double* k_cache, const double* v_cache, const int64_t* positions,
                      double* out, int B, int nh, int nkv, int hd, long long cap, double scale);

}  // namespace gear::kernels::ref
