// Decode attention straight from the GEAR / KIVI compressed layout (CompressedKV, kernels.h).
//
// Split kernel: grid (n_splits, nkv * n_sub, B), 128 threads. A block takes one kv head of one row, the GT
// query heads of its group that it serves, and one split of the compressed tokens (a multiple of the
// 128-token chunk); the split that holds the row's end also takes the fp16 buffer. The compressed data
// of a chunk (key codes + scales / zeros of its tiles, value codes + scales / zeros of its tokens, their
// A rows) is contiguous in the layout: it is staged into shared memory with 16-byte cp.async copies,
// double-buffered (chunk n+1 is in flight while chunk n computes). Per chunk of 128 tokens (a whole
// number of tiles):
//  A. q·B_r for each tile's low-rank block (hd/8 threads per dot product, all dots in one pass) -> shared;
//  B. key scores: thread (oct o = tid/8, part p = tid%8) owns 8 tokens and the channels d = p + 8c; per
//     channel it reads the 8 codes (BITS bytes of that channel's tile row), the channel's scale / zero,
//     and accumulates (q_d*scale)*code and q_d*zero for GT heads; a reduce-scatter over the 8 parts (3
//     shuffles) leaves token 8o+p's score in part p;
//  C1. one thread per sparse entry of the chunk's tiles (K and V; the first kStagedEntries of each side):
//     its correction outlier - dequant - lowrank into shared memory, and the bounds of each token's run of
//     entries (entries are sorted by position within a tile);
//  C2. one thread per token adds (q·B)·A_t and q_d * correction for its key entries;
//  D. online softmax (base 2, float32) per head over the chunk; sum_t p_t A_v[t] per tile (a warp each);
//  E. values: thread (token lane tl, channel oct oc) accumulates p*scale*code and p*zero for its 8
//     channels (2-bit codes biased: Oct::decode_biased), the tile's value corrections, and
//     (sum_t p_t A_t)·B_r for the tiles it is assigned.
// (Tried and measured slower on the H100, so not kept: low-rank blocks carried across chunks, q·B and
// sum p A kept per block in shared memory — GEAR-L B 16 4k 245 -> 268 us; docs/kernels.md, "v6".)
// The buffer runs B and E on the fp16 K/V, staged into shared memory in 64-token pieces. At the end the token lanes merge
// (shuffles + shared memory) and the block writes o / l and the log2-sum-exp to the workspace (or the
// output when there is one split). Combine kernel: grid (nh, B), hd threads, as in decode_attention.cu.
// With outliers, by default (AttentionKernel::OutlierPasses), steps C1 and the sparse parts of C2 and E do not
// run: a key pass before this kernel and a value pass after it apply the outliers (gear_outlier_passes.cuh),
// and this kernel only adds the key pass's score bias in C2 and writes the scores back for the value pass.
// (v7's staged GQA-4 tiles apply the outliers inside instead where the layout keeps their corrections:
// compressed_attention_outliers_inside.)
#include "kernels/fixed_sum.cuh"
#include "kernels/gear_attention_lean.cuh"
#include "kernels/gear_layout.cuh"
#include "kernels/mma_fragments.cuh"
#include "kernels/split_combine.cuh"
#include "kernels/split_rule.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <type_traits>
#include <vector>

namespace gear::kernels {
namespace {
using namespace detail;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = split_rule::kChunk;  // tokens per chunk (one per thread in step C)
constexpr int kMaxTilesChunk = kChunk / 16;
constexpr int kMaxRank = 8;
constexpr int kMaxSplit = split_rule::kMaxSplit;  // compressed tokens per split, at most
constexpr int kBlocksPerSm = split_rule::kBlocksPerSm;
constexpr int kStagedEntries = 512;  // sparse entries per side and chunk whose corrections are precomputed
constexpr float kLog2e = 1.4426950408889634f;

static_assert(kChunk == kThreads, "step C gives one token to each thread");

// Byte offsets of one stage buffer (one chunk's compressed data) in dynamic shared memory.
struct StageLayout {
  int kc, vc, ks, kz, vs, vz, ka, va, bytes;
};
__host__ __device__ inline StageLayout stage_layout(int hd, int bits, int G, int VG, int R) {
  auto up16 = [](int x) { return (x + 15) & ~15; };
  StageLayout L{};
  int o = 0;
  L.kc = o, o += up16(kChunk * hd * bits / 8);
  L.vc = o, o += up16(kChunk * hd * bits / 8);
  L.ks = o, o += up16(kChunk / G * hd * 2);
  L.kz = o, o += up16(kChunk / G * hd * 2);
  L.vs = o, o += up16(kChunk * (hd / VG) * 2);
  L.vz = o, o += up16(kChunk * (hd / VG) * 2);
  L.ka = o, o += up16(kChunk * R * 2);
  L.va = o, o += up16(kChunk * R * 2);
  L.bytes = o;
  return L;
}
// Dynamic shared memory of a launch: two stage buffers, which the final merge of the warps reuses.
constexpr int kBufPiece = 32;  // buffered tokens staged per step (K and V, fp16): 16 KB at hd 128, so 5 blocks fit an SM
inline size_t dynamic_smem(int hd, int bits, int G, int VG, int R, int gt) {
  return std::max({static_cast<size_t>(2 * stage_layout(hd, bits, G, VG, R).bytes), static_cast<size_t>(kWarps) * gt * hd * 4,
                   static_cast<size_t>(2 * kBufPiece * hd * 2)});
}


template <int GT, int HD> struct Smem {
  float q[GT][HD];                           // queries, pre-scaled by scale * log2(e)
  float p[GT][kChunk];                       // scores, then probabilities
  float qb[kMaxTilesChunk][GT][kMaxRank];    // q·B_r of each tile's low-rank block
  float u[kMaxTilesChunk][GT][kMaxRank];     // sum_t p_t A_v[t][r] of each tile
  int kr[kChunk][2];                         // each token's key entries [first, last)
  int vr[kChunk][2];                         // each token's value entries [first, last)
  unsigned vmask[kChunk];                    // each token's channel octs that have value entries (bit oc)
  int toff[2][kMaxTilesChunk + 1];           // the chunk's tile offsets into the sparse pools (K, V)
  int tlb[kMaxTilesChunk];                   // the chunk's tiles' low-rank blocks
  uint16_t spos[2][kStagedEntries];          // staged entries: position, value,
  uint16_t sval[2][kStagedEntries];
  uint8_t sd[2][kStagedEntries];             // channel,
  float sdel[2][kStagedEntries];             // correction (outlier - dequant - lowrank)
  float m[GT], l[GT], corr[GT];
};

// Blocks per SM asked of the register allocator: 5 for GT <= 2 (~100 registers; with 5 blocks the shared
// memory is the next limit), else what GT's accumulators allow anyway (GT 4: 3, GT 8: 2).
template <int GT> constexpr int split_min_blocks() { return GT <= 2 ? 5 : GT == 4 ? 3 : 2; }

template <typename T, int HD, int GT, int BITS>
__global__ void __launch_bounds__(kThreads, split_min_blocks<GT>())
    cattn_split_kernel(const T* __restrict__ q, CompressedKV kv, T* __restrict__ out, float* __restrict__ ws_o,
                       float* __restrict__ ws_lse, int nh, int group, int n_sub, int split_tokens, int n_splits, long long max_comp,
                       float scale_log2, int g_shift, int vg_shift, float* __restrict__ sc, long long sc_stride) {
  constexpr int OCTS = HD / 8;          // channel octs of a head
  constexpr int TL = kThreads / OCTS;   // token lanes in the value step
  constexpr int VROW = HD * BITS / 8;   // bytes of one token's value codes
  __shared__ __align__(16) Smem<GT, HD> sm;
  extern __shared__ __align__(16) uint8_t dyn[];
  const SplitBlock blk = begin_split_block<GT>(group, n_sub);
  const int split = blk.split, kvh = blk.kvh, b = blk.b, h0 = blk.h0, nq = blk.nq;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = kv.group, R = kv.rank, VG = kv.v_group;
  // G = 2^g_shift and VG = 2^vg_shift (compressed_kv_problem: G in 16..128, VG a multiple of 8 dividing hd 64 /
  // 128): shifts by kernel parameters, not runtime divisions, which the compiler rematerialises inside the token
  // loops to save registers (~26 instructions each; Nsight Compute put 14 % of kivi-2's instructions on one).
  const int ng = HD >> vg_shift;
  const int KROW = G * BITS / 8;        // bytes of one channel of one tile
  const bool sparse = kv.sparse_cap > 0;
  const LayoutIx ix(kv);
  const size_t bh = ix.bh(b, kvh);
  const StageLayout SL = stage_layout(HD, BITS, G, VG, R);

  const RowLens len = row_lens(kv, b, max_comp);
  // With outlier passes (sc != nullptr) the outputs always go through the workspace: the value pass adds to them.
  const bool direct = n_splits == 1 && sc == nullptr;
  if (!len.ok) {
    if (direct)
      for (int i = tid; i < nq * HD; i += kThreads) out[(static_cast<size_t>(b) * nh + h0) * HD + i] = from_f<T>(NAN);
    return;  // with splits, the combine kernel writes the NaN row
  }
  if (split >= live_splits(len, split_tokens)) return;
  const SplitSpan span = split_span(len, split, split_tokens);  // (not a structured binding: lambdas capture these)
  const long long c_begin = span.c_begin, c_end = span.c_end;
  const bool has_buf = span.has_buf;
  const int n_chunks = c_end > c_begin ? static_cast<int>(ceil_div(c_end - c_begin, kChunk)) : 0;

  // Issues the copies of chunk c0's compressed data into stage buffer st (the caller commits).
  auto stage_chunk = [&](uint8_t* st, long long c0) {
    const int nt = static_cast<int>(min(static_cast<long long>(kChunk), c_end - c0));
    const long long tile0 = c0 >> g_shift;
    const int ntiles = nt >> g_shift;
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
  };
  if (n_chunks > 0) stage_chunk(dyn, c_begin);
  cp_async_commit();

  for (int i = tid; i < GT * HD; i += kThreads) {
    const int h = i / HD;
    sm.q[h][i - h * HD] = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * HD + i]) * scale_log2 : 0.f;
  }
  if (tid < GT) {
    sm.m[tid] = -INFINITY;
    sm.l[tid] = 0.f;
  }

