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
// and read back) and two launches.
//
// Both passes are deterministic (no atomics): the key pass gives each token to one thread, which walks
// its run of entries in order; the value pass gives each tile to one warp, which applies a batch of 32
// entries to per-warp accumulators in lane order where channels collide, and the warps' accumulators are
// summed in warp order.

// Key pass: grid (ceil(max_comp / kThreads), nkv * n_sub, B), kThreads threads; thread = one compressed
// token of row b, for the GT query heads (h0 .. h0 + nq) of kv head kvh. Writes sc[b, h, t] for every
// compressed token t < n_comp[b] (0 where the token has no key outliers).
template <typename T, int GT>
__global__ void __launch_bounds__(kThreads) cattn_key_bias_kernel(const T* __restrict__ q, CompressedKV kv, float* __restrict__ sc,
                                                                  long long sc_stride, int nh, int group, int n_sub, long long max_comp,
                                                                  float scale_log2, int g_shift) {
  constexpr int kMaxHd = 128;
  __shared__ float sq[GT][kMaxHd];  // queries, pre-scaled as in v3 (scale * log2(e))
  const int hd = kv.hd;
  const int kvh = static_cast<int>(blockIdx.y) / n_sub, sub = static_cast<int>(blockIdx.y) - kvh * n_sub, b = blockIdx.z;
  const int h0 = kvh * group + sub * GT, nq = min(GT, group - sub * GT);
  for (int i = threadIdx.x; i < GT * hd; i += kThreads) {
    const int h = i / hd;
    sq[h][i - h * hd] = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * hd + i]) * scale_log2 : 0.f;
  }
  __syncthreads();
  const RowLens len = row_lens(kv, b, max_comp);
  const long long t = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (!len.ok || t >= len.comp) return;
  const LayoutIx ix(kv);
  const long long tile = t >> g_shift;
  const int lt = static_cast<int>(t - (tile << g_shift));
  const size_t ob = ix.sp_off(b, kvh) + static_cast<size_t>(tile);
  auto clamp_e = [&](int e) { return static_cast<int>(min(max(static_cast<long long>(e), 0LL), kv.sparse_cap)); };
  const int lo = clamp_e(kv.k_sp_off[ob]), hi = max(lo, clamp_e(kv.k_sp_off[ob + 1]));
  const uint16_t* pos = kv.k_sp_pos + ix.sp(b, kvh);
  const uint16_t* val = kv.k_sp_val + ix.sp(b, kvh);
  // The tile's entries are sorted by position lt * hd + d: the token's run starts at the first entry >= lt * hd.
  const int key = lt * hd;
  int a = lo, z = hi;
  while (a < z) {
    const int m = (a + z) >> 1;
    if (static_cast<int>(__ldg(pos + m)) < key) a = m + 1;
    else z = m;
  }
  float c[GT];
#pragma unroll
  for (int h = 0; h < GT; ++h) c[h] = 0.f;
  if (a < hi && static_cast<int>(__ldg(pos + a)) < key + hd) {
    const int R = kv.rank, KROW = kv.group * kv.bits / 8;
    const long long lb = R > 0 ? kv.lr_block[static_cast<size_t>(b) * kv.tile_cap + tile] : 0;
    const bool lr_ok = lb >= 0 && lb < kv.lr_cap;
    float ar[kMaxRank];
#pragma unroll
    for (int r = 0; r < kMaxRank; ++r) ar[r] = r < R ? ldh(kv.k_lr_a + ix.tok(b, kvh, t) * R + r) : 0.f;
    for (int e = a; e < hi; ++e) {
      const int p = __ldg(pos + e);
      if (p >= key + hd) break;
      const int d = p - key;
      const size_t kr = ix.k_row(b, kvh, tile, d);
      const float deq = fmaf(code_f(code_at(kv.k_codes + kr * KROW, lt, kv.bits)), ldh(kv.k_scale + kr), ldh(kv.k_zero + kr));
      float lr = 0.f;
      if (R > 0) {
        if (!lr_ok) lr = NAN;
        else
#pragma unroll
          for (int r = 0; r < kMaxRank; ++r)
            if (r < R) lr = fmaf(ar[r], ldh(kv.k_lr_b + ix.lr_b(b, kvh, lb, r) + d), lr);
      }
      const float delta = ldh(val + e) - deq - lr;
#pragma unroll
      for (int h = 0; h < GT; ++h) c[h] = fmaf(sq[h][d], delta, c[h]);
    }
  }
  float* o = sc + (static_cast<size_t>(b) * nh + h0) * sc_stride + t;
#pragma unroll
  for (int h = 0; h < GT; ++h)
    if (h < nq) o[h * sc_stride] = c[h];
}

