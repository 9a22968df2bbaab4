// GEAR / KIVI compression into the CompressedKV layout (kernels.h): fused quantize + pack (keys per
// channel, values per token), unpack + dequantize, outlier extraction per vector and the sparse store.
// These run once per compressed block (the prompt, then every n_b tokens), not per decode step; they
// favour bit-exactness with core/ (float32 arithmetic in core's order, IEEE division, directed fp16
// rounding) and simplicity over the last microsecond.
#include "kernels/gear_layout.cuh"

#include <algorithm>

namespace gear::kernels {
namespace {
using namespace detail;

constexpr float kMinStep = 5.9604644775390625e-08f;  // 2^-24, the smallest fp16 subnormal

template <int BITS> __device__ __forceinline__ float levels_f() { return static_cast<float>((1 << BITS) - 1); }

// core's quantize_matrix for one group with min mn and max mx: zero rounded down, scale up to fp16.
template <int BITS> __device__ __forceinline__ void group_params(float mn, float mx, uint16_t& scale, uint16_t& zero) {
  zero = f2h_rd(mn);
  const float z = h2f(zero);
  const float step = fmaxf(__fdiv_rn(__fsub_rn(mx, z), levels_f<BITS>()), kMinStep);
  scale = f2h_ru(step);
}

template <int BITS> __device__ __forceinline__ uint32_t quant_code(float x, float s, float z) {
  const float c = rintf(__fdiv_rn(__fsub_rn(x, z), s));
  return static_cast<uint32_t>(fminf(fmaxf(c, 0.f), levels_f<BITS>()));
}

// Destination (row, first tile) of block i, or row -1 when it is out of range.
__device__ __forceinline__ void block_place(const CompressedKV& kv, int i, int n_tiles, const int32_t* rows, const int32_t* tiles,
                                            int& b, long long& t0) {
  b = rows ? rows[i] : i;
  t0 = tiles ? tiles[i] : 0;
  if (b < 0 || b >= kv.B || t0 < 0 || t0 + n_tiles > kv.tile_cap) b = -1;
}

// ---- quantize + pack ----

// Keys over the whole block (KCVT): grid (nkv, n), block (hd, Y): threads (d, y) take every Y-th token of channel d,
// the Y partial ranges meet in shared memory, and the block's one scale / zero per channel goes to each of its tiles
// (the layout keeps a scale per tile; quantize_keys_kernel then reads them instead of its tile's range).
template <typename T, int BITS>
__global__ void key_block_params_kernel(const T* __restrict__ x, long long x_cap, CompressedKV kv, const int32_t* __restrict__ rows,
                                        const int32_t* __restrict__ tiles, int T_blk) {
  extern __shared__ float range[];  // [2][Y][hd]
  const int h = blockIdx.x, i = blockIdx.y, d = threadIdx.x, y = threadIdx.y, Y = blockDim.y, hd = kv.hd;
  int b;
  long long t0;
  block_place(kv, i, T_blk / kv.group, rows, tiles, b, t0);
  if (b < 0) return;
  const T* src = x + (static_cast<size_t>(i) * kv.nkv + h) * x_cap * hd + d;
  float mn = INFINITY, mx = -INFINITY;
  for (int t = y; t < T_blk; t += Y) {
    const float v = to_f(src[static_cast<size_t>(t) * hd]);
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
  }
  range[y * hd + d] = mn;
  range[(Y + y) * hd + d] = mx;
  __syncthreads();
  if (y != 0) return;
  for (int k = 1; k < Y; ++k) {  // min / max are exact: the order does not matter
    mn = fminf(mn, range[k * hd + d]);
    mx = fmaxf(mx, range[(Y + k) * hd + d]);
  }
  uint16_t sb, zb;
  group_params<BITS>(mn, mx, sb, zb);
  const LayoutIx ix(kv);
  for (int j = 0; j < T_blk / kv.group; ++j) {
    const size_t r = ix.k_row(b, h, t0 + j, d);
    kv.k_scale[r] = sb;
    kv.k_zero[r] = zb;
  }
}

// grid (T/G, nkv, n), block hd threads: thread d quantizes channel d of one tile, with its tile's range or (given)
// with the scale / zero key_block_params_kernel left in the tile.
template <typename T, int BITS>
__global__ void quantize_keys_kernel(const T* __restrict__ x, long long x_cap, CompressedKV kv, const int32_t* __restrict__ rows,
                                     const int32_t* __restrict__ tiles, int T_blk, bool given) {
  const int j = blockIdx.x, h = blockIdx.y, i = blockIdx.z, d = threadIdx.x;
  const int G = kv.group, hd = kv.hd;
  int b;
  long long t0;
  block_place(kv, i, T_blk / G, rows, tiles, b, t0);
  if (b < 0) return;
  const LayoutIx ix(kv);
  const T* src = x + ((static_cast<size_t>(i) * kv.nkv + h) * x_cap + static_cast<size_t>(j) * G) * hd + d;
  const size_t r = ix.k_row(b, h, t0 + j, d);
  uint16_t sb, zb;
  if (given) {
    sb = kv.k_scale[r];
    zb = kv.k_zero[r];
  } else {
    float mn = INFINITY, mx = -INFINITY;
    for (int t = 0; t < G; ++t) {
      const float v = to_f(src[static_cast<size_t>(t) * hd]);
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
    }
    group_params<BITS>(mn, mx, sb, zb);
    kv.k_scale[r] = sb;
    kv.k_zero[r] = zb;
  }
  const float s = h2f(sb), z = h2f(zb);
  constexpr int kPerWord = 32 / BITS;
  uint32_t* dst = reinterpret_cast<uint32_t*>(kv.k_codes + r * static_cast<size_t>(G * BITS / 8));
  for (int w = 0; w < G / kPerWord; ++w) {
    uint32_t word = 0;
#pragma unroll
    for (int c = 0; c < kPerWord; ++c)
      word |= quant_code<BITS>(to_f(src[static_cast<size_t>(w * kPerWord + c) * hd]), s, z) << (c * BITS);
    dst[w] = word;
  }
}

// One thread per value group (v_group channels of one token and head), flat over (i, h, t, g).
template <typename T, int BITS>
__global__ void quantize_values_kernel(const T* __restrict__ x, long long x_cap, CompressedKV kv, const int32_t* __restrict__ rows,
                                       const int32_t* __restrict__ tiles, int T_blk, long long total) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int VG = kv.v_group, ng = kv.hd / VG;
  const int g = static_cast<int>(idx % ng);
  long long rest = idx / ng;
  const int t = static_cast<int>(rest % T_blk);
  rest /= T_blk;
  const int h = static_cast<int>(rest % kv.nkv);
  const int i = static_cast<int>(rest / kv.nkv);
  int b;
  long long t0;
  block_place(kv, i, T_blk / kv.group, rows, tiles, b, t0);
  if (b < 0) return;
  const LayoutIx ix(kv);
  const T* src = x + ((static_cast<size_t>(i) * kv.nkv + h) * x_cap + t) * kv.hd + static_cast<size_t>(g) * VG;
  float mn = INFINITY, mx = -INFINITY;
  // The group's range: its VG channels, or with v_span > 1 the whole token row of each head of the span
  // (every head of the span computes the same range, so each holds the group's one scale / zero).
  const int h0 = h - h % kv.v_span;
  for (int hs = h0; hs < h0 + kv.v_span; ++hs) {
    const T* gs = src + static_cast<long long>(hs - h) * x_cap * kv.hd;
    for (int c = 0; c < VG; ++c) {
      const float v = to_f(gs[c]);
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
    }
  }
  const size_t tok = ix.tok(b, h, t0 * kv.group + t);
  uint16_t sb, zb;
  group_params<BITS>(mn, mx, sb, zb);
  kv.v_scale[tok * ng + g] = sb;
  kv.v_zero[tok * ng + g] = zb;
  const float s = h2f(sb), z = h2f(zb);
  uint8_t* dst = kv.v_codes + tok * static_cast<size_t>(kv.hd * BITS / 8) + static_cast<size_t>(g) * VG * BITS / 8;
  for (int o = 0; o < VG / 8; ++o) {  // 8 codes = BITS bytes
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const uint32_t code = quant_code<BITS>(to_f(src[o * 8 + c]), s, z);
      if (BITS == 8 && c >= 4)
        hi |= code << ((c - 4) * 8);
      else
        lo |= code << ((c * BITS) & 31);
    }
    uint8_t* p = dst + o * BITS;
    if constexpr (BITS == 2) {
      *reinterpret_cast<unsigned short*>(p) = static_cast<unsigned short>(lo);
    } else if constexpr (BITS == 4) {
      *reinterpret_cast<uint32_t*>(p) = lo;
    } else {
      *reinterpret_cast<uint2*>(p) = make_uint2(lo, hi);
    }
  }
}

