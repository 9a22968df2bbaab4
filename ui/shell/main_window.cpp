#include "ui/shell/main_window.h"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QCloseEvent>
#include <QDockWidget>
#include <QFileDialog>
#include <QKeySequence>
#include <QLabel>
#include <QLineEdit>
#include <QMenuBar>
#include <QScrollArea>
#include <QSettings>
#include <QShortcut>
#include <QSplitter>
#include <QStatusBar>
#include <QTimer>
#include <QVBoxLayout>

#include <nlohmann/json.hpp>

#include "app/pdf_export.h"
#include "core/report/report.h"
#include "ui/shell/chat_panel.h"
#include "ui/shell/controls_panel.h"
#include "ui/shell/viz_canvas.h"

namespace gear::ui {

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent), session_(std::make_unique<Session>()) {
  setWindowTitle("GEAR Lab");
  auto* central = new QWidget;
  auto* layout = new QVBoxLayout(central);
  layout->setContentsMargins(6, 6, 6, 6);
  banner_ = new QLabel;
  banner_->setObjectName("error_banner");
  banner_->setStyleSheet("background:#7a2323; color:white; padding:6px; border-radius:4px");
  banner_->setWordWrap(true);
  banner_->hide();
  layout->addWidget(banner_);
  split_ = new QSplitter(Qt::Vertical);
  chat_ = new ChatPanel;
  canvas_ = new VizCanvas;
  canvas_->setMinimumHeight(320);
  split_->addWidget(chat_);
  split_->addWidget(canvas_);
  split_->setStretchFactor(0, 2);
  split_->setStretchFactor(1, 3);
  layout->addWidget(split_, 1);
  setCentralWidget(central);

  controls_ = new ControlsPanel;
  auto* dock = new QDockWidget("Compression", this);
  dock->setObjectName("controls_dock");
  auto* scroll = new QScrollArea;
  scroll->setWidget(controls_);
  scroll->setWidgetResizable(true);
  dock->setWidget(scroll);
  addDockWidget(Qt::RightDockWidgetArea, dock);

  status_ = new QLabel("Open a model: File > Open model (Ctrl+O)");
  statusBar()->addWidget(status_, 1);
  buildMenus();

  connect(chat_, &ChatPanel::sendRequested, this,
          [this](const QString& t) { session_->send(t.toStdString(), chat_->turnOptions()); });
  connect(chat_, &ChatPanel::stopRequested, this, [this] { session_->cancel(); });
  connect(chat_, &ChatPanel::newChatRequested, this, [this] { session_->new_chat(); });
  connect(chat_, &ChatPanel::gearToggled, this, [this](bool on) { session_->set_gear(on); });
  connect(chat_, &ChatPanel::compareToggled, this, [this](bool on) { session_->set_compare(on); });
  connect(controls_, &ControlsPanel::configChanged, this, [this](const CacheConfig& c) {
    session_->set_cache(c);
    QSettings().setValue("cacheConfig", QString::fromStdString(to_json(c).dump()));
  });
  new QShortcut(QKeySequence(Qt::Key_Escape), this, [this] { session_->cancel(); });
  new QShortcut(QKeySequence("Ctrl+N"), this, [this] { session_->new_chat(); });
  new QShortcut(QKeySequence("Ctrl+Return"), this, [this] { emit chat_->input()->returnPressed(); });

  // The session calls back on its worker threads: coalesce into one queued repaint of the UI.
  session_->set_listener([this] {
    if (!pending_.exchange(true)) QMetaObject::invokeMethod(this, "onState", Qt::QueuedConnection);
  });
  // Export = the same report code as `gearlab report`: HTML + CSV + PDF from the analysis JSON.
  session_->set_report_writer([](const std::vector<std::string>& json, const std::string& dir) {
    std::vector<std::string> out;
    const std::vector<std::string> inputs(json.begin() + 1, json.end());  // session.json is the transcript
    if (inputs.empty()) return out;
    const report::Document doc = report::build_document(report::load_report_inputs(inputs));
    out.push_back(dir + "/report.html");
    report::write_file(out.back(), report::render_html(doc));
    for (const auto& f : report::write_csvs(doc, dir)) out.push_back(f);
    if (report::pdf_supported()) {
      out.push_back(dir + "/report.pdf");
      report::write_pdf(doc, out.back());
    }
    return out;
  });
  restoreSettings();
  onState();
}

