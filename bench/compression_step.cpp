// bench_compress: what GEAR's streaming compression costs inside decoding.
//
// Every n_b decode steps each row's buffer is full and every layer compresses its block (outliers, quantize
// + pack, the sparse store, the power iteration, the outlier corrections). This times decode steps one by
// one (the host waits for each, the same for every step) and sets the steps that compressed apart from the
// others: compression = median(compressing steps) − median(other steps), for all layers together and per
// layer (÷ n_layers), against the plain step — the issue's "time to compress one streaming block (n_b tokens,
// all heads of a layer) relative to a decode step" — and amortised over the n_b steps between compressions.
// FP16 ("full") runs first as the reference step. Generated weights of a real model's shape are labelled.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>

#include "bench/bench_json.h"
#include "core/cache/make_cache.h"
#include "core/compression/cache_config.h"
#include "core/compression/low_rank.h"
#include "core/io/loader.h"
#include "core/model/cuda_ops.h"
#include "core/model/llama.h"
#include "core/util/error.h"

namespace {

struct Options {
  std::string model = "gen:llama2-7b", device = "cuda", dtype = "f16", impl = "cuda", out;
  std::vector<std::string> caches = {"gear-kivi-2", "gearl-kivi-2", "kivi-2"};
  std::vector<std::string> linalgs = {"auto"};  // how the power iteration factors (LowRankSpec::Linalg)
  int batch = 16, steps = 136, warmup = 2;
  bool sync_check = false;
  int64_t context = 3900;  // + warmup + steps within Llama-2-7B's 4096 positions
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  gear::require(!out.empty(), "--caches: empty list");
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      gear::require(i + 1 < argc, a + " needs a value");
      return argv[++i];
    };
    auto integer = [&](long lo) {
      const std::string v = next();
      char* end = nullptr;
      const long x = std::strtol(v.c_str(), &end, 10);
      gear::require(!v.empty() && *end == '\0' && x >= lo,
                    a + ": expected an integer >= " + std::to_string(lo) + ", got '" + v + "'");
      return x;
    };
    if (a == "--model") o.model = next();
    else if (a == "--device") o.device = next();
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--impl") o.impl = next();
    else if (a == "--caches") o.caches = split(next());
    else if (a == "--linalg") o.linalgs = split(next());
    else if (a == "--batch") o.batch = int(integer(1));
    else if (a == "--context") o.context = integer(1);
    else if (a == "--steps") o.steps = int(integer(2));
    else if (a == "--warmup") o.warmup = int(integer(0));
    else if (a == "--out") o.out = next();
    else if (a == "--sync-check") o.sync_check = true;
    else if (a == "--help") {
      std::cout << "usage: bench_compress [--model PATH|gen:SHAPE] [--device cpu|cuda] [--dtype f32|f16|bf16]\n"
                   "  [--impl aten|cuda|auto] [--caches gear-kivi-2,gearl-kivi-2,kivi-2] [--batch 16] [--context 3900]\n"
                   "  [--linalg auto,lapack,sync-free (each low-rank cache once per entry)]\n"
                   "  [--steps 136 (timed; at least two compressions at n_b 64)] [--warmup 2] [--out results.json]\n"
                   "  [--sync-check (first: decode steps under c10's sync detection, through the first that compresses)]\n"
                   "  context + warmup + steps + 1 positions (+ n_b + 1 with --sync-check) must fit the model's context\n";
      std::exit(0);
    } else gear::fail("unknown option " + a + " (see --help)");
  }
  return o;
}

gear::LowRankSpec::Linalg parse_linalg(const std::string& s) {
  if (s == "auto") return gear::LowRankSpec::Linalg::Auto;
  if (s == "lapack") return gear::LowRankSpec::Linalg::Lapack;
  if (s == "sync-free") return gear::LowRankSpec::Linalg::SyncFree;
  gear::fail("--linalg: '" + s + "' is not one of auto, lapack, sync-free");
}

struct Steps {
  std::vector<double> plain_ms, compress_ms;            // wall time per step, the GPU idle before it
  std::vector<double> plain_host_ms, compress_host_ms;  // of which the host took to issue it (decode() returning)
};

