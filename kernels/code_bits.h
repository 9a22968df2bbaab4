#pragma once
// Bit tricks for decoding packed 2-bit codes without integer-to-float conversions, shared by the attention
// kernel (kernels/gear_layout.cuh, Oct<2>::decode_biased) and a CPU test of their exactness (test_kernels
// "[ref]"). Plain C++ (no CUDA header needed): __host__ __device__ only when nvcc compiles it.
#include <cstdint>

#include "kernels/host_device.h"

namespace gear::kernels::codes {

// A float's bits as an unsigned integer ordered as the floats are (-inf < ... < -0 < +0 < ... < +inf; NaNs beyond
// the infinities): negative floats bit-inverted, the others with the sign bit set; and back. v7 takes a warp's float
// maximum as one integer REDUX (__reduce_max_sync) of these instead of 5 shuffle rounds.
GEARLAB_HOST_DEVICE constexpr uint32_t ordered_bits(uint32_t f) { return (f & 0x80000000u) ? ~f : (f | 0x80000000u); }
GEARLAB_HOST_DEVICE constexpr uint32_t from_ordered_bits(uint32_t u) { return (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u; }

// Eight 2-bit codes in a 16-bit word, code j in bits 2j..2j+1. The float32 bits of f_j = 1 + eps(j) * c_j,
// exactly: one shift puts codes 2k and 2k + 1 at mantissa bits 19..20 and 21..22 (values c/16 and c/4 above
// 1.0) and one AND-OR (a single LOP3) each adds the exponent of 1.0. So eps(j) = 2^-4 for even j, 2^-2 for odd j.
// A dot product sum_i x_i c_i is then (sum_i x_i f_i - sum_i x_i) / eps(j): dividing by eps scales the float32
// rounding of the sum by at most 16.
GEARLAB_HOST_DEVICE constexpr float biased_eps(int j) { return (j & 1) ? 0.25f : 0.0625f; }
GEARLAB_HOST_DEVICE constexpr float biased_inv_eps(int j) { return (j & 1) ? 4.f : 16.f; }
// (s & mask) | the bits of 1.0f in one LOP3. Written as PTX on the device: from the C++ expression, with both
// constants immediates, ptxas emitted an AND and an OR (two LOP3s a code; Nsight Compute's SASS counts for v7, 2 of its
// 5.2 instructions a code); lop3 with the mask in a register (hoisted, loop-invariant) is one.
GEARLAB_HOST_DEVICE inline uint32_t mask_or_one(uint32_t s, uint32_t mask) {
#ifdef __CUDA_ARCH__
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(s), "r"(mask), "n"(0x3F800000u));  // 0xea: (a & b) | c
  return r;
#else
  return (s & mask) | 0x3F800000u;
#endif
}
GEARLAB_HOST_DEVICE inline uint32_t biased_bits(uint32_t word, int j) {
  const uint32_t s = word << (19 - 4 * (j >> 1));  // codes 2k and 2k + 1 (k = j / 2) at bits 19..22
  return mask_or_one(s, (j & 1) ? 0x00600000u : 0x00180000u);
}
// The same for sixteen 2-bit codes in a 32-bit word (code j in bits 2j..2j+1, j < 16; eps(j) as above): pair k = j / 2
// sits at bits 4k..4k+3, so pairs 0..4 shift left by 19 - 4k and pairs 5..7 right by 4k - 19 (still one shift per pair).
GEARLAB_HOST_DEVICE inline uint32_t biased_bits32(uint32_t word, int j) {
  const int k = j >> 1;
  const uint32_t s = k <= 4 ? word << (19 - 4 * k) : word >> (4 * k - 19);
  return mask_or_one(s, (j & 1) ? 0x00600000u : 0x00180000u);
}

// Eight 4-bit codes in a 32-bit word (code j in bits 4j..4j+3, j < 8): one shift puts code j at mantissa bits 19..22
// (left by 19 - 4j for j <= 4, right by 4j - 19 above) and one LOP3 keeps them under the exponent of 1.0, so
// f_j = 1 + c_j / 16 exactly for every slot (eps 2^-4: the same bias for every token and channel).
constexpr float kBiased4Eps = 0.0625f, kBiased4InvEps = 16.f;
GEARLAB_HOST_DEVICE inline uint32_t biased4_bits32(uint32_t word, int j) {
  const uint32_t s = j <= 4 ? word << (19 - 4 * j) : word >> (4 * j - 19);
  return mask_or_one(s, 0x00780000u);
}

}  // namespace gear::kernels::codes
