#include "core/model/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>

#include "core/util/error.h"

namespace gear {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Host-side bookkeeping of which rows are still generating.
struct Rows {
  std::vector<std::vector<int>> out;
  std::vector<bool> done;
  const std::vector<int>& stops;
  const TokenCallback& callback;
  bool cancelled = false;

  // Feeds one step's tokens (host copy). Returns false once every row is done or cancelled.
  bool accept(const int64_t* tokens, int batch) {
    for (int b = 0; b < batch; ++b) {
      if (done[b]) continue;
      const int t = int(tokens[b]);
      if (std::find(stops.begin(), stops.end(), t) != stops.end()) {
        done[b] = true;
        continue;
      }
      out[b].push_back(t);
      if (callback && !callback(b, t)) cancelled = true;
    }
    return !cancelled && std::find(done.begin(), done.end(), false) != done.end();
  }
};

}  // namespace

GenerationResult generate(LlamaModel& model, KvCache& cache, const std::vector<std::vector<int>>& prompts,
                          const GenerationParams& params, const TokenCallback& on_token) {
  c10::InferenceMode guard;
  const int B = int(prompts.size());
  require(B > 0 && B <= cache.batch(), "generate: " + std::to_string(B) + " prompts for a cache of " +
                                           std::to_string(cache.batch()) + " rows");
  require(params.max_new_tokens >= 0, "generate: max tokens must be >= 0");
  params.sampling.validate();
  Sampler sampler(params.sampling, model.device());
  GenerationResult result;
  result.tokens.resize(B);
  result.stats.batch = B;
  if (params.max_new_tokens == 0) return result;

  Rows rows{std::vector<std::vector<int>>(B), std::vector<bool>(B, false), params.stop_tokens, on_token};
  auto t0 = Clock::now();
  std::vector<at::Tensor> first(B);
  for (int b = 0; b < B; ++b) {
    require(cache.length(b) == 0, "generate: cache row " + std::to_string(b) + " is not empty");
    first[b] = sampler.sample(model.prefill(cache, b, prompts[b], /*last_only=*/true));
    result.stats.prompt_tokens += int64_t(prompts[b].size());
  }
  at::Tensor tokens = at::cat(first);  // [B]
  at::Tensor first_host = tokens.cpu();  // also ends the prefill timing on the GPU
  result.stats.prefill_seconds = seconds_since(t0);
  bool live = rows.accept(first_host.data_ptr<int64_t>(), B);

  std::vector<int64_t> lengths(B);
  for (int b = 0; b < B; ++b) lengths[b] = cache.length(b);
  at::Tensor positions = at::tensor(lengths, at::kLong).to(model.device());
  const int64_t room = cache.capacity() - cache.max_length();
  const int64_t steps = std::min<int64_t>(params.max_new_tokens - 1, room);
  const int64_t chunk = on_token ? 1 : 32;  // steps between host reads of the new tokens
  t0 = Clock::now();
  std::vector<at::Tensor> pending;
  for (int64_t s = 0; s < steps && live; ++s) {
    tokens = sampler.sample(model.decode(cache, tokens, positions));
    positions = positions + 1;
    pending.push_back(tokens);
    ++result.stats.decode_steps;
    if (int64_t(pending.size()) == chunk || s + 1 == steps) {
      at::Tensor host = at::stack(pending).cpu();  // [n, B]
      pending.clear();
      for (int64_t i = 0; i < host.size(0) && live; ++i) live = rows.accept(host[i].data_ptr<int64_t>(), B);
    }
  }
  result.stats.decode_seconds = seconds_since(t0);
  result.tokens = std::move(rows.out);
  result.cancelled = rows.cancelled;
  for (const auto& r : result.tokens) result.stats.generated_tokens += int64_t(r.size());
  return result;
}

}  // namespace gear
