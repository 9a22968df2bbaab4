#include "core/eval/eval_json.h"

namespace gear {
namespace {

nlohmann::json bytes_json(const ByteBreakdown& b) {
  return {{"full", b.full},         {"codes", b.codes},       {"scales", b.scales},
          {"sparse", b.sparse},     {"low_rank", b.low_rank}, {"in_use", b.in_use()}};
}

}  // namespace

nlohmann::json to_json(const MethodEval& m) {
  nlohmann::json j;
  j["name"] = m.name;
  j["config"] = to_json(m.config);
  j["config_text"] = describe(m.config);
  j["perplexity"] = m.perplexity;
  j["ppl_delta"] = m.ppl_delta;
  j["ppl_delta_pct"] = m.ppl_delta_pct;
  j["kl_mean"] = m.agreement.kl_mean;
  j["kl_max"] = m.agreement.kl_max;
  j["top1_agreement"] = m.agreement.top1;
  j["divergence"] = nlohmann::json::array();
  for (const Divergence& d : m.divergence)
    j["divergence"].push_back({{"prompt", d.prompt}, {"first_divergence", d.first_divergence}, {"generated", d.generated}});
  j["bytes"] = bytes_json(m.bytes);
  j["fp16_bytes"] = m.fp16_bytes;
  j["ratio_vs_fp16"] = m.ratio_vs_fp16;
  j["seconds"] = m.seconds;
  if (m.analysis) j["analysis"] = to_json(*m.analysis, /*with_spectra=*/true, /*with_outliers=*/false);
  return j;
}

nlohmann::json to_json(const EvalRun& run) {
  nlohmann::json j;
  j["kind"] = "eval";
  j["tokens"] = run.tokens;
  j["prefill_tokens"] = run.prefill;
  j["scored_tokens"] = run.scored;
  j["gen_tokens"] = run.gen_tokens;
  j["methods"] = nlohmann::json::array();
  for (const MethodEval& m : run.methods) j["methods"].push_back(to_json(m));
  return j;
}

}  // namespace gear
