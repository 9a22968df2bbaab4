// gearlab_canvas_demo: every canvas plot on synthetic but realistic data (5 layers, 4 KV heads of
// 8 channels, 512 tokens), in a QMainWindow whose only widget is the ImGui canvas.
//
//   gearlab_canvas_demo [--size WxH]                       interactive
//   gearlab_canvas_demo --screenshot FILE.png [--frames N] [--hover X,Y] [--click X,Y]
//                       [--tab 0|1] [--check-steady-alloc]
//
// --screenshot renders N frames (default 10), saves the canvas (grabFramebuffer) to FILE.png and
// the whole window (QWidget::grab) to FILE-window.png, prints the frame rate and exits 0; no GL
// context, a blank image or a failed save exits 1 with one line on stderr. --check-steady-alloc
// also fails when the second half of the frames allocated (operator new) while drawing.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <unordered_set>

#include <QApplication>
#include <QLabel>
#include <QMainWindow>
#include <QMouseEvent>
#include <QRegularExpression>
#include <QStatusBar>
#include <QTimer>

#include <imgui.h>

#include "canvas/imgui_widget.h"
#include "canvas/plots.h"

// ---- allocation counting: operator new (our code) and ImGui's allocator, separately ----------
namespace {
std::atomic<uint64_t> g_news{0}, g_imgui_allocs{0};
}
void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

using namespace gear::ui;

constexpr int kLayers = 5, kHeads = 4, kHeadDim = 8, kTokens = 512, kBuffer = 64;

// ---- synthetic data ----------------------------------------------------------------------------

struct Settings {
  int bits = 2, rank = 2;
  float sparsity = 2.0f;  // % of entries kept as outliers
  bool log_y = true, generating = true, abs_map = true;
  int map = 0, colormap = 0, layer = 2;
};

struct Demo {
  Settings s;
  LayerErrors errors;
  Spectrum spectra[kLayers];
  float base_k[kLayers], base_v[kLayers];  // per-layer quantization error at 4 bits
  HeatmapData key_map, value_map, big_map;
  MemoryBreakdown memory;
  TimeSeries live{600};
  double sim_t = 0, next_sample = 0;
  int turn_tokens = 128;
  int open_tab = 0;  // the tab to select on the next frame (-1: leave it)
  double idle_until = 0;
  std::mt19937 rng{7};
};

// K has per-channel outliers and RoPE's rotating low channels; V is smoother but has an
// attention-sink token 0.
void fill_map(HeatmapData& m, int tokens, int heads, bool keys, uint32_t seed, const char* title) {
  const int channels = heads * kHeadDim;
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  m.rows = tokens;
  m.cols = channels;
  m.values.assign(static_cast<size_t>(tokens) * channels, 0.0f);
  for (int t = 0; t < tokens; ++t) {
    for (int c = 0; c < channels; ++c) {
      const int d = c % kHeadDim;
      float v = n01(rng) * (keys ? 0.45f : 0.6f);
      if (keys && d < 2) v += 0.9f * std::sin(t * (0.05f + 0.02f * (c / kHeadDim)) + c);
      if (keys && (c * 7 + 3) % 11 == 0) v += (c % 2 ? 4.5f : -4.0f) + n01(rng) * 0.6f;
      if (!keys && t == 0) v *= 6.0f;
      m.values[static_cast<size_t>(t) * channels + c] = v;
    }
  }
  m.title = title;
  m.value_label = keys ? "K" : "V";
  ++m.version;
}

// Residual spectra decay fast (most of the residual is low-rank), each head a little apart.
void fill_spectra(Demo& d) {
  for (int l = 0; l < kLayers; ++l) {
    Spectrum& s = d.spectra[l];
    s.heads = kHeads;
    s.count = kHeadDim;
    s.values.resize(kHeads * kHeadDim);
    for (int h = 0; h < kHeads; ++h) {
      const float top = 9.0f + 2.5f * h + 1.5f * l, decay = 0.55f + 0.12f * h;
      for (int i = 0; i < kHeadDim; ++i) s.values[h * kHeadDim + i] = top * std::exp(-decay * i) + 0.08f;
    }
    s.title = "Residual spectrum, layer " + std::to_string(l) + " (K)";
  }
}

