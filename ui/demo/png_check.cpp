// png_check FILE.png [--size WxH] [--min-size WxH] [--min-colors N]
// Fails (exit 1, one line on stderr) when the PNG is missing or unreadable, has the wrong size,
// has too few distinct colours, or when its central plot region is uniform: what a blank or
// half-initialised OpenGL frame looks like. Exit 0 prints one line with what it measured.
#include <cstdio>
#include <unordered_set>

#include <QImage>
#include <QStringList>

namespace {

int fail(const QString& what) {
  std::fprintf(stderr, "png_check: %s\n", qPrintable(what));
  return 1;
}

bool parse_size(const QString& s, int& w, int& h) {
  const QStringList p = s.split('x');
  bool ok1 = false, ok2 = false;
  if (p.size() == 2) { w = p[0].toInt(&ok1); h = p[1].toInt(&ok2); }
  return ok1 && ok2;
}

// Distinct colours of the pixels in [x0, x1) x [y0, y1).
int distinct(const QImage& img, int x0, int y0, int x1, int y1) {
  std::unordered_set<QRgb> seen;
  for (int y = y0; y < y1; ++y) {
    const auto* row = reinterpret_cast<const QRgb*>(img.constScanLine(y));
    for (int x = x0; x < x1; ++x) seen.insert(row[x] | 0xff000000u);
  }
  return static_cast<int>(seen.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return fail("usage: png_check FILE.png [--size WxH] [--min-size WxH] [--min-colors N]");
  const QString path = QString::fromLocal8Bit(argv[1]);
  int want_w = 0, want_h = 0, min_w = 1, min_h = 1, min_colors = 64;
  for (int i = 2; i + 1 < argc; i += 2) {
    const QString flag = argv[i], value = argv[i + 1];
    if (flag == "--size" && parse_size(value, want_w, want_h)) continue;
    if (flag == "--min-size" && parse_size(value, min_w, min_h)) continue;
    if (flag == "--min-colors") { min_colors = value.toInt(); continue; }
    return fail(QStringLiteral("bad argument %1 %2").arg(flag, value));
  }

  const QImage raw(path);
  if (raw.isNull()) return fail(QStringLiteral("%1: missing or not a readable PNG").arg(path));
  const QImage img = raw.convertToFormat(QImage::Format_ARGB32);
  const int w = img.width(), h = img.height();
  if (want_w > 0 && (w != want_w || h != want_h))
    return fail(QStringLiteral("%1: %2x%3, expected %4x%5").arg(path).arg(w).arg(h).arg(want_w).arg(want_h));
  if (w < min_w || h < min_h)
    return fail(QStringLiteral("%1: %2x%3, smaller than %4x%5").arg(path).arg(w).arg(h).arg(min_w).arg(min_h));
  const int colours = distinct(img, 0, 0, w, h);
  if (colours < min_colors)
    return fail(QStringLiteral("%1: %2 distinct colours (< %3): blank?").arg(path).arg(colours).arg(min_colors));

  // The plots fill the middle of the canvas: a 3x3 grid of its central tiles must not be
  // uniform (a frame that only cleared the background has one colour per tile).
  int busy = 0;
  for (int ty = 0; ty < 3; ++ty) {
    for (int tx = 0; tx < 3; ++tx) {
      const int x0 = w / 8 + tx * (w * 3 / 4) / 3, y0 = h / 8 + ty * (h * 3 / 4) / 3;
      if (distinct(img, x0, y0, x0 + (w * 3 / 4) / 3, y0 + (h * 3 / 4) / 3) >= 8) ++busy;
    }
  }
  if (busy < 7) {
    return fail(QStringLiteral("%1: %2 of 9 plot tiles are (nearly) uniform").arg(path).arg(9 - busy));
  }
  std::printf("png_check: %s %dx%d, %d colours, %d/9 plot tiles busy\n", qPrintable(path), w, h, colours, busy);
  return 0;
}
