#include "app/pdf_export.h"

#include "core/report/svg.h"
#include "core/util/error.h"

#ifdef GEARLAB_HAVE_QT_PDF
#include <QByteArray>
#include <QCoreApplication>
#include <QFont>
#include <QFontMetricsF>
#include <QGuiApplication>
#include <QPageLayout>
#include <QPageSize>
#include <QPainter>
#include <QPdfWriter>
#include <QSvgRenderer>
#include <QTextDocument>

#include <algorithm>
#include <charconv>
#include <memory>
#endif

namespace gear::report {

#ifdef GEARLAB_HAVE_QT_PDF
namespace {

constexpr int kDpi = 96;  // SVG user units are CSS pixels: 96 per inch keeps the plots at their size
constexpr int kRowsPerChunk = 24;
constexpr double kGap = 16;

// QPainter needs a QGuiApplication for fonts. The desktop app has one; the CLI gets an offscreen one.
// Qt's note that XDG_RUNTIME_DIR is unset (true of every CLI run as root) is dropped; others pass.
class AppGuard {
 public:
  AppGuard() {
    if (QCoreApplication::instance()) return;
    if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
    previous_ = qInstallMessageHandler(&AppGuard::filter);
    app_ = std::make_unique<QGuiApplication>(argc_, argv_);
  }
  ~AppGuard() {
    if (app_) qInstallMessageHandler(previous_);
  }