// Share of a layer's residual energy in its top r singular values (mean over heads).
double captured(const Spectrum& s, int r) {
  double kept = 0, total = 0;
  for (int h = 0; h < s.heads; ++h) {
    for (int i = 0; i < s.count; ++i) {
      const double v = s.at(h, i);
      total += v * v;
      if (i < r) kept += v * v;
    }
  }
  return total > 0 ? kept / total : 0;
}

// Errors and bytes for the current settings; no allocation (the vectors are already sized).
void apply_settings(Demo& d) {
  const Settings& s = d.s;
  const double qscale = std::pow(2.0, 4 - s.bits);
  const double sparse_gain = 1.0 - std::exp(-s.sparsity / 1.5);
  auto side = [&](ComponentErrors& e, const float* base, double outlier_share) {
    for (int l = 0; l < kLayers; ++l) {
      const double q = base[l] * qscale, c = captured(d.spectra[l], s.rank);
      e.quant[l] = static_cast<float>(q);
      e.sparse[l] = static_cast<float>(q * (1 - outlier_share * sparse_gain));
      e.lowrank[l] = static_cast<float>(q * std::sqrt(1 - 0.55 * c));
      e.gear[l] = static_cast<float>(e.sparse[l] * std::sqrt(1 - 0.8 * c));
    }
  };
  side(d.errors.key, d.base_k, 0.55);
  side(d.errors.value, d.base_v, 0.25);
  for (Spectrum& sp : d.spectra) sp.rank = s.rank;

  // Bytes: 64 recent tokens in FP16, the rest as codes + FP16 scale/zero per 32 + outliers
  // (FP16 value + int32 index) + FP16 low-rank factors per head [tokens x r] and [r x 8].
  const int64_t per_token = int64_t{kLayers} * 2 * kHeads * kHeadDim;
  const int64_t compressed = kTokens - kBuffer, n = compressed * per_token;
  MemoryBreakdown& m = d.memory;
  m.fp16_reference = kTokens * per_token * 2;
  m.fp16_buffer = kBuffer * per_token * 2;
  m.codes = n * s.bits / 8;
  m.scales = n / 32 * 4;
  m.sparse = static_cast<int64_t>(n * s.sparsity / 100.0) * 6;
  m.low_rank = int64_t{kLayers} * 2 * kHeads * (compressed + kHeadDim) * s.rank * 2;
}

// Memory / FP16 of a sequence of `tokens` under the current settings.
double memory_ratio(const Demo& d, int tokens) {
  if (tokens <= kBuffer) return 1.0;
  const MemoryBreakdown& m = d.memory;
  const double compressed_per_token =
      static_cast<double>(m.codes + m.scales + m.sparse + m.low_rank) / (kTokens - kBuffer);
  const double fp16_per_token = static_cast<double>(m.fp16_reference) / kTokens;
  return (kBuffer * fp16_per_token + (tokens - kBuffer) * compressed_per_token) / (tokens * fp16_per_token);
}

// Simulated decoding (a 7B-like ~160 tokens/s, slower as the context grows): turns of 1200
// tokens after a 128-token prompt, 1.5 s idle between them. One sample every 100 ms.
void simulate(Demo& d, double until) {
  std::normal_distribution<float> noise(0.0f, 2.5f);
  while (d.next_sample <= until) {
    const double t = d.next_sample;
    float tps = 0;
    if (t >= d.idle_until) {
      tps = 160.0f * (1.0f - d.turn_tokens / 30000.0f) + noise(d.rng);
      d.turn_tokens += static_cast<int>(tps * 0.1f);
      if (d.turn_tokens >= 1328) { d.idle_until = t + 1.5; }
    } else if (t + 0.1 >= d.idle_until) {
      d.turn_tokens = 128;  // the next turn: a new sequence, its 128-token prompt prefilled
    }
    d.live.push(t, tps, static_cast<float>(memory_ratio(d, d.turn_tokens)));
    d.next_sample += 0.1;
  }
}

