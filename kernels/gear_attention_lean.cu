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
// The fp16 buffer is one more unit of work for the warp after the last tile's. The 4 warps then merge (shared
// memory) and the block writes the output or the split's partial output and log2-sum-exp, as v3. Outliers: the
// key and value passes of gear_outlier_passes.cuh around it, as around v3 (sc: the key pass's score bias in,
// each compressed token's final score out).
#include "kernels/gear_attention_lean.cuh"

#include <type_traits>

#include "kernels/gear_layout.cuh"
#include "kernels/split_combine.cuh"

namespace gear::kernels::detail {
namespace {

constexpr int kLeanWarps = 4;
constexpr int kLeanThreads = 32 * kLeanWarps;
constexpr unsigned kFull = 0xffffffffu;

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

// Blocks per SM asked of the register allocator: 4 (128 registers); with the low-rank state at hd 128 and G 64,
// GEARLAB_LEAN_RANK_BLOCKS (default 3: 168 registers; at 4 ptxas spilled ~100 bytes a thread). A compile-time knob
// so that both can be timed from one checkout (docs/kernels.md, "v7").
#ifndef GEARLAB_LEAN_RANK_BLOCKS
#define GEARLAB_LEAN_RANK_BLOCKS 3
#endif
// GQA tiles (GT 2 / 4 query heads a block: GT times the accumulators) ask for 3 / 2 blocks (168 / 255 registers).
// 4-bit codes (G 64) hold twice the words of a tile in registers: 3 blocks; with low rank at G 32 as well (at 4 ptxas
// spilled ~50 bytes a thread).
template <int HD, int GT, int G, int RMAX, int BITS> constexpr int lean_min_blocks() {
  if constexpr (BITS == 4) return G == 64 || RMAX > 0 ? 3 : 4;
  else if constexpr (GT >= 4) return 2;
  else if constexpr (GT == 2) return 3;
  else return RMAX > 0 && HD == 128 && G == 64 ? GEARLAB_LEAN_RANK_BLOCKS : 4;
}

// grid (n_splits, nkv * n_sub, B), kLeanThreads threads. RMAX: 0 (no low rank) or kLeanMaxRank (kv.rank <= RMAX).
// BITS: 2, or 4 (MHA only: lean_layout_ok).
template <typename T, int HD, int GT, int G, int RMAX, int BITS>
__global__ void __launch_bounds__(kLeanThreads, lean_min_blocks<HD, GT, G, RMAX, BITS>())
    cattn_lean_kernel(const T* __restrict__ q, CompressedKV kv, T* __restrict__ out, float* __restrict__ ws_o,
                      float* __restrict__ ws_lse, int nh, int group, int n_sub, int split_tokens, int n_splits, long long max_comp,
                      float scale_log2, int vg_shift, float* __restrict__ sc, long long sc_stride) {
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

  __shared__ __align__(16) float sq[GT][HD];                           // queries, pre-scaled by scale * log2(e)
  __shared__ __align__(16) float qsw[kLeanWarps][GT][HD];              // per warp: q·scale of its tile; at the end its output
  __shared__ __align__(16) float2 psz[kLeanWarps][GT][G * kLeanMaxGroups];  // per warp: (p·scale, p·zero) per token and group
  __shared__ float mm[kLeanWarps][GT], ml[kLeanWarps][GT];

  const SplitBlock blk = begin_split_block<GT>(group, n_sub);
  const int split = blk.split, kvh = blk.kvh, b = blk.b, h0 = blk.h0, nq = blk.nq;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LayoutIx ix(kv);
  const size_t bh = ix.bh(b, kvh);
  const int R = RMAX > 0 ? kv.rank : 0;
  const int ng = HD >> vg_shift;

  const RowLens len = row_lens(kv, b, max_comp);
  const bool direct = n_splits == 1 && sc == nullptr;
  if (!len.ok) {
    if (direct)
      for (int i = tid; i < nq * HD; i += kLeanThreads) out[(static_cast<size_t>(b) * nh + h0) * HD + i] = from_f<T>(NAN);
    return;  // with splits, the combine kernel writes the NaN row
  }
  if (split >= live_splits(len, split_tokens)) return;
  const SplitSpan span = split_span(len, split, split_tokens);  // (not a structured binding: lambdas capture these)
  const long long c_begin = span.c_begin, c_end = span.c_end;
  const bool has_buf = span.has_buf;
  const long long tile_begin = c_begin / G;  // split_tokens is a multiple of 128, so of G
  const int ntiles = c_end > c_begin ? static_cast<int>((c_end - c_begin) / G) : 0;

  for (int i = tid; i < GT * HD; i += kLeanThreads) {
    const int h = i / HD;
    sq[h][i - h * HD] = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * HD + i]) * scale_log2 : 0.f;
  }
  __syncthreads();

