#pragma once
// How many compressed tokens each block of the split attention kernels (v3, v7) takes: plain C++ so that the rule
// is tested on the CPU (test_kernels "[ref]").
#include <limits>

namespace gear::kernels::split_rule {

constexpr int kChunk = 128;     // tokens per chunk; a split is a whole number of chunks
constexpr int kMaxSplit = 2048;  // compressed tokens per split, at most
// A v7 block's own work besides its tokens (q, the warps' merge, the partial output, the combine's share), in tokens:
// about two 32-token tiles a warp.
constexpr int kLeanBlockTokens = 256;

constexpr long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

// v7's tokens per split for B rows of g blocks a split and M compressed tokens: the multiple of kChunk (up to
// kMaxSplit) whose grid of B g (M / s + 1) blocks takes the fewest waves of the SMs' `slots` (SMs times the blocks of
// the kernel one SM holds), weighed by a block's work (s + kLeanBlockTokens); ties go to the larger split; at most
// `bound` splits (the workspace's). Where the grid is small this is one full wave of splits, where it is large
// (more than two waves at kMaxSplit) kMaxSplit. (Run BG, H100, Llama-3-8B heads at B 1 32k: 344 blocks of 768 tokens, 32.9 us, where halving kMaxSplit
// until the grid had 4 blocks an SM gave 1024 blocks of 256, 2.6 waves at 3 blocks an SM, 46.5 us; docs/kernels.md.)
inline int lean_split_tokens(long long B, long long g, long long M, long long slots, long long bound) {
  int best = kMaxSplit;
  double best_cost = std::numeric_limits<double>::infinity();
  if (B <= 0 || g <= 0 || M < 0 || slots <= 0) return best;
  // Beyond two waves at kMaxSplit the blocks no longer finish in lockstep rounds and the last wave's idle slots are
  // a small share: kMaxSplit (run BH: Llama-2-7B GEAR-L B 16 4k, 2.6 waves at kMaxSplit, took 138.6 us at the
  // waves' choice of 1408 tokens against 130.9 at 2048).
  if (B * g * (M / kMaxSplit + 1) > 2 * slots) return best;
  for (int s = kMaxSplit; s >= kChunk; s -= kChunk) {
    const long long n = M / s + 1;
    if (n > bound) break;  // (n only grows as s shrinks)
    const double cost = static_cast<double>(ceil_div(B * g * n, slots)) * (s + kLeanBlockTokens);
    if (cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

}  // namespace gear::kernels::split_rule
