#pragma once
// Fused CUDA kernels of the decode hot path, on raw device pointers and streams.
//
// Plain C++: no CUDA or LibTorch header is needed to include this (a stream is passed as the
// `cudaStream_t` value cast to void*; nullptr is the legacy default stream). The definitions live in
// kernels/*.cu and are linked only in CUDA builds (gearlab_kernels); the float64 CPU references of
// the same computations are in kernels/reference.h (gearlab_kernels_ref, always built).
//
// Conventions shared by every kernel:
//  - all data pointers are device pointers; tensors are dense, row-major, with the shapes given;
//  - activations and caches have the element type `DType`; arithmetic accumulates in float32;
//  - an invalid argument or a failed launch (cudaGetLastError after every launch) throws
//    std::runtime_error with a message that starts with the kernel's name, e.g.
//    "gear::kernels::rmsnorm: launch failed: <CUDA error string>"; kernels/ does not depend on core/;
//  - zero rows / B == 0 is a no-op;
//  - nothing synchronises with the host, nothing allocates: every call is graph-capturable.
#include <cstddef>
#include <cstdint>
#include <string>

namespace gear::kernels {

enum class DType { F32, F16, BF16 };

// Bytes of one element of `t` (4, 2, 2), and its short name.
constexpr std::size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
constexpr const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

// out[r,:] = to_dtype(x[r,:] * rsqrt(mean(x[r,:]^2) + eps)) * w   (x, w, out: [rows, dim], [dim])
// The normalisation runs in float32, is rounded to the dtype, and only then multiplied by w, as
// Llama / Hugging Face do ((x_normed.to(dtype)) * w). One block per row; 16-byte loads when
// dim * sizeof(dtype) is a multiple of 16 and the pointers are 16-byte aligned.
void rmsnorm(DType t, const void* x, const void* w, void* out, int rows, int dim, float eps, void* stream);

// gate_up [rows, 2*hidden] (gate first, then up); out [rows, hidden]:
// out[r,i] = to_dtype(silu(gate[r,i])) * up[r,i]   (silu in float32, rounded to the dtype before the
// product, as Hugging Face's act_fn(gate) * up does).
void silu_mul(DType t, const void* gate_up, void* out, int rows, int hidden, void* stream);

// qkv [B, (nh + 2*nkv)*hd] (q heads, then k heads, then v heads); positions [B] int64 (device);
// cos/sin [max_pos, hd/2] float32 (device), max_pos >= cap. Pair i of a head uses cos[pos][i], sin[pos][i]:
//   half_split == false: the pairs are (2i, 2i+1)  (llama2.c / Meta layout);
//   half_split == true:  the pairs are (i, i+hd/2) (Hugging Face rotate_half).
// Rotation (a, b) -> (a*c - b*s, a*s + b*c) in float32, rounded once to the dtype.
// Writes the rotated q to q_out [B, nh, hd] and the rotated k and raw v into
// k_cache / v_cache [B, nkv, cap, hd] at token index positions[b]; nothing else of the caches is
// touched. A row whose position is outside [0, cap) writes nothing to the caches and NaN to its q_out
// (a caller bug made visible, since the device cannot throw). hd must be even.
// slots (device int32 [B], optional): row b's k/v go to cache index slots[b] instead of positions[b] (a streaming
// buffer filled up to its own length, e.g. GearCudaCache's n_buf); then positions[b] must be below table_rows
// (the RoPE tables' row count) and slots[b] in [0, cap), or the row gets NaN q and no cache write.
void rope_qkv_append(DType t, const void* qkv, const int64_t* positions, const float* cos, const float* sin,
                     void* q_out, void* k_cache, void* v_cache, int B, int nh, int nkv, int hd, long long cap,
                     bool half_split, void* stream, const int32_t* slots = nullptr, long long table_rows = 0);

// RoPE on T rows of H heads (a prompt's q or k): x [T, H, hd] with rows x_row elements apart (heads contiguous, e.g.
// q or k inside fused qkv rows), out [T, H, hd] contiguous; row t rotated by table row t of cos / sin [T, hd/2]
// float32 (the caller's slice of the tables). The pairs and the arithmetic of rope_qkv_append, so a prompt's keys
// carry the same bits as decoded ones; one output, no float32 temporaries (ATen's version holds ~7 tensors of the
// input's size in float32 at its peak: ~200 MB for a 7B prompt of 3.8k tokens). T, H, hd > 0, hd even.
void rope_rows(DType t, const void* x, long long x_row, void* out, int T, int H, int hd, const float* cos, const float* sin,
               bool half_split, void* stream);

// Bytes of float32 scratch that decode_attention needs, at most, for these sizes on the current device
// (the split policy depends on its SM count): valid for every call on that device with the same or
// smaller B, nh, hd and max_len. 0 when no call can need scratch. Allocate once, grow when it grows.
std::size_t decode_attention_workspace_bytes(int B, int nh, int hd, long long max_len);

// Flash-decoding attention for one new token per row.
// q [B, nh, hd]; k_cache / v_cache [B, nkv, cap, hd] (16-byte aligned); out [B, nh, hd]; nh % nkv == 0.
// Row b attends keys 0..positions[b] inclusive (positions read on the device, never on the host);
// GQA: query head h uses kv head h / (nh / nkv). out = softmax(q k^T * scale) v, computed in float32
// (scores, online-softmax max / sum and accumulator), rounded once to the dtype. hd must be 64 or 128.
// max_len is a host-known upper bound of positions[b] + 1: it sizes the grid (the sequence is split in
// chunks of 64..512 keys so that even batch 1 fills the GPU). A row whose position is outside [0, cap),
// or whose length exceeds what the grid covers (only possible when positions[b] >= max_len), gets NaN.
// One block serves all query heads of a kv head (up to 8; larger groups take ceil(group / 8) blocks),
// so K/V are read once per group of up to 8 query heads.
// workspace: device scratch of at least decode_attention_workspace_bytes(B, nh, hd, max_len) bytes
// (16-byte aligned), its size given as workspace_bytes (the call throws if it needs more); it may be
// nullptr when the call needs none. Contents need no initialisation and are garbage afterwards.
// Launches one kernel when the context fits one split, else a split kernel plus a small combine kernel
// (a programmatic dependent launch on sm_90+).
void decode_attention(DType t, const void* q, const void* k_cache, const void* v_cache, const int64_t* positions,
                      void* out, int B, int nh, int nkv, int hd, long long cap, long long max_len, float scale,
                      void* workspace, std::size_t workspace_bytes, void* stream);

// =================================================================================================
// GEAR / KIVI: attention straight from the compressed cache (issue 5)
// =================================================================================================
//
// CompressedKV is one layer's compressed K/V for B rows, in a GPU layout that holds exactly what
// core/'s GearCache holds (KIVI backbone: keys per channel in groups of G tokens, values per token in
// groups of v_group channels; plus GEAR's low-rank and sparse parts and the fp16 streaming buffer),
// arranged so that the decode-attention kernel reads it coalesced and a split of the sequence finds
// its tokens' data without scanning. Plain sizes + device pointers (host pointers for the references
// of kernels/reference.h); fp16 data is stored as IEEE binary16 bit patterns (uint16_t).
//
// Tokens and tiles. Row b holds n_comp[b] compressed tokens (positions 0..n_comp-1, a multiple of G)
// followed by n_buf[b] buffered tokens (positions n_comp..n_comp+n_buf-1). Compressed tokens come in
// tiles of G consecutive tokens (tile j = tokens jG..jG+G-1): a tile is one key quantization group. Every
// compressed block of core/ (the prompt block, then one block per n_b streamed tokens) is a whole
// number of tiles, so block boundaries are tile boundaries.
//
// Keys (per channel, groups of G tokens), for row b, kv head h, tile j, channel d:
//   k_codes  uint8 [B, nkv, tile_cap, hd, G*bits/8]: the G codes of channel d, packed like
//            core/compression/bitpack.h packs a row (little-endian, first token in the lowest bits).
//            This is byte for byte core's packing of the Channel matrix [nkv*hd, T_blk] (rows = channels
//            h*hd+d, columns = the block's tokens): row h*hd+d, columns jG..jG+G-1 of a block are the
//            G*bits/8 bytes at offset ((h*hd+d)*T_blk + j_in_block*G)*bits/8 of its packed codes.
//   k_scale, k_zero  fp16 [B, nkv, tile_cap, hd]: core's scale/zero of that group (scale rounded up, zero
//            rounded down to fp16); key = code*scale + zero.
// Values (per token, groups of v_group channels inside a head), for row b, head h, token t:
//   v_codes  uint8 [B, nkv, token_cap, hd*bits/8]: the hd codes of that token and head (core's Token
//            matrix [T, nkv*hd], bytes (t*nkv*hd + h*hd)*bits/8 .. +hd*bits/8 of a block's codes).
//   v_scale, v_zero  fp16 [B, nkv, token_cap, hd/v_group]: group g covers channels g*v_group.. +v_group-1.
//            (core's groups run along the whole hidden vector; with v_group dividing hd they never
//            straddle heads, so they are the same groups.) A core group wider than a head (small heads,
//            e.g. stories260K's 8 channels under KIVI's 32-channel groups) spans v_span > 1 heads: then
//            v_group = hd, and heads h0..h0+v_span-1 (h0 a multiple of v_span) each hold the group's one
//            scale / zero, computed by the quantizer over all their channels. Readers see one group per
//            head and need not know; only quantize_values does.
// Low rank (rank R > 0; GEAR's L = A·B per block and kv head, K and V separately):
//   lr_block int32 [B, tile_cap]: the low-rank block (index into the B factors) of each tile; all tiles of
//            one core block share it (K and V alike).
//   k_lr_a, v_lr_a  fp16 [B, nkv, token_cap, R]: the rows of A of every compressed token (A of the
//            token's block, row = the token's offset in its block); a block of rank r < R has zeros in
//            columns r..R-1.
//   k_lr_b, v_lr_b  fp16 [B, nkv, lr_cap, R, hd]: B of each low-rank block (rows r..R-1 zero).
// Sparse outliers (sparse_cap > 0; GEAR's S): core keeps, per vector of the quantization layout (a key
//   channel over a block's tokens; a value token over the whole hidden vector), the s/2 % largest and
//   s/2 % smallest entries exactly. Here they are regrouped per tile and kv head, so that a split
//   reads only its own tiles' entries: for row b, head h, the entries of tile j are entries
//   k_sp_off[b][h][j] .. k_sp_off[b][h][j+1]-1 of that (b, h)'s pool, sorted by pos:
//   k_sp_off, v_sp_off  int32 [B, nkv, tile_cap + 1]: offsets into the pool (tile 0 starts at 0).
//   k_sp_pos, v_sp_pos  uint16 [B, nkv, sparse_cap]: pos = t_local*hd + d (t_local = token - jG).
//   k_sp_val, v_sp_val  fp16 [B, nkv, sparse_cap]: the exact (fp16) value of K/V at that position. May be nullptr
//            where k_sp_corr / v_sp_corr are given ("corrections only", as GearCudaCache keeps them on the GPU: the
//            value is the correction plus the dequantized entry and low rank, rounded to fp16, within one fp16 ulp
//            of the outlier, see below): sparse_to_tiles then writes each value into its correction's slot and
//            outlier_corrections replaces it in place,
//            and compressed_attention applies the outliers through the passes or v7's GQA-4 tiles only (v3 with the
//            outliers inside and v4 need the values and throw).
//   The reconstructed entry is the outlier itself (core writes outliers back last, over the low rank).
// Streaming buffer (GEAR's n_b newest tokens, fp16, as core keeps them):
//   k_buf, v_buf  fp16 [B, nkv, buf_cap, hd]: buffered token i of row b is position n_comp[b] + i.
// Lengths (device, read only on the device): n_comp int32 [B] (multiple of G, <= token_cap), n_buf int32
//   [B] (<= buf_cap).
//
// The attention a row sees is therefore, for position t < n_comp (tile j = t/G, block l = lr_block[j]):
//   K[t][d] = k_code*k_scale + k_zero + sum_r k_lr_a[t][r]*k_lr_b[l][r][d], replaced by the outlier where
//   tile j has an entry at (t, d); the same for V; and K/V = the buffer for positions >= n_comp.
// Supported by the kernels: bits 2, 4, 8; G in {16, 32, 64, 128}; v_group a multiple of 8 dividing hd
// (value groups of v_span whole heads);
// R <= 8; hd 64 or 128 for attention (any multiple of 8 up to 1024 for the compression kernels). 3-bit
// codes (10 per 32-bit word in core) do not tile a channel group and are not part of this layout.
struct CompressedKV {
  // Sizes (host).
  int B = 0, nkv = 0, hd = 0;
  int bits = 2;              // 2, 4 or 8
  int group = 64;            // G: tokens per key group = per tile
  int v_group = 64;          // channels per value group (divides hd)
  int v_span = 1;            // heads sharing one value group (> 1 only with v_group == hd)
  int rank = 0;              // R: low-rank columns per token (0: no low-rank arrays)
  long long tile_cap = 0;    // tiles per row
  long long lr_cap = 0;      // low-rank blocks per row (rank > 0)
  long long sparse_cap = 0;  // sparse entries per (row, kv head) and side (0: no sparse arrays)
  int buf_cap = 0;           // buffered tokens per row

