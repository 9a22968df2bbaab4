#include "core/cache/make_cache.h"

#include <ATen/ATen.h>

#include "core/cache/eviction_cache.h"
#include "core/cache/gear_cache.h"
#include "core/cache/gear_cuda_cache.h"
#include "core/cache/pyramid_cache.h"
#include "core/model/llama.h"
#include "core/util/error.h"

namespace gear {

KvCache make_cache(const LlamaModel& model, const CacheConfig& config, int batch, int64_t capacity) {
  const ModelConfig& mc = model.config();
  validate(config, mc.n_layers, mc.n_kv_heads, mc.hd());
  if (config.method == CacheMethod::Full) return model.make_full_cache(batch, capacity);
  require(capacity <= mc.max_seq_len, "kv cache: capacity " + std::to_string(capacity) +
                                          " exceeds the model's context of " + std::to_string(mc.max_seq_len));
  KvCache cache(mc, batch, capacity);
  const auto opts = at::TensorOptions().device(model.device()).dtype(model.dtype());
  // Quantized methods: the fused kernels (GearCudaCache) where they support the model and settings and
  // --impl allows them, else the ATen reference (GearCache). --impl cuda insists; auto takes the kernels
  // only where decode attention reads the compressed bytes (a head dim of 64 / 128).
  bool fused = false;
  if (config.quantized() && config.impl != CacheImpl::Aten) {
    const std::string why =
        GearCudaCache::supports(config, mc.hd(), model.device(), model.dtype(), mc.n_kv_heads, capacity);
    require(config.impl != CacheImpl::Cuda || why.empty(), "--impl cuda: " + why);
    fused = why.empty() && (config.impl == CacheImpl::Cuda || GearCudaCache::fused_attention(mc.hd()));
  }
  // The decode attention's scratch, shared by every layer.
  const auto workspace = fused ? std::make_shared<KernelWorkspace>() : nullptr;
  for (int l = 0; l < mc.n_layers; ++l) {
    std::unique_ptr<CachePolicy> p;
    if (fused)
      p = std::make_unique<GearCudaCache>(l, batch, mc.n_kv_heads, mc.hd(), capacity, opts, config, workspace);
    else if (config.quantized())
      p = std::make_unique<GearCache>(l, batch, mc.n_kv_heads, mc.hd(), capacity, opts, config);
    else if (config.method == CacheMethod::Pyramid)
      p = std::make_unique<PyramidCache>(l, mc.n_layers, batch, mc.n_kv_heads, mc.hd(), capacity, opts,
                                         config.pyramid);
    else
      p = std::make_unique<EvictionCache>(batch, mc.n_kv_heads, mc.hd(), capacity, opts, config.eviction);
    cache.set_layer(l, std::move(p));
  }
  return cache;
}

int64_t fp16_bytes(const ModelConfig& config, int64_t tokens) {
  return 2 * 2 * int64_t(config.n_layers) * config.n_kv_heads * config.hd() * tokens;
}

}  // namespace gear
