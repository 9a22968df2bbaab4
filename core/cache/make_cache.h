#pragma once
// Builds the KvCache of any method in CacheConfig for a model: one policy per layer.
#include "core/cache/kv_cache.h"
#include "core/compression/cache_config.h"

namespace gear {

class LlamaModel;

// Validates `config` against the model's shape first (gear::Error naming the bad setting).
KvCache make_cache(const LlamaModel& model, const CacheConfig& config, int batch, int64_t capacity);

// Bytes the same tokens would take in an FP16 cache (K and V): the denominator of every
// compression ratio GEAR Lab reports, whatever dtype the reference cache really uses.
int64_t fp16_bytes(const ModelConfig& config, int64_t tokens);

}  // namespace gear
