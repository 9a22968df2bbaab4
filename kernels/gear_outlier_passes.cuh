#pragma once
// GEAR's sparse outliers in two light passes around the CUDA-core attention kernel (v3), instead of
// inside it ("outlier passes", AttentionKernel::OutlierPasses). Included by gear_attention.cu inside its
// anonymous namespace, after v3, whose lengths, splits and layout helpers it uses.
//
// Why: a tile's outliers are ~2 % of its entries, but v3 spends a quarter of its time staging them,
// marking each token's run and applying the runs (docs/kernels.md, "v3b"); at a 24 GiB budget GEAR-L
// (no outliers) ran at 2.39x FP16 where GEAR ran at 1.16x. Both corrections are linear in the outliers'
// residuals delta = outlier - dequant - lowrank, so they can leave the kernel:
//  keys:   score_t += sum_d q_d delta_{t,d}: a bias per token and query head, computed before the
//          attention kernel (key pass) into `sc`, which the kernel adds to its scores in step C2;
//  values: out += sum_t p_t delta_t with p_t = 2^(s_t - lse) of the split: the kernel writes each
//          compressed token's final score s_t back to `sc`, and after it the value pass adds the sum to
//          the split's normalised partial output in the workspace, before the combine kernel merges the
//          splits and rounds the output once.
// The attention kernel then runs GEAR-L's path (no staging arrays walked, no per-entry work in the
// chunk loop). Cost: 8 bytes per compressed token and query head (the bias read and the score written
// and read back), two launches, and the entries read once more. The corrections themselves come from the
// layout's k_sp_corr / v_sp_corr (written once per compressed block by outlier_corrections) when it has
// them; else each pass computes them (codes, scales, A rows and B read again at scattered addresses: the
// first version, measured ~4x slower per pass, docs/kernels.md).
//
// Both passes are deterministic (no atomics): the key pass gives each token to one thread, which walks
// its run of entries in order; the value pass gives each warp a fixed quarter of the split's entries, which
// it applies 32 at a time to its own accumulators in lane order where channels collide, and the warps'
// accumulators are summed in warp order.
//
// Both are latency-bound (a few bytes per entry), so each issues its loads in as few dependent rounds as it
// can: lengths, offsets and queries together; then every entry's position and correction together; then
// (values) the scores.

constexpr int kPassStaged = 1024;  // entries of a chunk staged by the key pass (more: read from global memory)
constexpr int kPassUnroll = 8;     // entries per lane in flight in the value pass
constexpr int kMaxSplitTiles = kMaxSplit / 16;
constexpr int kPassMaxHd = 128;   // the attention's head dims: 64 or 128

// Key pass: grid (ceil(max_comp / kChunk), nkv * n_sub, B), kThreads threads; block = one 128-token chunk
// (whole tiles: G divides 128) of row b for the GT query heads (h0 .. h0 + nq) of kv head kvh; thread = token.
// Writes sc[b, h, t] for every compressed token t < n_comp[b] (0 where the token has no key outliers).
template <typename T, int GT>
__global__ void __launch_bounds__(kThreads) cattn_key_bias_kernel(const T* __restrict__ q, CompressedKV kv, float* __restrict__ sc,
                                                                  long long sc_stride, int nh, int group, int n_sub, long long max_comp,
                                                                  float scale_log2, int g_shift) {
  __shared__ float sq[GT][kPassMaxHd];  // queries, pre-scaled as in v3 (scale * log2(e))
  __shared__ int run[kChunk][2];    // each token's entries [first, last)
  __shared__ int toff[kMaxTilesChunk + 1];
  __shared__ uint16_t spos[kPassStaged];
  __shared__ float scorr[kPassStaged];
  const int hd = kv.hd, tid = threadIdx.x, hd_shift = hd == 128 ? 7 : 6;
  const SplitBlock blk = split_block_position<GT>(group, n_sub);  // (its x is the chunk, not a split)
  const int kvh = blk.kvh, b = blk.b, h0 = blk.h0, nq = blk.nq;
  const long long c0 = static_cast<long long>(blk.split) * kChunk, tile0 = c0 >> g_shift;
  const LayoutIx ix(kv);
  // Round 1: the row's lengths, the chunk's tile offsets and the queries, all loads independent.
  const RowLens len = row_lens(kv, b, max_comp);
  const int off_raw = tid <= kMaxTilesChunk && tile0 + tid <= kv.tile_cap ? kv.k_sp_off[ix.sp_off(b, kvh) + tile0 + tid] : 0;
  for (int i = tid; i < GT * hd; i += kThreads) {
    const int h = i >> hd_shift;
    sq[h][i - (h << hd_shift)] = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * hd + i]) * scale_log2 : 0.f;
  }
  run[tid][0] = run[tid][1] = 0;
  if (!len.ok || c0 >= len.comp) return;  // the whole block: before any barrier
  const int nt = static_cast<int>(min(static_cast<long long>(kChunk), len.comp - c0)), ntiles = nt >> g_shift;
  if (tid <= ntiles) toff[tid] = static_cast<int>(clamp_to_pool(off_raw, kv.sparse_cap));
  __syncthreads();
  if (tid == 0)
    for (int i = 1; i <= ntiles; ++i) toff[i] = max(toff[i], toff[i - 1]);  // a malformed layout's offsets, made monotone
  __syncthreads();
  const int e0 = toff[0], ne = toff[ntiles] - e0, staged = min(ne, kPassStaged);
  const uint16_t* pos = kv.k_sp_pos + ix.sp(b, kvh);
  const uint16_t* val = kv.k_sp_val + ix.sp(b, kvh);
  const float* corr = kv.k_sp_corr ? kv.k_sp_corr + ix.sp(b, kvh) : nullptr;
  // Round 2: positions and corrections of the chunk's entries.
  for (int i = tid; i < staged; i += kThreads) {
    spos[i] = __ldg(pos + e0 + i);
    if (corr) scorr[i] = __ldg(corr + e0 + i);
  }
  __syncthreads();
  auto pos_at = [&](int e) { return e - e0 < kPassStaged ? static_cast<int>(spos[e - e0]) : static_cast<int>(__ldg(pos + e)); };
  // One thread per entry: where each token's run starts and ends (entries are sorted by position within a
  // tile); without the layout's corrections, the staged entries' corrections.
  for (int e = e0 + tid; e < e0 + ne; e += kThreads) {
    int ti = 0;
    while (ti + 1 < ntiles && toff[ti + 1] <= e) ++ti;
    const int p = pos_at(e), lt = p >> hd_shift;
    if (lt >= kv.group) continue;  // not a position of a tile (a malformed layout): ignored, as v3 does
    const int t = (ti << g_shift) + lt;
    if (e == toff[ti] || (pos_at(e - 1) >> hd_shift) != lt) run[t][0] = e;
    if (e + 1 >= toff[ti + 1] || (pos_at(e + 1) >> hd_shift) != lt) run[t][1] = e + 1;
    if (!corr && e - e0 < kPassStaged)
      scorr[e - e0] = entry_correction(kv, ix, false, b, kvh, tile0 + ti, lt, p - (lt << hd_shift), __ldg(val + e));
  }
  __syncthreads();
  if (tid >= nt) return;
  float c[GT];
