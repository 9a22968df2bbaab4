#pragma once
// v7 ("lean"), the compressed-cache attention kernel of kernels/gear_attention_lean.cu, as gear_attention.cu
// calls it: compressed_attention() picks the kernel, sizes the splits and the workspace, and runs the outlier
// passes and the combine kernel around it exactly as around v3.
#include <cuda_runtime.h>

#include "kernels/kernels.h"
#include "kernels/split_rule.h"

namespace gear::kernels::detail {

// Query heads per block (GQA tile) that v7 takes, and the low-rank ranks.
constexpr int kLeanMaxGt = 4;  // GQA groups of up to 4 query heads a block (group_tile: 8 stays on v3)
constexpr int kLeanMaxRank = 4;
constexpr int kLeanMaxGroups = 4;  // value groups per head (hd / v_group)
// KIVI's GQA-4 kernels (lean_stream_k_supported) are also built for 2 blocks an SM (223 registers and no spills at hd
// 128, against 168 and 4-108 bytes of spills at 3): faster on small grids, slower on large ones
// (split_rule::lean_two_blocks_pay).
constexpr int kLeanTwoBlocks = 2;

// Whether v7 takes this layout with `gt` query heads per block (1, 2 or 4): 2-bit codes (or 4-bit ones for MHA), hd
// 64 or 128, key tiles of 32 or 64 tokens, value groups of at least one word's channels (16 / 8) and at most
// kLeanMaxGroups per head, rank <= kLeanMaxRank. Sparse outliers: inside where lean_outliers_inside, else through the
// outlier passes.
inline bool lean_layout_ok(const CompressedKV& kv, int gt) {
  const bool bits_ok = kv.bits == 2 || (kv.bits == 4 && gt == 1);
  return bits_ok && (kv.hd == 64 || kv.hd == 128) && (kv.group == 32 || kv.group == 64) && kv.v_group >= 32 / kv.bits &&
         kv.v_group <= kv.hd && kv.hd % kv.v_group == 0 && kv.hd / kv.v_group <= kLeanMaxGroups && (gt == 1 || gt == 2 || gt == 4) && gt <= kLeanMaxGt &&
         kv.rank >= 0 && kv.rank <= kLeanMaxRank;
}

// Whether v7 can apply this layout's sparse outliers itself, with gt query heads a block: GQA-4 tiles of 2-bit codes
// whose values run on the tensor cores (their words are staged in shared memory, and the entries with them), the
// corrections kept by the layout (k_sp_corr / v_sp_corr), the pools 16-byte aligned and each (row, head)'s pool a
// whole number of 16-byte chunks (sparse_cap a multiple of 8: its tiles' entries are staged in whole chunks), on sm_90.
bool lean_outliers_inside(const CompressedKV& kv, int gt);

// Launches v7's split kernel on grid (n_splits, nkv * n_sub, B), writing `out` directly when n_splits == 1 and
// sc == nullptr, else the workspace's partial outputs ws_o and log2-sum-exps ws_lse (as v3). sc: the outlier
// passes' score array (the key pass's bias in, the final scores out), or nullptr. `inside`: the kernel applies kv's
// outliers (lean_outliers_inside; sc nullptr); else kv has no sparse pools here. With a stream-K plan (sk.W > 0; no
// passes) the grid is sk.blocks blocks instead, each writing its segments' partial outputs (sk.slots a row, in
// n_splits' place), which the combine kernel merges. two_blocks: the instantiation built for 2 blocks an SM
// (lean_stream_k_supported layouts only; split_rule::lean_two_blocks_pay).
void launch_lean_split(DType t, const void* q, const CompressedKV& kv, void* out, float* ws_o, float* ws_lse, float* sc,
                       long long sc_stride, int nh, int group, int gt, int n_sub, int split_tokens, int n_splits, long long max_comp,
                       float scale_log2, bool inside, bool two_blocks, const split_rule::StreamK& sk, cudaStream_t stream);

// Whether v7's stream-K kernel, and its instantiations for 2 blocks an SM, are built for this layout with gt query heads
// a block (outliers inside or not): KIVI's GQA tiles of 4 heads (2-bit codes, no low rank, no outliers inside).
bool lean_stream_k_supported(const CompressedKV& kv, int gt, bool inside);

// Blocks of the v7 instantiation for this layout (gt query heads a block, outliers inside or not, split or stream-K,
// built for 2 blocks an SM or not) that one SM holds at once on the current device (its registers and shared memory),
// or 0 when that cannot be asked.
int lean_blocks_per_sm(DType t, const CompressedKV& kv, int gt, bool inside, bool stream_k = false, bool two_blocks = false);

}  // namespace gear::kernels::detail
