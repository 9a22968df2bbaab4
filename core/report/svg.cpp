#include "core/report/svg.h"

#include <algorithm>
#include <cmath>
#include <clocale>
#include <cstdio>
#include <cstring>

namespace gear::report::svg {
namespace {

constexpr double kTitleY = 24, kLegendY = 40, kSide = 16;

std::string trim_zeros(std::string s) {
  if (s.find('.') == std::string::npos || s.find('e') != std::string::npos) return s;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}


std::vector<double> ticks_of(const Axis& a, int target = 5) {
  if (a.symlog) return symlog_ticks(a.lo, a.hi);
  return a.log ? log_ticks(a.lo, a.hi) : linear_ticks(a.lo, a.hi, target);
}

double symlog(double v) { return std::copysign(std::log10(1 + std::abs(v)), v); }

// Room for the y tick labels and the rotated axis title to their left.
double left_margin(const Axis& y) {
  double widest = 0;
  for (double t : ticks_of(y)) widest = std::max(widest, text_width(y.format(t), 11));
  return 34 + widest;
}

bool finite(double v) { return std::isfinite(v); }

// The band of category i of n along the plot's x.
std::pair<double, double> band(const Canvas& c, const Frame& f, size_t i, size_t n) {
  const double w = (f.x1(c) - f.x0(c)) / double(std::max<size_t>(n, 1));
  return {f.x0(c) + w * double(i), w};
}

bool rotate_categories(double plot_width, const std::vector<std::string>& categories) {
  const double w = plot_width / double(std::max<size_t>(categories.size(), 1));
  for (const auto& s : categories)
    if (text_width(s, 11) > w * 0.92) return true;
  return false;
}

double widest(const std::vector<std::string>& labels, double size) {
  double w = 0;
  for (const auto& s : labels) w = std::max(w, text_width(s, size));
  return w;
}

void draw_legend_mark(Canvas& c, double x, double y, const LegendEntry& e) {
  using M = LegendEntry::Mark;
  switch (e.mark) {
    case M::Box: c.rect(x, y - 9, 12, 12, e.color); break;
    case M::Line: c.line(x, y - 3, x + 18, y - 3, e.color, 2.2); break;
    case M::Dashed: c.line(x, y - 3, x + 18, y - 3, e.color, 2, "5 3"); break;
    case M::Dot: c.circle(x + 6, y - 3, 4.5, e.color, "#ffffff"); break;
    case M::Ring: c.circle(x + 6, y - 3, 4, "#ffffff", e.color); break;
  }
}

double mark_width(const LegendEntry& e) {
  return e.mark == LegendEntry::Mark::Line || e.mark == LegendEntry::Mark::Dashed ? 18 : 12;
}

// Lays out the legend (draws when c is given); returns its height.
double layout_legend(Canvas* c, double x, double y, double max_width, const std::vector<LegendEntry>& entries) {
  if (entries.empty()) return 0;
  double cx = x, cy = y + 10;
  for (const LegendEntry& e : entries) {
    const double w = mark_width(e) + 6 + text_width(e.label, 12) + 18;
    if (cx > x && cx + w > x + max_width) cx = x, cy += 20;
    if (c) {
      draw_legend_mark(*c, cx, cy, e);
      c->text(cx + mark_width(e) + 6, cy + 1, e.label, {12, "start", kInk});
    }
    cx += w;
  }
  return cy - y + 8;
}

// Title and legend at the top; returns the frame below them.
Frame header(Canvas& c, const std::string& title, const std::vector<LegendEntry>& entries) {
  chart_title(c, title);
  Frame f;
  f.top = kLegendY + legend(c, kSide, kLegendY, c.width() - 2 * kSide, entries) + 18;
  return f;
}

std::pair<double, double> range_of(const std::vector<double>& v, bool positive_only) {
  double lo = INFINITY, hi = -INFINITY;
  for (double x : v)
    if (finite(x) && (!positive_only || x > 0)) lo = std::min(lo, x), hi = std::max(hi, x);
  if (!finite(lo)) return {positive_only ? 1 : 0, positive_only ? 10 : 1};
  return {lo, hi};
}

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

// Puts a point's label beside it where it covers no other label or point. A label that finds no
// free place is left out when optional (its point keeps the tooltip), else drawn at the first choice.
void place_label(Canvas& c, std::vector<Box>& taken, double px, double py, const std::string& label, const Frame& f,
                 bool optional) {
  const double w = text_width(label, 11), h = 12;
  const std::pair<double, double> offsets[] = {{9, -5}, {9, 13}, {-9 - w, -5}, {-9 - w, 13}, {-w / 2, -10}, {-w / 2, 22}};
  const Box* chosen = nullptr;
  std::vector<Box> candidates;
  for (const auto& [dx, dy] : offsets) candidates.push_back({px + dx, py + dy - h, px + dx + w, py + dy});
  for (const Box& b : candidates) {
    if (b.x0 < f.x0(c) + 2 || b.x1 > c.width() - 2 || b.y0 < f.y1(c) - 14 || b.y1 > f.y0(c)) continue;
    if (std::none_of(taken.begin(), taken.end(), [&](const Box& o) { return o.overlaps(b); })) {
      chosen = &b;
      break;
    }
  }
  if (!chosen && optional) return;
  const Box b = chosen ? *chosen : candidates.front();
  taken.push_back(b);
  c.text(b.x0, b.y1 - 1, label, {11, "start", kInk});
}

}  // namespace

const std::string& palette(size_t i) {
  static const std::vector<std::string> colors = {"#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1",
                                                  "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#17becf"};
  return colors[i % colors.size()];
}

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string format_printf(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  std::string s = buf;
  // printf follows LC_NUMERIC, which a Qt application sets from the environment ("1,5" in many
  // locales); SVG, CSV and the tables need a '.'.
  const char* point = std::localeconv()->decimal_point;
  if (point && std::string(point) != ".")
    for (size_t at = s.find(point); at != std::string::npos; at = s.find(point, at + 1)) s.replace(at, std::strlen(point), ".");
  return s;
}

std::string coord(double v) { return trim_zeros(format_printf("%.2f", std::abs(v) < 5e-3 ? 0.0 : v)); }

std::string format_number(double v) {
  if (!finite(v)) return "n/a";
  if (v == 0) return "0";
  const double a = std::abs(v);
  if (a >= 1e9) return trim_zeros(format_printf("%.3g", v / 1e9)) + "G";
  if (a >= 1e6) return trim_zeros(format_printf("%.3g", v / 1e6)) + "M";
  if (a >= 1e3) return trim_zeros(format_printf("%.3g", v / 1e3)) + "k";
  if (a < 1e-3) {
    const int e = int(std::floor(std::log10(a)));
    return trim_zeros(format_printf("%.2f", v / std::pow(10.0, e))) + "e" + std::to_string(e);
  }
  return trim_zeros(format_printf("%.3g", v));
}

std::string format_exact(double v) { return finite(v) ? format_printf("%.6g", v) : "n/a"; }

double Scale::operator()(double v) const {
  double t;
  if (symlog) {
    const double a = svg::symlog(d0), b = svg::symlog(d1);
    t = b > a ? (svg::symlog(v) - a) / (b - a) : 0.5;
  } else if (log) {
    const double a = std::log10(d0), b = std::log10(d1);
    t = b > a ? (std::log10(std::max(v, 1e-300)) - a) / (b - a) : 0.5;
  } else {
    t = d1 > d0 ? (v - d0) / (d1 - d0) : 0.5;
  }
  return r0 + t * (r1 - r0);
}

std::vector<double> linear_ticks(double lo, double hi, int target) {
  if (!finite(lo) || !finite(hi)) lo = 0, hi = 1;
  if (hi <= lo) hi = lo + (lo == 0 ? 1 : std::abs(lo) * 0.1);
  const double raw = (hi - lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double i = first; i <= last; ++i) ticks.push_back(std::abs(i * step) < step * 1e-9 ? 0.0 : i * step);
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  if (!(lo > 0) || !finite(lo)) lo = 1;
  if (!(hi > lo) || !finite(hi)) hi = lo * 10;
  const int e0 = int(std::floor(std::log10(lo) + 1e-9)), e1 = std::max(e0 + 1, int(std::ceil(std::log10(hi) - 1e-9)));
  std::vector<double> ticks;
  for (int e = e0; e <= e1; ++e) {
    const double p = std::pow(10.0, e);
    ticks.push_back(p);
    if (e1 - e0 < 2 && e < e1)
      for (double m : {2.0, 5.0}) ticks.push_back(m * p);
  }
  return ticks;
}

std::vector<double> symlog_ticks(double lo, double hi) {
  std::vector<double> ticks = {0.0};
  for (double p = 1; ticks.front() > lo && p < 1e15; p *= 10) ticks.insert(ticks.begin(), -p);
  for (double p = 1; ticks.back() < hi && p < 1e15; p *= 10) ticks.push_back(p);
  if (ticks.size() == 1) ticks.push_back(1);
  return ticks;
}

Canvas::Canvas(double width, double height, const std::string& title) : width_(width), height_(height), title_(title) {}

void Canvas::close(const std::string& tag, const std::string& tooltip) {
  if (tooltip.empty()) body_ << "/>\n";
  else body_ << "><title>" << escape(tooltip) << "</title></" << tag << ">\n";
}

void Canvas::rect(double x, double y, double w, double h, const std::string& fill, const std::string& tooltip,
                  const std::string& stroke) {
  body_ << "<rect x=\"" << coord(x) << "\" y=\"" << coord(y) << "\" width=\"" << coord(std::max(w, 0.0))
        << "\" height=\"" << coord(std::max(h, 0.0)) << "\" fill=\"" << escape(fill) << "\"";
  if (!stroke.empty()) body_ << " stroke=\"" << escape(stroke) << "\" stroke-width=\"1\"";
  close("rect", tooltip);
}

void Canvas::line(double x1, double y1, double x2, double y2, const std::string& stroke, double width,
                  const std::string& dash) {
  body_ << "<line x1=\"" << coord(x1) << "\" y1=\"" << coord(y1) << "\" x2=\"" << coord(x2) << "\" y2=\"" << coord(y2)
        << "\" stroke=\"" << escape(stroke) << "\" stroke-width=\"" << coord(width) << "\"";
  if (!dash.empty()) body_ << " stroke-dasharray=\"" << escape(dash) << "\"";
  body_ << "/>\n";
}

void Canvas::polyline(const std::vector<std::pair<double, double>>& points, const std::string& stroke, double width,
                      const std::string& dash) {
  if (points.size() < 2) return;
  body_ << "<polyline fill=\"none\" stroke=\"" << escape(stroke) << "\" stroke-width=\"" << coord(width)
        << "\" stroke-linejoin=\"round\"";
  if (!dash.empty()) body_ << " stroke-dasharray=\"" << escape(dash) << "\"";
  body_ << " points=\"";
  for (size_t i = 0; i < points.size(); ++i)
    body_ << (i ? " " : "") << coord(points[i].first) << "," << coord(points[i].second);
  body_ << "\"/>\n";
}

void Canvas::circle(double cx, double cy, double r, const std::string& fill, const std::string& stroke,
                    const std::string& tooltip) {
  body_ << "<circle cx=\"" << coord(cx) << "\" cy=\"" << coord(cy) << "\" r=\"" << coord(r) << "\" fill=\""
        << escape(fill) << "\" stroke=\"" << escape(stroke) << "\" stroke-width=\"1.5\"";
  close("circle", tooltip);
}

void Canvas::text(double x, double y, const std::string& s, const TextStyle& st) {
  body_ << "<text x=\"" << coord(x) << "\" y=\"" << coord(y) << "\" font-size=\"" << coord(st.size) << "\" fill=\""
        << st.fill << "\" text-anchor=\"" << st.anchor << "\"";
  if (st.bold) body_ << " font-weight=\"bold\"";
  if (st.rotate != 0)
    body_ << " transform=\"rotate(" << coord(st.rotate) << " " << coord(x) << " " << coord(y) << ")\"";
  body_ << ">" << escape(s) << "</text>\n";
}

std::string Canvas::str() const {
  std::ostringstream s;
  const std::string w = coord(width_), h = coord(height_);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" << w << "\" height=\"" << h
    << "\" viewBox=\"0 0 " << w << " " << h
    << "\" font-family=\"Inter, 'Segoe UI', 'Helvetica Neue', Helvetica, Arial, sans-serif\" role=\"img\">\n"
    << "<title>" << escape(title_) << "</title>\n"
    << "<rect x=\"0\" y=\"0\" width=\"" << w << "\" height=\"" << h << "\" fill=\"#ffffff\"/>\n"
    << body_.str() << "</svg>\n";
  return s.str();
}

double text_width(const std::string& s, double size) {
  double units = 0;
  for (unsigned char ch : s) {
    if ((ch & 0xC0) == 0x80) continue;  // UTF-8 continuation byte: one glyph per code point
    units += ch == ' ' || ch == '.' || ch == ',' || ch == 'i' || ch == 'l' || ch == '1' ? 0.32 : ch >= 'A' && ch <= 'Z' ? 0.66 : 0.56;
  }
  return units * size;
}

Scale value_axis_y(Canvas& c, const Frame& f, const Axis& y) {
  const std::vector<double> ticks = ticks_of(y);
  Scale s{ticks.front(), ticks.back(), f.y0(c), f.y1(c), y.log, y.symlog};
  for (double t : ticks) {
    const double py = s(t);
    c.line(f.x0(c), py, f.x1(c), py, kGrid, 1);
    c.text(f.x0(c) - 8, py + 4, y.format(t), {11, "end", kMuted});
  }
  c.line(f.x0(c), f.y0(c), f.x0(c), f.y1(c), kMuted, 1);
  c.text(16, (f.y0(c) + f.y1(c)) / 2, y.label, {12, "middle", kInk, false, -90});
  return s;
}

Scale value_axis_x(Canvas& c, const Frame& f, const Axis& x) {
  const std::vector<double> ticks = ticks_of(x, 7);
  Scale s{ticks.front(), ticks.back(), f.x0(c), f.x1(c), x.log, x.symlog};
  for (double t : ticks) {
    const double px = s(t);
    c.line(px, f.y0(c), px, f.y1(c), kGrid, 1);
    c.line(px, f.y0(c), px, f.y0(c) + 4, kMuted, 1);
    c.text(px, f.y0(c) + 18, x.format(t), {11, "middle", kMuted});
  }
  c.line(f.x0(c), f.y0(c), f.x1(c), f.y0(c), kMuted, 1);
  c.text((f.x0(c) + f.x1(c)) / 2, c.height() - 12, x.label, {12, "middle", kInk});
  return s;
}

void category_axis_x(Canvas& c, const Frame& f, const std::vector<std::string>& categories, const std::string& label) {
  const bool rotate = rotate_categories(f.x1(c) - f.x0(c), categories);
  for (size_t i = 0; i < categories.size(); ++i) {
    const auto [x, w] = band(c, f, i, categories.size());
    if (rotate) c.text(x + w / 2 + 4, f.y0(c) + 14, categories[i], {11, "end", kInk, false, -30});
    else c.text(x + w / 2, f.y0(c) + 18, categories[i], {11, "middle", kInk});
  }
  c.line(f.x0(c), f.y0(c), f.x1(c), f.y0(c), kMuted, 1);
  c.text((f.x0(c) + f.x1(c)) / 2, c.height() - 12, label, {12, "middle", kInk});
}

void chart_title(Canvas& c, const std::string& title) { c.text(kSide, kTitleY, title, {15, "start", kInk, true}); }

double legend(Canvas& c, double x, double y, double max_width, const std::vector<LegendEntry>& entries) {
  return layout_legend(&c, x, y, max_width, entries);
}

double legend_height(double max_width, const std::vector<LegendEntry>& entries) {
  return layout_legend(nullptr, 0, 0, max_width, entries);
}

std::string bar_chart(const BarChart& chart) {
  // Rotated category labels need room below: grow the canvas rather than squeeze the plot.
  Axis y{chart.y_label, 0, 0, false, false, chart.format};
  std::vector<double> all;
  for (const auto& s : chart.series) all.insert(all.end(), s.values.begin(), s.values.end());
  y.hi = std::max(range_of(all, false).second, 1e-12) * 1.08;
  const double left = left_margin(y);
  const bool rotate = rotate_categories(chart.width - left - 20, chart.categories);
  const double extra = rotate ? widest(chart.categories, 11) * 0.5 : 0;
  Canvas c(chart.width, chart.height + extra, chart.title);
  std::vector<LegendEntry> entries;
  for (const auto& s : chart.series)
    if (!s.name.empty()) entries.push_back({s.name, s.color});
  Frame f = header(c, chart.title, entries);
  f.left = left;
  f.bottom = 56 + extra;
  const Scale sy = value_axis_y(c, f, y);
  category_axis_x(c, f, chart.categories, chart.x_label);
  const size_t n = chart.categories.size(), m = std::max<size_t>(chart.series.size(), 1);
  for (size_t i = 0; i < n; ++i) {
    const auto [x, w] = band(c, f, i, n);
    const double group = w * 0.8, bw = group / double(m);
    for (size_t j = 0; j < chart.series.size(); ++j) {
      const BarSeries& s = chart.series[j];
      const double v = i < s.values.size() ? s.values[i] : NAN;
      if (!finite(v)) continue;
      const double bx = x + (w - group) / 2 + bw * double(j), top = sy(std::max(v, 0.0));
      const std::string tip = i < s.tooltips.size() && !s.tooltips[i].empty()
                                  ? s.tooltips[i]
                                  : s.name + ", " + chart.categories[i] + ": " + format_exact(v);
      c.rect(bx + bw * 0.06, top, bw * 0.88, sy(sy.d0) - top, s.color, tip);
      if (i < s.labels.size() && !s.labels[i].empty())
        c.text(bx + bw / 2, top - 4, s.labels[i], {std::min(10.0, std::max(7.0, bw * 0.5)), "middle", kMuted});
    }
  }
  c.line(f.x0(c), f.y0(c), f.x1(c), f.y0(c), kMuted, 1);
  return c.str();
}

std::string line_chart(const LineChart& chart) {
  std::vector<double> xs, ys;
  for (const auto& s : chart.series) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
  }
  for (const auto& m : chart.markers) xs.push_back(m.x);
  const auto [xlo, xhi] = range_of(xs, false);
  const auto [ylo, yhi] = range_of(ys, chart.log_y);
  const Axis x{chart.x_label, xlo, xhi, false, false, chart.format_x};
  const Axis y{chart.y_label, chart.log_y ? ylo : std::min(0.0, ylo), yhi, chart.log_y, false, chart.format_y};
  Canvas c(chart.width, chart.height, chart.title);
  std::vector<LegendEntry> entries;
  for (const auto& s : chart.series)
    if (!s.name.empty())
      entries.push_back({s.name, s.color, s.dashed ? LegendEntry::Mark::Dashed : LegendEntry::Mark::Line});
  Frame f = header(c, chart.title, entries);
  f.left = left_margin(y);
  const Scale sy = value_axis_y(c, f, y), sx = value_axis_x(c, f, x);
  for (const auto& m : chart.markers) {
    c.line(sx(m.x), f.y0(c), sx(m.x), f.y1(c), m.color, 1.2, "4 3");
    c.text(sx(m.x) + 4, f.y1(c) + 12, m.label, {11, "start", m.color.c_str()});
  }
  for (const auto& s : chart.series) {
    std::vector<std::pair<double, double>> pts;
    std::vector<size_t> index;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (finite(s.x[i]) && finite(s.y[i]) && (!chart.log_y || s.y[i] > 0)) pts.emplace_back(sx(s.x[i]), sy(s.y[i])), index.push_back(i);
    c.polyline(pts, s.color, 1.8, s.dashed ? "5 3" : "");
    for (size_t k = 0; k < pts.size(); ++k) {
      const size_t i = index[k];
      const std::string tip = i < s.tooltips.size() ? s.tooltips[i]
                                                    : s.name + ": (" + format_exact(s.x[i]) + ", " + format_exact(s.y[i]) + ")";
      c.circle(pts[k].first, pts[k].second, 2.6, s.color, s.color, tip);
    }
  }
  return c.str();
}

