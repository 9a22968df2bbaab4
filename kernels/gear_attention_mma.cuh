#pragma once
// Decode attention from the compressed layout on the tensor cores (v4). Included by gear_attention.cu
// inside its anonymous namespace, after the CUDA-core kernel (v3), whose staging, lengths and combine it
// shares. Why: v3 spends ~4 instructions decoding each code plus one FMA per code and query head, so at
// 2 bits it is bound by instruction issue, not by bandwidth (docs/kernels.md). Here the codes become
// fp16 operands of mma.m16n8k16 (f16 in, f32 accumulate) with two instructions per two codes, and the
// tensor cores do the multiply-adds.
//
// Exactness. A code c < 2^b is exact in fp16; (w & mask) | 0x6400 is the fp16 number 1024 + c·2^s and
// one hsub2 of 1024 leaves c·2^s exactly. The fp32 factors that multiply codes (q·key scale, p·value
// scale, p, q·B) are split into fp16 hi + lo (rows g and g+8 of the MMA's A operand, g the query head),
// so each product carries ~22 bits and the MMA accumulates in fp32, like v3's fp32 FMAs up to rounding.
//
// Work split. A block (128 threads, 4 warps) serves GT query heads of one kv head, one row and one split,
// as v3. Each 128-token chunk is staged by the whole block (cp.async, double-buffered); then each warp
// takes a 32-token unit of it and runs its own online softmax (no barriers inside a chunk). At the end
// the four warps' partial results merge through shared memory.
//
// Fragments (PTX mma.m16n8k16, lane = 4g + c): A rows g, g+8 / cols 2c, 2c+1, 2c+8, 2c+9; B rows (k) 2c,
// 2c+1, 2c+8, 2c+9 / col (n) g; C rows g, g+8 / cols 2c, 2c+1. Rows are query heads (hi) and heads + 8
// (lo); the k and n indices are permuted onto tokens and channels so that one byte of codes serves P = 8/b
// MMAs:
//  keys:   score[h][t] = sum_d (q_d s_d) c[t][d] + sum_d q_d z_d. k = channels (16 per step, natural
//          order), n = tokens: in n-tile j of a "byte group" (8 bytes of a channel row = 8P tokens),
//          column n is token P·n + j, the j-th code of byte n. Byte j's codes are masked in place, so
//          n-tile j's sums come out times 2^(b·j): rescaled in fp32 afterwards.
//  values: out[h][d] += sum_t (p_t s_t) c[t][d] (+ sum_t p_t z_t per group). k = tokens, taken in the order
//          the key step left them in the C fragments (n-tiles 2i, 2i+1 = k 0..7, 8..15), so the
//          probabilities go from C to A without moving between lanes; n = channels: in value n-tile
//          (ni, j), column n is channel 8P·ni + P·n + j (byte 8ni + n of a token row, code j; shifted
//          down, so no rescaling).
// Low rank: keys add (q·B)·A_t with one more MMA per n-tile (k = r); values accumulate u = sum_t p_t A_t
// with an MMA (n = r) and apply u·B in fp32 when the token's low-rank block changes. The zero points
// z_t of the values the same way (n = value group). Sparse entries: each warp computes a batch of 32
// entries' corrections (outlier - dequant - lowrank) in parallel, buckets them by the lane that owns
// their score (keys) or output column (values) with ballots, and the owners apply them in entry order
// (deterministic: no atomics).
//
// Requirements (else compressed_attention runs v3): hd 64/128; a key tile row of >= 8 bytes (G >= 32
// at 2 bits, >= 16 at 4); value groups of >= 8P channels (v_group >= 32 at 2 bits, >= 16 at 4).

constexpr int kMmaTiles = kChunk / 16;
constexpr int kMmaBlocksPerSm = 4;  // register budget: 4 blocks of 4 warps per SM to hide latency  // tiles per chunk, at most (G >= 16)

__host__ __device__ inline bool mma_layout_ok(int hd, int bits, int G, int VG) {
  const int P = 8 / bits;
  return (hd == 64 || hd == 128) && (bits == 2 || bits == 4 || bits == 8) && G * bits / 8 >= 8 && G <= kChunk &&
         VG % (8 * P) == 0 && hd % VG == 0;
}

// Byte offsets of the MMA kernel's dynamic shared memory.
constexpr int kMmaStaged = 1024;  // sparse entries per side and chunk staged in shared memory (more: from global)