void init(Demo& d) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> jitter(0.9f, 1.1f);
  for (int l = 0; l < kLayers; ++l) {
    d.base_k[l] = 0.034f * (1 + 0.12f * l) * jitter(rng);
    d.base_v[l] = 0.024f * (1 + 0.08f * l) * jitter(rng);
  }
  for (ComponentErrors* e : {&d.errors.key, &d.errors.value}) {
    e->quant.resize(kLayers); e->sparse.resize(kLayers); e->lowrank.resize(kLayers); e->gear.resize(kLayers);
  }
  fill_spectra(d);
  fill_map(d.key_map, kTokens, kHeads, true, 1, "Keys, layer 2 (512 tokens \xC3\x97 32 channels)");
  fill_map(d.value_map, kTokens, kHeads, false, 2, "Values, layer 2 (512 tokens \xC3\x97 32 channels)");
  fill_map(d.big_map, 4096, 16, true, 3, "Keys at Llama scale (4096 tokens \xC3\x97 128 channels)");
  apply_settings(d);
  simulate(d, 30.0);  // 30 s of history, so the live plot starts full
  d.sim_t = 30.0;
}

// ---- the canvas --------------------------------------------------------------------------------

// A bordered child region holding one plot. No background fill: the canvas is cleared to the
// same colour, and on a software rasteriser (llvmpipe under xvfb) every full-panel fill costs.
template <class F>
void panel(const char* id, ImVec2 size, F&& body) {
  ImGui::BeginChild(id, size, false, ImGuiWindowFlags_NoBackground | ImGuiWindowFlags_AlwaysUseWindowPadding);
  body();
  ImGui::EndChild();
  ImGui::GetWindowDrawList()->AddRect(ImGui::GetItemRectMin(), ImGui::GetItemRectMax(),
                                      ImGui::GetColorU32(ImGuiCol_Border), ImGui::GetStyle().ChildRounding);
}

HeatmapStyle map_style(const Settings& s) {
  HeatmapStyle st;
  st.colormap = s.colormap == 0 ? plot::Colormap::Viridis : s.colormap == 1 ? plot::Colormap::Magma
                                                                           : plot::Colormap::Diverging;
  st.abs_values = s.abs_map && s.colormap != 2;
  return st;
}

// ImGui::SameLine, or a new line when an item `width` wide would cross the right edge.
void flow(float width) {
  ImGui::SameLine();
  const float right = ImGui::GetWindowPos().x + ImGui::GetWindowContentRegionMax().x;
  if (ImGui::GetCursorScreenPos().x + width > right) ImGui::NewLine();
}

// The width of a labelled item whose frame is `frame` wide.
float labelled(const char* label, float frame) {
  return frame + ImGui::GetStyle().ItemInnerSpacing.x + ImGui::CalcTextSize(label).x;
}

