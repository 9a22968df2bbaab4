#define IMGUI_DEFINE_MATH_OPERATORS
#include "canvas/plot_frame.h"

#include <imgui_internal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gear::ui::plot {

namespace {

float map_y(const Frame& f, const Axis& a, double v) {
  return f.max.y - static_cast<float>(a.frac(v)) * (f.max.y - f.min.y);
}

// Text reading bottom to top, centred on `centre`. ImGui has no rotated text, so the glyph
// quads are drawn horizontally inside the plot area (where nothing clips them) and then turned.
void text_vertical(ImDrawList* dl, ImVec2 anchor, ImVec2 centre, ImU32 col, const char* text) {
  const ImVec2 size = ImGui::CalcTextSize(text);
  const int first = dl->VtxBuffer.Size;
  dl->AddText(anchor, col, text);
  const ImVec2 c = anchor + size * 0.5f;
  for (int i = first; i < dl->VtxBuffer.Size; ++i) {
    ImVec2& p = dl->VtxBuffer[i].pos;
    const ImVec2 d = p - c;
    p = ImVec2(centre.x + d.y, centre.y - d.x);  // 90 degrees anticlockwise
  }
}

// Log axes get unlabelled minor ticks at 2..9 x 10^k when there are few decades.
void minor_log_ticks(const Frame& f, const Axis& a, float x_axis, bool right) {
  const double lo = std::min(a.lo, a.hi), hi = std::max(a.lo, a.hi);
  if (!(lo > 0) || std::log10(hi / lo) > 6) return;
  const float dir = right ? 1.0f : -1.0f;
  for (double dec = std::pow(10.0, std::floor(std::log10(lo))); dec < hi; dec *= 10) {
    for (int m = 2; m <= 9; ++m) {
      const double v = dec * m;
      if (v < lo || v > hi) continue;
      const float y = map_y(f, a, v);
      f.dl->AddLine(ImVec2(x_axis, y), ImVec2(x_axis + dir * 3, y), Chrome::axis());
    }
  }
}

}  // namespace

ImU32 series_color(int i, float alpha) {
  static const ImU32 kColors[] = {IM_COL32(213, 94, 0, 255),   IM_COL32(230, 159, 0, 255),
                                  IM_COL32(86, 180, 233, 255), IM_COL32(0, 158, 115, 255),
                                  IM_COL32(204, 121, 167, 255), IM_COL32(240, 228, 66, 255),
                                  IM_COL32(0, 114, 178, 255)};
  const ImU32 c = kColors[static_cast<unsigned>(i) % (sizeof kColors / sizeof kColors[0])];
  const auto a = static_cast<ImU32>(std::clamp(alpha, 0.0f, 1.0f) * 255.0f + 0.5f);
  return (c & 0x00ffffffu) | (a << 24);
}

ImU32 Chrome::background() { return IM_COL32(24, 26, 32, 255); }
ImU32 Chrome::grid() { return IM_COL32(255, 255, 255, 20); }
ImU32 Chrome::axis() { return IM_COL32(150, 155, 165, 255); }
ImU32 Chrome::text() { return IM_COL32(185, 190, 200, 255); }
ImU32 Chrome::title() { return IM_COL32(235, 238, 245, 255); }

double Axis::frac(double v) const {
  if (log) {
    const double l0 = std::log10(lo), l1 = std::log10(hi);
    return v > 0 ? (std::log10(v) - l0) / (l1 - l0) : -1.0;
  }
  return (v - lo) / (hi - lo);
}

double Axis::value(double f) const {
  if (log) return std::pow(10.0, std::log10(lo) + f * (std::log10(hi) - std::log10(lo)));
  return lo + f * (hi - lo);
}

float Frame::px(double v) const { return min.x + static_cast<float>(x.frac(v)) * (max.x - min.x); }
float Frame::py(double v) const { return map_y(*this, y, v); }
double Frame::vx(float p) const { return x.value((p - min.x) / std::max(1.0f, max.x - min.x)); }
bool Frame::mouse_in_plot() const {
  return hovered && mouse.x >= min.x && mouse.x < max.x && mouse.y >= min.y && mouse.y < max.y;
}