  // Value-step accumulators: token lane tl, channels 8*oc .. 8*oc + 7.
  const int oc = tid % OCTS, tl = tid / OCTS;
  const int v_gi = (oc * 8) >> vg_shift;  // the value scale group of this thread's channels
  // 2-bit codes are decoded biased (Oct::decode_biased): over the compressed tokens acc[h][j] holds
  // sum p s f_j + eps(j) * (the low-rank and outlier terms) and vsum[h] sum p s, so the value sum is
  // (acc - vsum) / eps(j), which acc becomes before the fp16 buffer adds to it.
  constexpr bool biased = BITS == 2;
  float acc[GT][8], zacc[GT], vsum[GT];
#pragma unroll
  for (int h = 0; h < GT; ++h) {
    zacc[h] = 0.f;
    vsum[h] = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[h][j] = 0.f;
  }
  // Key-step roles.
  const int ko = tid >> 3, kp = tid & 7;
  __syncthreads();

  // Reduce-scatter of part[h][0..8) over the 8 lanes of an oct: part p ends with token p's sum in part[h][0].
  auto reduce_scatter = [&](float (&part)[GT][8]) {
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      const bool b2 = kp & 4, b1 = kp & 2, b0 = kp & 1;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float send = b2 ? part[h][j] : part[h][j + 4];
        const float keep = b2 ? part[h][j + 4] : part[h][j];
        part[h][j] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float send = b1 ? part[h][j] : part[h][j + 2];
        const float keep = b1 ? part[h][j + 2] : part[h][j];
        part[h][j] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
      }
      const float send = b0 ? part[h][0] : part[h][1];
      const float keep = b0 ? part[h][1] : part[h][0];
      part[h][0] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
    }
  };

  // Online softmax over the chunk's nt scores (sm.p); leaves probabilities in sm.p and the factor that
  // rescales earlier accumulators in sm.corr.
  auto softmax_step = [&](int nt) {
    for (int h = warp; h < GT; h += kWarps) {
      float mx = -INFINITY;
      for (int t = lane; t < nt; t += 32) mx = fmaxf(mx, sm.p[h][t]);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_old = sm.m[h], m_new = fmaxf(m_old, mx);
      const bool none = m_new == -INFINITY;
      float sum = 0.f;
      for (int t = lane; t < kChunk; t += 32) {
        const float p = (t < nt && !none) ? exp2f(sm.p[h][t] - m_new) : 0.f;
        sm.p[h][t] = p;
        sum += p;
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      __syncwarp();
      if (lane == 0) {
        const float corr = none || m_old == -INFINITY ? (none ? 1.f : 0.f) : exp2f(m_old - m_new);
        sm.corr[h] = corr;
        sm.l[h] = sm.l[h] * corr + sum;
        sm.m[h] = m_new;
      }
    }
  };

  auto rescale = [&]() {
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      const float c = sm.corr[h];
      zacc[h] *= c;
      vsum[h] *= c;
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[h][j] *= c;
    }
  };

  // ---------------- compressed chunks ----------------
  for (int ci = 0; ci < n_chunks; ++ci) {
    const long long c0 = c_begin + static_cast<long long>(ci) * kChunk;
    const int nt = static_cast<int>(min(static_cast<long long>(kChunk), c_end - c0));  // a multiple of G
    const int ntiles = nt >> g_shift;
    const long long tile0 = c0 >> g_shift;
    if (ci + 1 < n_chunks) stage_chunk(dyn + ((ci + 1) & 1) * SL.bytes, c0 + kChunk);
    cp_async_commit();
    if (R > 0 && tid < ntiles) sm.tlb[tid] = kv.lr_block[static_cast<size_t>(b) * kv.tile_cap + tile0 + tid];
    cp_async_wait<1>();  // this chunk's copies (all groups but the newest) have landed
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

    // A. q·B_r for each tile (its low-rank block): hd/8 threads per dot, 8 channels each, one pass for up to
    // kThreads*8/hd dots.
    if (R > 0) {
      constexpr int LPD = HD / 8, DPP = kThreads / LPD;
      const int ndots = ntiles * GT * R, sub8 = tid % LPD, slot = tid / LPD;
      for (int d0 = 0; d0 < ndots; d0 += DPP) {
        const int di = d0 + slot;
        const int ti = di / (GT * R), h = (di / R) % GT, r = di % R;
        const int lb = di < ndots ? sm.tlb[ti] : 0;
        const bool ok = lb >= 0 && lb < kv.lr_cap;
        float dot = 0.f;
        if (di < ndots && ok) {
          float bv[8];
          unpack<__half>(ldg16(kv.k_lr_b + ix.lr_b(b, kvh, lb, r) + sub8 * 8), bv);
#pragma unroll
          for (int j = 0; j < 8; ++j) dot = fmaf(sm.q[h][sub8 * 8 + j], bv[j], dot);
        }
#pragma unroll
        for (int off = LPD / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if (di < ndots && sub8 == 0) sm.qb[ti][h][r] = ok ? dot : NAN;
      }
    }

    // B. key scores from the codes (2-bit: biased codes, see Oct::decode_biased; qsum keeps sum_d q_d scale_d).
    {
      float part[GT][8], qz[GT], qsum[GT];
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        qz[h] = 0.f;
        qsum[h] = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) part[h][j] = 0.f;
      }
      const bool valid = ko * 8 < nt;
      if (valid) {
        const int ti = (ko * 8) >> g_shift, lt0 = ko * 8 - (ti << g_shift);
        const uint8_t* codes = s_kc + static_cast<size_t>(ti) * HD * KROW + lt0 * BITS / 8;
        const uint16_t* sc = s_ks + ti * HD;
        const uint16_t* ze = s_kz + ti * HD;
#pragma unroll 4
        for (int c = 0; c < OCTS; ++c) {
          const int d = kp + 8 * c;
          Oct<BITS> w;
          w.load_plain(codes + d * KROW);
          const float s = h2f(sc[d]), z = h2f(ze[d]);
          float cf[8];
          if constexpr (biased) w.decode_biased(cf);
          else w.decode(cf);
#pragma unroll
          for (int h = 0; h < GT; ++h) {
            const float qd = sm.q[h][d];
            const float qs = qd * s;
            qz[h] = fmaf(qd, z, qz[h]);
            if constexpr (biased) qsum[h] += qs;
#pragma unroll
            for (int j = 0; j < 8; ++j) part[h][j] = fmaf(qs, cf[j], part[h][j]);
          }
        }
      }
      // Token j's part: sum q s c + sum q z; biased, (sum q s f - sum q s) / eps(j) + sum q z, whose division by
      // eps(j) waits until the reduce-scatter has left token kp's sum in part kp.
#pragma unroll
      for (int h = 0; h < GT; ++h)
#pragma unroll
        for (int j = 0; j < 8; ++j)
          part[h][j] = biased ? fmaf(codes::biased_eps(j), qz[h], part[h][j] - qsum[h]) : part[h][j] + qz[h];
      reduce_scatter(part);
      const float unbias = biased ? codes::biased_inv_eps(kp) : 1.f;
#pragma unroll
      for (int h = 0; h < GT; ++h) sm.p[h][ko * 8 + kp] = valid ? part[h][0] * unbias : -INFINITY;
    }
    if (sparse) {
      sm.kr[tid][0] = sm.kr[tid][1] = sm.vr[tid][0] = sm.vr[tid][1] = 0;
      sm.vmask[tid] = 0u;
      if (tid <= ntiles) {
        const size_t offb = ix.sp_off(b, kvh) + static_cast<size_t>(tile0 + tid);
        sm.toff[0][tid] = static_cast<int>(clamp_to_pool(kv.k_sp_off[offb], kv.sparse_cap));
        sm.toff[1][tid] = static_cast<int>(clamp_to_pool(kv.v_sp_off[offb], kv.sparse_cap));
      }
    }
    __syncthreads();

    // C1. The chunk's sparse entries, in parallel: stage the first kStagedEntries of each side, then one
    // thread per entry marks where its token's run of entries starts and ends and precomputes the staged
    // ones' corrections outlier - dequant - lowrank (entries past the staged ones are corrected from
    // global memory in C2 / E).
    if (sparse) {
#pragma unroll
      for (int side = 0; side < 2; ++side) {
        const int e0 = sm.toff[side][0], n = min(sm.toff[side][ntiles] - e0, kStagedEntries);
        const uint16_t* pos = (side ? kv.v_sp_pos : kv.k_sp_pos) + ix.sp(b, kvh) + e0;
        const uint16_t* val = (side ? kv.v_sp_val : kv.k_sp_val) + ix.sp(b, kvh) + e0;
#pragma unroll 4
        for (int i = tid; i < n; i += kThreads) {
          sm.spos[side][i] = __ldg(pos + i);
          sm.sval[side][i] = __ldg(val + i);
        }
      }
      __syncthreads();
#pragma unroll
      for (int side = 0; side < 2; ++side) {
        const int* toff = sm.toff[side];
        const int e0 = toff[0];
        const uint16_t* gpos = (side ? kv.v_sp_pos : kv.k_sp_pos) + ix.sp(b, kvh);
        auto pos_at = [&](int e) { return e - e0 < kStagedEntries ? static_cast<int>(sm.spos[side][e - e0]) : static_cast<int>(__ldg(gpos + e)); };
        int(*rg)[2] = side ? sm.vr : sm.kr;
#pragma unroll 2
        for (int e = e0 + tid; e < toff[ntiles]; e += kThreads) {
          int ti = 0;
          while (ti + 1 < ntiles && toff[ti + 1] <= e) ++ti;
          const int p = pos_at(e), lt = p / HD;
          if (lt >= G) continue;  // not a position of a tile (a malformed layout): ignored
          const bool first = e == toff[ti] || pos_at(e - 1) / HD != lt;
          const bool last = e + 1 >= toff[ti + 1] || pos_at(e + 1) / HD != lt;
          const int t = ti * G + lt, d = p - lt * HD;
          if (first) rg[t][0] = e;
          if (last) rg[t][1] = e + 1;
          // Step E's threads own 8 channels each: the mask lets the ~85 % of them with no entry in a token skip its run.
          if (side == 1) atomicOr(&sm.vmask[t], 1u << (d >> 3));
          const int i = e - e0;
          if (i >= kStagedEntries) continue;
          float deq;
          if (side == 0) {
            deq = fmaf(code_f(code_at_plain(s_kc + (static_cast<size_t>(ti) * HD + d) * KROW, lt, BITS)), h2f(s_ks[ti * HD + d]),
                       h2f(s_kz[ti * HD + d]));
          } else {
            const int gi = t * ng + (d >> vg_shift);
            deq = fmaf(code_f(code_at_plain(s_vc + t * VROW, d, BITS)), h2f(s_vs[gi]), h2f(s_vz[gi]));
          }
          float lr = 0.f;
          if (R > 0) {
            const int lb = sm.tlb[ti];
            if (lb < 0 || lb >= kv.lr_cap) {
              lr = NAN;
            } else {
              const uint16_t* Bp = (side ? kv.v_lr_b : kv.k_lr_b) + ix.lr_b(b, kvh, lb, 0) + d;
              const uint16_t* Ap = (side ? s_va : s_ka) + t * R;
#pragma unroll
              for (int r = 0; r < kMaxRank; ++r)
                if (r < R) lr = fmaf(h2f(Ap[r]), ldh(Bp + r * HD), lr);
            }
          }
          sm.sd[side][i] = static_cast<uint8_t>(d);
          sm.sdel[side][i] = h2f(sm.sval[side][i]) - deq - lr;
        }
      }
      __syncthreads();
    }

    // C2. per token: low rank and the key outliers' corrections (in the kernel, or the key pass's score bias
    // in sc, to which the token's final score is written back for the value pass).
    if ((sparse || R > 0 || sc) && tid < nt) {
      const int t = tid, ti = t >> g_shift, lt = t - (ti << g_shift);
      float a[kMaxRank];
#pragma unroll
      for (int r = 0; r < kMaxRank; ++r) a[r] = r < R ? h2f(s_ka[t * R + r]) : 0.f;
      const long long lb = R > 0 ? sm.tlb[ti] : 0;
      float corr_s[GT];
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        float s = 0.f;
#pragma unroll
        for (int r = 0; r < kMaxRank; ++r)
          if (r < R) s = fmaf(sm.qb[ti][h][r], a[r], s);
        corr_s[h] = s;
      }
      if (sparse) {
        {  // keys
          const uint16_t* pos = kv.k_sp_pos + ix.sp(b, kvh);
          const int lo = sm.kr[t][0], hi = sm.kr[t][1];
          for (int e = lo; e < hi; ++e) {
            const int i = e - sm.toff[0][0];
            if (i < kStagedEntries) {
              const int d = sm.sd[0][i];
              const float delta = sm.sdel[0][i];
#pragma unroll
              for (int h = 0; h < GT; ++h) corr_s[h] = fmaf(sm.q[h][d], delta, corr_s[h]);
              continue;
            }
            const int d = static_cast<int>(__ldg(pos + e)) - lt * HD;
            const float o = ldh(kv.k_sp_val + ix.sp(b, kvh) + e);
            const float deq = fmaf(code_f(code_at_plain(s_kc + (static_cast<size_t>(ti) * HD + d) * KROW, lt, BITS)),
                                   h2f(s_ks[ti * HD + d]), h2f(s_kz[ti * HD + d]));
            float lr = 0.f;
            if (R > 0 && (lb < 0 || lb >= kv.lr_cap)) lr = NAN;
            else
#pragma unroll
              for (int r = 0; r < kMaxRank; ++r)
                if (r < R) lr = fmaf(a[r], ldh(kv.k_lr_b + ix.lr_b(b, kvh, lb, r) + d), lr);
            const float delta = o - deq - lr;
#pragma unroll
            for (int h = 0; h < GT; ++h) corr_s[h] = fmaf(sm.q[h][d], delta, corr_s[h]);
          }
        }
      }
      float* sct = sc ? sc + (static_cast<size_t>(b) * nh + h0) * sc_stride + c0 + t : nullptr;
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        if (sct && h < nq) corr_s[h] += sct[h * sc_stride];
        sm.p[h][t] += corr_s[h];
        if (sct && h < nq) sct[h * sc_stride] = sm.p[h][t];
      }
    }
    if (sparse || R > 0 || sc) __syncthreads();

    // D. softmax; then sum_t p_t A_v[t][r] per tile.
    softmax_step(nt);
    __syncthreads();
    if (R > 0) {
      // Dot i = (ti * GT + h) * R + r goes to warp i % kWarps; nested loops instead of dividing i by the
      // runtime R (Nsight Compute put ~5 % of GEAR-L's instructions on those divisions).
      int i = 0;
      for (int ti = 0; ti < ntiles; ++ti)
#pragma unroll
        for (int h = 0; h < GT; ++h)
          for (int r = 0; r < R; ++r, ++i) {
            if ((i & (kWarps - 1)) != warp) continue;
            float s = 0.f;
            for (int t = (ti << g_shift) + lane; t < ((ti + 1) << g_shift); t += 32) s = fmaf(sm.p[h][t], h2f(s_va[t * R + r]), s);
            s = warp_sum(s);
            if (lane == 0) sm.u[ti][h][r] = s;
          }
      __syncthreads();
    }

    // E. values.
    rescale();
    for (int t = tl; t < nt; t += TL) {
      Oct<BITS> w;
      w.load_plain(s_vc + t * VROW + oc * BITS);
      const int gi = t * ng + v_gi;
      const float s = h2f(s_vs[gi]), z = h2f(s_vz[gi]);
      float cf[8];
      if constexpr (biased) w.decode_biased(cf);
      else w.decode(cf);
      float p[GT];
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        p[h] = sm.p[h][t];
        const float ps = p[h] * s;
        zacc[h] = fmaf(p[h], z, zacc[h]);
        if constexpr (biased) vsum[h] += ps;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[h][j] = fmaf(ps, cf[j], acc[h][j]);
      }
      if (sparse && ((sm.vmask[t] >> oc) & 1u)) {
        // An exact value outlier at channel oc*8+jj: add p·(kept − dequantised) to that channel only
        // (scaled by the biased decode's per-channel eps, which the final rescale undoes).
        auto add_outlier = [&](int jj, float delta) {
#pragma unroll
          for (int h = 0; h < GT; ++h)
#pragma unroll
            for (int j = 0; j < 8; ++j)
              if (j == jj) acc[h][j] = fmaf(p[h], biased ? delta * codes::biased_eps(j) : delta, acc[h][j]);
        };
        const int lo = sm.vr[t][0], hi = sm.vr[t][1];
        for (int e = lo; e < hi; ++e) {
          const int i = e - sm.toff[1][0];
          if (i < kStagedEntries) {
            const int d = sm.sd[1][i];
            if ((d >> 3) != oc) continue;
            const int jj = d & 7;
            const float delta = sm.sdel[1][i];
            add_outlier(jj, delta);
            continue;
          }
          const int d = static_cast<int>(__ldg(kv.v_sp_pos + ix.sp(b, kvh) + e)) - (t & (G - 1)) * HD;
          if ((d >> 3) != oc) continue;
          const int jj = d & 7;
          const float deq = fmaf(code_f(code_at_plain(s_vc + t * VROW, d, BITS)), s, z);
          float lr = 0.f;
          if (R > 0) {
            const long long lb = sm.tlb[t >> g_shift];
            if (lb < 0 || lb >= kv.lr_cap) lr = NAN;
            else
#pragma unroll
              for (int r = 0; r < kMaxRank; ++r)
                if (r < R) lr = fmaf(h2f(s_va[t * R + r]), ldh(kv.v_lr_b + ix.lr_b(b, kvh, lb, r) + d), lr);
          }
          const float delta = ldh(kv.v_sp_val + ix.sp(b, kvh) + e) - deq - lr;
          add_outlier(jj, delta);
        }
      }
    }
    if (R > 0)
      for (int ti = tl; ti < ntiles; ti += TL) {
        const int lb = sm.tlb[ti];
        const bool ok = lb >= 0 && lb < kv.lr_cap;
        for (int r0 = 0; r0 < R; r0 += 4) {
          uint4 raw[4];  // four rows of B in flight at once
#pragma unroll
          for (int j = 0; j < 4; ++j)
            if (ok && r0 + j < R) raw[j] = ldg16(kv.v_lr_b + ix.lr_b(b, kvh, lb, r0 + j) + oc * 8);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if (r0 + j >= R) break;
            float bv[8];
            if (ok) {
              unpack<__half>(raw[j], bv);
              if constexpr (biased)
#pragma unroll
                for (int k = 0; k < 8; ++k) bv[k] *= codes::biased_eps(k);  // a power of two: exact
            } else {
#pragma unroll
              for (int k = 0; k < 8; ++k) bv[k] = NAN;
            }
#pragma unroll
            for (int h = 0; h < GT; ++h) {
              const float u = sm.u[ti][h][r0 + j];
#pragma unroll
              for (int k = 0; k < 8; ++k) acc[h][k] = fmaf(u, bv[k], acc[h][k]);
            }
          }
        }
      }
    __syncthreads();  // the stage buffer is rewritten by the copies of chunk ci + 2
  }

  if constexpr (biased)
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[h][j] = (acc[h][j] - vsum[h]) * codes::biased_inv_eps(j);

  // ---------------- the fp16 buffer ----------------
  // Staged in pieces of kBufPiece tokens with 16-byte cp.async copies (one round of memory latency per
  // piece instead of one per dependent scalar load).
  if (has_buf) {
    uint16_t* s_kb = reinterpret_cast<uint16_t*>(dyn);
    uint16_t* s_vb = s_kb + kBufPiece * HD;
    for (long long i0 = 0; i0 < len.buf; i0 += kBufPiece) {
      const int nt = static_cast<int>(min(static_cast<long long>(kBufPiece), len.buf - i0));
      copy_async(s_kb, kv.k_buf + ix.buf(b, kvh, i0), nt * HD * 2, kThreads);
      copy_async(s_vb, kv.v_buf + ix.buf(b, kvh, i0), nt * HD * 2, kThreads);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      {
        float part[GT][8];
#pragma unroll
        for (int h = 0; h < GT; ++h)
#pragma unroll
          for (int j = 0; j < 8; ++j) part[h][j] = 0.f;
        if (ko * 8 < nt) {
          const uint16_t* kb = s_kb + ko * 8 * HD;
#pragma unroll 2
          for (int c = 0; c < OCTS; ++c) {
            const int d = kp + 8 * c;
            float kf[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) kf[j] = ko * 8 + j < nt ? h2f(kb[j * HD + d]) : 0.f;
#pragma unroll
            for (int h = 0; h < GT; ++h) {
              const float qd = sm.q[h][d];
#pragma unroll
              for (int j = 0; j < 8; ++j) part[h][j] = fmaf(qd, kf[j], part[h][j]);
            }
          }
        }
        reduce_scatter(part);
        const bool valid = ko * 8 + kp < nt;
#pragma unroll
        for (int h = 0; h < GT; ++h) sm.p[h][ko * 8 + kp] = valid ? part[h][0] : -INFINITY;
      }
      __syncthreads();
      softmax_step(nt);
      __syncthreads();
      rescale();
      for (int t = tl; t < nt; t += TL) {
        float vf[8];
        unpack<__half>(*reinterpret_cast<const uint4*>(s_vb + t * HD + oc * 8), vf);
#pragma unroll
        for (int h = 0; h < GT; ++h) {
          const float p = sm.p[h][t];
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[h][j] = fmaf(p, vf[j], acc[h][j]);
        }
      }
      __syncthreads();
    }
  }

  // ---------------- merge the token lanes, write ----------------
  cp_async_wait<0>();  // (nothing is pending: the last group committed was empty)
  float(*red)[GT][HD] = reinterpret_cast<float(*)[GT][HD]>(dyn);  // [kWarps][GT][HD], over the stage buffers
