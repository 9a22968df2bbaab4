#pragma once
// Test support: writes gear::Weights as a Hugging Face Llama directory (config.json +
// model.safetensors, or N shards + model.safetensors.index.json), the way Hugging Face's
// convert_llama_weights_to_hf.py does: wq/wk of Adjacent-layout (llama2.c / Meta) weights are
// permuted for rotate-half RoPE; HalfSplit weights are written unchanged.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/model/weights.h"
#include "io/safetensors_writer.h"

namespace gear::test {

// HF's permute(w, n_heads, dim1, dim2):
//   w.view(n_heads, dim1 / n_heads / 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)
inline at::Tensor hf_permute(const at::Tensor& w, int64_t n_heads) {
  const int64_t dim1 = w.size(0), dim2 = w.size(1);
  return w.reshape({n_heads, dim1 / n_heads / 2, 2, dim2}).transpose(1, 2).reshape({dim1, dim2});
}

// The inverse of hf_permute.
inline at::Tensor hf_unpermute(const at::Tensor& w, int64_t n_heads) {
  const int64_t dim1 = w.size(0), dim2 = w.size(1);
  return w.reshape({n_heads, 2, dim1 / n_heads / 2, dim2}).transpose(1, 2).reshape({dim1, dim2});
}

inline nlohmann::json hf_config_json(const ModelConfig& c) {
  nlohmann::json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_act", "silu"},
      {"hidden_size", c.dim},
      {"intermediate_size", c.hidden_dim},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_seq_len},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.norm_eps},
      {"tie_word_embeddings", c.tied_embeddings},
      {"torch_dtype", "float32"},
      {"rope_scaling", nullptr},
  };
  if (c.head_dim > 0) j["head_dim"] = c.head_dim;
  if (c.rope_scaling.llama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  } else if (c.rope_scaling.linear_factor != 1.0f) {
    j["rope_scaling"] = {{"type", "linear"}, {"factor", c.rope_scaling.linear_factor}};
  }
  return j;
}

// The tensors under their Hugging Face names, in checkpoint order (q/k permuted if needed).
inline std::vector<std::pair<std::string, at::Tensor>> hf_named_tensors(const Weights& w) {
  const ModelConfig& c = w.config;
  const bool permute = c.rope_layout == RopeLayout::Adjacent;
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", w.tok_embeddings);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.emplace_back(p + "self_attn.q_proj.weight", permute ? hf_permute(L.wq, c.n_heads) : L.wq);
    out.emplace_back(p + "self_attn.k_proj.weight", permute ? hf_permute(L.wk, c.n_kv_heads) : L.wk);
    out.emplace_back(p + "self_attn.v_proj.weight", L.wv);
    out.emplace_back(p + "self_attn.o_proj.weight", L.wo);
    out.emplace_back(p + "mlp.gate_proj.weight", L.w1);
    out.emplace_back(p + "mlp.up_proj.weight", L.w3);
    out.emplace_back(p + "mlp.down_proj.weight", L.w2);
    out.emplace_back(p + "input_layernorm.weight", L.attn_norm);
    out.emplace_back(p + "post_attention_layernorm.weight", L.ffn_norm);
  }
  out.emplace_back("model.norm.weight", w.final_norm);
  if (!c.tied_embeddings) out.emplace_back("lm_head.weight", w.classifier);
  return out;
}

inline void write_json(const std::string& path, const nlohmann::json& j) { write_bytes(path, j.dump(2) + "\n"); }

// Writes `tensors` into `dir` as model.safetensors (shards == 1) or as `shards` files
// model-0000i-of-0000N.safetensors (consecutive runs of tensors) + model.safetensors.index.json.
inline void write_hf_tensors(const std::vector<StTensor>& tensors, const std::string& dir, int shards = 1) {
  namespace fs = std::filesystem;
  if (shards <= 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  size_t total = 0, next = 0;
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, shards);
    const size_t end = tensors.size() * size_t(s + 1) / size_t(shards);
    std::vector<StTensor> part(tensors.begin() + long(next), tensors.begin() + long(end));
    for (const StTensor& t : part) {
      weight_map[t.name] = name;
      total += t.bytes.size();
    }
    write_safetensors((fs::path(dir) / name).string(), part, {{"format", "pt"}});
    next = end;
  }
  write_json((fs::path(dir) / "model.safetensors.index.json").string(),
             {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
}

// `w` as a Hugging Face Llama directory in `dir` (created if needed): tensors in `dtype`
// ("F32", "F16" or "BF16"), split over `shards` files when shards > 1.
inline void write_hf_dir(const Weights& w, const std::string& dir, const std::string& dtype = "F32", int shards = 1) {
  std::filesystem::create_directories(dir);
  write_json((std::filesystem::path(dir) / "config.json").string(), hf_config_json(w.config));
  std::vector<StTensor> tensors;
  for (const auto& [name, t] : hf_named_tensors(w)) tensors.push_back(st_tensor(name, t, dtype));
  write_hf_tensors(tensors, dir, shards);
}

}  // namespace gear::test