struct MmaSmemLayout {
  size_t frag, sc, list, vcorr, ent, delta, bytes;
};
__host__ __device__ inline MmaSmemLayout mma_smem_layout(int hd, int bits, int G, int VG, int R, int gt, bool sparse) {
  auto up16 = [](size_t x) { return (x + 15) & ~static_cast<size_t>(15); };
  MmaSmemLayout L{};
  const size_t stages = static_cast<size_t>(2 * stage_layout(hd, bits, G, VG, R).bytes);
  const size_t merge = static_cast<size_t>(kWarps) * gt * hd * 4, buffer = static_cast<size_t>(2 * kBufPiece * hd * 2);
  size_t o = up16(stages > merge ? (stages > buffer ? stages : buffer) : (merge > buffer ? merge : buffer));
  L.frag = o, o += up16(static_cast<size_t>(kChunk / G) * hd * 32);  // [tiles][hd/16][32 lanes] uint4
  L.sc = o, o += up16(static_cast<size_t>(kWarps) * gt * 32 * 4);    // [warp][head][32 tokens] float
  L.list = o, o += up16(static_cast<size_t>(kWarps) * 32 * 8);       // [warp][32] {int key, float delta}
  L.vcorr = o, o += sparse ? up16(static_cast<size_t>(kWarps) * gt * hd * 4) : 0;  // [warp][head][hd] float
  // [stage][side][pos, val][kMmaStaged + 2] u16: each chunk's entries, copied with the chunk (from an even element)
  L.ent = o, o += sparse ? up16(static_cast<size_t>(2 * 2 * 2) * (kMmaStaged + 2) * 2) : 0;
  L.delta = o, o += sparse ? up16(static_cast<size_t>(2) * kMmaStaged * 4) : 0;  // [side][kMmaStaged] float corrections
  L.bytes = o;
  return L;
}

// Two codes (bits `mask` of each 16-bit half of w) as the fp16 pair (c0, c1) times 2^shift of the mask.
__device__ __forceinline__ uint32_t codes_h2(uint32_t w, uint32_t mask) {
  return h2bits(__hsub2(bits2h((w & mask) | 0x64006400u), bits2h(0x64006400u)));
}

// 4-byte asynchronous copy of which only the first src_bytes (0..4) are read; the rest is zero-filled.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, int src_bytes) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(gmem), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ uint32_t pack_u16(uint32_t lo, uint32_t hi) { return lo | (hi << 16); }

template <int GT, int HD> struct MmaSmem {
  float q[GT][HD];                     // queries, pre-scaled by scale * log2(e)
  uint4 fragq[HD / 16][32];            // q as A fragments (hi / lo rows), for the fp16 buffer
  float qz[kMmaTiles][GT];             // q·zero of each tile of the chunk
  float qb[kMmaTiles][GT][kMaxRank];   // q·B_k of each tile's low-rank block
  int tlb[kMmaTiles];                  // the chunk's tiles' low-rank blocks
  int soff[2][kMaxSplit / 16 + 1];     // the split's tile offsets into the sparse pools (K, V), clamped
  float zs[kWarps][GT][16];            // per warp: sum_t p_t z_t per value group (final merge)
  float wm[kWarps][GT], wl[kWarps][GT];
};

