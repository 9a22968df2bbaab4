#include "core/model/llama.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>

#include "core/bench/device_memory.h"
#include "core/cache/full_cache.h"
#include "core/model/cuda_ops.h"
#include "core/model/rope.h"
#include "core/util/error.h"

namespace gear {

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "f32" || name == "fp32" || name == "float32") return at::kFloat;
  if (name == "f16" || name == "fp16" || name == "float16") return at::kHalf;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  fail("unknown dtype '" + name + "' (expected f32, f16 or bf16)");
}

at::Device parse_device(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    require(at::hasCUDA(), "device '" + name + "' requested, but no CUDA device is available in this build/machine");
    try {
      return at::Device(name);
    } catch (const std::exception&) {
      fail("bad device '" + name + "' (expected cpu, cuda or cuda:N)");
    }
  }
  fail("unknown device '" + name + "' (expected cpu, cuda or cuda:N)");
}

namespace {

// RMSNorm in float32 (as the reference implementations do), result back in the model dtype.
// On CUDA one fused kernel replaces the seven ATen ops below.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (cuda_ops::applies(x)) return cuda_ops::rms_norm(x, weight, eps);
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return normed.to(x.scalar_type()) * weight;
}

at::Tensor silu_mul(const at::Tensor& gate_up, int64_t hidden) {
  if (cuda_ops::applies(gate_up)) return cuda_ops::silu_mul(gate_up);
  return at::silu(gate_up.narrow(1, 0, hidden)) * gate_up.narrow(1, hidden, hidden);
}

}  // namespace

LlamaModel::LlamaModel(Weights w, const DeviceSpec& spec)
    : config_(w.config), device_(parse_device(spec.device)), dtype_(parse_dtype(spec.dtype)) {
  c10::InferenceMode guard;
  config_.validate();
  w.validate(config_.source);
  require(!(device_.is_cpu() && dtype_ == at::kHalf),
          "dtype f16 is not supported on the CPU (LibTorch has no CPU float16 matmul): use f32 or bf16");
  const auto opts = at::TensorOptions().device(device_).dtype(dtype_);
  auto put = [&](const at::Tensor& t) { return t.to(opts).contiguous(); };
  tok_embeddings_ = put(w.tok_embeddings);
  final_norm_ = put(w.final_norm);
  classifier_ = config_.tied_embeddings ? tok_embeddings_ : put(w.classifier);
  w.tok_embeddings = w.classifier = at::Tensor();
  for (LayerWeights& lw : w.layers) {
    Layer l;
    l.attn_norm = put(lw.attn_norm);
    l.wqkv = put(at::cat({lw.wq, lw.wk, lw.wv}, 0));  // one matmul instead of three
    l.wo = put(lw.wo);
    l.ffn_norm = put(lw.ffn_norm);
    l.w13 = put(at::cat({lw.w1, lw.w3}, 0));
    l.w2 = put(lw.w2);
    lw = LayerWeights();  // release the source copy as we go (a 7B model is 13 GB)
    layers_.push_back(std::move(l));
  }
  auto tables = rope_tables(config_, device_);
  rope_cos_ = tables.first;
  rope_sin_ = tables.second;
  auto b = [](const at::Tensor& t) { return int64_t(t.numel() * t.element_size()); };
  weight_bytes_ = b(tok_embeddings_) + b(final_norm_) + (config_.tied_embeddings ? 0 : b(classifier_));
  for (const Layer& l : layers_) weight_bytes_ += b(l.attn_norm) + b(l.wqkv) + b(l.wo) + b(l.ffn_norm) + b(l.w13) + b(l.w2);
}

KvCache LlamaModel::make_full_cache(int batch, int64_t capacity) const {
  require(capacity <= config_.max_seq_len, "kv cache: capacity " + std::to_string(capacity) +
                                               " exceeds the model's context of " + std::to_string(config_.max_seq_len));
  KvCache cache(config_, batch, capacity);
  const auto opts = at::TensorOptions().device(device_).dtype(dtype_);
  for (int l = 0; l < config_.n_layers; ++l)
    cache.set_layer(l, std::make_unique<FullCache>(batch, config_.n_kv_heads, config_.hd(), capacity, opts));
  return cache;
}