void controls(Demo& d, ImGuiWidget& w, const char* gl_info) {
  static const char* const kMaps[] = {"K  512 \xC3\x97 32", "V  512 \xC3\x97 32"};
  static const char* const kColormaps[] = {"viridis", "magma", "diverging"};
  Settings& s = d.s;
  const float slider = ImGui::GetFontSize() * 6.5f, combo = ImGui::GetFontSize() * 7.5f;
  const float box = ImGui::GetFrameHeight();
  bool changed = false;
  ImGui::TextColored(ImVec4(0.45f, 0.7f, 1.0f, 1.0f), "GEAR Lab");
  ImGui::SameLine();
  ImGui::TextDisabled("canvas demo  \xC2\xB7  synthetic data");
  ImGui::SameLine(0, 24);
  ImGui::PushItemWidth(slider);
  changed |= ImGui::SliderInt("bits", &s.bits, 2, 8);
  flow(labelled("rank", slider));
  changed |= ImGui::SliderInt("rank", &s.rank, 0, kHeadDim);
  flow(labelled("outliers", slider));
  changed |= ImGui::SliderFloat("outliers", &s.sparsity, 0.0f, 10.0f, "%.1f %%");
  flow(labelled("layer", slider));
  ImGui::SliderInt("layer", &s.layer, 0, kLayers - 1);
  ImGui::PopItemWidth();
  ImGui::PushItemWidth(combo);
  flow(labelled("map", combo));
  ImGui::Combo("map", &s.map, kMaps, 2);
  flow(labelled("colours", combo));
  ImGui::Combo("colours", &s.colormap, kColormaps, 3);
  ImGui::PopItemWidth();
  flow(labelled("|x|", box));
  ImGui::Checkbox("|x|", &s.abs_map);
  flow(labelled("log y", box));
  ImGui::Checkbox("log y", &s.log_y);
  flow(labelled("live", box));
  ImGui::Checkbox("live", &s.generating);
  if (changed) apply_settings(d);

  char stats[160];
  std::snprintf(stats, sizeof stats,
                "canvas %.0f fps  \xC2\xB7  %.2f ms/frame  \xC2\xB7  heatmap uploads: %lld  \xC2\xB7  OpenGL %s",
                w.fps(), w.frameMs(), static_cast<long long>(w.textures().uploads()), gl_info);
  ImGui::TextDisabled("%s", stats);
}

void overview(Demo& d, ImGuiWidget& w) {
  const ImGuiStyle& st = ImGui::GetStyle();
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float row = (avail.y - 2 * st.ItemSpacing.y) / 3, half = (avail.x - st.ItemSpacing.x) * 0.5f;
  panel("errors", ImVec2(0, row), [&] {
    plot::layer_errors("errors", d.errors, plot::BarOptions{d.s.log_y});
  });
  panel("spectrum", ImVec2(half, row), [&] {
    plot::spectrum("spectrum", d.spectra[d.s.layer], plot::SpectrumOptions{d.s.log_y});
  });
  ImGui::SameLine();
  panel("memory", ImVec2(0, row), [&] { plot::memory_breakdown("memory", d.memory); });
  panel("heatmap", ImVec2(avail.x * 0.6f, 0), [&] {
    plot::heatmap("map", d.s.map == 0 ? d.key_map : d.value_map, w.textures(), map_style(d.s));
  });
  ImGui::SameLine();
  panel("live", ImVec2(0, 0), [&] { plot::throughput("live", d.live); });
}

void draw(Demo& d, ImGuiWidget& w, const char* gl_info, double now_s) {
  if (d.s.generating) {
    d.sim_t = 30.0 + now_s;
    simulate(d, d.sim_t);
  }
  const ImGuiIO& io = ImGui::GetIO();
  ImGui::SetNextWindowPos(ImVec2(0, 0));
  ImGui::SetNextWindowSize(io.DisplaySize);
  ImGui::Begin("GEAR Lab canvas", nullptr,
               ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings |
                   ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoBackground);
  controls(d, w, gl_info);
  if (ImGui::BeginTabBar("views")) {
    if (ImGui::BeginTabItem("Overview", nullptr, d.open_tab == 0 ? ImGuiTabItemFlags_SetSelected : 0)) {
      overview(d, w);
      ImGui::EndTabItem();
    }
    if (ImGui::BeginTabItem("Keys at Llama scale", nullptr,
                            d.open_tab == 1 ? ImGuiTabItemFlags_SetSelected : 0)) {
      panel("big", ImVec2(0, 0), [&] { plot::heatmap("big", d.big_map, w.textures(), map_style(d.s)); });
      ImGui::EndTabItem();
    }
    ImGui::EndTabBar();
    d.open_tab = -1;  // selected once, then the user's choice
  }
  ImGui::End();
}

// ---- screenshot mode ---------------------------------------------------------------------------