  // ---------------- per warp ----------------
  const int tb = lane % TBS, cp = lane / TBS;  // key loop: token block, channel part
  const int tv = lane / VPL, vp = lane % VPL;  // value loop: token in the step, channel slice (CPW channels)
  const int t_lane = CPW * tb + TPL * cp;      // the lane's first token after the reduce-scatter (of TPL)
  const int v_g = (CPW * vp) >> vg_shift;      // the value group of the lane's CPW channels
  float qr[GT][QCH];                           // q of channels QCH*lane ..
#pragma unroll
  for (int h = 0; h < GT; ++h)
#pragma unroll
    for (int c = 0; c < QCH; ++c) qr[h][c] = sq[h][QCH * lane + c];
  float m[GT], l[GT], acc[GT][CPW], vsum[GT], zacc[GT];
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
  float* my_qs = &qsw[warp][0][0];
  float2* my_psz = &psz[warp][0][0];

  uint32_t kw[KCH], ksr[QCH / 2], kzr[QCH / 2], vw[VIT];
  auto load_keys = [&](long long tile) {
    const size_t base = (tile_row0 + static_cast<size_t>(tile)) * HD;  // the tile's first channel row
#pragma unroll
    for (int c = 0; c < KCH; ++c) kw[c] = __ldg(kwords + base * TBS + 32 * c + lane);
    const uint32_t* s = reinterpret_cast<const uint32_t*>(kv.k_scale + base + QCH * lane);
    const uint32_t* z = reinterpret_cast<const uint32_t*>(kv.k_zero + base + QCH * lane);
#pragma unroll
    for (int i = 0; i < QCH / 2; ++i) ksr[i] = __ldg(s + i), kzr[i] = __ldg(z + i);
  };
  auto load_values = [&](long long tile) {
    const size_t base = (tok_row0 + static_cast<size_t>(tile) * G) * VPL;
#pragma unroll
    for (int it = 0; it < VIT; ++it) vw[it] = __ldg(vwords + base + 32 * it + lane);
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
          for (int c = 0; c < QCH; ++c) dot = fmaf(qr[h][c], bvals[c], dot);
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
      s[i] = valid[i] && !none ? exp2f(s[i] - m_new) : 0.f;
      sum += s[i];
    }
    sum = warp_sum_all(sum);
    const float corr = none || m_old == -INFINITY ? (none ? 1.f : 0.f) : exp2f(m_old - m_new);
    l[h] = l[h] * corr + sum;
    m[h] = m_new;
    return corr;
  };
  auto rescale = [&](int h, float corr) {
    vsum[h] *= corr;
    zacc[h] *= corr;
#pragma unroll
    for (int j = 0; j < CPW; ++j) acc[h][j] *= corr;
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
  }
  for (int n = 0; n < w_tiles; ++n) {
    const long long tile = tile_begin + warp + static_cast<long long>(n) * kLeanWarps;
    const long long tok0 = tile * G;  // the tile's first token in the row
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
#pragma unroll
    for (int i = 0; i < TPL; ++i) {
      const size_t t = tok_row0 + tok0 + t_lane + i;
#pragma unroll
      for (int k = 0; k < RW; ++k) {
        const int r = 2 * k;
        ak[i][k] = RMAX > 0 && r < R ? pair(kv.k_lr_a + t * R + r, (R & 1) == 0, r + 1 < R) : 0u;
        av[i][k] = RMAX > 0 && r < R ? pair(kv.v_lr_a + t * R + r, (R & 1) == 0, r + 1 < R) : 0u;
      }
#pragma unroll
      for (int k = 0; k < GW; ++k) {
        const int g = 2 * k;
        vs[i][k] = g < ng ? pair(kv.v_scale + t * ng + g, ng > 1, false) : 0u;
        vz[i][k] = g < ng ? pair(kv.v_zero + t * ng + g, ng > 1, false) : 0u;
      }
    }
    float bias[GT][TPL];
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int i = 0; i < TPL; ++i)
        bias[h][i] = sc && h < nq ? sc[(static_cast<size_t>(b) * nh + h0 + h) * sc_stride + tok0 + t_lane + i] : 0.f;

    // 1. q·scale of the tile's channels (shared), sum q·zero and sum q·scale (all lanes).
    float qz[GT], qsum[GT];
    __syncwarp();  // the previous tile's key loop has read my_qs
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      float qs[QCH];
      float a = 0.f, s = 0.f;
#pragma unroll
      for (int c = 0; c < QCH; ++c) {
        qs[c] = qr[h][c] * half_of(ksr[c / 2], c & 1);
        a = fmaf(qr[h][c], half_of(kzr[c / 2], c & 1), a);
        s += qs[c];
      }
#pragma unroll
      for (int c = 0; c < QCH; c += 2) *reinterpret_cast<float2*>(my_qs + h * HD + QCH * lane + c) = make_float2(qs[c], qs[c + 1]);
      qz[h] = warp_sum_all(a);
      qsum[h] = warp_sum_all(s);
    }
    __syncwarp();

    // 2. key scores: part[h][j] = sum over the lane's channels of qs * f(code of token CPW tb + j).
    float part[GT][CPW];
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int j = 0; j < CPW; ++j) part[h][j] = 0.f;
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
    if (new_qb) compute_qb(lb, bkw);
    bool valid[TPL];
