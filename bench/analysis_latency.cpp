// How long the analysis API takes to recompute everything the app plots for new settings:
// stories260K, a 512-token snapshot of the eval text, CPU. Target (issue 3): <= 100 ms.
//   bench_analysis [--model PATH] [--tokenizer PATH] [--text FILE] [--repeats N] [--out FILE]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench/bench_json.h"
#include "core/compression/analysis.h"
#include "core/io/loader.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"

namespace {

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == "--" + name) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string shared = std::string(GEARLAB_SOURCE_DIR) + "/../shared/";
  const std::string model_path = arg(argc, argv, "model", shared + "models/stories260K/stories260K.bin");
  const std::string tok_path = arg(argc, argv, "tokenizer", shared + "models/stories260K/tok512.bin");
  const std::string text_path = arg(argc, argv, "text", shared + "eval/short_stories.txt");
  const int repeats = std::stoi(arg(argc, argv, "repeats", "10"));
  const std::string out = arg(argc, argv, "out", std::string(GEARLAB_SOURCE_DIR) + "/bench/results/analysis_latency_cpu.json");

  gear::LlamaModel model(gear::load_weights(model_path, "cpu", "f32"), gear::DeviceSpec{});
  auto tok = gear::load_tokenizer(tok_path);
  std::ifstream f(text_path);
  gear::require(bool(f), text_path + ": cannot open");
  std::stringstream s;
  s << f.rdbuf();
  std::vector<int> ids = tok->encode(s.str(), true);
  const int64_t n = std::min<int64_t>(512, model.config().max_seq_len);
  gear::require(int64_t(ids.size()) >= n, text_path + ": fewer than 512 tokens");
  ids.resize(size_t(n));
  gear::KvCache cache = model.make_full_cache(1, n);
  model.prefill(cache, 0, ids, true);
  const gear::CacheSnapshot snap = gear::capture_snapshot(cache, model.config(), 0, n);

  nlohmann::json results = nlohmann::json::array();
  std::printf("stories260K snapshot of %lld tokens, %u hardware threads (layers and K/V analysed in parallel), median "
              "of %d runs\n",
              (long long)n, std::thread::hardware_concurrency(), repeats);
  std::printf("%-14s %10s %10s %10s\n", "settings", "median ms", "min ms", "vs fp16");
  for (const char* name : {"gear-kivi-2", "gearl-kivi-2", "kivi-2", "gear-kcvt-4", "gearl-kcvt-4", "kcvt-4"}) {
    const gear::CacheConfig c = gear::preset(name);
    gear::analyze(snap, c);  // warm-up
    std::vector<double> ms;
    gear::Analysis a;
    for (int r = 0; r < repeats; ++r) {
      a = gear::analyze(snap, c);
      ms.push_back(a.seconds * 1e3);
    }
    const double med = gear::bench::median(ms);
    std::printf("%-14s %10.2f %10.2f %9.2fx\n", name, med, *std::min_element(ms.begin(), ms.end()), a.ratio_vs_fp16());
    results.push_back({{"preset", name}, {"config", gear::to_json(c)}, {"ms_median", med}, {"ms_samples", ms},
                       {"ratio_vs_fp16", a.ratio_vs_fp16()}});
  }
  nlohmann::json j;
  j["benchmark"] = "analysis_latency";
  j["config"] = {{"model", model_path}, {"tokens", n}, {"repeats", repeats}, {"target_ms", 100}};
  j["environment"] = gear::bench::environment(at::Device(at::kCPU));
  j["results"] = results;
  gear::bench::write_json(j, out);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_analysis: error: " << e.what() << "\n";
  return 1;
}
