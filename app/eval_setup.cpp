#include "app/eval_setup.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "app/cache_flags.h"
#include "bench/bench_json.h"
#include "core/eval/eval_json.h"
#include "app/text_inputs.h"
#include "core/util/error.h"

namespace gear::cli {
namespace {

// The two reference prompts of the project (README, llama2.c's stories).
const std::vector<std::string> kDefaultPrompts = {"Once upon a time", "The little dog"};


std::vector<std::string> read_prompts(const Args& args) {
  return args.has("prompts-file") ? read_prompt_file(args.str("prompts-file")) : kDefaultPrompts;
}

bool excluded_flag(const std::vector<std::string>& excluded, const std::string& name) {
  return std::find(excluded.begin(), excluded.end(), name) != excluded.end();
}

}  // namespace

std::vector<FlagSpec> eval_flags() {
  std::vector<FlagSpec> f = model_flags();
  f.insert(f.end(), {
      {"text", "FILE", "UTF-8 text evaluated by teacher forcing (required)", ""},
      {"prefill", "N", "tokens of the prefill chunk; the rest is decoded token by token (default: 64 or half the text)", ""},
      {"max-tokens", "N", "tokens of the text evaluated, BOS included (default: the model's context)", ""},
      {"prompts-file", "FILE", "greedy-divergence prompts, one per line (default: \"Once upon a time\", \"The little dog\")", ""},
      {"gen-tokens", "N", "greedy tokens generated per prompt for the first-divergence metric (0 = skip)", "128"},
      {"json", "FILE", "write the results (settings, metrics, bytes, analysis, environment) as JSON", ""},
      {"no-analysis", "", "leave out the per-layer analysis of quantized methods from the JSON", ""},
  });
  return f;
}

std::vector<FlagSpec> shared_cache_flags(const std::vector<std::string>& excluded) {
  std::vector<FlagSpec> out;
  for (const FlagSpec& f : cache_flags())
    if (f.name != "cache-json" && !excluded_flag(excluded, f.name)) out.push_back(f);
  return out;
}

void apply_cache_flags(const Args& args, const std::vector<std::string>& excluded, CacheConfig& c) {
  for (const FlagSpec& f : shared_cache_flags(excluded))
    if (args.has(f.name)) set_option(c, f.name, f.value.empty() ? "true" : args.str(f.name));
}

std::vector<std::string> split_list(const Args& args, const std::string& flag) {
  std::vector<std::string> items;
  std::stringstream s(args.str(flag));
  for (std::string item; std::getline(s, item, ',');) {
    if (item.empty()) throw UsageError("--" + flag + ": empty item in the list '" + args.str(flag) + "'");
    items.push_back(item);
  }
  if (items.empty()) throw UsageError("--" + flag + ": the list is empty");
  return items;
}

EvalSetup load_eval_setup(const Args& args) {
  EvalSetup s;
  s.text_path = args.required("text");
  if (args.has("prefill")) s.options.prefill = args.integer("prefill", 1, 1 << 24);
  const int64_t max_tokens = args.has("max-tokens") ? args.integer("max-tokens", 3, 1 << 24) : 0;
  s.options.gen_tokens = int(args.integer("gen-tokens", 0, 1 << 20));
  s.options.analysis = !args.flag("no-analysis");
  const std::string text = read_text_file(s.text_path);
  const std::vector<std::string> prompts = read_prompts(args);
  s.model = load_model(args);
  require(s.model.tokenizer != nullptr, "eval: needs a tokenizer to read the text (pass --tokenizer PATH)");
  s.tokens = s.model.tokenizer->encode(text, /*add_bos=*/true);
  s.text_tokens = int64_t(s.tokens.size());
  const int64_t limit = max_tokens > 0 ? max_tokens : s.model.model->config().max_seq_len;
  if (s.text_tokens > limit) s.tokens.resize(size_t(limit));
  for (const std::string& p : prompts) s.options.prompts.push_back({p, s.model.tokenizer->encode(p, /*add_bos=*/true)});
  return s;
}

nlohmann::json eval_document(const EvalSetup& setup, const EvalRun& run) {
  const ModelConfig& mc = setup.model.model->config();
  nlohmann::json j = to_json(run);
  j["model"] = setup.model.model_path;
  j["model_config"] = mc.describe();
  j["generated_weights"] = mc.generated;
  j["text"] = setup.text_path;
  j["text_tokens"] = setup.text_tokens;
  j["dtype"] = std::string(c10::toString(setup.model.model->dtype()));
  j["environment"] = bench::environment(setup.model.model->device());
  return j;
}

void report_progress(size_t index, size_t total, const MethodEval& m) {
  char line[256];
  std::snprintf(line, sizeof line, "[%zu/%zu] %s: ppl %.4f (%+.3f %%), KL %.2e, top-1 %.2f %%, %.2fx vs FP16 bytes (%.1f s)",
                index + 1, total, m.name.c_str(), m.perplexity, m.ppl_delta_pct, m.agreement.kl_mean,
                100 * m.agreement.top1, m.ratio_vs_fp16, m.seconds);
  std::cerr << line << std::endl;
}

void write_eval_json(const Args& args, const nlohmann::json& doc) {
  if (args.has("json")) bench::write_json(doc, args.str("json"));
}

}  // namespace gear::cli