#pragma unroll
  for (int h = 0; h < GT; ++h)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[h][j] += zacc[h];
#pragma unroll
  for (int off = OCTS; off < 32; off <<= 1)
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[h][j] += __shfl_xor_sync(0xffffffffu, acc[h][j], off);
  __syncthreads();
  if (lane < OCTS)
#pragma unroll
    for (int h = 0; h < GT; ++h)
#pragma unroll
      for (int j = 0; j < 8; ++j) red[warp][h][oc * 8 + j] = acc[h][j];
  __syncthreads();
  for (int i = tid; i < nq * HD; i += kThreads) {
    const int h = i / HD, d = i - h * HD;
    float A = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) A += red[w][h][d];
    const float L = sm.l[h];  // >= 1: the split has a token, and its max contributes 2^0
    const size_t row = static_cast<size_t>(b) * nh + h0 + h;
    if (direct) {
      out[row * HD + d] = from_f<T>(A / L);
    } else {
      ws_o[(row * n_splits + split) * HD + d] = A / L;
      if (d == 0) ws_lse[row * n_splits + split] = sm.m[h] + __log2f(L);
    }
  }
}

// grid (nh, B), HD threads: out = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M) over the row's live splits.
// With v7's stream-K plan (sk.W > 0) a row's partials are its segments (split_rule::stream_k_segments of its line row:
// b, kv head, query-head tile of gt heads), some of them empty (log2-sum-exp -inf, output 0).
template <typename T, int HD>
__global__ void __launch_bounds__(HD) cattn_combine_kernel(const float* __restrict__ ws_o, const float* __restrict__ ws_lse,
                                                            CompressedKV kv, T* __restrict__ out, int nh, int split_tokens,
                                                            int n_splits, long long max_comp, split_rule::StreamK sk, int group, int gt) {
  extern __shared__ float s_w[];
  wait_for_split_grid();  // (a programmatic dependent of the split kernel or the value outlier pass)
  const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
  const size_t row = static_cast<size_t>(b) * nh + h;
  const RowLens len = row_lens(kv, b, max_comp);
  if (!len.ok) {
    out[row * HD + d] = from_f<T>(NAN);
    return;
  }
  int live = static_cast<int>(min(live_splits(len, split_tokens), static_cast<long long>(n_splits)));
  if (sk.W > 0) {
    const int kvh = h / group, n_sub = (group + gt - 1) / gt;
    const long long r = (static_cast<long long>(b) * kv.nkv + kvh) * n_sub + (h - kvh * group) / gt;
    live = static_cast<int>(min(split_rule::stream_k_segments(sk, r), static_cast<long long>(n_splits)));
  }
  detail::merge_splits<T, HD>(ws_lse + row * n_splits, ws_o + row * n_splits * HD, live, s_w, out + row * HD, d);
}

