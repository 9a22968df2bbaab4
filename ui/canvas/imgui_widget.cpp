#include "canvas/imgui_widget.h"

#include <algorithm>
#include <cfloat>

#include <QClipboard>
#include <QFileInfo>
#include <QGuiApplication>
#include <QKeyEvent>
#include <QMouseEvent>
#include <QOffscreenSurface>
#include <QOpenGLContext>
#include <QOpenGLFunctions>
#include <QWheelEvent>

#include <backends/imgui_impl_opengl3.h>
#include <imgui.h>

#include "canvas/theme.h"

namespace gear::ui {

namespace {

// ImGui 1.86 reads keys from io.KeysDown[512] through io.KeyMap: characters keep their Qt code
// (Qt::Key_A == 'A'), the special keys get the slots from 256 on.
enum : int { kTab = 256, kLeft, kRight, kUp, kDown, kPageUp, kPageDown, kHome, kEnd, kInsert,
             kDelete, kBackspace, kSpace, kEnter, kEscape, kKeypadEnter };

int key_index(int qt_key) {
  switch (qt_key) {
    case Qt::Key_Tab: case Qt::Key_Backtab: return kTab;
    case Qt::Key_Left: return kLeft;
    case Qt::Key_Right: return kRight;
    case Qt::Key_Up: return kUp;
    case Qt::Key_Down: return kDown;
    case Qt::Key_PageUp: return kPageUp;
    case Qt::Key_PageDown: return kPageDown;
    case Qt::Key_Home: return kHome;
    case Qt::Key_End: return kEnd;
    case Qt::Key_Insert: return kInsert;
    case Qt::Key_Delete: return kDelete;
    case Qt::Key_Backspace: return kBackspace;
    case Qt::Key_Space: return kSpace;
    case Qt::Key_Return: return kEnter;
    case Qt::Key_Escape: return kEscape;
    case Qt::Key_Enter: return kKeypadEnter;
    default: return qt_key > 0 && qt_key < 256 ? qt_key : -1;
  }
}

ImVec2 to_imgui(QPointF p) { return ImVec2(static_cast<float>(p.x()), static_cast<float>(p.y())); }

int button_index(Qt::MouseButton b) {
  switch (b) {
    case Qt::LeftButton: return 0;
    case Qt::RightButton: return 1;
    case Qt::MiddleButton: return 2;
    case Qt::BackButton: return 3;
    case Qt::ForwardButton: return 4;
    default: return -1;
  }
}

const char* clipboard_get(void* user) {
  auto* clip = static_cast<QByteArray*>(user);
  *clip = QGuiApplication::clipboard()->text().toUtf8();
  return clip->constData();
}

void clipboard_set(void*, const char* text) {
  QGuiApplication::clipboard()->setText(QString::fromUtf8(text));
}

// The first of the usual sans-serif TTFs that exists (DejaVu is in fonts-dejavu-core).
const char* find_font() {
  static const char* const kPaths[] = {
      "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
      "/usr/share/fonts/TTF/DejaVuSans.ttf",
      "/usr/share/fonts/dejavu/DejaVuSans.ttf",
      "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
      "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
  };
  for (const char* p : kPaths) {
    if (QFileInfo::exists(QString::fromLatin1(p))) return p;
  }
  return nullptr;
}

}  // namespace

ImGuiWidget::ImGuiWidget(QWidget* parent) : QOpenGLWidget(parent) {
  ImGuiContext* previous = ImGui::GetCurrentContext();
  ctx_ = ImGui::CreateContext();
  ImGui::SetCurrentContext(ctx_);
  ImGuiIO& io = ImGui::GetIO();
  io.IniFilename = nullptr;  // no imgui.ini in the working directory
  io.BackendPlatformName = "gearlab_qt6";
  io.BackendFlags |= ImGuiBackendFlags_HasMouseCursors;
  const int keys[ImGuiKey_COUNT] = {kTab, kLeft, kRight, kUp, kDown, kPageUp, kPageDown, kHome,
                                    kEnd, kInsert, kDelete, kBackspace, kSpace, kEnter, kEscape,
                                    kKeypadEnter, 'A', 'C', 'V', 'X', 'Y', 'Z'};
  std::copy(std::begin(keys), std::end(keys), io.KeyMap);
  io.GetClipboardTextFn = clipboard_get;
  io.SetClipboardTextFn = clipboard_set;
  io.ClipboardUserData = &clipboard_;
  apply_dark_theme(ImGui::GetStyle());
  ImGui::SetCurrentContext(previous ? previous : ctx_);

  setMouseTracking(true);  // hover tooltips without a button held
  setFocusPolicy(Qt::StrongFocus);
  setAttribute(Qt::WA_InputMethodEnabled, false);
  timer_.setTimerType(Qt::PreciseTimer);
  connect(&timer_, &QTimer::timeout, this, qOverload<>(&QWidget::update));
  clock_.start();
}

ImGuiWidget::~ImGuiWidget() {
  if (context()) {
    disconnect(context(), &QOpenGLContext::aboutToBeDestroyed, this, &ImGuiWidget::cleanupGL);
  }
  cleanupGL();
  ImGui::DestroyContext(ctx_);
}

bool ImGuiWidget::openGLAvailable(QString* why) {
  auto failed = [why](const QString& what) {
    if (why) *why = what;
    return false;
  };
  QOpenGLContext probe;
  probe.setFormat(QSurfaceFormat::defaultFormat());
  if (!probe.create()) return failed(QStringLiteral("cannot create an OpenGL context on this platform"));
  QOffscreenSurface surface;
  surface.setFormat(probe.format());
  surface.create();
  if (!surface.isValid() || !probe.makeCurrent(&surface)) {
    return failed(QStringLiteral("cannot make an OpenGL context current on this platform"));
  }
  probe.doneCurrent();
  return true;
}

void ImGuiWidget::setTargetFps(int fps) {
  target_fps_ = std::max(0, fps);
  timer_.stop();
  if (target_fps_ > 0 && isVisible()) timer_.start(1000 / target_fps_);
}

void ImGuiWidget::draw() {
  if (draw_fn_) draw_fn_(*this);
}

void ImGuiWidget::initializeGL() {
  // A reparented widget gets a new context: free what belonged to the old one first.
  connect(context(), &QOpenGLContext::aboutToBeDestroyed, this, &ImGuiWidget::cleanupGL,
          Qt::UniqueConnection);
  QOpenGLFunctions* gl = context()->functions();
  gl_info_ = QStringLiteral("%1 (%2)")
                 .arg(reinterpret_cast<const char*>(gl->glGetString(GL_VERSION)),
                      reinterpret_cast<const char*>(gl->glGetString(GL_RENDERER)));

  // GLSL for the backend's shaders: 150 for core profiles, 130 for GL 3 compatibility, else 120.
  const QSurfaceFormat fmt = context()->format();
  const int version = fmt.majorVersion() * 10 + fmt.minorVersion();
  const char* glsl = fmt.profile() == QSurfaceFormat::CoreProfile ? "#version 150"
                     : version >= 30                              ? "#version 130"
                                                                  : "#version 120";
  ImGui::SetCurrentContext(ctx_);
  gl_ready_ = !context()->isOpenGLES() && ImGui_ImplOpenGL3_Init(glsl);
  if (!gl_ready_) {
    emit glFailed(QStringLiteral("ImGui OpenGL3 backend failed to start on OpenGL %1").arg(gl_info_));
    return;
  }
  font_dpr_ = 0;
  loadFonts(static_cast<float>(devicePixelRatioF()));
}

void ImGuiWidget::loadFonts(float dpr) {
  // Rasterised at the device's pixel density, drawn at logical size: crisp on HiDPI screens.
  static const ImWchar kRanges[] = {0x0020, 0x00FF,   // Latin-1
                                    0x0370, 0x03FF,   // Greek (sigma)
                                    0x2000, 0x206F,   // punctuation (dashes, bullets)
                                    0x2190, 0x22FF,   // arrows, math operators
                                    0};
  ImGuiIO& io = ImGui::GetIO();
  io.Fonts->Clear();
  const char* path = find_font();
  if (!path || !io.Fonts->AddFontFromFileTTF(path, kFontSize * dpr, nullptr, kRanges)) {
    ImFontConfig cfg;
    cfg.SizePixels = 13.0f * dpr;
    io.Fonts->AddFontDefault(&cfg);
  }
  io.FontGlobalScale = 1.0f / dpr;
  if (font_dpr_ != 0) {  // the backend already made a font texture: replace it
    ImGui_ImplOpenGL3_DestroyFontsTexture();
    ImGui_ImplOpenGL3_CreateFontsTexture();
  }
  font_dpr_ = dpr;
}

void ImGuiWidget::cleanupGL() {
  if (!context()) return;  // never initialised: nothing lives on the GPU
  makeCurrent();
  ImGui::SetCurrentContext(ctx_);
  textures_.release();
  if (gl_ready_) ImGui_ImplOpenGL3_Shutdown();
  gl_ready_ = false;
  font_dpr_ = 0;
  doneCurrent();
}

void ImGuiWidget::resizeGL(int, int) {}  // paintGL reads the size every frame

void ImGuiWidget::paintGL() {
  QElapsedTimer paint;
  paint.start();
  QOpenGLFunctions* gl = context()->functions();
  const float dpr = static_cast<float>(devicePixelRatioF());
  gl->glViewport(0, 0, static_cast<int>(width() * dpr), static_cast<int>(height() * dpr));
  gl->glClearColor(kCanvasBackground[0], kCanvasBackground[1], kCanvasBackground[2], kCanvasBackground[3]);
  gl->glClear(GL_COLOR_BUFFER_BIT);
  if (!gl_ready_) return;

  ImGui::SetCurrentContext(ctx_);
  if (dpr != font_dpr_) loadFonts(dpr);
  ImGuiIO& io = ImGui::GetIO();
  io.DisplaySize = ImVec2(static_cast<float>(width()), static_cast<float>(height()));
  io.DisplayFramebufferScale = ImVec2(dpr, dpr);
  const qint64 now = clock_.nsecsElapsed();
  io.DeltaTime = last_frame_ns_ > 0 ? std::max(1e-4f, (now - last_frame_ns_) * 1e-9f) : 1.0f / 60;
  last_frame_ns_ = now;

  ImGui_ImplOpenGL3_NewFrame();
  ImGui::NewFrame();
  afterNewFrame();
  draw();
  ImGui::Render();
  ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
  updateCursor();
  countFrame(paint.nsecsElapsed());
  emit frameRendered();
}

// ---- input -------------------------------------------------------------------------------------

void ImGuiWidget::updateModifiers(Qt::KeyboardModifiers mods) {
  ImGuiIO& io = ImGui::GetIO();
  io.KeyCtrl = mods & Qt::ControlModifier;
  io.KeyShift = mods & Qt::ShiftModifier;
  io.KeyAlt = mods & Qt::AltModifier;
  io.KeySuper = mods & Qt::MetaModifier;
}

void ImGuiWidget::setButton(int b, bool down) {
  if (b < 0) return;
  ImGuiIO& io = ImGui::GetIO();
  if (down) {
    io.MouseDown[b] = true;
    button_unseen_[b] = true;
    button_release_[b] = false;
  } else if (button_unseen_[b]) {
    button_release_[b] = true;  // let one frame see the click first
  } else {
    io.MouseDown[b] = false;
  }
}

void ImGuiWidget::setKey(int k, bool down) {
  if (k < 0) return;
  ImGuiIO& io = ImGui::GetIO();
  if (down) {
    io.KeysDown[k] = true;
    key_unseen_[k] = true;
    key_release_[k] = false;
  } else if (key_unseen_[k]) {
    key_release_[k] = true;
  } else {
    io.KeysDown[k] = false;
  }
}

void ImGuiWidget::afterNewFrame() {
  ImGuiIO& io = ImGui::GetIO();
  for (size_t b = 0; b < button_unseen_.size(); ++b) {
    button_unseen_[b] = false;
    if (button_release_[b]) io.MouseDown[b] = false;
    button_release_[b] = false;
  }
  if (key_release_.any()) {
    for (size_t k = 0; k < key_release_.size(); ++k) {
      if (key_release_[k]) io.KeysDown[k] = false;
    }
  }
  key_unseen_.reset();
  key_release_.reset();
}

void ImGuiWidget::mouseMoveEvent(QMouseEvent* e) {
  ImGui::SetCurrentContext(ctx_);
  ImGui::GetIO().MousePos = to_imgui(e->position());
  if (target_fps_ == 0) update();
}

void ImGuiWidget::mousePressEvent(QMouseEvent* e) {
  ImGui::SetCurrentContext(ctx_);
  ImGui::GetIO().MousePos = to_imgui(e->position());
  updateModifiers(e->modifiers());
  setButton(button_index(e->button()), true);
  update();
}

void ImGuiWidget::mouseDoubleClickEvent(QMouseEvent* e) { mousePressEvent(e); }

void ImGuiWidget::mouseReleaseEvent(QMouseEvent* e) {
  ImGui::SetCurrentContext(ctx_);
  updateModifiers(e->modifiers());
  setButton(button_index(e->button()), false);
  update();
}

void ImGuiWidget::wheelEvent(QWheelEvent* e) {
  ImGui::SetCurrentContext(ctx_);
  ImGuiIO& io = ImGui::GetIO();
  io.MouseWheel += e->angleDelta().y() / 120.0f;
  io.MouseWheelH += e->angleDelta().x() / 120.0f;
  update();
}

void ImGuiWidget::keyPressEvent(QKeyEvent* e) {
  ImGui::SetCurrentContext(ctx_);
  updateModifiers(e->modifiers());
  setKey(key_index(e->key()), true);
  const QString text = e->text();
  if (!text.isEmpty() && text.at(0).isPrint()) ImGui::GetIO().AddInputCharactersUTF8(text.toUtf8().constData());
  update();
}

void ImGuiWidget::keyReleaseEvent(QKeyEvent* e) {
  if (e->isAutoRepeat()) return;  // ImGui repeats held keys itself
  ImGui::SetCurrentContext(ctx_);
  updateModifiers(e->modifiers());
  setKey(key_index(e->key()), false);
  update();
}

void ImGuiWidget::focusInEvent(QFocusEvent*) {
  ImGui::SetCurrentContext(ctx_);
  ImGui::GetIO().AddFocusEvent(true);
}

void ImGuiWidget::focusOutEvent(QFocusEvent*) {
  ImGui::SetCurrentContext(ctx_);
  ImGui::GetIO().AddFocusEvent(false);  // releases every key ImGui holds
  updateModifiers(Qt::NoModifier);
}

void ImGuiWidget::leaveEvent(QEvent*) {
  ImGui::SetCurrentContext(ctx_);
  ImGui::GetIO().MousePos = ImVec2(-FLT_MAX, -FLT_MAX);
  update();
}

bool ImGuiWidget::focusNextPrevChild(bool next) {
  // Tab belongs to ImGui while one of its text fields or widgets has the keyboard.
  ImGui::SetCurrentContext(ctx_);
  return ImGui::GetIO().WantCaptureKeyboard ? false : QOpenGLWidget::focusNextPrevChild(next);
}

void ImGuiWidget::showEvent(QShowEvent*) {
  if (target_fps_ > 0) timer_.start(1000 / target_fps_);
}

void ImGuiWidget::hideEvent(QHideEvent*) { timer_.stop(); }

// ---- frame bookkeeping -------------------------------------------------------------------------

void ImGuiWidget::updateCursor() {
  const ImGuiMouseCursor c = ImGui::GetIO().MouseDrawCursor ? ImGuiMouseCursor_None : ImGui::GetMouseCursor();
  if (c == cursor_) return;
  cursor_ = c;
  static const Qt::CursorShape kShapes[ImGuiMouseCursor_COUNT] = {
      Qt::ArrowCursor,    Qt::IBeamCursor,     Qt::SizeAllCursor,       Qt::SizeVerCursor, Qt::SizeHorCursor,
      Qt::SizeBDiagCursor, Qt::SizeFDiagCursor, Qt::PointingHandCursor, Qt::ForbiddenCursor};
  setCursor(c >= 0 && c < ImGuiMouseCursor_COUNT ? kShapes[c] : Qt::BlankCursor);
}

void ImGuiWidget::countFrame(qint64 paint_ns) {
  // Frames per second over the last second (or since the first frame), from a ring of stamps.
  const qint64 now = clock_.nsecsElapsed();
  stamps_[static_cast<size_t>(frames_ % stamps_.size())] = now;
  ++frames_;
  frame_ms_ = frames_ == 1 ? paint_ns * 1e-6 : 0.9 * frame_ms_ + 0.1 * (paint_ns * 1e-6);
  const uint64_t kept = std::min<uint64_t>(frames_, stamps_.size());
  uint64_t n = 1;
  qint64 oldest = now;
  while (n < kept) {
    const qint64 t = stamps_[static_cast<size_t>((frames_ - 1 - n) % stamps_.size())];
    if (now - t > 1000000000) break;
    oldest = t;
    ++n;
  }
  fps_ = n > 1 && now > oldest ? (n - 1) * 1e9 / static_cast<double>(now - oldest) : 0.0;
}

}  // namespace gear::ui