// Decodes `warmup` + `steps` tokens, timing each step alone; a step compressed when the cache's packed code
// bytes grew (host-side counts: reading them does not wait for the GPU).
Steps run(gear::LlamaModel& model, const gear::CacheConfig& config, const Options& o) {
  const gear::ModelConfig& mc = model.config();
  // (--sync-check's steps come first: up to n_b + 1 more positions)
  const int64_t checked = o.sync_check ? config.stream_gap + 1 : 0;
  gear::KvCache cache = gear::make_cache(model, config, o.batch, o.context + checked + o.warmup + o.steps + 1);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> pick(3, mc.vocab_size - 1);  // no control tokens
  for (int b = 0; b < o.batch; ++b) {
    std::vector<int> prompt(static_cast<size_t>(o.context));
    for (int& t : prompt) t = pick(rng);
    model.prefill(cache, b, prompt, /*last_only=*/true);
  }
  const auto opts = at::TensorOptions().dtype(at::kLong).device(model.device());
  at::Tensor tokens = at::full({o.batch}, int64_t(3), opts), pos = at::full({o.batch}, o.context, opts);
  Steps s;
  if (o.sync_check) {
    // Steps with ATen's sync detection on, up to and including the first that compresses: does a plain decode
    // step, or a compressing one, make the host wait? (cache.bytes() runs outside the check: it may wait.)
    for (int i = 0; i <= config.stream_gap; ++i) {
      const int64_t codes_before = cache.bytes().codes;
      try {
        gear::cuda_ops::SyncCheck check;
        tokens = model.decode(cache, tokens, pos).argmax(-1);
        pos = pos + 1;
      } catch (const std::exception& e) {
        std::printf("sync check, step %d: %s\n", i, std::string(e.what()).substr(0, 6000).c_str());
        throw;
      }
      if (cache.bytes().codes > codes_before) {
        std::printf("sync check: neither a plain decode step nor a compressing one (step %d) waits for the GPU\n", i);
        break;
      }
      if (i == 0) std::printf("sync check: a plain decode step never waits for the GPU\n");
    }
  }
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    const int64_t codes_before = cache.bytes().codes;
    (void)pos.sum().item<int64_t>();  // the GPU is idle: time this step alone
    const auto t0 = std::chrono::steady_clock::now();
    tokens = model.decode(cache, tokens, pos).argmax(-1);
    pos = pos + 1;
    const auto issued = std::chrono::steady_clock::now();
    (void)tokens.sum().item<int64_t>();
    const auto done = std::chrono::steady_clock::now();
    if (i < o.warmup) continue;
    const bool compressed = cache.bytes().codes > codes_before;
    (compressed ? s.compress_ms : s.plain_ms).push_back(std::chrono::duration<double, std::milli>(done - t0).count());
    (compressed ? s.compress_host_ms : s.plain_host_ms)
        .push_back(std::chrono::duration<double, std::milli>(issued - t0).count());
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  c10::InferenceMode guard;
  const Options o = parse(argc, argv);
  gear::LlamaModel model(gear::load_weights(o.model, o.device, o.dtype), {o.device, o.dtype});
  const gear::ModelConfig& mc = model.config();
  std::printf("model %s (%s)\n%s; batch %d, %lld-token prompts, %d timed steps, each timed alone\n", o.model.c_str(),
              mc.generated ? "GENERATED weights" : "trained weights", mc.describe().c_str(), o.batch,
              static_cast<long long>(o.context), o.steps);
  std::printf("%-24s %10s %8s %12s %14s %12s %12s %12s %10s\n", "cache", "step ms", "blocks", "compress ms",
              "per layer ms", "layer/step", "all/step", "amortised", "host ms");
  nlohmann::json results = nlohmann::json::array();
  double fp16_ms = 0;
  std::vector<std::string> names = {"full"};
  names.insert(names.end(), o.caches.begin(), o.caches.end());
  std::vector<std::pair<std::string, std::string>> runs;  // (cache, linalg)
  for (const std::string& name : names) {
    if (name == "full" || !gear::preset(name).has_low_rank()) runs.emplace_back(name, "auto");
    else
      for (const std::string& l : o.linalgs) runs.emplace_back(name, l);
  }
  for (const auto& [name, linalg] : runs) {
    gear::CacheConfig config = gear::preset(name);
    if (config.quantized()) {
      gear::set_option(config, "impl", o.impl);
      gear::set_option(config, "dequant-cache", "off");
    }
    gear::set_auto_low_rank_linalg(parse_linalg(linalg));
    const std::string label = linalg == "auto" ? name : name + "/" + linalg;
    const Steps s = run(model, config, o);
    const double step = gear::bench::median(s.plain_ms);
    if (name == "full") fp16_ms = step;
    nlohmann::json r = {{"cache", name}, {"low_rank_linalg", linalg}, {"config", gear::describe(config)}, {"step_ms_samples", s.plain_ms},
                        {"compress_step_ms_samples", s.compress_ms}, {"step_ms_median", step},
                        {"step_host_ms_samples", s.plain_host_ms}, {"compress_step_host_ms_samples", s.compress_host_ms},
                        {"step_vs_fp16", fp16_ms > 0 ? step / fp16_ms : 0.0}};
    if (s.compress_ms.empty()) {
      std::printf("%-24s %10.3f %8s %12s %14s %12s %12s %12s\n", label.c_str(), step, "0", "-", "-", "-", "-", "-");
    } else {
      const double all = gear::bench::median(s.compress_ms) - step, layer = all / mc.n_layers;
      const int gap = int(config.stream_gap);
      r["compress_ms_all_layers"] = all;
      // Host time to issue the compressing step beyond a plain one: near `all`, the compression is bound by the
      // host (ATen dispatch, launches, syncs), not by the GPU.
      r["compress_host_ms_all_layers"] = gear::bench::median(s.compress_host_ms) - gear::bench::median(s.plain_host_ms);
      r["compress_ms_per_layer"] = layer;
      r["per_layer_vs_step"] = layer / step;
      r["all_layers_vs_step"] = all / step;
      r["amortised_vs_step"] = all / (gap * step);
      r["stream_gap"] = gap;
      std::printf("%-24s %10.3f %8zu %12.3f %14.4f %11.2f%% %11.1f%% %11.2f%% %10.3f\n", label.c_str(), step,
                  s.compress_ms.size(), all, layer, 100 * layer / step, 100 * all / step, 100 * all / (gap * step),
                  double(r["compress_host_ms_all_layers"]));
    }
    results.push_back(r);
  }
  nlohmann::json j = {{"benchmark", "compression_step"},
                      {"environment", gear::bench::environment(model.device())},
                      {"config", {{"model", o.model}, {"generated_weights", mc.generated}, {"model_config", mc.describe()},
                                  {"dtype", o.dtype}, {"impl", o.impl}, {"batch", o.batch}, {"context", o.context},
                                  {"steps", o.steps}, {"warmup", o.warmup},
                                  {"timing", "each decode step alone (host waits before and after); compression = "
                                             "median(compressing steps) - median(other steps)"}}},
                      {"results", results}};
  if (!o.out.empty()) gear::bench::write_json(j, o.out);
  return 0;
} catch (const std::exception& e) {
  const std::string what = e.what();
  std::fprintf(stderr, "bench_compress: error: %s\n", what.substr(0, what.find('\n')).c_str());
  return 1;
}
