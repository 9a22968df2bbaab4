// gearlab bench: decode throughput and peak memory of KV-cache methods vs batch and context, FP16 (the
// full cache) always included, and the largest batch that fits a memory budget with its throughput.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "app/commands.h"
#include "app/model_setup.h"
#include "bench/bench_json.h"
#include "core/bench/progress.h"
#include "core/bench/throughput.h"
#include "core/util/error.h"
#include "core/util/units.h"

namespace gear::cli {
namespace {

std::string text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::vector<FlagSpec> bench_flags() {
  std::vector<FlagSpec> f = model_flags();
  f.insert(f.end(), {
      {"cache", "LIST", "comma-separated methods or presets; full (the FP16/f32 reference) is always added",
       "full,kivi-2,gear-kivi-2"},
      {"batches", "LIST", "batch sizes", "1,8"},
      {"contexts", "LIST", "prompt tokens per row (random token ids)", "256"},
      {"steps", "N", "timed decode steps per repeat (a multiple of a cache's streaming gap amortises its compressions)", "64"},
      {"warmup", "N", "untimed decode steps before timing", "4"},
      {"repeats", "N", "timed repeats (the median is reported)", "3"},
      {"seed", "S", "seed of the random prompt token ids", "1"},
      {"budget", "GIB", "comma-separated memory budgets in GiB: the largest batch that fits each, per context", ""},
      {"max-batch", "N", "the budget search's largest batch", "1024"},
      {"dequant-cache", "on|off", "quantized caches keep a dequantized working copy (faster, more memory)", ""},
      {"impl", "auto|aten|cuda", "quantized caches: ATen reference path, fused CUDA kernels, or cuda where supported", ""},
      {"json", "FILE", "write every result and sample as JSON", ""},
  });
  return f;
}

template <typename T>
std::vector<T> parse_list(const Args& args, const std::string& flag, double lo, double hi) {
  std::vector<T> out;
  std::stringstream in(args.str(flag));
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    const bool integral = std::is_integral<T>::value;
    if (item.empty() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi || (integral && v != std::floor(v)))
      throw UsageError("bench: --" + flag + ": bad entry '" + item + "' (expected " +
                       (integral ? "integers" : "numbers") + " in [" + text(lo) + ", " + text(hi) + "])");
    out.push_back(T(v));
  }
  if (out.empty()) throw UsageError("bench: --" + flag + " is empty");
  return out;
}

std::vector<bench::Method> methods(const Args& args) {
  std::vector<std::string> names = {"full"};
  std::stringstream in(args.str("cache"));
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty()) throw UsageError("bench: --cache: empty entry in '" + args.str("cache") + "'");
    if (std::find(names.begin(), names.end(), item) == names.end()) names.push_back(item);
  }
  std::vector<bench::Method> out;
  for (const std::string& name : names) {
    CacheConfig c = preset(kDefaultPreset);
    set_option(c, "cache", name);  // an unknown name is a gear::Error naming it
    if (args.has("dequant-cache") && c.quantized()) set_option(c, "dequant-cache", args.str("dequant-cache"));
    if (args.has("impl") && c.quantized()) set_option(c, "impl", args.str("impl"));
    out.push_back({name, c});
  }
  return out;
}

struct Plan {
  std::vector<bench::Method> methods;
  std::vector<int> batches;
  std::vector<int64_t> contexts;
  std::vector<double> budgets;
  bench::Protocol protocol;
  int max_batch = 1024;
};

Plan plan(const Args& args) {
  Plan p;
  p.batches = parse_list<int>(args, "batches", 1, 1 << 20);
  p.contexts = parse_list<int64_t>(args, "contexts", 1, 1 << 24);
  if (args.has("budget")) p.budgets = parse_list<double>(args, "budget", 1e-6, 1 << 20);
  p.protocol.steps = int(args.integer("steps", 1, 1 << 20));
  p.protocol.warmup = int(args.integer("warmup", 0, 1 << 20));
  p.protocol.repeats = int(args.integer("repeats", 1, 1000));
  p.protocol.seed = uint64_t(args.integer("seed", 0, 1LL << 62));
  p.max_batch = int(args.integer("max-batch", 1, 1 << 20));
  const std::string dq = args.str("dequant-cache");
  if (args.has("dequant-cache") && dq != "on" && dq != "off")
    throw UsageError("bench: --dequant-cache expects on or off, got '" + dq + "'");
  if (args.has("impl")) {
    try {
      parse_impl(args.str("impl"));
    } catch (const Error& e) {
      throw UsageError(std::string("bench: --impl: ") + e.what());
    }
  }
  p.methods = methods(args);
  return p;
}

