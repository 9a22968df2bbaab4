#include "core/eval/teacher_forcing.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "core/util/error.h"

namespace gear {

TeacherForced teacher_force(LlamaModel& model, KvCache cache, const std::vector<int>& tokens, int64_t prefill) {
  c10::InferenceMode guard;
  const int64_t n = int64_t(tokens.size());
  require(prefill >= 1 && n >= prefill + 2, "eval: the text has " + std::to_string(n) + " tokens; a prefill of " +
                                                std::to_string(prefill) + " needs at least " +
                                                std::to_string(prefill + 2));
  require(cache.batch() == 1 && cache.length(0) == 0, "eval: teacher forcing needs an empty cache of one row");
  require(n <= cache.capacity(), "eval: " + std::to_string(n) + " tokens do not fit the cache's " +
                                     std::to_string(cache.capacity()));
  model.prefill(cache, 0, std::vector<int>(tokens.begin(), tokens.begin() + prefill), /*last_only=*/true);
  // Token ids and positions go to the device once; each step reads a one-element slice of them, so
  // the loop never waits for the host.
  const at::Device dev = model.device();
  const at::Tensor ids = at::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), at::kLong).to(dev);
  const at::Tensor positions = at::arange(n, at::TensorOptions().dtype(at::kLong).device(dev));
  const int64_t scored = n - prefill - 1;
  at::Tensor logits = at::empty({scored, model.config().vocab_size}, at::TensorOptions().dtype(at::kFloat).device(dev));
  for (int64_t t = prefill; t < n; ++t) {
    const at::Tensor out = model.decode(cache, ids.narrow(0, t, 1), positions.narrow(0, t, 1));
    if (t + 1 < n) logits[t - prefill].copy_(out[0]);  // the last token has no next one to predict
  }
  return {logits, std::move(cache)};
}

}  // namespace gear
