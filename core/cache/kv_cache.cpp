#include "core/cache/kv_cache.h"

#include <algorithm>

#include "core/util/error.h"

namespace gear {

ByteBreakdown& ByteBreakdown::operator+=(const ByteBreakdown& o) {
  full += o.full;
  codes += o.codes;
  scales += o.scales;
  sparse += o.sparse;
  low_rank += o.low_rank;
  reserved += o.reserved;
  return *this;
}

KvCache::KvCache(const ModelConfig& config, int batch, int64_t capacity)
    : layers_(config.n_layers), lengths_(batch, 0), batch_(batch), capacity_(capacity) {
  require(batch > 0, "kv cache: batch must be positive, got " + std::to_string(batch));
  require(capacity > 0, "kv cache: capacity must be positive, got " + std::to_string(capacity));
}

int64_t KvCache::max_length() const {
  return lengths_.empty() ? 0 : *std::max_element(lengths_.begin(), lengths_.end());
}

void KvCache::clear_row(int row) {
  for (auto& layer : layers_) layer->clear_row(row);
  lengths_.at(row) = 0;
}

ByteBreakdown KvCache::bytes() const {
  ByteBreakdown total;
  for (const auto& layer : layers_) total += layer->bytes();
  return total;
}

}  // namespace gear
