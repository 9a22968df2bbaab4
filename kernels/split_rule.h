#pragma once
// How many compressed tokens each block of the split attention kernels (v3, v7) takes: plain C++ so that the rule
// is tested on the CPU (test_kernels "[ref]").
#include <limits>

namespace gear::kernels::split_rule {

constexpr int kChunk = 128;     // tokens per chunk; a split is a whole number of chunks
constexpr int kMaxSplit = 2048;  // compressed tokens per split, at most (v3, v4 and the outlier passes)
// v7 without the outlier passes: a split may be longer (its shared arrays are per tile of 32 or 64 tokens), so that
// a row of up to 8k tokens can be one block and a large grid has fewer blocks.
constexpr int kLeanMaxSplit = 8192;
// The cost model of v7's split, in tokens of one slot's work (fitted to run EB's sweep of 16 split lengths over 20
// shapes and run EC's B 1 rows, H100; docs/kernels.md "Session of 2026-11-27 (twenty-second)"): a grid of blocks
// takes whole waves of the slots (a last, partial wave as long as a full one: its blocks are as long, and a wave of
// fewer blocks runs them little faster), each wave as long as a block's tokens plus
//  - the block's own work (q, the first tile's latency, the warps' merge, its partial output);
constexpr int kLeanBlockTokens = 512;
//  - and, for rows of more than one split, the combine kernel and the partials' round trip (one split writes its
//    output directly).
constexpr int kLeanCombineTokens = 1024;

constexpr long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

// v7's modelled cost of splits of s tokens for B rows of g blocks a split and M compressed tokens on `slots` block
// slots (SMs times the blocks of the kernel one SM holds).
inline long long lean_split_cost(long long B, long long g, long long M, long long slots, long long s) {
  const long long n = M / s + 1;
  return ceil_div(B * g * n, slots) * (s + kLeanBlockTokens) + (n > 1 ? kLeanCombineTokens : 0);
}

// v7's tokens per split: the multiple of kChunk up to max_split (kLeanMaxSplit; kMaxSplit where the outlier passes
// run) of the lowest lean_split_cost, ties to the larger split, at most `bound` splits (the workspace's). A small
// grid gets one full wave of splits (Llama-3-8B heads at B 1 32k: 344 blocks of 768 tokens, 32.9 us, where halving
// kMaxSplit until the grid had 4 blocks an SM gave 1024 blocks of 256, 2.6 waves at 3 blocks an SM, 46.5 us, run BG);
// a row of a few thousand tokens that fits in about a wave one split (Llama-3-8B KIVI-2 B 32 4k: 256 blocks of one
// row each, 76.5 us, against 97.7 for 512 of 2048 and the combine, run EB); a large grid long splits (B 64 32k GEAR-L:
// 8192 tokens, 1108 us against 1232 at 2048).
inline int lean_split_tokens(long long B, long long g, long long M, long long slots, long long bound, int max_split = kLeanMaxSplit) {
  int best = max_split;
  long long best_cost = std::numeric_limits<long long>::max();
  if (B <= 0 || g <= 0 || M < 0 || slots <= 0) return best;
  for (int s = max_split; s >= kChunk; s -= kChunk) {
    if (M / s + 1 > bound) break;  // (the splits only grow in number as s shrinks)
    const long long cost = lean_split_cost(B, g, M, slots, s);
    if (cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

}  // namespace gear::kernels::split_rule
