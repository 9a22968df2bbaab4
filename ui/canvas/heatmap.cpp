// plot::heatmap: a HeatmapData as one OpenGL texture (TextureCache re-uploads it only when the
// data or colours change), axes in tokens and channels, a colour bar, and a hover read-out.
#define IMGUI_DEFINE_MATH_OPERATORS
#include <imgui_internal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "canvas/plot_frame.h"
#include "canvas/plots.h"

namespace gear::ui::plot {

namespace {

// A vertical colour bar right of the plot with the range's ticks.
void colour_bar(const Frame& f, const HeatmapStyle& st, float lo, float hi, const char* label) {
  const float x0 = f.max.x + 14, x1 = x0 + 14;
  constexpr int kSlices = 32;
  const float h = (f.max.y - f.min.y) / kSlices;
  for (int k = 0; k < kSlices; ++k) {  // top = hi
    const ImU32 top = colormap(st.colormap, 1.0f - static_cast<float>(k) / kSlices);
    const ImU32 bottom = colormap(st.colormap, 1.0f - static_cast<float>(k + 1) / kSlices);
    f.dl->AddRectFilledMultiColor(ImVec2(x0, f.min.y + k * h), ImVec2(x1, f.min.y + (k + 1) * h + 0.5f), top,
                                  top, bottom, bottom);
  }
  f.dl->AddRect(ImVec2(x0, f.min.y), ImVec2(x1, f.max.y), Chrome::axis());
  const int max_ticks = std::clamp(static_cast<int>((f.max.y - f.min.y) / (ImGui::GetFontSize() * 2.2f)), 2, 8);
  const Ticks t = linear_ticks(lo, hi, max_ticks);
  char buf[32];
  for (int i = 0; i < t.n; ++i) {
    const float y = f.max.y - static_cast<float>((t.v[i] - lo) / (hi - lo)) * (f.max.y - f.min.y);
    f.dl->AddLine(ImVec2(x1, y), ImVec2(x1 + 4, y), Chrome::axis());
    format_tick(buf, sizeof buf, t.v[i], false);
    const ImVec2 s = ImGui::CalcTextSize(buf);
    f.dl->AddText(ImVec2(x1 + 6, std::clamp(y - s.y * 0.5f, f.min.y - s.y * 0.5f, f.max.y - s.y * 0.5f)),
                  Chrome::text(), buf);
  }
  const ImVec2 s = ImGui::CalcTextSize(label);
  f.dl->AddText(ImVec2(std::min(x0, f.outer_max.x - s.x), f.min.y - s.y - 4), Chrome::text(), label);
}

}  // namespace

void heatmap(const char* id, const HeatmapData& d, TextureCache& textures, const HeatmapStyle& st,
             ImVec2 size) {
  Margins m;
  m.right = ImGui::GetFontSize() * 5.0f;  // colour bar and its labels
  m.top = ImGui::GetFontSize() * 2.6f;    // title, then the colour bar's label
  const ImGuiID key = ImGui::GetID(id);  // the id begin_frame's item gets: one texture per plot
  Frame f;
  if (!begin_frame(id, size, d.title.c_str(), m, f)) return;
  if (d.rows <= 0 || d.cols <= 0 || d.values.size() < static_cast<size_t>(d.rows) * d.cols) {
    const ImVec2 s = ImGui::CalcTextSize("no matrix");
    f.dl->AddText((f.min + f.max - s) * 0.5f, Chrome::text(), "no matrix");
    return;
  }

  // Axes in cells: x runs over tokens (or channels), y over channels with 0 at the top.
  const ImVec2 scale = ImGui::GetIO().DisplayFramebufferScale;
  const TextureCache::Texture& tex =
      textures.heatmap(key, d, st, ImVec2((f.max.x - f.min.x) * scale.x, (f.max.y - f.min.y) * scale.y));
  const int nx = st.tokens_on_x ? d.rows : d.cols, ny = st.tokens_on_x ? d.cols : d.rows;
  const char* x_label = st.tokens_on_x ? d.row_label.c_str() : d.col_label.c_str();
  const char* y_label = st.tokens_on_x ? d.col_label.c_str() : d.row_label.c_str();
  f.x = Axis{0, static_cast<double>(nx), false, true};
  f.y = Axis{static_cast<double>(ny), 0, false, true};
  if (tex.id) f.dl->AddImage(tex.id, f.min, f.max);
  y_axis(f, f.y, y_label, false, 0, false);
  x_axis(f, x_label);
  char label[48];
  std::snprintf(label, sizeof label, st.abs_values ? "|%s|" : "%s", d.value_label.c_str());
  colour_bar(f, st, tex.lo, tex.hi, label);

  // Hover: outline the cell (or a crosshair when cells are tiny) and read the exact value.
  if (!f.mouse_in_plot()) return;
  const float cw = (f.max.x - f.min.x) / nx, ch = (f.max.y - f.min.y) / ny;
  const int cx = std::clamp(static_cast<int>((f.mouse.x - f.min.x) / cw), 0, nx - 1);
  const int cy = std::clamp(static_cast<int>((f.mouse.y - f.min.y) / ch), 0, ny - 1);
  const int row = st.tokens_on_x ? cx : cy, col = st.tokens_on_x ? cy : cx;
  const ImVec2 a(f.min.x + cx * cw, f.min.y + cy * ch);
  if (cw >= 3 && ch >= 3) {
    f.dl->AddRect(a - ImVec2(1, 1), a + ImVec2(cw + 1, ch + 1), IM_COL32_WHITE, 0, 0, 1.5f);
  } else {
    f.dl->AddLine(ImVec2(f.mouse.x, f.min.y), ImVec2(f.mouse.x, f.max.y), IM_COL32(255, 255, 255, 110));
    f.dl->AddLine(ImVec2(f.min.x, f.mouse.y), ImVec2(f.max.x, f.mouse.y), IM_COL32(255, 255, 255, 110));
  }
  const float v = d.at(row, col);
  ImGui::BeginTooltip();
  ImGui::Text("%s %d  \xC2\xB7  %s %d", d.row_label.c_str(), row, d.col_label.c_str(), col);
  ImGui::Separator();
  swatch(colormap(st.colormap, ((st.abs_values ? std::fabs(v) : v) - tex.lo) / (tex.hi - tex.lo)));
  ImGui::Text("%s = %.7g", d.value_label.c_str(), v);
  if (tex.pool_x * tex.pool_y > 1) {
    ImGui::TextDisabled("colour here: the largest |value| of a %d \xC3\x97 %d block (%s \xC3\x97 %s)",
                        tex.pool_x, tex.pool_y, x_label, y_label);
  }
  ImGui::EndTooltip();
}

}  // namespace gear::ui::plot