// On the GPU one kernel (no float32 temporaries: they were most of a long prompt's transient memory, which a memory
// budget pays for); elsewhere, or for tensors it cannot take, ATen's apply_rope.
at::Tensor LlamaModel::rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  if (cuda_ops::applies(x) && x.scalar_type() != at::kFloat) {
    at::Tensor out = cuda_ops::rope_rows(x, cos, sin, config_.rope_layout);
    if (out.defined()) return out;
  }
  return apply_rope(x, cos, sin, config_.rope_layout);
}

// x: [T, dim] (T = prompt tokens, or one token per row in decode). Returns the new x.
at::Tensor LlamaModel::block(int li, const at::Tensor& x, const StepInfo& step, const at::Tensor& cos,
                             const at::Tensor& sin, KvCache& cache) {
  const Layer& L = layers_[li];
  const int64_t T = x.size(0), hd = config_.hd(), nh = config_.n_heads, nkv = config_.n_kv_heads;
  at::Tensor qkv = at::linear(rms_norm(x, L.attn_norm, config_.norm_eps), L.wqkv);
  CachePolicy& layer = cache.layer(li);
  at::Tensor att;
  if (step.kind == StepInfo::Kind::Prefill) {  // heads first: [H, T, hd]
    bench::trace_memory(device_, "prefill qkv", li);
    at::Tensor q = rope(qkv.narrow(1, 0, nh * hd).view({T, nh, hd}), cos, sin);
    {
      // With this function's references to qkv and the roped k gone by the end of this scope, they are freed as soon
      // as the cache holds no view of them (GearCudaCache copies k and v at append), before the prompt's attention
      // and compression rather than at the end of the block (~124 MB of a 7B layer at 3.8k tokens).
      at::Tensor k = rope(qkv.narrow(1, nh * hd, nkv * hd).view({T, nkv, hd}), cos, sin);
      at::Tensor v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd).view({T, nkv, hd});
      qkv = at::Tensor();
      layer.append(step, k.transpose(0, 1), v.transpose(0, 1));
      bench::trace_memory(device_, "prefill append", li);
    }
    att = layer.attend(step, q.transpose(0, 1)).transpose(0, 1).reshape({T, nh * hd});
    bench::trace_memory(device_, "prefill attend", li);
  } else {  // one token per row: [B, H, 1, hd]
    at::Tensor q = layer.append_fused(step, {qkv, rope_cos_, rope_sin_, config_.rope_layout, int(nh), int(nkv)});
    if (!q.defined()) {
      q = rope(qkv.narrow(1, 0, nh * hd).view({T, nh, hd}), cos, sin).unsqueeze(2);
      at::Tensor k = rope(qkv.narrow(1, nh * hd, nkv * hd).view({T, nkv, hd}), cos, sin);
      at::Tensor v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd).view({T, nkv, hd});
      layer.append(step, k.unsqueeze(2), v.unsqueeze(2));
    }
    att = layer.attend(step, q).reshape({T, nh * hd});
  }
  // Residual adds ride on the matmuls (addmm: x + a W^T in one call).
  at::Tensor h = at::addmm(x, att, L.wo.t());
  qkv = att = at::Tensor();  // not needed by the MLP (a long prompt's are ~120 MB of a 7B model)
  if (step.kind == StepInfo::Kind::Prefill) bench::trace_memory(device_, "prefill wo", li);
  at::Tensor out = ffn(L, h);
  if (step.kind == StepInfo::Kind::Prefill) bench::trace_memory(device_, "prefill ffn", li);
  return out;
}

