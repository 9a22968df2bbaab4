#pragma once
// Exact, order-independent sums of float terms in shared memory: each term rounded to a multiple of 2^-24, kept as
// two 32-bit integer parts summed by native 32-bit shared atomics whose results nobody waits for (fire-and-forget
// reductions: no round trip per term). The outlier passes (gear_outlier_passes.cuh) and v7's inline outliers (v8,
// gear_attention_lean.cu) sum their sparse terms this way: integer sums do not depend on the order in which lanes and
// warps add, so the kernels stay bitwise deterministic without sorting their entries.
//
// A term v (|v| < kFixedMax = 2^19) is t = rint(v 2^24) units, split as t = H 2^20 + L with 0 <= L < 2^20. The
// sums are kept mod 2^32 each, so their value sum(H) 2^20 + sum(L) is exact while fewer than 2^12 terms meet in one
// sum (sum(L) < 2^32) and the true sum is below 2^27 in magnitude (sum(H) inside int32). Every caller stays inside:
// key biases sum at most hd (128) terms of one token; value sums at most a split's 2048 tokens, probabilities that
// sum to at most 1 times corrections, so below 2^27 while |delta| is (a valid layout's are below 2^17: fp16 values
// less their reconstruction). (The carry-chained 64-bit sums before them needed one atomic's
// result before the next atomic: a shared-memory round trip per term, on the passes' critical path.)
#include <cuda_runtime.h>

namespace gear::kernels::detail {

constexpr float kFixedUnits = 16777216.f;  // 2^24 units per 1.0
constexpr float kFixedSplit = 1048576.f;   // 2^20: the low part's range
// The largest term added: 2^19, beyond fp16's range (65504). A larger or non-finite term (an absurd correction)
// makes the sum NaN, visibly, instead of wrapping it.
constexpr float kFixedMax = 524288.f;

// Adds the term v to the sum (lo, hi), or sets `bit` of *nan_word when v is non-finite or out of range.
__device__ __forceinline__ void add_term(unsigned* lo, unsigned* hi, unsigned* nan_word, unsigned bit, float v) {
  if (fabsf(v) < kFixedMax) {
    const float t = rintf(v * kFixedUnits);              // exact scaling, then a whole number of units
    const float h = floorf(t * (1.f / kFixedSplit));     // H, |H| < 2^23
    const float l = fmaf(-h, kFixedSplit, t);            // L = t - H 2^20, in [0, 2^20): exact
    atomicAdd(hi, static_cast<unsigned>(__float2int_rn(h)));
    atomicAdd(lo, static_cast<unsigned>(__float2int_rn(l)));
  } else {
    atomicOr(nan_word, bit);
  }
}
// A sum's value as float, or NaN where a term marked it.
__device__ __forceinline__ float fixed_value(unsigned lo, unsigned hi, bool nan) {
  const long long units = static_cast<long long>(static_cast<int>(hi)) * static_cast<long long>(kFixedSplit) + static_cast<long long>(lo);
  return nan ? NAN : static_cast<float>(units) / kFixedUnits;
}

}  // namespace gear::kernels::detail
