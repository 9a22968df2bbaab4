#include "core/bench/throughput.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>

#include "core/bench/device_memory.h"
#include "core/cache/make_cache.h"
#include "core/model/llama.h"
#include "core/util/error.h"
#include "core/util/parse.h"
#include "kernels/kernels.h"

namespace gear::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Token ids in [3, vocab): 0..2 are unk/bos/eos in every Llama vocabulary, so a random prompt never
// contains a control token. A different stream per row, reproducible from the seed.
std::vector<int> random_prompt(int64_t length, int vocab, uint64_t seed, int row) {
  std::mt19937_64 rng(seed * 1000003u + uint64_t(row));
  std::uniform_int_distribution<int> pick(3, std::max(3, vocab - 1));
  std::vector<int> ids(static_cast<size_t>(length));
  for (int& t : ids) t = pick(rng);
  return ids;
}

// A tuning variable's whole-number value in [lo, hi], or `absent` when it is unset or empty. Checked on every device,
// so that a malformed value stops the bench with a message naming the variable even where it would not apply.
int env_int(const char* name, int lo, int hi, int absent, const std::string& meaning) {
  const char* v = std::getenv(name);
  if (!v || !*v) return absent;
  const std::optional<long long> n = parse_whole_integer(v);
  require(n && *n >= lo && *n <= hi,
          std::string(name) + "=" + v + ": expected a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) + " (" + meaning + ")");
  return static_cast<int>(*n);
}

// GEARLAB_KEY_PASS_TILES=N: the GEAR outlier key pass's tiles per warp for every measurement on a GPU
// (kernels::set_key_pass_tiles_per_warp; unset or 0: the kernel's own rule). For timing that rule end to end.
void apply_key_pass_tiles(const LlamaModel& model) {
  const int n = env_int("GEARLAB_KEY_PASS_TILES", 0, 16, -1, "tiles a warp; 0: the kernel's rule");
  if (n >= 0 && model.device().is_cuda()) kernels::set_key_pass_tiles_per_warp(n);
}

// GEARLAB_PROFILE_STEPS=N: on a GPU, the last N warm-up steps of every measurement run inside the profiler's capture
// range and an NVTX range named after the method, so that `ncu --profile-from-start off --nvtx --nvtx-include
// "METHOD/"` reports every kernel of N whole decode steps of one method (docs/bench.md). They stay untimed; the
// timed repeats are unchanged.
int profile_steps(const Protocol& p) {
  const int n = env_int("GEARLAB_PROFILE_STEPS", 0, 1 << 20, 0, "warm-up steps to profile");
  require(n <= p.warmup, "GEARLAB_PROFILE_STEPS=" + std::to_string(n) + ": profiles warm-up steps, so it needs --warmup " +
                             std::to_string(n) + " or more (got " + std::to_string(p.warmup) + ")");
  return n;
}

// Times `steps` greedy decode steps in ms. The host reads one value back before and after (the
// only syncs), so a GPU runs ahead of the host as it does in generation.
double time_steps(LlamaModel& model, KvCache& cache, at::Tensor& tokens, at::Tensor& pos, int steps) {
  (void)pos.sum().item<int64_t>();
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) {
    tokens = model.decode(cache, tokens, pos).argmax(-1);
    pos = pos + 1;
  }
  (void)tokens.sum().item<int64_t>();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void record_cache(Measurement& m, const KvCache& cache, const ModelConfig& mc) {
  const ByteBreakdown kv = cache.bytes();
  int64_t held = 0;
  for (int b = 0; b < cache.batch(); ++b) held += cache.length(b);
  m.kv_bytes = kv.in_use();
  m.kv_reserved_bytes = std::max(kv.reserved, kv.in_use());
  m.fp16_kv_bytes = fp16_bytes(mc, held);
}

// The measurement itself; throws on out-of-memory (measure() turns that into fits = false). profiled: the warm-up
// steps run inside the profiler's range on a GPU (GEARLAB_PROFILE_STEPS).
void run(LlamaModel& model, Measurement& m, const Protocol& p, int profiled) {
  const ModelConfig& mc = model.config();
  const at::Device dev = model.device();
  KvCache cache = make_cache(model, m.method.config, m.batch, p.capacity(m.context));
  for (int b = 0; b < m.batch; ++b)
    model.prefill(cache, b, random_prompt(m.context, mc.vocab_size, p.seed, b), /*last_only=*/true);
  const int64_t prefill_peak = peak_allocated(dev);
  if (dev.is_cuda()) reset_peak(dev);  // the decode peak separately; the run's peak is the larger
  const auto opts = at::TensorOptions().dtype(at::kLong).device(dev);
  at::Tensor tokens = at::full({m.batch}, int64_t(3), opts);
  at::Tensor pos = at::full({m.batch}, m.context, opts);
  if (!dev.is_cuda()) profiled = 0;
  if (p.warmup > profiled) time_steps(model, cache, tokens, pos, p.warmup - profiled);
  if (profiled > 0) {
    synchronize(dev);  // (the range holds these steps' kernels only)
    kernels::profiler_range_begin(m.method.name.c_str());
    time_steps(model, cache, tokens, pos, profiled);
    synchronize(dev);
    kernels::profiler_range_end();
  }
  for (int r = 0; r < p.repeats; ++r) m.ms_samples.push_back(time_steps(model, cache, tokens, pos, p.steps) / p.steps);
  m.ms_per_step = median_of(m.ms_samples);
  m.tokens_per_s = m.ms_per_step > 0 ? m.batch * 1000.0 / m.ms_per_step : 0;
  record_cache(m, cache, mc);
  if (dev.is_cuda()) {
    m.prefill_peak_bytes = prefill_peak;
    m.decode_peak_bytes = peak_allocated(dev);
    m.peak_bytes = std::max(prefill_peak, m.decode_peak_bytes);
  } else {
    m.peak_bytes = m.prefill_peak_bytes = m.decode_peak_bytes = m.weight_bytes + m.kv_reserved_bytes;
  }
}

void check_context(const LlamaModel& model, int64_t context, const Protocol& p) {
  const int64_t max = model.config().max_seq_len;
  require(context >= 1, "bench: context must be at least 1 token");
  require(p.capacity(context) <= max,
          "bench: context " + std::to_string(context) + " + " + std::to_string(p.decode_tokens()) +
              " decode tokens (warmup + steps x repeats) exceeds the model's context of " + std::to_string(max));
}

// Peak bytes of `batch` rows, memoized: measured (CUDA) or by the byte model (CPU).
class PeakModel {
 public:
  PeakModel(LlamaModel& model, BudgetResult& r, const Protocol& p, const ProbeCallback& on_probe)
      : model_(model), r_(r), p_(p), on_probe_(on_probe) {}

  const Measurement& run_at(int batch) {
    auto it = runs_.find(batch);
    if (it != runs_.end()) return it->second;
    if (on_probe_) on_probe_(r_.method.name + " batch " + std::to_string(batch));
    return runs_.emplace(batch, measure(model_, r_.method, batch, r_.context, p_)).first->second;
  }

  int64_t peak(int batch) {
    Probe probe{batch, -1, -1, -1};
    int64_t bytes = 0;
    if (model_.device().is_cuda()) {
      const Measurement& m = run_at(batch);
      bytes = m.fits ? m.peak_bytes : std::numeric_limits<int64_t>::max();
      if (m.fits) probe = {batch, m.peak_bytes, m.prefill_peak_bytes, m.decode_peak_bytes};
    } else {
      // One row's cache bytes are independent of the batch (every policy stores rows separately).
      bytes = model_.weight_bytes() + int64_t(batch) * run_at(1).kv_reserved_bytes;
      probe = {batch, bytes, bytes, bytes};
    }
    if (std::none_of(r_.probes.begin(), r_.probes.end(), [&](const Probe& pr) { return pr.batch == batch; })) r_.probes.push_back(probe);
    return bytes;
  }

 private:
  LlamaModel& model_;
  BudgetResult& r_;
  const Protocol& p_;
  const ProbeCallback& on_probe_;
  std::map<int, Measurement> runs_;
};

}  // namespace

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Measurement measure(LlamaModel& model, const Method& method, int batch, int64_t context, const Protocol& p) {
  c10::InferenceMode guard;
  require(batch >= 1, "bench: batch must be at least 1");
  require(p.steps >= 1 && p.repeats >= 1 && p.warmup >= 0, "bench: steps and repeats must be at least 1");
  check_context(model, context, p);
  apply_key_pass_tiles(model);
  const int profiled = profile_steps(p);  // (checked on every device; applied by run() on a GPU)
  Measurement m;
  m.method = method;
  m.batch = batch;
  m.context = context;
  m.weight_bytes = model.weight_bytes();
  reset_peak(model.device());
  try {
    run(model, m, p, profiled);
  } catch (const std::exception& e) {
    if (!is_out_of_memory(e)) throw;
    reset_peak(model.device());  // the cache is gone with the stack: hand its blocks back
    Measurement oom;
    oom.method = method, oom.batch = batch, oom.context = context, oom.weight_bytes = m.weight_bytes;
    oom.fits = false;
    return oom;
  }
  return m;
}

