#include "core/eval/eval_table.h"

#include <cstdio>
#include <sstream>

namespace gear {
namespace {

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// "12/128 128/128": per prompt, tokens before FP16's greedy output is left, of those generated.
std::string divergence_cell(const MethodEval& m) {
  std::string s;
  for (const Divergence& d : m.divergence)
    s += (s.empty() ? "" : " ") + std::to_string(d.first_divergence) + "/" + std::to_string(d.generated);
  return s.empty() ? "-" : s;
}

size_t name_width(const EvalRun& run) {
  size_t w = 6;
  for (const MethodEval& m : run.methods) w = std::max(w, m.name.size());
  return w;
}

}  // namespace

std::string format_table(const EvalRun& run) {
  std::ostringstream os;
  os << run.tokens << " tokens: prefill " << run.prefill << ", " << run.scored
     << " decoded positions scored; greedy divergence over " << run.gen_tokens << " tokens per prompt\n";
  const int w = int(name_width(run));
  char line[1024];
  std::snprintf(line, sizeof line, "%-*s %10s %9s %10s %10s %8s %-16s %10s %7s  %s\n", w, "method", "ppl", "dppl %",
                "KL mean", "KL max", "top-1 %", "first div.", "bytes", "ratio", "config");
  os << line;
  for (const MethodEval& m : run.methods) {
    std::snprintf(line, sizeof line, "%-*s %10s %9s %10s %10s %8s %-16s %10lld %7s  %s\n", w, m.name.c_str(),
                  fmt("%.4f", m.perplexity).c_str(), fmt("%+.3f", m.ppl_delta_pct).c_str(),
                  fmt("%.2e", m.agreement.kl_mean).c_str(), fmt("%.2e", m.agreement.kl_max).c_str(),
                  fmt("%.2f", 100 * m.agreement.top1).c_str(), divergence_cell(m).c_str(),
                  static_cast<long long>(m.bytes.in_use()), fmt("%.2fx", m.ratio_vs_fp16).c_str(),
                  describe(m.config).c_str());
    os << line;
  }
  return os.str();
}

}  // namespace gear