// ---- unpack + dequantize ----

template <typename T>
__global__ void dequantize_keys_kernel(CompressedKV kv, T* __restrict__ out, long long out_cap, const int32_t* __restrict__ rows,
                                       const int32_t* __restrict__ tiles, int T_blk) {
  const int j = blockIdx.x, h = blockIdx.y, i = blockIdx.z, d = threadIdx.x;
  const int G = kv.group, hd = kv.hd;
  int b;
  long long t0;
  block_place(kv, i, T_blk / G, rows, tiles, b, t0);
  T* dst = out + ((static_cast<size_t>(i) * kv.nkv + h) * out_cap + static_cast<size_t>(j) * G) * hd + d;
  if (b < 0) {
    for (int t = 0; t < G; ++t) dst[static_cast<size_t>(t) * hd] = from_f<T>(NAN);
    return;
  }
  const LayoutIx ix(kv);
  const size_t r = ix.k_row(b, h, t0 + j, d);
  const float s = ldh(kv.k_scale + r), z = ldh(kv.k_zero + r);
  const uint8_t* row = kv.k_codes + r * static_cast<size_t>(G * kv.bits / 8);
  for (int t = 0; t < G; ++t)
    dst[static_cast<size_t>(t) * hd] = from_f<T>(__fadd_rn(__fmul_rn(static_cast<float>(code_at(row, t, kv.bits)), s), z));
}

// One thread per (i, h, t, channel oct).
template <typename T>
__global__ void dequantize_values_kernel(CompressedKV kv, T* __restrict__ out, long long out_cap, const int32_t* __restrict__ rows,
                                         const int32_t* __restrict__ tiles, int T_blk, long long total) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int no = kv.hd / 8;
  const int o = static_cast<int>(idx % no);
  long long rest = idx / no;
  const int t = static_cast<int>(rest % T_blk);
  rest /= T_blk;
  const int h = static_cast<int>(rest % kv.nkv);
  const int i = static_cast<int>(rest / kv.nkv);
  int b;
  long long t0;
  block_place(kv, i, T_blk / kv.group, rows, tiles, b, t0);
  T* dst = out + ((static_cast<size_t>(i) * kv.nkv + h) * out_cap + t) * kv.hd + o * 8;
  if (b < 0) {
    for (int c = 0; c < 8; ++c) dst[c] = from_f<T>(NAN);
    return;
  }
  const LayoutIx ix(kv);
  const size_t tok = ix.tok(b, h, t0 * kv.group + t);
  const int ng = kv.hd / kv.v_group, g = o * 8 / kv.v_group;
  const float s = ldh(kv.v_scale + tok * ng + g), z = ldh(kv.v_zero + tok * ng + g);
  const uint8_t* row = kv.v_codes + tok * static_cast<size_t>(kv.hd * kv.bits / 8);
  for (int c = 0; c < 8; ++c)
    dst[c] = from_f<T>(__fadd_rn(__fmul_rn(static_cast<float>(code_at(row, o * 8 + c, kv.bits)), s), z));
}

// ---- outlier extraction ----

constexpr int kOutThreads = 256;
constexpr int kMaxPerSide = 2048;

// Block-wide exclusive scan of one int per thread (kOutThreads threads); returns the thread's prefix and
// writes the total to *total. Uses `ws` (kOutThreads / 32 ints of shared memory).
__device__ __forceinline__ int block_exclusive_scan(int v, int* ws, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inc = v;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, inc, off);
    if (lane >= off) inc += n;
  }
  if (lane == 31) ws[warp] = inc;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < kOutThreads / 32; ++w) {
    const int c = ws[w];
    if (w < warp) before += c;
    all += c;
  }
  __syncthreads();  // ws reusable afterwards
  *total = all;
  return before + inc - v;
}