 private:
  static void filter(QtMsgType type, const QMessageLogContext& context, const QString& message) {
    if (message.contains("XDG_RUNTIME_DIR")) return;
    if (previous_) previous_(type, context, message);
  }
  static inline QtMessageHandler previous_ = nullptr;
  int argc_ = 1;
  char name_[8] = "gearlab";
  char* argv_[2] = {name_, nullptr};
  std::unique_ptr<QGuiApplication> app_;
};

QString qs(const std::string& s) { return QString::fromUtf8(s.data(), qsizetype(s.size())); }

std::string unescape(std::string s) {
  const std::pair<const char*, const char*> entities[] = {
      {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"}, {"&amp;", "&"}};
  for (const auto& [from, to] : entities)
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + 1)) s.replace(at, std::string(from).size(), to);
  return s;
}

// Locale-free (a Qt application's LC_NUMERIC may want "1,5").
double number(const std::string& s) {
  double v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::string attribute(const std::string& tag, const std::string& name) {
  const std::string key = " " + name + "=\"";
  const size_t at = tag.find(key);
  if (at == std::string::npos) return "";
  const size_t from = at + key.size();
  return tag.substr(from, tag.find('"', from) - from);
}

// A <text> of the plots, as svg.h writes it.
struct Label {
  double x = 0, y = 0, size = 12, rotate = 0;
  QString text, fill, anchor;
  bool bold = false;
};

// QtSvg draws text as glyph outlines in a PDF (tens of kB per label, not selectable). The plots' labels
// are taken out of the SVG here and drawn with QPainter::drawText, which embeds the font once.
std::vector<Label> take_labels(std::string& svg) {
  std::vector<Label> labels;
  for (size_t at = svg.find("<text "); at != std::string::npos; at = svg.find("<text ", at)) {
    const size_t open_end = svg.find('>', at), close = svg.find("</text>", at);
    if (open_end == std::string::npos || close == std::string::npos) break;
    const std::string tag = svg.substr(at, open_end - at);
    Label l;
    l.x = number(attribute(tag, "x")), l.y = number(attribute(tag, "y"));
    l.size = number(attribute(tag, "font-size"));
    l.fill = qs(attribute(tag, "fill")), l.anchor = qs(attribute(tag, "text-anchor"));
    l.bold = attribute(tag, "font-weight") == "bold";
    const std::string transform = attribute(tag, "transform");
    if (transform.rfind("rotate(", 0) == 0) l.rotate = number(transform.substr(7, transform.find(' ') - 7));
    l.text = qs(unescape(svg.substr(open_end + 1, close - open_end - 1)));
    labels.push_back(l);
    svg.erase(at, close + 7 - at);
  }
  return labels;
}

void draw_label(QPainter& p, const Label& l) {
  QFont font("Helvetica");
  font.setPixelSize(std::max(1, int(l.size + 0.5)));
  font.setBold(l.bold);
  p.setFont(font);
  p.setPen(QColor(l.fill));
  const double w = QFontMetricsF(font).horizontalAdvance(l.text);
  const double dx = l.anchor == "middle" ? -w / 2 : l.anchor == "end" ? -w : 0;
  p.save();
  p.translate(l.x, l.y);
  p.rotate(l.rotate);
  p.drawText(QPointF(dx, 0), l.text);
  p.restore();
}

// One plot scaled into `target` (the aspect ratio kept by the caller).
void draw_svg(QPainter& p, std::string svg, const QRectF& target) {
  const std::vector<Label> labels = take_labels(svg);
  QSvgRenderer renderer(QByteArray::fromStdString(svg));
  require(renderer.isValid(), "pdf export: a plot's SVG did not parse");
  renderer.render(&p, target);
  const QSizeF size = renderer.defaultSize();
  p.save();
  p.translate(target.topLeft());
  p.scale(target.width() / size.width(), target.height() / size.height());
  for (const Label& l : labels) draw_label(p, l);
  p.restore();
}

std::unique_ptr<QTextDocument> text_document(const std::string& html, double width, double font_pt) {
  auto doc = std::make_unique<QTextDocument>();
  QFont font("Helvetica");
  font.setPointSizeF(font_pt);
  doc->setDefaultFont(font);
  doc->setDefaultStyleSheet("h1 { font-size: 20pt; } h2 { font-size: 15pt; } th { color: #616e7c; text-align: left; } "
                            "td.num { text-align: right; } .muted { color: #616e7c; }");
  doc->setDocumentMargin(0);
  doc->setTextWidth(width);
  doc->setHtml(qs(html));
  return doc;
}

// Lays blocks top to bottom, starting a new page when the next one does not fit.
class Pager {
 public:
  Pager(QPdfWriter& writer, QPainter& painter)
      : writer_(writer), painter_(painter), page_(writer.pageLayout().paintRectPixels(kDpi)) {}

  // `keep_with_next`: height of what follows that must share the page (a heading with its first plot).
  void html(const std::string& fragment, double font_pt = 10, double keep_with_next = 0) {
    auto doc = text_document(fragment, page_.width(), font_pt);
    const double h = doc->size().height();
    reserve(h + keep_with_next);
    painter_.save();
    painter_.translate(0, y_);
    doc->drawContents(&painter_);
    painter_.restore();
    y_ += h + 6;
  }

  // Plots two to a row, each with its caption below.
  void figures(const std::vector<Figure>& figs) {
    for (size_t i = 0; i < figs.size(); i += 2) {
      Row row = layout_row(figs, i);
      reserve(row.height);
      const size_t n = row.parts.size();
      for (size_t k = 0; k < n; ++k) {
        const double x = double(k) * (cell() + kGap);
        draw_svg(painter_, figs[i + k].svg, QRectF(QPointF(x, y_), row.parts[k].first));
        painter_.save();
        painter_.translate(x, y_ + row.parts[k].first.height() + 4);
        row.parts[k].second->drawContents(&painter_);
        painter_.restore();
      }
      y_ += row.height + kGap;
    }
  }

  // The height of the row of plots starting at figs[first] (0 when there is none).
  double row_height(const std::vector<Figure>& figs, size_t first) const {
    return first < figs.size() ? layout_row(figs, first).height : 0;
  }

  void space(double h) { y_ += h; }

 private:
  struct Row {
    std::vector<std::pair<QSizeF, std::unique_ptr<QTextDocument>>> parts;  // plot size, caption
    double height = 0;
  };

  double cell() const { return (page_.width() - kGap) / 2; }

  Row layout_row(const std::vector<Figure>& figs, size_t first) const {
    Row row;
    const size_t last = std::min(first + 2, figs.size());
    const double width = last - first == 1 ? page_.width() * 0.66 : cell();  // a plot alone gets more room
    for (size_t k = first; k < last; ++k) {
      const QSizeF s = QSvgRenderer(QByteArray::fromStdString(figs[k].svg)).defaultSize();
      const double scale = std::min(1.4, width / s.width());
      auto caption = text_document("<p class=\"muted\">" + svg::escape(figs[k].caption) + "</p>", width, 7.5);
      row.height = std::max(row.height, s.height() * scale + 4 + caption->size().height());
      row.parts.emplace_back(s * scale, std::move(caption));
    }
    return row;
  }

  void reserve(double h) {
    if (y_ > 0 && y_ + h > page_.height()) writer_.newPage(), y_ = 0;
  }
  QPdfWriter& writer_;
  QPainter& painter_;
  QRect page_;
  double y_ = 0;
};

// A table in chunks of rows, each repeating the header, so long tables break across pages.
void draw_table(Pager& pager, const Table& t) {
  pager.html("<h3>" + svg::escape(t.title) + "</h3>" + (t.note.empty() ? "" : "<p class=\"muted\">" + svg::escape(t.note) + "</p>"), 9);
  for (size_t first = 0; first < std::max<size_t>(t.rows.size(), 1); first += kRowsPerChunk) {
    Table chunk = t;
    chunk.rows.assign(t.rows.begin() + long(std::min(first, t.rows.size())),
                      t.rows.begin() + long(std::min(first + kRowsPerChunk, t.rows.size())));
    std::string html = table_html(chunk);
    html.replace(html.find("<table"), 6, "<table cellspacing=\"0\" cellpadding=\"3\" border=\"0\" width=\"100%\"");
    pager.html(html, 7.5);
  }
}

void draw_section(Pager& pager, const Section& s) {
  pager.space(10);
  pager.html("<h2>" + svg::escape(s.title) + "</h2>" + (s.intro.empty() ? "" : "<p class=\"muted\">" + svg::escape(s.intro) + "</p>"),
             10, pager.row_height(s.figures, 0));
  pager.figures(s.figures);
  for (const Table& t : s.tables) draw_table(pager, t);
}

}  // namespace

bool pdf_supported() { return true; }

void write_pdf(const Document& doc, const std::string& path) {
  AppGuard app;
  QPdfWriter writer(qs(path));
  writer.setResolution(kDpi);
  writer.setPageLayout(QPageLayout(QPageSize(QPageSize::A4), QPageLayout::Landscape, QMarginsF(14, 14, 14, 14),
                                   QPageLayout::Millimeter));
  writer.setTitle(qs(doc.title));
  writer.setCreator("gearlab report");
  QPainter painter;
  require(painter.begin(&writer), path + ": cannot write the PDF");
  painter.setRenderHint(QPainter::Antialiasing);
  Pager pager(writer, painter);
  pager.html("<h1>" + svg::escape(doc.title) + "</h1><p class=\"muted\">Generated " + svg::escape(doc.generated_utc) +
             " by gearlab report</p>");
  for (const Section& s : doc.sections) draw_section(pager, s);
  require(painter.end(), path + ": writing the PDF failed");
}

#else

bool pdf_supported() { return false; }

void write_pdf(const Document&, const std::string&) { fail("this build has no PDF support (Qt 6 not found)"); }

#endif

void write_pdf(const ReportInputs& in, const std::string& path) { write_pdf(build_document(in), path); }

}  // namespace gear::report