bool begin_frame(const char* id, ImVec2 size, const char* title, const Margins& m, Frame& f) {
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float w = std::max(size.x > 0 ? size.x : avail.x + size.x, m.left + m.right + 40);
  const float h = std::max(size.y > 0 ? size.y : avail.y + size.y, m.top + m.bottom + 40);
  f.outer_min = ImGui::GetCursorScreenPos();
  f.outer_max = f.outer_min + ImVec2(w, h);
  ImGui::InvisibleButton(id, ImVec2(w, h));
  f.hovered = ImGui::IsItemHovered();
  if (!ImGui::IsItemVisible()) return false;
  f.dl = ImGui::GetWindowDrawList();
  f.min = f.outer_min + ImVec2(m.left, m.top);
  f.max = f.outer_max - ImVec2(m.right, m.bottom);
  f.mouse = ImGui::GetIO().MousePos;
  f.dl->AddRectFilled(f.min, f.max, Chrome::background(), 3.0f);
  f.title_end = f.outer_min.x;
  if (title && *title) {
    f.dl->AddText(ImVec2(f.outer_min.x + 2, f.outer_min.y + 4), Chrome::title(), title);
    f.title_end += 2 + ImGui::CalcTextSize(title).x;
  }
  return true;
}

void y_axis(const Frame& f, const Axis& a, const char* label, bool right, ImU32 color, bool grid) {
  const ImU32 tc = color ? color : Chrome::text();
  const float font = ImGui::GetFontSize();
  const int max_ticks = std::clamp(static_cast<int>((f.max.y - f.min.y) / (font * 1.8f)), 2, 10);
  const double lo = std::min(a.lo, a.hi), hi = std::max(a.lo, a.hi);
  const Ticks t = a.log ? log_ticks(lo, hi, max_ticks) : linear_ticks(lo, hi, max_ticks, a.integer);
  const float xa = right ? f.max.x : f.min.x;
  f.dl->AddLine(ImVec2(xa, f.min.y), ImVec2(xa, f.max.y), Chrome::axis());
  if (a.log) minor_log_ticks(f, a, xa, right);
  float widest = 0;
  char buf[32];
  for (int i = 0; i < t.n; ++i) {
    const float y = map_y(f, a, t.v[i]);
    if (y < f.min.y - 0.5f || y > f.max.y + 0.5f) continue;
    if (grid) f.dl->AddLine(ImVec2(f.min.x, y), ImVec2(f.max.x, y), Chrome::grid());
    f.dl->AddLine(ImVec2(xa, y), ImVec2(xa + (right ? 5.0f : -5.0f), y), Chrome::axis());
    format_tick(buf, sizeof buf, t.v[i], a.log);
    const ImVec2 s = ImGui::CalcTextSize(buf);
    // Clamp the end labels inside the plot's height so they never touch the title row.
    const float ty = std::clamp(y - s.y * 0.5f, f.min.y - s.y * 0.5f, f.max.y - s.y * 0.5f);
    f.dl->AddText(ImVec2(right ? xa + 8 : xa - 8 - s.x, ty), tc, buf);
    widest = std::max(widest, s.x);
  }
  if (label && *label) {
    const float cx = right ? xa + 12 + widest + font * 0.5f : xa - 12 - widest - font * 0.5f;
    text_vertical(f.dl, f.min + ImVec2(4, 4), ImVec2(cx, (f.min.y + f.max.y) * 0.5f), tc, label);
  }
}

