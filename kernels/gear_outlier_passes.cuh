#pragma once
// GEAR's sparse outliers in two light passes around the CUDA-core attention kernels (v3, v7), instead of inside
// them ("outlier passes", AttentionKernel::OutlierPasses, Auto and LeanPasses; v7's staged GQA-4 tiles apply the
// outliers inside where the layout keeps their corrections). Included by gear_attention.cu inside its anonymous
// namespace, after v3, whose lengths, splits and layout helpers it uses.
//
// Why: a tile's outliers are ~2 % of its entries, but v3 spent a quarter of its time staging them, marking each
// token's run and applying the runs (docs/kernels.md, "v3b"); at a 24 GiB budget GEAR-L (no outliers) ran at 2.39x
// FP16 where GEAR ran at 1.16x. Both corrections are linear in the outliers' residuals delta = outlier - dequant -
// lowrank, so they can leave the kernel:
//  keys:   score_t += sum_d q_d delta_{t,d}: a bias per token and query head, computed before the attention kernel
//          (key pass) into `sc`, which the kernel adds to its scores;
//  values: out += sum_t p_t delta_t with p_t = 2^(s_t - lse) of the split: the kernel writes each compressed token's
//          final score s_t back to `sc`, and after it the value pass adds the sum to the split's normalised partial
//          output in the workspace, before the combine kernel merges the splits and rounds the output once.
// The attention kernel then runs GEAR-L's path. Cost: 8 bytes per compressed token and query head (the bias read,
// the score written and read back), two launches, and the entries read once more. The corrections come from the
// layout's k_sp_corr / v_sp_corr (written once per compressed block by outlier_corrections) when it has them; else
// each pass computes them (codes, scales, A rows and B read again at scattered addresses, ~4x slower a pass).
//
// Both passes stream (session of 2026-11-26, tenth): a warp owns a contiguous run of tiles, whose entries are
// contiguous in the pool, and reads them in steps of kPassWindows x 32 with the next step's loads in flight while
// it adds the current one, so after two rounds (offsets; first entries) its loads overlap its work. Each term goes
// into a 64-bit fixed-point sum (2^-32 units) through two native 32-bit shared atomics with a carry (fixed_add):
// exact mod 2^64, so the result does not depend on the order the lanes and warps add in (deterministic); a
// non-finite or out-of-range term marks its sum NaN instead. The value pass stages its run's probabilities with
// coalesced loads before the entries (no load depends on an entry's position; one exp2 per token, not per entry).
// The per-tile passes before them (a warp per tile, its entries in one dependent round, the scores each entry
// points at in another; keys summed by a segmented scan of 5 shuffle rounds per head, values by 64-bit shared
// atomics, which sm_90 runs as compare-and-swap loops) took 43.4 / 42.9 us at gear-kivi-2 B 16 4k on the H100;
// these 35.4 / 30.3 (docs/kernels.md, session ten).

// 32-entry windows of a step whose loads are in flight at once. A compile-time knob (GEARLAB_PASS_WINDOWS, through
// scripts/gpu-ab.sh's NEW_CUDA_FLAGS): at the 24 GiB budget's shape (batch 22, ~3.8k tokens, ~5 warps a scheduler)
// the passes are latency-bound, and a step of 4 windows (~150 instructions since ffd1078) may not cover a load's
// latency (docs/kernels.md, thirty-first session); 8 doubles the bytes in flight a warp for ~16 more registers.
#ifndef GEARLAB_PASS_WINDOWS
#define GEARLAB_PASS_WINDOWS 4
#endif
constexpr int kPassWindows = GEARLAB_PASS_WINDOWS;
static_assert(kPassWindows >= 1 && kPassWindows <= 16, "GEARLAB_PASS_WINDOWS: 1 to 16 windows a step");
constexpr int kPassMaxHd = 128;  // the attention's head dims: 64 or 128
constexpr int kKeyWarps = 4;     // warps a block, key pass
// Value pass: warps a block, a compile-time knob (GEARLAB_VALUE_WARPS, 4 or 8; through scripts/gpu-ab.sh's
// NEW_CUDA_FLAGS). Its blocks are the attention's splits, which since v7 with the passes takes v7's long splits
// (thirty-second session) can be one a row of ~3.8k tokens, twice a warp's tiles of before. Run TB (H200) timed 8
// against 4: Llama-2-7B gear-kivi-2 B 1 32k 96.6 -> 88.7 us, but B 16 4k 164.6 -> 167.7, B 22 4k +1 %, B 64 8k even,
// and GEAR's decode step at batch 22 11.870 -> 11.935 ms, so 4 stays.
#ifndef GEARLAB_VALUE_WARPS
#define GEARLAB_VALUE_WARPS 4
#endif
constexpr int kValueWarps = GEARLAB_VALUE_WARPS;
static_assert(kValueWarps == 4 || kValueWarps == 8, "GEARLAB_VALUE_WARPS: 4 or 8 warps a block");
// The value pass's blocks are the attention's splits: v3's (up to kMaxSplit tokens, tiles of 16 or more) or v7's (up
// to kLeanMaxSplit, tiles of 32 or 64: lean_layout_ok), so its shared tile offsets are sized for 256 tiles (1 KB).
// Until the thirty-second session v7 with the passes kept v3's 2048-token splits for this array alone, which at the
// 24 GiB budget's shape (B 22, ~3.8k tokens) gave GEAR's attention two splits a row where GEAR-L's took one
// (docs/kernels.md).
constexpr int kMaxSplitTiles = std::max(kMaxSplit / 16, split_rule::kLeanMaxSplit / 32);