void send_mouse(QWidget* w, QEvent::Type type, QPointF pos, Qt::MouseButton button) {
  const Qt::MouseButtons held = type == QEvent::MouseButtonPress ? Qt::MouseButtons(button) : Qt::MouseButtons();
  QMouseEvent e(type, pos, w->mapToGlobal(pos), button, held, Qt::NoModifier);
  QCoreApplication::sendEvent(w, &e);
}

int fail(const char* what) {
  std::fprintf(stderr, "gearlab_canvas_demo: %s\n", what);
  return 1;
}

// Distinct colours on a 2-pixel grid: a blank or uniform frame has a handful at most.
int distinct_colours(const QImage& img) {
  std::unordered_set<QRgb> seen;
  for (int y = 0; y < img.height(); y += 2) {
    for (int x = 0; x < img.width(); x += 2) seen.insert(img.pixel(x, y));
  }
  return static_cast<int>(seen.size());
}

}  // namespace

int main(int argc, char** argv) {
  ImGui::SetAllocatorFunctions(
      [](size_t n, void*) { g_imgui_allocs.fetch_add(1, std::memory_order_relaxed); return std::malloc(n); },
      [](void* p, void*) { std::free(p); });
  // Without a display QApplication aborts; say so in one line instead.
  if (!std::getenv("QT_QPA_PLATFORM") && !std::getenv("DISPLAY") && !std::getenv("WAYLAND_DISPLAY")) {
    return fail("no display (DISPLAY unset): run it under xvfb-run for screenshots");
  }
  QApplication app(argc, argv);
  QString shot;
  int frames = 10, width = 1440, height = 900;
  bool check_alloc = false;
  int tab = 0;
  QPointF hover(-1, -1), click(-1, -1);
  const QStringList args = app.arguments();
  for (int i = 1; i < args.size(); ++i) {
    const QString& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--screenshot" && has_value) shot = args[++i];
    else if (a == "--frames" && has_value) frames = std::max(1, args[++i].toInt());
    else if (a == "--size" && has_value) {
      const QStringList wh = args[++i].split('x');
      if (wh.size() == 2) { width = wh[0].toInt(); height = wh[1].toInt(); }
    } else if (a == "--hover" && has_value) {
      const QStringList xy = args[++i].split(',');
      if (xy.size() == 2) hover = QPointF(xy[0].toDouble(), xy[1].toDouble());
    } else if (a == "--click" && has_value) {
      const QStringList xy = args[++i].split(',');
      if (xy.size() == 2) click = QPointF(xy[0].toDouble(), xy[1].toDouble());
    } else if (a == "--tab" && has_value) tab = args[++i].toInt();
    else if (a == "--check-steady-alloc") check_alloc = true;
    else if (a == "--help" || a == "-h") {
      std::printf("usage: gearlab_canvas_demo [--size WxH] [--screenshot FILE.png [--frames N] "
                  "[--hover X,Y] [--click X,Y] [--tab 0|1] [--check-steady-alloc]]\n");
      return 0;
    } else {
      std::fprintf(stderr, "gearlab_canvas_demo: unknown argument '%s' (see --help)\n", qPrintable(a));
      return 2;
    }
  }

  QString why;
  if (!ImGuiWidget::openGLAvailable(&why)) return fail(qPrintable(why));
  Demo demo;
  init(demo);
  demo.open_tab = tab;
  QMainWindow window;
  window.setWindowTitle("GEAR Lab \xE2\x80\x94 canvas demo");
  auto* canvas = new ImGuiWidget(&window);
  window.setCentralWidget(canvas);
  auto* status = new QLabel(&window);
  window.statusBar()->addWidget(status);
  window.resize(width, height);

  // The draw function: counts what it allocates once the first half of the frames are done.
  std::string gl_info;
  QElapsedTimer clock;
  clock.start();
  uint64_t steady_news = 0, steady_imgui = 0, imgui_mark = 0;
  const uint64_t warmup = std::max(3, frames / 2);
  canvas->setDrawFunction([&](ImGuiWidget& w) {
    const uint64_t before = g_news.load();
    draw(demo, w, gl_info.c_str(), clock.nsecsElapsed() * 1e-9);
    if (w.frameCount() >= warmup) steady_news += g_news.load() - before;
  });
  QObject::connect(canvas, &ImGuiWidget::frameRendered, [&] {
    if (gl_info.empty()) gl_info = canvas->glInfo().toStdString();
    const uint64_t now = g_imgui_allocs.load();
    if (canvas->frameCount() > warmup) steady_imgui += now - imgui_mark;
    imgui_mark = now;
  });
  QTimer status_timer;
  QObject::connect(&status_timer, &QTimer::timeout, [&] {
    status->setText(QStringLiteral("canvas %1 fps \xC2\xB7 %2 ms/frame \xC2\xB7 OpenGL %3")
                        .arg(canvas->fps(), 0, 'f', 1).arg(canvas->frameMs(), 0, 'f', 2).arg(canvas->glInfo()));
  });
  status_timer.start(500);
  window.show();
  if (shot.isEmpty()) return app.exec();

  // Screenshot: after `frames` frames, grab the canvas and the window, check, save, report.
  int rc = 0;
  auto finish = [&] {
    const QImage img = canvas->grabFramebuffer();
    const QImage win = window.grab().toImage();
    QString win_path = shot;
    win_path.replace(QRegularExpression("\\.png$", QRegularExpression::CaseInsensitiveOption), "");
    win_path += "-window.png";
    if (img.isNull() || win.isNull()) rc = fail("the grab returned no image");
    else if (distinct_colours(img) < 32) rc = fail("the canvas framebuffer is blank");
    else if (!img.save(shot) || !win.save(win_path)) rc = fail("cannot write the PNG files");
    else if (check_alloc && steady_news > 0)
      rc = fail(qPrintable(QStringLiteral("%1 allocations (operator new) while drawing steady frames")
                               .arg(steady_news)));
    std::printf("canvas: %dx%d, %llu frames, %.1f fps (%.2f ms/frame paint), OpenGL %s\n"
                "allocations in frames %llu..%d: %llu operator new while drawing, %llu by ImGui; "
                "heatmap uploads %lld\n",
                img.width(), img.height(), static_cast<unsigned long long>(canvas->frameCount()), canvas->fps(),
                canvas->frameMs(), gl_info.c_str(), static_cast<unsigned long long>(warmup), frames,
                static_cast<unsigned long long>(steady_news), static_cast<unsigned long long>(steady_imgui),
                static_cast<long long>(canvas->textures().uploads()));
    app.exit(rc);
  };
  QObject::connect(canvas, &ImGuiWidget::frameRendered, [&] {
    // A click: press and release before the next frame (ImGui must still see it), then hover.
    if (canvas->frameCount() + 6 == static_cast<uint64_t>(frames) && click.x() >= 0) {
      send_mouse(canvas, QEvent::MouseMove, click, Qt::NoButton);
      send_mouse(canvas, QEvent::MouseButtonPress, click, Qt::LeftButton);
      send_mouse(canvas, QEvent::MouseButtonRelease, click, Qt::LeftButton);
    }
    if (canvas->frameCount() + 3 == static_cast<uint64_t>(frames) && hover.x() >= 0) {
      send_mouse(canvas, QEvent::MouseMove, hover, Qt::NoButton);
    }
    if (canvas->frameCount() == static_cast<uint64_t>(frames)) QTimer::singleShot(0, finish);
  });
  QObject::connect(canvas, &ImGuiWidget::glFailed, [&](const QString& why) {
    rc = fail(qPrintable(why));
    app.exit(rc);
  });
  QTimer::singleShot(60000, [&] {
    rc = fail("no frames rendered within 60 s (no OpenGL context?)");
    app.exit(rc);
  });
  app.exec();
  return rc;
}
