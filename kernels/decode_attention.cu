// Flash-decoding attention for one query token per row (the decode step).
//
// Split kernel: grid (n_splits, nkv * n_sub, B). A block takes one kv head of one row, the GT query
// heads of its group that it serves (all of them when the group has at most 8), and one chunk of the
// keys, so every K/V byte is read once per group. Inside the block, a "key group" of LPK lanes owns
// one key at a time (one 16-byte vector per lane: LPK = hd * sizeof(T) / 16), a warp holds 32/LPK keys
// and every lane keeps UNROLL keys' K and V loads in flight. Scores, the running max / sum (online
// softmax, base 2) and the accumulator stay in float32. Key groups merge through shuffles, warps
// through shared memory, and the block writes its partial (o / l, log2-sum-exp) to the workspace, or
// the final output directly when there is a single split.
// Combine kernel: grid (nh, B), hd threads: weights the partials of the row's live splits.
#include "kernels/dtype.cuh"
#include "kernels/split_combine.cuh"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <type_traits>
#include <vector>

namespace gear::kernels {
namespace {
using namespace detail;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
#ifndef GEARLAB_ATTN_BLOCKS_PER_SM
#define GEARLAB_ATTN_BLOCKS_PER_SM 4
#endif
// K/V load schedule: 0 loads a step's K/V at the top of the step, 1 at the end of the previous step,
// 2 double-buffers (the next step's loads are issued before this step computes).
#ifndef GEARLAB_ATTN_PREFETCH
#define GEARLAB_ATTN_PREFETCH 1
#endif
#ifndef GEARLAB_ATTN_MIN_CHUNK
#define GEARLAB_ATTN_MIN_CHUNK 64
#endif
// Keys per split: kMaxChunk, halved while the grid has fewer than kBlocksPerSm blocks per SM, down to
// kMinChunk. (Measured on an H100, Llama-2-7B shapes, batch 1: 4 blocks per SM and 64 keys beat 2 and
// 128 by 12% at 1k and 4k context and tie at 32k; the macros exist to repeat that experiment.)
constexpr int kMaxChunk = 512;
constexpr int kMinChunk = GEARLAB_ATTN_MIN_CHUNK;
constexpr int kBlocksPerSm = GEARLAB_ATTN_BLOCKS_PER_SM;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ex2(float x) { return exp2f(x); }

// Row b's number of keys, or -1 when its position is outside [0, cap) or past what the grid covers.
__device__ __forceinline__ long long row_len(const int64_t* positions, int b, long long cap, long long covered) {
  const long long pos = positions[b];
  if (pos < 0 || pos >= cap || pos + 1 > covered) return -1;
  return pos + 1;
}

template <typename T, int HD, int GT, int UNROLL>
__global__ void __launch_bounds__(kThreads) attn_split_kernel(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int64_t* __restrict__ positions, T* __restrict__ out, float* __restrict__ ws_o, float* __restrict__ ws_lse,
    int nh, int nkv, int group, int n_sub, long long cap, int chunk, int n_splits, float scale_log2) {
  constexpr int N = kVec<T>;        // elements per 16-byte vector
  constexpr int LPK = HD / N;       // lanes per key: 8, 16 or 32
  constexpr int KPW = 32 / LPK;     // keys per warp per step
  constexpr int NG = kWarps * KPW;  // key groups per block
  constexpr int STEP = NG * UNROLL; // keys per block iteration
  static_assert(LPK >= 1 && LPK <= 32 && 32 % LPK == 0, "unsupported head dim / dtype");

  const SplitBlock blk = begin_split_block<GT>(group, n_sub);
  const int split = blk.split, kvh = blk.kvh, b = blk.b, h0 = blk.h0, nq = blk.nq;
  const long long len = row_len(positions, b, cap, static_cast<long long>(n_splits) * chunk);
  const long long k0 = static_cast<long long>(split) * chunk;

  if (len < 0) {  // invalid position: NaN output (the combine kernel does it when there are splits)
    if (n_splits == 1)
      for (int i = threadIdx.x; i < nq * HD; i += kThreads)
        out[(static_cast<size_t>(b) * nh + h0) * HD + i] = from_f<T>(NAN);
    return;
  }
  if (k0 >= len) return;  // this split is past the row's end: the combine kernel ignores it
  const long long k1 = min(len, k0 + chunk);

  __shared__ __align__(16) float sq[GT][HD];  // queries, pre-scaled by scale * log2(e)
  __shared__ float sm_m[kWarps][GT], sm_l[kWarps][GT];
  __shared__ __align__(16) float sm_acc[kWarps][GT][HD];

  for (int i = threadIdx.x; i < GT * HD; i += kThreads) {
    const int h = i / HD;
    sq[h][i - h * HD] = h < nq ? to_f(q[(static_cast<size_t>(b) * nh + h0) * HD + i]) * scale_log2 : 0.f;
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int slot = lane / LPK;       // key slot within the warp
  const int sl = lane - slot * LPK;  // owns dims [sl*N, sl*N + N)
  const int g = warp * KPW + slot;   // key group within the block

  const size_t head_base = (static_cast<size_t>(b) * nkv + kvh) * static_cast<size_t>(cap) * HD + sl * N;
  const T* kb = k_cache + head_base;
  const T* vb = v_cache + head_base;

  float m[GT], l[GT], acc[GT][N];
#pragma unroll
  for (int h = 0; h < GT; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int j = 0; j < N; ++j) acc[h][j] = 0.f;
  }

  // K/V of the keys base + u*NG + g (u < UNROLL); keys at or past k1 are not read (zeros instead).
  auto load = [&](long long base, uint4 (&kr)[UNROLL], uint4 (&vr)[UNROLL]) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const long long key = base + u * NG + g;
      if (key < k1) {
        kr[u] = ldg16(kb + key * HD);
        vr[u] = ldg16(vb + key * HD);
      } else {
        kr[u] = make_uint4(0, 0, 0, 0);
        vr[u] = make_uint4(0, 0, 0, 0);
      }
    }
  };
  uint4 kr[UNROLL], vr[UNROLL];
#if GEARLAB_ATTN_PREFETCH != 0
  load(k0, kr, vr);
#endif
  for (long long base = k0; base < k1; base += STEP) {
#if GEARLAB_ATTN_PREFETCH == 0
    load(base, kr, vr);
#elif GEARLAB_ATTN_PREFETCH == 2
    // Software pipelining: the next step's loads are in flight while this step computes.
    uint4 kn[UNROLL], vn[UNROLL];
    if (base + STEP < k1) load(base + STEP, kn, vn);
#endif
    // Scores s[u][h] (base-2 logits), partial over this lane's dims, then summed over the key group.
    float s[UNROLL][GT];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      float kf[N];
      unpack<T>(kr[u], kf);
#pragma unroll
      for (int h = 0; h < GT; ++h) {
        const float4* qv = reinterpret_cast<const float4*>(&sq[h][sl * N]);
        float d = 0.f;
#pragma unroll
        for (int j4 = 0; j4 < N / 4; ++j4) {
          const float4 qq = qv[j4];
          d = fmaf(qq.x, kf[4 * j4 + 0], d);
          d = fmaf(qq.y, kf[4 * j4 + 1], d);
          d = fmaf(qq.z, kf[4 * j4 + 2], d);
          d = fmaf(qq.w, kf[4 * j4 + 3], d);
        }
        s[u][h] = d;
      }
    }
#pragma unroll
    for (int off = LPK / 2; off > 0; off >>= 1)
#pragma unroll
      for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int h = 0; h < GT; ++h) s[u][h] += __shfl_xor_sync(0xffffffffu, s[u][h], off);

    // Online softmax over the UNROLL keys of this step; p overwrites s.
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      float mt = m[h];
#pragma unroll
      for (int u = 0; u < UNROLL; ++u)
        if (base + u * NG + g < k1) mt = fmaxf(mt, s[u][h]);
      const float corr = mt == -INFINITY ? 1.f : ex2(m[h] - mt);  // m[h] == -inf gives 0
      float psum = 0.f;
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const float p = base + u * NG + g < k1 ? ex2(s[u][h] - mt) : 0.f;
        s[u][h] = p;
        psum += p;
      }
      m[h] = mt;
      l[h] = l[h] * corr + psum;
