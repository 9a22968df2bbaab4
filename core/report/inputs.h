#pragma once
// What a report is made of: the eval, bench and analysis results GEAR Lab writes as JSON, read back
// into plain structs (validated on the way in, so the writers never meet a missing key).
#include <nlohmann/json_fwd.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace gear::report {

constexpr double kMissing = NAN;  // a number the JSON gave as null (e.g. a NaN perplexity)

struct ComponentError {  // relative Frobenius error of each reconstruction
  double quant = 0, sparse = 0, lowrank = 0, gear = 0;
};

struct SideAnalysis {  // K or V of one layer
  ComponentError error;
  int64_t rank = 0;                                // marked on the spectrum
  std::vector<std::vector<double>> head_spectra;   // per head, descending singular values
};

struct LayerAnalysis {
  SideAnalysis k, v;
};

// `gearlab analyze` output, or the "analysis" of one eval method.
struct AnalysisRun {
  std::string source;  // "file.json" or "file.json: methods[2].analysis"
  std::string name, config_text, model;
  int64_t tokens = 0, compressed_tokens = 0;
  int64_t bytes_in_use = 0, fp16_bytes = 0;
  double ratio_vs_fp16 = 0;
  std::vector<LayerAnalysis> layers;
};

struct Divergence {
  std::string prompt;
  int64_t first_divergence = 0, generated = 0;
};

struct EvalMethod {
  std::string name, config_text;
  double perplexity = 0, ppl_delta = 0, ppl_delta_pct = 0, kl_mean = 0, kl_max = 0, top1_agreement = 0;
  std::vector<Divergence> divergence;
  int64_t bytes_in_use = 0, fp16_bytes = 0;
  double ratio_vs_fp16 = 0;
  bool has_analysis = false;  // its analysis is in ReportInputs::analyses
};

struct EvalRun {
  std::string source, model, model_config, text, environment;  // environment: one line
  bool generated_weights = false;
  int64_t tokens = 0, prefill_tokens = 0;
  std::vector<EvalMethod> methods;
};

struct BenchRow {
  std::string name, config_text;
  int64_t batch = 0, context = 0;
  double tokens_per_s = 0, ms_per_step = 0;
  std::vector<double> ms_samples;
  int64_t peak_bytes = 0, kv_bytes = 0, weight_bytes = 0;
  bool fits = true;
};

struct BudgetRow {
  std::string name;
  double budget_gib = 0;
  int64_t max_batch = 0, context = 0, peak_bytes = 0;
  double tokens_per_s = 0;
};

struct BenchRun {
  std::string source, model, model_config, environment, device, memory;
  bool generated_weights = false;
  std::vector<BenchRow> results;
  std::vector<BudgetRow> budget;
};

struct ReportInputs {
  std::vector<std::string> sources;  // every file read, in order
  std::vector<EvalRun> evals;
  std::vector<BenchRun> benches;
  std::vector<AnalysisRun> analyses;
  bool empty() const { return evals.empty() && benches.empty() && analyses.empty(); }
};

// Reads every file (dispatching on its "kind": eval, bench or analysis). The first bad file throws a
// gear::Error of one line naming the file and the problem (not JSON, unknown kind, missing key, wrong type).
ReportInputs load_report_inputs(const std::vector<std::string>& paths);
// One parsed document, appended to `into`; `source` names it in errors.
void add_report_input(ReportInputs& into, const nlohmann::json& j, const std::string& source);

}  // namespace gear::report
