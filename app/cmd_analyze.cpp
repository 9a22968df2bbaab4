// gearlab analyze: run a prompt or text through the model with the exact cache, then decompose its
// K/V with the chosen compression settings: per-layer errors by component, spectra, bytes.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "app/cache_flags.h"
#include "app/commands.h"
#include "app/text_inputs.h"
#include "app/model_setup.h"
#include "core/compression/analysis.h"
#include "core/model/generate.h"
#include "core/util/error.h"

namespace gear::cli {
namespace {

std::vector<FlagSpec> analyze_flags() {
  std::vector<FlagSpec> f = model_flags();
  f.insert(f.end(), {
      {"prompt", "TEXT", "the prompt (UTF-8)", ""},
      {"text", "FILE", "a UTF-8 text file used as the prompt", ""},
      {"max-tokens", "N", "greedy tokens decoded after the prompt before the snapshot", "0"},
      {"context", "N", "tokens kept from the text (default: the model's context)", ""},
      {"json", "FILE", "write the full analysis (spectra and outlier maps included) as JSON", ""},
  });
  std::vector<FlagSpec> c = cache_flags();
  f.insert(f.end(), c.begin(), c.end());
  return f;
}

std::string read_text(const Args& args) {
  return args.has("text") ? read_text_file(args.str("text")) : args.required("prompt");
}

}  // namespace

int cmd_analyze(int argc, char** argv) {
  Args args("analyze", analyze_flags(), argc, argv, 2);
  if (args.help_requested()) {
    std::cout << args.help_text(
        "Capture the exact K/V of a prompt (plus --max-tokens greedy tokens) and decompose them with the cache "
        "settings: relative error of quant-only, +sparse, +low-rank and GEAR per layer, residual spectra, "
        "outliers, bytes vs FP16.");
    return 0;
  }
  if (args.has("prompt") && args.has("text")) throw UsageError("analyze: give --prompt or --text, not both");
  const CacheConfig config = cache_config(args);
  const std::string text = read_text(args);
  const int max_tokens = int(args.integer("max-tokens", 0, 1 << 20));
  LoadedModel m = load_model(args);
  require(m.tokenizer != nullptr, "analyze: needs a tokenizer (pass --tokenizer PATH)");
  const ModelConfig& mc = m.model->config();
  validate(config, mc.n_layers, mc.n_kv_heads, mc.hd());  // before spending time on the model
  const int64_t context = args.has("context") ? args.integer("context", 2, mc.max_seq_len) : mc.max_seq_len;
  std::vector<int> prompt = m.tokenizer->encode(text, /*add_bos=*/true);
  // A long text is cut to the context, leaving room for the decoded tokens.
  const int64_t room = std::max<int64_t>(1, context - max_tokens);
  if (int64_t(prompt.size()) > room) prompt.resize(size_t(room));
  KvCache cache = m.model->make_full_cache(1, context);
  GenerationParams params;
  params.max_new_tokens = max_tokens;
  params.sampling.temperature = 0;
  if (max_tokens == 0) m.model->prefill(cache, 0, prompt, /*last_only=*/true);
  else generate(*m.model, cache, {prompt}, params);
  const CacheSnapshot snap = capture_snapshot(cache, mc, 0, int64_t(prompt.size()));
  const Analysis a = analyze(snap, config);
  std::cout << "model: " << m.model_path << (mc.generated ? " (GENERATED weights)" : "") << "\n" << format_table(a);
  if (args.has("json")) {
    const std::string path = args.str("json");
    std::ofstream out(path);
    require(bool(out), path + ": cannot write the JSON file");
    nlohmann::json j = to_json(a, /*with_spectra=*/true, /*with_outliers=*/true);
    j["model"] = m.model_path;
    out << j.dump(1) << "\n";
    std::cerr << "wrote " << path << "\n";
  }
  return 0;
}

}  // namespace gear::cli
