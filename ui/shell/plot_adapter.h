// Turns the engine's immutable session state into the canvas's plain plot structs. The only place
// where ui/ meets core/ types for drawing; the canvas itself knows nothing of the engine.
#pragma once
#include "core/session/session.h"
#include "ui/canvas/plot_data.h"

namespace gear::ui {

LayerErrors layer_errors(const Analysis& a);
// Singular values of one layer's K or V residual, one series per head, the chosen rank marked.
Spectrum spectrum(const Analysis& a, int layer, bool key);
// The outlier map of one layer's K or V: tokens x (kv_heads * head_dim) channels, the exact values of
// S at their positions and 0 elsewhere.
HeatmapData outlier_map(const Analysis& a, int layer, bool key, uint64_t version);
MemoryBreakdown memory(const ByteBreakdown& b, int64_t fp16_bytes, const std::string& label);
// Refills `ts` from the session's history (no allocation once sized).
void fill_time_series(TimeSeries& ts, const std::vector<StatPoint>& history);

}  // namespace gear::ui
