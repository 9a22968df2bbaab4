// GEAR Lab's main window: chat (side by side with FP16), compression controls, the live
// visualization canvas, model opening, report export. It renders SessionState snapshots and sends
// commands to the Session; it never runs engine work on the UI thread.
#pragma once
#include <QMainWindow>
#include <QString>

#include <atomic>
#include <memory>

#include "core/session/session.h"

class QLabel;
class QMenu;
class QSplitter;

namespace gear::ui {

class ChatPanel;
class ControlsPanel;
class VizCanvas;

class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  explicit MainWindow(QWidget* parent = nullptr);
  ~MainWindow() override;

  Session& session() { return *session_; }
  ChatPanel* chat() const { return chat_; }
  ControlsPanel* controls() const { return controls_; }
  VizCanvas* canvas() const { return canvas_; }
  void openModel(const QString& path);
  // Writes the report (session JSON + HTML/CSV/PDF when available) into `dir`; returns the files.
  QStringList exportReport(const QString& dir);

 protected:
  void closeEvent(QCloseEvent* e) override;

 private slots:
  void onState();

 private:
  void buildMenus();
  void restoreSettings();
  void rememberModel(const QString& path);
  void rebuildRecent();
  void showError(const QString& message);

  std::unique_ptr<Session> session_;
  ChatPanel* chat_ = nullptr;
  ControlsPanel* controls_ = nullptr;
  VizCanvas* canvas_ = nullptr;
  QSplitter* split_ = nullptr;
  QLabel* banner_ = nullptr;
  QLabel* status_ = nullptr;
  QMenu* recent_ = nullptr;
  QString device_ = "cpu", dtype_ = "auto";
  std::atomic<bool> pending_{false};
  uint64_t errors_seen_ = 0;
  int head_dim_ = 0;
  std::shared_ptr<const Analysis> analysis_shown_;
};

}  // namespace gear::ui
