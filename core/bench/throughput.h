#pragma once
// Decode throughput and peak memory of KV-cache methods against batch size and context length, and
// the paper's headline metric: the throughput of the largest batch that fits a memory budget.
//
// One measurement (method, batch B, context C): every row is prefilled with a C-token prompt of random
// token ids, then `warmup` greedy decode steps run untimed and `repeats` x `steps` timed; the result is
// the median ms per step. Memory:
//  - CUDA: the caching allocator's peak of allocated bytes over the whole run (weights, cache,
//    activations and the ATen path's working copies; see device_memory.h);
//  - CPU: exact tensor bytes, weights + the cache's reserved bytes at the end of the run (the cache is
//    largest then). Activations are not counted on the CPU.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/compression/cache_config.h"

namespace gear {
class LlamaModel;
}

namespace gear::bench {

struct Method {
  std::string name;  // as given on the command line (a preset or a method)
  CacheConfig config;
};

struct Protocol {
  int steps = 64;     // timed decode steps per repeat: the presets' streaming gap, so each repeat holds one compression
  int warmup = 4;     // untimed decode steps first
  int repeats = 3;    // timed repeats; the median is reported
  uint64_t seed = 1;  // the random prompt token ids
  int64_t decode_tokens() const { return warmup + int64_t(steps) * repeats; }
  // Tokens each row holds at the end: the cache capacity a context needs.
  int64_t capacity(int64_t context) const { return context + decode_tokens(); }
};

struct Measurement {
  Method method;
  int batch = 0;
  int64_t context = 0;             // prompt tokens per row
  double tokens_per_s = 0;         // batch * 1000 / ms_per_step
  double ms_per_step = 0;          // median of ms_samples
  std::vector<double> ms_samples;  // one per repeat
  int64_t peak_bytes = 0;          // see the file comment
  int64_t prefill_peak_bytes = 0;  // CUDA: peak over the prompts' prefill only; CPU: = peak_bytes
  int64_t decode_peak_bytes = 0;   // CUDA: peak during decode only; CPU: = peak_bytes
  int64_t kv_bytes = 0;            // the cache's bytes in use at the end (all rows)
  int64_t kv_reserved_bytes = 0;   // what the cache has allocated (>= kv_bytes)
  int64_t fp16_kv_bytes = 0;       // the same tokens in an FP16 cache
  int64_t weight_bytes = 0;
  bool fits = true;                // false: the device ran out of memory (the numbers are 0)
};

// Runs one measurement. A CUDA out-of-memory error gives fits = false; anything else throws.
Measurement measure(LlamaModel& model, const Method& method, int batch, int64_t context, const Protocol& protocol);

// The largest b in [1, cap] with peak(b) <= budget, assuming peak grows with b (int64 max: b cannot run).
// Starts at 1 and 2, extrapolates the line through the largest fitting batches one past the budget, then
// interpolates between the measured peaks either side (bisecting when the upper one is unknown or an
// interpolation did not halve the bracket): a peak that is linear in the batch takes about 4 runs, where
// a plain bisection took 6-8 runs of minutes each on the ATen path. 0 when even 1 does not fit. Each b is
// asked at most once.
int largest_within(const std::function<int64_t(int)>& peak, int64_t budget, int cap);

// One batch size a budget search ran (or sized by the byte model on the CPU): its peaks, -1 where it ran out of
// memory. The phases say where a batch that does not fit went over: the last row's prefill, or decoding
// (which holds the streaming compressions).
struct Probe {
  int batch = 0;
  int64_t peak_bytes = 0;
  int64_t prefill_peak_bytes = 0;
  int64_t decode_peak_bytes = 0;
};

struct BudgetResult {
  Method method;
  double budget_gib = 0;
  int64_t context = 0;
  int max_batch = 0;          // 0: not even one row fits
  bool capped = false;        // max_batch hit the search's cap; more may fit
  Measurement at_max;         // the run at max_batch (tokens/s, peak)
  std::vector<Probe> probes;  // in search order
};

// Called before each run of a search, with what is about to run.
using ProbeCallback = std::function<void(const std::string& what)>;

// The largest batch whose peak fits `budget_gib` at `context`: on CUDA by running each candidate batch
// (peak from the allocator; out of memory = does not fit); on the CPU by the byte model
// weights + batch x (one row's reserved cache bytes, measured at batch 1), then one run at that batch.
BudgetResult budget_search(LlamaModel& model, const Method& method, double budget_gib, int64_t context,
                           const Protocol& protocol, int cap, const ProbeCallback& on_probe = {});

// "cuda caching allocator: peak allocated bytes" or "cpu: weights + KV reserved tensor bytes".
std::string memory_source(const LlamaModel& model);

nlohmann::json to_json(const Measurement& m);
nlohmann::json to_json(const BudgetResult& r);

double median_of(std::vector<double> v);

}  // namespace gear::bench
