#pragma once
// Index maps of v7's GQA-4 tensor-core tiles (kernels/gear_attention_lean.cu), shared with a CPU emulation of the
// MMAs (test_kernels "[ref]"): which words a lane loads, which byte pair of them it feeds to the MMA, where the
// B fragments sit in shared memory and which channel each value accumulator holds. Plain C++ (no CUDA header):
// __host__ __device__ only when nvcc compiles it.
//
// MMA fragment coordinates: lane = 4 g + t (PTX ISA, mma.m16n8k16). Keys: M = tokens, k = channels, n = 2 h + part
// (query head h, fp16 hi / lo part). Values: M = channels of one value group, k = tokens, n = 2 h + part.
#include <cstdint>

#include "kernels/host_device.h"

namespace gear::kernels::mma_map {

// Load j (0..3) of k-step ks for lane column t: key channel (or value token) 16 ks + 2t + {0, 1, 8, 9} — the k indices
// 2t, 2t + 1 (A register 0 / 1) and 2t + 8, 2t + 9 (registers 2 / 3) of the lane's A fragment.
GEARLAB_HOST_DEVICE constexpr int k_index(int ks, int t, int j) { return 16 * ks + 2 * t + (j & 1) + 8 * (j >> 1); }

// The __byte_perm selector that gathers lane row g's code slots of two words into one register (x's in the low half,
// y's in the high half): with 8 slots a lane, the 16-bit half g & 1 of each word; with 4, the byte g & 3 (its
// copy in the upper byte of each half is masked away).
GEARLAB_HOST_DEVICE constexpr uint32_t pair_selector(int slots, int g) {
  return slots == 8 ? 0x5410u + 0x2222u * (g & 1) : 0x4400u + 0x1111u * (g & 3);
}

// Word of a B-fragment row (one k-step; 64 words plus padding) that reader lane (g = 2h + part, t = col) takes as
// register reg: k = 2 col + 8 reg and + 1.
GEARLAB_HOST_DEVICE constexpr int b_word(int h, int part, int col, int reg) { return 2 * (4 * (2 * h + part) + col) + reg; }
// The reader column and register of an even k (0..14) within a k-step.
GEARLAB_HOST_DEVICE constexpr int b_col(int k) { return (k & 7) >> 1; }
GEARLAB_HOST_DEVICE constexpr int b_reg(int k) { return k >> 3; }

// Values: the channel of lane row g in M-block j (0 .. vw - 1) of value group q (vw 16-channel words a group); row
// g + 8 holds this channel + vw. The lane's word of a token is q vw + g / (8 / vw), its slots from 2 vw (g mod 8 / vw).
GEARLAB_HOST_DEVICE constexpr int value_channel(int q, int j, int g, int vw) {
  return 16 * (q * vw + g / (8 / vw)) + 2 * vw * (g % (8 / vw)) + j;
}
GEARLAB_HOST_DEVICE constexpr int value_word(int q, int g, int vw) { return q * vw + g / (8 / vw); }
// The value-MMA tiles' words staged in the warp's shared memory (LeanSmem): key words as in global memory (channel
// row r's words at r * words a row), value words token by token at staged_value_stride(vpl) words a token (vpl in
// global memory; 8 padded to 12 so that the lanes' reads of a load fall in distinct banks). The tile's 16-byte value
// copy i lands at word staged_value_copy(i, ...); lane (g, t) reads load j of k-step ks, group q at
// staged_value_read(...), which the kernel splits into a lane base (ks = q = j = 0) and constant offsets.
GEARLAB_HOST_DEVICE constexpr int staged_value_stride(int vpl) { return vpl == 8 ? vpl + 4 : vpl; }
GEARLAB_HOST_DEVICE constexpr int staged_value_copy(int i, int vpl) { return (i / (vpl / 4)) * staged_value_stride(vpl) + 4 * (i % (vpl / 4)); }
GEARLAB_HOST_DEVICE constexpr int staged_value_read(int ks, int q, int t, int g, int j, int vpl, int vw) {
  return k_index(ks, t, j) * staged_value_stride(vpl) + value_word(q, g, vw);
}

}  // namespace gear::kernels::mma_map
