#pragma once
// Batched generation: prefill every prompt, then decode all rows together until each row stops.
#include <functional>
#include <vector>

#include "core/model/llama.h"
#include "core/model/sampler.h"

namespace gear {

struct GenerationParams {
  int max_new_tokens = 256;
  SamplingParams sampling;
  std::vector<int> stop_tokens;  // generation of a row ends at any of these (not emitted)
};

struct GenerationStats {
  int batch = 0;
  int64_t prompt_tokens = 0;     // over all rows
  int64_t generated_tokens = 0;  // over all rows, stop tokens excluded
  int64_t decode_steps = 0;      // batched decode calls
  double prefill_seconds = 0;
  double decode_seconds = 0;
  // Tokens produced by decode calls per second, all rows counted (batch * steps / time).
  double decode_tokens_per_second() const {
    return decode_seconds > 0 ? double(decode_steps) * batch / decode_seconds : 0.0;
  }
};

struct GenerationResult {
  std::vector<std::vector<int>> tokens;  // new tokens per row
  GenerationStats stats;
  bool cancelled = false;
};

// Called once per new token of each live row, in order. Return false to cancel everything.
// With a callback the loop reads tokens back every step (streaming); without one it reads them
// every 32 steps, so the GPU runs ahead of the host.
using TokenCallback = std::function<bool(int row, int token)>;

// Prompts go into rows 0..B-1 of `cache` (which must be empty there). New tokens stop at
// max_new_tokens or when the cache is full.
GenerationResult generate(LlamaModel& model, KvCache& cache, const std::vector<std::vector<int>>& prompts,
                          const GenerationParams& params, const TokenCallback& on_token = {});

}  // namespace gear