template <typename T, int HD, int GT, int BITS>
__global__ void __launch_bounds__(kThreads, HD == 64 ? 4 : 3)
    cattn_mma_kernel(const T* __restrict__ q, CompressedKV kv, T* __restrict__ out, float* __restrict__ ws_o,
                     float* __restrict__ ws_lse, int nh, int group, int n_sub, int split_tokens, int n_splits, long long max_comp,
                     float scale_log2) {
  constexpr int P = 8 / BITS;           // codes per byte
  constexpr int KS = HD / 16;           // k-steps over the channels
  constexpr int NI = HD / (8 * P);      // value channel blocks of 8P channels (8 bytes of a token row)
  constexpr int VROW = HD * BITS / 8;   // bytes of one token's value codes
  constexpr uint32_t MASK = ((1u << BITS) - 1u) * 0x00010001u;
  __shared__ __align__(16) MmaSmem<GT, HD> sm;
  extern __shared__ __align__(16) uint8_t dyn[];
  const SplitBlock blk = begin_split_block<GT>(group, n_sub);
  const int split = blk.split, kvh = blk.kvh, b = blk.b, h0 = blk.h0, nq = blk.nq;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, c = lane & 3;  // fragment coordinates: head row g, column pair c
  const bool head = g < nq;               // this lane's rows are a real query head
  const int G = kv.group, R = kv.rank, VG = kv.v_group, ng = HD / VG;
  const int KROW = G * BITS / 8;
  const bool sparse = kv.sparse_cap > 0;
  const LayoutIx ix(kv);
  const size_t bh = ix.bh(b, kvh);
  const StageLayout SL = stage_layout(HD, BITS, G, VG, R);
  const MmaSmemLayout ML = mma_smem_layout(HD, BITS, G, VG, R, GT, sparse);
  uint4* fragk = reinterpret_cast<uint4*>(dyn + ML.frag);                       // [tile][KS][32]
  float* sc = reinterpret_cast<float*>(dyn + ML.sc) + warp * GT * 32;            // [GT][32]
  int2* list = reinterpret_cast<int2*>(dyn + ML.list) + warp * 32;              // [32]
  float* vcorr = reinterpret_cast<float*>(dyn + ML.vcorr) + warp * GT * HD;      // [GT][HD]

  const RowLens len = row_lens(kv, b, max_comp);
  if (!len.ok) {
    if (n_splits == 1)
      for (int i = tid; i < nq * HD; i += kThreads) out[(static_cast<size_t>(b) * nh + h0) * HD + i] = from_f<T>(NAN);
    return;
  }
  if (split >= live_splits(len, split_tokens)) return;
  const SplitSpan span = split_span(len, split, split_tokens);  // (not a structured binding: lambdas capture these)
  const long long c_begin = span.c_begin, c_end = span.c_end;
  const bool has_buf = span.has_buf;
  const int n_chunks = c_end > c_begin ? static_cast<int>(ceil_div(c_end - c_begin, kChunk)) : 0;

  // Sparse entries: the split's tile offsets (one read per block), then each chunk's entries are copied
  // with its codes (from an even element, so 4-byte copies line up) and corrected in phase 1.
  const long long sp_total = static_cast<long long>(kv.B) * kv.nkv * kv.sparse_cap;
  auto ent = [&](int si, int side, int which) {
    return reinterpret_cast<uint16_t*>(dyn + ML.ent) + ((si * 2 + side) * 2 + which) * (kMmaStaged + 2);
  };
  float* sdelta = reinterpret_cast<float*>(dyn + ML.delta);  // [side][kMmaStaged]
  // The chunk at c0: first entry, entries staged, and the staged arrays' offset (0 or 1) of that first entry.
  struct Staged {
    int e0, n, shift;
  };
  auto staged = [&](int side, long long c0, int ntiles) {
    const int tr = static_cast<int>((c0 - c_begin) / G);
    Staged z;
    z.e0 = sm.soff[side][tr];
    z.n = min(max(sm.soff[side][tr + ntiles] - z.e0, 0), kMmaStaged);
    z.shift = static_cast<int>((ix.sp(b, kvh) + z.e0) & 1);
    return z;
  };
  if (sparse && c_end > c_begin) {
    const int n_off = static_cast<int>((c_end - c_begin) / G) + 1;
    for (int i = tid; i < 2 * n_off; i += kThreads) {
      const int side = i / n_off, t = i - side * n_off;
      const size_t offb = ix.sp_off(b, kvh) + static_cast<size_t>(c_begin / G + t);
      const int32_t v = side ? kv.v_sp_off[offb] : kv.k_sp_off[offb];
      sm.soff[side][t] = static_cast<int>(clamp_to_pool(v, kv.sparse_cap));
    }
    __syncthreads();
  }

  auto stage_chunk = [&](int si, long long c0) {
    uint8_t* st = dyn + si * SL.bytes;
    const int nt = static_cast<int>(min(static_cast<long long>(kChunk), c_end - c0));
    const long long tile0 = c0 / G;
    const int ntiles = nt / G;
    const size_t ktile = bh * static_cast<size_t>(kv.tile_cap) + static_cast<size_t>(tile0);
    const size_t tok = ix.tok(b, kvh, c0);
    copy_async(st + SL.kc, kv.k_codes + ktile * HD * KROW, ntiles * HD * KROW, kThreads);
    copy_async(st + SL.vc, kv.v_codes + tok * VROW, nt * VROW, kThreads);
    copy_async(st + SL.ks, kv.k_scale + ktile * HD, ntiles * HD * 2, kThreads);
    copy_async(st + SL.kz, kv.k_zero + ktile * HD, ntiles * HD * 2, kThreads);
    copy_async(st + SL.vs, kv.v_scale + tok * ng, nt * ng * 2, kThreads);
    copy_async(st + SL.vz, kv.v_zero + tok * ng, nt * ng * 2, kThreads);
    if (R > 0) {
      copy_async(st + SL.ka, kv.k_lr_a + tok * R, nt * R * 2, kThreads);
      copy_async(st + SL.va, kv.v_lr_a + tok * R, nt * R * 2, kThreads);
    }
    if (sparse)
#pragma unroll
      for (int side = 0; side < 2; ++side) {
        const Staged z = staged(side, c0, ntiles);
        const long long ga = static_cast<long long>(ix.sp(b, kvh)) + z.e0 - z.shift;  // even
        const int pairs = (z.n + z.shift + 1) / 2;
        const uint16_t* gp = side ? kv.v_sp_pos : kv.k_sp_pos;
        const uint16_t* gv = side ? kv.v_sp_val : kv.k_sp_val;
        for (int i = tid; i < pairs; i += kThreads) {
          const long long gi = ga + 2 * i;
          const int bytes = static_cast<int>(min(4LL, max(0LL, 2 * (sp_total - gi))));
          cp_async4(ent(si, side, 0) + 2 * i, gp + gi, bytes);
          cp_async4(ent(si, side, 1) + 2 * i, gv + gi, bytes);
        }
      }
  };
  if (n_chunks > 0) stage_chunk(0, c_begin);
  cp_async_commit();

  for (int i = tid; i < GT * HD; i += kThreads) {
    const int h = i / HD;
    sm.q[h][i - h * HD] = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * HD + i]) * scale_log2 : 0.f;
  }
  // Fragment rows of heads >= nq stay zero: clear the key fragments once (chunks rewrite real heads only).
  for (int i = tid; i < (kChunk / G) * KS * 32; i += kThreads) fragk[i] = make_uint4(0, 0, 0, 0);
  if (sparse)
    for (int i = tid; i < kWarps * GT * HD; i += kThreads) reinterpret_cast<float*>(dyn + ML.vcorr)[i] = 0.f;
  __syncthreads();
  for (int i = tid; i < KS * 32; i += kThreads) {  // q itself as A fragments (the buffer's keys)
    const int ks = i >> 5, l = i & 31, hg = l >> 2, d = ks * 16 + 2 * (l & 3);
    uint4 f = make_uint4(0, 0, 0, 0);
    if (hg < nq) {
      split_hl(sm.q[hg][d], sm.q[hg][d + 1], f.x, f.y);
      split_hl(sm.q[hg][d + 8], sm.q[hg][d + 9], f.z, f.w);
    }
    sm.fragq[ks][l] = f;
  }

  // Per-warp state: online softmax of head g (the same in the 4 lanes of a quad), output accumulators.
  float m_run = -INFINITY, l_run = 0.f;
  float oacc[NI][P][4];
  float zacc[2][4];  // sum_t p_t z_t, n = value group (two n-tiles: up to 16 groups)
  float uacc[4];     // sum_t p_t A_v[t], n = r, for the current low-rank block
