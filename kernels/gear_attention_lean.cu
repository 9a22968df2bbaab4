// v7 ("lean"): decode attention straight from the 2-bit compressed layout (and the 4-bit one for MHA: the kernel is
// templated on the code width, 16 or 8 codes a word), a warp per key tile and no block barrier in the
// token loop.
//
// Why (docs/kernels.md, "Where v6 stands against the 75 % target"): v3 executes ~7.4 lane instructions per 2-bit
// code where 75 % of the H100's bandwidth allows ~3.5; the decode and the FMA are ~2.5 of them, the rest is
// per-channel and per-token overhead (scale / zero loads and conversions, q and p from shared memory for every
// 8 codes, 4-8 block barriers per 128-token chunk, cp.async staging). v7 keeps only the essential work in
// its loops:
//  - a warp owns whole tiles of G tokens (32 or 64; tiles w, w + 4, ... of its block's split) with its own
//    online softmax, so its 4 warps never wait for each other until the final merge;
//  - codes go straight from global memory to registers, 16 per 32-bit word, coalesced (a key tile row is
//    G/16 words, so lane (tb, cp) loads word tb of channels cp, cp + CPS, ...; a token's values are hd/16 words);
//    the next tile's key words are loaded as soon as the key loop has used them and its value words after the
//    value loop, so each load has half a tile of work to hide behind, with no extra registers;
//  - per tile, q·scale of every channel is computed once (HD/32 channels per lane) into the warp's shared memory
//    with sum q·zero and sum q·scale, so the key loop per 16 codes is one shared load, one 16-code biased decode
//    (codes::biased_bits32: 1.5 integer instructions a code) and 16 FMAs per query head; a reduce-scatter over the
//    CPS lanes of a token block leaves each lane G/32 tokens' scores;
//  - after the softmax, p·scale and p·zero of every (token, value group) go to shared memory, so the value loop
//    per 16 codes is one shared load, the decode and 16 FMAs per head;
//  - low rank: q·B_k is recomputed only when the tile's low-rank block changes (a prompt's block spans many
//    tiles), and sum_t p_t A_v[t] is carried in registers (rescaled with the accumulators) until the block
//    changes, then multiplied by B_v once.
// GQA: a block serves GT = 1, 2 or 4 query heads of one kv head, so each code is decoded once for them (GT FMAs).
// With 4 heads (2-bit codes, sm_80 and later) the FMAs would be 4 a code on either side, so the key scores and (for
// value groups of 32 or 64 channels) the values run on the tensor cores instead: mma.m16n8k16 with the codes as exact
// fp16 subnormals (one AND a code pair, no decode arithmetic) and q·scale / p·scale split into fp16 hi + lo, the 4
// heads x 2 parts being the MMA's n = 8 (see MMAK / MMAV below). Those tiles stage their key and value words and key
// scales / zeros in shared memory by cp.async, double-buffered per warp (LeanSmem): a lane uses a quarter / half of
// each code word, so the register prefetch cost 64 registers (2 blocks an SM) for 16 useful ones.
// The fp16 buffer's 32-token pieces are more units of work, dealt to the warps from the one after the last tile's.
// The 4 warps then merge (shared memory) and the block writes the output or the split's partial output and
// log2-sum-exp, as v3. Outliers: the staged GQA-4 tiles apply them inside when the layout keeps their corrections
// (SP: each tile's entries staged with its words; key_biases, value_outliers), with no passes; otherwise the key and
// value passes of gear_outlier_passes.cuh run around it, as around v3 (sc: the key pass's score bias in, each
// compressed token's final score out).
#include "kernels/gear_attention_lean.cuh"

#include <map>
#include <type_traits>
#include <utility>

#include "kernels/fixed_sum.cuh"
#include "kernels/gear_layout.cuh"
#include "kernels/mma_fragments.cuh"
#include "kernels/mma_map.h"
#include "kernels/split_combine.cuh"
#include "kernels/split_rule.h"

