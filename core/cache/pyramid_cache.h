#pragma once
// Pyramidal KV merging (../shared/seeds/pyramid-merge-readme.txt): every layer keeps at most a
// budget of slots; when a row holds more, its oldest middle tokens are pooled into fewer slots.
//
// Layer budget. L_k = L0 * [1 + (k/m)(1/beta - 1)], k = 0 for the first layer, m = the number of
// layers, rounded to the nearest integer — implemented exactly as the README writes it. Note the
// discrepancy: the README's prose says the budget *decreases* with depth (more global context in
// lower layers), but for beta in (0, 1) the formula *grows* with k (1/beta - 1 > 0), from L0 at
// layer 0 to nearly L0/beta at the last layer; beta = 1 gives L0 everywhere. We follow the
// formula, not the prose.
//
// A row's slots, oldest first: `sinks` first tokens (never touched), then the "middle", then the
// `recent` newest tokens (never touched); sinks and recent slots stay bit-exact copies of the
// input K/V. Whenever a row holds more slots than the budget (after a decode step's attention,
// and after a prompt chunk's attention when compress_prefill is set) it merges consecutive
// windows of `window` middle slots into one slot each, oldest first, until it fits:
//   - Each row has a merge cursor (host), starting at the first middle slot. Windows are taken at
//     the cursor, which then moves past the new slot, so consecutive compressions walk forward
//     through the middle instead of folding everything into one slot. When fewer than `window`
//     middle slots remain after the cursor, it wraps to the oldest middle slot and a new pass
//     begins: merged slots are merged again, so older content ends up compressed more.
//   - A window is `window` slots; only if the whole middle is shorter than that (a budget of
//     sinks + recent + 1 with window > 2) is the whole middle (>= 2 slots) merged at once.
//   - Slots are pooled as slots: a window's members weigh the same whatever number of tokens
//     each already stands for (pooling over the sequence axis, as in the reference).
// Pooling, per kv head and per window (ties go to the oldest member):
//   mean: the mean of the members' K and of their V (computed in float32, stored in model dtype);
//   max:  elementwise, the member entry of largest magnitude, sign kept (a signed max would
//         push every pooled key and value entry towards positive values);
//   best: the whole K and V of the member with the largest accumulated attention mass
//         (see slot_cache.h for how mass is accumulated).
// A merged slot's accumulated attention mass is the sum of its members' (tracked for best only).
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "core/cache/slot_cache.h"

namespace gear {

enum class PoolKind { Mean, Max, Best };
const char* pool_name(PoolKind kind);
PoolKind parse_pool(const std::string& name);  // "mean" | "max" | "best"; gear::Error otherwise

struct PyramidOptions {
  int64_t l0 = 256;        // budget of layer 0 (tokens)
  double beta = 0.5;       // compression ratio, (0, 1]
  int64_t sinks = 4;       // first tokens kept exactly
  int64_t recent = 32;     // newest tokens kept exactly
  int64_t window = 2;      // slots merged into one
  PoolKind pool = PoolKind::Mean;
  bool compress_prefill = true;  // reduce the cache to budget right after the prompt (else only during decode)
};

// The budget of `layer` (0-based) out of `n_layers`, by the README's formula.
int64_t pyramid_budget(const PyramidOptions& o, int layer, int n_layers);
// Rejects beta outside (0, 1], l0 < 1, window < 2, negative sinks/recent, n_layers < 1 and any
// layer whose budget is smaller than sinks + recent + 1, naming the setting and its value.
void validate(const PyramidOptions& o, int n_layers);

class PyramidCache : public SlotCache {
 public:
  PyramidCache(int layer, int n_layers, int batch, int n_kv_heads, int head_dim, int64_t capacity,
               at::TensorOptions options, PyramidOptions o);

  std::string name() const override { return "pyramid"; }
  void clear_row(int row) override;
  int64_t budget() const { return budget_; }
  const PyramidOptions& options() const { return o_; }

 protected:
  void compress(int row, bool prefill) override;

 private:
  // Pools `windows` consecutive windows of `width` slots of `row`, the first at slot `first`.
  void merge(int row, int64_t first, int64_t windows, int64_t width);

  PyramidOptions o_;
  int64_t budget_ = 0;
  std::vector<int64_t> cursor_;  // per row: the slot where the next window starts
};

}  // namespace gear
