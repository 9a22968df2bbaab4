#pragma once
// The report's plots, each an <svg> string built from the inputs with svg.h.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/report/inputs.h"

namespace gear::report {

// One colour per method name across every plot of a report; the full cache (FP16) is always grey.
class MethodColors {
 public:
  explicit MethodColors(const ReportInputs& in);
  std::string of(const std::string& name) const;

 private:
  std::map<std::string, std::string> colors_;
};

bool is_reference(const std::string& method_name);  // "full" / "fp16": the uncompressed cache

// Indices of the points no other point beats on both axes (x larger is better, y smaller is
// better), in increasing x.
std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& xy);

// Relative error of quant-only, +S, +L and GEAR per layer for K (keys) or V.
std::string layer_error_chart(const AnalysisRun& a, bool keys);
// Singular values of the residual per layer (mean over heads), log scale, the rank marked.
std::string spectrum_chart(const AnalysisRun& a, bool keys);
// Perplexity increase (%) against compression vs FP16 for every eval method; "" without data.
std::string pareto_chart(const std::vector<EvalRun>& evals, const MethodColors& colors);
// Bars per method for every (batch, context) of a bench run.
std::string throughput_chart(const BenchRun& b, const MethodColors& colors);
std::string memory_chart(const BenchRun& b, const MethodColors& colors);
// Throughput at the largest batch that fits each budget, the batch written above each bar; "" without data.
std::string budget_chart(const BenchRun& b, const MethodColors& colors);

std::string model_label(const std::string& model, bool generated);  // "stories260K.bin", "gen:llama2-7b (GENERATED)"

}  // namespace gear::report
