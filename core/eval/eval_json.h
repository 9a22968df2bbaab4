#pragma once
// The "eval" JSON the reports read (gearlab eval and gearlab sweep write it): the run's token counts
// and one entry per method with its full settings, metrics, divergence, bytes and (for quantized
// methods) the analysis of the FP16 K/V under its settings. The caller adds the model and environment.
#include <nlohmann/json.hpp>

#include "core/eval/evaluate.h"

namespace gear {

nlohmann::json to_json(const MethodEval& m);
// {"kind": "eval", "tokens", "prefill_tokens", "scored_tokens", "gen_tokens", "methods": [...]}
nlohmann::json to_json(const EvalRun& run);

}  // namespace gear
