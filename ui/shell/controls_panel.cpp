#include "ui/shell/controls_panel.h"

#include <QComboBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QSlider>
#include <QVBoxLayout>

#include <cmath>

namespace gear::ui {
namespace {

const int kBits[] = {2, 3, 4, 8};
const int kGroups[] = {8, 16, 32, 64, 128, 256};
const char* kMethods[][2] = {{"GEAR (Q + L + S)", "gear"}, {"GEAR-L (Q + L)", "gear-l"}, {"Quant-only", "quant"},
                             {"KIVI", "kivi"},           {"Group-wise", "groupwise"},  {"Uniform", "uniform"},
                             {"Pyramid merge", "pyramid"}, {"StreamingLLM", "streamingllm"}, {"H2O", "h2o"}};

int index_of(const int* values, int n, int64_t v) {
  for (int i = 0; i < n; ++i)
    if (values[i] >= v) return i;
  return n - 1;
}

}  // namespace

ControlsPanel::ControlsPanel(QWidget* parent) : QWidget(parent) {
  auto* form = new QFormLayout;
  preset_ = new QComboBox;
  preset_->addItem("(custom)");
  for (const auto& p : preset_names()) preset_->addItem(QString::fromStdString(p));
  form->addRow("Preset", preset_);
  method_ = new QComboBox;
  for (const auto& m : kMethods) method_->addItem(m[0], m[1]);
  form->addRow("Method", method_);
  backbone_ = new QComboBox;
  for (const char* b : {"kivi", "kcvt", "groupwise", "uniform"}) backbone_->addItem(b, b);
  form->addRow("Backbone", backbone_);
  pool_ = new QComboBox;
  for (const char* p : {"mean", "max", "best"}) pool_->addItem(p, p);
  form->addRow("Pooling", pool_);
  auto* layout = new QVBoxLayout(this);
  layout->addLayout(form);

  addKnob("bits", "Bits", 0, 3, [](int i) { return QString::number(kBits[i]); });
  addKnob("rank", "Rank (prompt)", 0, 8, [](int v) { return QString::number(v); });
  addKnob("block-rank", "Rank (blocks)", 0, 8, [](int v) { return QString::number(v); });
  addKnob("sparsity", "Sparsity", 0, 40, [](int v) { return QString::number(v * 0.5, 'f', 1) + " %"; });
  addKnob("group", "Group size", 0, 5, [](int i) { return QString::number(kGroups[i]); });
  addKnob("stream-gap", "Streaming gap", 1, 256, [](int v) { return QString::number(v); });
  addKnob("beta", "β", 1, 20, [](int v) { return QString::number(v * 0.05, 'f', 2); });
  addKnob("l0", "L0", 16, 512, [](int v) { return QString::number(v); });
  addKnob("sinks", "Sinks", 0, 32, [](int v) { return QString::number(v); });
  addKnob("recent", "Recent window", 1, 256, [](int v) { return QString::number(v); });
  for (const QString& name : order_) {
    Knob& k = knobs_.at(name);
    auto* row = new QHBoxLayout;
    row->addWidget(k.slider, 1);
    row->addWidget(k.value);
    form->addRow(k.slider->toolTip(), row);
  }
  layout->addStretch(1);

  setConfig(preset(kDefaultPreset));
  connect(preset_, qOverload<int>(&QComboBox::activated), this, [this](int i) { presetChosen(i); });
  // A new method brings its paper's defaults into the controls.
  connect(method_, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] {
    if (quiet_) return;
    CacheConfig d;
    set_option(d, "cache", method_->currentData().toString().toStdString());
    setConfig(d);
    emitConfig();
  });
  for (QComboBox* box : {backbone_, pool_})
    connect(box, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] {
      if (quiet_) return;
      preset_->setCurrentIndex(0);
      emitConfig();
    });
}

void ControlsPanel::addKnob(const QString& name, const QString& label, int lo, int hi, std::function<QString(int)> text) {
  Knob k;
  k.slider = new QSlider(Qt::Horizontal);
  k.slider->setRange(lo, hi);
  k.slider->setObjectName(name);
  k.slider->setToolTip(label);
  k.value = new QLabel;
  k.value->setMinimumWidth(56);
  k.text = std::move(text);
  QSlider* s = k.slider;
  QLabel* v = k.value;
  auto fmt = k.text;
  connect(s, &QSlider::valueChanged, this, [this, v, fmt](int x) {
    v->setText(fmt(x));
    if (quiet_) return;
    preset_->setCurrentIndex(0);
    emitConfig();
  });
  knobs_[name] = k;
  order_.push_back(name);
}

QSlider* ControlsPanel::slider(const QString& name) const {
  auto it = knobs_.find(name);
  return it == knobs_.end() ? nullptr : it->second.slider;
}

