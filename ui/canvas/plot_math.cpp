#include "canvas/plot_math.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace gear::ui::plot {

namespace {

// 1, 2 or 5 times a power of ten, the smallest such step >= raw.
double nice_step(double raw) {
  if (!(raw > 0) || !std::isfinite(raw)) return 1.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double nice = norm <= 1.0 ? 1.0 : norm <= 2.0 ? 2.0 : norm <= 5.0 ? 5.0 : 10.0;
  return nice * mag;
}

struct Stop { float t; unsigned char r, g, b; };

// Nine samples of each map (matplotlib's viridis and magma, Moreland's cool-warm), linearly
// interpolated: close enough to the originals at heatmap resolution.
constexpr Stop kViridis[] = {{0.000f, 68, 1, 84},    {0.125f, 71, 44, 122},  {0.250f, 59, 81, 139},
                             {0.375f, 44, 113, 142}, {0.500f, 33, 144, 141}, {0.625f, 39, 173, 129},
                             {0.750f, 92, 200, 99},  {0.875f, 170, 220, 50}, {1.000f, 253, 231, 37}};
constexpr Stop kMagma[] = {{0.000f, 0, 0, 4},       {0.125f, 28, 16, 68},    {0.250f, 79, 18, 123},
                           {0.375f, 129, 37, 129},  {0.500f, 181, 54, 122},  {0.625f, 229, 80, 100},
                           {0.750f, 251, 135, 97},  {0.875f, 254, 194, 135}, {1.000f, 252, 253, 191}};
constexpr Stop kDiverging[] = {{0.000f, 59, 76, 192},   {0.125f, 87, 118, 228},
                               {0.250f, 124, 159, 249}, {0.375f, 170, 199, 253},
                               {0.500f, 221, 221, 221}, {0.625f, 245, 196, 173},
                               {0.750f, 244, 154, 123}, {0.875f, 222, 96, 77},
                               {1.000f, 180, 4, 38}};

template <size_t N>
uint32_t lookup(const Stop (&stops)[N], float t) {
  size_t i = 1;
  while (i + 1 < N && stops[i].t < t) ++i;
  const Stop& a = stops[i - 1];
  const Stop& b = stops[i];
  const float f = std::clamp((t - a.t) / (b.t - a.t), 0.0f, 1.0f);
  auto mix = [f](unsigned char x, unsigned char y) {
    return static_cast<uint32_t>(std::lround(x + (y - x) * f));
  };
  return mix(a.r, b.r) | (mix(a.g, b.g) << 8) | (mix(a.b, b.b) << 16) | (255u << 24);
}

}  // namespace

Ticks linear_ticks(double lo, double hi, int max_ticks, bool integer) {
  Ticks t;
  if (lo > hi) std::swap(lo, hi);
  if (!std::isfinite(lo) || !std::isfinite(hi)) return t;
  max_ticks = std::clamp(max_ticks, 2, Ticks::kMaxTicks);
  double step = nice_step((hi - lo) / (max_ticks - 1));
  if (integer) step = std::max(step, 1.0);
  // The nice step can still give one tick too many (e.g. 0..10 by 2 with max 5): widen it.
  while (std::floor(hi / step) - std::ceil(lo / step) + 1 > max_ticks) step = nice_step(step * 1.01);
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9 && t.n < Ticks::kMaxTicks;
       v += step) {
    t.v[t.n++] = std::fabs(v) < step * 1e-9 ? 0.0 : v;
  }
  return t;
}

Ticks log_ticks(double lo, double hi, int max_ticks) {
  if (lo > hi) std::swap(lo, hi);
  if (!(lo > 0)) return linear_ticks(lo, hi, max_ticks);
  const int d0 = static_cast<int>(std::ceil(std::log10(lo) - 1e-9));
  const int d1 = static_cast<int>(std::floor(std::log10(hi) + 1e-9));
  if (d1 < d0) return linear_ticks(lo, hi, max_ticks);  // inside one decade
  max_ticks = std::clamp(max_ticks, 2, Ticks::kMaxTicks);
  const int every = (d1 - d0) / max_ticks + 1;
  Ticks t;
  for (int d = d0; d <= d1 && t.n < Ticks::kMaxTicks; d += every) t.v[t.n++] = std::pow(10.0, d);
  return t;
}

