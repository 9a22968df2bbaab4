#include "core/report/charts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/report/svg.h"
#include "core/util/units.h"

namespace gear::report {
namespace {

using svg::format_exact;

const char* side_name(bool keys) { return keys ? "K" : "V"; }

std::string fixed(double v, const char* format) {
  return svg::format_printf(format, v);
}

std::string ratio_text(double num, double den) {
  return num > 0 && den > 0 ? fixed(num / den, "%.2fx") : std::string("n/a");
}

// A colour between blue and amber for layer i of n: neighbouring layers look alike, the ends differ.
std::string layer_color(size_t i, size_t n) {
  static const int stops[][3] = {{0x3b, 0x4c, 0xc0}, {0x2a, 0x9d, 0x8f}, {0x8a, 0xb1, 0x3c}, {0xe0, 0x8e, 0x0b}};
  const double t = n > 1 ? double(i) / double(n - 1) * 3.0 : 0.0;
  const int k = std::min(2, int(t));
  const double f = t - k;
  char buf[8];
  int rgb[3];
  for (int c = 0; c < 3; ++c) rgb[c] = int(std::lround(stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f));
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
  return buf;
}

std::vector<double> mean_spectrum(const SideAnalysis& s) {
  std::vector<double> mean;
  for (const auto& h : s.head_spectra) {
    if (mean.size() < h.size()) mean.resize(h.size(), 0.0);
    for (size_t i = 0; i < h.size(); ++i) mean[i] += h[i] / double(s.head_spectra.size());
  }
  return mean;
}

// Memory in the unit that suits the largest value.
struct ByteUnit {
  double div;
  const char* name;
};
ByteUnit byte_unit(double max_bytes) {
  if (max_bytes >= 1024.0 * 1024 * 1024) return {1024.0 * 1024 * 1024, "GiB"};
  if (max_bytes >= 1024.0 * 1024) return {1024.0 * 1024, "MiB"};
  return {1024.0, "KiB"};
}

std::vector<std::string> method_order(const BenchRun& b) {
  std::vector<std::string> names;
  auto add = [&](const std::string& n) {
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  for (const auto& r : b.results) add(r.name);
  for (const auto& r : b.budget) add(r.name);
  return names;
}

std::vector<std::pair<int64_t, int64_t>> batch_contexts(const BenchRun& b) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& r : b.results)
    if (std::find(out.begin(), out.end(), std::make_pair(r.batch, r.context)) == out.end())
      out.emplace_back(r.batch, r.context);
  return out;
}

const BenchRow* find_row(const BenchRun& b, const std::string& name, int64_t batch, int64_t context) {
  for (const auto& r : b.results)
    if (r.name == name && r.batch == batch && r.context == context && r.fits) return &r;
  return nullptr;
}

const BenchRow* reference_row(const BenchRun& b, int64_t batch, int64_t context) {
  for (const auto& r : b.results)
    if (is_reference(r.name) && r.batch == batch && r.context == context && r.fits) return &r;
  return nullptr;
}

std::string bench_subject(const BenchRun& b) {
  return model_label(b.model, b.generated_weights) + (b.device.empty() ? "" : ", " + b.device);
}

// A grouped bar chart over (batch, context) with one value per method.
template <typename Value, typename Tip>
std::string bench_bars(const BenchRun& b, const MethodColors& colors, const std::string& title, const std::string& y_label,
                       Value value, Tip tip) {
  svg::BarChart chart;
  chart.title = title;
  chart.x_label = "batch · context (prompt tokens per row)";
  chart.y_label = y_label;
  const auto groups = batch_contexts(b);
  for (const auto& [batch, context] : groups)
    chart.categories.push_back("b" + std::to_string(batch) + " · " + std::to_string(context));
  for (const std::string& name : method_order(b)) {
    svg::BarSeries s{name, colors.of(name), {}, {}, {}};
    for (const auto& [batch, context] : groups) {
      const BenchRow* r = find_row(b, name, batch, context);
      const BenchRow* ref = reference_row(b, batch, context);
      s.values.push_back(r ? value(*r) : NAN);
      s.tooltips.push_back(r ? tip(*r, ref) : "");
    }
    chart.series.push_back(std::move(s));
  }
  return svg::bar_chart(chart);
}

}  // namespace

