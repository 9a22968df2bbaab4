#include "core/cache/eviction_cache.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/util/error.h"

namespace gear {
namespace {

int64_t checked_budget(const EvictionOptions& o) {
  validate(o);
  return eviction_budget(o);
}

}  // namespace

const char* eviction_name(EvictionKind kind) { return kind == EvictionKind::H2O ? "h2o" : "streamingllm"; }

EvictionKind parse_eviction(const std::string& name) {
  if (name == "streamingllm") return EvictionKind::StreamingLLM;
  if (name == "h2o") return EvictionKind::H2O;
  fail("eviction: unknown policy '" + name + "' (expected streamingllm or h2o)");
}

int64_t eviction_budget(const EvictionOptions& o) {
  return (o.kind == EvictionKind::H2O ? o.heavy : o.sinks) + o.recent;
}

void validate(const EvictionOptions& o) {
  require(o.sinks >= 0, "eviction: sinks must be >= 0, got " + std::to_string(o.sinks));
  require(o.recent >= 0, "eviction: recent must be >= 0, got " + std::to_string(o.recent));
  require(o.heavy >= 0, "eviction: heavy must be >= 0, got " + std::to_string(o.heavy));
  require(o.kind == EvictionKind::H2O || o.heavy == 0,
          "eviction: heavy hitters are an h2o setting, got heavy = " + std::to_string(o.heavy) + " for streamingllm");
  const int64_t budget = eviction_budget(o);
  require(budget >= 1, std::string("eviction: the ") + eviction_name(o.kind) + " budget (" +
                           (o.kind == EvictionKind::H2O ? "heavy" : "sinks") + " + recent) must be at least 1 token, got " +
                           std::to_string(budget));
}

EvictionCache::EvictionCache(int batch, int n_kv_heads, int head_dim, int64_t capacity, at::TensorOptions options,
                             EvictionOptions o)
    : SlotCache(batch, n_kv_heads, head_dim, capacity, std::min(checked_budget(o) + 1, std::max<int64_t>(capacity, 1)),
                o.kind == EvictionKind::H2O, options),
      o_(o),
      budget_(eviction_budget(o)) {}

void EvictionCache::compress(int row, bool prefill) {
  if (kept(row) <= budget_) return;
  if (o_.kind == EvictionKind::H2O)
    keep_heavy_and_recent(row);
  else
    keep_sinks_and_recent(row);
}

void EvictionCache::keep_sinks_and_recent(int row) {
  auto [k, v] = view(row);
  const int64_t n = k.size(1);
  auto keep = [&](const at::Tensor& t) { return at::cat({t.narrow(1, 0, o_.sinks), t.narrow(1, n - o_.recent, o_.recent)}, 1); };
  replace_row(row, keep(k), keep(v), at::Tensor());
}

void EvictionCache::keep_heavy_and_recent(int row) {
  auto [k, v] = view(row);
  at::Tensor mass = attention_mass(row);
  const int64_t n = k.size(1), older = n - o_.recent, hd = k.size(2);
  // Per kv head, the `heavy` older tokens of most mass, back in time order.
  at::Tensor pick = std::get<0>(at::sort(std::get<1>(at::topk(mass.narrow(1, 0, older), o_.heavy, 1)), 1));
  at::Tensor pick_kv = pick.unsqueeze(-1).expand({-1, -1, hd});
  auto keep = [&](const at::Tensor& t, const at::Tensor& index) {
    return at::cat({t.gather(1, index), t.narrow(1, older, o_.recent)}, 1);
  };
  replace_row(row, keep(k, pick_kv), keep(v, pick_kv), keep(mass, pick));
}

}  // namespace gear
