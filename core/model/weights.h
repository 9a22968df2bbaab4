#pragma once
// Model parameters as ATen tensors. Linear weights are [out, in] row-major (y = x W^T).
#include <ATen/core/Tensor.h>

#include <vector>

#include "core/model/config.h"

namespace gear {

struct LayerWeights {
  at::Tensor attn_norm;   // [dim]
  at::Tensor wq;          // [n_heads*hd, dim]
  at::Tensor wk, wv;      // [n_kv_heads*hd, dim]
  at::Tensor wo;          // [dim, n_heads*hd]
  at::Tensor ffn_norm;    // [dim]
  at::Tensor w1, w3;      // [hidden, dim]  (gate, up)
  at::Tensor w2;          // [dim, hidden]  (down)
};

struct Weights {
  ModelConfig config;
  at::Tensor tok_embeddings;  // [vocab, dim]
  std::vector<LayerWeights> layers;
  at::Tensor final_norm;      // [dim]
  at::Tensor classifier;      // [vocab, dim]; the same tensor as tok_embeddings when tied

  // Checks every tensor's shape against the config; throws gear::Error naming the tensor.
  void validate(const std::string& origin) const;
  int64_t bytes() const;
};

}  // namespace gear