namespace gear::kernels::detail {
namespace {

constexpr int kLeanWarps = 4;
constexpr int kLeanThreads = 32 * kLeanWarps;
constexpr unsigned kFull = 0xffffffffu;
// The tensor-core tiles' lazy softmax maximum (softmax_heads): probabilities up to 2^kLazyMax. 3 keeps p·delta of any
// fp16 value correction (<= 65504 * 8) below fixed_sum.cuh's kFixedMax (2^19).
constexpr float kLazyMax = 3.f;
// The FMA tiles (no key MMA) with the same lazy maximum and each lane's share of the softmax sum kept to the end:
// GEARLAB_LEAN_FMA_LAZY=1 (default 0), a compile-time knob to time against the per-tile all-reduces (two chains of
// 5 dependent shuffles a tile: 3.4 % of the stall samples of GEAR's v7 at B 22 4k, run UC). Not yet measured.
#ifndef GEARLAB_LEAN_FMA_LAZY
#define GEARLAB_LEAN_FMA_LAZY 0
#endif
constexpr bool kLeanFmaLazy = GEARLAB_LEAN_FMA_LAZY != 0;

__device__ __forceinline__ float warp_max_all(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, off));
  return v;
}
__device__ __forceinline__ float warp_sum_all(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
  return v;
}
// The warp's largest v in one REDUX instruction (sm_80 and later) instead of 5 shuffle rounds, on the floats' ordered
// integer images (codes::ordered_bits; -inf and +inf included).
__device__ __forceinline__ float warp_max_redux(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __uint_as_float(codes::from_ordered_bits(__reduce_max_sync(kFull, codes::ordered_bits(__float_as_uint(v)))));
#else
  return warp_max_all(v);
#endif
}
// 2^x as the one MUFU.EX2 (exp2f adds a range test and a halve-and-square for results below 2^-126: four
// instructions where one does; those results only differ by flushing to 0, and a softmax term or factor that small
// weighs nothing beside the maximum's 1).
__device__ __forceinline__ float exp2_ftz(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
// fp16 number i (0 or 1) of a 32-bit word.
__device__ __forceinline__ float half_of(uint32_t w, int i) { return h2f(static_cast<uint16_t>(i ? w >> 16 : w & 0xffffu)); }

// The 32 / BITS codes of a word as f_j = 1 + eps(j) * c_j: sixteen 2-bit codes (codes::biased_bits32) or eight 4-bit
// ones (codes::biased4_bits32).
template <int BITS> constexpr int codes_per_word() { return 32 / BITS; }
template <int BITS> __device__ __forceinline__ void decode_word(uint32_t w, float (&f)[codes_per_word<BITS>()]) {
#pragma unroll
  for (int j = 0; j < codes_per_word<BITS>(); ++j)
    f[j] = __uint_as_float(BITS == 2 ? codes::biased_bits32(w, j) : codes::biased4_bits32(w, j));
}
// eps(j) and 1 / eps(j) of a code's slot j in its word.
template <int BITS> __device__ __forceinline__ float code_eps(int j) { return BITS == 2 ? codes::biased_eps(j) : codes::kBiased4Eps; }
template <int BITS> __device__ __forceinline__ float code_inv_eps(int j) {
  return BITS == 2 ? codes::biased_inv_eps(j) : codes::kBiased4InvEps;
}

// One round of a reduce-scatter over lanes: the lane whose `mask` bit is set keeps values [HALF, 2 HALF), the other
// [0, HALF), each adding its partner's copy; the kept values move to [0, HALF). (A template so that every index is
// a constant: a loop over rounds with a varying bound left part[] in local memory.)
template <int HALF, int GT, int N> __device__ __forceinline__ void exchange_halves(float (&part)[GT][N], int mask, int lane) {
  const bool up = (lane & mask) != 0;
#pragma unroll
  for (int h = 0; h < GT; ++h)
#pragma unroll
    for (int j = 0; j < HALF; ++j) {
      const float send = up ? part[h][j] : part[h][j + HALF];
      const float keep = up ? part[h][j + HALF] : part[h][j];
      part[h][j] = keep + __shfl_xor_sync(kFull, send, mask);
    }
}
// The reduce-scatter over the CPS lanes of a token block (their lane bits are MASK_LANES * TBS and below, down to TBS):
// HALF = codes_per_word / 2 first, halving each round, until each lane keeps codes_per_word / CPS tokens' sums.
template <int HALF, int MASK_LANES, int TBS, int GT, int N>
__device__ __forceinline__ void reduce_scatter(float (&part)[GT][N], int lane) {
  exchange_halves<HALF>(part, MASK_LANES * TBS, lane);
  if constexpr (MASK_LANES > 1) reduce_scatter<HALF / 2, MASK_LANES / 2, TBS>(part, lane);
}

// GQA tiles of 4 query heads with 2-bit codes take their key scores from the tensor cores (mma.m16n8k16, sm_80 and
// later: every architecture the build targets but a device pass below 8.0, which keeps the FMA loop).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
constexpr bool kLeanMmaArch = false;
#else
constexpr bool kLeanMmaArch = true;
#endif
template <int GT, int BITS> constexpr bool lean_mma_keys() { return kLeanMmaArch && GT == 4 && BITS == 2; }
// With them, the value MMA's words per value group (VW: groups of 32 or 64 channels) where a lane's value words of a
// tile ((G / 16) k-steps x (hd / 16 VW) groups x 4 tokens) are at most 32; 0: the FMA value loop. (The bound was the
// register prefetch's; the words are staged since 753cac0, but the layouts it leaves out, hd 128 with G 64 and value
// groups of 32, have not been measured or tested on the value MMA.)
constexpr int lean_value_words(int hd, int G, int v_group) {
  const int vw = v_group == 32 ? 2 : v_group == 64 ? 4 : 0;
  return vw > 0 && (G / 16) * (hd / (16 * vw)) * 4 <= 32 ? vw : 0;
}

// An MMA whose A words hold N 2-bit code slots in each 16-bit half (the key MMA: N = MB M-blocks; the value MMA: N = VW
// words a group): whether slot j's codes are masked where they lie (bits 2 j + {0, 1} and 2 N + 2 j + {0, 1}, within
// an fp16 mantissa for N <= 2) rather than shifted down to bits 0-1 first, and then the unit its accumulators hold
// slot j's results in (4^j), an exact power of two divided out after. (Not the same output bits as the shifted codes:
// run LB's output hashes differ on every KIVI GQA shape, while each build repeats its own bits run to run; the v7
// tests' error bounds hold.)
template <int N> __host__ __device__ constexpr bool lean_codes_unshifted() { return 4 * N - 1 <= 9; }
template <int N> __host__ __device__ constexpr float lean_code_unit(int j) { return lean_codes_unshifted<N>() ? float(1 << (2 * j)) : 1.f; }
// Slot j's A words of such an MMA (mma16816's row g / g + 8, columns 2t.. / 2t + 8..) from the lane's byte pairs of
// columns 2t, 2t + 1 (plo) and 2t + 8, 2t + 9 (phi): row g's codes at bits 0-1 of each half, row g + 8's at 2 N, in
// units of lean_code_unit<N>(j).
template <int N> __device__ __forceinline__ void lean_code_a(uint32_t plo, uint32_t phi, int j, uint32_t (&a)[4]) {
  constexpr uint32_t M0 = 0x00030003u, M1 = M0 << (2 * N);
  constexpr bool U = lean_codes_unshifted<N>();
  const int sh = U ? 0 : 2 * j, ms = U ? 2 * j : 0;
  const uint32_t x = plo >> sh, y = phi >> sh;
  a[0] = x & (M0 << ms), a[1] = x & (M1 << ms), a[2] = y & (M0 << ms), a[3] = y & (M1 << ms);
}

// A v7 block's shared memory (floats / words per warp), for the kernel, its launch bounds and its launch. With the
// value MMA (GQA 4) the tiles' key and value words and key scales / zeros are staged by cp.async into the warp's
// part of the dynamic shared memory (double-buffered: tile n + 1's copies fly while tile n is worked on) instead of
// prefetched into 2 x 32 registers a lane (each lane uses a quarter / half of each word it loads; run BB: 255
// registers, 2 blocks an SM, the next tile's scales waited for at the top of each tile).
template <int HD, int GT, int G, int BITS, int VW, bool SP = false> struct LeanSmem {
  static constexpr bool mmav = lean_mma_keys<GT, BITS>() && VW > 0;
  static constexpr int cpw = 32 / BITS, tbs = G / cpw, vpl = HD / cpw;
  static constexpr int fstr = 72, sstr = G + 4, ks = HD / 16;
  // (MMAK: the key MMA's B fragments, ks k-steps of q·scale and two of the lanes' q·zero shares)
  static constexpr int qsw = lean_mma_keys<GT, BITS>() && (ks + 2) * fstr > GT * HD ? (ks + 2) * fstr : GT * HD;
  static constexpr int frag = (G / 16) * (HD / (16 * (VW > 0 ? VW : 1))) * fstr;  // the value MMA's B fragments
  static constexpr int psz = mmav ? (GT * sstr > frag ? GT * sstr : frag) : 2 * GT * G * kLeanMaxGroups;
  static constexpr int vstr = mma_map::staged_value_stride(vpl);  // staged words a token (hd 128 padded)
  static constexpr int ktw = HD * tbs, vtw = G * vstr;   // a tile's staged key / value words (then HD words of scales, zeros)
  static constexpr int static_bytes = 4 * (GT * HD + kLeanWarps * (qsw + psz));
  static constexpr bool stage = mmav;
  // After the key words, value words and key scales / zeros: the value scales, then zeros (G tokens x HD / (16 VW)
  // groups, fp16, as in global memory), staged with the words so that the tile reads them from shared memory (run CA:
  // their global loads' 64-bit address arithmetic and group-count branches took ~10 % of a Llama-3-8B KIVI-2 tile's
  // instructions).
  static constexpr int ngv = mmav ? HD / (16 * (VW > 0 ? VW : 1)) : 0;  // value groups a token
  static constexpr int vsw = G * ngv / 2;                                // words of a tile's value scales (and of zeros)
  static constexpr int ksc_off = ktw + vtw, vsc_off = ksc_off + HD, ent_off = vsc_off + 2 * vsw;
  // SP (sparse outliers inside, staged tiles only): a tile's entries (positions, then fp16 corrections; keys, then
  // values) come with its words, from the 16-byte chunk that holds the first, up to ent_cap a side (the rest is read
  // from global memory); per warp a [G][GT] scratch (the tile's key runs, then its probabilities) and the value
  // corrections' sums [GT][HD] as 64-bit fixed point (low words, high words, NaN bits: fixed_sum.cuh); per block q
  // transposed, [HD][GT] (q of 4 heads in one 16-byte load).
  static constexpr bool sp = SP && stage;
  static constexpr int ent_cap = G * HD / 32;                     // 3.1 % of a tile's entries (GEAR's s: 2 %)
  static constexpr int ent_len = ent_cap + 8;                     // u16 an array: the first chunk starts up to 7 early
  static constexpr int ent_words = sp ? 2 * ent_len : 0;          // [side][pos, corr][ent_len] u16
  static constexpr int buf_words = ent_off + ent_words;           // one tile's stage
  static constexpr int vsum_words = (2 * GT * HD + GT * HD / 32 + 3) / 4 * 4;
  static constexpr int scratch_words = sp ? G * GT + vsum_words : 0;
  static constexpr int stage_words = stage ? 2 * buf_words + scratch_words : 0;  // a warp's two buffers (+ scratch)
  static constexpr int block_words = sp ? HD * GT : 0;
  static constexpr int dynamic_bytes = 4 * (kLeanWarps * stage_words + block_words);
  static_assert(!sp || (GT == 4 && ent_len % 8 == 0), "16-byte rows and copies");
  static_assert(!stage || (vsw % 4 == 0 && ent_off % 4 == 0 && buf_words % 4 == 0), "16-byte copies");
  static_assert(static_bytes <= 48 * 1024, "v7's static shared memory");
};

// Blocks per SM asked of the register allocator: 4 (128 registers); with the low-rank state at hd 128 and G 64,
// GEARLAB_LEAN_RANK_BLOCKS (default 3: 168 registers; at 4 ptxas spilled ~100 bytes a thread). A compile-time knob
// so that both can be timed from one checkout (docs/kernels.md, "v7").
#ifndef GEARLAB_LEAN_RANK_BLOCKS
#define GEARLAB_LEAN_RANK_BLOCKS 3
#endif
// GQA tiles (GT 2 / 4 query heads a block: GT times the accumulators) ask for 3 / 2 blocks (168 / 255 registers);
// with their words staged in shared memory (LeanSmem::stage) GQA-4 tiles without low rank ask for 3 (with low rank
// ptxas spilled up to ~440 bytes at 168 registers, and run BE measured that ~20 % slower than 2 blocks). At 3 the
// hd-128 kernels without low rank spill 4-212 bytes (ptxas, sm_90); KIVI's (the stream-K family, lean_stream_k) are
// also built for 2 (kLeanTwoBlocks: 206-223 registers, no spills), which the host takes for small grids
// (split_rule::lean_two_blocks_pay).
// 4-bit codes (G 64) hold twice the words of a tile in registers: 3 blocks; with low rank at G 32 as well (at 4 ptxas
// spilled ~50 bytes a thread).
// The other tiles of one query head (MHA, 2-bit: KIVI-2 and GEAR-L at G 32): GEARLAB_LEAN_MHA_BLOCKS (default 4: 128
// registers; KIVI-2's spill none). A compile-time knob to time fewer, wider blocks against them (scripts/gpu-ab.sh's
// NEW_CUDA_FLAGS): KIVI's GQA-4 kernel at 2 blocks an SM ran B 1 grids 14-23 % faster than at 3 (run KC).
#ifndef GEARLAB_LEAN_MHA_BLOCKS
#define GEARLAB_LEAN_MHA_BLOCKS 4
#endif
// KIVI's GQA-4 kernel (staged, no low rank): GEARLAB_LEAN_GQA_BLOCKS (default 3: 168 registers), a compile-time knob
// to time other counts from one checkout. Run MB (H200, B 64 8k) found it latency-bound: 2.8 warps a scheduler, one
// eligible in 60 % of the cycles. At 4 (run MC: 128 registers, 3.5 warps a scheduler) the spills cost 8 % more
// instructions and 6.2 cycles between a warp's instructions against 4.6: B 64 8k 210 -> 237 us, 32k 714 -> 858.
#ifndef GEARLAB_LEAN_GQA_BLOCKS
#define GEARLAB_LEAN_GQA_BLOCKS 3
#endif
template <int HD, int GT, int G, int RMAX, int BITS, int VW> constexpr int lean_min_blocks() {
  if constexpr (BITS == 4) return G == 64 || RMAX > 0 ? 3 : 4;
  else if constexpr (LeanSmem<HD, GT, G, BITS, VW>::stage && RMAX == 0) return GEARLAB_LEAN_GQA_BLOCKS;
  else if constexpr (GT >= 4) return 2;
  else if constexpr (GT == 2) return 3;
  else return RMAX > 0 && HD == 128 && G == 64 ? GEARLAB_LEAN_RANK_BLOCKS : GEARLAB_LEAN_MHA_BLOCKS;
}

// One block's work on one row: compressed tokens [c_begin, c_end) of row at.b's kv head at.kvh for query heads at.h0 ..
// at.h0 + at.nq - 1, the fp16 buffer too when has_buf; the result goes to `out` (direct) or to partial output at.split
// of the row's n_splits (a stream-K segment's slot).
struct LeanWork {
  SplitBlock at;
  RowLens len;
  long long c_begin, c_end;
  bool has_buf, direct;
};

// RMAX: 0 (no low rank) or kLeanMaxRank (kv.rank <= RMAX). BITS: 2, or 4 (MHA only: lean_layout_ok). VW: with the key
// MMA (GQA 4), the value MMA's words per value group (2 or 4: value groups of 32 or 64 channels; lean_value_words), or 0
// for the FMA value loop. SP: the layout's outliers applied inside (staged tiles only; their corrections kept by the
// layout; sc is then nullptr), else none here. A block runs this once a split, or once a segment of its stream-K
// share (cattn_lean_kernel); the caller holds a block barrier between two runs (they share the block's shared memory).
template <typename T, int HD, int GT, int G, int RMAX, int BITS, int VW, bool SP>
__device__ __forceinline__ void lean_work(const T* __restrict__ q, const CompressedKV& kv, T* __restrict__ out, float* __restrict__ ws_o,
                                          float* __restrict__ ws_lse, int nh, int n_splits, float scale_log2, int vg_shift,
                                          float* __restrict__ sc, long long sc_stride, const LeanWork& work) {
  constexpr int CPW = codes_per_word<BITS>();  // codes a 32-bit word: 16 (2-bit) or 8 (4-bit)
  constexpr int TBS = G / CPW;  // CPW-token words in one channel's key row
  constexpr int CPS = 32 / TBS; // lanes that share a token block (channel parts)
  constexpr int KCH = HD / CPS; // channels per lane in the key loop
  constexpr int TPL = G / 32;   // tokens per lane after the reduce-scatter
  constexpr int VPL = HD / CPW; // lanes over one token's value codes (CPW channels each)
  constexpr int TPI = 32 / VPL; // tokens per value-loop step
  constexpr int VIT = G / TPI;  // value-loop steps per tile
  constexpr int QCH = HD / 32;  // channels per lane in the per-tile q·scale
  static_assert(TPL * CPS == CPW && (CPS == 4 || CPS == 8 || CPS == 16) && QCH % 2 == 0 && CPW % 8 == 0, "tile shape");
  // GQA 4 key scores on the tensor cores (MMAK): per 16-channel k-step, S[token][2h + part] = sum_k A[token][k]
  // B[k][2h + part], A the codes (exact fp16 subnormals c 2^-24), B q·scale of head h split into fp16 hi + lo
  // (part 0 / 1), the 4 heads x 2 parts filling the MMA's n = 8. Lane (g, t) gives its rows' codes from one byte pair
  // of the tile: its SPL = G / 8 tokens SPL g .. SPL g + SPL - 1, (a 16-bit half of one key word per channel: G 64; a
  // byte: G 32); M-block mb's row g is its token mb, row g + 8 its token mb + MB. Its C fragment then holds head t's
  // scores of those tokens, which go through shared memory to the lanes that own them in the FMA layout below
  // (softmax, value loop, low rank and outliers are unchanged).
  constexpr bool MMAK = lean_mma_keys<GT, BITS>();
  constexpr bool LAZY = MMAK || kLeanFmaLazy;  // the lazy maximum, l as each lane's share (softmax_heads)
  constexpr int KS = HD / 16;            // k-steps of 16 channels
  constexpr int SPL = G / 8;             // tokens per lane in the key MMA
  constexpr int MB = G / 16;             // M-blocks (16 tokens) per tile
  constexpr int FSTR = 72;               // words per k-step of the shared B fragments (64 + 8: fewer bank conflicts)
  constexpr int SSTR = G + 4;            // floats per head of the MMA scores in shared memory
  constexpr int QSW = MMAK && (KS + 2) * FSTR > GT * HD ? (KS + 2) * FSTR : GT * HD;
  constexpr int KWN = MMAK ? 4 * KS : KCH;  // key words a lane holds
  // The values on the tensor cores too (MMAV, value groups of VW words): per 16-token k-step and value group q,
  // O[channel][2h + part] += sum_k A[channel][k] B[k][2h + part], A the codes (fp16 subnormals as above), B = p·scale
  // of head h (hi / lo) times 2^ev (the tile's largest |scale| near 2^11, p <= 2^kLazyMax: fp16's precision for every token
  // that counts; the accumulators are rescaled when ev changes). Lane (g, t) takes one word of each of its tokens per group (word
  // q VW + g / (8 / VW)) and the 2 VW codes of it that are its rows: M-block j of group q has the lane's slots j
  // (row g) and j + VW (row g + 8) of that word, 2 VW (g mod 8 / VW) onwards. Its C fragments are head t's outputs of
  // those channels; the zero points' sum p·zero is kept per head and group, the low-rank flush and the fp16 buffer
  // are added in fp32 (the buffer in the FMA layout, merged at the end).
  constexpr bool MMAV = MMAK && VW > 0;
  constexpr int VWS = VW > 0 ? VW : 1;
  constexpr int KSV = G / 16;                        // value k-steps per tile
  constexpr int NGV = HD / (16 * VWS);               // value groups per head (MMAV)
  using SM = LeanSmem<HD, GT, G, BITS, VW, SP>;
  static_assert(!MMAV || (lean_value_words(HD, G, 16 * VW) == VW && KSV * NGV * FSTR <= SM::psz && GT * SSTR <= SM::psz),
                "value MMA shape (its fragments fit the warp's psz)");
  static_assert(SM::qsw == QSW && SM::fstr == FSTR && SM::sstr == SSTR && SM::mmav == MMAV && GT * 32 <= SM::psz, "LeanSmem");
  constexpr bool STAGE = SM::stage;  // key and value words through shared memory (cp.async) instead of registers
  // Outliers inside (SPI): each tile's entries are staged with its words; the keys' add sum_d q_d delta_{t,d} to the
  // token's scores before the softmax (key_biases), the values' sum_t p_t delta_{t,d} to per-warp sums rescaled with
  // the accumulators (value_outliers). What the two outlier passes did around the kernel, without the 8 bytes of scores a
  // token and query head they wrote and read back (GQA 4: 32 a token, about what its codes take).
  constexpr bool SPI = SM::sp;
  static_assert(SPI == SP, "outliers inside: staged GQA-4 tiles only");

  __shared__ __align__(16) float sq[GT][HD];                           // queries, pre-scaled by scale * log2(e)
  // MMAK: the queries unscaled, whose fp16 values times the fp16 key scales are exact as fp16 hi + lo (q·scale below).
  // (A second copy as fp16 pairs, sparing the 8 conversions a tile, measured no faster on KIVI's kernel and took GEAR's
  // GQA-4 kernel (outliers inside) from 543 to 1010 us at B 64 8k: run MB, H200. Not profiled; likely a block an SM
  // fewer for its 1 KB of shared memory.)
  __shared__ __align__(16) float squ[MMAK ? GT : 1][MMAK ? HD : 4];
  __shared__ __align__(16) float qsw[kLeanWarps][QSW];  // per warp: q·scale of its tile (MMAK: as B fragments); at the end its output
  __shared__ __align__(16) float psz[kLeanWarps][SM::psz];  // per warp: (p·scale, p·zero) per token and group (MMAV: scores, fragments)
  extern __shared__ __align__(16) uint32_t lean_dyn_smem[];  // STAGE: per warp, two tiles' key, value, scale, zero words
  __shared__ float mm[kLeanWarps][GT], ml[kLeanWarps][GT];
  __shared__ int soff[SPI ? 2 : 1][SPI ? split_rule::kLeanMaxSplit / G + 1 : 1];  // SPI: the split's tile offsets (keys, values), clamped

  const int kvh = work.at.kvh, b = work.at.b, h0 = work.at.h0, nq = work.at.nq, split = work.at.split;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LayoutIx ix(kv);
  const size_t bh = ix.bh(b, kvh);
  const int R = RMAX > 0 ? kv.rank : 0;
  const int ng = HD >> vg_shift;

  const RowLens len = work.len;
  const bool direct = work.direct;
  const long long c_begin = work.c_begin, c_end = work.c_end;  // (not references: lambdas capture these)
  const bool has_buf = work.has_buf;
  const long long tile_begin = c_begin / G;  // a split or a stream-K unit starts at a whole tile
  const int ntiles = c_end > c_begin ? static_cast<int>((c_end - c_begin) / G) : 0;

  float* const sqt = reinterpret_cast<float*>(lean_dyn_smem + kLeanWarps * SM::stage_words);  // SPI: [HD][GT]
  for (int i = tid; i < GT * HD; i += kLeanThreads) {
    const int h = i / HD;
    const float u = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * HD + i]) : 0.f, v = u * scale_log2;
    sq[h][i - h * HD] = v;
    if constexpr (MMAK) squ[h][i - h * HD] = u;
    if constexpr (SPI) sqt[(i - h * HD) * GT + h] = v;
  }
  const size_t sp_row = ix.sp(b, kvh);  // SPI: the (row, kv head)'s first entry in the sparse pools
  if constexpr (SPI)
#pragma unroll
    for (int side = 0; side < 2; ++side)
      load_tile_offsets(soff[side], (side ? kv.v_sp_off : kv.k_sp_off) + ix.sp_off(b, kvh), tile_begin, ntiles, kv.tile_cap, kv.sparse_cap,
                        tid, kLeanThreads);
  __syncthreads();

  // ---------------- per warp ----------------
  const int tb = lane % TBS, cp = lane / TBS;  // key loop: token block, channel part
  const int tv = lane / VPL, vp = lane % VPL;  // value loop: token in the step, channel slice (CPW channels)
  const int t_lane = CPW * tb + TPL * cp;      // the lane's first token after the reduce-scatter (of TPL)
  const int v_g = (CPW * vp) >> vg_shift;      // the value group of the lane's CPW channels
  // q of channels QCH*lane .. (MMAK reads them from sq where needed: registers are its limit)
  float qr[MMAK ? 1 : GT][QCH];
#pragma unroll
  for (int h = 0; h < (MMAK ? 0 : GT); ++h)