#include "kernels/gear_attention_mma.cuh"
#include "kernels/gear_outlier_passes.cuh"

using detail::device_info;
using detail::DeviceInfo;

// Query heads served per block (GT) for a GQA group.
int group_tile(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

// Compressed tokens per split: kMaxSplit, halved while the grid has fewer than kBlocksPerSm blocks per
// SM, down to one chunk.
int split_tokens_for(long long B, long long blocks_per_split, long long max_comp, int sms) {
  long long s = kMaxSplit;
  const long long want = static_cast<long long>(kBlocksPerSm) * sms;
  while (s > kChunk && B * blocks_per_split * (max_comp / s + 1) < want) s /= 2;
  return static_cast<int>(s);
}

// Workspace: the splits' partial outputs [B, nh, n_splits, hd] and log2-sum-exps [B, nh, n_splits] (with one
// split only when the outlier passes run: the value pass adds to the partial output), then for the outlier
// passes the scores [B, nh, max_comp].
size_t workspace_floats(long long B, long long nh, long long hd, long long n_splits, bool passes, long long max_comp) {
  const long long splits = passes || n_splits > 1 ? n_splits : 0;
  return static_cast<size_t>(B * nh * splits * (hd + 1) + (passes ? B * nh * max_comp : 0));
}

// The largest dynamic shared memory any call of this instantiation can ask for (G 16, v_group 8, rank 8).
template <int HD, int GT, int BITS> size_t max_dynamic_smem() { return dynamic_smem(HD, BITS, 16, 8, kMaxRank, GT); }

// v3: max_dynamic_smem() bytes.
template <typename T, int HD, int GT, int BITS> void allow_smem() {
  static std::mutex mu;
  static std::set<int> done;
  allow_dynamic_smem(cattn_split_kernel<T, HD, GT, BITS>, max_dynamic_smem<HD, GT, BITS>(), mu, done);
}

// v4: the largest layout it takes (smallest G and v_group, rank 8, outliers).
template <typename T, int HD, int GT, int BITS> void allow_smem_mma() {
  static std::mutex mu;
  static std::set<int> done;
  const int g_min = std::max(16, 64 / BITS), vg_min = 8 * (8 / BITS);
  allow_dynamic_smem(cattn_mma_kernel<T, HD, GT, BITS>, mma_smem_layout(HD, BITS, g_min, vg_min, kMaxRank, GT, true).bytes, mu, done);
}

// log2 of a power of two (the layout's groups: checked by compressed_kv_problem).
int log2_exact(int x) {
  int s = 0;
  while ((1 << s) < x) ++s;
  return s;
}

// Compressed tokens per split, when set (set_attention_split_tokens; 0: split_tokens_for's rule).
std::atomic<int> g_split_tokens{0};

// KIVI's GQA-4 kernel's blocks an SM when set (set_kivi_gqa_blocks_per_sm; 0: split_rule::lean_two_blocks_pay).
std::atomic<int> g_kivi_gqa_blocks{0};

// The key pass's tiles per warp when set (set_key_pass_tiles_per_warp; 0: the rule below).
std::atomic<int> g_key_pass_tiles{0};

// The key pass's dynamic shared memory at t tiles a warp, and the most its launch may ask: what the instantiation's
// static arrays leave of the default 48 KB a block (cudaFuncAttributes, read once per instantiation). Cached by the
// kernel's address: every GT instantiation has the same function type (GT is not in its parameters) but its own
// static queries array, so a cache per type gave GT 8 the limit of GT 1 (its launch failed).
size_t key_pass_smem(const CompressedKV& kv, int gt, int t) { return sizeof(unsigned) * kKeyWarps * key_pass_sum_words(t * kv.group * gt); }
template <typename Kernel> size_t key_pass_smem_limit(Kernel kernel) {
  static std::mutex mu;
  static std::map<const void*, size_t> limits;
  const void* k = reinterpret_cast<const void*>(kernel);
  const std::lock_guard<std::mutex> lock(mu);
  if (const auto it = limits.find(k); it != limits.end()) return it->second;
  cudaFuncAttributes a{};
  const size_t v = cudaFuncGetAttributes(&a, kernel) == cudaSuccess ? static_cast<size_t>(a.maxDynamicSharedSizeBytes) : 0;
  cudaGetLastError();
  return limits[k] = v;
}

// Key pass: tiles per warp. Enough warps for ~32 an SM over the whole grid (a warp's stream hides its
// loads behind its own work only after two rounds, so short streams are latency-bound), at most kWarpTilesMax and
// what kKeyWarpSums holds for GT heads.
int key_pass_tiles_per_warp(const CompressedKV& kv, int gt, int n_sub, long long max_comp) {
  const long long tiles = ceil_div(max_comp, static_cast<long long>(kv.group)) * kv.nkv * n_sub * kv.B;
  const long long most = std::max(1, std::min(kWarpTilesMax, kKeyWarpSums / (kv.group * gt)));
  return static_cast<int>(std::clamp(tiles / (32LL * device_info().sms), 1LL, most));
}

// The key pass's tiles per warp: a count set by set_key_pass_tiles_per_warp (lowered to what the block's shared
// memory holds), else key_pass_tiles_per_warp's raised to the fewest that put the whole grid in one wave of resident
// blocks, where up to kWarpTilesMax can; else key_pass_tiles_per_warp's. Why: at gear-kivi-2 B 16 4k the rule's 7
// tiles gave 1536 blocks for 1188 resident (9 an SM), a second, mostly empty wave; 8 tiles give 1024, and the whole
// call went 197.6 -> 192.6 us (H100; docs/kernels.md). kernel: the instantiation to be launched (its occupancy,
// cached by shared memory size).
template <typename Kernel> int key_pass_tiles(Kernel kernel, const CompressedKV& kv, int gt, int n_sub, long long max_comp) {
  const size_t limit = key_pass_smem_limit(kernel);
  if (const int forced = g_key_pass_tiles.load(); forced > 0) {
    int t = std::min(forced, kWarpTilesMax);
    while (t > 1 && key_pass_smem(kv, gt, t) > limit) --t;
    return t;
  }
  const int tpw = key_pass_tiles_per_warp(kv, gt, n_sub, max_comp);
  static std::mutex mu;
  // Resident blocks an SM (the occupancy calculator's) by instantiation and dynamic shared memory: the
  // instantiations differ in registers and static shared memory (see key_pass_smem_limit).
  static std::map<std::pair<const void*, size_t>, int> per_sm;
  const void* k = reinterpret_cast<const void*>(kernel);
  const std::lock_guard<std::mutex> lock(mu);  // (once a call: the loop below runs on every decode step)
  const long long tiles_row = ceil_div(max_comp, static_cast<long long>(kv.group)), rows = static_cast<long long>(kv.nkv) * n_sub * kv.B;
  for (int t = tpw; t <= kWarpTilesMax; ++t) {
    const size_t smem = key_pass_smem(kv, gt, t);
    if (smem > limit) break;
    int blocks_sm = 0;
    if (const auto it = per_sm.find({k, smem}); it != per_sm.end()) {
      blocks_sm = it->second;
    } else {
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_sm, kernel, 32 * kKeyWarps, smem) != cudaSuccess) blocks_sm = 0;
      cudaGetLastError();
      per_sm[{k, smem}] = blocks_sm;
    }
    if (blocks_sm <= 0) return tpw;
    if (ceil_div(tiles_row, static_cast<long long>(kKeyWarps) * t) * rows <= static_cast<long long>(blocks_sm) * device_info().sms) return t;
  }
  return tpw;
}

