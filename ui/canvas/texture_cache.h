// OpenGL textures for the heatmaps, one per plot id, owned by an ImGuiWidget (one per GL
// context). A texture is uploaded (glTexImage2D) only when something it shows changes: a new
// HeatmapData::version, buffer or shape, other colour options, or another pooling factor.
// Pooling: a matrix with more cells than the plot has pixels (4096 tokens in 1000 pixels) is
// reduced on upload by a power of two per axis, each texel keeping the value of largest |x| in
// its block, so outliers stay visible where GPU filtering would average them away; the factor
// changes only when the plot's size crosses a power of two. Every call needs the widget's GL
// context current, which it is inside ImGuiWidget::draw().
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include <imgui.h>

#include "canvas/plot_data.h"
#include "canvas/plot_math.h"

namespace gear::ui {

// How a HeatmapData becomes colours.
struct HeatmapStyle {
  plot::Colormap colormap = plot::Colormap::Viridis;
  bool abs_values = false;  // colour |x| (outlier maps)
  bool tokens_on_x = true;  // tokens left to right, channels top to bottom
  float lo = 0, hi = 0;     // colour range; lo >= hi: from the data (symmetric for Diverging)
};

class TextureCache {
 public:
  struct Texture {
    ImTextureID id = nullptr;  // for ImGui::Image / ImDrawList::AddImage
    int width = 0, height = 0; // texels
    int pool_x = 1, pool_y = 1; // cells per texel along x and y
    float lo = 0, hi = 0;      // the colour range the texture was made with
  };

  TextureCache() = default;
  TextureCache(const TextureCache&) = delete;
  TextureCache& operator=(const TextureCache&) = delete;
  ~TextureCache();  // leaks (with a warning) textures not released while the context was current

  // The texture of plot `key` showing `data` in `style` on a plot of `pixels` (device pixels;
  // 0 = no limit), uploaded first if anything changed.
  const Texture& heatmap(ImGuiID key, const HeatmapData& data, const HeatmapStyle& style,
                         ImVec2 pixels = ImVec2(0, 0));

  void release();                           // deletes every texture (GL context current)
  int64_t uploads() const { return uploads_; }  // glTexImage2D calls since creation
  int size() const { return static_cast<int>(entries_.size()); }

 private:
  struct Entry {
    Texture tex;
    unsigned gl_name = 0;
    // What the texture was made from.
    const float* source = nullptr;
    uint64_t version = 0;
    int rows = -1, cols = -1;
    HeatmapStyle style;
    std::vector<uint32_t> staging;  // RGBA pixels, reused between uploads
  };
  void upload(Entry& e, const HeatmapData& data, const HeatmapStyle& style, int pool_x, int pool_y);

  std::unordered_map<ImGuiID, Entry> entries_;
  int64_t uploads_ = 0;
  int max_size_ = 0;  // GL_MAX_TEXTURE_SIZE, read on first use
};

}  // namespace gear::ui