#pragma unroll
    for (int c = 0; c < QCH; ++c) qr[h][c] = sq[h][QCH * lane + c];
  auto q_of = [&](int h, int c) { return MMAK ? sq[h][QCH * lane + c] : qr[MMAK ? 0 : h][c]; };
  // MMAK: the lane's queries unscaled, and their largest |q| (its channels, every head), a bound that spares most
  // tiles q·scale's range reduction
  auto qu_of = [&](int h, int c) { return squ[MMAK ? h : 0][MMAK ? QCH * lane + c : 0]; };
  float q_abs_max = 0.f;
#pragma unroll
  for (int h = 0; h < (MMAK ? GT : 0); ++h)
#pragma unroll
    for (int c = 0; c < QCH; ++c) q_abs_max = fmaxf(q_abs_max, fabsf(qu_of(h, c)));
  // (a bf16 query past fp16's range has no fp16 pair: its warp's tiles all take the fp32 products)
  if (!(q_abs_max <= 65504.f)) q_abs_max = INFINITY;
  float m[GT], l[GT], acc[GT][CPW], vsum[GT], zacc[GT];
  // MMAV: the value MMA's accumulators (head mg & 3's channels, scaled by 2^evc), sum p·zero per head and group.
  float cv[MMAV ? NGV * VWS : 1][4], zp[GT][MMAV ? NGV : 1];
  int evc = 0;
#pragma unroll
  for (int i = 0; i < (MMAV ? NGV * VWS : 1); ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) cv[i][j] = 0.f;
#pragma unroll
  for (int h = 0; h < GT; ++h)
#pragma unroll
    for (int i = 0; i < (MMAV ? NGV : 1); ++i) zp[h][i] = 0.f;
#pragma unroll
  for (int h = 0; h < GT; ++h) {
    m[h] = -INFINITY;
    l[h] = vsum[h] = zacc[h] = 0.f;
#pragma unroll
    for (int j = 0; j < CPW; ++j) acc[h][j] = 0.f;
  }
  // Low rank: q·B_k of block qb_lb (valid when qb_ok), and sum_t p_t A_v[t] of block u_lb (carried while u_live).
  constexpr int RR = RMAX > 0 ? RMAX : 1;
  float qb[GT][RR], U[GT][RR];
#pragma unroll
  for (int h = 0; h < GT; ++h)