// Orderable key of a float: larger float <-> larger key; -0 and +0 share the key of +0.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f + 0.0f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Element (row r, column c) of block i: per_channel rows are channels h*hd+d over tokens, else tokens over
// the hidden vector h*hd+d. Offsets into [.., nkv, cap, hd].
struct RowMap {
  int nkv, hd;
  long long cap;
  bool per_channel;
  __device__ __forceinline__ size_t at(int i, long long r, long long c) const {
    const long long h = per_channel ? r / hd : c / hd, d = per_channel ? r % hd : c % hd, t = per_channel ? c : r;
    return ((static_cast<size_t>(i) * nkv + h) * cap + static_cast<size_t>(t)) * hd + static_cast<size_t>(d);
  }
};

// Writes side `side`'s k selected entries (sel_key / sel_idx in shared memory, in any order) at their rank: value
// order (side 0 descending, side 1 ascending), ties by the lower column; values are the source's, rounded to fp16.
// Row r of block i; rows = the block's row count. Both extraction kernels end each side with it.
template <typename T>
__device__ __forceinline__ void write_by_rank(const uint32_t* sel_key, const int32_t* sel_idx, int k, int side, const T* x,
                                              const RowMap& src, int i, long long r, long long rows, uint16_t* values,
                                              int32_t* index) {
  for (int e = threadIdx.x; e < k; e += kOutThreads) {
    const uint32_t ke = sel_key[e];
    const int32_t ie = sel_idx[e];
    int rank = 0;
    for (int f = 0; f < k; ++f) {
      const uint32_t kf = sel_key[f];
      rank += (side == 0 ? kf > ke : kf < ke) || (kf == ke && sel_idx[f] < ie);
    }
    const size_t o = (static_cast<size_t>(i) * rows + r) * 2 * k + side * k + rank;
    if (values) values[o] = f2h_rn(to_f(x[src.at(i, r, ie)]));
    if (index) index[o] = ie;
  }
}

// The block's sum of one double a thread (kOutThreads threads) in a fixed order — warp shuffles, then the warps in
// order — so both extraction kernels' inlier means round alike. red: kOutThreads / 32 doubles of shared memory.
__device__ __forceinline__ double block_sum(double v, double* red) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  double all = 0.0;
  for (int w = 0; w < kOutThreads / 32; ++w) all += red[w];
  return all;
}

// grid (rows, n), kOutThreads threads: one row of one block.
template <typename T>
__global__ void __launch_bounds__(kOutThreads)
    extract_outliers_kernel(const T* __restrict__ x, long long x_cap, int T_blk, int nkv, int hd, bool per_channel, int k, long long cols,
                            uint16_t* __restrict__ values, int32_t* __restrict__ index, float* __restrict__ inliers) {
  const long long r = blockIdx.x;
  const int i = blockIdx.y;
  const long long rows = gridDim.x;
  const RowMap src{nkv, hd, x_cap, per_channel}, dst{nkv, hd, T_blk, per_channel};
  auto key_of = [&](long long c) { return order_key(to_f(x[src.at(i, r, c)])); };

  __shared__ int hist[256];
  __shared__ int scan_ws[kOutThreads / 32];
  __shared__ uint32_t sh_prefix;
  __shared__ int sh_need;
  __shared__ long long sh_cut[2];
  __shared__ uint32_t sh_thr[2];
  __shared__ uint32_t sel_key[kMaxPerSide];
  __shared__ int32_t sel_idx[kMaxPerSide];
  __shared__ double red[kOutThreads / 32];

  // side 0: the k largest; side 1: the k smallest among the rest. A column is taken by side s when its key
  // is beyond sh_thr[s], or equal to it and its column is <= sh_cut[s].
  auto top = [&](uint32_t key, long long c) { return key > sh_thr[0] || (key == sh_thr[0] && c <= sh_cut[0]); };
  auto bottom = [&](uint32_t key, long long c) { return key < sh_thr[1] || (key == sh_thr[1] && c <= sh_cut[1]); };

  for (int side = 0; side < (k > 0 ? 2 : 0); ++side) {
    // Radix select, 8 bits at a time from the top: the need-th largest (side 0) / smallest (side 1) key
    // among the candidates.
    if (threadIdx.x == 0) {
      sh_prefix = 0;
      sh_need = k;
    }
    uint32_t mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = threadIdx.x; b < 256; b += kOutThreads) hist[b] = 0;
      __syncthreads();
      const uint32_t prefix = sh_prefix;
      for (long long c = threadIdx.x; c < cols; c += kOutThreads) {
        const uint32_t key = key_of(c);
        if (side == 1 && top(key, c)) continue;
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        int need = sh_need, digit = 0;
        for (int s = 0; s < 256; ++s) {
          const int bin = side == 0 ? 255 - s : s;
          if (hist[bin] >= need) {
            digit = bin;
            break;
          }
          need -= hist[bin];
        }
        sh_need = need;
        sh_prefix = prefix | (static_cast<uint32_t>(digit) << shift);
      }
      mask |= 255u << shift;
      __syncthreads();
    }
    // Ties at the threshold: the sh_need lowest columns with exactly that key.
    const uint32_t thr = sh_prefix;
    const int need = sh_need;
    if (threadIdx.x == 0) {
      sh_thr[side] = thr;
      sh_cut[side] = -1;
    }
    __syncthreads();
    int seen = 0;
    for (long long c0 = 0; c0 < cols && seen < need; c0 += kOutThreads) {
      const long long c = c0 + threadIdx.x;
      int eq = 0;
      if (c < cols) {
        const uint32_t key = key_of(c);
        eq = key == thr && !(side == 1 && top(key, c));
      }
      int total = 0;
      const int before = block_exclusive_scan(eq, scan_ws, &total);
      if (eq && seen + before + 1 == need) sh_cut[side] = c;  // the need-th tie
      seen += total;
    }
    __syncthreads();
    // Compact the side's k columns in column order, then place each by its rank (value order, ties by column).
    int base = 0;
    for (long long c0 = 0; c0 < cols; c0 += kOutThreads) {
      const long long c = c0 + threadIdx.x;
      int in = 0;
      uint32_t key = 0;
      if (c < cols) {
        key = key_of(c);
        in = side == 0 ? top(key, c) : (!top(key, c) && bottom(key, c));
      }
      int total = 0;
      const int before = block_exclusive_scan(in, scan_ws, &total);
      if (in && base + before < k) {
        sel_key[base + before] = key;
        sel_idx[base + before] = static_cast<int32_t>(c);
      }
      base += total;
    }
    __syncthreads();
    write_by_rank(sel_key, sel_idx, k, side, x, src, i, r, rows, values, index);
    __syncthreads();
  }
  if (!inliers) return;
  // Mean of the cols - 2k other entries, in float64, rounded once to float32.
  float mean = 0.f;
  if (k > 0) {
    double sum = 0.0;
    for (long long c = threadIdx.x; c < cols; c += kOutThreads) {
      const float v = to_f(x[src.at(i, r, c)]);
      const uint32_t key = order_key(v);
      if (!top(key, c) && !bottom(key, c)) sum += static_cast<double>(v);
    }
    mean = static_cast<float>(block_sum(sum, red) / static_cast<double>(cols - 2LL * k));
  }
  for (long long c = threadIdx.x; c < cols; c += kOutThreads) {
    const float v = to_f(x[src.at(i, r, c)]);
    bool picked = false;
    if (k > 0) {
      const uint32_t key = order_key(v);
      picked = top(key, c) || bottom(key, c);
    }
    inliers[dst.at(i, r, c)] = picked ? mean : v;
  }
}