// The MLP, h + W2 (silu(W1 x) * W3 x) with x = norm(h), rows at a time for long prompts: its [T, 2 hidden]
// activations are the largest transient of a prefill (~250 MB at 3.8k tokens of a 7B model, with the silu
// product), which a memory budget pays for every row of the batch; in chunks of kFfnChunk rows they are ~70 MB.
// The same operations per row (a matmul of fewer rows may pick another kernel and round differently).
at::Tensor LlamaModel::ffn(const Layer& L, const at::Tensor& h) const {
  constexpr int64_t kFfnChunk = 1024;
  auto rows = [&](const at::Tensor& hc) {
    const at::Tensor gu = at::linear(rms_norm(hc, L.ffn_norm, config_.norm_eps), L.w13);
    return silu_mul(gu, config_.hidden_dim);
  };
  const int64_t T = h.size(0);
  if (T <= kFfnChunk) return at::addmm(h, rows(h), L.w2.t());
  at::Tensor out = at::empty_like(h);
  for (int64_t i = 0; i < T; i += kFfnChunk) {
    const int64_t n = std::min(kFfnChunk, T - i);
    const at::Tensor hc = h.narrow(0, i, n);
    at::Tensor oc = out.narrow(0, i, n);
    at::addmm_out(oc, hc, rows(hc), L.w2.t());
  }
  return out;
}

at::Tensor LlamaModel::head(const at::Tensor& x) const {
  return at::linear(rms_norm(x, final_norm_, config_.norm_eps), classifier_).to(at::kFloat);
}

at::Tensor LlamaModel::prefill(KvCache& cache, int row, const std::vector<int>& tokens, bool last_only) {
  c10::InferenceMode guard;
  require(row >= 0 && row < cache.batch(), "prefill: row " + std::to_string(row) + " is outside the batch of " +
                                               std::to_string(cache.batch()));
  require(!tokens.empty(), "prefill: the prompt is empty");
  const int64_t start = cache.length(row), n = int64_t(tokens.size());
  require(start + n <= cache.capacity(),
          "prompt of " + std::to_string(n) + " tokens (after " + std::to_string(start) + " cached) exceeds the context of " +
              std::to_string(cache.capacity()) + " tokens");
  for (int t : tokens)
    require(t >= 0 && t < config_.vocab_size, "prefill: token id " + std::to_string(t) + " is outside the vocabulary of " +
                                                  std::to_string(config_.vocab_size));
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  at::Tensor idx = at::tensor(ids, at::kLong).to(device_);
  StepInfo step;
  step.kind = StepInfo::Kind::Prefill;
  step.row = row;
  step.start = start;
  step.n_new = n;
  at::Tensor cos = rope_cos_.narrow(0, start, n).unsqueeze(1);  // [n, 1, hd/2]
  at::Tensor sin = rope_sin_.narrow(0, start, n).unsqueeze(1);
  at::Tensor x = tok_embeddings_.index_select(0, idx);
  for (int l = 0; l < config_.n_layers; ++l) x = block(l, x, step, cos, sin, cache);
  cache.set_length(row, start + n);
  return head(last_only ? x.narrow(0, n - 1, 1) : x);
}

at::Tensor LlamaModel::decode(KvCache& cache, const at::Tensor& tokens, const at::Tensor& positions) {
  c10::InferenceMode guard;
  require(tokens.dim() == 1 && tokens.size(0) == cache.batch(),
          "decode: expected one token per row (" + std::to_string(cache.batch()) + ")");
  StepInfo step;
  step.kind = StepInfo::Kind::Decode;
  step.positions = positions;
  step.max_len = cache.max_length() + 1;
  require(step.max_len <= cache.capacity(), "decode: the context of " + std::to_string(cache.capacity()) +
                                                " tokens is full");
  at::Tensor cos = rope_cos_.index_select(0, positions).unsqueeze(1);  // [B, 1, hd/2]
  at::Tensor sin = rope_sin_.index_select(0, positions).unsqueeze(1);
  at::Tensor x = tok_embeddings_.index_select(0, tokens);
  for (int l = 0; l < config_.n_layers; ++l) x = block(l, x, step, cos, sin, cache);
  cache.advance_all();
  return head(x);
}

}  // namespace gear
