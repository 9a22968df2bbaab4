// Plain data the canvas plots draw. The session (or the demo) fills these structs and hands them
// to the UI thread as immutable copies; nothing here knows about tensors, caches or the engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gear::ui {

// Reconstruction error of one side (K or V) of the cache, one value per layer for each way of
// compressing it: uniform quantization only, quantization + sparse outliers, quantization +
// low-rank, and GEAR (all three). All four vectors have one entry per layer.
struct ComponentErrors {
  std::vector<float> quant, sparse, lowrank, gear;
  int layers() const { return static_cast<int>(quant.size()); }
};

struct LayerErrors {
  ComponentErrors key, value;
  std::string metric = "relative error";  // what the numbers are (y-axis label)
};

// Singular values of a (residual) matrix, one series per head, each in descending order.
struct Spectrum {
  int heads = 0;
  int count = 0;               // singular values per head
  std::vector<float> values;   // [heads][count], row-major
  int rank = 0;                // the chosen low rank r: a marker at x = r (0: no marker)
  std::string title = "singular values";
  float at(int head, int i) const { return values[static_cast<size_t>(head) * count + i]; }
};

// A float matrix shown as a colour-mapped image: rows are tokens, columns channels.
struct HeatmapData {
  int rows = 0, cols = 0;
  std::vector<float> values;   // rows x cols, row-major
  // Bump whenever `values` change: the GPU texture is re-uploaded only when the version (or the
  // buffer, shape or colour options) differs from the last upload.
  uint64_t version = 0;
  std::string title = "heatmap";
  std::string row_label = "token", col_label = "channel", value_label = "value";
  float at(int r, int c) const { return values[static_cast<size_t>(r) * cols + c]; }
};

// Bytes of a compressed cache by component, against the same tokens in an FP16 cache.
struct MemoryBreakdown {
  std::string label = "GEAR";
  int64_t codes = 0;           // packed quantization codes
  int64_t scales = 0;          // scales and zero points
  int64_t sparse = 0;          // outlier values + indices
  int64_t low_rank = 0;        // low-rank factors
  int64_t fp16_buffer = 0;     // recent tokens kept in full precision (streaming buffer)
  int64_t fp16_reference = 0;  // what an FP16 cache needs for the same tokens
  int64_t total() const { return codes + scales + sparse + low_rank + fp16_buffer; }
  double ratio() const {       // total / FP16 (0 when there is no reference)
    return fp16_reference > 0 ? static_cast<double>(total()) / fp16_reference : 0.0;
  }
};

// Live throughput and memory, a rolling window of the last `capacity` samples. push() never
// allocates: the buffers are sized once, the oldest sample is overwritten when full.
class TimeSeries {
 public:
  explicit TimeSeries(int capacity = 600)
      : t_(capacity > 0 ? capacity : 1), tps_(t_.size()), mem_(t_.size()) {}
  // t: seconds since the start; tokens_per_s; memory_ratio: compressed bytes / FP16 bytes.
  void push(double t, float tokens_per_s, float memory_ratio) {
    const int cap = capacity();
    const int slot = (head_ + count_) % cap;
    t_[slot] = t;
    tps_[slot] = tokens_per_s;
    mem_[slot] = memory_ratio;
    if (count_ < cap) ++count_; else head_ = (head_ + 1) % cap;
    ++version_;
  }
  void clear() { head_ = count_ = 0; ++version_; }
  int size() const { return count_; }
  int capacity() const { return static_cast<int>(t_.size()); }
  uint64_t version() const { return version_; }
  // i = 0 is the oldest sample kept, size() - 1 the newest.
  double time(int i) const { return t_[index(i)]; }
  float tokens_per_s(int i) const { return tps_[index(i)]; }
  float memory_ratio(int i) const { return mem_[index(i)]; }

 private:
  size_t index(int i) const { return static_cast<size_t>((head_ + i) % capacity()); }
  std::vector<double> t_;
  std::vector<float> tps_, mem_;
  int head_ = 0, count_ = 0;
  uint64_t version_ = 0;
};

}  // namespace gear::ui
