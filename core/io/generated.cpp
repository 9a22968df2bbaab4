// Random weights of real models' shapes, for benchmarks on machines without the checkpoints.
// They are labelled everywhere (config.generated, source "generated:<shape>").
#include "core/io/generated.h"

#include <ATen/ATen.h>

#include "core/io/loader.h"
#include "core/model/llama.h"
#include "core/util/error.h"

namespace gear {
namespace {

struct Shape {
  const char* name;
  int dim, hidden, layers, heads, kv_heads, vocab, ctx;
  float rope_theta;
  bool tied;
};

// Published configurations (Hugging Face config.json of each model).
constexpr Shape kShapes[] = {
    {"llama2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, false},
    {"llama2-13b", 5120, 13824, 40, 40, 40, 32000, 4096, 10000.0f, false},
    {"llama3-8b", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0f, false},
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, false},
    {"stories260K", 64, 172, 5, 8, 4, 512, 512, 10000.0f, true},
};

}  // namespace

std::vector<std::string> generated_shape_names() {
  std::vector<std::string> out;
  for (const Shape& s : kShapes) out.push_back(s.name);
  return out;
}

std::string list_generated_shapes() {
  std::string out;
  for (const Shape& s : kShapes) out += (out.empty() ? "" : ", ") + std::string(s.name);
  return out;
}

ModelConfig generated_config(const std::string& shape) {
  const std::string name = shape == "stories260K-shape" ? "stories260K" : shape;
  for (const Shape& s : kShapes) {
    if (name != s.name) continue;
    ModelConfig c;
    c.dim = s.dim;
    c.hidden_dim = s.hidden;
    c.n_layers = s.layers;
    c.n_heads = s.heads;
    c.n_kv_heads = s.kv_heads;
    c.vocab_size = s.vocab;
    c.max_seq_len = s.ctx;
    c.rope_theta = s.rope_theta;
    c.norm_eps = 1e-5f;
    c.tied_embeddings = s.tied;
    c.rope_layout = RopeLayout::Adjacent;
    c.generated = true;
    c.source = "generated:" + name;
    c.validate();
    return c;
  }
  fail("unknown generated shape '" + shape + "' (valid: " + list_generated_shapes() + ")");
}

Weights generate_weights(const std::string& shape, const std::string& device, const std::string& dtype, uint64_t seed) {
  Weights w;
  w.config = generated_config(shape);
  const ModelConfig& c = w.config;
  const at::Device dev = parse_device(device);
  const at::ScalarType type = parse_dtype(dtype);
  const auto opts = at::TensorOptions().device(dev).dtype(type);
  // A private generator of the device's kind, so the global RNG state is left alone and the
  // same seed gives the same weights (on the CPU; on CUDA, for the same GPU and LibTorch).
  at::Generator gen = at::globalContext().defaultGenerator(dev).clone();
  gen.set_current_seed(seed);
  auto normal = [&](std::vector<int64_t> sizes) {
    if (dev.is_cpu() && type != at::kFloat)  // CPU normal_ is float-only on older LibTorch
      return at::empty(sizes, opts.dtype(at::kFloat)).normal_(0.0, 0.02, gen).to(type);
    return at::empty(sizes, opts).normal_(0.0, 0.02, gen);
  };
  auto ones = [&](int64_t n) { return at::ones({n}, opts); };

  const int64_t d = c.dim, hidden = c.hidden_dim, q = int64_t(c.n_heads) * c.hd(), kv = int64_t(c.n_kv_heads) * c.hd();
  w.tok_embeddings = normal({c.vocab_size, d});
  w.layers.resize(size_t(c.n_layers));
  for (LayerWeights& L : w.layers) {
    L.attn_norm = ones(d);
    L.wq = normal({q, d});
    L.wk = normal({kv, d});
    L.wv = normal({kv, d});
    L.wo = normal({d, q});
    L.ffn_norm = ones(d);
    L.w1 = normal({hidden, d});
    L.w2 = normal({d, hidden});
    L.w3 = normal({hidden, d});
  }
  w.final_norm = ones(d);
  w.classifier = c.tied_embeddings ? w.tok_embeddings : normal({c.vocab_size, d});
  w.validate(c.source);
  return w;
}

}  // namespace gear
