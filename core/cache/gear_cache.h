#pragma once
// GEAR's cache policy (and every quantization baseline, which is GEAR without L and S):
// compressed blocks of Q (+ L) (+ S) per row, plus GEAR's streaming buffer.
//
// Prefill: the prompt's own attention runs on its exact K/V; afterwards the prompt is compressed as
// one block (prefill ranks), except a tail shorter than the backbone's token group (per-channel keys
// need whole groups of tokens), which stays in the buffer. Decode: each new token goes into an FP16
// streaming buffer; when the buffer holds n_b = stream_gap tokens they are compressed together as one
// block (block ranks). KIVI is the same mechanism with the KIVI backbone and n_b = its residual length.
//
// Storage is truly compressed: packed codes, fp16 scales/zero points, fp16 outliers + int16/32 indices,
// fp16 low-rank factors, an fp16 buffer; bytes() counts exactly those. Attention in this ATen reference
// path reconstructs K/V and calls standard attention; with CacheConfig::dequant_cache it keeps the
// reconstruction of the (immutable) compressed blocks as a working copy instead of redoing it every
// step -- a compute cache, not part of the method's footprint (the fused kernels of kernels/ read the
// compressed bytes directly).
#include <ATen/core/Tensor.h>

#include <vector>

#include "core/cache/kv_cache.h"
#include "core/compression/cache_config.h"
#include "core/compression/gear_block.h"

namespace gear {

class GearCache : public CachePolicy {
 public:
  GearCache(int layer, int batch, int n_kv_heads, int head_dim, int64_t capacity, at::TensorOptions options,
            const CacheConfig& config);

  std::string name() const override { return name_; }
  void append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) override;
  at::Tensor attend(const StepInfo& step, const at::Tensor& q) override;
  std::pair<at::Tensor, at::Tensor> view(int row) const override;
  ByteBreakdown bytes() const override;
  void clear_row(int row) override;

  // For analysis and visualization.
  const std::vector<GearBlock>& key_blocks(int row) const { return rows_.at(row).k.blocks; }
  const std::vector<GearBlock>& value_blocks(int row) const { return rows_.at(row).v.blocks; }
  int64_t buffered(int row) const { return rows_.at(row).buffered(); }
  int64_t compressed(int row) const { return rows_.at(row).compressed; }
  const CacheConfig& config() const { return config_; }

 private:
  struct Side {
    std::vector<GearBlock> blocks;
    at::Tensor recon;   // [nkv, compressed, hd] model dtype: the blocks reconstructed (dequant_cache only)
    at::Tensor buffer;  // [nkv, buffered, hd] fp16: the streaming buffer
  };
  struct Row {
    Side k, v;
    int64_t compressed = 0;  // tokens in blocks
    int64_t buffered() const { return k.buffer.defined() ? k.buffer.size(1) : 0; }
  };

  BlockSettings settings(bool key, bool prefill, int64_t tokens, int64_t block) const;
  int64_t prefill_alignment() const;
  void compress_front(Row& row, int64_t tokens, bool prefill);
  at::Tensor reconstructed(const Side& side) const;       // the compressed part, model dtype
  std::pair<at::Tensor, at::Tensor> row_kv(const Row& row) const;

  CacheConfig config_;
  std::string name_;
  int layer_ = 0, nkv_ = 0, hd_ = 0;
  int64_t capacity_ = 0;
  at::TensorOptions options_;
  std::vector<Row> rows_;
  at::Tensor pending_k_, pending_v_;  // a prefill chunk's exact K/V between append and attend
};

}  // namespace gear
