#include "ui/shell/plot_adapter.h"

#include <algorithm>

namespace gear::ui {

LayerErrors layer_errors(const Analysis& a) {
  LayerErrors e;
  e.metric = "relative error ||X - X^|| / ||X||";
  for (const LayerAnalysis& l : a.layers) {
    for (auto [side, out] : {std::pair{&l.k, &e.key}, std::pair{&l.v, &e.value}}) {
      out->quant.push_back(float(side->error.quant));
      out->sparse.push_back(float(side->error.sparse));
      out->lowrank.push_back(float(side->error.lowrank));
      out->gear.push_back(float(side->error.gear));
    }
  }
  return e;
}

Spectrum spectrum(const Analysis& a, int layer, bool key) {
  Spectrum s;
  if (layer < 0 || layer >= int(a.layers.size())) return s;
  const SideAnalysis& side = key ? a.layers[size_t(layer)].k : a.layers[size_t(layer)].v;
  s.heads = int(side.heads.size());
  s.count = side.heads.empty() ? 0 : int(side.heads[0].spectrum.size());
  for (const HeadAnalysis& h : side.heads) s.values.insert(s.values.end(), h.spectrum.begin(), h.spectrum.end());
  s.rank = int(side.rank);
  s.title = std::string("residual singular values, layer ") + std::to_string(layer) + (key ? " K" : " V");
  return s;
}

HeatmapData outlier_map(const Analysis& a, int layer, bool key, uint64_t version) {
  HeatmapData h;
  h.version = version;
  if (layer < 0 || layer >= int(a.layers.size()) || a.layers.empty()) return h;
  const SideAnalysis& side = key ? a.layers[size_t(layer)].k : a.layers[size_t(layer)].v;
  const OutlierMap& m = side.outliers;
  h.rows = int(a.tokens);
  h.cols = a.n_kv_heads * a.head_dim;  // the hidden K/V vector: head * head_dim + dim
  if (h.cols == 0 || h.rows == 0) return h;
  h.values.assign(size_t(h.rows) * size_t(h.cols), 0.0f);
  for (size_t i = 0; i < m.value.size(); ++i)
    if (m.token[i] < h.rows && m.channel[i] < h.cols) h.values[size_t(m.token[i]) * size_t(h.cols) + size_t(m.channel[i])] = m.value[i];
  h.title = std::string("outliers kept exactly, layer ") + std::to_string(layer) + (key ? " K" : " V") + " (" +
            std::to_string(m.value.size()) + " entries)";
  h.value_label = "exact value";
  return h;
}

MemoryBreakdown memory(const ByteBreakdown& b, int64_t fp16_bytes, const std::string& label) {
  MemoryBreakdown m;
  m.label = label;
  m.codes = b.codes, m.scales = b.scales, m.sparse = b.sparse, m.low_rank = b.low_rank, m.fp16_buffer = b.full;
  m.fp16_reference = fp16_bytes;
  return m;
}

void fill_time_series(TimeSeries& ts, const std::vector<StatPoint>& history) {
  ts.clear();
  const size_t first = history.size() > size_t(ts.capacity()) ? history.size() - size_t(ts.capacity()) : 0;
  for (size_t i = first; i < history.size(); ++i) {
    const StatPoint& p = history[i];
    ts.push(p.seconds, float(p.tokens_per_s[kCompressed]), p.ratio_vs_fp16 > 0 ? float(1.0 / p.ratio_vs_fp16) : 0.0f);
  }
}

}  // namespace gear::ui