std::string scatter_chart(const ScatterChart& chart) {
  std::vector<double> xs, ys;
  for (const auto& p : chart.points) xs.push_back(p.x), ys.push_back(p.y);
  auto [xlo, xhi] = range_of(xs, false);
  auto [ylo, yhi] = range_of(ys, false);
  const double px = std::max((xhi - xlo) * 0.08, 0.05), py = chart.symlog_y ? 0 : std::max((yhi - ylo) * 0.1, 0.05);
  const Axis x{chart.x_label, xlo >= 0 ? std::max(0.0, xlo - px) : xlo - px, xhi + px, false, false, chart.format_x};
  const Axis y{chart.y_label, std::min(0.0, ylo - py), yhi + py, false, chart.symlog_y, chart.format_y};
  Canvas c(chart.width, chart.height, chart.title);
  Frame f = header(c, chart.title, chart.legend);
  f.left = left_margin(y);
  const Scale sy = value_axis_y(c, f, y), sx = value_axis_x(c, f, x);
  if (sy.d0 < 0 && sy.d1 > 0) c.line(f.x0(c), sy(0), f.x1(c), sy(0), kMuted, 1, "2 3");
  std::vector<std::pair<double, double>> path;
  for (const auto& [vx, vy] : chart.path) path.emplace_back(sx(vx), sy(vy));
  c.polyline(path, chart.path_color, 1.5, "6 4");
  for (const auto& p : chart.points) {  // hollow points first so the highlighted ones draw on top
    if (p.highlighted) continue;
    c.circle(sx(p.x), sy(p.y), 4.5, "#ffffff", p.color, p.tooltip);
  }
  for (const auto& p : chart.points)
    if (p.highlighted) c.circle(sx(p.x), sy(p.y), 6, p.color, "#ffffff", p.tooltip);
  // Labels avoid every point; the highlighted points are labelled first and always.
  std::vector<Box> taken;
  for (const auto& p : chart.points) taken.push_back({sx(p.x) - 5, sy(p.y) - 5, sx(p.x) + 5, sy(p.y) + 5});
  for (bool highlighted : {true, false})
    for (const auto& p : chart.points)
      if (p.highlighted == highlighted) place_label(c, taken, sx(p.x), sy(p.y), p.label, f, !highlighted);
  return c.str();
}

}  // namespace gear::report::svg
