#pragma once
// Device-side helpers for the GEAR / KIVI compressed layout (CompressedKV, kernels/kernels.h): offsets of
// its arrays, fp16 bit patterns, and loading / decoding packed codes. CUDA only.
#include "kernels/code_bits.h"
#include "kernels/dtype.cuh"

namespace gear::kernels::detail {

// fp16 bits <-> float32.
__device__ __forceinline__ float h2f(uint16_t u) { return __half2float(__ushort_as_half(u)); }
__device__ __forceinline__ uint16_t f2h_rn(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ uint16_t f2h_rd(float f) { return __half_as_ushort(__float2half_rd(f)); }
__device__ __forceinline__ uint16_t f2h_ru(float f) { return __half_as_ushort(__float2half_ru(f)); }
__device__ __forceinline__ float ldh(const uint16_t* p) { return h2f(__ldg(p)); }

// A code c < 2^23 as float32, exactly: the bits of 2^23 + c minus 2^23 (no integer-to-float conversion).
__device__ __forceinline__ float code_f(uint32_t c) { return __uint_as_float(0x4B000000u | c) - 8388608.f; }

// Eight consecutive codes of `BITS` bits (BITS bytes, aligned to min(BITS, 8) bytes), first code lowest.
template <int BITS> struct Oct {
  uint32_t lo = 0, hi = 0;
  __device__ __forceinline__ void load(const uint8_t* p) {
    if constexpr (BITS == 2) {
      lo = __ldg(reinterpret_cast<const unsigned short*>(p));
    } else if constexpr (BITS == 4) {
      lo = __ldg(reinterpret_cast<const unsigned int*>(p));
    } else {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
      lo = v.x;
      hi = v.y;
    }
  }
  __device__ __forceinline__ uint32_t code(int j) const {  // j a compile-time constant after unrolling
    constexpr uint32_t mask = (1u << BITS) - 1u;
    if constexpr (BITS == 8) return ((j < 4 ? lo : hi) >> ((j & 3) * 8)) & mask;
    return (lo >> (j * BITS)) & mask;
  }
  // The same from shared memory (or any generic pointer), plain loads.
  __device__ __forceinline__ void load_plain(const uint8_t* p) {
    if constexpr (BITS == 2) {
      lo = *reinterpret_cast<const unsigned short*>(p);
    } else if constexpr (BITS == 4) {
      lo = *reinterpret_cast<const unsigned int*>(p);
    } else {
      const uint2 v = *reinterpret_cast<const uint2*>(p);
      lo = v.x;
      hi = v.y;
    }
  }
  __device__ __forceinline__ void decode(float (&f)[8]) const {
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = code_f(code(j));
  }
  // 2-bit codes only: f_j = 1 + eps(j) * c_j, exactly (kernels/code_bits.h: 1.5 integer instructions per code
  // and no float subtraction, where decode() takes a shift, a LOP3 and an FADD); the caller keeps sum x to
  // recover sum x c = (sum x f - sum x) / eps(j) (codes::biased_eps).
  __device__ __forceinline__ void decode_biased(float (&f)[8]) const {
    static_assert(BITS == 2, "decode_biased packs 2-bit codes");
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = __uint_as_float(codes::biased_bits(lo, j));
  }
};

// One code of a packed row (code i of the row).
__device__ __forceinline__ uint32_t code_at(const uint8_t* row, int i, int bits) {
  const int per = 8 / bits;
  return (static_cast<uint32_t>(__ldg(row + i / per)) >> ((i % per) * bits)) & ((1u << bits) - 1u);
}

// The same through a plain (e.g. shared-memory) load.
__device__ __forceinline__ uint32_t code_at_plain(const uint8_t* row, int i, int bits) {
  const int per = 8 / bits;
  return (static_cast<uint32_t>(row[i / per]) >> ((i % per) * bits)) & ((1u << bits) - 1u);
}

// Asynchronous 16-byte global -> shared copies (sm_80+), committed and waited for in groups. cp_async16_s takes the
// destination as a shared-window address (bytes), for callers that keep their destinations as 32-bit offsets.
__device__ __forceinline__ void cp_async16_s(unsigned smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  cp_async16_s(static_cast<unsigned>(__cvta_generic_to_shared(smem)), gmem);
}
// The same copy of which only the first src_bytes (0..16) are read; the rest of the 16 bytes is zero-filled.
__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
// bytes (a multiple of 16, both ends 16-byte aligned) copied by the nthreads threads of the block.
__device__ __forceinline__ void copy_async(void* smem, const void* gmem, int bytes, int nthreads) {
  for (int i = static_cast<int>(threadIdx.x) * 16; i < bytes; i += nthreads * 16)
    cp_async16(static_cast<uint8_t*>(smem) + i, static_cast<const uint8_t*>(gmem) + i);
}

// Element offsets of the layout's arrays (see kernels.h).
struct LayoutIx {
  int nkv, hd;
  long long tile_cap, token_cap, lr_cap, sparse_cap;
  int rank, buf_cap;
  __host__ __device__ explicit LayoutIx(const CompressedKV& c)
      : nkv(c.nkv), hd(c.hd), tile_cap(c.tile_cap), token_cap(c.tile_cap * c.group), lr_cap(c.lr_cap),
        sparse_cap(c.sparse_cap), rank(c.rank), buf_cap(c.buf_cap) {}
  __device__ __forceinline__ size_t bh(int b, int h) const { return static_cast<size_t>(b) * nkv + h; }
  // Row (channel d of tile `tile`): k_scale / k_zero index; times key_row_bytes for k_codes.
  __device__ __forceinline__ size_t k_row(int b, int h, long long tile, int d) const {
    return (bh(b, h) * static_cast<size_t>(tile_cap) + static_cast<size_t>(tile)) * hd + d;
  }
  __device__ __forceinline__ size_t tok(int b, int h, long long t) const {
    return bh(b, h) * static_cast<size_t>(token_cap) + static_cast<size_t>(t);
  }
  __device__ __forceinline__ size_t lr_b(int b, int h, long long l, int r) const {
    return ((bh(b, h) * static_cast<size_t>(lr_cap) + static_cast<size_t>(l)) * rank + r) * hd;
  }
  __device__ __forceinline__ size_t sp_off(int b, int h) const { return bh(b, h) * static_cast<size_t>(tile_cap + 1); }
  __device__ __forceinline__ size_t sp(int b, int h) const { return bh(b, h) * static_cast<size_t>(sparse_cap); }
  __device__ __forceinline__ size_t buf(int b, int h, long long i) const {
    return (bh(b, h) * static_cast<size_t>(buf_cap) + static_cast<size_t>(i)) * hd;
  }
};

// A sparse-pool offset read from the layout, clamped into [0, cap] (cap = sparse_cap): a malformed layout cannot
// send a kernel outside its (row, head) pool.
__device__ __forceinline__ long long clamp_to_pool(long long e, long long cap) { return min(max(e, 0LL), cap); }
// Loads tile offsets [tile0, tile0 + n] of a (row, head) pool into s_off (n + 1 values, threads of the block
// in parallel: one round), clamped into the pool (0 past the row's tile_cap + 1 offsets).
__device__ __forceinline__ void load_tile_offsets(int* s_off, const int32_t* off, long long tile0, int n, long long tile_cap, long long cap,
                                                  int tid, int nthreads) {
  for (int i = tid; i <= n; i += nthreads) s_off[i] = tile0 + i <= tile_cap ? static_cast<int>(clamp_to_pool(__ldg(off + tile0 + i), cap)) : 0;
}

// The correction of one sparse entry — at channel d of compressed token lt of tile `tile`, row b, kv head h,
// the outlier's (fp16) value `outlier` — in float32: outlier - dequant - lowrank, with the same operations in the same order
// as the attention kernels (v3's step C1), so every path applies the same correction. NaN when the tile's
// low-rank block index is out of range.
__device__ __forceinline__ float entry_correction(const CompressedKV& kv, const LayoutIx& ix, bool value_side, int b, int h,
                                                  long long tile, int lt, int d, float outlier) {
  const int bits = kv.bits, R = kv.rank, hd = kv.hd;
  const size_t tok = ix.tok(b, h, tile * kv.group + lt);
  float deq;
  if (!value_side) {
    const size_t kr = ix.k_row(b, h, tile, d);
    deq = fmaf(code_f(code_at(kv.k_codes + kr * (kv.group * bits / 8), lt, bits)), ldh(kv.k_scale + kr), ldh(kv.k_zero + kr));
  } else {
    const size_t gi = tok * (hd / kv.v_group) + d / kv.v_group;
    deq = fmaf(code_f(code_at(kv.v_codes + tok * (hd * bits / 8), d, bits)), ldh(kv.v_scale + gi), ldh(kv.v_zero + gi));
  }
  float lr = 0.f;
  if (R > 0) {
    const long long lb = kv.lr_block[static_cast<size_t>(b) * kv.tile_cap + tile];
    if (lb < 0 || lb >= kv.lr_cap) {
      lr = NAN;
    } else {
      const uint16_t* A = (value_side ? kv.v_lr_a : kv.k_lr_a) + tok * R;
      const uint16_t* Bp = (value_side ? kv.v_lr_b : kv.k_lr_b) + ix.lr_b(b, h, lb, 0) + d;
      for (int r = 0; r < R; ++r) lr = fmaf(ldh(A + r), ldh(Bp + static_cast<size_t>(r) * hd), lr);
    }
  }
  return outlier - deq - lr;
}

// Row b's lengths, or ok = false when they are invalid (see kernels.h); the attention kernels (v3, v4, v7) and passes share them.
struct RowLens {
  long long comp = 0, buf = 0;
  bool ok = false;
};
__device__ __forceinline__ RowLens row_lens(const CompressedKV& kv, int b, long long max_comp) {
  RowLens r;
  r.comp = kv.n_comp[b];
  r.buf = kv.n_buf[b];
  r.ok = r.comp >= 0 && r.comp % kv.group == 0 && r.comp <= kv.tile_cap * kv.group && r.comp <= max_comp && r.buf >= 0 &&
         r.buf <= kv.buf_cap && r.comp + r.buf >= 1;
  return r;
}
// Splits that hold some of the row: those over its compressed tokens, and the one its buffer joins.
__device__ __forceinline__ long long live_splits(const RowLens& r, int split_tokens) {
  return r.buf > 0 ? r.comp / split_tokens + 1 : ceil_div(r.comp, split_tokens);
}
// The compressed tokens [c_begin, c_end) of a live split of the row (split_tokens each), and whether the split also
// takes the row's fp16 buffer (the one that holds the row's end).
struct SplitSpan {
  long long c_begin, c_end;
  bool has_buf;
};
__device__ __forceinline__ SplitSpan split_span(const RowLens& r, int split, int split_tokens) {
  const long long c_begin = static_cast<long long>(split) * split_tokens;
  return {c_begin, min(r.comp, c_begin + split_tokens), r.buf > 0 && split == r.comp / split_tokens};
}

// Throws (host) when the layout's sizes are not supported.
inline void check_layout(const char* kernel, const CompressedKV& kv, bool attention = false) {
  const std::string p = compressed_kv_problem(kv, attention);
  if (!p.empty()) fail(kernel, p);
}

}  // namespace gear::kernels::detail
