#include "core/cache/gear_cache.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/cache/attention.h"
#include "core/util/error.h"

namespace gear {
namespace {

at::Tensor cat_tokens(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || a.size(1) == 0) return b;
  if (!b.defined() || b.size(1) == 0) return a;
  return at::cat({a, b}, 1);
}

int64_t bytes_of(const at::Tensor& t) { return t.defined() ? t.numel() * int64_t(t.element_size()) : 0; }

}  // namespace

GearCache::GearCache(int layer, int batch, int n_kv_heads, int head_dim, int64_t capacity, at::TensorOptions options,
                     const CacheConfig& config)
    : config_(config), layer_(layer), nkv_(n_kv_heads), hd_(head_dim), capacity_(capacity), options_(options),
      rows_(batch) {
  require(config.quantized(), std::string("gear cache: method ") + method_name(config.method) + " does not quantize");
  name_ = config.preset.empty() ? method_name(config.method) : config.preset;
}

// Per-channel keys are grouped along tokens: a block must hold whole groups (CacheConfig::prompt_alignment).
int64_t GearCache::prefill_alignment() const { return config_.prompt_alignment(); }

BlockSettings GearCache::settings(bool key, bool prefill, int64_t tokens, int64_t block) const {
  BlockSettings s;
  s.quant = key ? config_.key_spec() : config_.value_spec();
  if (config_.has_sparse()) s.sparsity = config_.sparsity;
  if (config_.has_low_rank()) {
    const int64_t r = prefill ? (key ? config_.prefill_rank_k : config_.prefill_rank_v)
                              : (key ? config_.block_rank_k : config_.block_rank_v);
    s.low_rank.rank = resolve_rank(r, config_.rank_ratio, tokens, hd_);
    s.low_rank.power_iters = config_.power_iters;
    s.low_rank.exact_svd = config_.exact_svd;
    // Seeded by the block's index within its row: a row's compression does not depend on its batch
    // neighbours (identical rows stay identical), and is reproducible.
    s.low_rank.seed = config_.seed + uint64_t(layer_) * 1000003u + uint64_t(block) * 2 + (key ? 0 : 1);
  }
  return s;
}

// Compresses the oldest `tokens` of the row's buffer into one block per side.
void GearCache::compress_front(Row& row, int64_t tokens, bool prefill) {
  if (tokens <= 0) return;
  const int64_t block = int64_t(row.k.blocks.size());
  for (bool key : {true, false}) {
    Side& side = key ? row.k : row.v;
    at::Tensor x = side.buffer.narrow(1, 0, tokens);
    side.blocks.push_back(compress_block(x, settings(key, prefill, tokens, block)));
    if (config_.dequant_cache)
      side.recon = cat_tokens(side.recon, decompress_block(side.blocks.back()).to(options_.dtype()));
    side.buffer = side.buffer.narrow(1, tokens, side.buffer.size(1) - tokens).clone();
  }
  row.compressed += tokens;
}

at::Tensor GearCache::reconstructed(const Side& side) const {
  if (config_.dequant_cache || side.blocks.empty()) return side.recon;
  std::vector<at::Tensor> parts;
  for (const GearBlock& b : side.blocks) parts.push_back(decompress_block(b).to(options_.dtype()));
  return at::cat(parts, 1);
}

std::pair<at::Tensor, at::Tensor> GearCache::row_kv(const Row& row) const {
  auto side_kv = [&](const Side& s) {
    at::Tensor buf = s.buffer.defined() ? s.buffer.to(options_.dtype()) : at::Tensor();
    at::Tensor all = cat_tokens(reconstructed(s), buf);
    return all.defined() ? all : at::empty({nkv_, 0, hd_}, options_);
  };
  return {side_kv(row.k), side_kv(row.v)};
}

void GearCache::append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) {
  if (step.kind == StepInfo::Kind::Prefill) {
    Row& row = rows_.at(step.row);
    require(row.compressed + row.buffered() == step.start,
            "gear cache: prefill at position " + std::to_string(step.start) + " but the row holds " +
                std::to_string(row.compressed + row.buffered()) + " tokens");
    require(step.start + step.n_new <= capacity_, "kv cache: " + std::to_string(step.start + step.n_new) +
                                                      " tokens exceed the context of " + std::to_string(capacity_));
    pending_k_ = k, pending_v_ = v;  // exact for the prompt's own attention; buffered after it
    return;
  }
  const int64_t B = k.size(0);
  require(B == int64_t(rows_.size()), "gear cache: decode batch " + std::to_string(B) + " != cache batch " +
                                          std::to_string(rows_.size()));
  for (int64_t b = 0; b < B; ++b) {
    Row& row = rows_[b];
    require(row.compressed + row.buffered() < capacity_,
            "kv cache: context of " + std::to_string(capacity_) + " tokens is full");
    row.k.buffer = cat_tokens(row.k.buffer, k[b].to(at::kHalf));  // [nkv, 1, hd]
    row.v.buffer = cat_tokens(row.v.buffer, v[b].to(at::kHalf));
  }
}

at::Tensor GearCache::attend(const StepInfo& step, const at::Tensor& q) {
  if (step.kind == StepInfo::Kind::Prefill) {
    Row& row = rows_.at(step.row);
    auto [k_old, v_old] = row_kv(row);
    at::Tensor out = prefill_attention(q, cat_tokens(k_old, pending_k_.to(options_.dtype())),
                                       cat_tokens(v_old, pending_v_.to(options_.dtype())), step.start);
    row.k.buffer = cat_tokens(row.k.buffer, pending_k_.to(at::kHalf));
    row.v.buffer = cat_tokens(row.v.buffer, pending_v_.to(at::kHalf));
    pending_k_ = pending_v_ = at::Tensor();
    const int64_t a = prefill_alignment();
    compress_front(row, row.buffered() / a * a, /*prefill=*/true);
    return out;
  }
  // Decode: each row's K/V reconstructed, padded to the longest row, standard attention.
  const int64_t B = q.size(0);
  int64_t longest = 0;
  for (const Row& row : rows_) longest = std::max(longest, row.compressed + row.buffered());
  at::Tensor K = at::zeros({B, nkv_, longest, hd_}, options_), V = at::zeros_like(K);
  std::vector<int64_t> lengths(B);
  for (int64_t b = 0; b < B; ++b) {
    auto [kb, vb] = row_kv(rows_[b]);
    lengths[b] = kb.size(1);
    K[b].narrow(1, 0, lengths[b]).copy_(kb);
    V[b].narrow(1, 0, lengths[b]).copy_(vb);
  }
  at::Tensor out = decode_attention(q, K, V, at::tensor(lengths, at::kLong).to(q.device()));
  for (Row& row : rows_)
    if (row.buffered() >= config_.stream_gap) compress_front(row, config_.stream_gap, /*prefill=*/false);
  return out;
}

std::pair<at::Tensor, at::Tensor> GearCache::view(int row) const { return row_kv(rows_.at(row)); }

ByteBreakdown GearCache::bytes() const {
  ByteBreakdown t;
  for (const Row& row : rows_) {
    for (const Side* s : {&row.k, &row.v}) {
      for (const GearBlock& b : s->blocks) {
        t.codes += b.code_bytes();
        t.scales += b.scale_bytes();
        t.sparse += b.sparse_bytes();
        t.low_rank += b.low_rank_bytes();
      }
      t.full += bytes_of(s->buffer);
    }
  }
  t.reserved = t.in_use();
  return t;
}

void GearCache::clear_row(int row) { rows_.at(row) = Row(); }

}  // namespace gear