#pragma unroll
    for (int r = 0; r < RR; ++r) qb[h][r] = U[h][r] = 0.f;
  int qb_lb = 0, u_lb = 0;
  bool qb_ok = false, u_live = false;

  const size_t tile_row0 = bh * static_cast<size_t>(kv.tile_cap);
  const size_t tok_row0 = ix.tok(b, kvh, 0);
  const uint32_t* kwords = reinterpret_cast<const uint32_t*>(kv.k_codes);
  const uint32_t* vwords = reinterpret_cast<const uint32_t*>(kv.v_codes);
  float* my_qs = &qsw[warp][0];
  float2* my_psz = reinterpret_cast<float2*>(&psz[warp][0]);
  // SPI: the warp's scratch [G][GT] (key runs, then probabilities of a tile) and value corrections' sums [GT][HD]
  float* const wscr = reinterpret_cast<float*>(lean_dyn_smem + warp * SM::stage_words + 2 * SM::buf_words);
  unsigned* const vlo = reinterpret_cast<unsigned*>(wscr + G * GT);
  unsigned *const vhi = vlo + GT * HD, *const vnan = vhi + GT * HD;
  if constexpr (SPI)
    for (int i = lane; i < SM::vsum_words; i += 32) vlo[i] = 0u;

  uint32_t kw[STAGE ? 1 : KWN], ksr[QCH / 2], kzr[QCH / 2], vw[STAGE ? 1 : VIT];
  const int mg = lane >> 2, mt = lane & 3;  // MMA fragment coordinates (MMAK)
  // The next tile's words (and key scales / zeros) into registers; staged tiles get theirs from stage_tile instead.
  auto load_keys = [&](long long tile) {
    if constexpr (!STAGE) {
      const size_t base = (tile_row0 + static_cast<size_t>(tile)) * HD;  // the tile's first channel row
      if constexpr (MMAK) {
        // channels 16 ks + 2 mt + {0, 1, 8, 9}, the word that holds the lane's tokens SPL mg ..
        const uint32_t* kb = kwords + base * TBS + (SPL * mg) / 16;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks)
#pragma unroll
          for (int j = 0; j < 4; ++j) kw[4 * ks + j] = __ldg(kb + static_cast<size_t>(mma_map::k_index(ks, mt, j)) * TBS);
      } else {
#pragma unroll
        for (int c = 0; c < KCH; ++c) kw[c] = __ldg(kwords + base * TBS + 32 * c + lane);
      }
      const uint32_t* s = reinterpret_cast<const uint32_t*>(kv.k_scale + base + QCH * lane);
      const uint32_t* z = reinterpret_cast<const uint32_t*>(kv.k_zero + base + QCH * lane);
#pragma unroll
      for (int i = 0; i < QCH / 2; ++i) ksr[i] = __ldg(s + i), kzr[i] = __ldg(z + i);
    }
  };
  auto load_values = [&](long long tile) {
    if constexpr (!STAGE) {
      const size_t base = (tok_row0 + static_cast<size_t>(tile) * G) * VPL;
#pragma unroll
      for (int it = 0; it < VIT; ++it) vw[it] = __ldg(vwords + base + 32 * it + lane);
    }
  };

  // STAGE: the tile's key words (HD rows of TBS), value words (G tokens of VPL, at VSTR), key scales / zeros and value
  // scales / zeros into buffer buf, 16 bytes a copy (the layout's arrays are 16-byte aligned: kernels.h), uncommitted.
  // Copy i of an array is lane i mod 32's, so a lane's copies are 32 apart: constant offsets from one source and one
  // destination an array (stage_sources). A source is the array's base (a kernel parameter) plus a 32-bit element
  // offset (lean_attention_supported keeps the arrays under 2^32 elements): one wide multiply-add a source. HOLD: the
  // lane's offsets at the row's tile 0 and its destinations are computed once, and a tile's offset is that plus the
  // tile index times a constant stride, one more 32-bit multiply-add. (Held as 64-bit pointers, run DA: a KIVI-2 tile
  // 1020 -> 978 instructions; under the 3-block kernel's 168 registers they were later rematerialised every tile with
  // 64-bit arithmetic, ~80 instructions a tile in run LB's profile.) The SPI tiles recompute them: held, they took
  // GEAR's kernel from 230 to 243 registers and 2.5 % slower (run DA).
  constexpr bool HOLD = STAGE && !SPI;
  constexpr int NKC = STAGE ? SM::ktw / 4 / 32 : 0;         // key word copies a lane (ktw / 4 is a multiple of 32)
  constexpr int NVC = STAGE ? G * VPL / 4 / 32 : 0;         // value word copies a lane
  constexpr int NSC = STAGE ? (SM::vsw / 2 + 31) / 32 : 0;  // value scale / zero copies a lane (the last may be partial)
  static_assert(!STAGE || (SM::ktw % 128 == 0 && (G * VPL) % 128 == 0), "whole copy rounds");
  struct StageSrc {
    uint32_t k, kz, v, vz[NSC > 0 ? NSC : 1];  // element offsets: key words, key scales or zeros, value words, value scales or zeros
    unsigned s, sv;  // destinations in buffer 0 (shared window, bytes): keys and scales at 16 lane, values apart
  };
  // The lane's sources of the row's tile `tile`: lanes HD / 8 .. HD / 4 - 1 copy the key zeros, lanes from HD / 4 on
  // no key scale or zero; value copy i of the scales' and zeros' is a zero's from vsw / 4 on.
  auto stage_sources = [&](unsigned tile) {
    StageSrc r{};
    if constexpr (STAGE) {
      const uint32_t krow = static_cast<uint32_t>((tile_row0 + tile) * HD);
      const uint32_t trow = static_cast<uint32_t>(tok_row0 + static_cast<size_t>(tile) * G);
      r.k = krow * TBS + 4 * lane;
      r.kz = krow + 8 * (lane < HD / 8 ? lane : lane - HD / 8);
      r.v = trow * VPL + 4 * lane;
#pragma unroll
      for (int k = 0; k < NSC; ++k) {
        const int i = lane + 32 * k, z = i >= SM::vsw / 4;
        r.vz[k] = trow * SM::ngv + 8 * (i - z * (SM::vsw / 4));
      }
      r.s = static_cast<unsigned>(__cvta_generic_to_shared(lean_dyn_smem + warp * SM::stage_words)) + 16 * lane;
      r.sv = r.s - 16 * lane + 4 * (SM::ktw + mma_map::staged_value_copy(lane, VPL));
    }
    return r;
  };
  [[maybe_unused]] const StageSrc held = HOLD ? stage_sources(0) : StageSrc{};
  auto stage_tile = [&](long long tile, int buf) {
    if constexpr (STAGE) {
      const unsigned t = static_cast<unsigned>(tile), sb = 4u * SM::buf_words * buf;  // (a row's tiles: < 2^31)
      const StageSrc c = HOLD ? held : stage_sources(t);
      const uint32_t u = HOLD ? t : 0u;  // tiles past c's
#pragma unroll
      for (int k = 0; k < NKC; ++k) cp_async16_s(c.s + sb + 512 * k, kwords + (c.k + u * (HD * TBS)) + 128 * k);
      if (lane < HD / 4) cp_async16_s(c.s + sb + 4 * SM::ksc_off, (lane < HD / 8 ? kv.k_scale : kv.k_zero) + (c.kz + u * HD));
      constexpr int VSTEP = mma_map::staged_value_copy(32, VPL);  // words between a lane's value copies
#pragma unroll
      for (int k = 0; k < NVC; ++k) cp_async16_s(c.sv + sb + 4 * VSTEP * k, vwords + (c.v + u * (G * VPL)) + 128 * k);
#pragma unroll
      for (int k = 0; k < NSC; ++k)
        if ((SM::vsw / 2) % 32 == 0 || lane + 32 * k < SM::vsw / 2)
          cp_async16_s(c.s + sb + 4 * SM::vsc_off + 512 * k,
                       (lane + 32 * k >= SM::vsw / 4 ? kv.v_zero : kv.v_scale) + (c.vz[k] + u * (G * SM::ngv)));
      if constexpr (SPI) {
        // Each side's entries (up to ent_cap) from the 16-byte chunk that holds the first: whole chunks, all inside
        // the (row, head)'s pool, since the pools are 16-byte aligned and each (row, head) pool is a whole number of
        // chunks (sparse_cap a multiple of 8: lean_outliers_inside), and the tile's offsets are clamped to it.
        const unsigned ed = static_cast<unsigned>(__cvta_generic_to_shared(lean_dyn_smem + warp * SM::stage_words + buf * SM::buf_words + SM::ent_off));
        const int j = static_cast<int>(tile - tile_begin);
#pragma unroll
        for (int side = 0; side < 2; ++side) {
          const int e_b = soff[side][j], n = min(max(e_b, soff[side][j + 1]) - e_b, SM::ent_cap);
          static_assert(kSparseChunk == 8, "16-byte chunks of 2-byte entries");
          const long long g0 = static_cast<long long>(sp_row) + e_b, c0 = g0 & ~7LL;  // the first chunk's entry
          const int chunks = static_cast<int>((g0 + n - c0 + 7) >> 3);
          const uint16_t* const s_pos = (side ? kv.v_sp_pos : kv.k_sp_pos) + c0;
          const uint16_t* const s_cor = (side ? kv.v_sp_corr : kv.k_sp_corr) + c0;
          for (int i = lane; i < 2 * chunks; i += 32) {
            const int a = i >= chunks, c = i - a * chunks;  // a: positions (0) or corrections (1)
            cp_async16_s(ed + 2u * ((2 * side + a) * SM::ent_len + 8 * c), (a ? s_cor : s_pos) + 8 * c);
          }
        }
      }
    }
  };

  // SPI: the entries of side `side` of the split's tile j: their number, and entry k's position and fp16 correction
  // (staged at `st`, the tile's buffer, up to ent_cap; the rest from global memory).
  struct TileEntries {
    int n;
    const uint16_t *s_pos, *g_pos, *g_cor;
  };
  auto tile_entries = [&](const uint32_t* st, int side, int j) {
    const int e_b = soff[side][j];
    const long long g0 = static_cast<long long>(sp_row) + e_b;
    return TileEntries{max(e_b, soff[side][j + 1]) - e_b,
                       reinterpret_cast<const uint16_t*>(st + SM::ent_off) + 2 * side * SM::ent_len + static_cast<int>(g0 & 7),
                       (side ? kv.v_sp_pos : kv.k_sp_pos) + g0, (side ? kv.v_sp_corr : kv.k_sp_corr) + g0};
  };
  auto staged_entry = [&](const TileEntries& te, int k, uint32_t& p, uint32_t& c) {  // (k < ent_cap)
    p = te.s_pos[k], c = te.s_pos[SM::ent_len + k];
  };
  auto entry_at = [&](const TileEntries& te, int k, uint32_t& p, uint32_t& c) {
    if (k < min(te.n, SM::ent_cap)) staged_entry(te, k, p, c);
    else if (k < te.n) p = __ldg(te.g_pos + k), c = __ldg(te.g_cor + k);
  };
  // SPI: f(k, p, c) for the warp's rounds of entries k = e0 + lane of te (e0 = 0, 32, ..., every lane, with k < te.n
  // telling the entries from the round's tail, whose p and c are meaningless). The staged rounds come first, each with
  // the next round's entries loaded before f runs: their shared loads' latency is hidden behind f, and no branch a
  // round asks where an entry lies (run ND: the branch and the loads' wait were 6 % of GEAR's stall samples). Then the
  // rounds past ent_cap (a multiple of 32: a round is staged or not, whole) from global memory.
  auto entry_rounds = [&](const TileEntries& te, auto&& f) {
    static_assert(SM::ent_cap % 32 == 0, "whole staged rounds");
    // (past the staged entries, a clamped index reads stale words of the tile's buffer, never past it: ent_len)
    const int ns = min(te.n, SM::ent_cap);
    uint32_t p, c;
    staged_entry(te, min(lane, SM::ent_cap - 1), p, c);
    for (int e0 = 0; e0 < ns; e0 += 32) {
      uint32_t pn, cn;
      staged_entry(te, min(e0 + 32 + lane, SM::ent_cap - 1), pn, cn);
      f(e0 + lane, p, c);
      p = pn, c = cn;
    }
    for (int e0 = SM::ent_cap; e0 < te.n; e0 += 32) {
      const int k = e0 + lane;
      uint32_t pg = 0, cg = 0;
      if (k < te.n) pg = __ldg(te.g_pos + k), cg = __ldg(te.g_cor + k);
      f(k, pg, cg);
    }
  };

  // SPI: the key outliers' biases sum_d q_d delta_{t,d} of the lane's tokens t_lane .. t_lane + TPL - 1, each token's
  // entries in entry order. A tile's entries are sorted by position, so by token (kernels.h): each lane finds its
  // tokens' run (a binary search of the staged entries; past ent_cap, the last entry of each token's run writes the
  // run's end into the scratch and a prefix maximum over the tokens turns the ends into each token's first entry),
  // then walks it with q in registers (no rounds, no atomics, no shared sums). Entries out of order (a malformed
  // layout) give wrong biases, never a wrong address; a position past the tile is ignored, as in v3.
  auto key_biases = [&](const uint32_t* st, int j, float (&bias)[GT][TPL]) {
    if constexpr (SPI) {
      constexpr int TT = G / 32;  // tokens a lane holds in the prefix maximum
      const TileEntries te = tile_entries(st, 0, j);
      int a, z;  // the lane's tokens' entries: a .. z - 1
      if (te.n <= SM::ent_cap) {
        // All staged (always, but for a tile past ent_cap): a is the number of entries before token t_lane's, by a
        // binary search of fixed steps (the same at every lane: ~9 dependent shared loads, no shuffles, no scratch,
        // no syncs), and z the next token block's a, from the lane that holds it.
        static_assert((SM::ent_cap & (SM::ent_cap - 1)) == 0 && TBS * (CPW / TPL) == 32, "steps of powers of 2; lanes");
        const uint32_t key = static_cast<uint32_t>(t_lane) * HD;
        a = 0;
#pragma unroll
        for (int step = SM::ent_cap; step > 0; step >>= 1)
          if (a + step <= te.n && te.s_pos[a + step - 1] < key) a += step;
        const bool last_cp = cp + 1 == CPW / TPL;  // the lane whose first token is t_lane + TPL: lane + TBS, else
        const int next = __shfl_sync(kFull, a, last_cp ? (tb + 1) % TBS : lane + TBS);  // the next block's first
        z = last_cp && tb + 1 == TBS ? te.n : next;
      } else {
        int* tend = reinterpret_cast<int*>(wscr);  // [G + 1]
#pragma unroll
        for (int i = 0; i < TT; ++i) tend[TT * lane + i] = 0;
        __syncwarp();
        entry_rounds(te, [&](int k, uint32_t p, uint32_t) {
          const int lt = k < te.n ? static_cast<int>(p) / HD : G;
          const int next = __shfl_down_sync(kFull, lt, 1);
          if (lt < G && (lane == 31 || next != lt)) tend[lt] = k + 1;  // (k + 1 == n: the next lane's lt is G)
          __syncwarp();  // (a run that goes on in the next window ends there, later)
        });
        int v[TT], run = 0;
#pragma unroll
        for (int i = 0; i < TT; ++i) v[i] = run = max(run, tend[TT * lane + i]);
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
          const int o = __shfl_up_sync(kFull, run, off);
          if (lane >= off) run = max(run, o);
        }
        int before = __shfl_up_sync(kFull, run, 1);
        if (lane == 0) before = 0;
#pragma unroll
        for (int i = 0; i < TT; ++i) tend[TT * lane + i] = i == 0 ? before : max(before, v[i - 1]);
        if (lane == 31) tend[G] = run;
        __syncwarp();
        a = tend[t_lane], z = tend[t_lane + TPL];
      }
      auto add_entry = [&](uint32_t p, uint32_t c) {
        const int lt = static_cast<int>(p) / HD - t_lane, d = static_cast<int>(p) % HD;
        const float dl = h2f(static_cast<uint16_t>(c));
        const float4 q4 = reinterpret_cast<const float4*>(sqt)[d];
#pragma unroll
        for (int i = 0; i < TPL; ++i) {
          const float w = lt == i ? dl : 0.f;
          bias[0][i] = fmaf(q4.x, w, bias[0][i]), bias[1][i] = fmaf(q4.y, w, bias[1][i]);
          bias[2][i] = fmaf(q4.z, w, bias[2][i]), bias[3][i] = fmaf(q4.w, w, bias[3][i]);
        }
      };
      if (z <= SM::ent_cap) {
        // The lane's run ends among the staged entries (always, in a tile of at most ent_cap): each entry's shared
        // loads issued one entry ahead, as in entry_rounds (run ND: this walk's entry reads were 2.3 % of GEAR's
        // stall samples; run OA: GEAR-KIVI-2 B 64 on Llama-3-8B heads 3 % faster, 8k and 32k).
        uint32_t p, c;
        staged_entry(te, min(a, SM::ent_cap - 1), p, c);
#pragma unroll 2
        for (int k = a; k < z; ++k) {
          uint32_t pn, cn;
          staged_entry(te, min(k + 1, SM::ent_cap - 1), pn, cn);
          add_entry(p, c);
          p = pn, c = cn;
        }
      } else {
        for (int k = a; k < z; ++k) {
          uint32_t p = 0, c = 0;
          entry_at(te, k, p, c);
          add_entry(p, c);
        }
      }
      __syncwarp();  // every lane has read its run's bounds (the scratch takes the probabilities next)
    }
  };

  // SPI: the value outliers of the split's tile j: each entry adds p_t delta_{t,d} (p of every head from the scratch,
  // [token][GT]) to its heads' sums of channel d, as 64-bit fixed point by native shared atomics (fixed_sum.cuh):
  // exact in any order, so deterministic without rounds (run BM: the rounds of entries that shared a channel, ranked
  // by ballots, took a quarter of the stall samples). A position past the tile (a malformed layout) is ignored, as in
  // v3. Ends with the warp synchronised after its adds.
  auto value_outliers = [&](const uint32_t* st, int j) {
    if constexpr (SPI) {
      const TileEntries te = tile_entries(st, 1, j);
      entry_rounds(te, [&](int k, uint32_t p, uint32_t c) {
        const int lt = static_cast<int>(p) / HD, d = static_cast<int>(p) % HD;
        if (k < te.n && lt < G) {
          const float dl = h2f(static_cast<uint16_t>(c));
          const float4 p4 = reinterpret_cast<const float4*>(wscr)[lt];
          const float v[4] = {p4.x * dl, p4.y * dl, p4.z * dl, p4.w * dl};
          // (each term compared on its own: fmaxf would drop a NaN)
          if (fabsf(v[0]) < kFixedMax && fabsf(v[1]) < kFixedMax && fabsf(v[2]) < kFixedMax && fabsf(v[3]) < kFixedMax) {
            // fixed_add for the 4 heads side by side: their low-word atomics in flight at once, then the carries.
            long long x[4];
            unsigned old[4];
#pragma unroll
            for (int h = 0; h < GT; ++h) x[h] = __float2ll_rn(v[h] * kFixedOne);
#pragma unroll
            for (int h = 0; h < GT; ++h) old[h] = fixed_add_lo(vlo + h * HD + d, x[h]);
#pragma unroll
            for (int h = 0; h < GT; ++h) fixed_add_hi(vhi + h * HD + d, x[h], old[h]);
          } else {  // a non-finite or absurd term: NaN in its sum (fixed_sum.cuh)
#pragma unroll
            for (int h = 0; h < GT; ++h) {
              const int i = h * HD + d;
              add_term(vlo + i, vhi + i, vnan + (i >> 5), 1u << (i & 31), v[h]);
            }
          }
        }
      });
      __syncwarp();
    }
  };
  // SPI: head h's value sums times its softmax factor f (where it is not 1: a tile or buffer piece raised the head's
  // maximum); each lane its channels, no sync.
  auto scale_value_sum = [&](int h, float f) {
    if constexpr (SPI)
      if (f != 1.f)  // (warp-uniform)
        for (int d = lane; d < HD; d += 32) fixed_scale(vlo + h * HD + d, vhi + h * HD + d, f);
  };
  // The same for every head of a tile, then the warp synchronised.
  auto scale_value_sums = [&](const float (&f)[GT]) {
    if constexpr (SPI) {
#pragma unroll
      for (int h = 0; h < GT; ++h) scale_value_sum(h, f[h]);
      __syncwarp();
    }
  };

  // Flushes a block's carried sum_t p_t A_v[t] into acc: (sum U_r B_r) * eps(j) (the accumulators are biased), in two
  // parts so that a flush inside the tile loop hides its B_v load behind the value loop. load_bv: the lane's ranks
  // are tv, tv + TPI, ... (RPL of them: one at 2-bit codes, two for 4-bit codes at hd 128, where a value step holds
  // two tokens), its CPW channels one or two 16-byte loads a rank; flush_deferred: the carried sums (moved out of U
  // when the new block began, or U itself after the last tile) all-reduced over the warp and added (the token lanes'
  // merge at the end sums the ranks); NaN for a block index out of range.
  constexpr int RPL = (RR + TPI - 1) / TPI;  // ranks a lane flushes
  constexpr int BVW = CPW / 8;               // 16-byte loads of a B_v row's CPW channels
  auto load_bv = [&](int lb, uint4 (&w)[RPL][BVW]) {
#pragma unroll
    for (int k = 0; k < RPL; ++k) {
      const int r = tv + TPI * k;
      const bool ok = lb >= 0 && lb < kv.lr_cap && r < R;
      const uint16_t* Bp = kv.v_lr_b + ix.lr_b(b, kvh, ok ? lb : 0, ok ? r : 0) + CPW * vp;
#pragma unroll
      for (int i = 0; i < BVW; ++i) w[k][i] = ok ? ldg16(Bp + 8 * i) : make_uint4(0, 0, 0, 0);
    }
  };
  auto flush_deferred = [&](int lb, float (&Uold)[GT][RR], const uint4 (&w)[RPL][BVW]) {
    const bool ok = lb >= 0 && lb < kv.lr_cap;
#pragma unroll
    for (int r = 0; r < RR; ++r)
      if (r < R)
#pragma unroll
        for (int h = 0; h < GT; ++h) Uold[h][r] = warp_sum_all(Uold[h][r]);
    if constexpr (MMAV) {
      // B_v's rows as floats in the warp's my_qs (free between the key loops), then each lane's channels of head
      // mt: sum_r U[mt][r] B_v[r][ch] into its accumulators (scale 2^evc times the rows' code scale).
      float* bs = my_qs;
#pragma unroll
      for (int k = 0; k < RPL; ++k) {
        const int r = tv + TPI * k;
        if (r >= R) break;
#pragma unroll
        for (int i = 0; i < BVW; ++i) {
          float part8[8];
          unpack<__half>(w[k][i], part8);
#pragma unroll
          for (int j = 0; j < 8; ++j) bs[r * HD + CPW * vp + 8 * i + j] = ok ? part8[j] : NAN;
        }
      }
      __syncwarp();
      float u[RR];
#pragma unroll
      for (int r = 0; r < RR; ++r) {
        u[r] = 0.f;
#pragma unroll
        for (int h = 0; h < GT; ++h)
          if (h == mt) u[r] = Uold[h][r];
      }
      const float s0 = __int_as_float((127 + evc - 24) << 23), s1 = __int_as_float((127 + evc - 24 + 2 * VWS) << 23);
#pragma unroll
      for (int q = 0; q < NGV; ++q)
#pragma unroll
        for (int j = 0; j < VWS; ++j) {
          const int ch = mma_map::value_channel(q, j, mg, VWS);
          const float uj = lean_code_unit<VWS>(j);
          float f0 = 0.f, f1 = 0.f;
#pragma unroll
          for (int r = 0; r < RR; ++r)
            if (r < R) f0 = fmaf(u[r], bs[r * HD + ch], f0), f1 = fmaf(u[r], bs[r * HD + ch + VWS], f1);
          cv[q * VWS + j][0] = fmaf(f0, s0 * uj, cv[q * VWS + j][0]);
          cv[q * VWS + j][2] = fmaf(f1, s1 * uj, cv[q * VWS + j][2]);
        }
      __syncwarp();
    } else {
#pragma unroll
      for (int k = 0; k < RPL; ++k) {
        if (tv + TPI * k >= R) break;
        float bv[CPW];
#pragma unroll
        for (int i = 0; i < BVW; ++i) {
          float part8[8];
          unpack<__half>(w[k][i], part8);
#pragma unroll
          for (int j = 0; j < 8; ++j) bv[8 * i + j] = ok ? part8[j] : NAN;
        }
#pragma unroll
        for (int h = 0; h < GT; ++h) {
          float u = 0.f;
#pragma unroll
          for (int r = 0; r < RR; ++r)
            if (r == tv + TPI * k) u = Uold[h][r];  // (constant indices: Uold stays in registers)
#pragma unroll
          for (int j = 0; j < CPW; ++j) acc[h][j] = fmaf(u * code_eps<BITS>(j), bv[j], acc[h][j]);
        }
      }
    }
  };
  // B_k[lb] rows of the lane's HD/32 channels, every rank: loaded at the top of a tile whose block is new, so
  // that the key loop hides the latency (the block index itself came with the previous tile's key words).
  auto load_bk = [&](int lb, uint32_t (&w)[RR][QCH / 2]) {
    const bool ok = lb >= 0 && lb < kv.lr_cap;
#pragma unroll
    for (int r = 0; r < RR; ++r) {
      const uint32_t* Bp = reinterpret_cast<const uint32_t*>(kv.k_lr_b + ix.lr_b(b, kvh, ok ? lb : 0, r) + QCH * lane);
#pragma unroll
      for (int i = 0; i < QCH / 2; ++i) w[r][i] = ok && r < R ? __ldg(Bp + i) : 0u;
    }
  };
  // q·B_k[lb][r] for every rank from load_bk's words (HD/32 channels per lane, all-reduced); NaN for a block
  // index out of range.
  auto compute_qb = [&](int lb, const uint32_t (&w)[RR][QCH / 2]) {
    const bool ok = lb >= 0 && lb < kv.lr_cap;
#pragma unroll
    for (int r = 0; r < RR; ++r) {
      if (r >= R) break;
      float bvals[QCH];
#pragma unroll
      for (int i = 0; i < QCH / 2; ++i) bvals[2 * i] = half_of(w[r][i], 0), bvals[2 * i + 1] = half_of(w[r][i], 1);
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        float dot = 0.f;
        if (ok)
#pragma unroll
          for (int c = 0; c < QCH; ++c) dot = fmaf(q_of(h, c), bvals[c], dot);
        dot = warp_sum_all(dot);
        qb[h][r] = ok ? dot : NAN;
      }
    }
    qb_lb = lb;
    qb_ok = true;
  };
  // Online softmax over the warp's scores s (N per lane: TPL of a tile, 1 of a buffer piece) of head h: returns the
  // factor for the earlier accumulators and leaves the probabilities in s.
  auto softmax = [&](int h, auto& s, const auto& valid) {
    constexpr int N = sizeof(s) / sizeof(s[0]);
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (valid[i]) mx = fmaxf(mx, s[i]);
    mx = warp_max_all(mx);
    const float m_old = m[h], m_new = fmaxf(m_old, mx);
    const bool none = m_new == -INFINITY;
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      s[i] = valid[i] && !none ? exp2_ftz(s[i] - m_new) : 0.f;
      sum += s[i];
    }
    if constexpr (!LAZY) sum = warp_sum_all(sum);  // (LAZY: l holds the lane's share, summed once at the end)
    const float corr = none || m_old == -INFINITY ? (none ? 1.f : 0.f) : exp2_ftz(m_old - m_new);
    l[h] = l[h] * corr + sum;
    m[h] = m_new;
    return corr;
  };
  // The same for a whole tile's scores of every head (TPL a lane, all valid: tiles are whole), the heads' reductions
  // side by side.
  // Returns false when every factor is 1 (warp-uniform).
  auto softmax_heads = [&](float (&s)[GT][TPL], float (&corr)[GT]) -> bool {
    if constexpr (LAZY) {
      // A lazy maximum: while no score of the tile exceeds a head's running maximum by more than kLazyMax (log2
      // units), the maximum stays, the factors are 1 and no reduction runs (run CA: the four heads' REDUX maxima and
      // their factors took ~50 instructions of the tile). So p <= 2^kLazyMax, which the value fragments' exponent and
      // the value outliers' fixed-point range allow for. The first tile, a NaN or a larger score take the full path.
      bool grow = false;
#pragma unroll
      for (int h = 0; h < GT; ++h)
#pragma unroll
        for (int i = 0; i < TPL; ++i) grow |= !(s[h][i] <= m[h] + kLazyMax);
      if (!__any_sync(kFull, grow)) {
#pragma unroll
        for (int h = 0; h < GT; ++h) {
#pragma unroll
          for (int i = 0; i < TPL; ++i) {
            s[h][i] = exp2_ftz(s[h][i] - m[h]);
            l[h] += s[h][i];
          }
          corr[h] = 1.f;
        }
        return false;
      }
    }
    float mx[GT], sum[GT];
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      mx[h] = -INFINITY;
#pragma unroll
      for (int i = 0; i < TPL; ++i) mx[h] = fmaxf(mx[h], s[h][i]);
    }
    if constexpr (MMAK) {
#pragma unroll
      for (int h = 0; h < GT; ++h) mx[h] = warp_max_redux(mx[h]);
    } else {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int h = 0; h < GT; ++h) mx[h] = fmaxf(mx[h], __shfl_xor_sync(kFull, mx[h], off));
    }
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      const float m_old = m[h], m_new = fmaxf(m_old, mx[h]);
      const bool none = m_new == -INFINITY;
      sum[h] = 0.f;
