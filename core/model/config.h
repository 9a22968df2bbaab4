#pragma once
// Hyper-parameters of a Llama-architecture model, whatever file it came from.
#include <cstdint>
#include <string>

namespace gear {

// How RoPE pairs the dimensions of a head. llama2.c / Meta weights rotate adjacent pairs
// (2i, 2i+1); Hugging Face checkpoints permute wq/wk so that RoPE rotates the two halves.
enum class RopeLayout { Adjacent, HalfSplit };

// Llama-3.1 style frequency rescaling ("rope_scaling": {"rope_type": "llama3", ...}).
struct RopeScaling {
  bool llama3 = false;
  float factor = 1.0f, low_freq_factor = 1.0f, high_freq_factor = 4.0f;
  int original_max_position = 8192;
  float linear_factor = 1.0f;  // "linear" scaling divides positions by this
};

struct ModelConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
  int head_dim = 0;  // usually dim / n_heads; 0 means "derive it"
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  RopeLayout rope_layout = RopeLayout::Adjacent;
  RopeScaling rope_scaling;
  bool tied_embeddings = false;
  std::string source;        // file or directory it was loaded from, or "generated:<shape>"
  bool generated = false;    // random weights of a real model's shape (benchmarks only)

  int hd() const { return head_dim > 0 ? head_dim : (n_heads > 0 ? dim / n_heads : 0); }
  int group_size() const { return n_heads / n_kv_heads; }  // query heads per kv head (GQA)
  int64_t param_count() const;
  // K and V bytes one token occupies across all layers at the given element size.
  int64_t kv_bytes_per_token(int bytes_per_element) const {
    return int64_t(2) * n_layers * n_kv_heads * hd() * bytes_per_element;
  }
  void validate() const;  // throws gear::Error naming the bad field
  std::string describe() const;
};

}  // namespace gear