  long long token_cap() const { return tile_cap * group; }
  int key_row_bytes() const { return group * bits / 8; }   // one channel of one tile
  int value_row_bytes() const { return hd * bits / 8; }    // one token of one head
  int value_groups() const { return v_group > 0 ? hd / v_group : 0; }

  uint8_t* k_codes = nullptr;
  uint16_t* k_scale = nullptr;
  uint16_t* k_zero = nullptr;
  uint8_t* v_codes = nullptr;
  uint16_t* v_scale = nullptr;
  uint16_t* v_zero = nullptr;
  int32_t* lr_block = nullptr;
  uint16_t* k_lr_a = nullptr;
  uint16_t* k_lr_b = nullptr;
  uint16_t* v_lr_a = nullptr;
  uint16_t* v_lr_b = nullptr;
  int32_t* k_sp_off = nullptr;
  uint16_t* k_sp_pos = nullptr;
  uint16_t* k_sp_val = nullptr;
  int32_t* v_sp_off = nullptr;
  uint16_t* v_sp_pos = nullptr;
  uint16_t* v_sp_val = nullptr;
  // Optional (nullptr: computed when needed): each sparse entry's correction outlier - dequant - lowrank as fp16
  // bits, parallel to sp_pos / sp_val (sp_entries each), written by outlier_corrections once a block is
  // compressed; the outlier passes of compressed_attention read them instead of recomputing them. fp16, not
  // float32: an entry is then 4 bytes (position + correction), as core's (position + value), where float32 made
  // it 6 and a GEAR row of Llama-2-7B at 4k tokens ~40 MB larger. The price: the correction is rounded to fp16
  // (relative error 2^-11 of the outlier's term in the attention), and the outlier that dequant + low rank +
  // correction reconstructs may be one fp16 ulp off (outlier_corrections picks, of the three fp16 values nearest
  // the exact correction, the one whose reconstruction is nearest the outlier).
  uint16_t* k_sp_corr = nullptr;
  uint16_t* v_sp_corr = nullptr;
  uint16_t* k_buf = nullptr;
  uint16_t* v_buf = nullptr;
  int32_t* n_comp = nullptr;
  int32_t* n_buf = nullptr;
};

// Sparse pools in whole 16-byte chunks of 2-byte entries: v7 stages a tile's entries by the chunk, which stays inside
// its (row, head)'s pool only when every pool is a whole number of chunks (compressed_attention_outliers_inside
// requires it; other capacities take the outlier passes). The capacity to allocate for `entries`.
constexpr long long kSparseChunk = 8;
constexpr long long sparse_cap_in_chunks(long long entries) { return (entries + kSparseChunk - 1) / kSparseChunk * kSparseChunk; }

// Element counts of each array of a CompressedKV with these sizes (0 for arrays it does not have).
struct CompressedKVSizes {
  std::size_t k_codes = 0, k_scale = 0, v_codes = 0, v_scale = 0;  // k_zero / v_zero: as the scales
  std::size_t lr_block = 0, lr_a = 0, lr_b = 0;                    // per side for lr_a / lr_b
  std::size_t sp_off = 0, sp_entries = 0;                          // per side; sp_pos and sp_val alike
  std::size_t buf = 0, lengths = 0;                                // per side for buf; n_comp, n_buf
};
inline CompressedKVSizes compressed_kv_sizes(const CompressedKV& c) {
  CompressedKVSizes s;
  const std::size_t B = static_cast<std::size_t>(c.B), H = static_cast<std::size_t>(c.nkv), hd = static_cast<std::size_t>(c.hd);
  const std::size_t tiles = static_cast<std::size_t>(c.tile_cap), tokens = tiles * static_cast<std::size_t>(c.group);
  s.k_codes = B * H * tiles * hd * static_cast<std::size_t>(c.key_row_bytes());
  s.k_scale = B * H * tiles * hd;
  s.v_codes = B * H * tokens * static_cast<std::size_t>(c.value_row_bytes());
  s.v_scale = B * H * tokens * static_cast<std::size_t>(c.value_groups());
  if (c.rank > 0) {
    s.lr_block = B * tiles;
    s.lr_a = B * H * tokens * static_cast<std::size_t>(c.rank);
    s.lr_b = B * H * static_cast<std::size_t>(c.lr_cap) * static_cast<std::size_t>(c.rank) * hd;
  }
  if (c.sparse_cap > 0) {
    s.sp_off = B * H * (tiles + 1);
    s.sp_entries = B * H * static_cast<std::size_t>(c.sparse_cap);
  }
  s.buf = B * H * static_cast<std::size_t>(c.buf_cap) * hd;
  s.lengths = B;
  return s;
}

// Whether compressed_attention takes this head dim (the compression kernels take any multiple of 8 up to 1024).
inline bool attention_head_dim_ok(int hd) { return hd == 64 || hd == 128; }

// "" when the sizes are ones the kernels support (see above), else what is wrong. hd_attention: also
// require a head dim compressed_attention takes.
inline std::string compressed_kv_problem(const CompressedKV& c, bool hd_attention = false) {
  auto n = [](long long v) { return std::to_string(v); };
  if (c.B < 0 || c.nkv <= 0 || c.hd <= 0 || c.hd % 8 != 0 || c.hd > 1024)
    return "bad shape B=" + n(c.B) + " nkv=" + n(c.nkv) + " hd=" + n(c.hd) + " (hd a multiple of 8 up to 1024)";
  if (hd_attention && !attention_head_dim_ok(c.hd)) return "head dim " + n(c.hd) + " is not supported (64 or 128)";
  if (c.bits != 2 && c.bits != 4 && c.bits != 8) return "bits " + n(c.bits) + " not supported (2, 4 or 8)";
  if (c.group != 16 && c.group != 32 && c.group != 64 && c.group != 128)
    return "key group " + n(c.group) + " not supported (16, 32, 64 or 128 tokens)";
  if (c.v_group <= 0 || c.v_group % 8 != 0 || c.hd % c.v_group != 0)
    return "value group " + n(c.v_group) + " must be a multiple of 8 dividing the head dim " + n(c.hd);
  if (c.v_span < 1 || c.nkv % c.v_span != 0 || (c.v_span > 1 && c.v_group != c.hd))
    return "value groups spanning " + n(c.v_span) + " heads need v_group = hd and a head count (" + n(c.nkv) +
           ") they divide";
  if (c.rank < 0 || c.rank > 8) return "rank " + n(c.rank) + " not supported (0..8)";
  if (c.tile_cap < 0 || c.lr_cap < 0 || c.sparse_cap < 0 || c.buf_cap < 0) return "negative capacity";
  if (c.rank > 0 && c.lr_cap <= 0) return "rank > 0 needs lr_cap > 0";
  if (c.sparse_cap > 0 && static_cast<long long>(c.group) * c.hd > 65536)
    return "sparse positions t*hd+d of a " + n(c.group) + "x" + n(c.hd) + " tile do not fit 16 bits";
  return "";
}

// core's number of outliers per side of a vector of `cols` entries at `sparsity_percent` (s/2 % each
// side): floor(cols * s / 200 + 1e-9), as core/compression/outlier_filter.cpp computes it.
inline int outliers_per_side(long long cols, double sparsity_percent) {
  const double k = static_cast<double>(cols) * sparsity_percent / 200.0 + 1e-9;
  return k <= 0 ? 0 : static_cast<int>(k);  // floor for k >= 0
}

// ---- compression into the layout (the caller's device data) ----
//
// A "block" is core's unit of compression: T consecutive tokens of one row (all kv heads), T a multiple
// of G. Source blocks x are [n, nkv, x_cap, hd] of dtype t (block i, head h, token t at
// ((i*nkv + h)*x_cap + t)*hd); only their first T tokens are read, so the fp16 streaming buffer
// (x_cap = buf_cap) can be compressed in place. Block i goes to row dst_row[i], tiles dst_tile[i] ..
// dst_tile[i] + T/G - 1 (device int32 [n]; nullptr: row i, tile 0). A block whose destination is out of
// range (row >= B, tiles past tile_cap) is not written. Arithmetic follows core/'s ATen path on the CPU
// bit for bit: min/max in float32; zero = the largest fp16 <= min; scale = the smallest fp16 >=
// max((max - zero) / (2^bits - 1), 2^-24) (float32 IEEE division); code = rint((x - zero) / scale) clamped
// to [0, 2^bits - 1]. (core divides by 2^bits - 1 as a tensor, so it is exact on CUDA too: core on either
// device and these kernels give the same codes and scales.)

// Keys, per channel in groups of G tokens: writes k_codes, k_scale, k_zero of those tiles. whole_block (the KCVT
// backbone): one range per channel over the block's T tokens, whose scale / zero every tile of the block holds (so
// the readers need not know).
void quantize_keys(DType t, const void* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                   const int32_t* dst_tile, void* stream, bool whole_block = false);
// Values, per token in groups of v_group channels (of v_span whole heads when v_span > 1): writes
// v_codes, v_scale, v_zero of tokens dst_tile[i]*G .. +T-1.
void quantize_values(DType t, const void* x, long long x_cap, int n, int T, const CompressedKV& kv, const int32_t* dst_row,
                     const int32_t* dst_tile, void* stream);

// Unpack + dequantize (the Q part only): out [n, nkv, out_cap, hd] of dtype t, its first T tokens =
// float32(float32(code * scale) + zero) (core's dequantize_block, bit for bit in float32) rounded to t, read
// from row src_row[i], tiles src_tile[i].. (nullptr: row i, tile 0; out-of-range sources give NaN).
void dequantize_keys(const CompressedKV& kv, DType t, void* out, long long out_cap, int n, int T, const int32_t* src_row,
                     const int32_t* src_tile, void* stream);
void dequantize_values(const CompressedKV& kv, DType t, void* out, long long out_cap, int n, int T, const int32_t* src_row,
                       const int32_t* src_tile, void* stream);

// Outlier extraction per vector, as core's extract_outliers on the block's quantization matrix:
// per_channel (keys): rows = nkv*hd channels (row h*hd + d), each over the T tokens; else (values): rows =
// T tokens, each over the nkv*hd entries of the hidden vector (column h*hd + d). For every row: the k
// largest entries in descending order, then the k smallest of the rest in ascending order, written as
// values fp16 [n, rows, 2k] (round to nearest) and index int32 [n, rows, 2k] (column in the row); ties
// between equal values (+0 and -0 are equal) go to the lower column, where core leaves them to at::topk
// (so on tie-free rows the entries are core's, in core's order). inliers (nullptr: not written) float32
// [n, nkv, T, hd]: the block with each row's outliers replaced by the mean of its other cols - 2k entries,
// summed in float64 and rounded once to float32 (core sums in float32; the two agree to a few units of
// float32's last place). x: as for quantize_keys (block i at x + i*nkv*x_cap*hd). Needs 1 <= 2k < cols and
// k <= 2048; k == 0 copies the block to inliers. Values must be finite.
void extract_outliers(DType t, const void* x, long long x_cap, int n, int T, int nkv, int hd, bool per_channel, int k,
                      uint16_t* values, int32_t* index, float* inliers, void* stream);

// The outliers written back into a dequantized block: out float32 [n, nkv, T, hd] (contiguous) takes, at each
// entry's place, its value — extract_outliers' values (fp16 bits) and index [n, rows, 2k], rows and columns as
// there (per_channel: keys). What GearCudaCache's low rank subtracts from (one launch where it was a dozen ATen
// index ops a layer, most of a compressing step's host time). Needs 0 <= 2k <= the row's length.
void scatter_outliers(const uint16_t* values, const int32_t* index, int n, int T, int nkv, int hd, bool per_channel, int k,
                      float* out, void* stream);

// The sparse store: regroups the per-vector outliers of n blocks (values fp16 / index int32 [n, rows, 2k]
// as extract_outliers writes them, or core's SparseOutliers with the index widened to int32) into the
// per-tile pools of the layout (keys: rows = nkv*hd channels, index = token in the block; values: rows =
// T tokens, index = h*hd + d). Block i fills tiles dst_tile[i] .. + T/G - 1 of row dst_row[i]: sp_off of
// those tiles + 1 and their entries, sorted by pos; sp_off[b][h][dst_tile[i]] must already hold where
// the block's entries start (0 for tile 0: zero the offsets when the layout is allocated; then append
// blocks in order; blocks of one call are appended in their order, so several may go to one row). A
// (row, head) whose entries would pass sparse_cap gets no entries past it, its offsets are clamped to
// sparse_cap and *overflow (device int32, may be nullptr; zero it before the call) is raised to the entries
// that (row, head) would have needed (the largest over the overflowing pools; > sparse_cap, so non-zero). Three launches (count, scan,
// scatter); a tile's CTA scans the candidates of its block (keys: all hd*2k of the head, so a long prompt
// block costs O(T^2 / G) reads; values: its G tokens' 2k each). Needs G*hd <= 16384.
void sparse_to_tiles(const CompressedKV& kv, bool keys, const uint16_t* values, const int32_t* index, int n, int T, int k,
                     const int32_t* dst_row, const int32_t* dst_tile, int32_t* overflow, void* stream);

// Writes kv.k_sp_corr / kv.v_sp_corr for the entries of n compressed blocks — block i is tiles [dst_tile[i],
// dst_tile[i] + ntiles) of row dst_row[i], every kv head, both sides (device int32 arrays) — from the layout's
// codes, scales, zeros, low rank and entries, which must be written already: outlier - dequant - lowrank,
// computed in float32 exactly as compressed_attention computes it and stored as fp16 (the rounding chosen so
// that the reconstruction is nearest the outlier: CompressedKV; NaN where a tile's low-rank block index is out
// of range). Needs the sparse pools and both corr arrays. Tiles outside the layout are skipped.
void outlier_corrections(const CompressedKV& kv, const int32_t* dst_row, const int32_t* dst_tile, int n, int ntiles, void* stream);

// ---- small device results for the host, without stalling the stream ----
//
// A pinned host copy of n int32 values. async_read_start queues, on `stream` behind the work queued so far, a copy
// of n ints from device memory and records an event; async_read_wait waits for that event (returning at once when
// the GPU is past it) and returns the host copy, valid until the next start. async_read_free releases the handle
// (nullptr: nothing). Errors throw.
struct AsyncRead;
AsyncRead* async_read_create(int n);
void async_read_start(AsyncRead* r, const int32_t* device, void* stream);
const int32_t* async_read_wait(AsyncRead* r);
void async_read_free(AsyncRead* r);

// The profiler's capture range: begin pushes an NVTX range `name` and calls cudaProfilerStart; end calls
// cudaProfilerStop and pops the range. Under `ncu --profile-from-start off` only the kernels launched between the
// two are profiled; `--nvtx --nvtx-include "NAME/"` keeps those of one name. Errors throw.
void profiler_range_begin(const char* name);
void profiler_range_end();

// ---- decode attention on the compressed layout ----
//
// Bytes of float32 scratch that compressed_attention needs at most, on the current device, for calls with
// these B, nh, hd and any max_compressed <= this one (0 when a call cannot need any). outliers: whether the
// layout has sparse pools (sparse_cap > 0); with them the outlier passes need B * nh * max_compressed more floats.
std::size_t compressed_attention_workspace_bytes(int B, int nh, int hd, long long max_compressed, bool outliers = true);

// One new token per row: out = softmax(q K^T * scale) V over row b's n_comp[b] + n_buf[b] positions of
// kv (K/V as defined above), without reconstructing K/V: scores q·(code*scale + zero) + (q·B^T)·A[t]
// (r-dimensional) + the tile's sparse corrections q_d*(outlier - dequant - lowrank) at their positions, the
// same for V (probabilities times codes, sum_t p_t A[t] times B per low-rank block, corrections), and
// the fp16 buffer. q, out [B, nh, hd] of dtype t (F16 or BF16); nh % nkv == 0, query head i uses kv head
// i / (nh / nkv); scores, online softmax and accumulators in float32, the output rounded once to t.
// Flash-decoding: the compressed tokens are split into chunks of 128..2048 tokens (fewer, longer ones
// when B * nkv already fills the GPU); the split holding a row's end also takes its buffer; a combine
// kernel (programmatic dependent launch on sm_90+) merges the splits. max_compressed: host-known bound
// of every n_comp[b] (sizes the grid). A row whose lengths are invalid (n_comp not a multiple of G,
// negative, past token_cap or max_compressed; n_buf outside [0, buf_cap]; no token at all) gets NaN.
// workspace: device scratch of compressed_attention_workspace_bytes(B, nh, hd, max_compressed) bytes
// (16-byte aligned; nullptr when that is 0). kv.hd must be 64 or 128, and the code, scale, zero, A, B
// and buffer arrays 16-byte aligned (each chunk's data is copied to shared memory in 16-byte pieces;
// cudaMalloc / ATen allocations are). Deterministic (no atomics) and graph-capturable.
void compressed_attention(DType t, const void* q, const CompressedKV& kv, void* out, int nh, long long max_compressed,
                          float scale, void* workspace, std::size_t workspace_bytes, void* stream);

// Which kernel compressed_attention runs (process-wide; for tests and benchmarks). CudaCore: v3, fp32 FMAs
// on the CUDA cores, sparse outliers applied inside it. TensorCore: v4, codes as fp16 MMA operands
// (kernels/gear_attention_mma.cuh), for layouts it takes (hd 64 or 128, key tile rows of >= 8 bytes:
// G*bits >= 64, value groups of >= 64/bits channels; sm_90); a call on another layout throws.
// OutlierPasses: v3 without the sparse pools, the outliers applied by a key pass before it (a score bias)
// and a value pass after it (kernels/gear_outlier_passes.cuh); the same as CudaCore on layouts without
// outliers. Lean: v7 (kernels/gear_attention_lean.cu), a warp per key tile with its own online softmax and the
// codes straight from global memory to registers, for the layouts lean_attention_supported() accepts (2-bit codes,
// or 4-bit ones for MHA; hd 64 or 128, G 32 or 64, value groups of >= one word's channels (16 / 8)
// and <= 4 per head, rank <= 4, GQA groups of <= 4 query heads per block); outliers through the same passes; a call
// on another layout throws; with 2-bit codes and 4 query heads a block its key scores and values run on the tensor
// cores (sm_80 and later), their code words staged in shared memory by cp.async (value groups of 32 / 64). Auto: Lean for the MHA layouts it takes, the GQA ones with low rank and the 2-bit GQA ones
// of 4 heads a block, else OutlierPasses (docs/kernels.md has the measurements).
// Lean: v7, with the sparse outliers inside where it can (compressed_attention_outliers_inside), else the passes;
// LeanPasses: v7 with the passes always (benchmarks).
enum class AttentionKernel { Auto, CudaCore, TensorCore, OutlierPasses, Lean, LeanPasses };
void set_compressed_attention_kernel(AttentionKernel k);
AttentionKernel compressed_attention_kernel();
// Compressed tokens per split of compressed_attention (benchmarks: the wave count against the block length): 0, the
// default, picks them from the grid's size (and takes the stream-K plan below for KIVI's GQA-4 kernel where each block
// slot's share is at least 8192 tokens and one block a row would fill less than 75 % of its waves:
// split_rule::stream_k_pays); else a multiple of 128 up to 8192 (2048 for v3 and v4); or kAttentionStreamK: v7's
// stream-K plan (split_rule::stream_k_plan: the rows laid end to end and cut into one share a block slot, a row's
// pieces merged by the combine kernel), for calls that run v7 without the outlier passes (others throw).
// Process-wide; the workspace bound (compressed_attention_workspace_bytes) follows it.
constexpr int kAttentionStreamK = -1;
void set_attention_split_tokens(int tokens);
// The blocks an SM of v7's kernel for KIVI's GQA tiles of 4 heads (2-bit codes, no low rank, no outliers; benchmarks):
// 0, the default, takes the instantiation built for 2 (more registers, no spills) where each of its block slots' share
// of the grid's compressed tokens is at most 8192 (split_rule::lean_two_blocks_pay), else the one for 3; or 2 or 3.
// Other kernels keep theirs. The splits and the stream-K plan are sized for the blocks taken. Process-wide.
void set_kivi_gqa_blocks_per_sm(int blocks);
// The key outlier pass's tiles per warp (benchmarks): 0, the default, picks them from the grid's size (the fewest
// that fit it in one wave of resident blocks, where a few more than ~32 warps an SM can); else 1..16, lowered to what
// a block's shared memory holds. Process-wide.
void set_key_pass_tiles_per_warp(int tiles);
// Whether the tensor-core kernel can take this layout on the current device.
bool tensor_core_attention_supported(const CompressedKV& kv);
// Whether a compressed_attention call on this layout runs the tensor-core kernel now (throws as the call would).
bool compressed_attention_uses_tensor_cores(const CompressedKV& kv);
// Whether compressed_attention calls on this layout apply its outliers in the two passes (the kernel choice is
// Auto, OutlierPasses, Lean or LeanPasses and the layout has sparse pools; a call with max_compressed 0 has no
// outliers to apply and skips them), unless v7 applies them itself (compressed_attention_outliers_inside).
bool compressed_attention_uses_outlier_passes(const CompressedKV& kv);
// Whether compressed_attention calls on this layout with nh query heads run v7 with the outliers inside it (no
// passes): GQA tiles of 4 heads with 2-bit codes and value groups of 32 / 64 channels, the corrections kept by the
// layout, on sm_90 (throws as the call would).
bool compressed_attention_outliers_inside(const CompressedKV& kv, int nh);
// Whether v7 (Lean) can take this layout with nh query heads.
bool lean_attention_supported(const CompressedKV& kv, int nh);
// Whether a compressed_attention call with nh query heads runs v7 now (throws as the call would).
bool compressed_attention_uses_lean(const CompressedKV& kv, int nh);

// =================================================================================================
// The power iteration's small dense factorisations (low rank on the GPU without host syncs)
// =================================================================================================
//
// n independent w×w float64 matrices (row-major, contiguous), one thread each, the code of
// kernels/small_dense.h (which documents the algorithms); 1 <= w <= kMaxSmallDense. Inputs are destroyed.
constexpr int kMaxSmallDense = 256;

// g [n, w, w]: Gram matrices XᵀX. w_out [n, w, w] float32: upper-triangular W with X·W orthonormal (CholeskyQR;
// numerically dependent or zero columns give zero columns). g is overwritten (its Cholesky factor and scratch).
void cholesky_orthonormalizer(double* g, int n, int w, float* w_out, void* stream);

// x, y [n, m, w] float32 (y may be x): y = x orthonormalised column by column (CholeskyQR2 with float64 Grams:
// cholesky_orthonormalizer twice, products in float32), one block per matrix and one launch; dependent or zero
// columns come out zero. 1 <= w <= kMaxFusedOrthonormalize.
constexpr int kMaxFusedOrthonormalize = 32;
void orthonormalize(const float* x, float* y, int n, long long m, int w, void* stream);

// GEAR's whole power iteration for n small heads, one thread block each (core's LowRankSpec::Linalg::SyncFree steps
// without the ~50 ATen ops between them): R [n, T, hd] float32 residuals, P0 [n, hd, w] float32 starts; `iters`
// rounds of { P = CholeskyQR2(P); Q = CholeskyQR2(R·P); P = Rᵀ·Q }, then A [n, T, r] and B [n, r, hd] (fp16): Q and Pᵀ
// when r == w, else the Rayleigh–Ritz truncation to rank r (a Jacobi eigensolver of (QᵀR)(QᵀR)ᵀ). R, P and Q live in
// shared memory: only for the shapes fused_power_iteration_fits() accepts (a streamed block, not a long prompt).
bool fused_power_iteration_fits(long long T, long long hd, int w);
void fused_power_iteration(const float* R, const float* P0, int n, int T, int hd, int w, int r, int iters, void* A, void* B,
                           void* stream);

// out [rows, per_row] float32: out[r][i] = uniform01(seeds[r], i) of small_dense.h (seeds: device array), the
// power iteration's random start, identical to the CPU's.
void uniform_start(const unsigned long long* seeds, int rows, long long per_row, float* out, void* stream);

// a [n, w, w] symmetric (destroyed); evals [n, w] descending; evecs [n, w, w], column j the unit eigenvector of
// evals[j], its largest-magnitude component positive. Cyclic Jacobi.
void symmetric_eigen(double* a, int n, int w, double* evals, double* evecs, void* stream);

// True when this build has the kernels and a CUDA device is present (defined in a .cu: a build without
// CUDA does not link the kernels at all, so callers guard with GEARLAB_WITH_CUDA).
bool cuda_available();

}  // namespace gear::kernels
