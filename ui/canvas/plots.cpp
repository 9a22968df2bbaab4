// Bars, spectra and throughput; the heatmap lives in heatmap.cpp. Every function: reserve the
// frame, settle the axes, draw the data clipped to the plot area, then the hover tooltip.
#define IMGUI_DEFINE_MATH_OPERATORS
#include "canvas/plots.h"

#include <imgui_internal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "canvas/plot_frame.h"

namespace gear::ui::plot {

namespace {

constexpr ImU32 kHighlight = IM_COL32(255, 255, 255, 14);

// Positive, finite data range of several series (for the log axes), or the full range.
void data_range(const std::vector<float>* const* series, int n, bool positive_only, double& lo,
                double& hi) {
  lo = HUGE_VAL;
  hi = -HUGE_VAL;
  for (int s = 0; s < n; ++s) {
    for (float v : *series[s]) {
      if (!std::isfinite(v) || (positive_only && v <= 0)) continue;
      lo = std::min(lo, static_cast<double>(v));
      hi = std::max(hi, static_cast<double>(v));
    }
  }
}

void bar_range(const ComponentErrors& e, bool log, double& lo, double& hi) {
  const std::vector<float>* s[] = {&e.quant, &e.sparse, &e.lowrank, &e.gear};
  data_range(s, 4, log, lo, hi);
}

void no_data(const Frame& f, const char* what) {
  const ImVec2 s = ImGui::CalcTextSize(what);
  f.dl->AddText((f.min + f.max - s) * 0.5f, Chrome::text(), what);
}

}  // namespace

// ---- grouped bars ------------------------------------------------------------------------------

void component_bars(const char* id, const ComponentErrors& e, const char* title, const char* metric,
                    const BarOptions& o, ImVec2 size) {
  static const char* const kNames[] = {"quant", "+ sparse", "+ low-rank", "GEAR"};
  const std::vector<float>* series[] = {&e.quant, &e.sparse, &e.lowrank, &e.gear};
  const ImU32 colors[] = {series_color(0), series_color(1), series_color(2), series_color(3)};
  Frame f;
  if (!begin_frame(id, size, title, Margins{}, f)) return;
  int layers = e.layers();
  for (auto* s : series) layers = std::min(layers, static_cast<int>(s->size()));
  if (layers <= 0) return no_data(f, "no layers");

  // Axes: the data's range rounded to decades (log) or nice steps from zero (linear).
  double lo = o.y_lo, hi = o.y_hi;
  if (!(lo < hi)) {
    bar_range(e, o.log_y, lo, hi);
    if (!o.log_y) lo = std::min(0.0, lo);
    nice_range(lo, hi, o.log_y);
  }
  f.y = Axis{lo, hi, o.log_y};
  f.x = Axis{0, static_cast<double>(layers)};
  y_axis(f, f.y, metric);
  x_categories(f, layers, "L%d");

  // Which layer / bar the mouse is over: a layer is a slot, its four bars share 80% of it.
  const float slot = (f.max.x - f.min.x) / layers, bar = slot * 0.8f / 4;
  int hl = -1, hb = -1;
  if (f.mouse_in_plot()) {
    hl = std::min(layers - 1, static_cast<int>((f.mouse.x - f.min.x) / slot));
    const int b = static_cast<int>(std::floor((f.mouse.x - f.min.x - hl * slot - slot * 0.1f) / bar));
    hb = b >= 0 && b < 4 ? b : -1;
    f.dl->AddRectFilled(ImVec2(f.min.x + hl * slot, f.min.y), ImVec2(f.min.x + (hl + 1) * slot, f.max.y),
                        kHighlight);
  }

  f.dl->PushClipRect(f.min, f.max, true);
  for (int l = 0; l < layers; ++l) {
    for (int s = 0; s < 4; ++s) {
      const float v = (*series[s])[l];
      if (!std::isfinite(v) || (o.log_y && v <= 0)) continue;
      const float x0 = f.min.x + l * slot + slot * 0.1f + s * bar;
      const float y = std::clamp(f.py(v), f.min.y, f.max.y);
      const float a = hl < 0 || hl == l ? 1.0f : 0.75f;
      f.dl->AddRectFilled(ImVec2(x0 + 1, y), ImVec2(x0 + bar - 1, f.max.y), series_color(s, a), 1.5f);
      if (l == hl && s == hb) f.dl->AddRect(ImVec2(x0, y - 1), ImVec2(x0 + bar, f.max.y), IM_COL32_WHITE, 1.5f);
    }
  }
  f.dl->PopClipRect();
  legend(f, kNames, colors, 4);  // after the data: a boxed legend inside the plot stays on top

  // Tooltip: the layer's four exact values and each one's reduction against quant-only.
  if (hl < 0) return;
  ImGui::BeginTooltip();
  ImGui::Text("%s  \xC2\xB7  layer %d", title, hl);
  ImGui::Separator();
  const float col1 = column_after("+ low-rank");
  const float col2 = col1 + ImGui::CalcTextSize("0.00000000").x + ImGui::GetFontSize();
  for (int s = 0; s < 4; ++s) {
    const float v = (*series[s])[hl];
    swatch(colors[s]);
    ImGui::TextColored(s == hb ? ImVec4(1, 1, 1, 1) : ImGui::GetStyle().Colors[ImGuiCol_Text], "%s",
                       kNames[s]);
    ImGui::SameLine(col1);
    ImGui::Text("%.7g", v);
    const float q = (*series[0])[hl];
    if (s > 0 && q > 0 && std::isfinite(v)) {
      ImGui::SameLine(col2);
      ImGui::TextDisabled("%.3g\xC3\x97 quant", v / q);
    }
  }
  ImGui::EndTooltip();
}

void layer_errors(const char* id, const LayerErrors& e, const BarOptions& o, ImVec2 size) {
  // One y range for both panels, unless the caller fixed it.
  BarOptions shared = o;
  if (!(o.y_lo < o.y_hi)) {
    double klo, khi, vlo, vhi;
    bar_range(e.key, o.log_y, klo, khi);
    bar_range(e.value, o.log_y, vlo, vhi);
    shared.y_lo = std::min(klo, vlo);
    shared.y_hi = std::max(khi, vhi);
    if (!o.log_y) shared.y_lo = std::min(0.0, shared.y_lo);
    nice_range(shared.y_lo, shared.y_hi, o.log_y);
  }
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float gap = ImGui::GetStyle().ItemSpacing.x;
  const float w = ((size.x > 0 ? size.x : avail.x + size.x) - gap) * 0.5f;
  ImGui::PushID(id);
  component_bars("K", e.key, "Keys: error per layer", e.metric.c_str(), shared, ImVec2(w, size.y));
  ImGui::SameLine();
  component_bars("V", e.value, "Values: error per layer", e.metric.c_str(), shared, ImVec2(w, size.y));
  ImGui::PopID();
}

// ---- singular values ---------------------------------------------------------------------------

void spectrum(const char* id, const Spectrum& s, const SpectrumOptions& o, ImVec2 size) {
  Frame f;
  if (!begin_frame(id, size, s.title.c_str(), Margins{}, f)) return;
  if (s.heads <= 0 || s.count <= 0 || s.values.size() < static_cast<size_t>(s.heads) * s.count)
    return no_data(f, "no spectrum");

  // Legend: "head 0".."head 7" (more heads would not fit: they only get colours).
  char names[8][16];
  const char* name_ptrs[8];
  ImU32 colors[8];
  const int shown = std::min(s.heads, 8);
  for (int h = 0; h < shown; ++h) {
    std::snprintf(names[h], sizeof names[h], "head %d", h);
    name_ptrs[h] = names[h];
    colors[h] = series_color(h);
  }

  double lo, hi;
  const std::vector<float>* all[] = {&s.values};
  data_range(all, 1, o.log_y, lo, hi);
  if (!o.log_y) lo = 0;
  nice_range(lo, hi, o.log_y);
  f.y = Axis{lo, hi, o.log_y};
  f.x = s.count > 1 ? Axis{1, static_cast<double>(s.count), false, true} : Axis{0.5, 1.5, false, true};
  y_axis(f, f.y, "singular value");
  x_axis(f, "index i (descending)");

  // The chosen rank: everything right of it is what low-rank leaves out.
  if (s.rank > 0 && s.rank <= s.count) {
    const float xr = f.px(s.rank);
    f.dl->AddRectFilled(ImVec2(xr, f.min.y), f.max, IM_COL32(255, 255, 255, 7));
    vline_dashed(f, xr, IM_COL32(240, 228, 66, 230));
    char label[24];
    std::snprintf(label, sizeof label, "r = %d", s.rank);
    f.dl->AddText(ImVec2(xr + 5, f.min.y + 3), IM_COL32(240, 228, 66, 255), label);
  }

  f.dl->PushClipRect(f.min, f.max, true);
  for (int h = 0; h < s.heads; ++h) {
    const ImU32 c = series_color(h);
    for (int i = 0; i < s.count; ++i) {
      const float v = s.at(h, i);
      if (!std::isfinite(v) || (o.log_y && v <= 0)) { f.dl->PathStroke(c, 0, 2.0f); continue; }
      f.dl->PathLineTo(ImVec2(f.px(i + 1), f.py(v)));
    }
    f.dl->PathStroke(c, 0, 2.0f);
    if (s.count <= 48) {
      for (int i = 0; i < s.count; ++i) {
        const float v = s.at(h, i);
        if (!std::isfinite(v) || (o.log_y && v <= 0)) continue;
        f.dl->AddCircleFilled(ImVec2(f.px(i + 1), f.py(v)), 3.0f, c);
      }
    }
  }
  f.dl->PopClipRect();
  legend(f, name_ptrs, colors, shown);

  // Tooltip: sigma_i of every head at the nearest index, and the energy kept up to it.
  if (!f.mouse_in_plot()) return;
  const int i = std::clamp(static_cast<int>(std::lround(f.vx(f.mouse.x))), 1, s.count);
  f.dl->AddLine(ImVec2(f.px(i), f.min.y), ImVec2(f.px(i), f.max.y), IM_COL32(255, 255, 255, 90));
  ImGui::BeginTooltip();
  ImGui::Text("%s  \xC2\xB7  i = %d%s", s.title.c_str(), i, i <= s.rank ? "  (kept by rank r)" : "");
  ImGui::Separator();
  const float col1 = column_after("head 00");
  const float col2 = col1 + ImGui::CalcTextSize("\xCF\x83 = 0.00000000").x + ImGui::GetFontSize();
  for (int h = 0; h < s.heads; ++h) {
    double kept = 0, total = 0;
    for (int j = 0; j < s.count; ++j) {
      const double v = std::isfinite(s.at(h, j)) ? s.at(h, j) : 0.0;
      total += v * v;
      if (j < i) kept += v * v;
    }
    swatch(series_color(h));
    ImGui::Text("head %d", h);
    ImGui::SameLine(col1);
    ImGui::Text("\xCF\x83 = %.7g", s.at(h, i - 1));
    if (o.show_energy && total > 0) {
      ImGui::SameLine(col2);
      ImGui::TextDisabled("%.2f%% of the energy in \xCF\x83 1..%d", 100.0 * kept / total, i);
    }
  }
  ImGui::EndTooltip();
}

// ---- memory ------------------------------------------------------------------------------------

void memory_breakdown(const char* id, const MemoryBreakdown& m, ImVec2 size) {
  static const char* const kNames[] = {"codes", "scales", "sparse", "low-rank", "FP16 buffer"};
  static const ImU32 kColors[] = {series_color(6), series_color(2), series_color(1), series_color(4),
                                  series_color(5)};
  const int64_t parts[] = {m.codes, m.scales, m.sparse, m.low_rank, m.fp16_buffer};
  const ImU32 kReference = IM_COL32(120, 124, 135, 255);

  // The left margin fits the longer row label.
  Margins margins;
  const float font = ImGui::GetFontSize();
  margins.left = std::max(ImGui::CalcTextSize("FP16").x, ImGui::CalcTextSize(m.label.c_str()).x) + 18;
  margins.bottom = font + 14;
  Frame f;
  if (!begin_frame(id, size, "Memory by component", margins, f)) return;
  const double total = static_cast<double>(m.total()), ref = static_cast<double>(m.fp16_reference);
  double lo = 0, hi = std::max(total, ref);
  if (!(hi > 0)) return no_data(f, "no bytes");
  nice_range(lo, hi, false);
  f.x = Axis{0, hi};
  x_axis(f, nullptr, true);

  // Two rows: the FP16 reference on top, the compressed cache below.
  const float h = f.max.y - f.min.y, bh = std::min(h * 0.32f, font * 2.6f);
  const float y_ref = f.min.y + h * 0.28f, y_cmp = f.min.y + h * 0.72f;
  auto row_label = [&](float yc, const char* text) {
    const ImVec2 s = ImGui::CalcTextSize(text);
    f.dl->AddText(ImVec2(f.min.x - 8 - s.x, yc - s.y * 0.5f), Chrome::title(), text);
  };
  row_label(y_ref, "FP16");
  row_label(y_cmp, m.label.c_str());
  const ImVec2 ref0(f.px(0), y_ref - bh * 0.5f), ref1(f.px(ref), y_ref + bh * 0.5f);
  f.dl->AddRectFilled(ref0, ref1, kReference, 2.0f);
  char buf[96], bytes[32];
  format_bytes(bytes, sizeof bytes, ref);
  const ImVec2 rs = ImGui::CalcTextSize(bytes);
  if (rs.x + 12 < ref1.x - ref0.x) {
    f.dl->AddText(ImVec2(ref1.x - rs.x - 6, y_ref - rs.y * 0.5f), IM_COL32_WHITE, bytes);
  }

  // Segments, remembering the one under the mouse.
  int hovered = -1;
  double x = 0;
  for (int i = 0; i < 5; ++i) {
    const ImVec2 a(f.px(x), y_cmp - bh * 0.5f), b(f.px(x + parts[i]), y_cmp + bh * 0.5f);
    x += parts[i];
    if (parts[i] <= 0) continue;
    const bool over = f.hovered && ImGui::IsMouseHoveringRect(a, b);
    if (over) hovered = i;
    f.dl->AddRectFilled(a, b, kColors[i]);
    if (over) f.dl->AddRect(a, b, IM_COL32_WHITE, 0, 0, 1.5f);
  }
  const bool over_ref = f.hovered && ImGui::IsMouseHoveringRect(ref0, ref1);

  // The total and the ratio after the compressed bar (inside it when it is the longer one).
  format_bytes(bytes, sizeof bytes, total);
  std::snprintf(buf, sizeof buf, "%s  =  %.3g\xC3\x97 FP16", bytes, m.ratio());
  const ImVec2 ts = ImGui::CalcTextSize(buf);
  const float end = f.px(total);
  const float tx = end + 8 + ts.x <= f.max.x ? end + 8 : std::max(f.min.x + 4, end - ts.x - 6);
  f.dl->AddText(ImVec2(tx, y_cmp - ts.y * 0.5f), Chrome::title(), buf);
  legend(f, kNames, kColors, 5);

  if (hovered < 0 && !over_ref) return;
  ImGui::BeginTooltip();
  if (over_ref) {
    format_bytes_exact(buf, sizeof buf, m.fp16_reference);
    format_bytes(bytes, sizeof bytes, ref);
    ImGui::Text("FP16 reference: %s (%s)", buf, bytes);
    ImGui::TextDisabled("%s is %.4g%% of it", m.label.c_str(), 100.0 * m.ratio());
  } else {
    swatch(kColors[hovered]);
    format_bytes_exact(buf, sizeof buf, parts[hovered]);
    format_bytes(bytes, sizeof bytes, static_cast<double>(parts[hovered]));
    ImGui::Text("%s: %s (%s)", kNames[hovered], buf, bytes);
    ImGui::TextDisabled("%.4g%% of %s, %.4g%% of FP16", 100.0 * parts[hovered] / total, m.label.c_str(),
                        ref > 0 ? 100.0 * parts[hovered] / ref : 0.0);
  }
  ImGui::EndTooltip();
}

// ---- live throughput ---------------------------------------------------------------------------

void throughput(const char* id, const TimeSeries& ts, const TimeSeriesOptions& o, ImVec2 size) {
  static const char* const kNames[] = {"tokens/s", "memory vs FP16"};
  const ImU32 kColors[] = {series_color(3), series_color(4)};
  const int n = ts.size();
  char title[96] = "Live throughput";
  if (n > 0) {
    std::snprintf(title, sizeof title, "Live:  %.0f tokens/s  \xC2\xB7  %.1f%% of FP16", ts.tokens_per_s(n - 1),
                  100.0 * ts.memory_ratio(n - 1));
  }
  Margins margins;
  margins.right = 66;
  Frame f;
  if (!begin_frame(id, size, title, margins, f)) return;
  if (n == 0) {
    legend(f, kNames, kColors, 2);
    return no_data(f, "waiting for tokens");
  }

  // The window ends at the newest sample; the axes cover what is inside it.
  const double t1 = std::max(ts.time(n - 1), o.window_s), t0 = t1 - o.window_s;
  double tps_max = 0, mem_max = 1.0;
  for (int i = 0; i < n; ++i) {
    if (ts.time(i) < t0) continue;
    tps_max = std::max(tps_max, static_cast<double>(ts.tokens_per_s(i)));
    mem_max = std::max(mem_max, static_cast<double>(ts.memory_ratio(i)));
  }
  double lo = 0, hi = tps_max * 1.1, mlo = 0, mhi = 100.0 * mem_max;
  nice_range(lo, hi, false);
  nice_range(mlo, mhi, false);
  f.x = Axis{t0, t1};
  f.y = Axis{0, hi};
  const Axis mem_axis{0, mhi};
  y_axis(f, f.y, "tokens/s", false, kColors[0]);
  y_axis(f, mem_axis, "% of FP16 bytes", true, kColors[1], false);
  x_axis(f, "time (s)");

  // Both lines, from the last sample before the window (so they enter at the left edge).
  int first = 0;
  while (first + 1 < n && ts.time(first + 1) < t0) ++first;
  f.dl->PushClipRect(f.min, f.max, true);
  for (int i = first; i < n; ++i) f.dl->PathLineTo(ImVec2(f.px(ts.time(i)), f.py(ts.tokens_per_s(i))));
  f.dl->PathStroke(kColors[0], 0, 2.0f);
  const float mem_px = (f.max.y - f.min.y) / static_cast<float>(mhi);  // pixels per percent
  for (int i = first; i < n; ++i) {
    f.dl->PathLineTo(ImVec2(f.px(ts.time(i)), f.max.y - 100.0f * ts.memory_ratio(i) * mem_px));
  }
  f.dl->PathStroke(kColors[1], 0, 2.0f);
  f.dl->PopClipRect();
  legend(f, kNames, kColors, 2);

  // Tooltip: the sample nearest the mouse in time.
  if (!f.mouse_in_plot()) return;
  const double tm = f.vx(f.mouse.x);
  int best = n - 1;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(ts.time(i) - tm) < std::fabs(ts.time(best) - tm)) best = i;
  }
  const float xb = f.px(ts.time(best));
  f.dl->AddLine(ImVec2(xb, f.min.y), ImVec2(xb, f.max.y), IM_COL32(255, 255, 255, 90));
  ImGui::BeginTooltip();
  ImGui::Text("t = %.3f s", ts.time(best));
  ImGui::Separator();
  swatch(kColors[0]);
  ImGui::Text("tokens/s: %.7g", ts.tokens_per_s(best));
  swatch(kColors[1]);
  ImGui::Text("memory: %.7g\xC3\x97 FP16 (%.4g%%)", ts.memory_ratio(best), 100.0 * ts.memory_ratio(best));
  ImGui::EndTooltip();
}

}  // namespace gear::ui::plot