bool is_reference(const std::string& name) { return name == "full" || name == "fp16" || name == "FP16"; }

MethodColors::MethodColors(const ReportInputs& in) {
  std::vector<std::string> names;
  auto add = [&](const std::string& n) {
    if (!is_reference(n) && std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  // Bench methods first: a few names that should get the most distinct colours.
  for (const auto& b : in.benches) {
    for (const auto& r : b.results) add(r.name);
    for (const auto& r : b.budget) add(r.name);
  }
  for (const auto& e : in.evals)
    for (const auto& m : e.methods) add(m.name);
  for (size_t i = 0; i < names.size(); ++i) colors_[names[i]] = svg::palette(i);
}

std::string MethodColors::of(const std::string& name) const {
  if (is_reference(name)) return svg::kReference;
  auto it = colors_.find(name);
  return it != colors_.end() ? it->second : svg::palette(colors_.size());
}

std::string model_label(const std::string& model, bool generated) {
  std::string s = model;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  if (s.rfind("gen:", 0) != 0) s = s.substr(s.find_last_of('/') == std::string::npos ? 0 : s.find_last_of('/') + 1);
  return generated ? s + " (GENERATED weights)" : s;
}

std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& xy) {
  std::vector<size_t> front;
  for (size_t i = 0; i < xy.size(); ++i) {
    const auto [x, y] = xy[i];
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    bool dominated = false;
    for (size_t j = 0; j < xy.size() && !dominated; ++j) {
      const auto [u, v] = xy[j];
      dominated = j != i && std::isfinite(u) && std::isfinite(v) && u >= x && v <= y && (u > x || v < y);
    }
    if (!dominated) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](size_t a, size_t b) { return xy[a].first < xy[b].first; });
  return front;
}

std::string layer_error_chart(const AnalysisRun& a, bool keys) {
  struct Component {
    const char* name;
    const char* color;
    double ComponentError::*field;
  };
  static const Component parts[] = {{"quant-only (Q)", "#e15759", &ComponentError::quant},
                                    {"+S (Q + outliers)", "#f28e2b", &ComponentError::sparse},
                                    {"+L (Q + low rank)", "#4e79a7", &ComponentError::lowrank},
                                    {"GEAR (Q + L + S)", "#59a14f", &ComponentError::gear}};
  svg::BarChart chart;
  chart.title = a.name + ": " + side_name(keys) + " error per layer by component";
  chart.x_label = "layer";
  chart.y_label = "relative error ‖X − X̂‖ / ‖X‖";
  for (size_t l = 0; l < a.layers.size(); ++l) chart.categories.push_back(std::to_string(l));
  for (const Component& p : parts) {
    svg::BarSeries s{p.name, p.color, {}, {}, {}};
    for (size_t l = 0; l < a.layers.size(); ++l) {
      const ComponentError& e = keys ? a.layers[l].k.error : a.layers[l].v.error;
      s.values.push_back(e.*p.field);
      s.tooltips.push_back("layer " + std::to_string(l) + " " + side_name(keys) + ", " + p.name + ": " +
                           format_exact(e.*p.field));
    }
    chart.series.push_back(std::move(s));
  }
  return svg::bar_chart(chart);
}