constexpr int kWarpTilesMax = 16;      // key pass: tiles one warp streams, at most
constexpr int kKeyWarpSums = 512;      // key pass: a warp's (token, head) biases, 8 bytes each, unless one tile has more
constexpr int kPassWarpFloats = 1024;  // value pass: a warp's staged probabilities (tokens x GT)
constexpr int kValueRunTiles = 31;     // value pass: tiles staged at once (their starts in lanes 0..31)

// Tile starts held one per lane (lanes 0..n) made non-decreasing by a running max: a malformed layout's decreasing
// offsets read as empty tiles, and the entries of lanes i..i+1 stay inside the pool (the offsets are clamped).
__device__ __forceinline__ int running_max(int v, int lane) {
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int o = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v = max(v, o);
  }
  return v;
}

// One warp's stream over the sparse entries of its run of nt tiles, on one side (keys or values) of one (row, kv
// head). The constructor takes each lane's raw tile start (lanes 0..nt), makes them non-decreasing (lane i keeps
// tile i's start in a register, lane nt the run's end) and issues the first step's loads, which stay in flight while
// the caller prepares. for_each reads the entries in steps of kPassWindows x 32, the next step's loads in flight
// while the current one is used, and calls add(j, lt, d, delta) for each entry inside its tile: tile j of the run,
// token lt of the tile, channel d, and its correction delta (the layout's, or computed by entry_correction when it
// keeps none). kCorr: the layout keeps corrections on this side (the GPU cache's always does); a compile-time flag,
// so the correction-less path and the pointer's test leave the loop (the SASS had ~15 uniform instructions a window
// re-deriving and testing the pointer, and the inlined slow path in every window).
// The tile of each entry: the warp walks the tile boundaries that fall inside a window (uniform: a start shuffled
// from its lane, one compare a boundary), each lane adding one for each boundary at or below its entry. A window of
// 32 entries crosses at most one boundary of a tile of ~160, so a window without one costs a compare and a branch;
// the per-lane search over starts in shared memory this replaces was a divergent loop of ~13 instructions a window
// (thirty-first session).
template <bool kCorr>
struct EntryStream {
  static constexpr int kStep = 32 * kPassWindows;
  static constexpr int kNoTile = 0x7fffffff;  // the "next tile start" past the run's last tile
  const CompressedKV& kv;
  const LayoutIx& ix;
  bool value_side;
  int b, kvh, nt, lane, begin, end;
  int tile_start;  // lane i <= nt: tile i's start (lane nt: the run's end)
  const uint16_t *pos, *val;  // val: read only without corrections
  const uint16_t* corr;  // fp16 bits
  int pn[kPassWindows];  // the next step's positions and corrections
  float dn[kPassWindows];

