// The GEAR Lab plots, drawn with ImDrawList inside the current ImGui window from the plain
// structs of plot_data.h. Each takes an id (unique in the window), its data, options and a size:
// a component <= 0 fills the available space (less its magnitude), as ImGui items do. Hovering
// shows a tooltip with the exact values. Call them between ImGui::NewFrame() and Render(), i.e.
// from ImGuiWidget::draw(); they keep no state besides ImGui's and, for heatmaps, the texture.
#pragma once

#include <imgui.h>

#include "canvas/plot_data.h"
#include "canvas/plot_math.h"
#include "canvas/texture_cache.h"

namespace gear::ui::plot {

struct BarOptions {
  bool log_y = true;
  double y_lo = 0, y_hi = 0;  // y range; y_lo >= y_hi: from the data (nice-rounded)
};

// Grouped bars of one side: for each layer, quant-only / +sparse / +low-rank / GEAR.
void component_bars(const char* id, const ComponentErrors& errors, const char* title,
                    const char* metric, const BarOptions& options = {}, ImVec2 size = {0, 0});
// K and V side by side with one y range, so the two panels compare at a glance.
void layer_errors(const char* id, const LayerErrors& errors, const BarOptions& options = {},
                  ImVec2 size = {0, 0});

struct SpectrumOptions {
  bool log_y = true;
  bool show_energy = true;  // tooltip: share of energy (sum of sigma^2) up to the hovered index
};
// Singular values against their index (1-based), one line per head, the chosen rank marked.
void spectrum(const char* id, const Spectrum& s, const SpectrumOptions& options = {},
              ImVec2 size = {0, 0});

// A matrix as a texture (uploaded through `textures` only when the data or style change), with
// a colour bar; hover shows row (token), column (channel) and value.
void heatmap(const char* id, const HeatmapData& data, TextureCache& textures,
             const HeatmapStyle& style = {}, ImVec2 size = {0, 0});

// Two stacked horizontal bars: the FP16 reference and the compressed cache by component, with
// sizes in KiB/MiB and the ratio to FP16.
void memory_breakdown(const char* id, const MemoryBreakdown& m, ImVec2 size = {0, 0});

struct TimeSeriesOptions {
  double window_s = 30;  // seconds of history shown (the newest sample at the right edge)
};
// Tokens/s (left axis) and memory as % of FP16 (right axis) over time.
void throughput(const char* id, const TimeSeries& ts, const TimeSeriesOptions& options = {},
                ImVec2 size = {0, 0});

}  // namespace gear::ui::plot
