// gearlab-gui: the desktop app. `gearlab-gui [--model PATH]` opens the window;
// `--smoke-test DIR --model PATH` drives the real app end to end (load, prompt, GEAR toggle, a slider,
// export) without a person, saves DIR/screenshot.png of the whole window, and exits 0 only if every
// step worked (CI runs it under xvfb-run).
#include <QApplication>
#include <QCheckBox>
#include <QCommandLineParser>
#include <QDir>
#include <QElapsedTimer>
#include <QFileInfo>
#include <QImage>
#include <QLineEdit>
#include <QPalette>
#include <QSettings>
#include <QStyleFactory>
#include <QSlider>
#include <QSpinBox>
#include <QTimer>

#include <cstdio>
#include <functional>
#include <set>

#include "ui/shell/chat_panel.h"
#include "ui/shell/controls_panel.h"
#include "ui/shell/main_window.h"
#include "ui/shell/viz_canvas.h"

namespace {

// Steps run one after another on the UI thread; each waits (polling) for its condition.
class SmokeTest : public QObject {
 public:
  SmokeTest(gear::ui::MainWindow& w, QString dir, QString model) : w_(w), dir_(std::move(dir)), model_(std::move(model)) {}

  void start() {
    QDir().mkpath(dir_);
    steps_ = {
        {"load the model", [&] { w_.openModel(model_); }, [&] { return st()->model_loaded && !st()->busy; }},
        {"answer a prompt side by side", [&] { send("Once upon a time"); }, [&] { return turn_done(1); }},
        {"answer a long prompt (fps while generating)", [&] {
           w_.chat()->findChild<QSpinBox*>()->setValue(200);
           send(" One day");
         }, [&] { return turn_done(2); }},
        {"answer a third prompt (about 470 tokens in the conversation)", [&] { send(" The little dog"); },
         [&] { return turn_done(3) && st()->analysis && !st()->analyzing; }},
        {"toggle GEAR off and on", [&] { w_.chat()->gearToggle()->setChecked(false); w_.chat()->gearToggle()->setChecked(true); },
         [&] { return st()->gear_on; }},
        {"move the bits slider to 4",
         [&] {
           slider_at_ = clock_.elapsed();
           w_.controls()->slider("bits")->setValue(2);
         },
         [&] {
           if (!(st()->analysis && st()->analysis->config.bits == 4 && !st()->analyzing)) return false;
           // Refreshed = the canvas has drawn a frame with the new analysis.
           if (frames_at_analysis_ == 0) frames_at_analysis_ = w_.canvas()->frameCount();
           if (w_.canvas()->frameCount() <= frames_at_analysis_) return false;
           slider_ms_ = clock_.elapsed() - slider_at_;
           return true;
         }},
        {"export the report", [&] { files_ = w_.exportReport(dir_ + "/report"); }, [&] { return !files_.isEmpty(); }},
        {"render frames", [&] { frames0_ = w_.canvas()->frameCount(); }, [&] { return w_.canvas()->frameCount() > frames0_ + 10; }},
    };
    clock_.start();
    QTimer::singleShot(0, this, [this] { next(); });
  }

 private:
  struct Step {
    const char* what;
    std::function<void()> act;
    std::function<bool()> done;
  };
  std::shared_ptr<const gear::SessionState> st() { return w_.session().state(); }
  void send(const char* text) {
    w_.chat()->input()->setText(text);
    emit w_.chat()->input()->returnPressed();
  }
  bool turn_done(size_t n) { return st()->chat.size() >= n && st()->chat[n - 1].done && !st()->busy; }