#pragma unroll
      for (int i = 0; i < TPL; ++i) {
        s[h][i] = none ? 0.f : exp2_ftz(s[h][i] - m_new);
        sum[h] += s[h][i];
      }
      corr[h] = none || m_old == -INFINITY ? (none ? 1.f : 0.f) : exp2_ftz(m_old - m_new);
      m[h] = m_new;
    }
    // (LAZY: each lane keeps its share of l, rescaled with the warp-uniform corr and summed once at the end: no
    // shuffle rounds a tile)
    if constexpr (!LAZY)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int h = 0; h < GT; ++h) sum[h] += __shfl_xor_sync(kFull, sum[h], off);
#pragma unroll
    for (int h = 0; h < GT; ++h) l[h] = l[h] * corr[h] + sum[h];
    return true;
  };
  auto rescale = [&](int h, float corr) {
    if constexpr (MMAV) {
#pragma unroll
      for (int q = 0; q < NGV; ++q) zp[h][q] *= corr;
    } else {
      vsum[h] *= corr;
      zacc[h] *= corr;
#pragma unroll
      for (int j = 0; j < CPW; ++j) acc[h][j] *= corr;
    }
#pragma unroll
    for (int r = 0; r < RR; ++r) U[h][r] *= corr;
  };

  // ---------------- the warp's tiles: w, w + 4, ... of the split ----------------
  const int w_tiles = ntiles > warp ? (ntiles - warp + kLeanWarps - 1) / kLeanWarps : 0;
  const int32_t* lr_row = RMAX > 0 ? kv.lr_block + static_cast<size_t>(b) * kv.tile_cap : nullptr;
  int lb_next = 0;  // the next tile's low-rank block, loaded with its key words
  if (w_tiles > 0) {
    load_keys(tile_begin + warp);
    load_values(tile_begin + warp);
    if (RMAX > 0) lb_next = __ldg(lr_row + tile_begin + warp);
    if constexpr (STAGE) {
      stage_tile(tile_begin + warp, 0);
      cp_async_commit();
    }
  }
  for (int n = 0; n < w_tiles; ++n) {
    const long long tile = tile_begin + warp + static_cast<long long>(n) * kLeanWarps;
    const long long tok0 = tile * G;  // the tile's first token in the row
    // STAGE: tile n + 1's words go to the buffer tile n - 1 used (every lane has read it), then tile n's are waited for.
    [[maybe_unused]] const uint32_t* cur = nullptr;
    if constexpr (STAGE) {
      __syncwarp();
      if (n + 1 < w_tiles) stage_tile(tile + kLeanWarps, (n + 1) & 1);
      cp_async_commit();  // (an empty group after the last tile)
      cp_async_wait<1>();
      __syncwarp();  // every lane's copies of tile n have landed
      cur = lean_dyn_smem + warp * SM::stage_words + (n & 1) * SM::buf_words;
      const uint32_t* sz = cur + SM::ksc_off + (QCH / 2) * lane;  // the lane's channels' scales, zeros
#pragma unroll
      for (int i = 0; i < QCH / 2; ++i) ksr[i] = sz[i], kzr[i] = sz[HD / 2 + i];
    }
    // Loads used after the key loop (latency hidden by it): B_k of a new low-rank block, the A rows and value
    // scales / zeros of the lane's tokens, the key pass's score bias.
    const int lb = lb_next;
    const bool new_qb = RMAX > 0 && (!qb_ok || lb != qb_lb);
    uint32_t bkw[RR][QCH / 2];
    if (new_qb) load_bk(lb, bkw);
    // fp16 pairs (r, r + 1) / (g, g + 1) in one register each: 32-bit loads where the pair is 4-byte aligned
    // (even R; ng >= 2, a power of two), else two 16-bit loads.
    constexpr int RW = (RR + 1) / 2, GW = kLeanMaxGroups / 2;
    uint32_t ak[TPL][RW], av[TPL][RW], vs[TPL][GW], vz[TPL][GW];
    auto pair = [&](const uint16_t* p, bool aligned, bool second) -> uint32_t {
      if (aligned) return __ldg(reinterpret_cast<const uint32_t*>(p));
      return static_cast<uint32_t>(__ldg(p)) | (second ? static_cast<uint32_t>(__ldg(p + 1)) << 16 : 0u);
    };
    // The TPL full rows of A (R == RMAX) of K and V from token t on: words (i, k) = rows i's ranks 2k, 2k + 1.
    auto a_rows = [&](size_t t, uint32_t (&wk)[TPL][RW], uint32_t (&wv)[TPL][RW]) {
      if constexpr (RMAX > 0) {
        static_assert(RW == 2 && (TPL == 1 || TPL == 2), "a lane's rows of A: one 8- or 16-byte vector");
        if constexpr (TPL == 2) {
          const uint4 x = __ldg(reinterpret_cast<const uint4*>(kv.k_lr_a + t * RMAX));
          const uint4 y = __ldg(reinterpret_cast<const uint4*>(kv.v_lr_a + t * RMAX));
          wk[0][0] = x.x, wk[0][1] = x.y, wk[1][0] = x.z, wk[1][1] = x.w;
          wv[0][0] = y.x, wv[0][1] = y.y, wv[1][0] = y.z, wv[1][1] = y.w;
        } else {
          const uint2 x = __ldg(reinterpret_cast<const uint2*>(kv.k_lr_a + t * RMAX));
          const uint2 y = __ldg(reinterpret_cast<const uint2*>(kv.v_lr_a + t * RMAX));
          wk[0][0] = x.x, wk[0][1] = x.y, wv[0][0] = y.x, wv[0][1] = y.y;
        }
      }
    };
    // At full rank (R == RMAX, the layouts GEAR's presets use) the lane's TPL rows of A are TPL * RMAX contiguous
    // halves, aligned to their size (t_lane a multiple of TPL, A 16-byte aligned): one vector load a side rather
    // than TPL * RW scattered 4-byte loads, each of which touched the warp's 16 sectors for a quarter of their bytes
    // (run OB: GEAR-L B 64 4-5 % faster, GEAR 1-3 %).
    const bool a_whole = RMAX > 0 && R == RMAX;
    if (a_whole) a_rows(tok_row0 + tok0 + t_lane, ak, av);
#pragma unroll
    for (int i = 0; i < TPL; ++i) {
      const size_t t = tok_row0 + tok0 + t_lane + i;
#pragma unroll
      for (int k = 0; k < RW && !a_whole; ++k) {
        const int r = 2 * k;
        ak[i][k] = RMAX > 0 && r < R ? pair(kv.k_lr_a + t * R + r, (R & 1) == 0, r + 1 < R) : 0u;
        av[i][k] = RMAX > 0 && r < R ? pair(kv.v_lr_a + t * R + r, (R & 1) == 0, r + 1 < R) : 0u;
      }
#pragma unroll
      for (int k = 0; k < GW; ++k) {
        const int g = 2 * k;
        vs[i][k] = !MMAV && g < ng ? pair(kv.v_scale + t * ng + g, ng > 1, false) : 0u;  // (MMAV: staged, read below)
        vz[i][k] = !MMAV && g < ng ? pair(kv.v_zero + t * ng + g, ng > 1, false) : 0u;
      }
    }
    float bias[GT][TPL];
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int i = 0; i < TPL; ++i)
        bias[h][i] = sc && h < nq ? sc[(static_cast<size_t>(b) * nh + h0 + h) * sc_stride + tok0 + t_lane + i] : 0.f;

    // 1. q·scale of the tile's channels (shared), sum q·zero and sum q·scale (all lanes).
    float part[GT][CPW];
    __syncwarp();  // the previous tile's key loop has read my_qs
    if constexpr (MMAK) {
      // q·scale as the MMA's B fragments: lane (g, t) of k-step ks reads words 2 (4 g + t) and + 1 of row ks (k =
      // channels 2t, 2t + 1 and 2t + 8, 2t + 9; n = g = 2 h + part). sum_d q_d z_d the same way: each lane's share
      // (its QCH channels) is row k = lane of two more k-steps, whose A is a column of codes 1, so the MMA adds the
      // 32 shares to every token's score (run DA: their 4 all-reduces, 5 shuffle rounds each, took ~40 instructions
      // of a tile); split into fp16 hi + lo, each share keeps ~22 bits, as q·scale does. fp16's range: q·scale and the
      // shares are scaled by 2^-e when the tile's largest exceeds 2^14 (e = 0 in any realistic cache), and the scores
      // by 2^e. The warp's reduction runs only where the lane's bound max|q| max(max|scale|, QCH max|zero|) reaches
      // 2^14 (a NaN or infinite bound too): below it every term is below 2^14 (rounding is monotonic), so e = 0.
      // q·scale is of the unscaled queries (scale * log2(e) goes into the unscale below): with e = 0 and fp16 queries,
      // q times an fp16 scale has at most 22 significant bits, so hi = fp16(q s) and lo = fp16(q s - hi) (one HMUL2
      // and one HFMA2 a channel pair) hold it exactly, but for a lo below fp16's normals (off by at most 2^-25, as
      // the fp32 split's was); the fp32 products and splits (8 instructions a pair) remain for e > 0 and for queries
      // fp16 cannot hold (a bf16 query past fp16's range makes its lane's bound infinite).
      uint32_t qsh[GT][QCH / 2], qsl[GT][QCH / 2];
      float qzs[GT];
      float smx = 0.f, zmx = 0.f;
#pragma unroll
      for (int c = 0; c < QCH; ++c) {
        smx = fmaxf(smx, fabsf(half_of(ksr[c / 2], c & 1)));
        zmx = fmaxf(zmx, fabsf(half_of(kzr[c / 2], c & 1)));
      }
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        float a = 0.f;
#pragma unroll
        for (int c = 0; c < QCH; ++c) a = fmaf(qu_of(h, c), half_of(kzr[c / 2], c & 1), a);
        qzs[h] = a;
#pragma unroll
        for (int p = 0; p < QCH / 2; ++p) {
          const __half2 q2 = __floats2half2_rn(qu_of(h, 2 * p), qu_of(h, 2 * p + 1)), s2 = bits2h(ksr[p]);
          const __half2 hi = __hmul2_rn(q2, s2);
          qsh[h][p] = h2bits(hi);
          qsl[h][p] = h2bits(__hfma2(q2, s2, __hneg2(hi)));
        }
      }
      int e = 0;
      const bool bounded = !__any_sync(kFull, !(q_abs_max * fmaxf(smx, QCH * zmx) < 16384.f));  // (warp-uniform)
      if (!bounded) {
        float mx = 0.f;
#pragma unroll
        for (int h = 0; h < GT; ++h) {
          mx = fmaxf(mx, fabsf(qzs[h]));
#pragma unroll
          for (int c = 0; c < QCH; ++c) mx = fmaxf(mx, fabsf(qu_of(h, c) * half_of(ksr[c / 2], c & 1)));
        }
        e = min(100, max(0, static_cast<int>((__float_as_uint(warp_max_redux(mx)) >> 23) & 0xff) - 127 - 14));
        // (rare: the fp32 products, scaled by 2^-e, split as any fp32 pair)
        const float down = __int_as_float((127 - e) << 23);
#pragma unroll
        for (int h = 0; h < GT; ++h) {
          qzs[h] *= down;
#pragma unroll
          for (int p = 0; p < QCH / 2; ++p) {
            const float x = qu_of(h, 2 * p) * half_of(ksr[p], 0) * down, y = qu_of(h, 2 * p + 1) * half_of(ksr[p], 1) * down;
            split_hl(x, y, qsh[h][p], qsl[h][p]);
          }
        }
      }
      uint32_t* fr = reinterpret_cast<uint32_t*>(my_qs);
#pragma unroll
      for (int h = 0; h < GT; ++h)
