#pragma once
// Teacher forcing through the real generation path: a cache is filled exactly as `generate` fills
// it -- one prefill chunk, then one decode step per token -- except that every step is fed the
// text's true next token instead of the model's choice. A compressed cache therefore goes through
// its streaming buffer and block compression at the same positions as in generation, and the
// logits of each decode step are what the method would have predicted there.
#include <ATen/core/Tensor.h>

#include <vector>

#include "core/cache/kv_cache.h"
#include "core/model/llama.h"

namespace gear {

struct TeacherForced {
  // [tokens - prefill - 1, vocab] float32 on the model's device: row i is the distribution the decode
  // step of tokens[prefill + i] predicts for tokens[prefill + i + 1].
  at::Tensor logits;
  KvCache cache;  // holds the whole text afterwards (row 0)
};

// Prefills tokens[0, prefill) into row 0 of the empty `cache`, then decodes every other token of the
// text (the last too, so the cache ends holding all of it). Needs prefill >= 1 and two more tokens.
TeacherForced teacher_force(LlamaModel& model, KvCache cache, const std::vector<int>& tokens, int64_t prefill);

}  // namespace gear