int largest_within(const std::function<int64_t(int)>& peak, int64_t budget, int cap) {
  if (cap < 1) return 0;
  std::map<int, int64_t> known;          // measured peaks (int64 max: did not run, e.g. out of memory)
  int lo = 0, hi = cap + 1;              // invariant: lo fits (or is 0), hi does not (or is cap + 1)
  auto probe = [&](int b) {
    const int64_t v = peak(b);
    known[b] = v;
    (v <= budget ? lo : hi) = b;
    return v <= budget;
  };
  if (!probe(1)) return 0;
  int min_up = 1;             // grows while extrapolations keep landing inside the budget (a gallop)
  bool bisect = false;        // safeguard: after an interpolation that did not halve the bracket
  while (hi - lo > 1) {
    const int width = hi - lo;
    const int64_t p_lo = known[lo];
    int mid;
    bool interpolated = false;
    if (hi > cap) {
      // No batch known not to fit: extrapolate the line through the two largest fitting batches, one past
      // where it meets the budget, so that a near-linear peak is bracketed in one run.
      auto prev = known.find(lo);
      if (prev == known.begin()) {
        probe(lo + 1);  // a second point for the line
        continue;
      }
      --prev;
      const double slope = double(p_lo - prev->second) / double(lo - prev->first);
      const double rows = slope > 0 ? std::floor(double(budget - p_lo) / slope) + 1 : 0.0;
      mid = int(std::min<double>(double(lo) + std::max<double>(rows, min_up), double(cap)));
      if (probe(mid)) min_up *= 2;  // the line fell short: take longer strides until past the budget
      continue;
    }
    if (known[hi] != std::numeric_limits<int64_t>::max() && !bisect) {
      // Bracketed by two measured peaks: interpolate (peaks grow about linearly with the batch).
      mid = lo + int(std::floor(double(budget - p_lo) / double(known[hi] - p_lo) * width));
      interpolated = true;
    } else {
      mid = lo + width / 2;
    }
    probe(std::clamp(mid, lo + 1, hi - 1));
    bisect = interpolated && 2 * (hi - lo) > width;
  }
  return lo;
}