void x_axis(const Frame& f, const char* label, bool bytes) {
  const float font = ImGui::GetFontSize();
  double div = 1;
  const char* unit = "";
  if (bytes) byte_unit(std::max(std::fabs(f.x.lo), std::fabs(f.x.hi)), div, unit);
  const int max_ticks =
      std::clamp(static_cast<int>((f.max.x - f.min.x) / (font * (bytes ? 6.5f : 4.5f))), 2, 12);
  const double lo = std::min(f.x.lo, f.x.hi) / div, hi = std::max(f.x.lo, f.x.hi) / div;
  const Ticks t = f.x.log ? log_ticks(lo, hi, max_ticks) : linear_ticks(lo, hi, max_ticks, f.x.integer);
  f.dl->AddLine(ImVec2(f.min.x, f.max.y), ImVec2(f.max.x, f.max.y), Chrome::axis());
  char buf[40];
  for (int i = 0; i < t.n; ++i) {
    const float x = f.px(t.v[i] * div);
    if (x < f.min.x - 0.5f || x > f.max.x + 0.5f) continue;
    f.dl->AddLine(ImVec2(x, f.max.y), ImVec2(x, f.max.y + 5), Chrome::axis());
    const int n = format_tick(buf, sizeof buf, t.v[i], f.x.log);
    if (bytes && t.v[i] != 0 && n > 0) std::snprintf(buf + n, sizeof buf - n, " %s", unit);
    const ImVec2 s = ImGui::CalcTextSize(buf);
    f.dl->AddText(ImVec2(x - s.x * 0.5f, f.max.y + 7), Chrome::text(), buf);
  }
  if (label && *label) {
    const ImVec2 s = ImGui::CalcTextSize(label);
    f.dl->AddText(ImVec2((f.min.x + f.max.x - s.x) * 0.5f, f.max.y + 9 + font), Chrome::text(), label);
  }
}

void x_categories(const Frame& f, int n, const char* fmt) {
  f.dl->AddLine(ImVec2(f.min.x, f.max.y), ImVec2(f.max.x, f.max.y), Chrome::axis());
  const float slot = (f.max.x - f.min.x) / std::max(1, n);
  char buf[32];
  for (int i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, fmt, i);
    const ImVec2 s = ImGui::CalcTextSize(buf);
    f.dl->AddText(ImVec2(f.min.x + slot * (i + 0.5f) - s.x * 0.5f, f.max.y + 7), Chrome::text(), buf);
  }
}

void legend(const Frame& f, const char* const* names, const ImU32* colors, int n) {
  const float font = ImGui::GetFontSize();
  const float box = font * 0.7f, gap = font * 0.35f, spacing = font * 1.1f;
  float width = 0;
  for (int i = 0; i < n; ++i) width += box + gap + ImGui::CalcTextSize(names[i]).x + (i ? spacing : 0);
  float x = f.max.x - width;
  float y = f.outer_min.y + 4;
  if (x < f.title_end + spacing) {  // no room beside the title: inside the plot, boxed
    x = f.max.x - width - gap * 2;
    y = f.min.y + gap * 2;
    f.dl->AddRectFilled(ImVec2(x - gap, y - gap), ImVec2(f.max.x - gap, y + font + gap), IM_COL32(20, 22, 28, 220),
                        3.0f);
  }
  for (int i = 0; i < n; ++i) {
    const float yb = y + (font - box) * 0.5f;
    f.dl->AddRectFilled(ImVec2(x, yb), ImVec2(x + box, yb + box), colors[i], 2.0f);
    x += box + gap;
    f.dl->AddText(ImVec2(x, y), Chrome::text(), names[i]);
    x += ImGui::CalcTextSize(names[i]).x + spacing;
  }
}

void swatch(ImU32 color) {
  const ImVec2 p = ImGui::GetCursorScreenPos();
  const float s = ImGui::GetTextLineHeight();
  ImGui::GetWindowDrawList()->AddRectFilled(p + ImVec2(0, s * 0.2f), p + ImVec2(s * 0.6f, s * 0.8f),
                                            color, 2.0f);
  ImGui::Dummy(ImVec2(s * 0.6f, s));
  ImGui::SameLine();
}

float column_after(const char* widest) {
  return ImGui::GetCursorPosX() + ImGui::GetTextLineHeight() * 0.6f + ImGui::GetStyle().ItemSpacing.x +
         ImGui::CalcTextSize(widest).x + ImGui::GetFontSize();
}

void vline_dashed(const Frame& f, float x, ImU32 color, float thickness) {
  for (float y = f.min.y; y < f.max.y; y += 9.0f) {
    f.dl->AddLine(ImVec2(x, y), ImVec2(x, std::min(y + 5.0f, f.max.y)), color, thickness);
  }
}

}  // namespace gear::ui::plot