// The same selection for fp16 sources of at most 16 columns a thread (rows of up to 4096 entries: a 7B token's
// value vector, a streamed or prompt block's key channel), which is every block GEAR compresses from an fp16 model.
// extract_outliers_kernel re-read the row for each of its 8 radix passes, scanned the 256 bins by one thread and
// found ties by a block scan per 256 columns: ~400 us a layer at batch 22 (ncu, H100), a third of a compressing
// step. Here the row sits in registers as 16-bit keys (a half converts to float exactly and in order, so its key
// orders and ties exactly as order_key of the float does: 2 passes, not 4), the histogram's same-bin atomics are
// merged per warp, the bin is found by a block scan, ties are scanned only when some must be left out, and the
// selected entries are compacted in one scan (their order there does not matter: each is placed by its rank).
// Same entries, order, ties and inliers as extract_outliers_kernel (tests compare both with the reference).
__device__ __forceinline__ uint32_t order_key16(uint16_t h) {
  if (h == 0x8000u) h = 0;  // -0 shares the key of +0
  return (h & 0x8000u) ? (~static_cast<uint32_t>(h) & 0xFFFFu) : (static_cast<uint32_t>(h) | 0x8000u);
}

template <int NPT>
__global__ void __launch_bounds__(kOutThreads)
    extract_outliers_half_kernel(const __half* __restrict__ x, long long x_cap, int T_blk, int nkv, int hd, bool per_channel, int k,
                                 int cols, uint16_t* __restrict__ values, int32_t* __restrict__ index, float* __restrict__ inliers) {
  const long long r = blockIdx.x;
  const int i = blockIdx.y, tid = threadIdx.x, lane = tid & 31;
  const long long rows = gridDim.x;
  const RowMap src{nkv, hd, x_cap, per_channel}, dst{nkv, hd, T_blk, per_channel};

  __shared__ int hist[256];
  __shared__ int scan_ws[kOutThreads / 32];
  __shared__ int sh_digit, sh_need, sh_eq, sh_cut;
  __shared__ uint32_t sel_key[kMaxPerSide];
  __shared__ int32_t sel_idx[kMaxPerSide];
  __shared__ double red[kOutThreads / 32];

  uint32_t key[NPT];
  uint32_t neg_zero = 0;  // bit m: entry m is -0 (its key is +0's)
#pragma unroll
  for (int m = 0; m < NPT; ++m) {
    const int c = tid + m * kOutThreads;
    key[m] = 0;
    if (c < cols) {
      const uint16_t h = __half_as_ushort(x[src.at(i, r, c)]);
      key[m] = order_key16(h);
      if (h == 0x8000u) neg_zero |= 1u << m;
    }
  }
  // side 0 takes a column when its key is above thr[0], or equal and the column is <= cut[0]; side 1 below thr[1].
  // (scalars, not arrays indexed by side: those would live in local memory)
  uint32_t thr0 = 0, thr1 = 0;
  int cut0 = -1, cut1 = -1;
  auto top = [&](uint32_t kk, int c) { return kk > thr0 || (kk == thr0 && c <= cut0); };
  auto bottom = [&](uint32_t kk, int c) { return kk < thr1 || (kk == thr1 && c <= cut1); };

  for (int side = 0; side < (k > 0 ? 2 : 0); ++side) {
    // Radix select over the candidates (side 1: those side 0 did not take), high byte then low byte.
    uint32_t prefix = 0;
    int need = k;
    for (int pass = 0; pass < 2; ++pass) {
      const int shift = pass == 0 ? 8 : 0;
      hist[tid] = 0;  // kOutThreads == 256 bins
      __syncthreads();
#pragma unroll
      for (int m = 0; m < NPT; ++m) {
        const int c = tid + m * kOutThreads;
        const bool in = c < cols && !(side == 1 && top(key[m], c)) && (pass == 0 || (key[m] >> 8) == (prefix >> 8));
        const int bin = in ? static_cast<int>((key[m] >> shift) & 255u) : 256;
        const unsigned peers = __match_any_sync(0xffffffffu, bin);
        if (in && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
      }
      __syncthreads();
      const int b = side == 0 ? 255 - tid : tid;  // bins in the order the side takes them
      const int cnt = hist[b];
      int total = 0;
      const int before = block_exclusive_scan(cnt, scan_ws, &total);
      if (before < need && before + cnt >= need) sh_digit = b, sh_need = need - before, sh_eq = cnt;
      __syncthreads();
      prefix |= static_cast<uint32_t>(sh_digit) << shift;
      need = sh_need;
    }
    // Ties at the threshold: all of them when exactly `need` candidates hold it (sh_eq, the last bin's count), else
    // the `need` lowest columns, found by a scan in column order (chunks of kOutThreads columns).
    const int eq_count = sh_eq;
    int side_cut = 0x7fffffff;
    if (eq_count != need) {
      if (tid == 0) sh_cut = -1;
      int seen = 0;
#pragma unroll
      for (int m = 0; m < NPT; ++m) {
        const int c = tid + m * kOutThreads;
        if (m * kOutThreads < cols && seen < need) {  // uniform across the block
          const bool eq = c < cols && key[m] == prefix && !(side == 1 && top(key[m], c));
          int total = 0;
          const int before = block_exclusive_scan(eq ? 1 : 0, scan_ws, &total);
          if (eq && seen + before + 1 == need) sh_cut = c;
          seen += total;
        }
      }
      __syncthreads();
      side_cut = sh_cut;
    }
    if (side == 0)
      thr0 = prefix, cut0 = side_cut;
    else
      thr1 = prefix, cut1 = side_cut;
    // The side's k entries, compacted in any order, each placed by its rank (value order, ties by column).
    int mine = 0;
#pragma unroll
    for (int m = 0; m < NPT; ++m) {
      const int c = tid + m * kOutThreads;
      mine += c < cols && (side == 0 ? top(key[m], c) : (!top(key[m], c) && bottom(key[m], c)));
    }
    int total = 0;
    int at = block_exclusive_scan(mine, scan_ws, &total);
#pragma unroll
    for (int m = 0; m < NPT; ++m) {
      const int c = tid + m * kOutThreads;
      if (c < cols && (side == 0 ? top(key[m], c) : (!top(key[m], c) && bottom(key[m], c)))) {
        if (at < k) sel_key[at] = key[m], sel_idx[at] = c;
        ++at;
      }
    }
    __syncthreads();
    write_by_rank(sel_key, sel_idx, k, side, x, src, i, r, rows, values, index);
    __syncthreads();
  }
  if (!inliers) return;
  auto value_of = [&](int m) {  // the entry's float from its key
    const uint32_t kk = key[m];
    const uint16_t h = (neg_zero >> m) & 1u ? 0x8000u : static_cast<uint16_t>((kk & 0x8000u) ? (kk & 0x7FFFu) : (~kk & 0xFFFFu));
    return h2f(h);
  };
  // Mean of the cols - 2k other entries, in float64 in extract_outliers_kernel's order, rounded once to float32.
  float mean = 0.f;
  if (k > 0) {
    double sum = 0.0;
#pragma unroll
    for (int m = 0; m < NPT; ++m) {
      const int c = tid + m * kOutThreads;
      if (c < cols && !top(key[m], c) && !bottom(key[m], c)) sum += static_cast<double>(value_of(m));
    }
    mean = static_cast<float>(block_sum(sum, red) / static_cast<double>(cols - 2LL * k));
  }
#pragma unroll
  for (int m = 0; m < NPT; ++m) {
    const int c = tid + m * kOutThreads;
    if (c < cols) inliers[dst.at(i, r, c)] = (k > 0 && (top(key[m], c) || bottom(key[m], c))) ? mean : value_of(m);
  }
}

// ---- the outliers back into a dequantized block ----

// One thread an entry of [n, rows, 2k]; its place ((i*nkv + h)*T + t)*hd + d in out. An index out of the row is
// skipped (extract_outliers never writes one).
__global__ void scatter_outliers_kernel(const uint16_t* __restrict__ values, const int32_t* __restrict__ index, long long total,
                                        int T, int nkv, int hd, bool per_channel, int per_row, long long rows, float* __restrict__ out) {
  const long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= total) return;
  const long long row = e / per_row, i = row / rows, r = row - i * rows;
  const long long c = index[e];
  long long h, d, t;
  if (per_channel) {  // rows = channels h*hd + d, index = token
    h = r / hd, d = r - h * hd, t = c;
    if (c < 0 || c >= T) return;
  } else {  // rows = tokens, index = h*hd + d
    t = r, h = c / hd, d = c - h * hd;
    if (c < 0 || c >= static_cast<long long>(nkv) * hd) return;
  }
  out[((i * nkv + h) * T + t) * hd + d] = h2f(values[e]);
}

