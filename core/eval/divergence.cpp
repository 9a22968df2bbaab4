#include "core/eval/divergence.h"

#include "core/cache/make_cache.h"
#include "core/model/generate.h"
#include "core/util/error.h"

namespace gear {

std::vector<int> greedy_tokens(LlamaModel& model, const CacheConfig& config, const std::vector<int>& prompt, int n) {
  require(!prompt.empty(), "eval: a divergence prompt is empty");
  const int64_t capacity = int64_t(prompt.size()) + n;
  require(capacity <= model.config().max_seq_len,
          "eval: a prompt of " + std::to_string(prompt.size()) + " tokens plus " + std::to_string(n) +
              " generated ones exceeds the model's context of " + std::to_string(model.config().max_seq_len));
  KvCache cache = make_cache(model, config, 1, capacity);
  GenerationParams params;
  params.max_new_tokens = n;
  params.sampling.temperature = 0;
  return generate(model, cache, {prompt}, params).tokens.at(0);
}

int first_divergence(const std::vector<int>& a, const std::vector<int>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return int(i);
}

}  // namespace gear