#pragma unroll
  for (int i = 0; i < NI; ++i)
#pragma unroll
    for (int j = 0; j < P; ++j)
#pragma unroll
      for (int k = 0; k < 4; ++k) oacc[i][j][k] = 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) zacc[0][k] = zacc[1][k] = uacc[k] = 0.f;
  int cur_lb = 0;
  bool has_u = false;

  // Online softmax over this warp's 32 scores s[4 n-tiles][2 cols] (-inf for absent tokens): leaves
  // probabilities in s and rescales the accumulators.
  auto softmax = [&](float (&s)[4][2]) {
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < 4; ++i) mx = fmaxf(mx, fmaxf(s[i][0], s[i][1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run, mx);
    const bool none = m_new == -INFINITY;
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        s[i][k] = (none || !head) ? 0.f : exp2f(s[i][k] - m_new);
        sum += s[i][k];
      }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float corr = none ? 1.f : (m_run == -INFINITY ? 0.f : exp2f(m_run - m_new));
    l_run = l_run * corr + sum;
    m_run = m_new;
    if (corr != 1.f) {
#pragma unroll
      for (int i = 0; i < NI; ++i)
#pragma unroll
        for (int j = 0; j < P; ++j)
#pragma unroll
          for (int k = 0; k < 4; ++k) oacc[i][j][k] *= corr;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        zacc[0][k] *= corr;
        zacc[1][k] *= corr;
        uacc[k] *= corr;
      }
      if (sparse && head)  // this lane's columns of the sparse value corrections (see owner_v)
#pragma unroll
        for (int i = 0; i < NI; ++i)
#pragma unroll
          for (int r = 0; r < 2 * P; ++r) vcorr[g * HD + 8 * P * i + 2 * P * c + r] *= corr;
    }
  };

  // Adds u·B_v[cur_lb] to the outputs and clears u (u[g][r] from uacc: rows g, g+8, cols r = 2c, 2c+1).
  auto flush_u = [&]() {
    if (!has_u) return;
    has_u = false;
    const float u0 = uacc[0] + uacc[2], u1 = uacc[1] + uacc[3];
    float u[kMaxRank];
#pragma unroll
    for (int r = 0; r < kMaxRank; ++r) u[r] = __shfl_sync(0xffffffffu, (r & 1) ? u1 : u0, (lane & ~3) | (r >> 1));
#pragma unroll
    for (int k = 0; k < 4; ++k) uacc[k] = 0.f;
    if (!head) return;
    const bool ok = cur_lb >= 0 && cur_lb < kv.lr_cap;
#pragma unroll
    for (int r = 0; r < kMaxRank; ++r) {
      if (r >= R) break;
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        // channels 8P·i + 2P·c + (0 .. 2P-1): this lane's columns of value n-tiles (i, 0..P-1)
        float bv[2 * P];
        if (ok) {
          const uint16_t* src = kv.v_lr_b + ix.lr_b(b, kvh, cur_lb, r) + 8 * P * i + 2 * P * c;
#pragma unroll
          for (int k = 0; k < 2 * P; k += 2) {
            const float2 f = __half22float2(bits2h(__ldg(reinterpret_cast<const unsigned int*>(src + k))));
            bv[k] = f.x;
            bv[k + 1] = f.y;
          }
        } else {
#pragma unroll
          for (int k = 0; k < 2 * P; ++k) bv[k] = NAN;
        }
#pragma unroll
        for (int j = 0; j < P; ++j) {
          oacc[i][j][0] = fmaf(u[r], bv[j], oacc[i][j][0]);      // column 2c: channel 8P·i + P·2c + j
          oacc[i][j][1] = fmaf(u[r], bv[P + j], oacc[i][j][1]);  // column 2c+1
        }
      }
    }
  };

  // The sparse corrections of this warp's unit (chunk tokens u0 .. u0+31, < nt) on one side, applied by
  // their owner lanes: keys into sc (scores), values into vcorr (using the probabilities in sc).
  // The correction outlier - dequant - lowrank of entry (token t = tile ti's token lt, channel d) of a side.
  auto entry_delta = [&](int side, const uint8_t* st, int ti, int t, int lt, int d, float val) {
    float deq;
    if (side == 0) {
      const uint16_t* s_ks = reinterpret_cast<const uint16_t*>(st + SL.ks);
      const uint16_t* s_kz = reinterpret_cast<const uint16_t*>(st + SL.kz);
      deq = fmaf(code_f(code_at_plain(st + SL.kc + (static_cast<size_t>(ti) * HD + d) * KROW, lt, BITS)), h2f(s_ks[ti * HD + d]),
                 h2f(s_kz[ti * HD + d]));
    } else {
      const uint16_t* s_vs = reinterpret_cast<const uint16_t*>(st + SL.vs);
      const uint16_t* s_vz = reinterpret_cast<const uint16_t*>(st + SL.vz);
      const int gi = t * ng + d / VG;
      deq = fmaf(code_f(code_at_plain(st + SL.vc + t * VROW, d, BITS)), h2f(s_vs[gi]), h2f(s_vz[gi]));
    }
    float lr = 0.f;
    if (R > 0) {
      const int lb = sm.tlb[ti];
      if (lb < 0 || lb >= kv.lr_cap) {
        lr = NAN;
      } else {
        const uint16_t* s_a = reinterpret_cast<const uint16_t*>(st + (side ? SL.va : SL.ka));
        const uint16_t* Bp = (side ? kv.v_lr_b : kv.k_lr_b) + ix.lr_b(b, kvh, lb, 0) + d;
#pragma unroll
        for (int r = 0; r < kMaxRank; ++r)
          if (r < R) lr = fmaf(h2f(s_a[t * R + r]), ldh(Bp + r * HD), lr);
      }
    }
    return val - deq - lr;
  };

  auto sparse_side = [&](int side, const uint8_t* st, int u0, int nt, int si, long long c0, int ntiles) {
    const int* toff = sm.soff[side] + (c0 - c_begin) / G;
    const Staged z = staged(side, c0, ntiles);
    const uint16_t* ep = ent(si, side, 0) + z.shift;
    const int ti_a = u0 / G, ti_b = (min(u0 + 32, nt) - 1) / G;
    const int e_begin = toff[ti_a], e_end = max(e_begin, toff[ti_b + 1]);
    const uint16_t* gpos = (side ? kv.v_sp_pos : kv.k_sp_pos) + ix.sp(b, kvh);
    const uint16_t* gval = (side ? kv.v_sp_val : kv.k_sp_val) + ix.sp(b, kvh);
    for (int e0 = e_begin; e0 < e_end; e0 += 32) {
      const int e = e0 + lane;
      const bool has = e < e_end;
      const bool in_stage = e >= z.e0 && e - z.e0 < z.n;
      int ti = ti_a;
      while (ti < ti_b && e >= toff[ti + 1]) ++ti;
      const int pos = has ? static_cast<int>(in_stage ? ep[e - z.e0] : __ldg(gpos + e)) : 0;
      const int lt = pos / HD, d = pos - lt * HD;
      const int t = ti * G + lt;  // chunk token
      if (!__any_sync(0xffffffffu, has && lt < G && t < u0 + 32)) break;  // sorted: the unit's entries are done
      const bool in = has && lt < G && t >= u0 && t < u0 + 32 && t < nt;
      float delta = 0.f;
      int owner = 0;
      if (in) {
        owner = side == 0 ? (((t - u0) % (8 * P)) / P) >> 1 : ((d % (8 * P)) / P) >> 1;
        delta = in_stage ? sdelta[side * kMmaStaged + e - z.e0] : entry_delta(side, st, ti, t, lt, d, ldh(gval + e));
      }
      // Bucket the batch by owner lane column c (ballots: entry order kept within a bucket).
      int base = 0, mine = 0, cnt = 0, start = 0;
#pragma unroll
      for (int o = 0; o < 4; ++o) {
        const unsigned m = __ballot_sync(0xffffffffu, in && owner == o);
        if (in && owner == o) mine = base + __popc(m & ((1u << lane) - 1u));
        if (o == c) start = base, cnt = __popc(m);
        base += __popc(m);
      }
      if (in) list[mine] = make_int2((t - u0) | (d << 5), __float_as_int(delta));
      __syncwarp();
      if (head)
        for (int i = start; i < start + cnt; ++i) {
          const int2 en = list[i];
          const int tu = en.x & 31, dd = en.x >> 5;
          const float dl = __int_as_float(en.y);
          if (side == 0)
            sc[g * 32 + tu] = fmaf(sm.q[g][dd], dl, sc[g * 32 + tu]);
          else
            vcorr[g * HD + dd] = fmaf(sc[g * 32 + tu], dl, vcorr[g * HD + dd]);
        }
      __syncwarp();
    }
  };

  // Chunk token of n-tile `nt_i`, column n, in the key step's order (byte groups of 8P tokens).
  auto key_tok = [&](int u0, int nt_i, int n) { return u0 + (nt_i / P) * 8 * P + P * n + nt_i % P; };
  // This lane's 8 scores (or probabilities) of head g into its warp's sc row, visible to the whole warp.
  auto store_sc = [&](const float (&v)[4][2]) {
    if (head)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int k = 0; k < 2; ++k) sc[g * 32 + key_tok(0, i, 2 * c + k)] = v[i][k];
    __syncwarp();
  };

  // ---------------- compressed chunks ----------------
  for (int ci = 0; ci < n_chunks; ++ci) {
    const long long c0 = c_begin + static_cast<long long>(ci) * kChunk;
    const int nt = static_cast<int>(min(static_cast<long long>(kChunk), c_end - c0));  // a multiple of G
    const int ntiles = nt / G;
    const long long tile0 = c0 / G;
    if (ci + 1 < n_chunks) stage_chunk((ci + 1) & 1, c0 + kChunk);
    cp_async_commit();
    if (R > 0 && tid < ntiles) sm.tlb[tid] = kv.lr_block[static_cast<size_t>(b) * kv.tile_cap + tile0 + tid];
    cp_async_wait<1>();
    __syncthreads();
    const uint8_t* st = dyn + (ci & 1) * SL.bytes;
    const uint8_t* s_kc = st + SL.kc;
    const uint8_t* s_vc = st + SL.vc;
    const uint16_t* s_ks = reinterpret_cast<const uint16_t*>(st + SL.ks);
    const uint16_t* s_kz = reinterpret_cast<const uint16_t*>(st + SL.kz);
    const uint16_t* s_vs = reinterpret_cast<const uint16_t*>(st + SL.vs);
    const uint16_t* s_vz = reinterpret_cast<const uint16_t*>(st + SL.vz);
    const uint16_t* s_ka = reinterpret_cast<const uint16_t*>(st + SL.ka);
    const uint16_t* s_va = reinterpret_cast<const uint16_t*>(st + SL.va);

    // Phase 1 (block): the chunk's key A fragments (q·scale per tile), q·zero, q·B_k.
    for (int i = tid; i < ntiles * KS * 4 * nq; i += kThreads) {
      const int cc = i & 3, hg = (i >> 2) % nq, ks = (i / (4 * nq)) % KS, ti = i / (4 * nq * KS);
      const int d = ks * 16 + 2 * cc;
      const uint16_t* s = s_ks + ti * HD + d;
      const float* qq = sm.q[hg] + d;
      uint4 f;
      split_hl(qq[0] * h2f(s[0]), qq[1] * h2f(s[1]), f.x, f.y);
      split_hl(qq[8] * h2f(s[8]), qq[9] * h2f(s[9]), f.z, f.w);
      fragk[(ti * KS + ks) * 32 + hg * 4 + cc] = f;
    }
    for (int i = warp; i < ntiles * nq; i += kWarps) {
      const int ti = i / nq, h = i - ti * nq;
      float s = 0.f;
      for (int d = lane; d < HD; d += 32) s = fmaf(sm.q[h][d], h2f(s_kz[ti * HD + d]), s);
      s = warp_sum(s);
      if (lane == 0) sm.qz[ti][h] = s;
    }
    if (sparse)  // the staged entries' corrections outlier - dequant - lowrank, all in flight at once
#pragma unroll
      for (int side = 0; side < 2; ++side) {
        const Staged z = staged(side, c0, ntiles);
        const int* toff = sm.soff[side] + (c0 - c_begin) / G;
        const uint16_t* ep = ent(ci & 1, side, 0) + z.shift;
        const uint16_t* ev = ent(ci & 1, side, 1) + z.shift;
#pragma unroll 2
        for (int i = tid; i < z.n; i += kThreads) {
          const int e = z.e0 + i;
          int ti = 0;
          while (ti + 1 < ntiles && e >= toff[ti + 1]) ++ti;
          const int pos = ep[i], lt = pos / HD, d = pos - lt * HD;
          sdelta[side * kMmaStaged + i] = lt < G ? entry_delta(side, st, ti, ti * G + lt, lt, d, h2f(ev[i])) : 0.f;
        }
      }
    if (R > 0)
      for (int i = warp; i < ntiles * nq * R; i += kWarps) {
        const int ti = i / (nq * R), h = (i / R) % nq, r = i % R;
        if (ti > 0 && sm.tlb[ti] == sm.tlb[ti - 1]) continue;  // shares the previous tile's block
        const int lb = sm.tlb[ti];
        float s = NAN;
        if (lb >= 0 && lb < kv.lr_cap) {
          s = 0.f;
          const uint16_t* Bp = kv.k_lr_b + ix.lr_b(b, kvh, lb, r);
          for (int d = lane; d < HD; d += 32) s = fmaf(sm.q[h][d], ldh(Bp + d), s);
          s = warp_sum(s);
        }
        if (lane == 0) sm.qb[ti][h][r] = s;
      }
    __syncthreads();

    // Phase 2 (warp): the unit of 32 tokens u0 .. u0+31.
    const int u0 = warp * 32;
    if (u0 < nt) {
      // Keys: 4 n-tiles of 8 tokens; byte group bg = n-tile / P covers tokens u0 + 8P·bg ...
      float s[4][2];
      {
        float kacc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int k = 0; k < 4; ++k) kacc[i][k] = 0.f;
#pragma unroll
        for (int bg = 0; bg < 4 / P; ++bg) {
          const int ub = u0 + bg * 8 * P;
          if (ub >= nt) break;
          const int ti = ub / G;
          const uint8_t* rows = s_kc + (static_cast<size_t>(ti) * HD + 2 * c) * KROW + (ub - ti * G) / P + g;
          const uint4* fa = fragk + ti * KS * 32 + lane;
#pragma unroll
          for (int ks = 0; ks < KS; ++ks) {
            const uint4 af = fa[ks * 32];
            const uint32_t a[4] = {af.x, af.y, af.z, af.w};
            const uint8_t* r0 = rows + ks * 16 * KROW;
            const uint32_t wlo = pack_u16(r0[0], r0[KROW]), whi = pack_u16(r0[8 * KROW], r0[9 * KROW]);
#pragma unroll
            for (int j = 0; j < P; ++j)
              mma16816(kacc[bg * P + j], a, codes_h2(wlo, MASK << (j * BITS)), codes_h2(whi, MASK << (j * BITS)));
          }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int bg = i / P, j = i % P, ub = u0 + bg * 8 * P, ti = min(ub, nt - 1) / G;
          const float inv = 1.f / static_cast<float>(1 << (j * BITS));
          const float qz = head ? sm.qz[ti][g] : 0.f;
          float lr[4] = {0.f, 0.f, 0.f, 0.f};
          float inv_sigma = 1.f;
          if (R > 0 && ub < nt) {
            int lead = ti;
            while (lead > 0 && sm.tlb[lead - 1] == sm.tlb[ti]) --lead;
            const float qb0 = head && 2 * c < R ? sm.qb[lead][g][2 * c] : 0.f;
            const float qb1 = head && 2 * c + 1 < R ? sm.qb[lead][g][2 * c + 1] : 0.f;
            // Scale q·B into fp16's range by a power of two (undone in fp32 below).
            float mx = fmaxf(fabsf(qb0), fabsf(qb1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            int e = 0;
            if (mx > 16384.f && mx <= 3.0e38f) {
              frexpf(mx, &e);
              e -= 14;
            }
            const float sigma = ldexpf(1.f, -e);
            inv_sigma = ldexpf(1.f, e);
            uint32_t a[4] = {0u, 0u, 0u, 0u};
            split_hl(qb0 * sigma, qb1 * sigma, a[0], a[1]);
            const int t = key_tok(u0, i, g);
            const uint32_t bA = pack_u16(2 * c < R ? s_ka[t * R + 2 * c] : 0u, 2 * c + 1 < R ? s_ka[t * R + 2 * c + 1] : 0u);
            mma16816(lr, a, bA, 0u);
          }
#pragma unroll
          for (int k = 0; k < 2; ++k) {
            const int t = key_tok(u0, i, 2 * c + k);
            const float v = (kacc[i][k] + kacc[i][2 + k]) * inv + qz + (lr[k] + lr[2 + k]) * inv_sigma;
            s[i][k] = t < nt ? v : -INFINITY;
          }
        }
      }
      if (sparse) {
        store_sc(s);
        sparse_side(0, st, u0, nt, ci & 1, c0, ntiles);
        if (head)
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int k = 0; k < 2; ++k) {
              const float v = sc[g * 32 + key_tok(0, i, 2 * c + k)];
              s[i][k] = key_tok(u0, i, 2 * c + k) < nt ? v : -INFINITY;
            }
      }
      softmax(s);

      // Values: k-step v = n-tiles 2v (k 0..7) and 2v+1 (k 8..15); this lane's tokens tk[0..3].
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        int tk[4];
        tk[0] = key_tok(u0, 2 * v, 2 * c), tk[1] = key_tok(u0, 2 * v, 2 * c + 1);
        tk[2] = key_tok(u0, 2 * v + 1, 2 * c), tk[3] = key_tok(u0, 2 * v + 1, 2 * c + 1);
        const float p[4] = {s[2 * v][0], s[2 * v][1], s[2 * v + 1][0], s[2 * v + 1][1]};
        bool ok[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) ok[k] = tk[k] < nt;
        if (!__any_sync(0xffffffffu, ok[0])) break;  // the unit's tail: no token left
        if (R > 0) {  // the k-step's tokens share one tile, hence one low-rank block
          const int lb = sm.tlb[min(tk[0], nt - 1) / G];
          if (!has_u || lb != cur_lb) {
            flush_u();
            cur_lb = lb;
            has_u = true;
          }
        }
        uint32_t ap[4];
        split_hl(p[0], p[1], ap[0], ap[1]);
        split_hl(p[2], p[3], ap[2], ap[3]);
        int gi_prev = -1;
        uint32_t av[4] = {0u, 0u, 0u, 0u};
#pragma unroll
        for (int i = 0; i < NI; ++i) {
          const int gi = 8 * P * i / VG;
          if (gi != gi_prev) {
            float ps[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) ps[k] = ok[k] ? p[k] * h2f(s_vs[tk[k] * ng + gi]) : 0.f;
            split_hl(ps[0], ps[1], av[0], av[1]);
            split_hl(ps[2], ps[3], av[2], av[3]);
            gi_prev = gi;
          }
          const uint8_t* vb = s_vc + 8 * i + g;
          const uint32_t wlo = pack_u16(vb[tk[0] * VROW], vb[tk[1] * VROW]), whi = pack_u16(vb[tk[2] * VROW], vb[tk[3] * VROW]);
#pragma unroll
          for (int j = 0; j < P; ++j) mma16816(oacc[i][j], av, codes_h2(wlo >> (j * BITS), MASK), codes_h2(whi >> (j * BITS), MASK));
        }
        // Zero points (n = value group) and the low-rank u (n = r), both weighted by p.
#pragma unroll
        for (int zt = 0; zt < 2; ++zt) {
          const int gi = zt * 8 + g;
          if (zt * 8 >= ng) break;
          uint32_t zb[2];
#pragma unroll
          for (int k = 0; k < 2; ++k)
            zb[k] = gi < ng ? pack_u16(ok[2 * k] ? s_vz[tk[2 * k] * ng + gi] : 0u, ok[2 * k + 1] ? s_vz[tk[2 * k + 1] * ng + gi] : 0u) : 0u;
          mma16816(zacc[zt], ap, zb[0], zb[1]);
        }
        if (R > 0) {
          uint32_t ub[2];
#pragma unroll
          for (int k = 0; k < 2; ++k)
            ub[k] = g < R ? pack_u16(ok[2 * k] ? s_va[tk[2 * k] * R + g] : 0u, ok[2 * k + 1] ? s_va[tk[2 * k + 1] * R + g] : 0u) : 0u;
          mma16816(uacc, ap, ub[0], ub[1]);
        }
      }
      if (sparse) {
        store_sc(s);
        sparse_side(1, st, u0, nt, ci & 1, c0, ntiles);
      }
    }
    __syncthreads();  // the stage buffer and the fragments are rewritten for chunk ci + 2 / ci + 1
  }
  flush_u();

  // ---------------- the fp16 buffer ----------------
  if (has_buf) {
    uint16_t* s_kb = reinterpret_cast<uint16_t*>(dyn);
    uint16_t* s_vb = s_kb + kBufPiece * HD;
    for (long long i0 = 0; i0 < len.buf; i0 += kBufPiece) {
      const int n = static_cast<int>(min(static_cast<long long>(kBufPiece), len.buf - i0));
      copy_async(s_kb, kv.k_buf + ix.buf(b, kvh, i0), n * HD * 2, kThreads);
      copy_async(s_vb, kv.v_buf + ix.buf(b, kvh, i0), n * HD * 2, kThreads);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      const int u0 = warp * 32;
      if (u0 < n) {
        float s[4][2];
        float kacc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int k = 0; k < 4; ++k) kacc[i][k] = 0.f;
#pragma unroll 2
        for (int ks = 0; ks < KS; ++ks) {
          const uint4 af = sm.fragq[ks][lane];
          const uint32_t a[4] = {af.x, af.y, af.z, af.w};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int t = u0 + 8 * i + g;
            const uint32_t* kr = reinterpret_cast<const uint32_t*>(s_kb + t * HD + ks * 16 + 2 * c);
            mma16816(kacc[i], a, t < n ? kr[0] : 0u, t < n ? kr[4] : 0u);
          }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int k = 0; k < 2; ++k) s[i][k] = u0 + 8 * i + 2 * c + k < n ? kacc[i][k] + kacc[i][2 + k] : -INFINITY;
        softmax(s);
#pragma unroll
        for (int v = 0; v < 2; ++v) {
          const int tk[4] = {u0 + 16 * v + 2 * c, u0 + 16 * v + 2 * c + 1, u0 + 16 * v + 8 + 2 * c, u0 + 16 * v + 9 + 2 * c};
          uint32_t ap[4];
          split_hl(s[2 * v][0], s[2 * v][1], ap[0], ap[1]);
          split_hl(s[2 * v + 1][0], s[2 * v + 1][1], ap[2], ap[3]);
#pragma unroll
          for (int i = 0; i < NI; ++i)
#pragma unroll
            for (int j = 0; j < P; ++j) {
              const int ch = 8 * P * i + P * g + j;
              uint32_t vb[2];
#pragma unroll
              for (int k = 0; k < 2; ++k)
                vb[k] = pack_u16(tk[2 * k] < n ? s_vb[tk[2 * k] * HD + ch] : 0u, tk[2 * k + 1] < n ? s_vb[tk[2 * k + 1] * HD + ch] : 0u);
              mma16816(oacc[i][j], ap, vb[0], vb[1]);
            }
        }
      }
      __syncthreads();
    }
  }

  // ---------------- merge the warps, write ----------------
  cp_async_wait<0>();
  float(*red)[GT][HD] = reinterpret_cast<float(*)[GT][HD]>(dyn);  // [kWarps][GT][HD], over the stage buffers
  __syncthreads();
  if (head) {
#pragma unroll
    for (int zt = 0; zt < 2; ++zt)
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int gi = zt * 8 + 2 * c + k;
        if (gi < ng) sm.zs[warp][g][gi] = zacc[zt][k] + zacc[zt][2 + k];
      }
    if (c == 0) sm.wm[warp][g] = m_run, sm.wl[warp][g] = l_run;
  }
  __syncwarp();
  if (head)
#pragma unroll
    for (int i = 0; i < NI; ++i)
#pragma unroll
      for (int j = 0; j < P; ++j)
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const int d = 8 * P * i + P * (2 * c + k) + j;
          float o = oacc[i][j][k] + oacc[i][j][2 + k] + sm.zs[warp][g][d / VG];
          if (sparse) o += vcorr[g * HD + d];
          red[warp][g][d] = o;
        }
  __syncthreads();
  for (int i = tid; i < nq * HD; i += kThreads) {
    const int h = i / HD, d = i - h * HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm.wm[w][h]);
    float A = 0.f, L = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float wm = sm.wm[w][h];
      if (wm == -INFINITY) continue;  // a warp that saw no token
      const float f = exp2f(wm - M);
      A = fmaf(f, red[w][h][d], A);
      L = fmaf(f, sm.wl[w][h], L);
    }
    const size_t row = static_cast<size_t>(b) * nh + h0 + h;
    if (n_splits == 1) {
      out[row * HD + d] = from_f<T>(A / L);
    } else {
      ws_o[(row * n_splits + split) * HD + d] = A / L;
      if (d == 0) ws_lse[row * n_splits + split] = M + __log2f(L);
    }
  }
}