// ---- the sparse store ----

constexpr int kSpThreads = 256;

// Calls f(pos, value) for every outlier of block i that falls into tile j of head h (see kernels.h).
template <typename F>
__device__ __forceinline__ void for_tile_entries(const CompressedKV& kv, bool keys, const uint16_t* values, const int32_t* index,
                                                 int i, int T_blk, int k, int h, int j, F&& f) {
  const int G = kv.group, hd = kv.hd, per = 2 * k;
  if (keys) {
    const size_t base = (static_cast<size_t>(i) * kv.nkv * hd + static_cast<size_t>(h) * hd) * per;
    for (int e = threadIdx.x; e < hd * per; e += blockDim.x) {
      const int32_t t = index[base + e];
      if (t >= j * G && t < (j + 1) * G && t < T_blk) f((t - j * G) * hd + e / per, values[base + e]);
    }
  } else {
    const size_t base = (static_cast<size_t>(i) * T_blk + static_cast<size_t>(j) * G) * per;
    const int32_t lo = h * hd, hi = lo + hd;
    for (int e = threadIdx.x; e < G * per; e += blockDim.x) {
      const int32_t c = index[base + e];
      if (c >= lo && c < hi) f((e / per) * hd + (c - lo), values[base + e]);
    }
  }
}

// grid (T/G, nkv, n): the number of entries of each tile, into sp_off[tile + 1] (the scan makes them offsets).
__global__ void __launch_bounds__(kSpThreads) sparse_count_kernel(CompressedKV kv, bool keys, const uint16_t* __restrict__ values,
                                                                  const int32_t* __restrict__ index, const int32_t* __restrict__ rows,
                                                                  const int32_t* __restrict__ tiles, int T_blk, int k) {
  const int j = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
  int b;
  long long t0;
  block_place(kv, i, T_blk / kv.group, rows, tiles, b, t0);
  if (b < 0) return;
  int count = 0;
  for_tile_entries(kv, keys, values, index, i, T_blk, k, h, j, [&](int, uint16_t) { ++count; });
  __shared__ int red[kSpThreads / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) count += __shfl_xor_sync(0xffffffffu, count, off);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    int all = 0;
    for (int w = 0; w < kSpThreads / 32; ++w) all += red[w];
    const LayoutIx ix(kv);
    (keys ? kv.k_sp_off : kv.v_sp_off)[ix.sp_off(b, h) + t0 + j + 1] = all;
  }
}

