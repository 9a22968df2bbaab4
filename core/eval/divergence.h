#pragma once
// Greedy generation from a prompt with a given cache, and where two generations part ways: the
// "tokens before the first divergence from FP16" metric.
#include <vector>

#include "core/compression/cache_config.h"
#include "core/model/llama.h"

namespace gear {

// `n` greedy tokens after `prompt` (token ids, BOS included) through a fresh one-row cache of
// `config`. No stop tokens: every method produces exactly n tokens, so outputs line up one to one.
std::vector<int> greedy_tokens(LlamaModel& model, const CacheConfig& config, const std::vector<int>& prompt, int n);

// The number of leading tokens a and b share (min(|a|, |b|) when one is a prefix of the other).
int first_divergence(const std::vector<int>& a, const std::vector<int>& b);

}  // namespace gear
