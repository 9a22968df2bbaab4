// bench_decode: decode throughput of the full-precision engine vs batch size.
// For each batch: prefill a prompt of --prompt-len tokens into every row, run --warmup decode
// steps, then time --steps greedy decode steps, --repeats times; report the median ms/step,
// tokens/s (batch * steps / time) and, for comparison, the weight-read floor
// (weight bytes / --bandwidth GB/s) that bounds batch-1 decode on a memory-bound device.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "bench/bench_json.h"
#include "core/io/loader.h"
#include "core/model/llama.h"
#include "core/util/error.h"
#include "core/util/units.h"

namespace {

struct Options {
  std::string model = "gen:llama2-7b", device = "cuda", dtype = "f16", out;
  std::vector<int> batches = {1, 8, 32};
  int prompt_len = 128, steps = 64, warmup = 8, repeats = 5, threads = 0;
  double bandwidth_gbs = 3000;  // measured H100 device copy bandwidth (HOPPER notes): the floor's divisor
};

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    gear::require(!item.empty() && *end == '\0' && v > 0, "--batches: bad entry '" + item + "'");
    out.push_back(int(v));
  }
  gear::require(!out.empty(), "--batches: empty list");
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      gear::require(i + 1 < argc, a + " needs a value");
      return argv[++i];
    };
    auto integer = [&](int lo) {
      std::string v = next();
      char* end = nullptr;
      long x = std::strtol(v.c_str(), &end, 10);
      gear::require(*end == '\0' && x >= lo, a + ": expected an integer >= " + std::to_string(lo) + ", got '" + v + "'");
      return int(x);
    };
    if (a == "--model") o.model = next();
    else if (a == "--device") o.device = next();
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--batches") o.batches = parse_list(next());
    else if (a == "--prompt-len") o.prompt_len = integer(1);
    else if (a == "--steps") o.steps = integer(1);
    else if (a == "--warmup") o.warmup = integer(0);
    else if (a == "--repeats") o.repeats = integer(1);
    else if (a == "--threads") o.threads = integer(0);
    else if (a == "--bandwidth") o.bandwidth_gbs = integer(1);
    else if (a == "--out") o.out = next();
    else if (a == "--help") {
      std::cout << "usage: bench_decode [--model PATH|gen:SHAPE] [--device cpu|cuda] [--dtype f32|f16|bf16]\n"
                   "  [--batches 1,8,32] [--prompt-len N] [--steps N] [--warmup N] [--repeats N] [--threads N]\n"
                   "  [--bandwidth GB/s for the weight-read floor] [--out results.json]\n";
      std::exit(0);
    } else gear::fail("unknown option " + a + " (see --help)");
  }
  return o;
}

// Times `steps` decode steps; the host reads nothing back until the end (one sync).
double time_steps(gear::LlamaModel& m, gear::KvCache& cache, at::Tensor& tokens, at::Tensor& pos, int steps) {
  (void)pos.sum().item<int64_t>();  // wait for queued work before the clock starts
  auto t0 = std::chrono::steady_clock::now();
  at::Tensor logits;
  for (int s = 0; s < steps; ++s) {
    logits = m.decode(cache, tokens, pos);
    tokens = logits.argmax(-1);
    pos = pos + 1;
  }
  (void)tokens.sum().item<int64_t>();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) try {
  c10::InferenceMode guard;
  Options o = parse(argc, argv);
  if (o.threads > 0) at::set_num_threads(o.threads);
  gear::LlamaModel model(gear::load_weights(o.model, o.device, o.dtype), {o.device, o.dtype});
  const gear::ModelConfig& c = model.config();
  const double floor_ms = model.weight_bytes() / (o.bandwidth_gbs * 1e9) * 1e3;
  nlohmann::json results = nlohmann::json::array();
  std::printf("model %s (%s)\n%s, weights %s, weight-read floor %.3f ms at %.0f GB/s\n", o.model.c_str(),
              c.generated ? "GENERATED weights" : "trained weights", c.describe().c_str(),
              gear::format_bytes(model.weight_bytes()).c_str(), floor_ms, o.bandwidth_gbs);
  std::printf("%6s %10s %12s %12s %10s\n", "batch", "context", "ms/step", "tokens/s", "vs floor");
  for (int batch : o.batches) {
    const int64_t capacity = o.prompt_len + o.warmup + int64_t(o.steps) * o.repeats + 1;
    gear::require(capacity <= c.max_seq_len, "prompt + steps exceed the model's context");
    gear::KvCache cache = model.make_full_cache(batch, capacity);
    std::vector<int> prompt(o.prompt_len);
    for (int i = 0; i < o.prompt_len; ++i) prompt[i] = 1 + (i * 7919) % (c.vocab_size - 1);
    for (int b = 0; b < batch; ++b) model.prefill(cache, b, prompt, true);
    at::Tensor tokens = at::ones({batch}, at::TensorOptions().dtype(at::kLong).device(model.device()));
    at::Tensor pos = at::full({batch}, int64_t(o.prompt_len), tokens.options());
    time_steps(model, cache, tokens, pos, o.warmup);
    std::vector<double> ms;
    for (int r = 0; r < o.repeats; ++r) ms.push_back(time_steps(model, cache, tokens, pos, o.steps) * 1e3 / o.steps);
    const double med = gear::bench::median(ms);
    std::printf("%6d %10lld %12.3f %12.1f %9.2fx\n", batch, (long long)cache.length(0), med, batch * 1e3 / med, med / floor_ms);
    results.push_back({{"batch", batch}, {"context_end", cache.length(0)}, {"ms_per_step_samples", ms},
                       {"ms_per_step_median", med}, {"tokens_per_s", batch * 1e3 / med}, {"ratio_to_floor", med / floor_ms}});
  }
  nlohmann::json j = {{"benchmark", "decode_throughput"},
                      {"environment", gear::bench::environment(model.device())},
                      {"config", {{"model", o.model}, {"generated_weights", c.generated}, {"model_config", c.describe()},
                                  {"dtype", o.dtype}, {"prompt_len", o.prompt_len}, {"steps", o.steps},
                                  {"warmup", o.warmup}, {"repeats", o.repeats}, {"cache", "full"},
                                  {"weight_bytes", model.weight_bytes()}, {"floor_bandwidth_gbs", o.bandwidth_gbs},
                                  {"floor_ms", floor_ms}}},
                      {"results", results}};
  if (!o.out.empty()) gear::bench::write_json(j, o.out);
  return 0;
} catch (const std::exception& e) {
  std::string what = e.what();
  std::fprintf(stderr, "bench_decode: error: %s\n", what.substr(0, what.find('\n')).c_str());
  return 1;
}
