#pragma once
// The KV cache as an interface: one CachePolicy per layer decides how K/V are stored and how
// attention reads them. The full-precision cache ships first; GEAR, KIVI, pyramid merging and
// token eviction plug in behind the same calls (a policy may reconstruct K/V and call
// standard attention, or run its own kernel on compressed storage).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace gear {

// Exact bytes a cache holds, by component (GEAR's parts are named now so every policy reports
// the same breakdown). `reserved` is what is allocated, which may exceed what is in use.
struct ByteBreakdown {
  int64_t full = 0;            // full-precision K/V (FP16/FP32 cache, or a streaming buffer)
  int64_t codes = 0;           // packed quantization codes
  int64_t scales = 0;          // quantization scales and zero points
  int64_t sparse = 0;          // outlier values + indices
  int64_t low_rank = 0;        // low-rank factors
  int64_t reserved = 0;        // allocated capacity (>= in use)
  int64_t in_use() const { return full + codes + scales + sparse + low_rank; }
  ByteBreakdown& operator+=(const ByteBreakdown& o);
};

// What one forward call is doing; the same for every layer of that call.
struct StepInfo {
  enum class Kind { Prefill, Decode } kind = Kind::Prefill;
  // Prefill: a chunk of `n_new` tokens of sequence `row`, the first at position `start`.
  int row = 0;
  int64_t start = 0;
  int64_t n_new = 0;
  // Decode: one new token for every row; `positions` [B] int64 on the model's device holds
  // each row's new position (so the GPU never waits for the host); `max_len` is the host's
  // bound on max(position)+1, used to size views without reading the device.
  at::Tensor positions;
  int64_t max_len = 0;
};

// The raw projections of a decode step and what a fused kernel needs to rotate them: a policy
// that can rotate q/k and store k/v in one launch takes this instead of append().
struct FusedQkv {
  at::Tensor qkv;         // [B, (n_heads + 2*n_kv_heads) * hd], model dtype
  at::Tensor cos, sin;    // RoPE tables [max_seq, hd/2] float32
  RopeLayout layout = RopeLayout::Adjacent;
  int n_heads = 0, n_kv_heads = 0;
};

class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  virtual std::string name() const = 0;
  // Prefill: k, v [n_kv_heads, n_new, hd]. Decode: k, v [B, n_kv_heads, 1, hd].
  virtual void append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) = 0;
  // Optional fused decode append: returns the rotated q [B, n_heads, 1, hd] after storing k/v, or
  // an undefined tensor when this policy has no fused path here (the model then rotates q/k
  // itself and calls append).
  virtual at::Tensor append_fused(const StepInfo& step, const FusedQkv& in) { return at::Tensor(); }
  // Prefill: q [n_heads, n_new, hd] -> [n_heads, n_new, hd], causal over everything cached for
  // the row. Decode: q [B, n_heads, 1, hd] -> [B, n_heads, 1, hd].
  virtual at::Tensor attend(const StepInfo& step, const at::Tensor& q) = 0;
  // K and V of one row as attention sees them ([n_kv_heads, len, hd] each), for analysis.
  virtual std::pair<at::Tensor, at::Tensor> view(int row) const = 0;
  virtual ByteBreakdown bytes() const = 0;
  virtual void clear_row(int row) = 0;
};

// The whole model's cache: a policy per layer plus each row's length (host side).
class KvCache {
 public:
  KvCache(const ModelConfig& config, int batch, int64_t capacity);
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;

  CachePolicy& layer(int l) { return *layers_.at(l); }
  const CachePolicy& layer(int l) const { return *layers_.at(l); }
  void set_layer(int l, std::unique_ptr<CachePolicy> policy) { layers_.at(l) = std::move(policy); }

  int batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  int64_t length(int row) const { return lengths_.at(row); }
  void set_length(int row, int64_t n) { lengths_.at(row) = n; }
  void advance_all() { for (auto& n : lengths_) ++n; }
  int64_t max_length() const;
  void clear_row(int row);
  ByteBreakdown bytes() const;
  std::string policy_name() const { return layers_.empty() ? "" : layers_[0]->name(); }

 private:
  std::vector<std::unique_ptr<CachePolicy>> layers_;
  std::vector<int64_t> lengths_;
  int batch_ = 0;
  int64_t capacity_ = 0;
};

}  // namespace gear