template <typename T, int HD, int GT, int BITS>
void launch(const T* q, const CompressedKV& kv, T* out, float* ws_o, float* ws_lse, float* sc, int nh, int group, int n_sub,
            int split_tokens, int n_splits, long long max_comp, float scale_log2, bool pdl, bool mma, bool lean, bool inside,
            bool two_blocks, const split_rule::StreamK& sk, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_splits), static_cast<unsigned>(kv.nkv * n_sub), static_cast<unsigned>(kv.B));
  const int g_shift = log2_exact(kv.group), vg_shift = log2_exact(kv.v_group);
  // With outlier passes (sc): the key pass writes the score bias, v3 runs without the sparse pools, the value
  // pass adds the value outliers to its partial outputs (gear_outlier_passes.cuh). Never with v4 (mma).
  CompressedKV main_kv = kv;
  if (sc) {
    // (the value pass's shared tile offsets hold kMaxSplitTiles + 1: every split v3 and v7 take fits; checked before
    // any launch, against a change to either)
    if ((split_tokens >> g_shift) > kMaxSplitTiles)
      fail("compressed_attention", "the value outlier pass takes splits of at most " + std::to_string(kMaxSplitTiles) + " tiles; this call's are " +
                                       std::to_string(split_tokens >> g_shift));
    // The passes' instantiation for a side that keeps its corrections (the GPU cache's), else the one that
    // computes them (kCorr: gear_outlier_passes.cuh).
    auto key_kernel = kv.k_sp_corr ? cattn_key_bias_kernel<T, GT, true> : cattn_key_bias_kernel<T, GT, false>;
    const int tpw = key_pass_tiles(key_kernel, kv, GT, n_sub, max_comp);
    const dim3 kgrid(static_cast<unsigned>(ceil_div(ceil_div(max_comp, kv.group), static_cast<long long>(kKeyWarps) * tpw)),
                     static_cast<unsigned>(kv.nkv * n_sub), static_cast<unsigned>(kv.B));
    const size_t smem = key_pass_smem(kv, GT, tpw);  // (within key_pass_smem_limit: key_pass_tiles)
    key_kernel<<<kgrid, 32 * kKeyWarps, smem, stream>>>(q, kv, sc, max_comp, nh, group, n_sub, max_comp, scale_log2, g_shift, tpw);
    check_launch("compressed_attention (key outlier pass)");
    main_kv.sparse_cap = 0;
  }
  if (lean) {
    launch_lean_split(std::is_same_v<T, __half> ? DType::F16 : DType::BF16, q, main_kv, out, ws_o, ws_lse, sc, sc ? max_comp : 0, nh, group,
                      GT, n_sub, split_tokens, n_splits, max_comp, scale_log2, inside, two_blocks, sk, stream);
  } else if (mma) {
    allow_smem_mma<T, HD, GT, BITS>();
    const size_t smem = mma_smem_layout(HD, BITS, kv.group, kv.v_group, kv.rank, GT, kv.sparse_cap > 0).bytes;
    cattn_mma_kernel<T, HD, GT, BITS><<<grid, kThreads, smem, stream>>>(q, kv, out, ws_o, ws_lse, nh, group, n_sub, split_tokens,
                                                                        n_splits, max_comp, scale_log2);
  } else {
    allow_smem<T, HD, GT, BITS>();
    const size_t smem = dynamic_smem(HD, BITS, kv.group, kv.v_group, kv.rank, GT);
    cattn_split_kernel<T, HD, GT, BITS><<<grid, kThreads, smem, stream>>>(q, main_kv, out, ws_o, ws_lse, nh, group, n_sub, split_tokens,
                                                                          n_splits, max_comp, scale_log2, g_shift, vg_shift, sc,
                                                                          sc ? max_comp : 0);
  }
  check_launch("compressed_attention (split kernel)");
  if (sc) {
    auto value_kernel = kv.v_sp_corr ? cattn_value_outliers_kernel<GT, true> : cattn_value_outliers_kernel<GT, false>;
    value_kernel<<<grid, 32 * kValueWarps, 0, stream>>>(kv, sc, max_comp, ws_o, ws_lse, nh, group, n_sub, split_tokens, n_splits, max_comp,
                                                        g_shift);
    check_launch("compressed_attention (value outlier pass)");
  }
  if (n_splits > 1 || sc || sk.W > 0)
    launch_combine("compressed_attention (combine kernel)", cattn_combine_kernel<T, HD>, nh, kv.B, HD, n_splits, pdl, stream,
                   static_cast<const float*>(ws_o), static_cast<const float*>(ws_lse), kv, out, nh, split_tokens, n_splits,
                   max_comp, sk, group, GT);
}