  __device__ __forceinline__ EntryStream(const CompressedKV& kv_, const LayoutIx& ix_, bool value_side_, int b_, int kvh_, int start,
                                         int nt_, int lane_)
      : kv(kv_), ix(ix_), value_side(value_side_), b(b_), kvh(kvh_), nt(nt_), lane(lane_) {
    const size_t sp = ix.sp(b, kvh);
    const uint16_t* sp_val = value_side ? kv.v_sp_val : kv.k_sp_val;
    const uint16_t* sp_corr = value_side ? kv.v_sp_corr : kv.k_sp_corr;
    pos = (value_side ? kv.v_sp_pos : kv.k_sp_pos) + sp;
    val = sp_val ? sp_val + sp : nullptr;
    corr = kCorr ? sp_corr + sp : nullptr;
    // Held in registers from here: nvcc otherwise re-derived them from the parameters at every step, 64-bit
    // arithmetic on each of a step's eight loads (~60 instructions a step, ncu SourceCounters).
    asm("" : "+l"(pos));
    if constexpr (kCorr) asm("" : "+l"(corr));
    tile_start = running_max(start, lane);
    begin = __shfl_sync(0xffffffffu, tile_start, 0);
    end = __shfl_sync(0xffffffffu, tile_start, nt);
    if (begin < end) load(begin);
  }
  // A step's loads (indices clamped: no test before a load).
  __device__ __forceinline__ void load(int e0) {
#pragma unroll
    for (int u = 0; u < kPassWindows; ++u) {
      const int e = min(e0 + u * 32 + lane, end - 1);
      pn[u] = __ldg(pos + e);
      dn[u] = kCorr ? ldh(corr + e) : 0.f;
    }
  }
  // first_tile: the run's first tile in the row (for entry_correction).
  template <typename Add> __device__ __forceinline__ void for_each(long long first_tile, int g_shift, int hd_shift, Add&& add) {
    const int G = 1 << g_shift, hd = kv.hd;
    // (uniform) cur: the tile of the last entry walked, whose start is at or below the next window's first entry;
    // next: the start of tile cur + 1, or kNoTile past the run's last tile (nt <= 31: every shuffled lane exists)
    int cur = 0, next = __shfl_sync(0xffffffffu, tile_start, 1);
    if (nt <= 1) next = kNoTile;
    for (int e0 = begin; e0 < end; e0 += kStep) {
      int p[kPassWindows];
      float delta[kPassWindows];
#pragma unroll
      for (int u = 0; u < kPassWindows; ++u) p[u] = pn[u], delta[u] = dn[u];
      if (e0 + kStep < end) load(e0 + kStep);  // the next step's entries are in flight while this one is used
#pragma unroll
      for (int u = 0; u < kPassWindows; ++u) {
        const int e = e0 + u * 32 + lane, last = e0 + u * 32 + 31;
        int j = cur;
        while (next <= last) {  // a boundary inside the window (rare: one window in ~5)
          j += e >= next ? 1 : 0;
          ++cur;
          const int s = __shfl_sync(0xffffffffu, tile_start, min(cur + 1, 31));
          next = cur + 1 < nt ? s : kNoTile;
        }
        const int lt = p[u] >> hd_shift, d = p[u] & (hd - 1);
        if (!(e < end && lt < G)) continue;  // a position outside the tile (a malformed layout): ignored, as v3 does
        if constexpr (!kCorr) delta[u] = entry_correction(kv, ix, value_side, b, kvh, first_tile + j, lt, d, h2f(__ldg(val + e)));
        add(j, lt, d, delta[u]);
      }
    }
  }
};

// Key pass: shared words a warp needs for `cap` (token, head) sums: low and high words and a NaN bit each.
__host__ __device__ constexpr int key_pass_sum_words(int cap) { return 2 * cap + (cap + 31) / 32; }

