#include "core/model/config.h"

#include <sstream>

#include "core/util/error.h"

namespace gear {

int64_t ModelConfig::param_count() const {
  const int64_t d = dim, h = hidden_dim, q = int64_t(n_heads) * hd(), kv = int64_t(n_kv_heads) * hd();
  const int64_t per_layer = 2 * d /*norms*/ + d * q /*wq*/ + 2 * d * kv /*wk,wv*/ + q * d /*wo*/ + 3 * d * h;
  const int64_t embed = int64_t(vocab_size) * d;
  return embed + n_layers * per_layer + d + (tied_embeddings ? 0 : embed);
}

void ModelConfig::validate() const {
  auto positive = [&](int v, const char* name) {
    require(v > 0, std::string("model config: ") + name + " must be positive, got " + std::to_string(v));
  };
  positive(dim, "dim");
  positive(hidden_dim, "hidden_dim");
  positive(n_layers, "n_layers");
  positive(n_heads, "n_heads");
  positive(n_kv_heads, "n_kv_heads");
  positive(vocab_size, "vocab_size");
  positive(max_seq_len, "max_seq_len");
  require(n_heads % n_kv_heads == 0, "model config: n_heads (" + std::to_string(n_heads) +
                                         ") is not a multiple of n_kv_heads (" + std::to_string(n_kv_heads) + ")");
  require(head_dim > 0 || dim % n_heads == 0,
          "model config: dim (" + std::to_string(dim) + ") is not divisible by n_heads (" + std::to_string(n_heads) + ")");
  require(hd() % 2 == 0, "model config: head_dim must be even for RoPE, got " + std::to_string(hd()));
  require(rope_theta > 0, "model config: rope_theta must be positive");
  require(norm_eps > 0, "model config: rms_norm_eps must be positive");
}

std::string ModelConfig::describe() const {
  std::ostringstream s;
  s << "dim " << dim << ", hidden " << hidden_dim << ", layers " << n_layers << ", heads " << n_heads
    << " (kv " << n_kv_heads << ", head_dim " << hd() << "), vocab " << vocab_size << ", context "
    << max_seq_len << ", rope_theta " << rope_theta << " (" << (rope_layout == RopeLayout::Adjacent ? "adjacent pairs" : "rotate-half")
    << (rope_scaling.llama3 ? ", llama3 scaling" : "") << "), norm_eps " << norm_eps
    << (tied_embeddings ? ", tied classifier" : ", separate classifier");
  if (generated) s << " [GENERATED WEIGHTS: " << source << "]";
  return s.str();
}

}  // namespace gear
