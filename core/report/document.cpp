// build_document: the report's sections, figures and tables from the inputs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "core/report/charts.h"
#include "core/report/report.h"
#include "core/report/svg.h"
#include "core/util/units.h"

namespace gear::report {
namespace {

std::string fixed(double v, const char* format) {
  if (!std::isfinite(v)) return "n/a";
  return svg::format_printf(format, v);
}

Cell ratio_cell(double num, double den) {
  if (!(num > 0) || !(den > 0)) return {"–", "", true};
  return number_cell(num / den, fixed(num / den, "%.2fx"));
}

Cell bytes_cell(int64_t b) { return integer_cell(b, format_bytes(b)); }
Cell num_cell(double v, const char* format) { return number_cell(v, fixed(v, format)); }
Cell int_cell(int64_t v) { return integer_cell(v, std::to_string(v)); }

// A CSV-safe id: letters, digits and '-'.
std::string slug(const std::string& s) {
  std::string out;
  for (char ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    if (ok) out += ch;
    else if (!out.empty() && out.back() != '-') out += '-';
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "x" : out;
}

bool embedded(const AnalysisRun& a) { return a.source.find(": ") != std::string::npos; }

Table inputs_table(const ReportInputs& in) {
  Table t{"inputs", "Input files", "GENERATED weights are random weights of a real model's shape: their speed and "
                                   "memory are real, their text quality is not.",
          {"file", "kind", "model", "weights", "environment"}, {}, false};
  auto weights = [](bool generated) { return text_cell(generated ? "GENERATED" : "trained"); };
  for (const auto& e : in.evals)
    t.rows.push_back({text_cell(e.source), text_cell("eval"), text_cell(e.model), weights(e.generated_weights), text_cell(e.environment)});
  for (const auto& b : in.benches)
    t.rows.push_back({text_cell(b.source), text_cell("bench"), text_cell(b.model), weights(b.generated_weights), text_cell(b.environment)});
  for (const auto& a : in.analyses)
    if (!embedded(a)) t.rows.push_back({text_cell(a.source), text_cell("analysis"), text_cell(a.model), text_cell(""), text_cell("")});
  return t;
}

Cell divergence_cell(const EvalMethod& m) {
  if (m.divergence.empty()) return {"–", "", true};
  double first = 0, generated = 0;
  for (const auto& d : m.divergence) first += double(d.first_divergence), generated += double(d.generated);
  first /= double(m.divergence.size()), generated /= double(m.divergence.size());
  return number_cell(first, fixed(first, "%.1f") + " of " + fixed(generated, "%.0f"));
}

Table quality_table(const ReportInputs& in) {
  Table t{"quality", "Quality against FP16",
          "Teacher-forced next-token evaluation through the compressed cache. Δ = method − FP16; KL(FP16 ‖ method) per "
          "token; first divergence: greedy tokens generated before the text leaves FP16's (mean over prompts).",
          {"file", "method", "settings", "perplexity", "Δ perplexity", "Δ perplexity %", "KL mean", "KL max",
           "top-1 agreement %", "first divergence", "KV bytes", "FP16 ÷ KV"},
          {}, false};
  for (const auto& e : in.evals)
    for (const auto& m : e.methods)
      t.rows.push_back({text_cell(e.source), text_cell(m.name), text_cell(m.config_text), num_cell(m.perplexity, "%.4f"),
                        num_cell(m.ppl_delta, "%+.4f"), num_cell(m.ppl_delta_pct, "%+.3f"), num_cell(m.kl_mean, "%.5f"),
                        num_cell(m.kl_max, "%.4f"), num_cell(100 * m.top1_agreement, "%.2f"), divergence_cell(m),
                        bytes_cell(m.bytes_in_use), num_cell(m.ratio_vs_fp16, "%.2fx")});
  return t;
}

const BenchRow* reference(const BenchRun& b, const BenchRow& r) {
  for (const auto& x : b.results)
    if (is_reference(x.name) && x.batch == r.batch && x.context == r.context && x.fits) return &x;
  return nullptr;
}

Table throughput_table(const ReportInputs& in) {
  Table t{"throughput", "Throughput and peak memory",
          "tokens/s: all rows of the batch together, median of the repeats. vs full: against the uncompressed cache at "
          "the same batch and context (throughput: higher is better; peak: lower is better).",
          {"model", "device", "method", "batch", "context", "tokens/s", "tokens/s vs full", "ms/step", "peak memory",
           "peak vs full", "KV bytes", "ran"},
          {}, false};
  for (const auto& b : in.benches)
    for (const auto& r : b.results) {
      const BenchRow* ref = reference(b, r);
      t.rows.push_back({text_cell(model_label(b.model, b.generated_weights)), text_cell(b.device), text_cell(r.name),
                        int_cell(r.batch), int_cell(r.context), num_cell(r.tokens_per_s, "%.1f"),
                        ratio_cell(r.tokens_per_s, ref ? ref->tokens_per_s : 0), num_cell(r.ms_per_step, "%.3f"),
                        bytes_cell(r.peak_bytes), ratio_cell(double(r.peak_bytes), ref ? double(ref->peak_bytes) : 0),
                        bytes_cell(r.kv_bytes), text_cell(r.fits ? "yes" : "out of memory")});
    }
  return t;
}

Table budget_table(const ReportInputs& in) {
  Table t{"budget", "Throughput at a memory budget",
          "The largest batch whose peak memory fits the budget (weights + KV + activations on a GPU; weights + KV on "
          "the CPU), and its decode throughput: the paper's headline metric.",
          {"model", "device", "method", "budget GiB", "context", "largest batch", "tokens/s", "tokens/s vs full",
           "peak memory"},
          {}, false};
  for (const auto& b : in.benches)
    for (const auto& r : b.budget) {
      double full = 0;
      for (const auto& x : b.budget)
        if (is_reference(x.name) && x.budget_gib == r.budget_gib && x.context == r.context) full = x.tokens_per_s;
      t.rows.push_back({text_cell(model_label(b.model, b.generated_weights)), text_cell(b.device), text_cell(r.name),
                        num_cell(r.budget_gib, "%g"), int_cell(r.context), int_cell(r.max_batch),
                        num_cell(r.tokens_per_s, "%.1f"), ratio_cell(r.tokens_per_s, full), bytes_cell(r.peak_bytes)});
    }
  return t;
}

ComponentError mean_error(const AnalysisRun& a, bool keys) {
  ComponentError m;
  for (const auto& l : a.layers) {
    const ComponentError& e = keys ? l.k.error : l.v.error;
    m.quant += e.quant, m.sparse += e.sparse, m.lowrank += e.lowrank, m.gear += e.gear;
  }
  const double n = double(std::max<size_t>(a.layers.size(), 1));
  return {m.quant / n, m.sparse / n, m.lowrank / n, m.gear / n};
}

void add_errors(std::vector<Cell>& row, const ComponentError& e) {
  for (double v : {e.quant, e.sparse, e.lowrank, e.gear}) row.push_back(num_cell(v, "%.4f"));
}

Table compression_table(const ReportInputs& in) {
  Table t{"compression", "Compression and reconstruction error",
          "Relative Frobenius error ‖X − X̂‖ / ‖X‖ averaged over layers, for the backbone alone (quant), with outliers "
          "(+S), with the low-rank term (+L) and both (GEAR); bytes of the configured method.",
          {"source", "method", "tokens", "KV bytes", "FP16 ÷ KV", "K quant", "K +S", "K +L", "K GEAR", "V quant",
           "V +S", "V +L", "V GEAR"},
          {}, false};
  for (const auto& a : in.analyses) {
    std::vector<Cell> row = {text_cell(a.source), text_cell(a.name), int_cell(a.tokens), bytes_cell(a.bytes_in_use),
                             num_cell(a.ratio_vs_fp16, "%.2fx")};
    add_errors(row, mean_error(a, true));
    add_errors(row, mean_error(a, false));
    t.rows.push_back(std::move(row));
  }
  return t;
}

Table layer_table(const AnalysisRun& a, size_t index) {
  Table t{"layer-errors-" + std::to_string(index + 1) + "-" + slug(a.name), "Per-layer errors: " + a.name,
          a.config_text + " (" + a.source + ")",
          {"layer", "K quant", "K +S", "K +L", "K GEAR", "V quant", "V +S", "V +L", "V GEAR", "K rank", "V rank"},
          {}, true};
  for (size_t l = 0; l < a.layers.size(); ++l) {
    std::vector<Cell> row = {int_cell(int64_t(l))};
    add_errors(row, a.layers[l].k.error);
    add_errors(row, a.layers[l].v.error);
    row.push_back(int_cell(a.layers[l].k.rank));
    row.push_back(int_cell(a.layers[l].v.rank));
    t.rows.push_back(std::move(row));
  }
  return t;
}

Section summary_section(const ReportInputs& in) {
  Section s{"summary", "Summary", "Every table is also written as CSV beside this file (the file name is the table's id).", {}, {}};
  if (!in.evals.empty()) s.tables.push_back(quality_table(in));
  bool results = false, budget = false;
  for (const auto& b : in.benches) results |= !b.results.empty(), budget |= !b.budget.empty();
  if (results) s.tables.push_back(throughput_table(in));
  if (budget) s.tables.push_back(budget_table(in));
  if (!in.analyses.empty()) s.tables.push_back(compression_table(in));
  return s;
}

Section quality_section(const ReportInputs& in, const MethodColors& colors) {
  Section s{"quality", "Quality vs compression",
            "Each point is one method or setting of an eval run: how much smaller its KV cache is than FP16 (x) and how "
            "much perplexity it costs (y). The dashed line joins the Pareto front: settings no other setting beats on "
            "both axes.",
            {}, {}};
  const std::string svg = pareto_chart(in.evals, colors);
  if (!svg.empty())
    s.figures.push_back({svg, "Filled points are on the Pareto front, hollow ones are dominated. Hover a point for its "
                              "exact ratio, perplexity, KL, top-1 agreement and source file."});
  return s;
}

Section performance_section(const ReportInputs& in, const MethodColors& colors) {
  Section s{"performance", "Throughput and memory",
            "Decode throughput and peak memory of each KV cache against the full-precision cache (FP16 on a GPU, "
            "float32 on the CPU), measured by gearlab bench: every row prefilled with random token ids, then timed "
            "greedy decode steps after a warm-up.",
            {}, {}};
  for (const auto& b : in.benches) {
    const std::string memory = b.memory.empty() ? "" : " Peak memory: " + b.memory + ".";
    if (!b.results.empty()) {
      s.figures.push_back({throughput_chart(b, colors), "Decode tokens/s of all rows, median of the repeats. Source: " +
                                                            b.source + (b.environment.empty() ? "" : " (" + b.environment + ")")});
      s.figures.push_back({memory_chart(b, colors), "Peak memory per run." + memory + " Source: " + b.source});
    }
    const std::string budget = budget_chart(b, colors);
    if (!budget.empty())
      s.figures.push_back({budget, "Throughput of the largest batch that fits each budget (b = that batch)." + memory +
                                       " Source: " + b.source});
  }
  return s;
}

Section errors_section(const ReportInputs& in) {
  Section s{"errors", "Per-layer error by component",
            "How much of the quantization error each GEAR component removes, layer by layer: the backbone alone, with "
            "the sparse outliers (+S), with the low-rank residual (+L), and both (GEAR). The component settings are "
            "applied even when the method itself is quant-only, so the bars show what each would buy.",
            {}, {}};
  for (size_t i = 0; i < in.analyses.size(); ++i) {
    const AnalysisRun& a = in.analyses[i];
    for (bool keys : {true, false})
      s.figures.push_back({layer_error_chart(a, keys), std::string(keys ? "Keys" : "Values") + " of " + a.config_text +
                                                           ", " + std::to_string(a.tokens) + " tokens. Source: " + a.source});
    s.tables.push_back(layer_table(a, i));
  }
  return s;
}

Section spectra_section(const ReportInputs& in) {
  Section s{"spectra", "Residual spectra",
            "Singular values of the residual X − Q − S that the low-rank term approximates, per layer (mean over heads), "
            "on a log scale; the dashed line marks the rank kept. A fast decay means a small rank captures most of it.",
            {}, {}};
  for (const auto& a : in.analyses) {
    bool any = false;
    for (const auto& l : a.layers) any |= !l.k.head_spectra.empty() || !l.v.head_spectra.empty();
    if (!any) continue;
    for (bool keys : {true, false})
      s.figures.push_back({spectrum_chart(a, keys), std::string(keys ? "Keys" : "Values") + " of " + a.config_text +
                                                        ". Source: " + a.source});
  }
  return s;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return buf;
}

}  // namespace

std::vector<const Table*> Document::tables() const {
  std::vector<const Table*> out;
  for (const auto& s : sections)
    for (const auto& t : s.tables) out.push_back(&t);
  return out;
}

Document build_document(const ReportInputs& in) {
  const MethodColors colors(in);
  Document doc;
  doc.title = "GEAR Lab report";
  doc.generated_utc = utc_now();
  doc.sections.push_back({"inputs", "Inputs", "", {}, {inputs_table(in)}});
  doc.sections.push_back(summary_section(in));
  doc.sections.push_back(quality_section(in, colors));
  doc.sections.push_back(performance_section(in, colors));
  doc.sections.push_back(errors_section(in));
  doc.sections.push_back(spectra_section(in));
  doc.sections.erase(std::remove_if(doc.sections.begin(), doc.sections.end(),
                                    [](const Section& s) { return s.figures.empty() && s.tables.empty(); }),
                     doc.sections.end());
  return doc;
}

}  // namespace gear::report