std::atomic<int> g_kernel_choice{static_cast<int>(AttentionKernel::Auto)};

}  // namespace

void set_compressed_attention_kernel(AttentionKernel k) { g_kernel_choice.store(static_cast<int>(k)); }
void set_attention_split_tokens(int tokens) {
  if (tokens != 0 && tokens != kAttentionStreamK && (tokens < kChunk || tokens > split_rule::kLeanMaxSplit || tokens % kChunk != 0))
    fail("set_attention_split_tokens", std::to_string(tokens) + " tokens: 0 (the automatic rule), " + std::to_string(kAttentionStreamK) +
                                           " (v7's stream-K plan) or a multiple of " + std::to_string(kChunk) + " up to " +
                                           std::to_string(split_rule::kLeanMaxSplit) + " (v7; " + std::to_string(kMaxSplit) +
                                           " for v3 and v4)");
  g_split_tokens.store(tokens);
}
AttentionKernel compressed_attention_kernel() { return static_cast<AttentionKernel>(g_kernel_choice.load()); }
void set_kivi_gqa_blocks_per_sm(int blocks) {
  if (blocks != 0 && blocks != 2 && blocks != 3)
    fail("set_kivi_gqa_blocks_per_sm", std::to_string(blocks) + " blocks an SM: 0 (the automatic rule), 2 or 3");
  g_kivi_gqa_blocks.store(blocks);
}
void set_key_pass_tiles_per_warp(int tiles) {
  if (tiles < 0 || tiles > kWarpTilesMax)
    fail("set_key_pass_tiles_per_warp", std::to_string(tiles) + " tiles: 0 (the rule) to " + std::to_string(kWarpTilesMax));
  g_key_pass_tiles.store(tiles);
}

