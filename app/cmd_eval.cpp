// gearlab eval: several KV-cache methods against FP16 on one text, each used exactly as in generation
// (prefill chunk, then token-by-token decode with the true tokens): perplexity, KL, top-1 agreement,
// greedy divergence, bytes. Table on stdout, JSON with every setting.
#include <iostream>
#include <sstream>

#include "app/cache_flags.h"
#include "app/commands.h"
#include "app/eval_setup.h"
#include "core/eval/eval_table.h"
#include "core/util/error.h"

namespace gear::cli {
namespace {

std::vector<FlagSpec> flags() {
  std::vector<FlagSpec> f = eval_flags();
  f.push_back({"cache", "LIST",
               "comma-separated methods or presets, each optionally NAME:key=value:... with its own settings "
               "(e.g. pyramid:l0=64); FP16 is always evaluated first",
               "gear-kivi-2"});
  const std::vector<FlagSpec> c = shared_cache_flags({"cache"});
  f.insert(f.end(), c.begin(), c.end());
  return f;
}

// One --cache entry: the method or preset, the shared flags, then its own key=value settings.
NamedConfig parse_entry(const Args& args, const std::string& entry) {
  std::stringstream parts(entry);
  std::string name, item, label;
  std::getline(parts, name, ':');
  CacheConfig c;
  set_option(c, "cache", name);
  apply_cache_flags(args, {"cache"}, c);
  label = name;
  while (std::getline(parts, item, ':')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError("eval: --cache entry '" + entry + "': expected key=value after ':', got '" + item + "'");
    set_option(c, item.substr(0, eq), item.substr(eq + 1));
    label += " " + item;
  }
  return {label, c};
}

// The methods to compare with FP16; a plain `full` entry is FP16 itself (always evaluated first).
std::vector<NamedConfig> methods(const Args& args) {
  std::vector<NamedConfig> out;
  for (const std::string& entry : split_list(args, "cache")) {
    NamedConfig m = parse_entry(args, entry);
    if (m.config.method != CacheMethod::Full) out.push_back(m);
  }
  return out;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  Args args("eval", flags(), argc, argv, 2);
  if (args.help_requested()) {
    std::cout << args.help_text(
        "Evaluate KV-cache methods against FP16 on a text by teacher forcing through the real cache path (prefill "
        "chunk, then one decode step per token): perplexity, KL(FP16 || method), top-1 agreement, tokens of greedy "
        "generation before the first divergence, and bytes at the end of the text. Cache flags apply to every "
        "listed method.");
    return 0;
  }
  const std::vector<NamedConfig> list = methods(args);
  EvalSetup setup = load_eval_setup(args);
  const EvalRun run = evaluate(*setup.model.model, setup.tokens, list, setup.options, report_progress);
  const ModelConfig& mc = setup.model.model->config();
  std::cout << "model: " << setup.model.model_path << (mc.generated ? " (GENERATED weights)" : "") << " | text "
            << setup.text_path << " (" << setup.text_tokens << " tokens)\n"
            << format_table(run);
  write_eval_json(args, eval_document(setup, run));
  return 0;
}

}  // namespace gear::cli
