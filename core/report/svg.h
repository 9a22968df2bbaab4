#pragma once
// Small, dependency-free SVG building blocks for the report's plots: a canvas that escapes every
// string it is given, scales and "nice" ticks, axes, a legend, and three chart kinds (grouped bars,
// lines, labelled scatter) composed from them. Styling is by presentation attributes, not CSS, so the
// same SVG renders in a browser and in Qt's QSvgRenderer (the PDF export). Every mark carries a
// <title> child: browsers show it as a tooltip with the exact value.
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace gear::report::svg {

// Colours: ink for text and axes, a light grid, and a categorical palette readable on white
// (Tableau 10 with its grey swapped for cyan, grey being the reference's; the first six stay
// distinguishable for the common colour-vision deficiencies).
inline const char* kInk = "#1f2933";
inline const char* kMuted = "#616e7c";
inline const char* kGrid = "#e4e7eb";
inline const char* kReference = "#52606d";  // FP16 / the full cache, always the same grey
const std::string& palette(size_t i);

std::string escape(const std::string& text);  // & < > " ' as entities: safe in text and attributes
std::string coord(double v);                  // a coordinate with at most 2 decimals
std::string format_number(double v);          // 3 significant digits, no trailing zeros: 0.0123, 1.5k, 2e-05
std::string format_exact(double v);           // up to 6 significant digits, for tooltips
// snprintf of one double with a '.' decimal point whatever the C locale says.
std::string format_printf(const char* format, double v);

struct Scale {
  double d0 = 0, d1 = 1;  // domain
  double r0 = 0, r1 = 1;  // range in px
  bool log = false;
  bool symlog = false;    // sign(v) log10(1 + |v|): linear near 0, logarithmic far from it, 0 allowed
  double operator()(double v) const;
};

// Ticks at 1, 2 or 5 x 10^k covering [lo, hi], about `target` of them (the first <= lo, the last >= hi).
std::vector<double> linear_ticks(double lo, double hi, int target = 5);
// Powers of ten covering [lo, hi] (lo > 0), with 2 and 5 in between when the range spans < 2 decades.
std::vector<double> log_ticks(double lo, double hi);
// 0 and +-1, +-10, +-100, ... covering [lo, hi], for a symlog axis.
std::vector<double> symlog_ticks(double lo, double hi);

struct TextStyle {
  double size = 12;
  const char* anchor = "start";  // start | middle | end
  const char* fill = kInk;
  bool bold = false;
  double rotate = 0;  // degrees, about (x, y)
};

// One <svg> element. Every string argument is escaped here; callers pass plain text.
class Canvas {
 public:
  Canvas(double width, double height, const std::string& title);
  double width() const { return width_; }
  double height() const { return height_; }

  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& tooltip = "",
            const std::string& stroke = "");
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const std::string& dash = "");
  void polyline(const std::vector<std::pair<double, double>>& points, const std::string& stroke, double width = 1.8,
                const std::string& dash = "");
  void circle(double cx, double cy, double r, const std::string& fill, const std::string& stroke,
              const std::string& tooltip = "");
  void text(double x, double y, const std::string& s, const TextStyle& style = {});
  std::string str() const;

 private:
  void close(const std::string& tag, const std::string& tooltip);
  double width_, height_;
  std::string title_;
  std::ostringstream body_;
};

double text_width(const std::string& s, double size);  // an estimate for layout (proportional fonts)

struct Axis {
  std::string label;
  double lo = 0, hi = 1;  // data range; the drawn range is widened to the ticks
  bool log = false;
  bool symlog = false;
  std::function<std::string(double)> format = format_number;
};

// The plot area inside the canvas.
struct Frame {
  double left = 70, top = 60, right = 20, bottom = 56;
  double x0(const Canvas&) const { return left; }
  double x1(const Canvas& c) const { return c.width() - right; }
  double y0(const Canvas& c) const { return c.height() - bottom; }  // bottom edge (larger y)
  double y1(const Canvas&) const { return top; }
};

// Grid lines, ticks and labels of a value axis along y; returns its scale.
Scale value_axis_y(Canvas& c, const Frame& f, const Axis& y);
// The same along x.
Scale value_axis_x(Canvas& c, const Frame& f, const Axis& x);
// Category labels under equal bands along x (rotated when they do not fit); the axis title below.
void category_axis_x(Canvas& c, const Frame& f, const std::vector<std::string>& categories, const std::string& label);
void chart_title(Canvas& c, const std::string& title);

struct LegendEntry {
  std::string label, color;
  enum class Mark { Box, Line, Dashed, Dot, Ring } mark = Mark::Box;
};
// Entries left to right from (x, y), wrapping at max_width. Returns the height used.
double legend(Canvas& c, double x, double y, double max_width, const std::vector<LegendEntry>& entries);
double legend_height(double max_width, const std::vector<LegendEntry>& entries);

struct BarSeries {
  std::string name, color;
  std::vector<double> values;         // one per category; NaN = no bar
  std::vector<std::string> tooltips;  // one per category (empty: name and value)
  std::vector<std::string> labels;    // optional small text above each bar
};
struct BarChart {
  std::string title, x_label, y_label;
  std::vector<std::string> categories;
  std::vector<BarSeries> series;
  std::function<std::string(double)> format = format_number;
  double width = 760, height = 380;
};
std::string bar_chart(const BarChart& chart);

struct LineSeries {
  std::string name, color;
  std::vector<double> x, y;           // points with y <= 0 are skipped on a log axis
  std::vector<std::string> tooltips;  // one per point (empty: name, x and y)
  bool dashed = false;
};
struct VerticalMarker {
  double x = 0;
  std::string label, color;
};
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<LineSeries> series;
  std::vector<VerticalMarker> markers;
  bool log_y = false;
  std::function<std::string(double)> format_x = format_number, format_y = format_number;
  double width = 760, height = 380;
};
std::string line_chart(const LineChart& chart);

struct ScatterPoint {
  double x = 0, y = 0;
  std::string label, color, tooltip;
  bool highlighted = false;  // drawn filled and larger (e.g. on the Pareto front)
};
struct ScatterChart {
  std::string title, x_label, y_label;
  std::vector<ScatterPoint> points;
  std::vector<std::pair<double, double>> path;  // drawn as a dashed step line (e.g. the front)
  std::string path_color = kInk;
  std::vector<LegendEntry> legend;
  bool symlog_y = false;  // for values spanning decades with zero among them (perplexity increase in %)
  std::function<std::string(double)> format_x = format_number, format_y = format_number;
  double width = 760, height = 480;
};
// Labels that would cover another label or point are left out (their tooltips remain), except on
// highlighted points.
std::string scatter_chart(const ScatterChart& chart);

}  // namespace gear::report::svg