// grid (nkv), one thread: counts -> offsets from sp_off[first tile], clamped to sparse_cap, block after block
// in order (a block may start where an earlier block of the same call ends). On overflow *overflow becomes at
// least the entries its (row, head) pool would have needed (atomicMax over the heads), so the caller can grow
// the pools to what the data asks for instead of to a worst case.
__global__ void sparse_scan_kernel(CompressedKV kv, bool keys, const int32_t* __restrict__ rows, const int32_t* __restrict__ tiles,
                                   int n, int T_blk, int32_t* overflow) {
  if (threadIdx.x != 0) return;
  const int h = blockIdx.x;
  const LayoutIx ix(kv);
  long long need = 0;  // the largest unclamped end of a block in this head's pools; > sparse_cap: overflow
  bool bad_start = false;
  for (int i = 0; i < n; ++i) {
    int b;
    long long t0;
    block_place(kv, i, T_blk / kv.group, rows, tiles, b, t0);
    if (b < 0) continue;
    int32_t* off = (keys ? kv.k_sp_off : kv.v_sp_off) + ix.sp_off(b, h);
    long long run = off[t0];
    if (run < 0 || run > kv.sparse_cap) bad_start = true;
    run = clamp_to_pool(run, kv.sparse_cap);
    off[t0] = static_cast<int32_t>(run);
    long long unclamped = run;
    for (long long j = 0; j < T_blk / kv.group; ++j) {
      unclamped += off[t0 + j + 1];
      run = min(unclamped, kv.sparse_cap);
      off[t0 + j + 1] = static_cast<int32_t>(run);
    }
    need = max(need, unclamped);
  }
  if (bad_start) need = max(need, kv.sparse_cap + 1);
  if (need > kv.sparse_cap && overflow) atomicMax(overflow, static_cast<int32_t>(min(need, 0x7fffffffll)));
}

// grid (T/G, nkv, n), dynamic shared memory G*hd fp16 values + G*hd bits: the tile's entries land on their
// positions, and a scan writes them out in position order.
__global__ void __launch_bounds__(kSpThreads) sparse_scatter_kernel(CompressedKV kv, bool keys, const uint16_t* __restrict__ values,
                                                                    const int32_t* __restrict__ index, const int32_t* __restrict__ rows,
                                                                    const int32_t* __restrict__ tiles, int T_blk, int k) {
  extern __shared__ uint32_t smem[];
  const int j = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
  int b;
  long long t0;
  block_place(kv, i, T_blk / kv.group, rows, tiles, b, t0);
  if (b < 0) return;
  const int slots = kv.group * kv.hd, words = slots / 32;
  uint32_t* bits = smem;
  uint16_t* val = reinterpret_cast<uint16_t*>(smem + words);
  for (int w = threadIdx.x; w < words; w += blockDim.x) bits[w] = 0;
  __syncthreads();
  for_tile_entries(kv, keys, values, index, i, T_blk, k, h, j, [&](int pos, uint16_t v) {
    val[pos] = v;
    atomicOr(&bits[pos >> 5], 1u << (pos & 31));
  });
  __syncthreads();
  // Thread w takes words [w0, w1): counts, scans, writes in order.
  const int per = (words + kSpThreads - 1) / kSpThreads;
  const int w0 = min(words, static_cast<int>(threadIdx.x) * per), w1 = min(words, w0 + per);
  int mine = 0;
  for (int w = w0; w < w1; ++w) mine += __popc(bits[w]);
  __shared__ int scan_ws[kSpThreads / 32];
  int total = 0;
  const int before = block_exclusive_scan(mine, scan_ws, &total);
  const LayoutIx ix(kv);
  const int32_t* off = (keys ? kv.k_sp_off : kv.v_sp_off) + ix.sp_off(b, h);
  uint16_t* pos_out = (keys ? kv.k_sp_pos : kv.v_sp_pos) + ix.sp(b, h);
  // A pool without values (corrections only, kernels.h) takes each value (fp16) in its correction's slot.
  uint16_t* val_out = (keys ? kv.k_sp_val : kv.v_sp_val) ? (keys ? kv.k_sp_val : kv.v_sp_val) + ix.sp(b, h) : nullptr;
  uint16_t* raw_out = val_out ? nullptr : (keys ? kv.k_sp_corr : kv.v_sp_corr) + ix.sp(b, h);
  const long long start = off[t0 + j], end = off[t0 + j + 1];
  long long o = start + before;
  for (int w = w0; w < w1; ++w) {
    uint32_t m = bits[w];
    while (m) {
      const int bit = __ffs(m) - 1;
      m &= m - 1;
      const int pos = w * 32 + bit;
      if (o < end) {
        pos_out[o] = static_cast<uint16_t>(pos);
        if (val_out) val_out[o] = val[pos];
        else raw_out[o] = val[pos];
      }
      ++o;
    }
  }
}

// ---- host side ----

// The fp16 correction stored for an outlier (bits `outlier`) whose exact correction is c = outlier - rest (rest:
// dequant + low rank, float32): of the fp16 values nearest c and its two fp16 neighbours, the one for which
// rest + correction is nearest the outlier — the reconstruction (GearCudaCache::reconstruct rounds rest +
// correction to fp16) then returns the outlier wherever one of them can, else its neighbour.
__device__ __forceinline__ uint16_t correction_half(uint16_t outlier, float c) {
  const uint16_t h = f2h_rn(c);
  if (!isfinite(c) || (h & 0x7C00u) == 0x7C00u) return h;
  const float o = h2f(outlier), rest = o - c;
  uint16_t best = h;
  float err = fabsf(rest + h2f(h) - o);
  for (const uint16_t n : {static_cast<uint16_t>(h + 1u), static_cast<uint16_t>(h - 1u)}) {
    if ((n & 0x7C00u) == 0x7C00u) continue;  // past the largest finite value (or wrapped through zero): not a neighbour
    const float e = fabsf(rest + h2f(n) - o);
    if (e < err) best = n, err = e;
  }
  return best;
}

// grid (ntiles, nkv, n), kSpThreads threads: one tile of one kv head of block i; a thread per entry, both sides.
__global__ void __launch_bounds__(kSpThreads) outlier_corrections_kernel(CompressedKV kv, const int32_t* __restrict__ rows,
                                                                         const int32_t* __restrict__ tiles) {
  const int b = rows[blockIdx.z], h = blockIdx.y;
  const long long tile = static_cast<long long>(tiles[blockIdx.z]) + blockIdx.x;
  if (b < 0 || b >= kv.B || tile < 0 || tile >= kv.tile_cap) return;
  const LayoutIx ix(kv);
  for (int side = 0; side < 2; ++side) {
    const int32_t* off = (side ? kv.v_sp_off : kv.k_sp_off) + ix.sp_off(b, h) + tile;
    const long long lo = clamp_to_pool(off[0], kv.sparse_cap), hi = max(lo, clamp_to_pool(off[1], kv.sparse_cap));
    const uint16_t* pos = (side ? kv.v_sp_pos : kv.k_sp_pos) + ix.sp(b, h);
    const uint16_t* val = (side ? kv.v_sp_val : kv.k_sp_val);
    if (val) val += ix.sp(b, h);
    uint16_t* corr = (side ? kv.v_sp_corr : kv.k_sp_corr) + ix.sp(b, h);
    for (long long e = lo + threadIdx.x; e < hi; e += blockDim.x) {
      const int p = pos[e], lt = p / kv.hd, d = p - lt * kv.hd;
      // Without values, sparse_to_tiles left the value itself in the correction's slot: replaced in place.
      const uint16_t outlier = val ? val[e] : corr[e];
      // A position outside the tile (a malformed layout) is ignored by the attention kernels: 0 here.
      corr[e] = lt < kv.group ? correction_half(outlier, entry_correction(kv, ix, side == 1, b, h, tile, lt, d, h2f(outlier))) : 0;
    }
  }
}