#pragma unroll
      for (int j = 0; j < N; ++j) acc[h][j] *= corr;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      float vf[N];
      unpack<T>(vr[u], vf);
#pragma unroll
      for (int h = 0; h < GT; ++h)
#pragma unroll
        for (int j = 0; j < N; ++j) acc[h][j] = fmaf(s[u][h], vf[j], acc[h][j]);
    }
#if GEARLAB_ATTN_PREFETCH == 2
    if (base + STEP < k1) {
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        kr[u] = kn[u];
        vr[u] = vn[u];
      }
    }
#elif GEARLAB_ATTN_PREFETCH == 1
    if (base + STEP < k1) load(base + STEP, kr, vr);
#endif
  }

  // Merge the key groups of a warp (lanes sl, sl+LPK, ...).
#pragma unroll
  for (int off = LPK; off < 32; off <<= 1) {
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[h], off);
      const float lo = __shfl_xor_sync(0xffffffffu, l[h], off);
      const float mn = fmaxf(m[h], mo);
      const float f1 = m[h] == -INFINITY ? 0.f : ex2(m[h] - mn);
      const float f2 = mo == -INFINITY ? 0.f : ex2(mo - mn);
      l[h] = l[h] * f1 + lo * f2;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[h][j], off);
        acc[h][j] = acc[h][j] * f1 + ao * f2;
      }
      m[h] = mn;
    }
  }
  if (slot == 0) {
#pragma unroll
    for (int h = 0; h < GT; ++h) {
      if (sl == 0) {
        sm_m[warp][h] = m[h];
        sm_l[warp][h] = l[h];
      }
#pragma unroll
      for (int j = 0; j < N; ++j) sm_acc[warp][h][sl * N + j] = acc[h][j];
    }
  }
  __syncthreads();

  // Merge the warps; thread i handles (head i / HD, dim i % HD).
  for (int i = threadIdx.x; i < nq * HD; i += kThreads) {
    const int h = i / HD, d = i - h * HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sm_m[w][h]);
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = sm_m[w][h];
      const float f = mw == -INFINITY ? 0.f : ex2(mw - mx);
      L = fmaf(sm_l[w][h], f, L);
      A = fmaf(sm_acc[w][h][d], f, A);
    }
    // L >= 1: the block has at least one key, and its max contributes exp2(0).
    const size_t row = static_cast<size_t>(b) * nh + h0 + h;
    if (n_splits == 1) {
      out[row * HD + d] = from_f<T>(A / L);
    } else {
      ws_o[(row * n_splits + split) * HD + d] = A / L;
      if (d == 0) ws_lse[row * n_splits + split] = mx + __log2f(L);
    }
  }
}

