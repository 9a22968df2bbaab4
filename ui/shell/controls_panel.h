// The compression controls: method, preset, backbone, and sliders for bits, rank, sparsity, group
// size, streaming gap, beta, L0, sinks and recent window. Every change emits the whole CacheConfig;
// the session validates it (an invalid combination comes back as an error line, nothing breaks).
#pragma once
#include <QWidget>

#include "core/compression/cache_config.h"

class QComboBox;
class QLabel;
class QSlider;

namespace gear::ui {

class ControlsPanel : public QWidget {
  Q_OBJECT

 public:
  explicit ControlsPanel(QWidget* parent = nullptr);
  CacheConfig config() const;
  void setConfig(const CacheConfig& c);  // updates the controls without emitting
  void setHeadDim(int head_dim);         // the rank slider's range
  QSlider* slider(const QString& name) const;  // for tests and the smoke test

 signals:
  void configChanged(const gear::CacheConfig& config);

 private:
  struct Knob {
    QSlider* slider = nullptr;
    QLabel* value = nullptr;
    std::function<QString(int)> text;
  };
  void addKnob(const QString& name, const QString& label, int lo, int hi, std::function<QString(int)> text);
  void emitConfig();
  void updateEnabled();
  void presetChosen(int index);

  QComboBox* method_ = nullptr;
  QComboBox* preset_ = nullptr;
  QComboBox* backbone_ = nullptr;
  QComboBox* pool_ = nullptr;
  std::map<QString, Knob> knobs_;
  std::vector<QString> order_;  // the knobs top to bottom
  bool quiet_ = false;
};

}  // namespace gear::ui
