#include "core/model/weights.h"

#include <ATen/ATen.h>

#include "core/util/error.h"

namespace gear {
namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void check(const at::Tensor& t, std::vector<int64_t> want, const std::string& name, const std::string& origin) {
  require(t.defined(), origin + ": tensor " + name + " is missing");
  require(t.sizes().vec() == want, origin + ": tensor " + name + " has shape " + shape_str(t.sizes()) +
                                       " but the config implies " + shape_str(want));
}

}  // namespace

void Weights::validate(const std::string& origin) const {
  const ModelConfig& c = config;
  const int64_t q = int64_t(c.n_heads) * c.hd(), kv = int64_t(c.n_kv_heads) * c.hd();
  check(tok_embeddings, {c.vocab_size, c.dim}, "token_embedding", origin);
  require(int(layers.size()) == c.n_layers, origin + ": expected " + std::to_string(c.n_layers) +
                                                " layers, found " + std::to_string(layers.size()));
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    check(w.attn_norm, {c.dim}, p + "attention_norm", origin);
    check(w.wq, {q, c.dim}, p + "wq", origin);
    check(w.wk, {kv, c.dim}, p + "wk", origin);
    check(w.wv, {kv, c.dim}, p + "wv", origin);
    check(w.wo, {c.dim, q}, p + "wo", origin);
    check(w.ffn_norm, {c.dim}, p + "ffn_norm", origin);
    check(w.w1, {c.hidden_dim, c.dim}, p + "w1", origin);
    check(w.w2, {c.dim, c.hidden_dim}, p + "w2", origin);
    check(w.w3, {c.hidden_dim, c.dim}, p + "w3", origin);
  }
  check(final_norm, {c.dim}, "norm", origin);
  check(classifier, {c.vocab_size, c.dim}, "classifier", origin);
}

int64_t Weights::bytes() const {
  auto b = [](const at::Tensor& t) { return t.defined() ? int64_t(t.numel() * t.element_size()) : int64_t(0); };
  int64_t total = b(tok_embeddings) + b(final_norm);
  if (!config.tied_embeddings) total += b(classifier);
  for (const LayerWeights& w : layers)
    total += b(w.attn_norm) + b(w.wq) + b(w.wk) + b(w.wv) + b(w.wo) + b(w.ffn_norm) + b(w.w1) + b(w.w2) + b(w.w3);
  return total;
}

}  // namespace gear
