#pragma once
// How many compressed tokens each block of the split attention kernels (v3, v7) takes: plain C++ so that the rule
// is tested on the CPU (test_kernels "[ref]").
#include <algorithm>
#include <limits>

namespace gear::kernels::split_rule {

constexpr int kChunk = 128;     // tokens per chunk; a split is a whole number of chunks
constexpr int kMaxSplit = 2048;  // compressed tokens per split, at most (v3 and v4)
// v7, with or without the outlier passes: a split may be longer (its shared arrays are per tile of 32 or 64 tokens,
// the value pass's per tile of 16 or more), so that a row of up to 8k tokens can be one block and a large grid has
// fewer blocks.
constexpr int kLeanMaxSplit = 8192;
// The cost model of v7's split, in tokens of one slot's work (fitted to run EB's sweep of 16 split lengths over 20
// shapes and run EC's B 1 rows, H100; docs/kernels.md "Session of 2026-11-27 (twenty-second)"): a grid of blocks
// takes whole waves of the slots (a last, partial wave as long as a full one: its blocks are as long, and a wave of
// fewer blocks runs them little faster), each wave as long as a block's tokens plus
//  - the block's own work (q, the first tile's latency, the warps' merge, its partial output): block_tokens;
//  - and, for rows of more than one split, the combine kernel and the partials' round trip (one split writes its
//    output directly): combine_tokens.
struct LeanCost {
  long long block_tokens, combine_tokens;
};
constexpr LeanCost kLeanCost{512, 1024};
// KIVI's GQA-4 kernel (2-bit codes on the key MMA, no low rank, no outliers: the one stream-K is built for) on its own
// fit, to run JC's sweep of 7 split lengths over 18 Llama-3-8B KIVI-2 shapes at B 1-128 and 4k-32k (H100, 064b96b;
// docs/kernels.md, twenty-fourth session). Its tiles are the cheapest a token, so a block's own work weighs more
// against them: with kLeanCost it took 2816-token splits at B 32 8k (148.2 us against 131.2 for one split a row) and
// 2048 at B 64 4k (159.8 against 147.0, and 158.8 against 145.6 in run JA). With a block's own work at 1536 tokens it
// takes one split a row at both; of B 1-256 at 2k-32k only B 64 8k (where stream-K runs on 132 SMs) and B 256 8k (one
// split a row, as B 128 8k measured best) change besides.
constexpr LeanCost kLeanKiviGqaCost{1536, 1024};

// KIVI's GQA-4 kernel is built for 3 blocks an SM (168 registers; at hd 128 ptxas spills 4-108 bytes) and for 2 (223
// registers, no spills). Run KB (H100, Llama-3-8B KIVI-2 heads at B 16-128 and 4k-32k, each build at every split
// length; docs/kernels.md, twenty-fifth session): 2 blocks were 3-8 % faster where each of their slots' share of the
// compressed tokens is at most 8192 (B 16-64 at 4k, B 16 and 32 at 8k: 4k B 32 78.5 -> 72.3 us, 8k B 32 130.6 ->
// 125.2) and 1-8 % slower past it (8k B 64 242.4 -> 245.8, B 128 436.4 -> 470.4; 32k B 16-128 5-7 %): wider blocks
// balance a grid of a wave or two, more blocks hide the latency of long rows.
constexpr long long kTwoBlockShareTokens = 8192;
// Whether the automatic choice takes the 2-block kernel for `rows` rows (B x kv heads x query-head tiles) of M
// compressed tokens on `slots` slots of it (SMs x its blocks an SM).
constexpr bool lean_two_blocks_pay(long long rows, long long M, long long slots) {
  return rows > 0 && slots > 0 && rows * M <= kTwoBlockShareTokens * slots;
}

constexpr long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

// The v3 rule's target: blocks an SM (split_tokens_for in gear_attention.cu halves its splits toward it).
constexpr int kBlocksPerSm = 4;
// The most splits a row the automatic rules give for M compressed tokens on `sms` SMs: the workspace's bound
// (compressed_attention_workspace_bytes), which v7's rule and stream-K plan are held to as well.
constexpr long long auto_split_bound(long long B, long long M, long long sms) {
  const long long want = static_cast<long long>(kBlocksPerSm) * sms;
  return std::min(M / kChunk + 1, std::max(M / kMaxSplit + 1, ceil_div(2 * want, B)));
}

// v7's modelled cost of splits of s tokens for B rows of g blocks a split and M compressed tokens on `slots` block
// slots (SMs times the blocks of the kernel one SM holds).
inline long long lean_split_cost(long long B, long long g, long long M, long long slots, long long s, LeanCost c = kLeanCost) {
  const long long n = M / s + 1;
  return ceil_div(B * g * n, slots) * (s + c.block_tokens) + (n > 1 ? c.combine_tokens : 0);
}

// v7's tokens per split: the multiple of kChunk up to max_split (kLeanMaxSplit) of the lowest lean_split_cost, ties to
// the larger split, at most `bound` splits (the workspace's). A small grid gets one full wave of splits (Llama-3-8B
// heads at B 1 32k: 344 blocks of 768 tokens, 32.9 us, where halving kMaxSplit until the grid had 4 blocks an SM gave
// 1024 blocks of 256, 2.6 waves at 3 blocks an SM, 46.5 us, run BG); a row of a few thousand tokens that fits in about
// a wave one split (Llama-3-8B KIVI-2 B 32 4k: 256 blocks of one row each, 76.5 us, against 97.7 for 512 of 2048 and
// the combine, run EB); a large grid long splits (B 64 32k GEAR-L: 8192 tokens, 1108 us against 1232 at 2048).
inline int lean_split_tokens(long long B, long long g, long long M, long long slots, long long bound, int max_split = kLeanMaxSplit,
                             LeanCost c = kLeanCost) {
  int best = max_split;
  long long best_cost = std::numeric_limits<long long>::max();
  if (B <= 0 || g <= 0 || M < 0 || slots <= 0) return best;
  for (int s = max_split; s >= kChunk; s -= kChunk) {
    if (M / s + 1 > bound) break;  // (the splits only grow in number as s shrinks)
    const long long cost = lean_split_cost(B, g, M, slots, s, c);
    if (cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}


// ---- Stream-K (v7 without the outlier passes): every block the same share of the batch's work ----
// Splits give each block a whole number of a row's tokens, so a grid is a whole number of block lengths per slot:
// B 64 8k on Llama-3-8B heads is 512 rows of 8192 tokens on 396 slots (3 blocks an SM), 1.29 rows a slot, and no
// split length divides that evenly. Stream-K (as in Lean Attention's decode kernels) lays the rows end to end in
// units (a row: its compressed tiles, then its fp16 buffer's units) and gives block k units [k W, (k + 1) W) of
// that line: one wave where it fits, each block one share. A block's units that fall in one row are a segment
// (its online softmax, a partial output); a row's segments are merged by the combine kernel as splits are.
struct StreamK {
  long long rows = 0;  // B x blocks a split (kv heads x query-head tiles)
  long long T = 0;     // tiles of the longest row (max_comp / G): every row's line is that long
  long long U = 0;     // units a row: T, then its buffer's (buf_cap / G, rounded up)
  long long W = 0;     // units a block; 0: no plan (nothing to run)
  long long blocks = 0;
  long long slots = 0;  // partial outputs a row, at most (the combine's and the workspace's stride)
};
// Where the automatic choice takes stream-K (compressed_attention, KIVI's GQA-4 kernel only), fitted to runs FA, FB and
// FD (H100, Llama-3-8B KIVI-2; docs/kernels.md, twenty-third session). Each segment has its block's own work and each
// row the combine, which stream-K adds; what it removes is the idle end of a grid of one block a row whose last wave
// is mostly empty. So it pays where both hold:
//  - a slot's share is at least kStreamKShareTokens (B 64 8k, ~10.7k tokens: 253 -> 238 us; 32k, ~42k: 795 -> 784 us;
//    at B 32 4k and B 16 8k, ~2.6k tokens, 77 -> 88 us);
//  - one block a row would fill less than kStreamKWaveFill of its waves (B 64: 512 rows on 2 waves of 396 slots, 65 %;
//    at B 128, 86 %, it lost: 4k 252 -> 282 us, 8k 433 -> 449 us, against one split a row; at B 48, 97 %, it tied).
// With low rank (GEAR-L) it measured slower at every shape (B 64 8k: 281 -> 318 us), so it is not built there.
constexpr long long kStreamKShareTokens = 8192;
constexpr long long kStreamKWaveFillPct = 75;
// The first block of row r's units, and how many blocks (segments) they span.
constexpr long long stream_k_first_block(const StreamK& p, long long r) { return r * p.U / p.W; }
constexpr long long stream_k_segments(const StreamK& p, long long r) {
  return ((r + 1) * p.U - 1) / p.W - stream_k_first_block(p, r) + 1;
}
// The plan for `rows` rows of T tiles and a buffer of buf_units units on `slot_count` block slots: W the units of one
// wave's share, at least min_w (a block's own work: a few tiles a warp), and raised until a row's segments fit `bound`
// partial outputs (the workspace's).
inline StreamK stream_k_plan(long long rows, long long T, long long buf_units, long long slot_count, long long bound, long long min_w) {
  StreamK p;
  p.rows = rows, p.T = T, p.U = T + buf_units;
  if (rows <= 0 || p.U <= 0 || slot_count <= 0 || bound < 2) return p;
  const long long total = rows * p.U;
  long long w = std::max(ceil_div(total, slot_count), std::max(min_w, 1LL));
  w = std::max(w, ceil_div(p.U, bound - 1));  // segments of a row <= ceil(U / W) + 1 <= bound
  p.W = w;
  p.blocks = ceil_div(total, w);
  p.slots = ceil_div(p.U, w) + 1;
  return p;
}

// Whether the automatic choice takes plan p (tiles of G tokens) on `slot_count` block slots: each slot's share of the
// line at least kStreamKShareTokens, and p.rows blocks (one a row) filling less than kStreamKWaveFillPct % of their
// whole waves.
inline bool stream_k_pays(const StreamK& p, long long G, long long slot_count) {
  if (p.W <= 0 || G <= 0 || slot_count <= 0) return false;
  const long long wave_slots = ceil_div(p.rows, slot_count) * slot_count;
  return p.rows * p.U * G >= slot_count * kStreamKShareTokens && 100 * p.rows < kStreamKWaveFillPct * wave_slots;
}

}  // namespace gear::kernels::split_rule