MainWindow::~MainWindow() { session_->set_listener({}); }

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu("&File");
  file->addAction("&Open model file...", QKeySequence::Open, this, [this] {
    const QString p = QFileDialog::getOpenFileName(this, "Open a llama2.c model", QString(), "llama2.c models (*.bin);;All files (*)");
    if (!p.isEmpty()) openModel(p);
  });
  file->addAction("Open &Hugging Face directory...", this, [this] {
    const QString p = QFileDialog::getExistingDirectory(this, "Open a Hugging Face Llama directory");
    if (!p.isEmpty()) openModel(p);
  });
  recent_ = file->addMenu("&Recent models");
  file->addSeparator();
  file->addAction("&Export report...", QKeySequence("Ctrl+E"), this, [this] {
    const QString d = QFileDialog::getExistingDirectory(this, "Export the report into");
    if (!d.isEmpty()) exportReport(d);
  });
  file->addSeparator();
  file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);

  QMenu* model = menuBar()->addMenu("&Model");
  auto* devices = new QActionGroup(this);
  for (const char* d : {"cpu", "cuda"}) {
    QAction* a = model->addAction(QString("Device: ") + d, this, [this, d] { device_ = d, QSettings().setValue("device", device_); });
    a->setCheckable(true);
    a->setChecked(device_ == d);
    a->setData(d);
    devices->addAction(a);
  }
  model->addSeparator();
  auto* dtypes = new QActionGroup(this);
  for (const char* t : {"auto", "f32", "f16", "bf16"}) {
    QAction* a = model->addAction(QString("Dtype: ") + t, this, [this, t] { dtype_ = t, QSettings().setValue("dtype", dtype_); });
    a->setCheckable(true);
    a->setChecked(dtype_ == t);
    dtypes->addAction(a);
  }
}

void MainWindow::restoreSettings() {
  QSettings s;
  restoreGeometry(s.value("geometry").toByteArray());
  restoreState(s.value("windowState").toByteArray());
  split_->restoreState(s.value("splitter").toByteArray());
  device_ = s.value("device", "cpu").toString();
  dtype_ = s.value("dtype", "auto").toString();
  const QString cache = s.value("cacheConfig").toString();
  if (!cache.isEmpty()) {
    try {  // settings saved by an older build may no longer parse: fall back to the default
      const CacheConfig c = config_from_json(nlohmann::json::parse(cache.toStdString()));
      controls_->setConfig(c);
      session_->set_cache(c);
    } catch (const std::exception&) {
    }
  }
  rebuildRecent();
}

void MainWindow::closeEvent(QCloseEvent* e) {
  QSettings s;
  s.setValue("geometry", saveGeometry());
  s.setValue("windowState", saveState());
  s.setValue("splitter", split_->saveState());
  session_->cancel();
  QMainWindow::closeEvent(e);
}

void MainWindow::openModel(const QString& path) {
  ModelRequest r;
  r.model_path = path.toStdString();
  r.device = device_.toStdString();
  r.dtype = dtype_.toStdString();
  session_->load_model(r);
  rememberModel(path);
}

void MainWindow::rememberModel(const QString& path) {
  QSettings s;
  QStringList recent = s.value("recentModels").toStringList();
  recent.removeAll(path);
  recent.prepend(path);
  while (recent.size() > 8) recent.removeLast();
  s.setValue("recentModels", recent);
  rebuildRecent();
}

void MainWindow::rebuildRecent() {
  recent_->clear();
  for (const QString& p : QSettings().value("recentModels").toStringList())
    recent_->addAction(p, this, [this, p] { openModel(p); });
  recent_->setEnabled(!recent_->isEmpty());
}

QStringList MainWindow::exportReport(const QString& dir) {
  QStringList out;
  try {
    for (const auto& f : session_->export_report(dir.toStdString())) out << QString::fromStdString(f);
    status_->setText("Report written: " + out.join(", "));
  } catch (const std::exception& e) {
    showError(QString::fromStdString(e.what()));
  }
  return out;
}

void MainWindow::showError(const QString& message) {
  banner_->setText(message);
  banner_->show();
  // An error stays visible until the next action succeeds or 12 s pass.
  QTimer::singleShot(12000, banner_, [b = banner_, message] {
    if (b->text() == message) b->hide();
  });
}

void MainWindow::onState() {
  pending_ = false;
  const auto s = session_->state();
  if (s->error_count > errors_seen_) {
    errors_seen_ = s->error_count;
    if (!s->error.empty()) showError(QString::fromStdString(s->error));
  }
  if (s->model_loaded && s->model.config.hd() != head_dim_) {
    head_dim_ = s->model.config.hd();
    controls_->setHeadDim(head_dim_);
  }
  chat_->setState(s);
  const bool new_analysis = s->analysis != analysis_shown_;
  analysis_shown_ = s->analysis;
  canvas_->setState(s);
  if (new_analysis) canvas_->update();  // draw the new plots now, not at the next timer tick
  QString text;
  if (s->busy) text = QString::fromStdString(s->busy_what) + "...";
  else if (s->model_loaded) text = QString::fromStdString(s->model.path + " | " + s->model.device + " " + s->model.dtype);
  else text = "Open a model: File > Open model (Ctrl+O)";
  const LiveStats& l = s->live[kCompressed];
  if (l.tokens > 0)
    text += QString(" | %1 tok/s | cache %2 KiB, %3x smaller than FP16")
                .arg(l.tokens_per_s, 0, 'f', 0)
                .arg(l.bytes.in_use() / 1024.0, 0, 'f', 1)
                .arg(l.ratio_vs_fp16(), 0, 'f', 2);
  status_->setText(text);
}

}  // namespace gear::ui