BudgetResult budget_search(LlamaModel& model, const Method& method, double budget_gib, int64_t context,
                           const Protocol& p, int cap, const ProbeCallback& on_probe) {
  require(budget_gib > 0, "bench: the memory budget must be positive");
  check_context(model, context, p);
  BudgetResult r;
  r.method = method;
  r.budget_gib = budget_gib;
  r.context = context;
  const int64_t budget = int64_t(budget_gib * kGiB);
  PeakModel peaks(model, r, p, on_probe);
  r.max_batch = largest_within([&](int b) { return peaks.peak(b); }, budget, cap);
  r.capped = r.max_batch == cap;
  if (r.max_batch > 0) r.at_max = peaks.run_at(r.max_batch);
  return r;
}

std::string memory_source(const LlamaModel& model) {
  return model.device().is_cuda()
             ? "cuda caching allocator: peak allocated bytes over prefill + decode (weights, KV, activations)"
             : "cpu: exact tensor bytes, weights + KV cache reserved (activations not counted)";
}

nlohmann::json to_json(const Measurement& m) {
  return {{"name", m.method.name},
          {"config", to_json(m.method.config)},
          {"config_text", describe(m.method.config)},
          {"batch", m.batch},
          {"context", m.context},
          {"tokens_per_s", m.tokens_per_s},
          {"ms_per_step", m.ms_per_step},
          {"ms_samples", m.ms_samples},
          {"peak_bytes", m.peak_bytes},
          {"prefill_peak_bytes", m.prefill_peak_bytes},
          {"decode_peak_bytes", m.decode_peak_bytes},
          {"kv_bytes", m.kv_bytes},
          {"kv_reserved_bytes", m.kv_reserved_bytes},
          {"fp16_kv_bytes", m.fp16_kv_bytes},
          {"weight_bytes", m.weight_bytes},
          {"fits", m.fits}};
}

nlohmann::json to_json(const BudgetResult& r) {
  nlohmann::json probes = nlohmann::json::array();
  for (const Probe& pr : r.probes)
    probes.push_back({{"batch", pr.batch},
                      {"peak_bytes", pr.peak_bytes},
                      {"prefill_peak_bytes", pr.prefill_peak_bytes},
                      {"decode_peak_bytes", pr.decode_peak_bytes},
                      {"fits", pr.peak_bytes >= 0 && pr.peak_bytes <= int64_t(r.budget_gib * kGiB)}});
  return {{"name", r.method.name},
          {"config_text", describe(r.method.config)},
          {"budget_gib", r.budget_gib},
          {"budget_bytes", int64_t(r.budget_gib * kGiB)},
          {"max_batch", r.max_batch},
          {"capped", r.capped},
          {"context", r.context},
          {"tokens_per_s", r.at_max.tokens_per_s},
          {"ms_per_step", r.at_max.ms_per_step},
          {"peak_bytes", r.at_max.peak_bytes},
          {"prefill_peak_bytes", r.at_max.prefill_peak_bytes},
          {"decode_peak_bytes", r.at_max.decode_peak_bytes},
          {"kv_bytes", r.at_max.kv_bytes},
          {"probes", probes}};
}

}  // namespace gear::bench