// Key pass: grid (ceil(max_comp / G / (kKeyWarps * tpw)), nkv * n_sub, B), 32 * kKeyWarps threads, dynamic
// shared memory kKeyWarps * key_pass_sum_words(tpw * G * GT) words; warp w of block x takes the tpw tiles from
// (x * kKeyWarps + w) * tpw for the GT query heads (h0 .. h0 + nq) of kv head kvh. Writes sc[b, h, t] for every
// compressed token t < n_comp[b] (0 where it has no key outliers). Each entry adds q_d * delta to its token's
// bias as 64-bit fixed point (add_term_s), not by a segmented scan over the window: the scan's 5 shuffle rounds per
// head were most of the pass's instructions (63 % of issue slots busy, run66), where an entry needs one pair of
// shared atomics per head. Exact, so deterministic; a non-finite or out-of-range term makes the token's bias NaN.
template <typename T, int GT, bool kCorr>
__global__ void __launch_bounds__(32 * kKeyWarps) cattn_key_bias_kernel(const T* __restrict__ q, CompressedKV kv, float* __restrict__ sc,
                                                                  long long sc_stride, int nh, int group, int n_sub, long long max_comp,
                                                                  float scale_log2, int g_shift, int tpw) {
  __shared__ float sq[GT][kPassMaxHd];  // queries, pre-scaled as in v3 (scale * log2(e))
  extern __shared__ unsigned key_sums[];  // per warp key_pass_sum_words(cap): its tokens' biases, see below
  constexpr int kT = 32 * kKeyWarps;
  const int hd = kv.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, hd_shift = hd == 128 ? 7 : 6;
  const SplitBlock blk = split_block_position<GT>(group, n_sub);  // (its x is the block of tiles, not a split)
  const int kvh = blk.kvh, b = blk.b, h0 = blk.h0, nq = blk.nq;
  const LayoutIx ix(kv);
  const RowLens len = row_lens(kv, b, max_comp);
  const long long wt0 = (static_cast<long long>(blockIdx.x) * kKeyWarps + warp) * tpw;  // the warp's first tile
  // One round: the queries and each warp's tile starts (lane i: tile wt0 + i).
  for (int i = tid; i < GT * hd; i += kT) {
    const int h = i >> hd_shift;
    sq[h][i - (h << hd_shift)] = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * hd + i]) * scale_log2 : 0.f;
  }
  const int32_t* off = kv.k_sp_off + ix.sp_off(b, kvh);
  int start = lane <= tpw && wt0 + lane <= kv.tile_cap ? static_cast<int>(clamp_to_pool(__ldg(off + wt0 + lane), kv.sparse_cap)) : 0;
  if (!len.ok) return;  // the whole block: before its only barrier
  __syncthreads();
  const int nt = static_cast<int>(max(0LL, min(static_cast<long long>(tpw), (len.comp >> g_shift) - wt0)));
  if (nt == 0) return;
  EntryStream<kCorr> entries(kv, ix, /*value_side=*/false, b, kvh, start, nt, lane);
  const int ntok = nt << g_shift;
  // [h * ntok + i]: token i of the warp's run, head h: the low and high words of the 2^-32 sums, and a NaN bit.
  const int cap = (tpw << g_shift) * GT;
  unsigned* lo = key_sums + static_cast<size_t>(warp) * key_pass_sum_words(cap);
  unsigned *hi = lo + cap, *nan_bits = hi + cap;
  for (int i = lane; i < GT * ntok; i += 32) lo[i] = hi[i] = 0u;
  for (int i = lane; i < (GT * ntok + 31) / 32; i += 32) nan_bits[i] = 0u;
  __syncwarp();
  // (32-bit shared addresses, taken once: fixed_sum.cuh's add_term_s)
  unsigned lo_s = smem_addr(lo), q_s = smem_addr(&sq[0][0]);
  asm("" : "+r"(lo_s), "+r"(q_s));
  const unsigned hi_s = lo_s + 4u * cap, nan_s = hi_s + 4u * cap;
  entries.for_each(wt0, g_shift, hd_shift, [&](int j, int lt, int d, float delta) {
    const int t = (j << g_shift) + lt;
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      if (GT > 1 && h >= nq) continue;  // (nq >= 1: no test for MHA's GT 1)
      const unsigned i = static_cast<unsigned>(h * ntok + t);
      add_term_s(lo_s + 4u * i, hi_s + 4u * i, nan_s + 4u * (i >> 5), 1u << (i & 31), lds_f32(q_s + 4u * (h * kPassMaxHd + d)) * delta);
    }
  });
  __syncwarp();
  float* o = sc + (static_cast<size_t>(b) * nh + h0) * sc_stride + (wt0 << g_shift);
#pragma unroll
  for (int h = 0; h < GT; ++h) {
    if (h >= nq) break;
    for (int t = lane; t < ntok; t += 32) {
      const int i = h * ntok + t;
      o[h * sc_stride + t] = fixed_value(lo[i], hi[i], (nan_bits[i >> 5] >> (i & 31)) & 1u);
    }
  }
}

