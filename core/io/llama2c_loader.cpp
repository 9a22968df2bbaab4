// llama2.c checkpoint reader (legacy version 0): header + float32 arrays, see ../shared/README.md.
#include <ATen/ATen.h>

#include <cstring>
#include <fstream>

#include "core/io/loader.h"
#include "core/util/error.h"

namespace gear {
namespace {

struct Reader {
  std::ifstream in;
  std::string path;
  // The next `count` floats as a tensor of `shape`.
  at::Tensor take(std::vector<int64_t> shape, const char* what) {
    at::Tensor t = at::empty(shape, at::kFloat);
    const std::streamsize bytes = std::streamsize(t.numel() * sizeof(float));
    in.read(reinterpret_cast<char*>(t.data_ptr<float>()), bytes);
    require(in.gcount() == bytes, path + ": truncated while reading " + what);
    return t;
  }
};

}  // namespace

Weights load_llama2c(const std::string& path) {
  Reader r{std::ifstream(path, std::ios::binary), path};
  require(bool(r.in), path + ": cannot open llama2.c checkpoint (missing or unreadable)");
  int32_t h[7];
  r.in.read(reinterpret_cast<char*>(h), sizeof(h));
  require(r.in.gcount() == sizeof(h), path + ": too short for a llama2.c header (28 bytes)");
  Weights w;
  ModelConfig& c = w.config;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.tied_embeddings = h[5] > 0;
  c.vocab_size = h[5] < 0 ? -h[5] : h[5];
  c.max_seq_len = h[6];
  c.rope_layout = RopeLayout::Adjacent;
  c.source = path;
  try {
    c.validate();
  } catch (const Error& e) {
    fail(path + ": bad llama2.c header: " + e.what());
  }
  // Check the size before allocating anything: a bad header must not ask for gigabytes.
  const int64_t L = c.n_layers, d = c.dim, hd = c.hd(), q = int64_t(c.n_heads) * hd, kv = int64_t(c.n_kv_heads) * hd;
  const int64_t floats = int64_t(c.vocab_size) * d + L * (2 * d + d * q + 2 * d * kv + q * d + 3 * d * c.hidden_dim) + d +
                         int64_t(c.max_seq_len) * hd + (c.tied_embeddings ? 0 : int64_t(c.vocab_size) * d);
  r.in.seekg(0, std::ios::end);
  const int64_t size = r.in.tellg();
  r.in.seekg(sizeof(h));
  const int64_t want = int64_t(sizeof(h)) + floats * int64_t(sizeof(float));
  require(size == want, path + ": file is " + std::to_string(size) + " bytes but its header implies " +
                            std::to_string(want) + (size < want ? " (truncated?)" : " (trailing data?)"));
  w.tok_embeddings = r.take({c.vocab_size, d}, "token_embedding");
  w.layers.resize(L);
  auto per_layer = [&](at::Tensor LayerWeights::*field, std::vector<int64_t> shape, const char* what) {
    shape.insert(shape.begin(), L);
    at::Tensor all = r.take(shape, what);
    for (int64_t l = 0; l < L; ++l) w.layers[l].*field = all[l];
  };
  per_layer(&LayerWeights::attn_norm, {d}, "rms_att");
  per_layer(&LayerWeights::wq, {q, d}, "wq");
  per_layer(&LayerWeights::wk, {kv, d}, "wk");
  per_layer(&LayerWeights::wv, {kv, d}, "wv");
  per_layer(&LayerWeights::wo, {d, q}, "wo");
  per_layer(&LayerWeights::ffn_norm, {d}, "rms_ffn");
  per_layer(&LayerWeights::w1, {c.hidden_dim, d}, "w1");
  per_layer(&LayerWeights::w2, {d, c.hidden_dim}, "w2");
  per_layer(&LayerWeights::w3, {c.hidden_dim, d}, "w3");
  w.final_norm = r.take({d}, "rms_final");
  r.in.seekg(int64_t(c.max_seq_len) * hd * int64_t(sizeof(float)), std::ios::cur);  // legacy RoPE tables
  w.classifier = c.tied_embeddings ? w.tok_embeddings : r.take({c.vocab_size, d}, "wcls");
  w.validate(path);
  return w;
}

}  // namespace gear
