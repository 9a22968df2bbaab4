#pragma once
// What `gearlab eval` and `gearlab sweep` share: the text, prompts and model flags, reading and
// tokenizing the text, the cache flags that apply to every evaluated setting, and the JSON document.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "app/cli_args.h"
#include "app/model_setup.h"
#include "core/eval/evaluate.h"

namespace gear::cli {

// Model flags plus --text, --prefill, --max-tokens, --prompts-file, --gen-tokens, --json, --no-analysis.
std::vector<FlagSpec> eval_flags();

// The cache flags of cache_flags() except those in `excluded` (the ones a command sets itself).
std::vector<FlagSpec> shared_cache_flags(const std::vector<std::string>& excluded);
// Applies every flag of shared_cache_flags(excluded) given on the command line to `c`.
void apply_cache_flags(const Args& args, const std::vector<std::string>& excluded, CacheConfig& c);

// "a,b,c" -> {"a", "b", "c"}; an empty item is a usage error naming the flag.
std::vector<std::string> split_list(const Args& args, const std::string& flag);

struct EvalSetup {
  LoadedModel model;
  std::string text_path;
  std::vector<int> tokens;   // BOS + the text, cut to --max-tokens / the model's context
  int64_t text_tokens = 0;   // before the cut
  EvalOptions options;
};

// Reads the text and the prompts (one-line errors naming the file), loads the model, tokenizes.
EvalSetup load_eval_setup(const Args& args);

// to_json(run) plus the model, its configuration, the text and where it ran.
nlohmann::json eval_document(const EvalSetup& setup, const EvalRun& run);

// One stderr line per finished method: "[3/16] gear-kivi-2: ppl ... (2.1 s)".
void report_progress(size_t index, size_t total, const MethodEval& m);

// Writes the JSON to --json when given.
void write_eval_json(const Args& args, const nlohmann::json& doc);

}  // namespace gear::cli
