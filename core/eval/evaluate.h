#pragma once
// Quality of KV-cache methods against the uncompressed cache, each method used exactly as in
// generation (teacher_forcing.h): perplexity of the text, KL(FP16 || method) and top-1 agreement
// per position, tokens of greedy generation before the first divergence from FP16, and the bytes
// the method holds at the end of the text.
//
// The FP16 pass (the `full` cache: FP16 on GPU, the model's FP32 on CPU) runs once and every method
// is compared with its stored logits and greedy outputs; each method gets its own one-row cache.
#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/cache/kv_cache.h"
#include "core/compression/analysis.h"
#include "core/compression/cache_config.h"
#include "core/eval/metrics.h"
#include "core/model/llama.h"

namespace gear {

struct EvalPrompt {
  std::string text;
  std::vector<int> tokens;  // BOS included
};

struct EvalOptions {
  int64_t prefill = 0;              // tokens of the prefill chunk; 0 = default_prefill(text tokens)
  std::vector<EvalPrompt> prompts;  // greedy-divergence prompts
  int gen_tokens = 128;             // greedy tokens per prompt (0: no divergence measured)
  bool analysis = true;             // analyze() the FP16 K/V with each quantized method's settings
};

// 64 tokens, or half the text when that is shorter.
int64_t default_prefill(int64_t tokens);

struct Divergence {
  std::string prompt;
  int first_divergence = 0;  // tokens equal to FP16's greedy output before the first difference
  int generated = 0;         // tokens generated (first_divergence == generated: never diverged)
};

struct MethodEval {
  std::string name;
  CacheConfig config;
  double perplexity = 0, ppl_delta = 0, ppl_delta_pct = 0;  // delta vs FP16
  Agreement agreement;
  std::vector<Divergence> divergence;
  ByteBreakdown bytes;   // the cache at the end of the text
  int64_t fp16_bytes = 0;
  double ratio_vs_fp16 = 0;            // fp16_bytes / bytes in use
  std::optional<Analysis> analysis;    // quantized methods, when requested
  double seconds = 0;                  // wall time of this method's evaluation
};

// What every method is compared with, computed once.
struct EvalReference {
  std::vector<int> tokens;
  int64_t prefill = 0;
  std::vector<int> targets;   // tokens[prefill + 1 ..]: what the scored positions predict
  at::Tensor logits;          // FP16's logits of the scored positions
  std::vector<EvalPrompt> prompts;
  std::vector<std::vector<int>> greedy;  // FP16's greedy tokens per prompt
  int gen_tokens = 0;
  bool analysis = true;
  CacheSnapshot snapshot;     // FP16's K/V of the whole text
  MethodEval fp16;            // the reference as a result row (KL 0, top-1 1, never diverges)
  int64_t scored() const { return int64_t(targets.size()); }
};

// Validates the options against the text and the model, then runs the FP16 pass.
EvalReference make_reference(LlamaModel& model, const std::vector<int>& tokens, const EvalOptions& options);

// One method through teacher forcing and greedy generation, compared with the reference.
MethodEval evaluate_method(LlamaModel& model, const EvalReference& ref, const std::string& name,
                           const CacheConfig& config);

struct NamedConfig {
  std::string name;
  CacheConfig config;
};

struct EvalRun {
  int64_t tokens = 0, prefill = 0, scored = 0;
  int gen_tokens = 0;
  std::vector<MethodEval> methods;  // FP16 first, then the methods in the order given
};

// Called after each method (FP16 included) with its index among `total`.
using EvalProgress = std::function<void(size_t index, size_t total, const MethodEval& result)>;

// The FP16 reference, then every method of `methods` (a `full` entry is evaluated too: KL 0).
EvalRun evaluate(LlamaModel& model, const std::vector<int>& tokens, const std::vector<NamedConfig>& methods,
                 const EvalOptions& options, const EvalProgress& progress = {});

}  // namespace gear
