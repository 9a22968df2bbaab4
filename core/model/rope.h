#pragma once
// Rotary position embedding: frequency tables (with Llama-3 / linear scaling) and the rotation
// in both weight layouts.
#include <ATen/core/Tensor.h>

#include <utility>

#include "core/model/config.h"

namespace gear {

// cos/sin tables [max_seq_len, hd/2], float32, on `device`. Pair i uses frequency
// theta^(-2i/hd), rescaled as config.rope_scaling asks.
std::pair<at::Tensor, at::Tensor> rope_tables(const ModelConfig& config, at::Device device);

// x [T, H, hd]; cos, sin broadcastable to [T, H, hd/2]. Computes in float32, returns x's dtype.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, RopeLayout layout);

}  // namespace gear
