// The scaffolding every plot shares: reserve an ImGui item, map values to pixels, draw axes with
// tick labels and grid lines, a legend, tooltip rows with colour swatches. ImDrawList only.
#pragma once

#include <imgui.h>

#include "canvas/plot_math.h"

namespace gear::ui::plot {

// Colour-blind-safe series colours (Okabe-Ito), readable on the dark theme.
ImU32 series_color(int i, float alpha = 1.0f);
// Theme colours of the plot chrome.
struct Chrome {
  static ImU32 background();  // plot area
  static ImU32 grid();
  static ImU32 axis();        // axis lines
  static ImU32 text();        // tick labels, legends
  static ImU32 title();
};

// One value axis: [lo, hi] in data units (lo may exceed hi to flip it), linear or log10.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  bool integer = false;  // ticks at whole numbers only
  // Fraction of the way from lo to hi (0..1 inside the range).
  double frac(double v) const;
  double value(double frac) const;  // the inverse
};

// Space around the plot area for the title row, tick labels and axis labels (pixels).
struct Margins {
  float left = 58, right = 18, top = 30, bottom = 36;
};

// A reserved plot: the outer item, the inner plot area, the axes, hover state.
struct Frame {
  ImDrawList* dl = nullptr;
  ImVec2 outer_min, outer_max;  // the whole item
  ImVec2 min, max;              // the plot area
  Axis x, y;
  bool hovered = false;         // mouse over the item
  ImVec2 mouse;
  float title_end = 0;          // right end of the title text (the legend stays clear of it)

  float px(double vx) const;    // data -> screen
  float py(double vy) const;
  double vx(float px) const;    // screen -> data
  bool mouse_in_plot() const;   // hovered and inside the plot area
};

// Reserves an item of `size` (a component <= 0 fills the available space, less its magnitude),
// draws the title and the plot background. False when the item is clipped: draw nothing then.
bool begin_frame(const char* id, ImVec2 size, const char* title, const Margins& margins, Frame& f);

// Ticks, grid lines and labels. The y label sits above the axis; `right` puts the axis on the
// right edge (a second y axis), tinted `color` when given. Bytes axes format labels as KiB/MiB.
void y_axis(const Frame& f, const Axis& axis, const char* label, bool right = false,
            ImU32 color = 0, bool grid = true);
void x_axis(const Frame& f, const char* label, bool bytes = false);
// Category labels centred under `n` equal slots ("L0", "L1", ...: `fmt` takes the index).
void x_categories(const Frame& f, int n, const char* fmt);

// A legend row right-aligned in the title row (items are square swatches + names); when the
// title leaves no room, in a translucent box at the top right of the plot area instead.
void legend(const Frame& f, const char* const* names, const ImU32* colors, int n);

// Tooltip helpers: a colour swatch followed (on the same line) by text, and the x offset (for
// ImGui::SameLine) of the column after "swatch + `widest`" on a tooltip row.
void swatch(ImU32 color);
float column_after(const char* widest);

// A dashed vertical line from the top to the bottom of the plot area.
void vline_dashed(const Frame& f, float x, ImU32 color, float thickness = 1.5f);

}  // namespace gear::ui::plot