void check_blocks(const char* name, const CompressedKV& kv, long long cap, int n, int T) {
  check_layout(name, kv);
  if (n < 0 || T <= 0 || T % kv.group != 0 || cap < T)
    fail(name, "bad block shape n=" + std::to_string(n) + " T=" + std::to_string(T) + " cap=" + std::to_string(cap) +
                   " (T a multiple of the key group " + std::to_string(kv.group) + ")");
  if (n > 65535 || kv.nkv > 65535) fail(name, "too many blocks or heads for the grid");
}

template <typename F> void dispatch_bits(int bits, F&& f) {
  switch (bits) {
    case 2: f(std::integral_constant<int, 2>{}); return;
    case 4: f(std::integral_constant<int, 4>{}); return;
    default: f(std::integral_constant<int, 8>{}); return;
  }
}

unsigned blocks_for(long long total, int threads) { return static_cast<unsigned>((total + threads - 1) / threads); }

}  // namespace

void quantize_keys(DType t, const void* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                   const int32_t* dst_tile, void* stream, bool whole_block) {
  const char* name = "quantize_keys";
  check_blocks(name, kv, x_cap, n, T);
  if (n == 0 || kv.B == 0) return;
  if (!x || !kv.k_codes || !kv.k_scale || !kv.k_zero) fail(name, "null pointer");
  const dim3 grid(static_cast<unsigned>(T / kv.group), static_cast<unsigned>(kv.nkv), static_cast<unsigned>(n));
  // Whole-block ranges: up to 1024 threads a head, Y token lanes per channel.
  const int Y = std::max(1, std::min(1024 / kv.hd, T));
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    dispatch_bits(kv.bits, [&](auto bits_c) {
      constexpr int BITS = decltype(bits_c)::value;
      if (whole_block)
        key_block_params_kernel<E, BITS><<<dim3(static_cast<unsigned>(kv.nkv), static_cast<unsigned>(n)), dim3(kv.hd, Y),
                                           2 * Y * kv.hd * sizeof(float), as_stream(stream)>>>(static_cast<const E*>(x), x_cap, kv,
                                                                                              dst_row, dst_tile, T);
      quantize_keys_kernel<E, BITS><<<grid, kv.hd, 0, as_stream(stream)>>>(static_cast<const E*>(x), x_cap, kv, dst_row, dst_tile,
                                                                           T, whole_block);
    });
  });
  check_launch(name);
}

void quantize_values(DType t, const void* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                     const int32_t* dst_tile, void* stream) {
  const char* name = "quantize_values";
  check_blocks(name, kv, x_cap, n, T);
  if (n == 0 || kv.B == 0) return;
  if (!x || !kv.v_codes || !kv.v_scale || !kv.v_zero) fail(name, "null pointer");
  const long long total = static_cast<long long>(n) * kv.nkv * T * kv.value_groups();
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    dispatch_bits(kv.bits, [&](auto bits_c) {
      quantize_values_kernel<E, decltype(bits_c)::value><<<blocks_for(total, 128), 128, 0, as_stream(stream)>>>(
          static_cast<const E*>(x), x_cap, kv, dst_row, dst_tile, T, total);
    });
  });
  check_launch(name);
}

void dequantize_keys(const CompressedKV& kv, DType t, void* out, long long out_cap, int n, int T, const int32_t* src_row,
                     const int32_t* src_tile, void* stream) {
  const char* name = "dequantize_keys";
  check_blocks(name, kv, out_cap, n, T);
  if (n == 0) return;
  if (!out || (kv.B > 0 && (!kv.k_codes || !kv.k_scale || !kv.k_zero))) fail(name, "null pointer");
  const dim3 grid(static_cast<unsigned>(T / kv.group), static_cast<unsigned>(kv.nkv), static_cast<unsigned>(n));
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    dequantize_keys_kernel<E><<<grid, kv.hd, 0, as_stream(stream)>>>(kv, static_cast<E*>(out), out_cap, src_row, src_tile, T);
  });
  check_launch(name);
}

void dequantize_values(const CompressedKV& kv, DType t, void* out, long long out_cap, int n, int T, const int32_t* src_row,
                       const int32_t* src_tile, void* stream) {
  const char* name = "dequantize_values";
  check_blocks(name, kv, out_cap, n, T);
  if (n == 0) return;
  if (!out || (kv.B > 0 && (!kv.v_codes || !kv.v_scale || !kv.v_zero))) fail(name, "null pointer");
  const long long total = static_cast<long long>(n) * kv.nkv * T * (kv.hd / 8);
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    dequantize_values_kernel<E><<<blocks_for(total, 128), 128, 0, as_stream(stream)>>>(kv, static_cast<E*>(out), out_cap, src_row,
                                                                                       src_tile, T, total);
  });
  check_launch(name);
}