#pragma unroll
        for (int p = 0; p < QCH / 2; ++p) {
          const int c0 = QCH * lane + 2 * p, ks = c0 >> 4, col = mma_map::b_col(c0 & 15), reg = mma_map::b_reg(c0 & 15);
          fr[ks * FSTR + mma_map::b_word(h, 0, col, reg)] = qsh[h][p];
          fr[ks * FSTR + mma_map::b_word(h, 1, col, reg)] = qsl[h][p];
        }
      {  // the q·zero shares: lane l is k = l mod 16 of k-step KS + l / 16, the low or high half of its pair's word
        const int k = lane & 15;
        uint16_t* zr = reinterpret_cast<uint16_t*>(fr + (KS + (lane >> 4)) * FSTR + mma_map::b_word(0, 0, mma_map::b_col(k & 14), mma_map::b_reg(k))) + (k & 1);
        uint32_t hi[GT / 2], lo[GT / 2];
#pragma unroll
        for (int h = 0; h < GT; h += 2) split_hl(qzs[h], qzs[h + 1], hi[h / 2], lo[h / 2]);
#pragma unroll
        for (int h = 0; h < GT; ++h) {
          constexpr int WH = mma_map::b_word(1, 0, 0, 0), WP = mma_map::b_word(0, 1, 0, 0);  // words a head / a part on
          zr[2 * WH * h] = static_cast<uint16_t>(hi[h / 2] >> (16 * (h & 1)));
          zr[2 * (WH * h + WP)] = static_cast<uint16_t>(lo[h / 2] >> (16 * (h & 1)));
        }
      }
      __syncwarp();

      // 2. key scores on the tensor cores: C[mb] rows g / g + 8 = the lane's tokens mb / mb + MB, columns 2t / 2t + 1 =
      // head t's hi / lo sums. The lane's byte pair of each channel pair: G 64 the half g & 1 of its word, G 32 the
      // byte g & 3.
      const uint32_t sel = mma_map::pair_selector(SPL, mg);
      // KU (G 32: MB 2): M-block mb's codes masked where they lie (bits 2 mb + {0, 1} and 2 MB + 2 mb + {0, 1}, all
      // within an fp16 mantissa) instead of shifted down first, so its A is 4^mb times the codes' and so is its C;
      // the unscale below divides it out (exact powers of two; 16 shifts a tile fewer, not the same output bits: see
      // lean_codes_unshifted).
      constexpr bool KU = lean_codes_unshifted<MB>();
      // Even and odd k-steps into separate accumulators: two MMA chains of KS / 2 per M-block instead of one of KS.
      float cf[MB][4], cf2[MB][4];
#pragma unroll
      for (int mb = 0; mb < MB; ++mb)
#pragma unroll
        for (int j = 0; j < 4; ++j) cf[mb][j] = cf2[mb][j] = 0.f;
      // (staged: the lane's rows 16 ks + 2 mt + {0, 1, 8, 9}, word (SPL mg) / 16 of each, constant offsets from one base)
      const uint32_t* kst = STAGE ? cur + 2 * mt * TBS + (SPL * mg) / 16 : nullptr;
      auto key_word = [&](int ks, int j) -> uint32_t {
        if constexpr (STAGE) return kst[mma_map::k_index(ks, 0, j) * TBS];
        else return kw[4 * ks + j];
      };
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint2 bb = *reinterpret_cast<const uint2*>(fr + ks * FSTR + 2 * lane);
        const uint32_t plo = __byte_perm(key_word(ks, 0), key_word(ks, 1), sel), phi = __byte_perm(key_word(ks, 2), key_word(ks, 3), sel);
#pragma unroll
        for (int mb = 0; mb < MB; ++mb) {
          uint32_t a[4];
          lean_code_a<MB>(plo, phi, mb, a);
          mma16816((ks & 1) ? cf2[mb] : cf[mb], a, bb.x, bb.y);
        }
      }
      // sum_d q_d z_d: the two k-steps of the lanes' shares, A a column of codes 1 (2^-24 on row g, 2^(2 MB - 24) on
      // row g + 8: the codes' units, unscaled below with theirs)
#pragma unroll
      for (int kz = 0; kz < 2; ++kz) {
        constexpr uint32_t Z0 = 0x00010001u, Z1 = Z0 << (2 * MB);
        const uint2 bb = *reinterpret_cast<const uint2*>(fr + (KS + kz) * FSTR + 2 * lane);
#pragma unroll
        for (int mb = 0; mb < MB; ++mb) {
          const int ms = KU ? 2 * mb : 0;  // (in M-block mb's units)
          const uint32_t a[4] = {Z0 << ms, Z1 << ms, Z0 << ms, Z1 << ms};
          mma16816(((KS + kz) & 1) ? cf2[mb] : cf[mb], a, bb.x, bb.y);
        }
      }
#pragma unroll
      for (int mb = 0; mb < MB; ++mb)
#pragma unroll
        for (int j = 0; j < 4; ++j) cf[mb][j] += cf2[mb][j];
      if (n + 1 < w_tiles) {
        load_keys(tile + kLeanWarps);
        if (RMAX > 0) lb_next = __ldg(lr_row + tile + kLeanWarps);
      }
      // Unscale (codes c 2^-24 on row g, c 2^(2 MB - 24) on row g + 8; q·scale 2^-e, and the scale * log2(e) its
      // unscaled queries left out) and hand head t's scores of tokens SPL g + s to their FMA-layout lanes through the
      // warp's psz (the previous tile's value loop has read it).
      const float up0 = __int_as_float((127 + 24 + e) << 23) * scale_log2;
      const float up1 = __int_as_float((127 + 24 - 2 * MB + e) << 23) * scale_log2;
      float v[SPL];
#pragma unroll
      for (int mb = 0; mb < MB; ++mb) {
        const float d = 1.f / lean_code_unit<MB>(mb);  // (a power of two: exact)
        v[mb] = (cf[mb][0] + cf[mb][1]) * (up0 * d), v[mb + MB] = (cf[mb][2] + cf[mb][3]) * (up1 * d);
      }
      float* ss = reinterpret_cast<float*>(my_psz);
      __syncwarp();
#pragma unroll
      for (int s4 = 0; s4 < SPL; s4 += 4)
        *reinterpret_cast<float4*>(ss + mt * SSTR + SPL * mg + s4) = make_float4(v[s4], v[s4 + 1], v[s4 + 2], v[s4 + 3]);
      __syncwarp();
#pragma unroll
      for (int h = 0; h < GT; ++h)
#pragma unroll
        for (int i = 0; i < TPL; ++i) part[h][i] = ss[h * SSTR + t_lane + i];
    } else {
      float qz[GT], qsum[GT];  // the lane's shares of sum q·zero and sum q·scale (see below)
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        float qs[QCH];
        float a = 0.f, s = 0.f;
#pragma unroll
        for (int c = 0; c < QCH; ++c) {
          qs[c] = q_of(h, c) * half_of(ksr[c / 2], c & 1);
          a = fmaf(q_of(h, c), half_of(kzr[c / 2], c & 1), a);
          s += qs[c];
        }
#pragma unroll
        for (int c = 0; c < QCH; c += 2) *reinterpret_cast<float2*>(my_qs + h * HD + QCH * lane + c) = make_float2(qs[c], qs[c + 1]);
        // Sum q·zero and sum q·scale over the TBS lanes of the lane's channel part only: the reduce-scatter below
        // adds the CPS parts of a token block, so each token's score gets the whole sums from its start value
        // (part's). Two warp-wide all-reduces (chains of 5 dependent shuffles a tile) drew 8.5 % of v7's stall
        // samples at GEAR's B 22 4k (run UC); these are log2(TBS) rounds.
#pragma unroll
        for (int off = 1; off < TBS; off <<= 1) {
          a += __shfl_xor_sync(kFull, a, off);
          s += __shfl_xor_sync(kFull, s, off);
        }
        qz[h] = a;
        qsum[h] = s;
      }
      __syncwarp();

      // 2. key scores: part[h][j] = sum over the lane's channels of qs * f(code of token CPW tb + j), from the
      // lane's share of eps(j) sum q·zero - sum q·scale (the biased codes' offset; eps by the token's slot parity).
#pragma unroll
      for (int h = 0; h < GT; ++h)
#pragma unroll
        for (int j = 0; j < CPW; ++j) part[h][j] = fmaf(code_eps<BITS>(j & 1), qz[h], -qsum[h]);
#pragma unroll
      for (int c = 0; c < KCH; ++c) {
        float f[CPW];
        decode_word<BITS>(kw[c], f);
#pragma unroll
        for (int h = 0; h < GT; ++h) {
          const float qs = my_qs[h * HD + cp + CPS * c];
#pragma unroll
          for (int j = 0; j < CPW; ++j) part[h][j] = fmaf(qs, f[j], part[h][j]);
        }
      }
      if (n + 1 < w_tiles) {
        load_keys(tile + kLeanWarps);
        if (RMAX > 0) lb_next = __ldg(lr_row + tile + kLeanWarps);
      }
      // Reduce-scatter over the CPS lanes of the token block: lane (tb, cp) keeps tokens CPW tb + TPL cp + i.
      reduce_scatter<CPW / 2, CPS / 2, TBS>(part, lane);
    }
    if constexpr (SPI) {
      // The tile's key outliers: sum_d q_d delta_{t,d} of the lane's tokens.
#pragma unroll
      for (int h = 0; h < GT; ++h)
#pragma unroll
        for (int i = 0; i < TPL; ++i) bias[h][i] = 0.f;
      key_biases(cur, static_cast<int>(tile - tile_begin), bias);
    }
    if (new_qb) compute_qb(lb, bkw);
    const bool flush = RMAX > 0 && u_live && lb != u_lb;
    const int old_lb = u_lb;
    float Uold[GT][RR];
    float p_all[GT][TPL], corr_all[GT];  // the probabilities and each head's rescale factor
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int i = 0; i < TPL; ++i) {
        // The token's slot in its word: 2-bit codes alternate eps by parity; 4-bit ones share one.
        const bool odd = ((TPL * cp + i) & 1) != 0;
        const float inv = odd ? code_inv_eps<BITS>(1) : code_inv_eps<BITS>(0);
        float x = MMAK ? part[h][i] : part[h][i] * inv;  // (q·zero came with the MMA, or from part's start value)
#pragma unroll
        for (int r = 0; r < RR; ++r)
          if (RMAX > 0 && r < R) x = fmaf(qb[h][r], half_of(ak[i][r / 2], r & 1), x);
        p_all[h][i] = SPI ? x + bias[h][i] : x;  // (x + 0.f is an add: -0 + 0 = +0)
      }
    if (sc)
#pragma unroll
      for (int h = 0; h < GT; ++h)
        if (h < nq)
#pragma unroll
          for (int i = 0; i < TPL; ++i) {
            p_all[h][i] += bias[h][i];
            sc[(static_cast<size_t>(b) * nh + h0 + h) * sc_stride + tok0 + t_lane + i] = p_all[h][i];
          }
    // 3. softmax of every head at once (their shuffle rounds interleave: a head at a time left GQA tiles waiting on
    // 4 x 10 dependent shuffles a tile).
    const bool moved = softmax_heads(p_all, corr_all);
    // The accumulators, p·zero sums and carried low-rank sums times the factors (MMAK: only where a maximum moved, a
    // branch around them all: as predicates their multiplies issued every tile).
    if (!LAZY || moved)
