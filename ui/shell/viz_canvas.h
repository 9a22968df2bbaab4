// The live visualization canvas: the Dear ImGui plots of the current session state (errors by
// component, residual spectra, outlier map, memory, live throughput). It renders whatever state it
// was last handed and never calls into the engine.
#pragma once
#include <memory>

#include "core/session/session.h"
#include "ui/canvas/imgui_widget.h"
#include "ui/canvas/plot_data.h"

namespace gear::ui {

class VizCanvas : public ImGuiWidget {
  Q_OBJECT

 public:
  explicit VizCanvas(QWidget* parent = nullptr);
  void setState(std::shared_ptr<const SessionState> state);

 protected:
  void draw() override;

 private:
  void drawErrors();
  void drawSpectra();
  void drawOutliers();
  void drawMemory();
  void drawLive();
  void drawHeader();

  std::shared_ptr<const SessionState> state_;
  const Analysis* shown_ = nullptr;  // the analysis the cached plot data below was built from
  LayerErrors errors_;
  HeatmapData heatmap_;
  TimeSeries series_{600};
  uint64_t series_version_ = 0, heatmap_version_ = 0;
  int layer_ = 0, heat_layer_ = -1;
  bool key_ = true, heat_key_ = true;
};

}  // namespace gear::ui
