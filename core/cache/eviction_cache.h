#pragma once
// Token eviction baselines: a fixed budget of kept tokens per row and layer, the rest dropped.
//
//   StreamingLLM (Xiao et al., 2023): the first `sinks` tokens (attention sinks) and the `recent`
//     newest tokens; budget = sinks + recent. `heavy` must stay 0.
//   H2O (Zhang et al., 2023): the `recent` newest tokens plus, among the older ones, the `heavy`
//     tokens with the largest accumulated attention mass; budget = heavy + recent. `sinks` is
//     ignored (sinks collect mass and are kept as heavy hitters on their own). The choice is made
//     per kv head, as in H2O: each kv head keeps its own heavy hitters, so the kept positions may
//     differ between heads (the count does not). Mass is the float32 softmax probability a token
//     has received, summed over the query heads of its GQA group and over every query since it
//     arrived (see slot_cache.h); an evicted token's mass is forgotten. Kept tokens stay in time
//     order; ties in mass go whichever way topk breaks them.
// Eviction runs after each step's attention (a prompt attends exactly, then is reduced to budget),
// and kept K/V are bit-exact copies of the input (keys after RoPE at their absolute positions).
#include <ATen/core/Tensor.h>

#include <string>

#include "core/cache/slot_cache.h"

namespace gear {

enum class EvictionKind { StreamingLLM, H2O };
const char* eviction_name(EvictionKind kind);          // "streamingllm" | "h2o"
EvictionKind parse_eviction(const std::string& name);  // gear::Error on anything else

struct EvictionOptions {
  EvictionKind kind = EvictionKind::StreamingLLM;
  int64_t sinks = 4;    // StreamingLLM: attention sinks kept
  int64_t recent = 252; // newest tokens kept
  int64_t heavy = 0;    // H2O: heavy hitters kept (by accumulated attention mass), besides recent
};

int64_t eviction_budget(const EvictionOptions& o);  // sinks + recent, or heavy + recent for H2O
// Rejects negative counts, heavy hitters for StreamingLLM and a budget below one token.
void validate(const EvictionOptions& o);

class EvictionCache : public SlotCache {
 public:
  EvictionCache(int batch, int n_kv_heads, int head_dim, int64_t capacity, at::TensorOptions options,
                EvictionOptions o);

  std::string name() const override { return eviction_name(o_.kind); }
  int64_t budget() const { return budget_; }
  const EvictionOptions& options() const { return o_; }

 protected:
  void compress(int row, bool prefill) override;

 private:
  void keep_sinks_and_recent(int row);
  void keep_heavy_and_recent(int row);

  EvictionOptions o_;
  int64_t budget_ = 0;
};

}  // namespace gear