#pragma unroll
  for (int h = 0; h < GT; ++h) c[h] = 0.f;
  const int t = tid, ti = t >> g_shift, lt = t - (ti << g_shift);
  for (int e = run[t][0]; e < run[t][1]; ++e) {
    const int d = pos_at(e) - (lt << hd_shift);
    const float delta = e - e0 < kPassStaged ? scorr[e - e0]
                        : corr               ? __ldg(corr + e)
                                             : entry_correction(kv, ix, false, b, kvh, tile0 + ti, lt, d, __ldg(val + e));
#pragma unroll
    for (int h = 0; h < GT; ++h) c[h] = fmaf(sq[h][d], delta, c[h]);
  }
  float* o = sc + (static_cast<size_t>(b) * nh + h0) * sc_stride + c0 + t;
#pragma unroll
  for (int h = 0; h < GT; ++h)
    if (h < nq) o[h * sc_stride] = c[h];
}

// Value pass: grid (n_splits, nkv * n_sub, B) as the attention kernel, kThreads threads; after it, before
// the combine. Adds sum_t 2^(s_t - lse) delta_{t,d} over the split's compressed tokens to its partial output
// ws_o (normalised by the split's own sum, lse = the split's log2-sum-exp). The split's entries are one
// contiguous run of the (row, head) pool (tiles in order); warp w takes its w-th quarter, kPassUnroll x 32
// entries at a time, and finds each entry's tile in the staged tile offsets. Measured against two variants
// (whole attention call, 7B heads, H200; docs/kernels.md): one tile per warp, 4 entries per lane in flight —
// 441 us at B 16 4k (this one 466) but 3128 us at B 64 8k (this one 2963); one tile per warp with the
// offsets staged and 8 in flight — slower than both (476 / 3097 us).
template <int GT>
__global__ void __launch_bounds__(kThreads) cattn_value_outliers_kernel(CompressedKV kv, const float* __restrict__ sc, long long sc_stride,
                                                                        float* __restrict__ ws_o, const float* __restrict__ ws_lse, int nh,
                                                                        int group, int n_sub, int split_tokens, int n_splits,
                                                                        long long max_comp, int g_shift) {
  __shared__ float acc[kWarps][GT][kPassMaxHd];  // one accumulator per warp: no two warps touch one element
  __shared__ float lse[GT];
  __shared__ int toff[kMaxSplitTiles + 1];
  const int hd = kv.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, hd_shift = hd == 128 ? 7 : 6;
  // Its own decode of the grid position, not split_block_position: with that one's unsigned division ptxas gave
  // the GT-1 instantiation 96 registers instead of 72 (sm_90), i.e. 5 blocks per SM instead of 7.
  const int split = blockIdx.x, kvh = static_cast<int>(blockIdx.y) / n_sub, sub = static_cast<int>(blockIdx.y) - kvh * n_sub;
  const int b = blockIdx.z, h0 = kvh * group + sub * GT, nq = min(GT, group - sub * GT);
  const LayoutIx ix(kv);
  const long long c_begin = static_cast<long long>(split) * split_tokens, tb = c_begin >> g_shift;
  // Round 1: lengths, the split's log2-sum-exps and tile offsets, all loads independent.
  const RowLens len = row_lens(kv, b, max_comp);
  const float my_lse = tid < nq ? ws_lse[(static_cast<size_t>(b) * nh + h0 + tid) * n_splits + split] : 0.f;
  for (int i = tid; i <= (split_tokens >> g_shift); i += kThreads)
    toff[i] = tb + i <= kv.tile_cap ? static_cast<int>(clamp_to_pool(kv.v_sp_off[ix.sp_off(b, kvh) + tb + i], kv.sparse_cap)) : 0;
  for (int i = tid; i < kWarps * GT * kPassMaxHd; i += kThreads) (&acc[0][0][0])[i] = 0.f;
  if (tid < GT) lse[tid] = my_lse;
  if (!len.ok || split >= live_splits(len, split_tokens)) return;  // the attention kernel wrote nothing either
  const long long c_end = min(len.comp, c_begin + split_tokens);
  if (c_end <= c_begin) return;
  const int ntiles = static_cast<int>((c_end >> g_shift) - tb);
  __syncthreads();
  if (tid == 0)
    for (int i = 1; i <= ntiles; ++i) toff[i] = max(toff[i], toff[i - 1]);  // a malformed layout's offsets, made monotone
  __syncthreads();

  const uint16_t* pos = kv.v_sp_pos + ix.sp(b, kvh);
  const uint16_t* val = kv.v_sp_val + ix.sp(b, kvh);
  const float* corr = kv.v_sp_corr ? kv.v_sp_corr + ix.sp(b, kvh) : nullptr;
  const float* srow = sc + (static_cast<size_t>(b) * nh + h0) * sc_stride;
  const int E0 = toff[0], E1 = toff[ntiles], per = (E1 - E0 + kWarps - 1) / kWarps;
  const int w0 = E0 + warp * per, w1 = min(E1, w0 + per);
  for (int e0 = w0; e0 < w1; e0 += 32 * kPassUnroll) {
    int p[kPassUnroll];
    float delta[kPassUnroll];
    // Round 2: positions and corrections (indices clamped so the loads do not wait on a test).
#pragma unroll
    for (int u = 0; u < kPassUnroll; ++u) {
      const int e = min(e0 + u * 32 + lane, w1 - 1);
      p[u] = __ldg(pos + e);
      delta[u] = corr ? __ldg(corr + e) : 0.f;
    }
    bool act[kPassUnroll];
    int d[kPassUnroll];
    float v[kPassUnroll][GT];
#pragma unroll
    for (int u = 0; u < kPassUnroll; ++u) {
      const int e = e0 + u * 32 + lane, lt = p[u] >> hd_shift;
      act[u] = e < w1 && lt < kv.group;  // a position outside the tile (a malformed layout): ignored, as v3 does
      d[u] = act[u] ? p[u] - (lt << hd_shift) : 0;
      int lo = 0, hi = ntiles - 1;  // the entry's tile: the last with toff[ti] <= e
      while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (toff[mid] <= e) lo = mid;
        else hi = mid - 1;
      }
      const long long t = ((tb + lo) << g_shift) + (act[u] ? lt : 0);
      if (act[u] && !corr) delta[u] = entry_correction(kv, ix, true, b, kvh, tb + lo, lt, d[u], __ldg(val + e));
      // Round 3: the scores.
#pragma unroll
      for (int h = 0; h < GT; ++h) v[u][h] = act[u] && h < nq ? exp2f(__ldg(srow + h * sc_stride + t) - lse[h]) * delta[u] : 0.f;
    }
    // Lanes whose entries share a channel add in lane order (= entry order): one round per rank.
#pragma unroll
    for (int u = 0; u < kPassUnroll; ++u) {
      const unsigned peers = __match_any_sync(0xffffffffu, act[u] ? d[u] : kPassMaxHd + lane);
      const int rank = __popc(peers & ((1u << lane) - 1u));
      const int rounds = __reduce_max_sync(0xffffffffu, static_cast<unsigned>(act[u] ? rank : 0));
      for (int k = 0; k <= rounds; ++k) {
        if (act[u] && rank == k)
#pragma unroll
          for (int h = 0; h < GT; ++h) acc[warp][h][d[u]] += v[u][h];
        __syncwarp();
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < nq * hd; i += kThreads) {
    const int h = i >> hd_shift, d = i - (h << hd_shift);
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += acc[w][h][d];
    ws_o[((static_cast<size_t>(b) * nh + h0 + h) * n_splits + split) * hd + d] += s;
  }
}