  void next() {
    if (i_ == steps_.size()) return finish();
    std::fprintf(stderr, "smoke test: %s\n", steps_[i_].what);
    steps_[i_].act();
    poll_start_ = clock_.elapsed();
    wait();
  }
  void wait() {
    if (st()->error_count > 0 && i_ > 0) return fail("the app reported an error: " + st()->error);
    if (st()->busy) fps_busy_.push_back(w_.canvas()->fps());
    if (steps_[i_].done()) {
      ++i_;
      QTimer::singleShot(50, this, [this] { next(); });
      return;
    }
    if (clock_.elapsed() - poll_start_ > 120000) return fail(std::string("timed out: ") + steps_[i_].what);
    QTimer::singleShot(5, this, [this] { wait(); });
  }
  void finish() {
    const QString png = dir_ + "/screenshot.png";
    const QImage img = w_.grab().toImage();
    std::set<QRgb> colours;
    for (int y = 0; y < img.height(); y += 7)
      for (int x = 0; x < img.width(); x += 7) colours.insert(img.pixel(x, y));
    if (!img.save(png)) return fail("cannot save " + png.toStdString());
    if (colours.size() < 20) return fail("the screenshot is nearly blank");
    for (const char* f : {"session.json", "analysis.json", "report.html", "report.pdf"}) {
      const QFileInfo info(dir_ + "/report/" + f);
      if (!info.exists() || info.size() == 0) return fail(std::string("the export did not write ") + f);
    }
    double busy_fps = 0;
    for (double f : fps_busy_) busy_fps += f / double(fps_busy_.size());
    std::fprintf(stderr,
                 "smoke test: ok (%zu colours, %.0f fps idle, %.0f fps while generating, slider to refreshed plots in "
                 "%lld ms, %d report files) -> %s\n",
                 colours.size(), w_.canvas()->fps(), busy_fps, (long long)slider_ms_, int(files_.size()),
                 png.toUtf8().constData());
    QApplication::exit(0);
  }
  void fail(const std::string& why) {
    std::fprintf(stderr, "smoke test FAILED: %s\n", why.c_str());
    w_.grab().save(dir_ + "/screenshot-failed.png");
    QApplication::exit(1);
  }

  gear::ui::MainWindow& w_;
  QString dir_, model_;
  std::vector<Step> steps_;
  size_t i_ = 0;
  QElapsedTimer clock_;
  qint64 poll_start_ = 0;
  uint64_t frames0_ = 0, frames_at_analysis_ = 0;
  qint64 slider_at_ = 0, slider_ms_ = 0;
  std::vector<double> fps_busy_;  // canvas fps sampled while a turn runs
  QStringList files_;
};

}  // namespace

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setOrganizationName("GEAR Lab");
  QApplication::setApplicationName("gearlab-gui");
  QCommandLineParser cli;
  cli.setApplicationDescription("GEAR Lab: chat with GEAR KV-cache compression and watch it work.");
  cli.addHelpOption();
  QCommandLineOption model({"m", "model"}, "Model to open (llama2.c .bin, HF directory, gen:<shape>).", "PATH");
  QCommandLineOption smoke("smoke-test", "Drive the app end to end, save DIR/screenshot.png and exit.", "DIR");
  cli.addOption(model);
  cli.addOption(smoke);
  cli.process(app);
  if (cli.isSet(smoke)) {  // a run without a person must not read or change the user's settings
    QSettings::setDefaultFormat(QSettings::IniFormat);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, cli.value(smoke) + "/settings");
  }
  // A dark theme that matches the canvas.
  QApplication::setStyle(QStyleFactory::create("Fusion"));
  QPalette p;
  p.setColor(QPalette::Window, QColor(37, 37, 40));
  p.setColor(QPalette::WindowText, QColor(220, 220, 220));
  p.setColor(QPalette::Base, QColor(28, 28, 30));
  p.setColor(QPalette::AlternateBase, QColor(45, 45, 48));
  p.setColor(QPalette::Text, QColor(225, 225, 225));
  p.setColor(QPalette::Button, QColor(50, 50, 54));
  p.setColor(QPalette::ButtonText, QColor(225, 225, 225));
  p.setColor(QPalette::Highlight, QColor(66, 133, 244));
  p.setColor(QPalette::HighlightedText, Qt::white);
  p.setColor(QPalette::ToolTipBase, QColor(50, 50, 54));
  p.setColor(QPalette::ToolTipText, QColor(230, 230, 230));
  p.setColor(QPalette::Disabled, QPalette::Text, QColor(120, 120, 120));
  p.setColor(QPalette::Disabled, QPalette::WindowText, QColor(120, 120, 120));
  p.setColor(QPalette::Disabled, QPalette::ButtonText, QColor(120, 120, 120));
  QApplication::setPalette(p);
  gear::ui::MainWindow w;
  w.resize(1500, 950);
  w.show();
  std::unique_ptr<SmokeTest> test;
  if (cli.isSet(smoke)) {
    if (!cli.isSet(model)) {
      std::fprintf(stderr, "gearlab-gui: --smoke-test needs --model PATH\n");
      return 2;
    }
    test = std::make_unique<SmokeTest>(w, cli.value(smoke), cli.value(model));
    test->start();
  } else if (cli.isSet(model)) {
    w.openModel(cli.value(model));
  }
  return app.exec();
}