void nice_range(double& lo, double& hi, bool log) {
  if (lo > hi) std::swap(lo, hi);
  if (log) {
    if (!(hi > 0) || !std::isfinite(hi)) { lo = 0.1; hi = 1.0; return; }
    if (!(lo > 0) || !std::isfinite(lo)) lo = hi / 1000.0;
    lo = std::pow(10.0, std::floor(std::log10(lo) + 1e-9));
    hi = std::pow(10.0, std::ceil(std::log10(hi) - 1e-9));
    if (hi <= lo) hi = lo * 10.0;
    return;
  }
  if (!std::isfinite(lo) || !std::isfinite(hi)) { lo = 0.0; hi = 1.0; return; }
  if (hi == lo) {
    const double pad = lo == 0.0 ? 1.0 : std::fabs(lo) * 0.5;
    lo -= pad;
    hi += pad;
  }
  const double step = nice_step((hi - lo) / 5.0);
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
}

int format_tick(char* buf, size_t size, double v, bool log) {
  if (v == 0.0) return std::snprintf(buf, size, "0");
  if (log) {
    const double e = std::log10(std::fabs(v));
    const long ie = std::lround(e);
    if (std::fabs(e - ie) < 1e-9 && (ie < -3 || ie > 4)) return std::snprintf(buf, size, "1e%ld", ie);
  }
  return std::snprintf(buf, size, "%.4g", v);
}

void byte_unit(double max_bytes, double& divisor, const char*& name) {
  static const char* const kNames[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  divisor = 1.0;
  int u = 0;
  while (u < 4 && std::fabs(max_bytes) / divisor >= 1024.0) {
    divisor *= 1024.0;
    ++u;
  }
  name = kNames[u];
}

int format_bytes(char* buf, size_t size, double bytes) {
  double div;
  const char* unit;
  byte_unit(bytes, div, unit);
  const double v = bytes / div;
  if (div == 1.0) return std::snprintf(buf, size, "%.0f B", v);
  const int decimals = std::fabs(v) < 10 ? 2 : std::fabs(v) < 100 ? 1 : 0;
  return std::snprintf(buf, size, "%.*f %s", decimals, v, unit);
}

int format_bytes_exact(char* buf, size_t size, int64_t bytes) {
  char digits[32];
  const int n = std::snprintf(digits, sizeof digits, "%lld", static_cast<long long>(std::llabs(bytes)));
  char out[48];
  int o = 0;
  if (bytes < 0) out[o++] = '-';
  for (int i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out[o++] = ',';
    out[o++] = digits[i];
  }
  out[o] = '\0';
  return std::snprintf(buf, size, "%s B", out);
}

uint32_t colormap(Colormap map, float t) {
  t = std::isfinite(t) ? std::clamp(t, 0.0f, 1.0f) : 0.0f;
  switch (map) {
    case Colormap::Magma: return lookup(kMagma, t);
    case Colormap::Diverging: return lookup(kDiverging, t);
    case Colormap::Viridis: break;
  }
  return lookup(kViridis, t);
}

const char* colormap_name(Colormap map) {
  switch (map) {
    case Colormap::Magma: return "magma";
    case Colormap::Diverging: return "diverging";
    case Colormap::Viridis: break;
  }
  return "viridis";
}

bool finite_range(const float* v, size_t n, float& lo, float& hi) {
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    const float x = v[i];
    if (!std::isfinite(x)) continue;
    if (!any) { lo = hi = x; any = true; continue; }
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  return any;
}

}  // namespace gear::ui::plot
