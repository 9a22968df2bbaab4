#pragma once
// The Llama forward pass: prefill a prompt chunk for one sequence, or decode one token for
// every sequence of the batch at once. Weights live on one device in one dtype.
#include <ATen/core/Tensor.h>

#include <vector>

#include "core/cache/kv_cache.h"
#include "core/model/weights.h"

namespace gear {

struct DeviceSpec {
  std::string device = "cpu";  // "cpu" | "cuda" | "cuda:N"
  std::string dtype = "f32";   // "f32" | "f16" | "bf16"
};

class LlamaModel {
 public:
  // Moves the weights to the device/dtype and fuses wq|wk|wv and w1|w3 for fewer launches.
  LlamaModel(Weights weights, const DeviceSpec& spec);

  const ModelConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  int64_t weight_bytes() const { return weight_bytes_; }

  // A cache of full-precision K/V (the model's dtype) for `batch` rows of `capacity` tokens.
  KvCache make_full_cache(int batch, int64_t capacity) const;

  // Runs `tokens` of sequence `row` from position cache.length(row); appends to the cache.
  // Returns float32 logits [n, vocab] for every position (or only the last when last_only).
  at::Tensor prefill(KvCache& cache, int row, const std::vector<int>& tokens, bool last_only = false);
  // One token per row: `tokens` [B] int64 on device(); `positions` [B] int64 on device() with
  // each row's position (== cache.length(row)). Returns float32 logits [B, vocab]; no host sync.
  at::Tensor decode(KvCache& cache, const at::Tensor& tokens, const at::Tensor& positions);

 private:
  struct Layer {
    at::Tensor attn_norm, wqkv, wo, ffn_norm, w13, w2;
  };
  at::Tensor block(int l, const at::Tensor& x, const StepInfo& step, const at::Tensor& cos,
                   const at::Tensor& sin, KvCache& cache);
  at::Tensor ffn(const Layer& L, const at::Tensor& h) const;
  at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  at::Tensor head(const at::Tensor& x) const;

  ModelConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  at::Tensor tok_embeddings_, final_norm_, classifier_;
  std::vector<Layer> layers_;
  at::Tensor rope_cos_, rope_sin_;  // [max_seq, hd/2] float32 on device
  int64_t weight_bytes_ = 0;
};

at::ScalarType parse_dtype(const std::string& name);  // throws gear::Error on unknown names
at::Device parse_device(const std::string& name);     // throws when CUDA is absent/unavailable

}  // namespace gear