// Value pass: grid (n_splits, nkv * n_sub, B) as the attention kernel, kThreads threads; after it, before
// the combine. Adds sum_t 2^(s_t - lse) delta_{t,d} over the split's compressed tokens to its partial output
// ws_o (normalised by the split's own sum, lse = the split's log2-sum-exp).
template <int GT>
__global__ void __launch_bounds__(kThreads) cattn_value_outliers_kernel(CompressedKV kv, const float* __restrict__ sc, long long sc_stride,
                                                                        float* __restrict__ ws_o, const float* __restrict__ ws_lse, int nh,
                                                                        int group, int n_sub, int split_tokens, int n_splits,
                                                                        long long max_comp, int g_shift, int vg_shift) {
  constexpr int kMaxHd = 128;
  __shared__ float acc[kWarps][GT][kMaxHd];  // one accumulator per warp: no two warps touch one element
  __shared__ float lse[GT];
  const int hd = kv.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int split = blockIdx.x, kvh = static_cast<int>(blockIdx.y) / n_sub, sub = static_cast<int>(blockIdx.y) - kvh * n_sub;
  const int b = blockIdx.z, h0 = kvh * group + sub * GT, nq = min(GT, group - sub * GT);
  const RowLens len = row_lens(kv, b, max_comp);
  if (!len.ok || split >= live_splits(len, split_tokens)) return;  // the attention kernel wrote nothing either
  const long long c_begin = static_cast<long long>(split) * split_tokens;
  const long long c_end = min(len.comp, c_begin + split_tokens);
  if (c_end <= c_begin) return;
  for (int i = tid; i < kWarps * GT * kMaxHd; i += kThreads) (&acc[0][0][0])[i] = 0.f;
  if (tid < GT) lse[tid] = tid < nq ? ws_lse[(static_cast<size_t>(b) * nh + h0 + tid) * n_splits + split] : 0.f;
  __syncthreads();

  const LayoutIx ix(kv);
  const int R = kv.rank, G = kv.group, bits = kv.bits, VROW = hd * bits / 8, ng = hd >> vg_shift;
  const int hd_shift = hd == 128 ? 7 : 6;
  const uint16_t* pos = kv.v_sp_pos + ix.sp(b, kvh);
  const uint16_t* val = kv.v_sp_val + ix.sp(b, kvh);
  const float* srow = sc + (static_cast<size_t>(b) * nh + h0) * sc_stride;
  auto clamp_e = [&](int e) { return static_cast<int>(min(max(static_cast<long long>(e), 0LL), kv.sparse_cap)); };
  for (long long tile = (c_begin >> g_shift) + warp; tile < (c_end >> g_shift); tile += kWarps) {
    const size_t ob = ix.sp_off(b, kvh) + static_cast<size_t>(tile);
    const int lo = clamp_e(kv.v_sp_off[ob]), hi = max(lo, clamp_e(kv.v_sp_off[ob + 1]));
    const long long lb = R > 0 ? kv.lr_block[static_cast<size_t>(b) * kv.tile_cap + tile] : 0;
    const bool lr_ok = lb >= 0 && lb < kv.lr_cap;
    for (int e0 = lo; e0 < hi; e0 += 32) {
      const int e = e0 + lane;
      bool act = e < hi;
      int d = 0;
      float v[GT];
      if (act) {
        const int p = __ldg(pos + e), lt = p >> hd_shift;
        act = lt < G;  // not a position of the tile (a malformed layout): ignored, as v3 does
        if (act) {
          d = p - (lt << hd_shift);
          const long long t = (tile << g_shift) + lt;
          const size_t tok = ix.tok(b, kvh, t);
          const size_t gi = tok * ng + (d >> vg_shift);
          const float deq = fmaf(code_f(code_at(kv.v_codes + tok * VROW, d, bits)), ldh(kv.v_scale + gi), ldh(kv.v_zero + gi));
          float lr = 0.f;
          if (R > 0) {
            if (!lr_ok) lr = NAN;
            else
              for (int r = 0; r < R; ++r) lr = fmaf(ldh(kv.v_lr_a + tok * R + r), ldh(kv.v_lr_b + ix.lr_b(b, kvh, lb, r) + d), lr);
          }
          const float delta = ldh(val + e) - deq - lr;
#pragma unroll
          for (int h = 0; h < GT; ++h) v[h] = h < nq ? exp2f(srow[h * sc_stride + t] - lse[h]) * delta : 0.f;
        }
      }
      // Lanes whose entries share a channel add in lane order (= token order): one round per rank.
      const unsigned peers = __match_any_sync(0xffffffffu, act ? d : kMaxHd + lane);
      const int rank = __popc(peers & ((1u << lane) - 1u));
      const int rounds = __reduce_max_sync(0xffffffffu, act ? rank : 0);
      for (int k = 0; k <= rounds; ++k) {
        if (act && rank == k)
#pragma unroll
          for (int h = 0; h < GT; ++h) acc[warp][h][d] += v[h];
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