#pragma unroll
      for (int h = 0; h < GT; ++h)
        if (!LAZY || corr_all[h] != 1.f) rescale(h, corr_all[h]);  // (corr is warp-uniform)
    if constexpr (MMAV) {  // the lane's tokens' value scales and zeros, staged with the tile (fp16 pairs of groups)
      const uint16_t* vsh = reinterpret_cast<const uint16_t*>(cur + SM::vsc_off);
#pragma unroll
      for (int i = 0; i < TPL; ++i)
#pragma unroll
        for (int k = 0; k < GW; ++k) {
          const int o = (t_lane + i) * NGV + 2 * k;
          if (2 * k >= NGV) vs[i][k] = vz[i][k] = 0u;
          else if (NGV == 1) vs[i][k] = vsh[o], vz[i][k] = vsh[G * NGV + o];
          else vs[i][k] = *reinterpret_cast<const uint32_t*>(vsh + o), vz[i][k] = *reinterpret_cast<const uint32_t*>(vsh + G * NGV + o);
        }
    }
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      float (&s)[TPL] = p_all[h];
      // (p·scale, p·zero) of the lane's tokens to shared memory; the carried sum p A_v (the previous block's moved to
      // Uold when this tile starts a new one, flushed after the value loop).
      if constexpr (MMAV) {
#pragma unroll
        for (int i = 0; i < TPL; ++i) {
#pragma unroll
          for (int q = 0; q < NGV; ++q) zp[h][q] = fmaf(s[i], half_of(vz[i][q / 2], q & 1), zp[h][q]);
        }
      } else {
        if (h == 0) __syncwarp();  // the previous tile's value loop has read my_psz
#pragma unroll
        for (int i = 0; i < TPL; ++i)
#pragma unroll
          for (int g = 0; g < kLeanMaxGroups; ++g)
            if (g < ng)
              my_psz[(h * G + t_lane + i) * kLeanMaxGroups + g] =
                  make_float2(s[i] * half_of(vs[i][g / 2], g & 1), s[i] * half_of(vz[i][g / 2], g & 1));
      }
      if (RMAX > 0) {
        if (flush)
#pragma unroll
          for (int r = 0; r < RR; ++r) Uold[h][r] = U[h][r], U[h][r] = 0.f;
#pragma unroll
        for (int r = 0; r < RR; ++r)
#pragma unroll
          for (int i = 0; i < TPL; ++i)
            if (r < R) U[h][r] = fmaf(s[i], half_of(av[i][r / 2], r & 1), U[h][r]);
      }
    }
    if (RMAX > 0) u_lb = lb, u_live = true;
    if constexpr (SPI) {
      // The tile's value outliers: sum_t p_t delta_{t,d} into the value sums, rescaled first with the accumulators.
#pragma unroll
      for (int i = 0; i < TPL; ++i)
        reinterpret_cast<float4*>(wscr)[t_lane + i] = make_float4(p_all[0][i], p_all[1][i], p_all[2][i], p_all[3][i]);
      scale_value_sums(corr_all);  // (its sync also publishes the probabilities)
      value_outliers(cur, static_cast<int>(tile - tile_begin));
    }
    uint4 bvw[RPL][BVW];
    if (flush) load_bv(old_lb, bvw);
    __syncwarp();

    if constexpr (MMAV) {
      // 4'. p·scale as the value MMA's B fragments (k-step ks = the lane's token block, k = its token), scaled by
      // 2^ev; the accumulators move to the new scale with this tile's softmax factor.
      // (p <= 2^kLazyMax = 8, so 8 times the tile's largest |scale| bounds every p·scale: 2^ev puts the largest |scale|
      // near 2^11 when it is computed, every term below 2^15 < fp16's 65504)
      float mx = 0.f;
#pragma unroll
      for (int i = 0; i < TPL; ++i)
#pragma unroll
        for (int q = 0; q < NGV; ++q) mx = fmaxf(mx, fabsf(half_of(vs[i][q / 2], q & 1)));
      // Lazily too: ev stays while the tile's largest |scale| 2^ev is in [2^4, 2^12) (every term below 2^15; a term
      // that falls to fp16's subnormals, below 2^-14, is off by at most 2^-25, < 2^-29 of the tile's largest), so
      // the reduction runs only when the scales move by a factor 2 up or 2^7 down (and at the first tile).
      int ev = evc;
      const float se = mx * __int_as_float((127 + evc) << 23);  // (|evc| <= 60)
      if (__any_sync(kFull, !(se < 4096.f)) || !__any_sync(kFull, se >= 16.f)) {
        mx = warp_max_redux(mx);
        if (mx > 0.f) ev = min(60, max(-60, 11 - (static_cast<int>((__float_as_uint(mx) >> 23) & 0xff) - 127)));
      }
      static_assert(kLazyMax == 3.f, "2^12 times p <= 2^3 stays below fp16's largest");
      float ct = 1.f;
#pragma unroll
      for (int h = 0; h < GT; ++h)
        if (h == mt) ct = corr_all[h];
      ct *= __int_as_float((127 + ev - evc) << 23);  // |ev - evc| <= 120: an exact power of two
      if (__any_sync(kFull, ct != 1.f))  // (most tiles neither raise the maximum nor move ev)
#pragma unroll
        for (int i = 0; i < NGV * VWS; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) cv[i][j] *= ct;
      evc = ev;
      const float up = __int_as_float((127 + ev) << 23);
      uint32_t* fv = reinterpret_cast<uint32_t*>(my_psz);
      __syncwarp();  // the previous tile's value MMA has read fv, this tile's lanes their key scores
      if constexpr (TPL == 2) {
#pragma unroll
        for (int h = 0; h < GT; ++h)
#pragma unroll
          for (int q = 0; q < NGV; ++q) {
            uint32_t hi, lo;
            split_hl(p_all[h][0] * half_of(vs[0][q / 2], q & 1) * up, p_all[h][1] * half_of(vs[1][q / 2], q & 1) * up, hi, lo);
            const int row = (tb * NGV + q) * FSTR, col = mma_map::b_col(2 * cp), reg = mma_map::b_reg(2 * cp);
            fv[row + mma_map::b_word(h, 0, col, reg)] = hi;
            fv[row + mma_map::b_word(h, 1, col, reg)] = lo;
          }
      } else {
        // One token a lane: a B word holds two tokens' values (k = cp, cp + 1: the lanes cp even / odd, TBS apart), so
        // the pair splits the heads: the even lane packs heads 0 and 2, the odd lane heads 1 and 3 (its B words 16
        // apart: distinct banks), each sending the other its own token's values of the other's heads (run CA: each
        // lane packed all four heads and the odd lanes' half went to a scratch word).
        const bool odd = (cp & 1) != 0;
        const int k0 = cp & ~1, col = mma_map::b_col(k0), reg = mma_map::b_reg(k0);
        uint32_t* fb = fv + tb * NGV * FSTR + mma_map::b_word(odd ? 1 : 0, 0, col, reg);  // head 2 hh + odd at + 32 hh
#pragma unroll
        for (int hh = 0; hh < GT / 2; ++hh) {
          const float pm = (odd ? p_all[2 * hh + 1][0] : p_all[2 * hh][0]) * up, ps = (odd ? p_all[2 * hh][0] : p_all[2 * hh + 1][0]) * up;
#pragma unroll
          for (int q = 0; q < NGV; ++q) {
            const float s = half_of(vs[0][q / 2], q & 1), mine = pm * s, other = __shfl_xor_sync(kFull, ps * s, TBS);
            uint32_t hi, lo;
            split_hl(odd ? other : mine, odd ? mine : other, hi, lo);
            fb[q * FSTR + mma_map::b_word(2 * hh, 0, 0, 0)] = hi;
            fb[q * FSTR + mma_map::b_word(2 * hh, 1, 0, 0)] = lo;
          }
        }
      }
      __syncwarp();
      // 5'. values on the tensor cores: M-block q VW + j, rows g / g + 8 = the lane's slots j / j + VW of its word.
      const uint32_t selv = mma_map::pair_selector(2 * VWS, mg);
      // (value groups of 32 channels: VW 2: slot j's codes masked where they lie, as for the keys; the accumulators of
      // M-block q VW + j then hold 4^j times their outputs, lean_code_unit, divided out at the end)
      // (staged: mma_map::staged_value_read(ks, q, mt, mg, j, VPL, VW) as a lane base plus constant offsets)
      const uint32_t* vst = cur + SM::ktw + 2 * mt * SM::vstr + mma_map::value_word(0, mg, VWS);
      static_assert(STAGE, "the value MMA reads staged words");
      auto value_word = [&](int ks, int q, int j) { return vst[mma_map::k_index(ks, 0, j) * SM::vstr + q * VWS]; };
#pragma unroll
      for (int ks = 0; ks < KSV; ++ks)
#pragma unroll
        for (int q = 0; q < NGV; ++q) {
          const uint2 bb = *reinterpret_cast<const uint2*>(fv + (ks * NGV + q) * FSTR + 2 * lane);
          const uint32_t plo = __byte_perm(value_word(ks, q, 0), value_word(ks, q, 1), selv),
                         phi = __byte_perm(value_word(ks, q, 2), value_word(ks, q, 3), selv);
#pragma unroll
          for (int j = 0; j < VWS; ++j) {
            uint32_t a[4];
            lean_code_a<VWS>(plo, phi, j, a);
            mma16816(cv[q * VWS + j], a, bb.x, bb.y);
          }
        }
    } else {
      // 4. values: acc[h][j] += p·scale * f(code of channel CPW vp + j), token it * TPI + tv.
#pragma unroll
      for (int it = 0; it < VIT; ++it) {
        const int t = it * TPI + tv;
        float f[CPW];
        decode_word<BITS>(vw[it], f);
#pragma unroll
        for (int h = 0; h < GT; ++h) {
          const float2 pz = my_psz[(h * G + t) * kLeanMaxGroups + v_g];
          vsum[h] += pz.x;
          zacc[h] += pz.y;
#pragma unroll
          for (int j = 0; j < CPW; ++j) acc[h][j] = fmaf(pz.x, f[j], acc[h][j]);
        }
      }
    }
    if (n + 1 < w_tiles) load_values(tile + kLeanWarps);
    if (flush) flush_deferred(old_lb, Uold, bvw);
  }
  if constexpr (STAGE) cp_async_wait<0>();  // (only the empty last group can be pending)
  if (RMAX > 0 && u_live) {
    uint4 bvw[RPL][BVW];
    load_bv(u_lb, bvw);
    flush_deferred(u_lb, U, bvw);
  }
  // Unbias: sum p s c + low rank = (acc - sum p s) / eps(j); plus sum p z. (MMAV: acc takes only the buffer, below.)
#pragma unroll
  for (int h = 0; h < (MMAV ? 0 : GT); ++h)
#pragma unroll
    for (int j = 0; j < CPW; ++j) acc[h][j] = (acc[h][j] - vsum[h]) * code_inv_eps<BITS>(j) + zacc[h];

  // ---------------- the fp16 buffer: its 32-token pieces dealt to the warps, from the one after the last tile's ----------------
  // (A piece costs about 2.6 tiles' instructions on this FMA path. One warp taking every piece left the block's other
  // three waiting at its barrier: run LB, Llama-3-8B KIVI-2 B 64 8k, 13 % of the warps' stall samples.)
  if (has_buf) {
    float* pb = reinterpret_cast<float*>(my_psz);  // [GT][32] probabilities of a piece
    const int first = (warp - ntiles % kLeanWarps + kLeanWarps) % kLeanWarps;  // this warp's first piece
    for (long long i0 = 32LL * first; i0 < len.buf; i0 += 32LL * kLeanWarps) {
      const int nt = static_cast<int>(min(32LL, len.buf - i0));
      float s[GT][1];
      bool valid[1] = {lane < nt};
#pragma unroll
      for (int h = 0; h < GT; ++h) s[h][0] = 0.f;
      if (valid[0]) {
        const uint16_t* kr = kv.k_buf + ix.buf(b, kvh, i0 + lane);
#pragma unroll 4
        for (int c8 = 0; c8 < HD / 8; ++c8) {
          float kf[8];
          unpack<__half>(ldg16(kr + 8 * c8), kf);
#pragma unroll
          for (int h = 0; h < GT; ++h)
#pragma unroll
            for (int j = 0; j < 8; ++j) s[h][0] = fmaf(sq[h][8 * c8 + j], kf[j], s[h][0]);
        }
      }
      __syncwarp();  // the previous piece's value loop (or the last tile's) has read pb
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        const float corr = softmax(h, s[h], valid);  // one token per lane
#pragma unroll
        for (int j = 0; j < CPW; ++j) acc[h][j] *= corr;
        scale_value_sum(h, corr);
        if constexpr (MMAV) {
#pragma unroll
          for (int q = 0; q < NGV; ++q) zp[h][q] *= corr;
          if (h == mt)
#pragma unroll
            for (int i = 0; i < NGV * VWS; ++i)
#pragma unroll
              for (int j = 0; j < 4; ++j) cv[i][j] *= corr;
        }
        pb[h * 32 + lane] = s[h][0];
      }
      __syncwarp();
      for (int t = tv; t < nt; t += TPI) {
        const uint16_t* vr = kv.v_buf + ix.buf(b, kvh, i0 + t) + CPW * vp;
        if constexpr (CPW == 16) {
          float lo[8], hi[8];
          unpack<__half>(ldg16(vr), lo);
          unpack<__half>(ldg16(vr + 8), hi);
#pragma unroll
          for (int h = 0; h < GT; ++h) {
            const float p = pb[h * 32 + t];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
              acc[h][j] = fmaf(p, lo[j], acc[h][j]);
              acc[h][j + 8] = fmaf(p, hi[j], acc[h][j + 8]);
            }
          }
        } else {  // 8 channels a lane
          float lo[8];
          unpack<__half>(ldg16(vr), lo);
#pragma unroll
          for (int h = 0; h < GT; ++h) {
            const float p = pb[h * 32 + t];
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[h][j] = fmaf(p, lo[j], acc[h][j]);
          }
        }
      }
    }
  }

  // ---------------- merge: the warp's token lanes, then the block's warps ----------------
#pragma unroll
  for (int off = VPL; off < 32; off <<= 1)
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int j = 0; j < CPW; ++j) acc[h][j] += __shfl_xor_sync(kFull, acc[h][j], off);
  __syncwarp();  // the key loop has read my_qs, which now takes the warp's output
  if (tv == 0)
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int j = 0; j < CPW; j += 4)
        *reinterpret_cast<float4*>(my_qs + h * HD + CPW * vp + j) = make_float4(acc[h][j], acc[h][j + 1], acc[h][j + 2], acc[h][j + 3]);
  if constexpr (MMAV) {
    // The value MMA's outputs (head mt, the lane's channels) and sum p·zero of their groups, added to the buffer's.
    float zq[NGV];
#pragma unroll
    for (int q = 0; q < NGV; ++q) {
      zq[q] = 0.f;
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        const float z = warp_sum_all(zp[h][q]);
        if (h == mt) zq[q] = z;
      }
    }
    __syncwarp();
    const float u0 = __int_as_float((127 + 24 - evc) << 23), u1 = __int_as_float((127 + 24 - 2 * VWS - evc) << 23);
#pragma unroll
    for (int q = 0; q < NGV; ++q)
#pragma unroll
      for (int j = 0; j < VWS; ++j) {
        const int ch = mma_map::value_channel(q, j, mg, VWS);
        const float* c = cv[q * VWS + j];
        const float d = 1.f / lean_code_unit<VWS>(j);  // (a power of two: exact)
        my_qs[mt * HD + ch] += (c[0] + c[1]) * (u0 * d) + zq[q];
        my_qs[mt * HD + ch + VWS] += (c[2] + c[3]) * (u1 * d) + zq[q];
      }
  }
  if constexpr (SPI) {  // the value outliers' sums
    __syncwarp();
    for (int i = lane; i < GT * HD; i += 32) my_qs[i] += fixed_value(vlo[i], vhi[i], (vnan[i >> 5] >> (i & 31)) & 1u);
  }
  if constexpr (LAZY)
#pragma unroll
    for (int h = 0; h < GT; ++h) l[h] = warp_sum_all(l[h]);
  if (lane == 0)
#pragma unroll
    for (int h = 0; h < GT; ++h) mm[warp][h] = m[h], ml[warp][h] = l[h];
  __syncthreads();
  for (int i = tid; i < nq * HD; i += kLeanThreads) {
    const int h = i / HD, d = i - h * HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kLeanWarps; ++w) M = fmaxf(M, mm[w][h]);
    float A = 0.f, L = 0.f;
#pragma unroll
    for (int w = 0; w < kLeanWarps; ++w) {
      const float wt = mm[w][h] == -INFINITY ? 0.f : exp2f(mm[w][h] - M);  // a warp with no token adds nothing
      A = fmaf(wt, qsw[w][h * HD + d], A);
      L = fmaf(wt, ml[w][h], L);
    }
    const size_t row = static_cast<size_t>(b) * nh + h0 + h;
    if (direct) {
      out[row * HD + d] = from_f<T>(A / L);
    } else {  // (a stream-K segment past the row's tokens has none: weight 0 in the combine)
      ws_o[(row * n_splits + split) * HD + d] = L > 0.f ? A / L : 0.f;
      if (d == 0) ws_lse[row * n_splits + split] = L > 0.f ? M + __log2f(L) : -INFINITY;
    }
  }
}

// The row (b, kv head, query-head tile) of a stream-K line's row index r (the combine's order: b, then kv head, then
// tile), and its work on the line's units [u0, u1) (tiles, then the buffer's units).
template <int GT>
__device__ __forceinline__ LeanWork stream_k_work(const CompressedKV& kv, const split_rule::StreamK& sk, long long r, long long u0,
                                                  long long u1, int group, int n_sub, long long max_comp) {
  LeanWork w;
  const long long g = static_cast<long long>(kv.nkv) * n_sub;  // line rows (kv head, query-head tile) of one batch row
  w.at = split_block_at<GT>(static_cast<int>(blockIdx.x - split_rule::stream_k_first_block(sk, r)), static_cast<unsigned>(r % g),
                            static_cast<int>(r / g), group, n_sub);
  w.len = row_lens(kv, w.at.b, max_comp);
  const long long G = kv.group;
  w.c_begin = min(u0, sk.T) * G;
  w.c_end = max(w.c_begin, min(min(u1, sk.T) * G, w.len.comp));
  w.has_buf = u1 == sk.U && w.len.buf > 0;
  w.direct = false;
  return w;
}

