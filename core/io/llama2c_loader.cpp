// llama2.c checkpoint reader: the validated layout (io/format/llama2c_format) over a memory map.
#include <ATen/ATen.h>

#include "core/io/format/llama2c_format.h"
#include "core/io/format/mapped_file.h"
#include "core/io/loader.h"

namespace gear {

Weights load_llama2c(const std::string& path) {
  MappedFile file(path);
  const Llama2cLayout layout = parse_llama2c(file.data(), file.size(), path);
  const float* base = reinterpret_cast<const float*>(file.data());
  // Copies out of the map, so the weights outlive the file handle.
  auto take = [&](size_t offset, std::vector<int64_t> shape) {
    return at::from_blob(const_cast<float*>(base + offset), shape, at::kFloat).clone();
  };
  Weights w;
  w.config = layout.config;
  const ModelConfig& c = w.config;
  const int64_t L = c.n_layers, d = c.dim, h = c.hidden_dim;
  const int64_t q = int64_t(c.n_heads) * c.hd(), kv = int64_t(c.n_kv_heads) * c.hd();
  w.tok_embeddings = take(layout.token_embedding, {c.vocab_size, d});
  w.layers.resize(L);
  auto per_layer = [&](at::Tensor LayerWeights::*field, size_t offset, std::vector<int64_t> shape) {
    shape.insert(shape.begin(), L);
    const at::Tensor all = take(offset, shape);
    for (int64_t l = 0; l < L; ++l) w.layers[l].*field = all[l];
  };
  per_layer(&LayerWeights::attn_norm, layout.rms_att, {d});
  per_layer(&LayerWeights::wq, layout.wq, {q, d});
  per_layer(&LayerWeights::wk, layout.wk, {kv, d});
  per_layer(&LayerWeights::wv, layout.wv, {kv, d});
  per_layer(&LayerWeights::wo, layout.wo, {d, q});
  per_layer(&LayerWeights::ffn_norm, layout.rms_ffn, {d});
  per_layer(&LayerWeights::w1, layout.w1, {h, d});
  per_layer(&LayerWeights::w2, layout.w2, {d, h});
  per_layer(&LayerWeights::w3, layout.w3, {h, d});
  w.final_norm = take(layout.rms_final, {d});
  w.classifier = layout.shared_classifier ? w.tok_embeddings : take(layout.wcls, {c.vocab_size, d});
  w.validate(path);
  return w;
}

}  // namespace gear