#pragma unroll
    for (int i = 0; i < TPL; ++i) valid[i] = true;  // tiles are whole
    const bool flush = RMAX > 0 && u_live && lb != u_lb;
    const int old_lb = u_lb;
    float Uold[GT][RR];
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      float s[TPL];
#pragma unroll
      for (int i = 0; i < TPL; ++i) {
        // The token's slot in its word: 2-bit codes alternate eps by parity; 4-bit ones share one.
        const bool odd = ((TPL * cp + i) & 1) != 0;
        const float eps = odd ? code_eps<BITS>(1) : code_eps<BITS>(0), inv = odd ? code_inv_eps<BITS>(1) : code_inv_eps<BITS>(0);
        s[i] = (part[h][i] + fmaf(eps, qz[h], -qsum[h])) * inv;
#pragma unroll
        for (int r = 0; r < RR; ++r)
          if (RMAX > 0 && r < R) s[i] = fmaf(qb[h][r], half_of(ak[i][r / 2], r & 1), s[i]);
        if (sc && h < nq) {
          s[i] += bias[h][i];
          sc[(static_cast<size_t>(b) * nh + h0 + h) * sc_stride + tok0 + t_lane + i] = s[i];
        }
      }
      // 3. softmax; (p·scale, p·zero) of the lane's tokens to shared memory; the carried sum p A_v (the
      // previous block's moved to Uold when this tile starts a new one, flushed after the value loop).
      const float corr = softmax(h, s, valid);
      rescale(h, corr);
      if (h == 0) __syncwarp();  // the previous tile's value loop has read my_psz
#pragma unroll
      for (int i = 0; i < TPL; ++i)
#pragma unroll
        for (int g = 0; g < kLeanMaxGroups; ++g)
          if (g < ng)
            my_psz[(h * G + t_lane + i) * kLeanMaxGroups + g] =
                make_float2(s[i] * half_of(vs[i][g / 2], g & 1), s[i] * half_of(vz[i][g / 2], g & 1));
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
    uint4 bvw[RPL][BVW];
    if (flush) load_bv(old_lb, bvw);
    __syncwarp();

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
    if (n + 1 < w_tiles) load_values(tile + kLeanWarps);
    if (flush) flush_deferred(old_lb, Uold, bvw);
  }
  if (RMAX > 0 && u_live) {
    uint4 bvw[RPL][BVW];
    load_bv(u_lb, bvw);
    flush_deferred(u_lb, U, bvw);
  }
  // Unbias: sum p s c + low rank = (acc - sum p s) / eps(j); plus sum p z.
#pragma unroll
  for (int h = 0; h < GT; ++h)
#pragma unroll
    for (int j = 0; j < CPW; ++j) acc[h][j] = (acc[h][j] - vsum[h]) * code_inv_eps<BITS>(j) + zacc[h];

  // ---------------- the fp16 buffer: the warp after the last tile's ----------------
  if (has_buf && warp == ntiles % kLeanWarps) {
    float* pb = reinterpret_cast<float*>(my_psz);  // [GT][32] probabilities of a piece
    for (long long i0 = 0; i0 < len.buf; i0 += 32) {
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
      A = fmaf(wt, qsw[w][h][d], A);
      L = fmaf(wt, ml[w][h], L);
    }
    const size_t row = static_cast<size_t>(b) * nh + h0 + h;
    if (direct) {
      out[row * HD + d] = from_f<T>(A / L);
    } else {
      ws_o[(row * n_splits + split) * HD + d] = A / L;
      if (d == 0) ws_lse[row * n_splits + split] = M + __log2f(L);
    }
  }
}

int log2_of(int x) {
  int s = 0;
  while ((1 << s) < x) ++s;
  return s;
}

}  // namespace

void launch_lean_split(DType t, const void* q, const CompressedKV& kv, void* out, float* ws_o, float* ws_lse, float* sc,
                       long long sc_stride, int nh, int group, int gt, int n_sub, int split_tokens, int n_splits, long long max_comp,
                       float scale_log2, cudaStream_t stream) {
  if (!lean_layout_ok(kv, gt)) fail("compressed_attention", "v7 (lean) does not take this layout");
  const dim3 grid(static_cast<unsigned>(n_splits), static_cast<unsigned>(kv.nkv * n_sub), static_cast<unsigned>(kv.B));
  const int vg_shift = log2_of(kv.v_group);
  auto run_bits = [&](auto tag, auto hd_c, auto gt_c, auto g_c, auto r_c, auto bits_c) {
    using T = typename decltype(tag)::type;
    cattn_lean_kernel<T, decltype(hd_c)::value, decltype(gt_c)::value, decltype(g_c)::value, decltype(r_c)::value,
                      decltype(bits_c)::value>
        <<<grid, kLeanThreads, 0, stream>>>(static_cast<const T*>(q), kv, static_cast<T*>(out), ws_o, ws_lse, nh, group, n_sub,
                                            split_tokens, n_splits, max_comp, scale_log2, vg_shift, sc, sc_stride);
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
  check_launch("compressed_attention (v7 split kernel)");
}

}  // namespace gear::kernels::detail
