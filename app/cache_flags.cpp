#include "app/cache_flags.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/util/error.h"

namespace gear::cli {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : "|") + x;
  return s;
}

}  // namespace

std::vector<FlagSpec> cache_flags() {
  return {
      {"cache", "NAME",
       "KV cache: a method (full, quant, gear-l, gear, kivi, groupwise, uniform, pyramid, streamingllm, h2o) or a "
       "preset (" + join(preset_names()) + ")",
       kDefaultPreset},
      {"cache-json", "FILE", "cache settings as a JSON object of these flag names (applied before other flags)", ""},
      {"backbone", "B", "quantization backbone for quant/gear-l/gear: uniform|groupwise|kivi|kcvt", ""},
      {"bits", "N", "quantization bits: 2, 3, 4 or 8", ""},
      {"group", "G", "group size (tokens for per-channel keys, channels for per-token values)", ""},
      {"group-axis", "A", "group-wise backbone: token (groups of channels) or channel (groups of tokens)", ""},
      {"rank", "R", "low-rank rank for prefill and streamed blocks, K and V", ""},
      {"prefill-rank", "R", "rank of L for the compressed prompt", ""},
      {"block-rank", "R", "rank of L for each streamed block", ""},
      {"k-rank", "R", "rank of L for keys (prefill and blocks)", ""},
      {"v-rank", "R", "rank of L for values (prefill and blocks)", ""},
      {"rank-ratio", "F", "rank as a fraction of min(tokens, head_dim), overriding the ranks", ""},
      {"sparsity", "PCT", "outliers kept exactly, percent of each vector (GEAR)", ""},
      {"power-iters", "N", "power iterations for L", ""},
      {"exact-svd", "", "truncated SVD instead of power iteration", ""},
      {"power-seed", "S", "random start of the power iteration", ""},
      {"stream-gap", "N", "streaming buffer n_b: newest tokens kept FP16, compressed together when full", ""},
      {"dequant-cache", "on|off", "keep dequantized blocks as a working copy (ATen path)", ""},
      {"impl", "auto|aten|cuda",
       "quantized caches: aten (ATen reference, reconstructs K/V), cuda (fused kernels on the compressed layout; "
       "CUDA f16/bf16, KIVI and KCVT backbones), auto (cuda where supported, else aten)",
       ""},
      {"beta", "F", "pyramid: compression ratio in (0, 1]", ""},
      {"l0", "N", "pyramid: budget of layer 0 in tokens", ""},
      {"sinks", "N", "pyramid / streamingllm: first tokens kept exactly", ""},
      {"recent", "N", "pyramid / streamingllm / h2o: newest tokens kept exactly", ""},
      {"window", "N", "pyramid: tokens merged into one", ""},
      {"pool", "P", "pyramid: mean|max|best", ""},
      {"heavy", "N", "h2o: heavy-hitter tokens kept", ""},
      {"compress-prefill", "on|off", "pyramid: reduce the prompt to budget right after prefill", ""},
  };
}

CacheConfig cache_config(const Args& args) {
  CacheConfig c = preset(kDefaultPreset);
  if (args.has("cache-json")) {
    const std::string path = args.str("cache-json");
    std::ifstream in(path);
    require(bool(in), path + ": cannot open cache settings file");
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
      fail(path + ": not valid JSON (" + e.what() + ")");
    }
    try {
      c = config_from_json(j);
    } catch (const Error& e) {
      fail(path + ": " + e.what());
    }
  }
  if (args.has("cache") || !args.has("cache-json")) set_option(c, "cache", args.str("cache"));
  for (const FlagSpec& f : cache_flags()) {
    if (f.name == "cache" || f.name == "cache-json" || !args.has(f.name)) continue;
    set_option(c, f.name, f.value.empty() ? "true" : args.str(f.name));
  }
  return c;
}

}  // namespace gear::cli