// Value pass: grid (n_splits, nkv * n_sub, B) as the attention kernel, 32 * kValueWarps threads; after it, before
// the combine. Adds sum_t 2^(s_t - lse) delta_{t,d} over the split's compressed tokens to its partial output ws_o
// (normalised by the split's own sum, lse = the split's log2-sum-exp); warp w takes a contiguous quarter of the
// split's tiles, in runs of at most kValueRunTiles tiles and kPassWarpFloats / GT tokens: it stages the run's
// probabilities, then streams the run's entries.
template <int GT, bool kCorr>
__global__ void __launch_bounds__(32 * kValueWarps) cattn_value_outliers_kernel(CompressedKV kv, const float* __restrict__ sc, long long sc_stride,
                                                                        float* __restrict__ ws_o, const float* __restrict__ ws_lse, int nh,
                                                                        int group, int n_sub, int split_tokens, int n_splits,
                                                                        long long max_comp, int g_shift) {
  __shared__ unsigned acc_lo[GT][kPassMaxHd], acc_hi[GT][kPassMaxHd];  // two's-complement int64 sums, 2^-32 units
  __shared__ unsigned nan_mask[GT][kPassMaxHd / 32];                   // channels that met a non-finite term
  __shared__ float lse[GT];
  __shared__ int toff[kMaxSplitTiles + 1];
  __shared__ float prob[kValueWarps][kPassWarpFloats];  // each warp's run: 2^(s_t - lse), [h][token of the run]
  constexpr int kT = 32 * kValueWarps;
  const int hd = kv.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, hd_shift = hd == 128 ? 7 : 6;
  // Its own decode of the grid position, not split_block_position: with that one's unsigned division ptxas gave
  // the GT-1 instantiation more registers (sm_90).
  const int split = blockIdx.x, kvh = static_cast<int>(blockIdx.y) / n_sub, sub = static_cast<int>(blockIdx.y) - kvh * n_sub;
  const int b = blockIdx.z, h0 = kvh * group + sub * GT, nq = min(GT, group - sub * GT);
  const LayoutIx ix(kv);
  const long long c_begin = static_cast<long long>(split) * split_tokens, tb = c_begin >> g_shift;
  const RowLens len = row_lens(kv, b, max_comp);
  // One round: the split's log2-sum-exps and its tile offsets.
  load_tile_offsets(toff, kv.v_sp_off + ix.sp_off(b, kvh), tb, split_tokens >> g_shift, kv.tile_cap, kv.sparse_cap, tid, kT);
  for (int i = tid; i < GT * kPassMaxHd; i += kT) (&acc_lo[0][0])[i] = (&acc_hi[0][0])[i] = 0u;
  if (tid < GT * (kPassMaxHd / 32)) (&nan_mask[0][0])[tid] = 0u;
  if (tid < GT) lse[tid] = tid < nq ? ws_lse[(static_cast<size_t>(b) * nh + h0 + tid) * n_splits + split] : 0.f;
  if (!len.ok || split >= live_splits(len, split_tokens)) return;  // the attention kernel wrote nothing either
  const long long c_end = min(len.comp, c_begin + split_tokens);
  if (c_end <= c_begin) return;
  const int ntiles = static_cast<int>((c_end >> g_shift) - tb);
  __syncthreads();

  const float* srow = sc + (static_cast<size_t>(b) * nh + h0) * sc_stride;
  const int run_tiles = min(kValueRunTiles, kPassWarpFloats / (GT << g_shift));
  const int ta = warp * ntiles / kValueWarps, tz = (warp + 1) * ntiles / kValueWarps;
  float* pr = prob[warp];
  // (32-bit shared addresses, taken once: fixed_sum.cuh's add_term_s)
  unsigned lo_s = smem_addr(&acc_lo[0][0]), hi_s = smem_addr(&acc_hi[0][0]), nan_s = smem_addr(&nan_mask[0][0]), pr_s = smem_addr(pr);
  asm("" : "+r"(lo_s), "+r"(hi_s), "+r"(nan_s), "+r"(pr_s));
#pragma unroll 1
  for (int r0 = ta; r0 < tz; r0 += run_tiles) {
    const int nt = min(run_tiles, tz - r0), ntok = nt << g_shift;
    // (its first entries' loads in flight with the probabilities')
    EntryStream<kCorr> entries(kv, ix, /*value_side=*/true, b, kvh, lane <= nt ? toff[r0 + lane] : 0, nt, lane);
    const long long t0 = (tb + r0) << g_shift;
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      if (h >= nq) break;
      const float* s = srow + h * sc_stride + t0;
#pragma unroll 4
      for (int i = lane; i < ntok; i += 32) pr[h * ntok + i] = exp2f(__ldg(s + i) - lse[h]);
    }
    __syncwarp();
    entries.for_each(tb + r0, g_shift, hd_shift, [&](int j, int lt, int d, float delta) {
      const int t = (j << g_shift) + lt;
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        if (GT > 1 && h >= nq) continue;  // (nq >= 1: no test for MHA's GT 1)
        const unsigned c = static_cast<unsigned>(h * kPassMaxHd + d);
        add_term_s(lo_s + 4u * c, hi_s + 4u * c, nan_s + 4u * (c >> 5), 1u << (d & 31), lds_f32(pr_s + 4u * (h * ntok + t)) * delta);
      }
    });
    __syncwarp();  // the next run overwrites pr
  }
  __syncthreads();
  for (int i = tid; i < nq * hd; i += kT) {
    const int h = i >> hd_shift, d = i - (h << hd_shift);
    ws_o[((static_cast<size_t>(b) * nh + h0 + h) * n_splits + split) * hd + d] +=
        fixed_value(acc_lo[h][d], acc_hi[h][d], (nan_mask[h][d >> 5] >> (d & 31)) & 1u);
  }
}
