#include "canvas/texture_cache.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <QOpenGLContext>
#include <QOpenGLFunctions>

namespace gear::ui {

namespace {

bool same_style(const HeatmapStyle& a, const HeatmapStyle& b) {
  return a.colormap == b.colormap && a.abs_values == b.abs_values &&
         a.tokens_on_x == b.tokens_on_x && a.lo == b.lo && a.hi == b.hi;
}

// The colour range: the style's when given, else from the data (symmetric for Diverging,
// [0, max |x|] for abs maps).
void colour_range(const HeatmapData& d, const HeatmapStyle& s, float& lo, float& hi) {
  if (s.lo < s.hi) { lo = s.lo; hi = s.hi; return; }
  if (!plot::finite_range(d.values.data(), d.values.size(), lo, hi)) { lo = 0; hi = 1; }
  const float m = std::max(std::fabs(lo), std::fabs(hi));
  if (s.abs_values) { lo = 0; hi = m; }
  else if (s.colormap == plot::Colormap::Diverging) { lo = -m; hi = m; }
  if (!(hi > lo)) hi = lo + 1;
}

}  // namespace

TextureCache::~TextureCache() {
  // Textures not released here die with their GL context (QOpenGLWidget owns it), so nothing is
  // deleted without a current context; ImGuiWidget calls release() while its context is current.
}

// The smallest power of two p with cells / p <= limit (limit < 1: no limit).
static int pool_factor(int cells, float limit) {
  int p = 1;
  while (limit >= 1 && cells > p * limit) p *= 2;
  return p;
}

const TextureCache::Texture& TextureCache::heatmap(ImGuiID key, const HeatmapData& data,
                                                   const HeatmapStyle& style, ImVec2 pixels) {
  if (max_size_ == 0) {
    if (QOpenGLContext* ctx = QOpenGLContext::currentContext()) {
      ctx->functions()->glGetIntegerv(GL_MAX_TEXTURE_SIZE, &max_size_);
    }
    if (max_size_ <= 0) max_size_ = 4096;
  }
  // Texture x runs over tokens (or channels): never more texels than pixels, nor than GL allows.
  const int src_w = style.tokens_on_x ? data.rows : data.cols;
  const int src_h = style.tokens_on_x ? data.cols : data.rows;
  const float lim = static_cast<float>(max_size_);
  const int px = pool_factor(src_w, pixels.x >= 1 ? std::min(pixels.x, lim) : lim);
  const int py = pool_factor(src_h, pixels.y >= 1 ? std::min(pixels.y, lim) : lim);

  Entry& e = entries_[key];  // allocates once per plot id, never per frame
  if (e.gl_name == 0 || e.source != data.values.data() || e.version != data.version ||
      e.rows != data.rows || e.cols != data.cols || !same_style(e.style, style) ||
      e.tex.pool_x != px || e.tex.pool_y != py) {
    upload(e, data, style, px, py);
  }
  return e.tex;
}

void TextureCache::upload(Entry& e, const HeatmapData& d, const HeatmapStyle& s, int sx, int sy) {
  QOpenGLContext* ctx = QOpenGLContext::currentContext();
  if (!ctx || d.rows <= 0 || d.cols <= 0 ||
      d.values.size() < static_cast<size_t>(d.rows) * static_cast<size_t>(d.cols)) {
    e.tex = Texture{};
    return;
  }
  QOpenGLFunctions* gl = ctx->functions();

  // Each texel keeps the value of largest |x| in its sx x sy block.
  const int src_w = s.tokens_on_x ? d.rows : d.cols;
  const int src_h = s.tokens_on_x ? d.cols : d.rows;
  const int w = (src_w + sx - 1) / sx, h = (src_h + sy - 1) / sy;
  float lo, hi;
  colour_range(d, s, lo, hi);

  e.staging.resize(static_cast<size_t>(w) * h);  // grows only when a larger matrix arrives
  const float scale = 1.0f / (hi - lo);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      float v = NAN;
      for (int by = y * sy; by < std::min((y + 1) * sy, src_h); ++by) {
        for (int bx = x * sx; bx < std::min((x + 1) * sx, src_w); ++bx) {
          const float u = s.tokens_on_x ? d.at(bx, by) : d.at(by, bx);
          if (std::isfinite(u) && !(std::fabs(u) <= std::fabs(v))) v = u;
        }
      }
      if (s.abs_values) v = std::fabs(v);
      e.staging[static_cast<size_t>(y) * w + x] =
          std::isfinite(v) ? plot::colormap(s.colormap, (v - lo) * scale) : 0xff3c3c3cu;  // NaN: grey
    }
  }

  GLint previous = 0;
  gl->glGetIntegerv(GL_TEXTURE_BINDING_2D, &previous);
  if (e.gl_name == 0) gl->glGenTextures(1, &e.gl_name);
  gl->glBindTexture(GL_TEXTURE_2D, e.gl_name);
  // Pooling keeps texels <= pixels, so the texture is only ever magnified: crisp cells.
  gl->glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
  gl->glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
  gl->glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_CLAMP_TO_EDGE);
  gl->glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_CLAMP_TO_EDGE);
  gl->glPixelStorei(GL_UNPACK_ALIGNMENT, 4);
  gl->glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, w, h, 0, GL_RGBA, GL_UNSIGNED_BYTE, e.staging.data());
  gl->glBindTexture(GL_TEXTURE_2D, static_cast<GLuint>(previous));
  ++uploads_;

  e.tex.id = reinterpret_cast<ImTextureID>(static_cast<intptr_t>(e.gl_name));
  e.tex.width = w;
  e.tex.height = h;
  e.tex.pool_x = sx;
  e.tex.pool_y = sy;
  e.tex.lo = lo;
  e.tex.hi = hi;
  e.source = d.values.data();
  e.version = d.version;
  e.rows = d.rows;
  e.cols = d.cols;
  e.style = s;
}

void TextureCache::release() {
  QOpenGLContext* ctx = QOpenGLContext::currentContext();
  if (ctx) {
    for (auto& [key, e] : entries_) {
      if (e.gl_name != 0) ctx->functions()->glDeleteTextures(1, &e.gl_name);
    }
  }
  entries_.clear();
}

}  // namespace gear::ui