std::string spectrum_chart(const AnalysisRun& a, bool keys) {
  svg::LineChart chart;
  chart.title = a.name + ": " + side_name(keys) + " residual spectrum (X − Q − S) per layer";
  chart.x_label = "singular value index";
  chart.y_label = "singular value (mean over heads, log)";
  chart.log_y = true;
  std::vector<int64_t> ranks;
  const size_t n = a.layers.size();
  for (size_t l = 0; l < n; ++l) {
    const SideAnalysis& side = keys ? a.layers[l].k : a.layers[l].v;
    svg::LineSeries s;
    // Long legends say nothing: name the ends and let the colour ramp tell the rest.
    s.name = n <= 12 || l == 0 || l + 1 == n ? "layer " + std::to_string(l) : "";
    s.color = layer_color(l, n);
    s.y = mean_spectrum(side);
    for (size_t i = 0; i < s.y.size(); ++i) {
      s.x.push_back(double(i + 1));
      s.tooltips.push_back("layer " + std::to_string(l) + " " + side_name(keys) + ", σ" + std::to_string(i + 1) + " = " +
                           format_exact(s.y[i]) + " (mean of " + std::to_string(side.head_spectra.size()) + " heads)");
    }
    if (side.rank > 0 && std::find(ranks.begin(), ranks.end(), side.rank) == ranks.end()) ranks.push_back(side.rank);
    chart.series.push_back(std::move(s));
  }
  for (int64_t r : ranks) chart.markers.push_back({double(r), "rank " + std::to_string(r), svg::kInk});
  return svg::line_chart(chart);
}

std::string pareto_tooltip(const EvalRun& e, const EvalMethod& m) {
  return m.name + " (" + m.config_text + "): " + fixed(m.ratio_vs_fp16, "%.3fx") + " smaller than FP16, perplexity " +
         format_exact(m.perplexity) + " (" + fixed(m.ppl_delta_pct, "%+.3f") + " %), KL mean " + format_exact(m.kl_mean) +
         ", top-1 " + fixed(100 * m.top1_agreement, "%.2f") + " % [" + e.source + "]";
}

// Settings that land on the same point (e.g. GEAR with rank 0 and no outliers is its backbone) become
// one point: one label, every setting in its tooltip.
std::vector<svg::ScatterPoint> merge_coincident(std::vector<svg::ScatterPoint> points, std::vector<int>& counts) {
  std::vector<svg::ScatterPoint> out;
  for (auto& p : points) {
    auto same = std::find_if(out.begin(), out.end(), [&](const svg::ScatterPoint& q) {
      return std::abs(q.x - p.x) <= 1e-9 * std::max(1.0, std::abs(p.x)) && std::abs(q.y - p.y) <= 1e-9 * std::max(1.0, std::abs(p.y));
    });
    if (same == out.end()) {
      out.push_back(p);
      counts.push_back(1);
      continue;
    }
    const size_t i = size_t(same - out.begin());
    same->tooltip += "\n" + p.tooltip;
    same->highlighted |= p.highlighted;
    if (++counts[i] == 2) same->label += ", " + p.label;
  }
  for (size_t i = 0; i < out.size(); ++i)
    if (counts[i] > 2) out[i].label += " +" + std::to_string(counts[i] - 2);
  return out;
}

std::string pareto_chart(const std::vector<EvalRun>& evals, const MethodColors& colors) {
  std::vector<std::pair<double, double>> xy;
  std::vector<svg::ScatterPoint> points;
  for (const auto& e : evals)
    for (const auto& m : e.methods)
      if (std::isfinite(m.ratio_vs_fp16) && std::isfinite(m.ppl_delta_pct)) {
        xy.emplace_back(m.ratio_vs_fp16, m.ppl_delta_pct);
        points.push_back({m.ratio_vs_fp16, m.ppl_delta_pct, m.name, colors.of(m.name), pareto_tooltip(e, m), false});
      }
  if (xy.empty()) return "";
  const std::vector<size_t> front = pareto_front(xy);
  for (size_t i : front) points[i].highlighted = true;
  svg::ScatterChart chart;
  chart.title = "Quality vs compression: perplexity increase against KV size reduction";
  chart.x_label = "compression vs FP16 (FP16 bytes ÷ method bytes, higher is smaller)";
  chart.y_label = "perplexity increase vs FP16 (%)";
  // Broken methods cost thousands of percent, good ones a fraction of one: past 20 % the axis turns
  // logarithmic (symlog) so both stay readable.
  for (const auto& p : xy) chart.symlog_y |= std::abs(p.second) > 20;
  if (chart.symlog_y) chart.y_label = "perplexity increase vs FP16 (%, log beyond 1)";
  chart.format_x = [](double v) { return svg::format_number(v) + "x"; };
  chart.legend = {{"on the Pareto front", svg::kInk, svg::LegendEntry::Mark::Dot},
                  {"dominated", svg::kInk, svg::LegendEntry::Mark::Ring},
                  {"Pareto front", svg::kInk, svg::LegendEntry::Mark::Dashed}};
  std::vector<int> counts;
  chart.points = merge_coincident(std::move(points), counts);
  for (size_t i : front) chart.path.push_back(xy[i]);
  return svg::scatter_chart(chart);
}

