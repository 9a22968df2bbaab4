// The arithmetic behind the plots, free of ImGui and OpenGL so tests can check it: tick
// positions, number and byte formatting, colour maps, value ranges. Nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gear::ui::plot {

// Tick positions of one axis (at most kMaxTicks, in increasing order).
struct Ticks {
  static constexpr int kMaxTicks = 24;
  int n = 0;
  double v[kMaxTicks] = {};
};

// "Nice" steps (1, 2, 5 x 10^k) covering [lo, hi] with at most `max_ticks` ticks; `integer`
// keeps the step >= 1 (layers, tokens, channels).
Ticks linear_ticks(double lo, double hi, int max_ticks, bool integer = false);
// Powers of ten inside [lo, hi] (lo > 0), every k-th decade when there are too many.
Ticks log_ticks(double lo, double hi, int max_ticks);

// Rounds [lo, hi] outwards: to a nice step for linear axes, to whole decades for log axes.
// Degenerate ranges (lo == hi, or non-positive for log) get a sensible span.
void nice_range(double& lo, double& hi, bool log);

// A tick label: "0", "0.25", "1500", "2.5e-05", "1e3" for powers of ten on log axes.
int format_tick(char* buf, size_t size, double v, bool log);
// Bytes with a binary unit: "812 B", "81.3 KiB", "1.50 MiB", "2.25 GiB".
int format_bytes(char* buf, size_t size, double bytes);
// Bytes as an exact integer with thousands separators: "83,200 B".
int format_bytes_exact(char* buf, size_t size, int64_t bytes);
// The binary unit to show `max_bytes` in: divisor and name ("B", "KiB", ...).
void byte_unit(double max_bytes, double& divisor, const char*& name);

enum class Colormap { Viridis, Magma, Diverging };
// RGBA8 colour for t in [0, 1] (clamped), packed as IM_COL32 / GL_RGBA bytes in memory.
uint32_t colormap(Colormap map, float t);
const char* colormap_name(Colormap map);

// Finite min / max of n floats (NaN and inf skipped); false when none is finite.
bool finite_range(const float* v, size_t n, float& lo, float& hi);

}  // namespace gear::ui::plot
