#pragma once
// Order-independent sums in shared memory: 64-bit fixed point (2^-32 units) added by two native 32-bit atomics with a
// carry, so a sum is the same whichever order its lanes and warps add in (deterministic results without rounds or
// sorting). Used by the value outlier pass (gear_outlier_passes.cuh) and v7's value outliers inside
// (gear_attention_lean.cu). CUDA only.
#include <cuda_runtime.h>

namespace gear::kernels::detail {

constexpr float kFixedOne = 4294967296.f;  // 2^32 fixed-point units per 1.0
// The largest term added: 2^19, beyond 8 times fp16's range (65504: v7's probabilities reach 8, its lazy maximum)
// and small enough that 2048 terms (a split's tokens) per sum stay below 2^62 units. A larger or non-finite term
// (an absurd correction) makes the sum NaN, visibly, instead of wrapping it.
constexpr float kFixedMax = 524288.f;

// Adds the fixed-point term v (2^-32 units) to the two's-complement sum (hi, lo): lo with a native 32-bit atomic, whose
// old value tells whether it wrapped, and hi plus that carry. Each wrap is counted once, so (hi, lo) ends as the exact
// sum of the terms mod 2^64, in any order.
// In two halves so that several sums' low-word atomics can be in flight before their carries are added.
__device__ __forceinline__ unsigned fixed_add_lo(unsigned* lo, long long v) { return atomicAdd(lo, static_cast<unsigned>(v)); }
// What the term v adds to the high word, once the low word's atomic returned old_lo: v's high word plus the carry.
__device__ __forceinline__ unsigned fixed_hi_term(long long v, unsigned old_lo) {
  const unsigned vl = static_cast<unsigned>(v), vh = static_cast<unsigned>(static_cast<unsigned long long>(v) >> 32);
  return vh + (old_lo + vl < old_lo ? 1u : 0u);
}
__device__ __forceinline__ void fixed_add_hi(unsigned* hi, long long v, unsigned old_lo) { atomicAdd(hi, fixed_hi_term(v, old_lo)); }
__device__ __forceinline__ void fixed_add(unsigned* lo, unsigned* hi, long long v) { fixed_add_hi(hi, v, fixed_add_lo(lo, v)); }
// Adds the term v to the sum (lo, hi), or sets `bit` of *nan_word when v is non-finite or out of range.
__device__ __forceinline__ void add_term(unsigned* lo, unsigned* hi, unsigned* nan_word, unsigned bit, float v) {
  if (fabsf(v) < kFixedMax) fixed_add(lo, hi, __float2ll_rn(v * kFixedOne));
  else atomicOr(nan_word, bit);
}
// The same through 32-bit shared-window addresses (the outlier passes' hot loops): with generic pointers nvcc
// re-derived each shared array's address from SR_CgaCtaId in every window (~12 of the key pass's ~75 instructions a
// window, ncu SourceCounters, thirty-first session); a 32-bit address taken once stays in a register.
__device__ __forceinline__ unsigned smem_addr(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ float lds_f32(unsigned a) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ void add_term_s(unsigned lo, unsigned hi, unsigned nan_word, unsigned bit, float v) {
  const bool ok = fabsf(v) < kFixedMax;  // (false for NaN)
  const long long f = __float2ll_rn(ok ? v * kFixedOne : 0.f);
  unsigned old;
  asm volatile("atom.shared.add.u32 %0, [%1], %2;" : "=r"(old) : "r"(lo), "r"(static_cast<unsigned>(f)) : "memory");
  asm volatile("red.shared.add.u32 [%0], %1;" ::"r"(hi), "r"(fixed_hi_term(f, old)) : "memory");
  if (!ok) asm volatile("red.shared.or.b32 [%0], %1;" ::"r"(nan_word), "r"(bit) : "memory");
}
// A sum's value as float, or NaN where a term marked it.
__device__ __forceinline__ float fixed_value(unsigned lo, unsigned hi, bool nan) {
  return nan ? NAN : static_cast<float>(static_cast<long long>((static_cast<unsigned long long>(hi) << 32) | lo)) / kFixedOne;
}
// The same sum times f (an online softmax's rescale: exact powers of two aside, rounded once to float's 24 bits).
__device__ __forceinline__ void fixed_scale(unsigned* lo, unsigned* hi, float f) {
  const long long v = __float2ll_rn(fixed_value(*lo, *hi, false) * f * kFixedOne);
  *lo = static_cast<unsigned>(v), *hi = static_cast<unsigned>(static_cast<unsigned long long>(v) >> 32);
}

}  // namespace gear::kernels::detail
