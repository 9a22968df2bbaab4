#pragma once
// The fp16 tensor-core helpers shared by v4 (gear_attention_mma.cuh) and v7's GQA key scores
// (gear_attention_lean.cu): mma.m16n8k16 (f16 in, f32 accumulate) and the fp16 pair conversions that
// build its operands. Fragment coordinates (PTX ISA, lane = 4 g + t): A rows g, g + 8 / columns 2t, 2t + 1,
// 2t + 8, 2t + 9 (registers: row g cols 2t.., row g + 8 cols 2t.., row g cols 2t + 8.., row g + 8 cols
// 2t + 8..); B rows (k) 2t, 2t + 1 then 2t + 8, 2t + 9 / column (n) g; C rows g, g + 8 / columns 2t, 2t + 1.
#include <cuda_fp16.h>

#include <cstdint>

namespace gear::kernels::detail {

__device__ __forceinline__ uint32_t h2bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits2h(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// (x, y) as fp16 hi + lo pairs: hi = fp16(x), lo = fp16(x - hi).
__device__ __forceinline__ void split_hl(float x, float y, uint32_t& hi, uint32_t& lo) {
  const __half2 h = __floats2half2_rn(x, y);
  const float2 hf = __half22float2(h);
  hi = h2bits(h);
  lo = h2bits(__floats2half2_rn(x - hf.x, y - hf.y));
}

// d += A B for one m16n8k16 tile (a: 4 registers of fp16 pairs, b0 / b1: 2; d: fp32).
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm(  // not volatile: a pure function of its operands, which the scheduler may move
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // never launched below sm_80 (callers check the architecture)
#endif
}

}  // namespace gear::kernels::detail