// grid (nh, B), HD threads: out = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M) over the row's live splits.
template <typename T, int HD>
__global__ void __launch_bounds__(HD) attn_combine_kernel(const float* __restrict__ ws_o, const float* __restrict__ ws_lse,
                                                           const int64_t* __restrict__ positions, T* __restrict__ out,
                                                           int nh, long long cap, int chunk, int n_splits) {
  extern __shared__ float s_w[];  // n_splits weights
  wait_for_split_grid();
  const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
  const size_t row = static_cast<size_t>(b) * nh + h;
  const long long len = row_len(positions, b, cap, static_cast<long long>(n_splits) * chunk);
  if (len < 0) {
    out[row * HD + d] = from_f<T>(NAN);
    return;
  }
  const int live = static_cast<int>(ceil_div(len, chunk));
  detail::merge_splits<T, HD>(ws_lse + row * n_splits, ws_o + row * n_splits * HD, live, s_w, out + row * HD, d);
}

using detail::device_info;
using detail::DeviceInfo;

template <typename T, int HD, int GT>
void launch_attention(const T* q, const T* k, const T* v, const int64_t* positions, T* out, float* ws_o, float* ws_lse,
                      int B, int nh, int nkv, int group, int n_sub, long long cap, int chunk, int n_splits, float scale_log2,
                      bool pdl, cudaStream_t stream) {
  constexpr int UNROLL = GT >= 8 ? 2 : GT >= 4 ? 4 : 8;
  const dim3 grid(static_cast<unsigned>(n_splits), static_cast<unsigned>(nkv * n_sub), static_cast<unsigned>(B));
  attn_split_kernel<T, HD, GT, UNROLL><<<grid, kThreads, 0, stream>>>(q, k, v, positions, out, ws_o, ws_lse, nh, nkv, group,
                                                                     n_sub, cap, chunk, n_splits, scale_log2);
  check_launch("decode_attention (split kernel)");
  if (n_splits > 1)
    launch_combine("decode_attention (combine kernel)", attn_combine_kernel<T, HD>, nh, B, HD, n_splits, pdl, stream,
                   static_cast<const float*>(ws_o), static_cast<const float*>(ws_lse), positions, out, nh, cap, chunk, n_splits);
}

size_t workspace_floats(long long B, long long nh, long long hd, long long n_splits) {
  return n_splits <= 1 ? 0 : static_cast<size_t>(B * nh * n_splits * (hd + 1));
}

}  // namespace

