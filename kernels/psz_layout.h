#pragma once
// Where v7's FMA value loop finds a tile's (p·scale, p·zero) pairs: the per-warp table in shared memory
// (kernels/gear_attention_lean.cu, `psz`), float2 entries, one per (query head, value group, token). Plain C++ (no
// CUDA header), so that test_kernels "[ref]" counts the table's shared-memory wavefronts on the CPU.
//
// Why not [head][token][group]: after the softmax a lane writes its TPL tokens' pairs (tokens CPW tb + TPL cp ..,
// the reduce-scatter's), and lanes of one phase then hit the same banks: at G 64, 2-bit codes, each 8-byte store
// took 16 wavefronts for its 2 (ncu, run UC: 55 % of v7's shared wavefronts were such excess). Here each value
// group's tokens are a row of G + 4 entries (rows 8 banks apart: a value step's reads of every group stay
// conflict-free), a lane's TPL tokens are one TPL-entry slot (one 8- or 16-byte store), and slots are permuted
// within their token block by an XOR of the block index (swizzle()) so that one phase's lanes land on distinct
// banks. The XOR keeps aligned runs of RS slots together, so a value step's TPI consecutive tokens stay contiguous.
#include "kernels/host_device.h"

namespace gear::kernels::psz_layout {

constexpr int kGroups = 4;  // value groups a head (kLeanMaxGroups)

struct Shape {
  int cpw, tbs, cps, tpl, vpl, tpi, rs;  // v7's tile constants (lean_work) and RS = TPI / TPL, slots a value step reads
};
GEARLAB_HOST_DEVICE constexpr Shape shape(int hd, int g, int bits) {
  const int cpw = 32 / bits, tbs = g / cpw, tpl = g / 32, vpl = hd / cpw, tpi = 32 / vpl;
  return {cpw, tbs, 32 / tbs, tpl, vpl, tpi, tpi / tpl};
}
GEARLAB_HOST_DEVICE constexpr int row_stride(int g) { return g + 4; }  // entries (float2) a value group's row
GEARLAB_HOST_DEVICE constexpr int floats(int gt, int g) { return 2 * gt * kGroups * row_stride(g); }

// The slot mask of token block tb: ((tb >> a) * c) within the block's cps slots, its low log2(rs) bits clear.
GEARLAB_HOST_DEVICE constexpr int slot_mask(const Shape& s, int a, int c, int tb) { return ((tb >> a) * c) & (s.cps - 1) & ~(s.rs - 1); }
// The entry of token t (of the tile), value group vg, query head h, with the mask parameters (a, c).
GEARLAB_HOST_DEVICE constexpr int entry_ac(const Shape& s, int a, int c, int g, int h, int vg, int t) {
  const int slot = t / s.tpl, tb = slot / s.cps, cp = slot % s.cps;
  return (h * kGroups + vg) * row_stride(g) + (tb * s.cps + (cp ^ slot_mask(s, a, c, tb))) * s.tpl + t % s.tpl;
}

// Shared-memory wavefronts of one warp access (32 banks of 4 bytes; `bytes` 8 or 16 a lane: 16 or 8 lanes a phase;
// lanes of a phase reading the same word share it) at entries e[lane] (float2 units).
GEARLAB_HOST_DEVICE constexpr int wavefronts(const int (&e)[32], int bytes) {
  const int per_phase = 128 / bytes, words = bytes / 4;
  int total = 0;
  for (int p = 0; p < 32; p += per_phase) {
    int w[32] = {}, n = 0;  // the phase's distinct words (at most 32: 16 lanes x 2 or 8 x 4)
    for (int l = p; l < p + per_phase; ++l)
      for (int x = 0; x < words; ++x) {
        const int word = 2 * e[l] + x;
        bool seen = false;
        for (int i = 0; i < n; ++i) seen = seen || w[i] == word;
        if (!seen) w[n++] = word;
      }
    int per_bank[32] = {}, worst = 0;
    for (int i = 0; i < n; ++i) {
      const int c = ++per_bank[w[i] % 32];
      worst = c > worst ? c : worst;
    }
    total += worst;
  }
  return total;
}

// Wavefronts of one tile's stores (a head, every value group: one TPL-entry vector a lane) plus its value loop's
// reads (a head, ng groups: the lane's group (CPW vp) / v_group, token it TPI + tv), with mask (a, c).
GEARLAB_HOST_DEVICE constexpr int tile_wavefronts(int hd, int g, int bits, int ng, int a, int c) {
  const Shape s = shape(hd, g, bits);
  int total = 0;
  for (int vg = 0; vg < ng; ++vg) {
    int e[32] = {};
    for (int lane = 0; lane < 32; ++lane) e[lane] = entry_ac(s, a, c, g, 0, vg, s.cpw * (lane % s.tbs) + s.tpl * (lane / s.tbs));
    total += wavefronts(e, 8 * s.tpl);
  }
  for (int it = 0; it < g / s.tpi; ++it) {
    int e[32] = {};
    for (int lane = 0; lane < 32; ++lane)
      e[lane] = entry_ac(s, a, c, g, 0, s.cpw * (lane % s.vpl) * ng / hd, it * s.tpi + lane / s.vpl);
    total += wavefronts(e, 8);
  }
  return total;
}

// The mask parameters (a, c) of v7's shapes: those with the fewest wavefronts a tile over the value-group counts the
// shape allows (1, 2, 4; a < 4, 1 <= c <= 8; the first of equals), found by a search on the CPU that test_kernels
// "[ref]" repeats (a table, not a constexpr search: the search is ~10^7 steps a shape, past nvcc's constexpr budget).
struct Mask {
  int a, c;
};
GEARLAB_HOST_DEVICE constexpr Mask mask_for(int hd, int g, int bits) {
  if (g == 32) return {0, bits == 2 ? 8 : 2};
  if (bits == 2) return {0, 2};
  return hd == 128 ? Mask{1, 1} : Mask{0, 1};
}

// The entry of token t, value group vg, query head h at v7's shape (hd, g, bits).
template <int HD, int G, int BITS>
GEARLAB_HOST_DEVICE constexpr int entry(int h, int vg, int t) {
  constexpr Shape s = shape(HD, G, BITS);
  constexpr Mask m = mask_for(HD, G, BITS);
  return entry_ac(s, m.a, m.c, G, h, vg, t);
}
// A value step's entry as a lane-invariant part plus a compile-time one: token it * TPI + tv of group vg is
// step_base(h, vg, tv) + step_offset(it) (the XOR leaves a step's RS slots in place: its low bits are clear).
template <int HD, int G, int BITS>
GEARLAB_HOST_DEVICE constexpr int step_offset(int it) {
  constexpr Shape s = shape(HD, G, BITS);
  static_assert(s.rs * s.tpl == s.tpi && s.cps % s.rs == 0, "a value step's tokens: whole slots within one token block");
  constexpr Mask m = mask_for(HD, G, BITS);
  const int slot = it * s.rs, tb = slot / s.cps, cp = slot % s.cps;
  return (tb * s.cps + (cp ^ slot_mask(s, m.a, m.c, tb))) * s.tpl;
}
template <int G>
GEARLAB_HOST_DEVICE constexpr int step_base(int h, int vg, int tv) { return (h * kGroups + vg) * row_stride(G) + tv; }

}  // namespace gear::kernels::psz_layout