// The full cache's result at the same batch and context (the denominator of every ratio).
const bench::Measurement* reference(const std::vector<bench::Measurement>& all, const bench::Measurement& m) {
  for (const auto& r : all)
    if (r.method.name == "full" && r.batch == m.batch && r.context == m.context && r.fits) return &r;
  return nullptr;
}

std::string ratio(double num, double den) {
  if (!(num > 0) || !(den > 0)) return "-";
  char s[32];
  std::snprintf(s, sizeof s, "%.2fx", num / den);
  return s;
}

void print_results(const std::vector<bench::Measurement>& all) {
  std::printf("%-14s %6s %8s %11s %8s %10s %11s %9s %11s %9s\n", "cache", "batch", "context", "tokens/s", "vs full",
              "ms/step", "peak", "vs full", "KV bytes", "FP16/KV");
  for (const auto& m : all) {
    const bench::Measurement* ref = reference(all, m);
    if (!m.fits) {
      std::printf("%-14s %6d %8lld  out of memory\n", m.method.name.c_str(), m.batch, (long long)m.context);
      continue;
    }
    std::printf("%-14s %6d %8lld %11.1f %8s %10.3f %11s %9s %11s %9s\n", m.method.name.c_str(), m.batch,
                (long long)m.context, m.tokens_per_s, ref ? ratio(m.tokens_per_s, ref->tokens_per_s).c_str() : "-",
                m.ms_per_step, format_bytes(m.peak_bytes).c_str(),
                ref ? ratio(double(m.peak_bytes), double(ref->peak_bytes)).c_str() : "-",
                format_bytes(m.kv_bytes).c_str(), ratio(double(m.fp16_kv_bytes), double(m.kv_bytes)).c_str());
  }
}

void print_budget(const std::vector<bench::BudgetResult>& all) {
  if (all.empty()) return;
  std::printf("\n%-14s %10s %8s %10s %11s %8s %11s\n", "cache", "budget", "context", "max batch", "tokens/s", "vs full",
              "peak");
  for (const auto& r : all) {
    double full = 0;
    for (const auto& f : all)
      if (f.method.name == "full" && f.budget_gib == r.budget_gib && f.context == r.context) full = f.at_max.tokens_per_s;
    std::printf("%-14s %6.4g GiB %8lld %9d%s %11.1f %8s %11s\n", r.method.name.c_str(), r.budget_gib,
                (long long)r.context, r.max_batch, r.capped ? "+" : " ", r.at_max.tokens_per_s,
                ratio(r.at_max.tokens_per_s, full).c_str(), format_bytes(r.at_max.peak_bytes).c_str());
  }
}

// Whether every timed repeat of `m` holds the same number of streaming compressions (none for caches without a
// streaming buffer).
bool covers_compression(const bench::Method& m, const bench::Protocol& pr) {
  return !m.config.quantized() || m.config.stream_gap <= 0 || pr.steps % m.config.stream_gap == 0;
}