// Stream-K is instantiated for KIVI's GQA tiles of 4 heads (2-bit codes on the key MMA, no low rank, no outliers
// inside), the only kernels it measured faster for (split_rule::kStreamKShareTokens); the others keep their splits.
// The same family is also built for kLeanTwoBlocks blocks an SM (gear_attention_lean.cuh).
template <int GT, int BITS, int RMAX, bool SP> constexpr bool lean_stream_k() { return lean_mma_keys<GT, BITS>() && RMAX == 0 && !SP; }

// Split mode (SK false): grid (n_splits, nkv * n_sub, B), block (split, kv head and query-head tile, row) takes the
// split's tokens. Stream-K (SK, with a plan sk.W > 0): grid (sk.blocks), block k the line's units [k W, (k + 1) W), a
// segment a row (cattn_combine_kernel merges them). A template flag, not a runtime one: the segment loop keeps the
// segment's row, range and slot live through the whole body (registers a rematerialised blockIdx spared), which cost
// the split kernels up to ~30 registers and spills where they had none (ptxas, sm_90). kLeanThreads threads; BPS the
// blocks an SM asked of the register allocator (lean_min_blocks, or kLeanTwoBlocks for KIVI's GQA-4 kernels).
template <typename T, int HD, int GT, int G, int RMAX, int BITS, int VW, bool SP, bool SK, int BPS>
__global__ void __launch_bounds__(kLeanThreads, BPS)
    cattn_lean_kernel(const T* __restrict__ q, CompressedKV kv, T* __restrict__ out, float* __restrict__ ws_o,
                      float* __restrict__ ws_lse, int nh, int group, int n_sub, int split_tokens, int n_splits, long long max_comp,
                      float scale_log2, int vg_shift, float* __restrict__ sc, long long sc_stride, split_rule::StreamK sk) {
  const SplitBlock blk = begin_split_block<GT>(group, n_sub);
  // KIVI's stream-K and two-block builds never run with the outlier passes (compressed_attention rejects stream-K
  // with them; the automatic choice and set_kivi_gqa_blocks_per_sm take those builds only without them), so their
  // `sc` is null; so is it with the outliers inside (SP: they replace the passes). Passed as a null the compiler sees,
  // it drops what a runtime-null one left hoisted into every tile: the score-bias loads and their addresses, and the
  // registers they held (tid and lane were rematerialised a tile). launch_lean_split checks all three on the host.
  // (The two-block build is the layout's only BPS-2 kernel unless GEARLAB_LEAN_GQA_BLOCKS makes the default 2 too.)
  constexpr bool kNoPasses = SK || SP ||
                             (BPS == kLeanTwoBlocks && lean_stream_k<GT, BITS, RMAX, SP>() &&
                              lean_min_blocks<HD, GT, G, RMAX, BITS, VW>() != kLeanTwoBlocks);
  if constexpr (kNoPasses) sc = nullptr;
  if constexpr (!SK) {
    const RowLens len = row_lens(kv, blk.b, max_comp);
    const bool direct = n_splits == 1 && sc == nullptr;
    if (!len.ok) {
      if (direct)
        for (int i = threadIdx.x; i < blk.nq * HD; i += kLeanThreads) out[(static_cast<size_t>(blk.b) * nh + blk.h0) * HD + i] = from_f<T>(NAN);
      return;  // with splits, the combine kernel writes the NaN row
    }
    if (blk.split >= live_splits(len, split_tokens)) return;
    const SplitSpan span = split_span(len, blk.split, split_tokens);
    lean_work<T, HD, GT, G, RMAX, BITS, VW, SP>(q, kv, out, ws_o, ws_lse, nh, n_splits, scale_log2, vg_shift, sc, sc_stride,
                                                {blk, len, span.c_begin, span.c_end, span.has_buf, direct});
  } else {
    long long u = static_cast<long long>(blockIdx.x) * sk.W;
    const long long u_end = min(u + sk.W, sk.rows * sk.U);
    for (bool first = true; u < u_end; first = false) {
      const long long r = u / sk.U, u0 = u - r * sk.U, u1 = min(sk.U, u0 + (u_end - u));
      const LeanWork w = stream_k_work<GT>(kv, sk, r, u0, u1, group, n_sub, max_comp);
      u += u1 - u0;
      if (!w.len.ok) continue;      // (the combine writes its NaN row)
      if (!first) __syncthreads();  // the last segment's merge has read the block's shared memory
      lean_work<T, HD, GT, G, RMAX, BITS, VW, SP>(q, kv, out, ws_o, ws_lse, nh, n_splits, scale_log2, vg_shift, sc, sc_stride, w);
    }
  }
}

int log2_of(int x) {
  int s = 0;
  while ((1 << s) < x) ++s;
  return s;
}

// Calls f(Tag<T>{}, kernel, dynamic shared bytes) with the v7 instantiation that takes this layout with gt query heads
// a block (after allowing its dynamic shared memory on the current device); with the outliers inside when `inside`
// (lean_outliers_inside: the staged value-MMA tiles, the only ones instantiated with them); the stream-K one when
// `stream_k`, the one built for kLeanTwoBlocks blocks an SM when `two_blocks` (both: lean_stream_k_supported only).
template <typename F> void with_lean_kernel(DType t, const CompressedKV& kv, int gt, bool inside, bool stream_k, bool two_blocks, F&& f) {
  auto run_sk = [&](auto tag, auto hd_c, auto gt_c, auto g_c, auto r_c, auto bits_c, auto vw_c, auto sp_c, auto sk_c, auto two_c) {
    using T = typename decltype(tag)::type;
    constexpr int HDV = decltype(hd_c)::value, GTV = decltype(gt_c)::value, GV = decltype(g_c)::value, BV = decltype(bits_c)::value,
                  VWV = decltype(vw_c)::value, RV = decltype(r_c)::value;
    constexpr bool SPV = decltype(sp_c)::value;
    constexpr int BPS = decltype(two_c)::value ? kLeanTwoBlocks : lean_min_blocks<HDV, GTV, GV, RV, BV, VWV>();
    auto kernel = cattn_lean_kernel<T, HDV, GTV, GV, RV, BV, VWV, SPV, decltype(sk_c)::value, BPS>;
    constexpr int dyn = LeanSmem<HDV, GTV, GV, BV, VWV, SPV>::dynamic_bytes;
    if constexpr (dyn > 0) {
      static std::mutex mu;  // (one of each for every instantiation of this lambda: every kernel)
      static std::set<int> done;
      allow_dynamic_smem(kernel, dyn, mu, done);
    }
    f(tag, kernel, dyn);
  };
  auto run_sp = [&](auto tag, auto hd_c, auto gt_c, auto g_c, auto r_c, auto bits_c, auto vw_c, auto sp_c) {
    using F0 = std::false_type;
    using T1 = std::true_type;
    if constexpr (lean_stream_k<decltype(gt_c)::value, decltype(bits_c)::value, decltype(r_c)::value, decltype(sp_c)::value>()) {
      if (two_blocks && stream_k) return run_sk(tag, hd_c, gt_c, g_c, r_c, bits_c, vw_c, sp_c, T1{}, T1{});
      if (two_blocks) return run_sk(tag, hd_c, gt_c, g_c, r_c, bits_c, vw_c, sp_c, F0{}, T1{});
      if (stream_k) return run_sk(tag, hd_c, gt_c, g_c, r_c, bits_c, vw_c, sp_c, T1{}, F0{});
    }
    if (stream_k || two_blocks)
      fail("compressed_attention", std::string("v7's ") + (stream_k ? "stream-K plan" : "two-block kernel") +
                                       " is not built for this layout (lean_stream_k_supported)");
    run_sk(tag, hd_c, gt_c, g_c, r_c, bits_c, vw_c, sp_c, F0{}, F0{});
  };
  auto run_vw = [&](auto tag, auto hd_c, auto gt_c, auto g_c, auto r_c, auto bits_c, auto vw_c) {
    if constexpr (lean_mma_keys<decltype(gt_c)::value, decltype(bits_c)::value>() && decltype(vw_c)::value > 0)  // LeanSmem::sp
      if (inside) return run_sp(tag, hd_c, gt_c, g_c, r_c, bits_c, vw_c, std::true_type{});
    run_sp(tag, hd_c, gt_c, g_c, r_c, bits_c, vw_c, std::false_type{});
  };
  // The value MMA's variants only where the key MMA runs (GQA 4, 2-bit codes).
  auto run_bits = [&](auto tag, auto hd_c, auto gt_c, auto g_c, auto r_c, auto bits_c) {
    using Z = std::integral_constant<int, 0>;
    if constexpr (decltype(gt_c)::value == 4 && decltype(bits_c)::value == 2) {
      const int vw = lean_value_words(decltype(hd_c)::value, decltype(g_c)::value, kv.v_group);
      constexpr int HDV = decltype(hd_c)::value, GV = decltype(g_c)::value;
      if constexpr (lean_value_words(HDV, GV, 32) == 2)
        if (vw == 2) return run_vw(tag, hd_c, gt_c, g_c, r_c, bits_c, std::integral_constant<int, 2>{});
      if constexpr (lean_value_words(HDV, GV, 64) == 4)
        if (vw == 4) return run_vw(tag, hd_c, gt_c, g_c, r_c, bits_c, std::integral_constant<int, 4>{});
    }
    run_vw(tag, hd_c, gt_c, g_c, r_c, bits_c, Z{});
  };
  using I = std::integral_constant<int, 0>;
  // 4-bit codes only for MHA (lean_layout_ok): those are the only 4-bit instantiations.
  auto run = [&](auto tag, auto hd_c, auto gt_c, auto g_c, auto r_c) {
    if constexpr (decltype(gt_c)::value == 1) {
      if (kv.bits == 4) {
        run_bits(tag, hd_c, gt_c, g_c, r_c, std::integral_constant<int, 4>{});
        return;
      }
    }
    run_bits(tag, hd_c, gt_c, g_c, r_c, std::integral_constant<int, 2>{});
  };
  auto by_rank = [&](auto tag, auto hd_c, auto gt_c, auto g_c) {
    if (kv.rank > 0) run(tag, hd_c, gt_c, g_c, std::integral_constant<int, kLeanMaxRank>{});
    else run(tag, hd_c, gt_c, g_c, I{});
  };
  auto by_g = [&](auto tag, auto hd_c, auto gt_c) {
    if (kv.group == 32) by_rank(tag, hd_c, gt_c, std::integral_constant<int, 32>{});
    else by_rank(tag, hd_c, gt_c, std::integral_constant<int, 64>{});
  };
  auto by_gt = [&](auto tag, auto hd_c) {
    if (gt == 1) by_g(tag, hd_c, std::integral_constant<int, 1>{});
    else if (gt == 2) by_g(tag, hd_c, std::integral_constant<int, 2>{});
    else by_g(tag, hd_c, std::integral_constant<int, 4>{});  // (lean_layout_ok: gt <= 4)
  };
  auto by_hd = [&](auto tag) {
    if (kv.hd == 64) by_gt(tag, std::integral_constant<int, 64>{});
    else by_gt(tag, std::integral_constant<int, 128>{});
  };
  if (t == DType::F16) by_hd(Tag<__half>{});
  else by_hd(Tag<__nv_bfloat16>{});
}

}  // namespace

bool lean_outliers_inside(const CompressedKV& kv, int gt) {
  return lean_layout_ok(kv, gt) && gt == 4 && kv.bits == 2 && lean_value_words(kv.hd, kv.group, kv.v_group) > 0 && kv.sparse_cap > 0 &&
         kv.sparse_cap % kSparseChunk == 0 && kv.k_sp_pos && kv.v_sp_pos && kv.k_sp_corr && kv.v_sp_corr && aligned16(kv.k_sp_pos) &&
         aligned16(kv.v_sp_pos) && aligned16(kv.k_sp_corr) && aligned16(kv.v_sp_corr) && device_info().pdl;
}

void launch_lean_split(DType t, const void* q, const CompressedKV& kv, void* out, float* ws_o, float* ws_lse, float* sc,
                       long long sc_stride, int nh, int group, int gt, int n_sub, int split_tokens, int n_splits, long long max_comp,
                       float scale_log2, bool inside, bool two_blocks, const split_rule::StreamK& sk, cudaStream_t stream) {
  if (!lean_layout_ok(kv, gt)) fail("compressed_attention", "v7 (lean) does not take this layout");
  if (inside && (sc || !lean_outliers_inside(kv, gt))) fail("compressed_attention", "v7 cannot apply this layout's outliers itself");
  if (sk.W > 0 && (sc || inside || sk.slots != n_splits || sk.blocks > 0x7fffffffLL || sk.rows != static_cast<long long>(kv.B) * kv.nkv * n_sub))
    fail("compressed_attention", "v7's stream-K plan does not fit this call");
  // (The two-block build takes no score bias either: it drops `sc` at compile time, cattn_lean_kernel.)
  if (two_blocks && sc) fail("compressed_attention", "v7's two-block kernel does not run with the outlier passes");
  const dim3 grid = sk.W > 0 ? dim3(static_cast<unsigned>(sk.blocks))
                             : dim3(static_cast<unsigned>(n_splits), static_cast<unsigned>(kv.nkv * n_sub), static_cast<unsigned>(kv.B));
  const int vg_shift = log2_of(kv.v_group);
  with_lean_kernel(t, kv, gt, inside, sk.W > 0, two_blocks, [&](auto tag, auto kernel, int dyn) {
    using T = typename decltype(tag)::type;
    kernel<<<grid, kLeanThreads, dyn, stream>>>(static_cast<const T*>(q), kv, static_cast<T*>(out), ws_o, ws_lse, nh, group, n_sub,
                                                split_tokens, n_splits, max_comp, scale_log2, vg_shift, sc, sc_stride, sk);
  });
  check_launch("compressed_attention (v7 split kernel)");
}

bool lean_stream_k_supported(const CompressedKV& kv, int gt, bool inside) {
  return lean_layout_ok(kv, gt) && gt == 4 && kv.bits == 2 && kv.rank == 0 && !inside;
}

int lean_blocks_per_sm(DType t, const CompressedKV& kv, int gt, bool inside, bool stream_k, bool two_blocks) {
  if (!lean_layout_ok(kv, gt)) return 0;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  // (cached per device and instantiation: the occupancy query costs microseconds, and every layer's call asks)
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, int> cache;
  int blocks = 0;
  with_lean_kernel(t, kv, gt, inside, stream_k, two_blocks, [&](auto, auto kernel, int dyn) {
    const std::pair<int, const void*> key{dev, reinterpret_cast<const void*>(kernel)};
    std::lock_guard<std::mutex> lock(mu);
    const auto it = cache.find(key);
    if (it != cache.end()) {
      blocks = it->second;
      return;
    }
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kLeanThreads, dyn) != cudaSuccess) {
      cudaGetLastError();
      blocks = 0;
      return;
    }
    cache.emplace(key, blocks);
  });
  return blocks;
}

}  // namespace gear::kernels::detail
