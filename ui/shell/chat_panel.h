// The chat: the FP16 reference and the compressed side's replies side by side (compare mode), the
// point where they first differ highlighted, the input line, and the turn controls.
#pragma once
#include <QWidget>

#include <memory>

#include "core/session/session.h"

class QCheckBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QDoubleSpinBox;
class QTextBrowser;

namespace gear::ui {

class ChatPanel : public QWidget {
  Q_OBJECT

 public:
  explicit ChatPanel(QWidget* parent = nullptr);
  // Renders at most every 50 ms while a reply streams (the text is re-laid out on each render).
  void setState(std::shared_ptr<const SessionState> state);
  TurnOptions turnOptions() const;
  QCheckBox* gearToggle() const { return gear_; }
  QCheckBox* compareToggle() const { return compare_; }
  QLineEdit* input() const { return input_; }

 signals:
  void sendRequested(const QString& text);
  void stopRequested();
  void newChatRequested();
  void gearToggled(bool on);
  void compareToggled(bool on);

 private:
  void send();
  QString render(const SessionState& s, int side) const;

  QTextBrowser* view_[2] = {nullptr, nullptr};
  QLabel* title_[2] = {nullptr, nullptr};
  QWidget* pane_[2] = {nullptr, nullptr};
  QLineEdit* input_ = nullptr;
  QPushButton *send_ = nullptr, *stop_ = nullptr, *new_ = nullptr;
  QCheckBox *gear_ = nullptr, *compare_ = nullptr, *template_ = nullptr;
  QSpinBox* max_tokens_ = nullptr;
  QDoubleSpinBox* temperature_ = nullptr;
  void renderNow();
  std::shared_ptr<const SessionState> latest_;
  uint64_t rendered_version_ = 0;  // a signature of the transcript last rendered
  qint64 last_render_ms_ = -1000;
  bool render_scheduled_ = false;
};

}  // namespace gear::ui
