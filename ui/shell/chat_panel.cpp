#include "ui/shell/chat_panel.h"

#include <QCheckBox>
#include <QDateTime>
#include <QTimer>
#include <QDoubleSpinBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QScrollBar>
#include <QSpinBox>
#include <QTextBrowser>
#include <QVBoxLayout>

namespace gear::ui {
namespace {

QString esc(const std::string& s) { return QString::fromStdString(s).toHtmlEscaped().replace("\n", "<br>"); }

}  // namespace

ChatPanel::ChatPanel(QWidget* parent) : QWidget(parent) {
  auto* layout = new QVBoxLayout(this);
  auto* top = new QHBoxLayout;
  gear_ = new QCheckBox("GEAR on");
  gear_->setChecked(true);
  gear_->setToolTip("Off: the compressed side uses the full-precision cache too");
  compare_ = new QCheckBox("Compare with FP16");
  compare_->setChecked(true);
  template_ = new QCheckBox("Llama-2-chat template");
  max_tokens_ = new QSpinBox;
  max_tokens_->setRange(1, 4096);
  max_tokens_->setValue(128);
  max_tokens_->setPrefix("max ");
  max_tokens_->setSuffix(" tokens");
  temperature_ = new QDoubleSpinBox;
  temperature_->setRange(0, 2);
  temperature_->setSingleStep(0.1);
  temperature_->setValue(0);
  temperature_->setPrefix("T ");
  temperature_->setToolTip("0 = greedy; both sides share the sampling seed");
  for (QWidget* w : std::initializer_list<QWidget*>{gear_, compare_, template_, max_tokens_, temperature_}) top->addWidget(w);
  top->addStretch(1);
  layout->addLayout(top);

  auto* panes = new QHBoxLayout;
  const char* titles[2] = {"FP16 reference", "Compressed"};
  for (int side : {0, 1}) {
    pane_[side] = new QWidget;
    auto* v = new QVBoxLayout(pane_[side]);
    v->setContentsMargins(0, 0, 0, 0);
    title_[side] = new QLabel(titles[side]);
    title_[side]->setStyleSheet("font-weight: bold");
    view_[side] = new QTextBrowser;
    view_[side]->setObjectName(side == 0 ? "reference_view" : "compressed_view");
    v->addWidget(title_[side]);
    v->addWidget(view_[side]);
    panes->addWidget(pane_[side], 1);
  }
  layout->addLayout(panes, 1);

  auto* bottom = new QHBoxLayout;
  input_ = new QLineEdit;
  input_->setPlaceholderText("Type a prompt and press Enter (Esc stops, Ctrl+N starts a new chat)");
  send_ = new QPushButton("Send");
  stop_ = new QPushButton("Stop");
  new_ = new QPushButton("New chat");
  bottom->addWidget(input_, 1);
  for (QPushButton* b : {send_, stop_, new_}) bottom->addWidget(b);
  layout->addLayout(bottom);

  connect(input_, &QLineEdit::returnPressed, this, &ChatPanel::send);
  connect(send_, &QPushButton::clicked, this, &ChatPanel::send);
  connect(stop_, &QPushButton::clicked, this, &ChatPanel::stopRequested);
  connect(new_, &QPushButton::clicked, this, &ChatPanel::newChatRequested);
  connect(gear_, &QCheckBox::toggled, this, &ChatPanel::gearToggled);
  connect(compare_, &QCheckBox::toggled, this, &ChatPanel::compareToggled);
}

void ChatPanel::send() {
  const QString text = input_->text();
  if (text.trimmed().isEmpty()) return;
  input_->clear();
  emit sendRequested(text);
}

TurnOptions ChatPanel::turnOptions() const {
  TurnOptions o;
  o.max_new_tokens = max_tokens_->value();
  o.sampling.temperature = float(temperature_->value());
  o.sampling.seed = 42;
  o.chat_template = template_->isChecked();
  return o;
}

// One side's transcript as HTML; in compare mode the reply text from the first differing token on
// is highlighted on both sides.
QString ChatPanel::render(const SessionState& s, int side) const {
  QString html;
  for (const Exchange& e : s.chat) {
    html += "<p style='color:#8ab4f8'><b>You:</b> " + esc(e.user) + "</p><p>";
    const std::string& r = e.reply[side];
    const int cut = e.divergence_char[side];
    if (cut >= 0 && cut <= int(r.size())) {
      html += esc(r.substr(0, size_t(cut)));
      html += "<span style='background:#6b2f2f' title='the two replies differ from here'>" + esc(r.substr(size_t(cut))) + "</span>";
    } else {
      html += esc(r);
    }
    if (!e.done && s.busy) html += " <span style='color:#888'>▍</span>";
    if (e.cancelled) html += " <i style='color:#888'>(stopped)</i>";
    html += "</p>";
  }
  return html;
}

void ChatPanel::setState(std::shared_ptr<const SessionState> state) {
  latest_ = std::move(state);
  const qint64 now = QDateTime::currentMSecsSinceEpoch();
  if (!latest_->busy || now - last_render_ms_ >= 50) return renderNow();
  if (render_scheduled_) return;
  render_scheduled_ = true;
  QTimer::singleShot(int(50 - (now - last_render_ms_)), this, [this] {
    render_scheduled_ = false;
    renderNow();
  });
}

void ChatPanel::renderNow() {
  last_render_ms_ = QDateTime::currentMSecsSinceEpoch();
  const SessionState& s = *latest_;
  pane_[kReference]->setVisible(s.compare || !s.gear_on);
  pane_[kCompressed]->setVisible(s.gear_on);
  title_[kCompressed]->setText("Compressed: " + QString::fromStdString(describe(s.cache)));
  send_->setEnabled(s.model_loaded && !s.busy);
  stop_->setEnabled(s.busy);
  // Most state changes (analysis, live stats) leave the transcript as it was: skip the re-layout.
  uint64_t sig = s.chat.size() * 1000003u + (s.busy ? 7 : 0) + (s.compare ? 11 : 0) + (s.gear_on ? 13 : 0);
  for (const Exchange& e : s.chat)
    sig = sig * 31 + e.reply[0].size() * 17 + e.reply[1].size() + (e.done ? 5 : 0) + uint64_t(e.first_divergence + 1);
  if (sig == rendered_version_) return;
  rendered_version_ = sig;
  for (int side : {0, 1}) {
    QScrollBar* bar = view_[side]->verticalScrollBar();
    const bool at_end = bar->value() >= bar->maximum() - 4;
    view_[side]->setHtml(render(s, side));
    if (at_end) bar->setValue(bar->maximum());
  }
}

}  // namespace gear::ui