size_t decode_attention_workspace_bytes(int B, int nh, int hd, long long max_len) {
  if (B <= 0 || nh <= 0 || hd <= 0 || max_len <= 0) return 0;
  // The call picks chunk c. If c == kMaxChunk, n_splits = ceil(max_len / kMaxChunk). If c < kMaxChunk, the
  // halving did not stop at 2c, so B * blocks_per_split * ceil(max_len / 2c) < want, hence
  // n_splits <= 2 * ceil(max_len / 2c) < 2 * want / B. And always n_splits <= ceil(max_len / kMinChunk).
  const long long want = static_cast<long long>(kBlocksPerSm) * device_info().sms;
  const long long bound = std::min(ceil_div(max_len, kMinChunk), std::max(ceil_div(max_len, kMaxChunk), ceil_div(2 * want, B)));
  return workspace_floats(B, nh, hd, bound) * sizeof(float);
}

void decode_attention(DType t, const void* q, const void* k_cache, const void* v_cache, const int64_t* positions, void* out,
                      int B, int nh, int nkv, int hd, long long cap, long long max_len, float scale, void* workspace,
                      size_t workspace_bytes, void* stream) {
  const char* name = "decode_attention";
  if (B < 0 || nh <= 0 || nkv <= 0 || nh % nkv != 0 || cap <= 0 || max_len <= 0)
    fail(name, "invalid shape B=" + std::to_string(B) + " nh=" + std::to_string(nh) + " nkv=" + std::to_string(nkv) +
                   " cap=" + std::to_string(cap) + " max_len=" + std::to_string(max_len));
  if (hd != 64 && hd != 128) fail(name, "head dim " + std::to_string(hd) + " is not supported (64 or 128)");
  if (B == 0) return;
  if (!q || !k_cache || !v_cache || !positions || !out) fail(name, "null pointer");
  if (!aligned16(k_cache) || !aligned16(v_cache)) fail(name, "k_cache / v_cache must be 16-byte aligned");
  if (max_len > cap) max_len = cap;  // no row can be longer than the cache

  const int group = nh / nkv;
  const int gt = group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8;
  const int n_sub = (group + gt - 1) / gt;
  if (B > 65535 || static_cast<long long>(nkv) * n_sub > 65535) fail(name, "grid too large (B or nkv)");

  const DeviceInfo dev = device_info();
  // Chunk: the largest power of two in [kMinChunk, kMaxChunk] that still gives >= kBlocksPerSm blocks per SM.
  long long chunk = kMaxChunk;
  const long long want = static_cast<long long>(kBlocksPerSm) * dev.sms;
  while (chunk > kMinChunk && static_cast<long long>(B) * nkv * n_sub * ceil_div(max_len, chunk) < want) chunk /= 2;
  const long long n_splits = ceil_div(max_len, chunk);
  if (n_splits > 0x7fffffffLL) fail(name, "max_len too large");

  const size_t need = workspace_floats(B, nh, hd, n_splits) * sizeof(float);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need))
    fail(name, "workspace of " + std::to_string(workspace_bytes) + " bytes is smaller than the " + std::to_string(need) +
                   " needed (decode_attention_workspace_bytes)");
  if (need > 0 && !aligned16(workspace)) fail(name, "workspace must be 16-byte aligned");
  float* ws_o = static_cast<float*>(workspace);
  float* ws_lse = need > 0 ? ws_o + static_cast<size_t>(B) * nh * n_splits * hd : nullptr;
  const float scale_log2 = scale * kLog2e;

  dispatch(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto run = [&](auto hd_c, auto gt_c) {
      constexpr int HD = decltype(hd_c)::value, GT = decltype(gt_c)::value;
      launch_attention<T, HD, GT>(static_cast<const T*>(q), static_cast<const T*>(k_cache), static_cast<const T*>(v_cache),
                                  positions, static_cast<T*>(out), ws_o, ws_lse, B, nh, nkv, group, n_sub, cap,
                                  static_cast<int>(chunk), static_cast<int>(n_splits), scale_log2, dev.pdl, as_stream(stream));
    };
    auto by_gt = [&](auto hd_c) {
      switch (gt) {
        case 1: run(hd_c, std::integral_constant<int, 1>{}); break;
        case 2: run(hd_c, std::integral_constant<int, 2>{}); break;
        case 4: run(hd_c, std::integral_constant<int, 4>{}); break;
        default: run(hd_c, std::integral_constant<int, 8>{}); break;
      }
    };
    if (hd == 64)
      by_gt(std::integral_constant<int, 64>{});
    else
      by_gt(std::integral_constant<int, 128>{});
  });
}

bool cuda_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later checks don't see it
    return false;
  }
  return n > 0;
}

}  // namespace gear::kernels