void ControlsPanel::setHeadDim(int head_dim) {
  for (const char* n : {"rank", "block-rank"}) knobs_.at(n).slider->setMaximum(std::max(1, head_dim));
}

// Method defaults first, then every control that applies to the method.
CacheConfig ControlsPanel::config() const {
  CacheConfig c;
  set_option(c, "cache", method_->currentData().toString().toStdString());
  auto value = [&](const char* n) { return knobs_.at(n).slider->value(); };
  if (c.method == CacheMethod::Quant || c.method == CacheMethod::GearL || c.method == CacheMethod::Gear)
    c.backbone = parse_backbone(backbone_->currentData().toString().toStdString());
  if (c.quantized()) {
    c.bits = kBits[value("bits")];
    c.group = kGroups[value("group")];
    c.stream_gap = value("stream-gap");
  }
  if (c.has_low_rank()) {
    c.prefill_rank_k = c.prefill_rank_v = value("rank");
    c.block_rank_k = c.block_rank_v = value("block-rank");
  }
  if (c.has_sparse()) c.sparsity = value("sparsity") * 0.5;
  c.pyramid.beta = value("beta") * 0.05;
  c.pyramid.l0 = value("l0");
  c.pyramid.sinks = c.eviction.sinks = value("sinks");
  c.pyramid.recent = c.eviction.recent = value("recent");
  c.pyramid.pool = parse_pool(pool_->currentData().toString().toStdString());
  if (c.method == CacheMethod::H2O) c.eviction.sinks = 0, c.eviction.heavy = value("l0") / 2;
  const int pi = preset_->currentIndex();
  if (pi > 0) c.preset = preset_->currentText().toStdString();
  return c;
}

void ControlsPanel::setConfig(const CacheConfig& c) {
  quiet_ = true;
  method_->setCurrentIndex(std::max(0, method_->findData(QString(method_name(c.method)))));
  backbone_->setCurrentIndex(std::max(0, backbone_->findData(QString(backbone_name(c.backbone)))));
  pool_->setCurrentIndex(std::max(0, pool_->findData(QString(pool_name(c.pyramid.pool)))));
  preset_->setCurrentIndex(c.preset.empty() ? 0 : std::max(0, preset_->findText(QString::fromStdString(c.preset))));
  auto set = [&](const char* n, int v) { knobs_.at(n).slider->setValue(v), knobs_.at(n).value->setText(knobs_.at(n).text(knobs_.at(n).slider->value())); };
  set("bits", index_of(kBits, 4, c.bits));
  set("rank", int(c.prefill_rank_k));
  set("block-rank", int(c.block_rank_k));
  set("sparsity", int(std::lround(c.sparsity * 2)));
  set("group", index_of(kGroups, 6, c.group));
  set("stream-gap", int(c.stream_gap));
  set("beta", int(std::lround(c.pyramid.beta / 0.05)));
  set("l0", int(c.pyramid.l0));
  set("sinks", int(c.method == CacheMethod::Pyramid ? c.pyramid.sinks : c.eviction.sinks));
  set("recent", int(c.method == CacheMethod::Pyramid ? c.pyramid.recent : c.eviction.recent));
  quiet_ = false;
  updateEnabled();
}

void ControlsPanel::presetChosen(int index) {
  if (index <= 0) return;
  setConfig(preset(preset_->itemText(index).toStdString()));
  emitConfig();
}

// Only the controls that mean something for the chosen method are enabled.
void ControlsPanel::updateEnabled() {
  CacheConfig c;
  set_option(c, "cache", method_->currentData().toString().toStdString());
  const bool gear_family = c.method == CacheMethod::Quant || c.method == CacheMethod::GearL || c.method == CacheMethod::Gear;
  const bool token_level = c.method == CacheMethod::Pyramid || c.method == CacheMethod::StreamingLLM || c.method == CacheMethod::H2O;
  backbone_->setEnabled(gear_family);
  pool_->setEnabled(c.method == CacheMethod::Pyramid);
  auto enable = [&](const char* n, bool on) { knobs_.at(n).slider->setEnabled(on), knobs_.at(n).value->setEnabled(on); };
  enable("bits", c.quantized());
  enable("group", c.quantized());
  enable("stream-gap", c.quantized());
  enable("rank", c.has_low_rank());
  enable("block-rank", c.has_low_rank());
  enable("sparsity", c.has_sparse());
  enable("beta", c.method == CacheMethod::Pyramid);
  enable("l0", c.method == CacheMethod::Pyramid || c.method == CacheMethod::H2O);
  enable("sinks", token_level && c.method != CacheMethod::H2O);
  enable("recent", token_level);
}

void ControlsPanel::emitConfig() {
  updateEnabled();
  emit configChanged(config());
}

}  // namespace gear::ui