bool tensor_core_attention_supported(const CompressedKV& kv) {
  return mma_layout_ok(kv.hd, kv.bits, kv.group, kv.v_group) && device_info().pdl;  // pdl: sm_90+ (mma needs sm_80)
}

// Auto runs v3, with the outlier passes when the layout has sparse pools: on every shape of docs/kernels.md's
// table but a few long GQA ones, v4 measured slower.
bool compressed_attention_uses_outlier_passes(const CompressedKV& kv) {
  const AttentionKernel k = compressed_attention_kernel();
  return kv.sparse_cap > 0 && (k == AttentionKernel::OutlierPasses || k == AttentionKernel::Auto || k == AttentionKernel::Lean ||
                               k == AttentionKernel::LeanPasses);
}

// v7 applies the outliers itself where it can (detail::lean_outliers_inside: GQA-4 tiles with the value MMA and the
// layout's corrections), unless LeanPasses asks for the passes (benchmarks: the two side by side).
bool compressed_attention_outliers_inside(const CompressedKV& kv, int nh) {
  return kv.sparse_cap > 0 && compressed_attention_kernel() != AttentionKernel::LeanPasses && compressed_attention_uses_lean(kv, nh) &&
         detail::lean_outliers_inside(kv, group_tile(nh / kv.nkv));
}

bool lean_attention_supported(const CompressedKV& kv, int nh) {
  if (kv.nkv <= 0 || nh <= 0 || nh % kv.nkv != 0) return false;
  // v7's staged copies address the code words and the scales / zeros by 32-bit element offsets (stage_sources).
  const CompressedKVSizes z = compressed_kv_sizes(kv);
  constexpr std::size_t kMaxElements = std::size_t(1) << 32;
  if (z.k_codes / 4 > kMaxElements || z.v_codes / 4 > kMaxElements || z.k_scale > kMaxElements || z.v_scale > kMaxElements)
    return false;
  return detail::lean_layout_ok(kv, group_tile(nh / kv.nkv));
}

// Auto takes v7 where it measured faster than v3 (docs/kernels.md, "v7", H100): every MHA layout it takes, GQA layouts
// with low rank (GEAR-L / GEAR on Llama-3-8B heads), and 2-bit GQA tiles of 4 heads, whose key scores and values run on
// the tensor cores (KIVI-2 on Llama-3-8B heads, eee7cc3: 3-26 % less time from B 16 / 4k up, within 1 % at B 1 / 32k).
// GQA KIVI with 2 heads a tile (FMA loops; the two tied) stays on v3. Lean insists on v7.
bool compressed_attention_uses_lean(const CompressedKV& kv, int nh) {
  const AttentionKernel k = compressed_attention_kernel();
  if (k != AttentionKernel::Lean && k != AttentionKernel::LeanPasses)
    return k == AttentionKernel::Auto && lean_attention_supported(kv, nh) &&
           (nh == kv.nkv || kv.rank > 0 || (kv.bits == 2 && group_tile(nh / kv.nkv) == 4));
  if (!lean_attention_supported(kv, nh))
    fail("compressed_attention", "the lean kernel (v7) needs 2-bit codes (or 4-bit ones with one query head per kv head), hd 64 or "
                                 "128, key groups of 32 or 64, value groups of 16 or more channels (at most 4 per head), rank <= 4 "
                                 "and at most 4 query heads per kv head, with code and scale arrays under 2^32 elements; this "
                                 "layout has bits " +
                                     std::to_string(kv.bits) + ", hd " + std::to_string(kv.hd) + ", G " + std::to_string(kv.group) +
                                     ", v_group " + std::to_string(kv.v_group) + ", rank " + std::to_string(kv.rank) + ", " +
                                     std::to_string(nh) + " query heads over " + std::to_string(kv.nkv) + " kv heads");
  return true;
}

bool compressed_attention_uses_tensor_cores(const CompressedKV& kv) {
  if (compressed_attention_kernel() != AttentionKernel::TensorCore) return false;
  if (!tensor_core_attention_supported(kv))
    fail("compressed_attention", "the tensor-core kernel needs hd 64 or 128, key tile rows of at least 8 bytes (G*bits >= 64) and "
                                 "value groups of at least 64/bits channels, on sm_90; this layout has hd " +
                                     std::to_string(kv.hd) + ", G " + std::to_string(kv.group) + ", bits " + std::to_string(kv.bits) +
                                     ", v_group " + std::to_string(kv.v_group));
  return true;
}

// The most splits the automatic rules give (see compressed_attention_workspace_bytes).
static long long auto_split_bound(long long B, long long max_compressed) {
  return split_rule::auto_split_bound(B, max_compressed, device_info().sms);
}

size_t compressed_attention_workspace_bytes(int B, int nh, int hd, long long max_compressed, bool outliers) {
  if (B <= 0 || nh <= 0 || hd <= 0 || max_compressed < 0) return 0;
  // The call picks s. If s == kMaxSplit, n_splits = floor(M / kMaxSplit) + 1. Else the halving did not stop
  // at 2s: B * g * (floor(M / 2s) + 1) < want with g >= 1 blocks per split, so n_splits = floor(M / s) + 1
  // <= 2 (floor(M / 2s) + 1) < 2 want / B. Always n_splits <= floor(M / kChunk) + 1. Monotone in M.
  // (v7's rule, lean_split_tokens, is held to the same bound.)
  const long long forced = g_split_tokens.load();
  const long long bound = forced > 0 ? max_compressed / forced + 1 : auto_split_bound(B, max_compressed);  // (stream-K: within it)
  return workspace_floats(B, nh, hd, bound, outliers && max_compressed > 0, max_compressed) * sizeof(float);
}