std::string throughput_chart(const BenchRun& b, const MethodColors& colors) {
  return bench_bars(
      b, colors, "Decode throughput, " + bench_subject(b), "tokens / s (all rows)",
      [](const BenchRow& r) { return r.tokens_per_s; },
      [](const BenchRow& r, const BenchRow* ref) {
        return r.name + ", batch " + std::to_string(r.batch) + ", context " + std::to_string(r.context) + ": " +
               format_exact(r.tokens_per_s) + " tokens/s (" + ratio_text(r.tokens_per_s, ref ? ref->tokens_per_s : 0) +
               " full), " + format_exact(r.ms_per_step) + " ms/step";
      });
}

std::string memory_chart(const BenchRun& b, const MethodColors& colors) {
  double max_bytes = 0;
  for (const auto& r : b.results) max_bytes = std::max(max_bytes, double(r.peak_bytes));
  const ByteUnit u = byte_unit(max_bytes);
  return bench_bars(
      b, colors, "Peak memory, " + bench_subject(b), std::string("peak memory (") + u.name + ")",
      [u](const BenchRow& r) { return double(r.peak_bytes) / u.div; },
      [](const BenchRow& r, const BenchRow* ref) {
        return r.name + ", batch " + std::to_string(r.batch) + ", context " + std::to_string(r.context) + ": peak " +
               std::to_string(r.peak_bytes) + " bytes (" + format_bytes(r.peak_bytes) + ", " +
               ratio_text(double(r.peak_bytes), ref ? double(ref->peak_bytes) : 0) + " full), KV " +
               format_bytes(r.kv_bytes);
      });
}

std::string budget_chart(const BenchRun& b, const MethodColors& colors) {
  if (b.budget.empty()) return "";
  std::vector<std::pair<double, int64_t>> groups;
  for (const auto& r : b.budget)
    if (std::find(groups.begin(), groups.end(), std::make_pair(r.budget_gib, r.context)) == groups.end())
      groups.emplace_back(r.budget_gib, r.context);
  svg::BarChart chart;
  chart.title = "Throughput at a memory budget, " + bench_subject(b);
  chart.x_label = "budget · context (the largest batch that fits is written above each bar)";
  chart.y_label = "tokens / s at the largest batch";
  for (const auto& [gib, context] : groups)
    chart.categories.push_back(svg::format_number(gib) + " GiB · " + std::to_string(context));
  for (const std::string& name : method_order(b)) {
    svg::BarSeries s{name, colors.of(name), {}, {}, {}};
    for (const auto& [gib, context] : groups) {
      const BudgetRow* r = nullptr;
      for (const auto& x : b.budget)
        if (x.name == name && x.budget_gib == gib && x.context == context) r = &x;
      s.values.push_back(r ? r->tokens_per_s : NAN);
      s.labels.push_back(r ? "b" + std::to_string(r->max_batch) : "");
      s.tooltips.push_back(r ? name + " at " + format_exact(gib) + " GiB, context " + std::to_string(context) +
                                   ": largest batch " + std::to_string(r->max_batch) + ", " +
                                   format_exact(r->tokens_per_s) + " tokens/s, peak " + format_bytes(r->peak_bytes)
                             : "");
    }
    chart.series.push_back(std::move(s));
  }
  return svg::bar_chart(chart);
}

}  // namespace gear::report
