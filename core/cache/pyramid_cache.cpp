#include "core/cache/pyramid_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/util/error.h"

namespace gear {
namespace {

int64_t checked_budget(const PyramidOptions& o, int layer, int n_layers) {
  validate(o, n_layers);
  require(layer >= 0 && layer < n_layers,
          "pyramid: layer " + std::to_string(layer) + " is outside the model's " + std::to_string(n_layers) + " layers");
  return pyramid_budget(o, layer, n_layers);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string format(double x) {  // "1.5", not std::to_string's "1.500000"
  std::ostringstream s;
  s << x;
  return s.str();
}

// region [nkv, windows, width, hd] -> [nkv, windows, hd]
at::Tensor pool_mean(const at::Tensor& region) { return region.to(at::kFloat).mean(2).to(region.scalar_type()); }

at::Tensor pool_max_magnitude(const at::Tensor& region) {
  at::Tensor pick = region.abs().argmax(2, /*keepdim=*/true);  // first of equal magnitudes: the oldest
  return region.gather(2, pick).squeeze(2);
}

// The member with the most attention mass, per kv head: mass [nkv, windows, width].
at::Tensor pool_best(const at::Tensor& region, const at::Tensor& mass) {
  at::Tensor pick = mass.argmax(2, /*keepdim=*/true).unsqueeze(-1).expand({-1, -1, 1, region.size(3)});
  return region.gather(2, pick).squeeze(2);
}

}  // namespace

const char* pool_name(PoolKind kind) {
  switch (kind) {
    case PoolKind::Mean: return "mean";
    case PoolKind::Max: return "max";
    case PoolKind::Best: return "best";
  }
  return "?";
}

PoolKind parse_pool(const std::string& name) {
  if (name == "mean") return PoolKind::Mean;
  if (name == "max") return PoolKind::Max;
  if (name == "best") return PoolKind::Best;
  fail("pyramid: unknown pooling '" + name + "' (expected mean, max or best)");
}

int64_t pyramid_budget(const PyramidOptions& o, int layer, int n_layers) {
  const double growth = double(layer) / double(n_layers) * (1.0 / o.beta - 1.0);
  return int64_t(std::llround(double(o.l0) * (1.0 + growth)));
}

void validate(const PyramidOptions& o, int n_layers) {
  require(n_layers >= 1, "pyramid: the model must have at least one layer, got " + std::to_string(n_layers));
  require(o.beta > 0.0 && o.beta <= 1.0, "pyramid: beta must be in (0, 1], got " + format(o.beta));
  require(o.l0 >= 1, "pyramid: l0 must be at least 1 token, got " + std::to_string(o.l0));
  require(o.window >= 2, "pyramid: window must merge at least 2 tokens, got " + std::to_string(o.window));
  require(o.sinks >= 0, "pyramid: sinks must be >= 0, got " + std::to_string(o.sinks));
  require(o.recent >= 0, "pyramid: recent must be >= 0, got " + std::to_string(o.recent));
  const int64_t least = o.sinks + o.recent + 1;
  for (int k = 0; k < n_layers; ++k) {
    const int64_t b = pyramid_budget(o, k, n_layers);
    require(b >= least, "pyramid: budget of layer " + std::to_string(k) + " is " + std::to_string(b) +
                            " tokens, smaller than sinks + recent + 1 = " + std::to_string(least));
  }
}

PyramidCache::PyramidCache(int layer, int n_layers, int batch, int n_kv_heads, int head_dim, int64_t capacity,
                           at::TensorOptions options, PyramidOptions o)
    : SlotCache(batch, n_kv_heads, head_dim, capacity,
                std::min(checked_budget(o, layer, n_layers) + 1, std::max<int64_t>(capacity, 1)),
                o.pool == PoolKind::Best, options),
      o_(o),
      budget_(pyramid_budget(o, layer, n_layers)),
      cursor_(size_t(batch), o.sinks) {}

void PyramidCache::clear_row(int row) {
  SlotCache::clear_row(row);
  cursor_.at(size_t(row)) = o_.sinks;
}

void PyramidCache::compress(int row, bool prefill) {
  if (prefill && !o_.compress_prefill) return;
  int64_t& cursor = cursor_.at(size_t(row));
  while (kept(row) > budget_) {
    const int64_t n = kept(row), end = n - o_.recent;  // middle = [sinks, end)
    if (cursor + o_.window > end) cursor = o_.sinks;   // new pass over the (partly merged) middle
    // n > budget >= sinks + recent + 1, so the middle holds at least 2 slots.
    const int64_t width = std::min(o_.window, end - cursor);
    const int64_t windows = std::min((end - cursor) / width, ceil_div(n - budget_, width - 1));
    merge(row, cursor, windows, width);
    cursor += windows;
  }
}

void PyramidCache::merge(int row, int64_t first, int64_t windows, int64_t width) {
  auto [k, v] = view(row);
  const int64_t n = k.size(1), heads = k.size(0), hd = k.size(2), span = windows * width;
  const int64_t rest = first + span;
  auto region = [&](const at::Tensor& t) { return t.narrow(1, first, span).reshape({heads, windows, width, hd}); };
  at::Tensor mass = attention_mass(row), window_mass, pooled_mass;
  if (mass.defined()) {
    window_mass = mass.narrow(1, first, span).reshape({heads, windows, width});
    pooled_mass = window_mass.sum(2);
  }
  at::Tensor pk, pv;
  switch (o_.pool) {
    case PoolKind::Mean: pk = pool_mean(region(k)), pv = pool_mean(region(v)); break;
    case PoolKind::Max: pk = pool_max_magnitude(region(k)), pv = pool_max_magnitude(region(v)); break;
    case PoolKind::Best: pk = pool_best(region(k), window_mass), pv = pool_best(region(v), window_mass); break;
  }
  auto rebuild = [&](const at::Tensor& t, const at::Tensor& pooled) {
    return at::cat({t.narrow(1, 0, first), pooled, t.narrow(1, rest, n - rest)}, 1);
  };
  replace_row(row, rebuild(k, pk), rebuild(v, pv), mass.defined() ? rebuild(mass, pooled_mass) : at::Tensor());
}

}  // namespace gear
