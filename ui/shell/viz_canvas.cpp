#include "ui/shell/viz_canvas.h"

#include <imgui.h>

#include <algorithm>

#include "ui/canvas/plots.h"
#include "ui/shell/plot_adapter.h"

namespace gear::ui {

VizCanvas::VizCanvas(QWidget* parent) : ImGuiWidget(parent) {}

void VizCanvas::setState(std::shared_ptr<const SessionState> state) { state_ = std::move(state); }

void VizCanvas::draw() {
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  ImGui::SetNextWindowPos(vp->WorkPos);
  ImGui::SetNextWindowSize(vp->WorkSize);
  ImGui::Begin("##viz", nullptr,
               ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings |
                   ImGuiWindowFlags_NoBringToFrontOnFocus);
  drawHeader();
  if (ImGui::BeginTabBar("tabs")) {
    if (ImGui::BeginTabItem("Errors")) drawErrors(), ImGui::EndTabItem();
    if (ImGui::BeginTabItem("Spectra")) drawSpectra(), ImGui::EndTabItem();
    if (ImGui::BeginTabItem("Outliers")) drawOutliers(), ImGui::EndTabItem();
    if (ImGui::BeginTabItem("Memory")) drawMemory(), ImGui::EndTabItem();
    if (ImGui::BeginTabItem("Live")) drawLive(), ImGui::EndTabItem();
    ImGui::EndTabBar();
  }
  ImGui::End();
}

// One line: what is analysed, how stale, the frame rate.
void VizCanvas::drawHeader() {
  const Analysis* a = state_ && state_->analysis ? state_->analysis.get() : nullptr;
  if (a && a != shown_) {  // new analysis: rebuild the derived plot data once
    shown_ = a;
    errors_ = layer_errors(*a);
    ++heatmap_version_;
  }
  if (!a) shown_ = nullptr;
  if (!state_ || !state_->model_loaded) ImGui::TextDisabled("Open a model (File > Open) and send a prompt.");
  else if (!a && state_->cache.quantized()) ImGui::TextDisabled("Send a prompt: the analysis runs on the conversation's K/V.");
  else if (!a) ImGui::TextDisabled("%s keeps whole tokens: no quantization to decompose (see Memory and Live).",
                                   method_name(state_->cache.method));
  else
    ImGui::Text("%s | %lld tokens (%lld compressed) | %.1f ms | %.2fx smaller than FP16", describe(a->config).c_str(),
                (long long)a->tokens, (long long)a->compressed_tokens, a->seconds * 1e3, a->ratio_vs_fp16());
  if (state_ && state_->analyzing) ImGui::SameLine(), ImGui::TextDisabled("(updating...)");
  ImGui::SameLine(ImGui::GetWindowWidth() - 90);
  ImGui::TextDisabled("%.0f fps", fps());
}

void VizCanvas::drawErrors() {
  if (!shown_) return;
  plot::layer_errors("layer_errors", errors_);
}

void VizCanvas::drawSpectra() {
  if (!shown_) return;
  const int n = int(shown_->layers.size());
  ImGui::SetNextItemWidth(200);
  ImGui::SliderInt("layer", &layer_, 0, std::max(0, n - 1));
  ImGui::SameLine();
  if (ImGui::RadioButton("keys", key_)) key_ = true;
  ImGui::SameLine();
  if (ImGui::RadioButton("values", !key_)) key_ = false;
  layer_ = std::clamp(layer_, 0, std::max(0, n - 1));
  plot::spectrum("spectrum", spectrum(*shown_, layer_, key_));
}

void VizCanvas::drawOutliers() {
  if (!shown_) return;
  const int n = int(shown_->layers.size());
  ImGui::SetNextItemWidth(200);
  ImGui::SliderInt("layer##o", &layer_, 0, std::max(0, n - 1));
  ImGui::SameLine();
  if (ImGui::RadioButton("keys##o", key_)) key_ = true;
  ImGui::SameLine();
  if (ImGui::RadioButton("values##o", !key_)) key_ = false;
  layer_ = std::clamp(layer_, 0, std::max(0, n - 1));
  if (heat_layer_ != layer_ || heat_key_ != key_ || heatmap_.version != heatmap_version_) {
    heat_layer_ = layer_, heat_key_ = key_;
    heatmap_ = outlier_map(*shown_, layer_, key_, ++heatmap_version_);
  }
  if (shown_->config.has_sparse() || shown_->config.sparsity > 0) plot::heatmap("outliers", heatmap_, textures());
  else ImGui::TextDisabled("sparsity is 0: no outliers");
}

void VizCanvas::drawMemory() {
  if (!state_) return;
  const LiveStats& live = state_->live[kCompressed];
  if (live.tokens > 0) {
    ImGui::Text("The compressed side's cache now (%lld tokens)", (long long)live.tokens);
    plot::memory_breakdown("live_memory", memory(live.bytes, live.fp16_bytes, describe(state_->cache)), {0, 150});
  }
  if (shown_) {
    ImGui::Text("The analysed snapshot with the current settings");
    plot::memory_breakdown("analysis_memory", memory(shown_->bytes, shown_->fp16_bytes, describe(shown_->config)), {0, 150});
  }
}

void VizCanvas::drawLive() {
  if (!state_) return;
  if (state_->version != series_version_) {
    series_version_ = state_->version;
    fill_time_series(series_, state_->history);
  }
  ImGui::Text("compressed side: %.0f tokens/s | reference: %.0f tokens/s", state_->live[kCompressed].tokens_per_s,
              state_->live[kReference].tokens_per_s);
  plot::throughput("live", series_);
}

}  // namespace gear::ui
