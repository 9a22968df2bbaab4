// gearlab generate: prompt in, text and decode throughput out.
#include <fstream>
#include <iostream>

#include "app/cache_flags.h"
#include "app/commands.h"
#include "app/text_inputs.h"
#include "app/model_setup.h"
#include "core/cache/make_cache.h"
#include "core/model/generate.h"
#include "core/tokenizer/chat_format.h"
#include "core/util/error.h"

namespace gear::cli {
namespace {

std::vector<FlagSpec> generate_flags() {
  std::vector<FlagSpec> f = model_flags();
  f.insert(f.end(), {
      {"prompt", "TEXT", "the prompt (UTF-8)", ""},
      {"prompts-file", "FILE", "one prompt per line; rows of the batch cycle through them", ""},
      {"chat", "", "wrap the prompt in the Llama-2-chat template", ""},
      {"system", "TEXT", "system prompt for --chat", ""},
      {"max-tokens", "N", "new tokens per sequence", "256"},
      {"temperature", "T", "0 = greedy", "1.0"},
      {"top-p", "P", "nucleus sampling mass", "0.9"},
      {"top-k", "K", "0 = off", "0"},
      {"seed", "S", "sampling seed", "42"},
      {"batch", "B", "sequences decoded together", "1"},
      {"context", "N", "KV-cache capacity in tokens (default: the model's context)", ""},
      {"quiet", "", "print only the statistics", ""},
  });
  std::vector<FlagSpec> c = cache_flags();
  f.insert(f.end(), c.begin(), c.end());
  return f;
}

std::vector<std::string> read_prompts(const Args& args) {
  if (args.has("prompts-file")) return read_prompt_file(args.str("prompts-file"));
  return {args.required("prompt")};
}

// Token ids of one prompt. Generated weights without a tokenizer get byte-fallback ids.
std::vector<int> encode_prompt(const LoadedModel& m, const Args& args, const std::string& text) {
  if (!m.tokenizer) {
    require_utf8(text, "prompt");
    std::vector<int> ids{1};
    for (unsigned char c : text) ids.push_back(3 + c);
    return ids;
  }
  if (args.flag("chat")) return format_llama2_chat(*m.tokenizer, args.str("system"), {{text, ""}});
  return m.tokenizer->encode(text, /*add_bos=*/true);
}

std::string render(const LoadedModel& m, const std::vector<int>& prompt, const std::vector<int>& out) {
  if (!m.tokenizer) {
    std::string s = "[token ids; generated weights have no tokenizer]";
    for (int t : out) s += " " + std::to_string(t);
    return s;
  }
  std::vector<int> all = prompt;
  all.insert(all.end(), out.begin(), out.end());
  return m.tokenizer->decode(all);
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  Args args("generate", generate_flags(), argc, argv, 2);
  if (args.help_requested()) {
    std::cout << args.help_text(
        "Generate text with the chosen KV cache (default gear-kivi-2; --cache full for the uncompressed one) and "
        "report decode tokens/s and the cache's bytes against FP16.");
    return 0;
  }
  GenerationParams params;
  params.max_new_tokens = int(args.integer("max-tokens", 0, 1 << 20));
  params.sampling.temperature = float(args.number("temperature", 0, 100));
  params.sampling.top_p = float(args.number("top-p", 1e-6, 1));
  params.sampling.top_k = int(args.integer("top-k", 0, 1 << 24));
  params.sampling.seed = uint64_t(args.integer("seed", 0, (1LL << 62)));
  const int batch = int(args.integer("batch", 1, 4096));
  const std::vector<std::string> texts = read_prompts(args);
  const bool quiet = args.flag("quiet");
  const CacheConfig cache_settings = cache_config(args);

  LoadedModel m = load_model(args);
  const ModelConfig& c = m.model->config();
  const int64_t context = args.has("context") ? args.integer("context", 1, c.max_seq_len) : c.max_seq_len;
  std::vector<std::vector<int>> prompts;
  for (int b = 0; b < batch; ++b) {
    prompts.push_back(encode_prompt(m, args, texts[b % texts.size()]));
    require(int64_t(prompts.back().size()) <= context,
            "prompt is " + std::to_string(prompts.back().size()) + " tokens but the context holds " + std::to_string(context));
  }
  if (m.tokenizer) params.stop_tokens = {m.tokenizer->bos_id(), m.tokenizer->eos_id()};
  KvCache cache = make_cache(*m.model, cache_settings, batch, context);

  // Stream row 0 as it is produced when there is a single sequence; otherwise print at the end.
  const bool stream = batch == 1 && !quiet && m.tokenizer;
  int prev = prompts[0].back();
  if (stream) std::cout << m.tokenizer->decode(prompts[0]) << std::flush;
  TokenCallback on_token;
  if (stream)
    on_token = [&](int, int token) {
      std::cout << m.tokenizer->decode_token(prev, token) << std::flush;
      prev = token;
      return true;
    };
  GenerationResult r = generate(*m.model, cache, prompts, params, on_token);
  if (stream) std::cout << "\n";
  if (!stream && !quiet)
    for (int b = 0; b < batch; ++b) std::cout << (batch > 1 ? "[" + std::to_string(b) + "] " : "") << render(m, prompts[b], r.tokens[b]) << "\n";

  const GenerationStats& s = r.stats;
  std::cerr << "model: " << m.model_path << (c.generated ? " (GENERATED weights, " + c.source + ")" : "") << " | device "
            << m.model->device() << " " << m.model->dtype() << " | batch " << batch << " | sampling "
            << params.sampling.describe() << "\n"
            << "prefill: " << s.prompt_tokens << " tokens in " << s.prefill_seconds * 1e3 << " ms | decode: "
            << s.decode_steps << " steps, " << s.decode_tokens_per_second() << " tokens/s ("
            << (s.decode_steps ? s.decode_seconds * 1e3 / s.decode_steps : 0.0) << " ms/step)\n";
  int64_t held = 0;
  for (int b = 0; b < batch; ++b) held += cache.length(b);
  const ByteBreakdown kv = cache.bytes();
  const int64_t fp16 = fp16_bytes(c, held);
  std::cerr << "cache: " << describe(cache_settings) << " | " << kv.in_use() << " bytes for " << held
            << " tokens (codes " << kv.codes << ", scales " << kv.scales << ", sparse " << kv.sparse << ", low-rank "
            << kv.low_rank << ", full " << kv.full << ") | FP16 would be " << fp16 << " bytes: "
            << (kv.in_use() > 0 ? double(fp16) / double(kv.in_use()) : 0.0) << "x";
  // On the CPU the uncompressed cache is float32: say how the method compares with that too.
  if (m.model->dtype() == at::kFloat)
    std::cerr << " (vs the f32 full cache: " << (kv.in_use() > 0 ? 2.0 * double(fp16) / double(kv.in_use()) : 0.0)
              << "x)";
  std::cerr << "\n";
  return 0;
}

}  // namespace gear::cli
