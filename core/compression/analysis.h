#pragma once
// The analysis API: what the app's plots and the reports read, and nothing else does.
//
// A CacheSnapshot is the exact K/V of one sequence (per layer [n_kv_heads, T, hd], float32 on the
// CPU), captured from a full-precision cache. analyze() compresses it as the configured cache would
// hold it (the first `prompt_tokens` as the prefill block, then blocks of stream_gap tokens, the rest in
// the FP16 buffer) and reports, per layer / head / K-or-V:
//  - the relative Frobenius error ||X - X̂|| / ||X|| of four reconstructions: the backbone alone
//    (quant-only), with the outliers kept exactly (+S), with the low-rank term (+L, i.e. GEAR-L), and
//    both (GEAR); the settings' sparsity and ranks are used for +S/+L even when the method itself is
//    quant-only, so the plot shows what each component would buy;
//  - the singular values of the residual X - Q - S of the compressed tokens (the spectrum L
//    approximates), with the chosen rank;
//  - the outlier map: the positions (token, channel) and exact values of S;
//  - the exact bytes of the configured method by component, and the ratio against FP16.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/cache/kv_cache.h"
#include "core/compression/cache_config.h"
#include "core/model/config.h"

namespace gear {

struct CacheSnapshot {
  ModelConfig model;
  std::vector<at::Tensor> k, v;  // per layer [n_kv_heads, T, hd] float32, CPU
  int64_t prompt_tokens = 0;     // how many of the T came from the prompt (compressed as the prefill block)
  int64_t tokens() const { return k.empty() ? 0 : k[0].size(1); }
};

// The row `row` of a cache whose layers can view() their K/V (a full cache gives the exact values).
CacheSnapshot capture_snapshot(const KvCache& cache, const ModelConfig& model, int row, int64_t prompt_tokens);

struct ComponentErrors {
  double quant = 0;   // Q
  double sparse = 0;  // Q + S
  double lowrank = 0; // Q + L   (GEAR-L)
  double gear = 0;    // Q + L + S (GEAR)
};

struct HeadAnalysis {
  ComponentErrors error;
  // This head's share of the method's bytes: low-rank factors, outliers and the FP16 buffer are
  // exactly per head; codes and scales are split evenly (a token-wise row spans every head's channels).
  ByteBreakdown bytes;
  std::vector<float> spectrum;  // singular values of the residual, descending (min(T_c, hd) values)
};

struct OutlierMap {
  // Token index, channel index within the hidden K/V vector (head * hd + dim), exact value.
  std::vector<int32_t> token, channel;
  std::vector<float> value;
};

struct SideAnalysis {      // K or V of one layer
  ComponentErrors error;   // over the whole layer (all heads)
  std::vector<HeadAnalysis> heads;
  OutlierMap outliers;
  ByteBreakdown bytes;     // of the configured method
  int64_t rank = 0;        // the prefill block's low-rank rank (marked on the spectrum)
};

struct LayerAnalysis {
  SideAnalysis k, v;
};

struct Analysis {
  CacheConfig config;
  int64_t tokens = 0, compressed_tokens = 0, buffered_tokens = 0;
  int n_kv_heads = 0, head_dim = 0;  // channels of the outlier map = n_kv_heads * head_dim
  std::vector<LayerAnalysis> layers;
  ByteBreakdown bytes;   // all layers, K and V
  int64_t fp16_bytes = 0;
  double ratio_vs_fp16() const { return bytes.in_use() > 0 ? double(fp16_bytes) / double(bytes.in_use()) : 0; }
  double seconds = 0;    // time analyze() took
};

// Throws gear::Error for settings that do not apply to the snapshot (validate() with its shape) or for
// methods without a quantization backbone (pyramid, streamingllm, h2o, full: nothing to decompose).
Analysis analyze(const CacheSnapshot& snapshot, const CacheConfig& config);

nlohmann::json to_json(const Analysis& a, bool with_spectra = true, bool with_outliers = false);
// The per-layer table `gearlab analyze` prints.
std::string format_table(const Analysis& a);

}  // namespace gear