void compressed_attention(DType t, const void* q, const CompressedKV& kv, void* out, int nh, long long max_compressed, float scale,
                          void* workspace, size_t workspace_bytes, void* stream) {
  const char* name = "compressed_attention";
  check_layout(name, kv, /*attention=*/true);
  if (t != DType::F16 && t != DType::BF16) fail(name, std::string("dtype ") + dtype_name(t) + " is not supported (f16 or bf16)");
  if (nh <= 0 || nh % kv.nkv != 0)
    fail(name, "nh " + std::to_string(nh) + " is not a positive multiple of nkv " + std::to_string(kv.nkv));
  if (max_compressed < 0) fail(name, "negative max_compressed");
  if (kv.B == 0) return;
  const bool lr = kv.rank > 0, sp = kv.sparse_cap > 0;
  if (!q || !out || !kv.n_comp || !kv.n_buf || !kv.k_codes || !kv.k_scale || !kv.k_zero || !kv.v_codes || !kv.v_scale ||
      !kv.v_zero || (kv.buf_cap > 0 && (!kv.k_buf || !kv.v_buf)) ||
      (lr && (!kv.lr_block || !kv.k_lr_a || !kv.k_lr_b || !kv.v_lr_a || !kv.v_lr_b)) ||
      (sp && (!kv.k_sp_off || !kv.k_sp_pos || !kv.v_sp_off || !kv.v_sp_pos || (!kv.k_sp_val && !kv.k_sp_corr) ||
              (!kv.v_sp_val && !kv.v_sp_corr))))
    fail(name, "null pointer");
  if (!aligned16(kv.k_codes) || !aligned16(kv.v_codes) || !aligned16(kv.k_scale) || !aligned16(kv.k_zero) || !aligned16(kv.v_scale) ||
      !aligned16(kv.v_zero) || !aligned16(kv.k_buf) || !aligned16(kv.v_buf) ||
      (lr && (!aligned16(kv.k_lr_a) || !aligned16(kv.v_lr_a) || !aligned16(kv.k_lr_b) || !aligned16(kv.v_lr_b))))
    fail(name, "the codes, scales, zeros, A, B and buffer arrays must be 16-byte aligned");
  max_compressed = std::min(max_compressed, kv.tile_cap * kv.group);

  const int group = nh / kv.nkv;
  const int gt = group_tile(group);
  const int n_sub = (group + gt - 1) / gt;
  if (kv.B > 65535 || static_cast<long long>(kv.nkv) * n_sub > 65535) fail(name, "grid too large (B or nkv)");
  const DeviceInfo dev = device_info();
  const bool mma = compressed_attention_uses_tensor_cores(kv);
  const bool lean = !mma && compressed_attention_uses_lean(kv, nh);
  const int forced = g_split_tokens.load();
  const long long g = static_cast<long long>(kv.nkv) * n_sub;
  // v7 with the outliers inside: no passes (a call with max_compressed 0 has no outliers either way).
  const bool inside = lean && max_compressed > 0 && compressed_attention_outliers_inside(kv, nh);
  // No compressed token can be valid with max_compressed 0: then the passes have nothing to do.
  const bool passes = !mma && !inside && max_compressed > 0 && compressed_attention_uses_outlier_passes(kv);
  const bool stream_k = forced == kAttentionStreamK;
  if (stream_k && (!lean || passes))
    fail(name, std::string("v7's stream-K plan (set_attention_split_tokens(") + std::to_string(kAttentionStreamK) +
                   ")) needs v7 without the outlier passes; this call runs " + (lean ? "v7 with the passes" : mma ? "v4" : "v3"));
  if (stream_k && !detail::lean_stream_k_supported(kv, gt, inside))
    fail(name, "v7's stream-K plan is built for KIVI's GQA tiles of 4 query heads (2-bit codes, no low rank, no outliers); this layout "
               "has " + std::to_string(group) + " query heads a kv head, " + std::to_string(kv.bits) + "-bit codes, rank " +
                   std::to_string(kv.rank) + (inside ? ", outliers" : ""));
  // KIVI's GQA-4 kernel (the layouts stream-K is built for) has its own fit of the split cost model, and an
  // instantiation for 2 blocks an SM that small grids take (split_rule::lean_two_blocks_pay; its slots then size the
  // splits and the stream-K plan).
  const bool kivi_gqa = lean && !passes && detail::lean_stream_k_supported(kv, gt, inside);
  const int forced_blocks = g_kivi_gqa_blocks.load();
  bool two_blocks = kivi_gqa && forced_blocks == detail::kLeanTwoBlocks;
  int blocks2 = 0;  // (the 2-block split kernel's, when the rule asked: the split rule's slots too if it is taken)
  if (kivi_gqa && forced_blocks == 0) {
    blocks2 = lean_blocks_per_sm(t, kv, gt, inside, false, true);
    two_blocks = split_rule::lean_two_blocks_pay(kv.B * g, max_compressed, static_cast<long long>(blocks2) * dev.sms);
  }
  const int lean_blocks = !lean || forced > 0         ? 0
                          : two_blocks && blocks2 > 0 ? blocks2
                                                      : lean_blocks_per_sm(t, kv, gt, inside, false, two_blocks);
  const int split_tokens = forced > 0       ? forced
                           : lean_blocks > 0 ? split_rule::lean_split_tokens(kv.B, g, max_compressed, static_cast<long long>(lean_blocks) * dev.sms,
                                                                 auto_split_bound(kv.B, max_compressed),
                                                                 split_rule::kLeanMaxSplit,
                                                                 kivi_gqa ? split_rule::kLeanKiviGqaCost : split_rule::kLeanCost)
                                             : split_tokens_for(kv.B, g, max_compressed, dev.sms);
  // Stream-K, asked for or (the automatic choice) where it pays (split_rule::stream_k_pays): the line's units are tiles
  // and the buffer's tiles' worth; a block at least two tiles a warp. No plan (a tiny grid, or no occupancy figure):
  // the rule's splits.
  split_rule::StreamK sk;
  const bool sk_auto = forced == 0 && kivi_gqa;
  const int sk_blocks = stream_k || sk_auto ? lean_blocks_per_sm(t, kv, gt, inside, true, two_blocks) : 0;
  if (sk_blocks > 0) {
    const long long sk_slots = static_cast<long long>(sk_blocks) * dev.sms;
    sk = split_rule::stream_k_plan(kv.B * g, max_compressed / kv.group, ceil_div(kv.buf_cap, kv.group), sk_slots,
                                   auto_split_bound(kv.B, max_compressed), 8);
    if (!stream_k && !split_rule::stream_k_pays(sk, kv.group, sk_slots)) sk = {};
  }
  const long long n_splits = sk.W > 0 ? sk.slots : max_compressed / split_tokens + 1;
  if (n_splits > 0x7fffffffLL || sk.blocks > 0x7fffffffLL) fail(name, "max_compressed too large");
  if (split_tokens > kMaxSplit && !lean)
    fail(name, "splits of " + std::to_string(split_tokens) + " tokens (set_attention_split_tokens) need v7; this call runs " +
                   (mma ? "v4" : "v3") + ", whose splits are at most " + std::to_string(kMaxSplit));
  if (sp && max_compressed > 0 && (!kv.k_sp_val || !kv.v_sp_val) && !passes && !inside)
    fail(name, "this layout keeps its outliers as corrections only (no sp_val), which only the outlier passes and v7 apply; the chosen "
               "kernel (v3 with the outliers inside, or v4) needs their values");
  const size_t need = workspace_floats(kv.B, nh, kv.hd, n_splits, passes, max_compressed) * sizeof(float);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need))
    fail(name, "workspace of " + std::to_string(workspace_bytes) + " bytes is smaller than the " + std::to_string(need) +
                   " needed (compressed_attention_workspace_bytes)");
  if (need > 0 && !aligned16(workspace)) fail(name, "workspace must be 16-byte aligned");
  float* ws_o = static_cast<float*>(workspace);
  float* ws_lse = need > 0 ? ws_o + static_cast<size_t>(kv.B) * nh * n_splits * kv.hd : nullptr;
  float* sc = passes ? ws_lse + static_cast<size_t>(kv.B) * nh * n_splits : nullptr;
  const float scale_log2 = scale * kLog2e;

  auto run = [&](auto tag, auto hd_c, auto gt_c, auto bits_c) {
    using T = typename decltype(tag)::type;
    launch<T, decltype(hd_c)::value, decltype(gt_c)::value, decltype(bits_c)::value>(
        static_cast<const T*>(q), kv, static_cast<T*>(out), ws_o, ws_lse, sc, nh, group, n_sub, split_tokens, static_cast<int>(n_splits),
        max_compressed, scale_log2, dev.pdl, mma, lean, inside, two_blocks, sk, as_stream(stream));
  };
  auto by_bits = [&](auto tag, auto hd_c, auto gt_c) {
    switch (kv.bits) {
      case 2: run(tag, hd_c, gt_c, std::integral_constant<int, 2>{}); break;
      case 4: run(tag, hd_c, gt_c, std::integral_constant<int, 4>{}); break;
      default: run(tag, hd_c, gt_c, std::integral_constant<int, 8>{}); break;
    }
  };
  auto by_gt = [&](auto tag, auto hd_c) {
    switch (gt) {
      case 1: by_bits(tag, hd_c, std::integral_constant<int, 1>{}); break;
      case 2: by_bits(tag, hd_c, std::integral_constant<int, 2>{}); break;
      case 4: by_bits(tag, hd_c, std::integral_constant<int, 4>{}); break;
      default: by_bits(tag, hd_c, std::integral_constant<int, 8>{}); break;
    }
  };
  auto by_hd = [&](auto tag) {
    if (kv.hd == 64)
      by_gt(tag, std::integral_constant<int, 64>{});
    else
      by_gt(tag, std::integral_constant<int, 128>{});
  };
  if (t == DType::F16)
    by_hd(Tag<__half>{});
  else
    by_hd(Tag<__nv_bfloat16>{});
}

}  // namespace gear::kernels