void extract_outliers(DType t, const void* x, long long x_cap, int n, int T, int nkv, int hd, bool per_channel, int k,
                      uint16_t* values, int32_t* index, float* inliers, void* stream) {
  const char* name = "extract_outliers";
  if (n < 0 || T <= 0 || nkv <= 0 || hd <= 0 || x_cap < T)
    fail(name, "bad shape n=" + std::to_string(n) + " T=" + std::to_string(T) + " nkv=" + std::to_string(nkv) + " hd=" +
                   std::to_string(hd) + " x_cap=" + std::to_string(x_cap));
  const long long rows = per_channel ? static_cast<long long>(nkv) * hd : T;
  const long long cols = per_channel ? T : static_cast<long long>(nkv) * hd;
  if (k < 0 || k > kMaxPerSide || (k > 0 && 2LL * k >= cols))
    fail(name, "k = " + std::to_string(k) + " outliers per side do not fit rows of " + std::to_string(cols) +
                   " (1 <= 2k < cols, k <= " + std::to_string(kMaxPerSide) + ")");
  if (n == 0 || (k == 0 && !inliers)) return;
  if (n > 65535 || rows > 0x7fffffffLL) fail(name, "grid too large");
  if (!x || (k > 0 && (!values || !index))) fail(name, "null pointer");
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(n));
  // The register path (extract_outliers_half_kernel). (An instantiation of 4 or 8 columns a thread spilled with
  // ptxas 13.0; 16 does not, and serves those rows with its upper slots idle.)
  if (t == DType::F16 && cols <= 16LL * kOutThreads) {
    const __half* xh = static_cast<const __half*>(x);
    const int c = static_cast<int>(cols);
    if (cols <= kOutThreads)
      extract_outliers_half_kernel<1><<<grid, kOutThreads, 0, as_stream(stream)>>>(xh, x_cap, T, nkv, hd, per_channel, k, c, values, index, inliers);
    else
      extract_outliers_half_kernel<16><<<grid, kOutThreads, 0, as_stream(stream)>>>(xh, x_cap, T, nkv, hd, per_channel, k, c, values, index, inliers);
    check_launch(name);
    return;
  }
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    extract_outliers_kernel<E><<<grid, kOutThreads, 0, as_stream(stream)>>>(static_cast<const E*>(x), x_cap, T, nkv, hd, per_channel, k,
                                                                           cols, values, index, inliers);
  });
  check_launch(name);
}

void scatter_outliers(const uint16_t* values, const int32_t* index, int n, int T, int nkv, int hd, bool per_channel, int k,
                      float* out, void* stream) {
  const char* name = "scatter_outliers";
  const long long rows = per_channel ? static_cast<long long>(nkv) * hd : T;
  const long long cols = per_channel ? T : static_cast<long long>(nkv) * hd;
  if (n < 0 || T <= 0 || nkv <= 0 || hd <= 0 || k < 0 || 2LL * k > cols)
    fail(name, "bad shape n=" + std::to_string(n) + " T=" + std::to_string(T) + " nkv=" + std::to_string(nkv) + " hd=" +
                   std::to_string(hd) + " k=" + std::to_string(k));
  const long long total = static_cast<long long>(n) * rows * 2 * k;
  if (total == 0) return;
  if (!values || !index || !out) fail(name, "null pointer");
  scatter_outliers_kernel<<<blocks_for(total, 256), 256, 0, as_stream(stream)>>>(values, index, total, T, nkv, hd, per_channel,
                                                                                2 * k, rows, out);
  check_launch(name);
}

void sparse_to_tiles(const CompressedKV& kv, bool keys, const uint16_t* values, const int32_t* index, int n, int T, int k,
                     const int32_t* dst_row, const int32_t* dst_tile, int32_t* overflow, void* stream) {
  const char* name = "sparse_to_tiles";
  check_blocks(name, kv, T, n, T);
  if (kv.sparse_cap <= 0) fail(name, "the layout has no sparse arrays (sparse_cap 0)");
  if (k < 0) fail(name, "negative k");
  const int slots = kv.group * kv.hd;
  if (slots > 16384) fail(name, "tiles of " + std::to_string(kv.group) + "x" + std::to_string(kv.hd) + " are too large (G*hd <= 16384)");
  if (n == 0 || kv.B == 0) return;
  if ((k > 0 && (!values || !index)) || !(keys ? kv.k_sp_off : kv.v_sp_off) || !(keys ? kv.k_sp_pos : kv.v_sp_pos) ||
      (!(keys ? kv.k_sp_val : kv.v_sp_val) && !(keys ? kv.k_sp_corr : kv.v_sp_corr)))
    fail(name, "null pointer");
  const dim3 tile_grid(static_cast<unsigned>(T / kv.group), static_cast<unsigned>(kv.nkv), static_cast<unsigned>(n));
  cudaStream_t s = as_stream(stream);
  sparse_count_kernel<<<tile_grid, kSpThreads, 0, s>>>(kv, keys, values, index, dst_row, dst_tile, T, k);
  check_launch("sparse_to_tiles (count)");
  sparse_scan_kernel<<<static_cast<unsigned>(kv.nkv), 32, 0, s>>>(kv, keys, dst_row, dst_tile, n, T, overflow);
  check_launch("sparse_to_tiles (scan)");
  const size_t smem = static_cast<size_t>(slots / 32) * 4 + static_cast<size_t>(slots) * 2;
  sparse_scatter_kernel<<<tile_grid, kSpThreads, smem, s>>>(kv, keys, values, index, dst_row, dst_tile, T, k);
  check_launch("sparse_to_tiles (scatter)");
}

void outlier_corrections(const CompressedKV& kv, const int32_t* dst_row, const int32_t* dst_tile, int n, int ntiles, void* stream) {
  const char* name = "outlier_corrections";
  check_layout(name, kv);
  if (n < 0 || ntiles < 0) fail(name, "negative n or ntiles");
  if (kv.sparse_cap <= 0) fail(name, "the layout has no sparse arrays (sparse_cap 0)");
  if (n == 0 || ntiles == 0 || kv.B == 0) return;
  if (!dst_row || !dst_tile || !kv.k_sp_off || !kv.k_sp_pos || !kv.v_sp_off || !kv.v_sp_pos ||
      !kv.k_sp_corr || !kv.v_sp_corr || !kv.k_codes || !kv.k_scale || !kv.k_zero || !kv.v_codes || !kv.v_scale || !kv.v_zero ||
      (kv.rank > 0 && (!kv.lr_block || !kv.k_lr_a || !kv.k_lr_b || !kv.v_lr_a || !kv.v_lr_b)))
    fail(name, "null pointer");
  if (n > 65535 || kv.nkv > 65535) fail(name, "grid too large (n or nkv)");
  const dim3 grid(static_cast<unsigned>(ntiles), static_cast<unsigned>(kv.nkv), static_cast<unsigned>(n));
  outlier_corrections_kernel<<<grid, kSpThreads, 0, as_stream(stream)>>>(kv, dst_row, dst_tile);
  check_launch(name);
}

}  // namespace gear::kernels
