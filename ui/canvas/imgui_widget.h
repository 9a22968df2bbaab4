// A Dear ImGui canvas inside a Qt 6 QOpenGLWidget. Each widget owns its ImGui context and GL
// textures; Qt input events feed ImGuiIO; paintGL runs one ImGui frame around draw(). While
// visible it repaints at a steady rate (60 Hz by default) and measures its own frame rate.
// It never blocks: draw() only renders data it was handed (plain structs from plot_data.h).
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <functional>

#include <QElapsedTimer>
#include <QOpenGLWidget>
#include <QTimer>

#include "canvas/texture_cache.h"

struct ImGuiContext;

namespace gear::ui {

class ImGuiWidget : public QOpenGLWidget {
  Q_OBJECT

 public:
  using DrawFunction = std::function<void(ImGuiWidget&)>;

  explicit ImGuiWidget(QWidget* parent = nullptr);
  ~ImGuiWidget() override;

  // Whether this platform can give a QOpenGLWidget a context. Check before showing one: Qt 6.4
  // crashes while composing a window whose QOpenGLWidget got none (e.g. QT_QPA_PLATFORM=offscreen).
  // Needs a QGuiApplication; on false, `why` says what failed.
  static bool openGLAvailable(QString* why = nullptr);

  // What a frame draws, when draw() is not overridden. Called with this widget's ImGui context
  // and GL context current, between ImGui::NewFrame() and ImGui::Render().
  void setDrawFunction(DrawFunction fn) { draw_fn_ = std::move(fn); }

  // Repaint rate while visible; 0 repaints only on input and update().
  void setTargetFps(int fps);
  int targetFps() const { return target_fps_; }

  double fps() const { return fps_; }                 // frames/s over the last second
  double frameMs() const { return frame_ms_; }        // CPU ms of paintGL (moving average)
  uint64_t frameCount() const { return frames_; }     // frames rendered so far
  bool glReady() const { return gl_ready_; }          // the GL backend initialised
  QString glInfo() const { return gl_info_; }         // "4.5 (Compatibility Profile) Mesa ..."
  TextureCache& textures() { return textures_; }      // heatmap textures of this GL context
  ImGuiContext* imguiContext() const { return ctx_; }

 signals:
  void frameRendered();     // after each paintGL
  void glFailed(QString);   // initializeGL could not set up the ImGui OpenGL backend

 protected:
  virtual void draw();      // default: the draw function

  void initializeGL() override;
  void paintGL() override;
  void resizeGL(int w, int h) override;

  void mouseMoveEvent(QMouseEvent* e) override;
  void mousePressEvent(QMouseEvent* e) override;
  void mouseReleaseEvent(QMouseEvent* e) override;
  void mouseDoubleClickEvent(QMouseEvent* e) override;
  void wheelEvent(QWheelEvent* e) override;
  void keyPressEvent(QKeyEvent* e) override;
  void keyReleaseEvent(QKeyEvent* e) override;
  void focusInEvent(QFocusEvent* e) override;
  void focusOutEvent(QFocusEvent* e) override;
  void leaveEvent(QEvent* e) override;
  void showEvent(QShowEvent* e) override;
  void hideEvent(QHideEvent* e) override;
  bool focusNextPrevChild(bool next) override;  // keeps Tab while ImGui has the keyboard

 private:
  void cleanupGL();                 // before the GL context goes away
  void loadFonts(float dpr);        // (re)builds the font atlas for a device pixel ratio
  void updateModifiers(Qt::KeyboardModifiers mods);
  void setButton(int button, bool down);
  void setKey(int index, bool down);
  void afterNewFrame();             // applies releases that arrived before their press was seen
  void updateCursor();
  void countFrame(qint64 paint_ns);

  ImGuiContext* ctx_ = nullptr;
  DrawFunction draw_fn_;
  TextureCache textures_;
  QTimer timer_;
  QElapsedTimer clock_;
  qint64 last_frame_ns_ = 0;
  int target_fps_ = 60;
  bool gl_ready_ = false;
  QString gl_info_;
  float font_dpr_ = 0;              // the DPR the font atlas was built for
  int cursor_ = -2;                 // the ImGuiMouseCursor last applied
  QByteArray clipboard_;            // keeps GetClipboardText's result alive

  // ImGui 1.86 polls state once per frame: a press and release between two frames would be
  // lost, so a release is deferred until a frame has seen the press.
  std::array<bool, 5> button_unseen_{}, button_release_{};
  std::bitset<512> key_unseen_, key_release_;

  // Frame-rate measurement: when the last 128 frames ended.
  std::array<qint64, 128> stamps_{};
  uint64_t frames_ = 0;
  double fps_ = 0, frame_ms_ = 0;
};

}  // namespace gear::ui
