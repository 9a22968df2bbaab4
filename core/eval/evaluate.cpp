#include "core/eval/evaluate.h"

#include <algorithm>
#include <chrono>

#include "core/cache/make_cache.h"
#include "core/eval/divergence.h"
#include "core/eval/teacher_forcing.h"
#include "core/util/error.h"

namespace gear {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void check_options(const LlamaModel& model, const std::vector<int>& tokens, const EvalOptions& o, int64_t prefill) {
  const int64_t n = int64_t(tokens.size());
  require(n <= model.config().max_seq_len, "eval: the text's " + std::to_string(n) +
                                               " tokens exceed the model's context of " +
                                               std::to_string(model.config().max_seq_len));
  require(prefill >= 1, "eval: the prefill chunk must hold at least 1 token");
  require(n >= prefill + 2, "eval: the text has " + std::to_string(n) + " tokens, too few for a prefill of " +
                                std::to_string(prefill) + " plus 2 (at least one decoded, scored position)");
  require(o.gen_tokens >= 0, "eval: generated tokens must be >= 0");
  for (const EvalPrompt& p : o.prompts) {
    require(!p.tokens.empty(), "eval: the prompt \"" + p.text + "\" has no tokens");
    require(int64_t(p.tokens.size()) + o.gen_tokens <= model.config().max_seq_len,
            "eval: the prompt \"" + p.text + "\" (" + std::to_string(p.tokens.size()) + " tokens) plus " +
                std::to_string(o.gen_tokens) + " generated tokens exceeds the model's context of " +
                std::to_string(model.config().max_seq_len));
  }
}

// The result row of a teacher-forced cache: bytes at the end of the text and its logits' quality.
void score(MethodEval& m, const EvalReference& ref, const TeacherForced& tf, const ModelConfig& mc) {
  m.perplexity = perplexity_from_logits(tf.logits, ref.targets);
  m.agreement = compare_distributions(ref.logits, tf.logits);
  m.bytes = tf.cache.bytes();
  m.fp16_bytes = fp16_bytes(mc, int64_t(ref.tokens.size()));
  m.ratio_vs_fp16 = m.bytes.in_use() > 0 ? double(m.fp16_bytes) / double(m.bytes.in_use()) : 0;
}

}  // namespace

int64_t default_prefill(int64_t tokens) { return std::max<int64_t>(1, std::min<int64_t>(64, tokens / 2)); }

EvalReference make_reference(LlamaModel& model, const std::vector<int>& tokens, const EvalOptions& options) {
  const auto t0 = Clock::now();
  EvalReference ref;
  ref.prefill = options.prefill > 0 ? options.prefill : default_prefill(int64_t(tokens.size()));
  check_options(model, tokens, options, ref.prefill);
  ref.tokens = tokens;
  ref.targets.assign(tokens.begin() + ref.prefill + 1, tokens.end());
  ref.prompts = options.prompts;
  ref.gen_tokens = options.gen_tokens;
  ref.analysis = options.analysis;
  const ModelConfig& mc = model.config();
  const CacheConfig full = preset("full");
  TeacherForced tf = teacher_force(model, make_cache(model, full, 1, int64_t(tokens.size())), tokens, ref.prefill);
  ref.logits = tf.logits;
  if (options.analysis) ref.snapshot = capture_snapshot(tf.cache, mc, 0, ref.prefill);
  MethodEval& m = ref.fp16;
  m.name = "full";
  m.config = full;
  score(m, ref, tf, mc);
  for (const EvalPrompt& p : ref.prompts) {
    ref.greedy.push_back(options.gen_tokens > 0 ? greedy_tokens(model, full, p.tokens, options.gen_tokens)
                                                : std::vector<int>());
    m.divergence.push_back({p.text, int(ref.greedy.back().size()), int(ref.greedy.back().size())});
  }
  m.seconds = seconds_since(t0);
  return ref;
}

MethodEval evaluate_method(LlamaModel& model, const EvalReference& ref, const std::string& name,
                           const CacheConfig& config) {
  const auto t0 = Clock::now();
  MethodEval m;
  m.name = name;
  m.config = config;
  const int64_t n = int64_t(ref.tokens.size());
  const TeacherForced tf = teacher_force(model, make_cache(model, config, 1, n), ref.tokens, ref.prefill);
  score(m, ref, tf, model.config());
  m.ppl_delta = m.perplexity - ref.fp16.perplexity;
  m.ppl_delta_pct = 100.0 * m.ppl_delta / ref.fp16.perplexity;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    const std::vector<int>& fp16 = ref.greedy[i];
    const std::vector<int> out =
        ref.gen_tokens > 0 ? greedy_tokens(model, config, ref.prompts[i].tokens, ref.gen_tokens) : std::vector<int>();
    m.divergence.push_back({ref.prompts[i].text, first_divergence(fp16, out), int(out.size())});
  }
  if (ref.analysis && config.quantized()) m.analysis = analyze(ref.snapshot, config);
  m.seconds = seconds_since(t0);
  return m;
}

EvalRun evaluate(LlamaModel& model, const std::vector<int>& tokens, const std::vector<NamedConfig>& methods,
                 const EvalOptions& options, const EvalProgress& progress) {
  // Every setting is checked against the model before the first (possibly long) pass.
  const ModelConfig& mc = model.config();
  for (const NamedConfig& m : methods) validate(m.config, mc.n_layers, mc.n_kv_heads, mc.hd());
  EvalRun run;
  const EvalReference ref = make_reference(model, tokens, options);
  run.tokens = int64_t(tokens.size());
  run.prefill = ref.prefill;
  run.scored = ref.scored();
  run.gen_tokens = ref.gen_tokens;
  const size_t total = methods.size() + 1;
  run.methods.push_back(ref.fp16);
  if (progress) progress(0, total, run.methods.back());
  for (const NamedConfig& m : methods) {
    run.methods.push_back(evaluate_method(model, ref, m.name, m.config));
    if (progress) progress(run.methods.size() - 1, total, run.methods.back());
  }
  return run;
}

}  // namespace gear