nlohmann::json config_json(const Args& args, const Plan& p) {
  nlohmann::json caches = nlohmann::json::array();
  bool amortised = true;
  for (const auto& m : p.methods) {
    caches.push_back(m.name);
    amortised = amortised && covers_compression(m, p.protocol);
  }
  return {{"caches", caches},
          {"batches", p.batches},
          {"contexts", p.contexts},
          {"budgets_gib", p.budgets},
          {"max_batch", p.max_batch},
          {"steps", p.protocol.steps},
          {"warmup", p.protocol.warmup},
          {"repeats", p.protocol.repeats},
          // every quantized cache's stream gap divides --steps: each repeat includes its compressions
          {"compression_amortised", amortised},
          {"seed", p.protocol.seed},
          {"device", args.str("device")},
          {"dtype", args.str("dtype")},
          {"threads", args.integer("threads", 0, 1024)},
          {"dequant_cache", args.has("dequant-cache") ? args.str("dequant-cache") : "preset default"},
          {"impl", args.has("impl") ? args.str("impl") : "auto"},
          {"prompt", "random token ids in [3, vocab), one stream per row, from the seed"}};
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  Args args("bench", bench_flags(), argc, argv, 2);
  if (args.help_requested()) {
    std::cout << args.help_text(
        "Decode throughput (tokens/s, median of repeats after warm-up) and peak memory of each KV cache against "
        "the full cache, for every batch x context; with --budget, the largest batch that fits each budget and "
        "its throughput. Peak memory: the CUDA caching allocator's peak on a GPU; exact tensor bytes (weights + "
        "KV reserved, activations not counted) on the CPU. Progress goes to stderr, the table to stdout.");
    return 0;
  }
  args.required("model");
  const Plan p = plan(args);
  // A quantized cache compresses its streaming buffer every stream_gap steps. Unless the timed steps of a repeat
  // are a multiple of that gap, repeats hold different numbers of compressions and the median may leave them out.
  for (const auto& method : p.methods)
    if (!covers_compression(method, p.protocol))
      std::fprintf(stderr,
                   "bench: note: %s compresses its streaming buffer every %lld decode steps; with --steps %d a timed "
                   "repeat holds a varying number of those compressions, so the median may leave their cost out "
                   "(--steps %lld amortises it)\n",
                   method.name.c_str(), (long long)method.config.stream_gap, p.protocol.steps,
                   (long long)method.config.stream_gap);
  LoadedModel m = load_model(args);
  LlamaModel& model = *m.model;
  const ModelConfig& mc = model.config();
  std::printf("model %s (%s): %s\nweights %s on %s; memory: %s\n", m.model_path.c_str(),
              mc.generated ? "GENERATED weights" : "trained weights", mc.describe().c_str(),
              format_bytes(model.weight_bytes()).c_str(), model.device().str().c_str(),
              bench::memory_source(model).c_str());

  std::vector<bench::Measurement> results;
  std::vector<bench::BudgetResult> budget;
  // The JSON is rewritten after every finished measurement ("complete": false until the end), so a run that
  // is stopped -- a time limit on a lent GPU, Ctrl-C -- keeps everything it finished.
  auto save = [&](bool complete) {
    if (!args.has("json")) return;
    nlohmann::json rj = nlohmann::json::array(), bj = nlohmann::json::array();
    for (const auto& r : results) rj.push_back(bench::to_json(r));
    for (const auto& b : budget) bj.push_back(bench::to_json(b));
    const nlohmann::json j = {{"kind", "bench"},
                              {"complete", complete},
                              {"environment", bench::environment(model.device())},
                              {"model", m.model_path},
                              {"model_config", mc.describe()},
                              {"generated_weights", mc.generated},
                              {"dtype", std::string(c10::toString(model.dtype()))},
                              {"memory", bench::memory_source(model)},
                              {"config", config_json(args, p)},
                              {"results", rj},
                              {"budget", bj}};
    bench::write_json(j, args.str("json"));
  };
  {
    bench::ProgressBar bar(stderr, int(p.methods.size() * p.contexts.size() * (p.batches.size() + p.budgets.size())));
    for (int64_t context : p.contexts)
      for (int batch : p.batches)
        for (const auto& method : p.methods) {
          bar.show(method.name + " batch " + std::to_string(batch) + " context " + std::to_string(context));
          results.push_back(bench::measure(model, method, batch, context, p.protocol));
          save(false);
          bar.advance();
        }
    for (int64_t context : p.contexts)
      for (double gib : p.budgets)
        for (const auto& method : p.methods) {
          const std::string where = " (" + text(gib) + " GiB, context " + std::to_string(context) + ")";
          budget.push_back(bench::budget_search(model, method, gib, context, p.protocol, p.max_batch,
                                                [&](const std::string& what) { bar.show("budget: " + what + where); }));
          const bench::BudgetResult& r = budget.back();
          std::fprintf(stderr, "\nbudget%s: %s fits batch %d%s, %.1f tokens/s\n", where.c_str(), r.method.name.c_str(),
                       r.max_batch, r.capped ? "+" : "", r.at_max.tokens_per_s);
          save(false);
          bar.advance();
        }
  }
  print_results(results);
  print_budget(budget);
  save(true);
  return 0;
}

}  // namespace gear::cli
