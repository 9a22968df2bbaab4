#pragma once
// GEAR / KIVI on the GPU: the same method and behaviour as GearCache (gear_cache.h), stored in the
// compressed layout of kernels/kernels.h (one kernels::CompressedKV per layer, in ATen tensors) and
// served by the fused kernels of kernels/: compression of a block with extract_outliers /
// quantize_keys / quantize_values / sparse_to_tiles (+ core's ATen low_rank() on the residual), and
// decode attention straight from the compressed bytes with compressed_attention (no K/V reconstruction
// on the decode path).
//
// Behaviour (GearCache's): prefill attends the chunk on its exact K/V, then the row's buffer plus the
// chunk is compressed as one block with the prefill ranks, except a tail shorter than the key group G,
// which stays in the fp16 streaming buffer. Decode appends each row's token to its buffer, attends, and
// compresses a row's buffer as one block (block ranks) once it holds stream_gap tokens. Ranks, power
// iterations and seeds are GearCache's, so both produce the same blocks up to the kernels' documented
// rounding / tie differences.
//
// Prefill attention over a row that already holds tokens (a later chat turn) and view() reconstruct
// the row's K/V from the layout in ATen (dequantize kernels + A·B + outliers + buffer), as
// kernels/reference.cpp's reconstruct_row defines them.
//
// On a CPU device the same layout is driven through the float64 references of kernels/reference.h
// instead of the kernels (slow; it exists so the layout bookkeeping is tested in CPU builds). make_cache
// only ever builds this policy on CUDA (supports()).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/cache/kv_cache.h"
#include "core/compression/cache_config.h"
#include "kernels/kernels.h"

namespace gear {

// Device scratch shared by every layer of one KvCache (compressed_attention's split workspace), grown
// on demand. Layers run one after another on one stream, so one buffer serves them all.
struct KernelWorkspace {
  at::Tensor buffer;  // uint8, on the device
  // At least `bytes` bytes (16-byte aligned) on the device of `like`; nullptr when bytes == 0.
  void* get(std::size_t bytes, const at::TensorOptions& like);
};

class GearCudaCache : public CachePolicy {
 public:
  // sparse_cap: initial outlier pool per (row, kv head) and side; 0 = sized from the settings (tests
  // pass a small one to exercise the pools' growth).
  GearCudaCache(int layer, int batch, int n_kv_heads, int head_dim, int64_t capacity, at::TensorOptions options,
                const CacheConfig& config, std::shared_ptr<KernelWorkspace> workspace = nullptr,
                int64_t sparse_cap = 0);

  // "" when the fused path supports these settings and this model on this build, else the reason (one
  // line): not a CUDA device, a build without CUDA, a dtype other than f16/bf16, a backbone other than
  // per-channel keys in groups of 16/32/64/128 tokens + per-token values in groups that are a multiple
  // of 8 dividing the head dim (or whole heads), bits other than 2/4/8, ranks above 8, a head dim that
  // is not a multiple of 8 up to 1024, a streaming gap that is not a multiple of the key group, or
  // anything else the kernels reject. n_kv_heads and capacity refine the check (value groups spanning
  // heads, outlier counts) when known.
  static std::string supports(const CacheConfig& config, int head_dim, at::Device device, at::ScalarType dtype,
                              int n_kv_heads = 1, int64_t capacity = 0);
  // Whether decode attention runs straight from the compressed bytes at this head dim (64 or 128). Other
  // head dims reconstruct each row's K/V every step (correct, slow): --impl auto then prefers GearCache.
  static bool fused_attention(int head_dim);

  std::string name() const override { return name_; }
  void append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) override;
  // Decode on CUDA with an f16 model: RoPE and the append into each row's buffer at its fill level in one
  // kernel (rope_qkv_append with slots = n_buf), as FullCache does; otherwise undefined (the model rotates
  // q/k with ATen ops and calls append).
  at::Tensor append_fused(const StepInfo& step, const FusedQkv& in) override;
  at::Tensor attend(const StepInfo& step, const at::Tensor& q) override;
  std::pair<at::Tensor, at::Tensor> view(int row) const override;
  ByteBreakdown bytes() const override;
  void clear_row(int row) override;

  int64_t buffered(int row) const { return rows_.at(row).n_buf; }
  int64_t compressed(int row) const { return rows_.at(row).n_comp; }
  int64_t sparse_capacity() const {
    settle();
    return kv_.sparse_cap;
  }
  const kernels::CompressedKV& layout() const {
    settle();
    return kv_;
  }
  const CacheConfig& config() const { return config_; }

 private:
  struct RowState {
    int64_t n_comp = 0, n_buf = 0;  // compressed tokens (a multiple of G), buffered tokens
    int64_t blocks = 0;             // compressed blocks (the prompt's, then one per streaming gap); with low rank
                                    // each has its B, at this index
    int64_t sparse_k = 0, sparse_v = 0;  // outlier entries held (all heads)
  };
  // The layout's arrays; kv_ points into them (bind() after any reallocation).
  struct Arrays {
    at::Tensor k_codes, k_scale, k_zero, v_codes, v_scale, v_zero;
    at::Tensor lr_block, k_lr_a, k_lr_b, v_lr_a, v_lr_b;
    at::Tensor k_sp_off, k_sp_pos, k_sp_val, v_sp_off, v_sp_pos, v_sp_val;
    at::Tensor k_sp_corr, v_sp_corr;  // fp16 corrections of the entries (CUDA, instead of k_sp_val / v_sp_val)
    at::Tensor k_buf, v_buf, n_comp, n_buf;
    at::Tensor overflow;  // int32 [2]: sparse_to_tiles' overflow flags (keys, values)
  };

  void bind();
  void upload_lengths();
  int64_t ranks_for(bool key, bool prefill, int64_t tokens) const;
  // Compresses the first T tokens of each listed row's source block (fp16 [n, nkv, x_cap, hd], block i
  // for rows[i]) into the layout after the row's compressed tokens, one block per row.
  void compress(const std::vector<int>& rows, const at::Tensor& xk, const at::Tensor& xv, int64_t T, bool prefill);
  bool check_decode_rows(int64_t B) const;
  void store_low_rank(bool key, const std::vector<int>& rows, int64_t T, const at::Tensor& A, const at::Tensor& B);
  void store_outliers(bool key, const at::Tensor& values, const at::Tensor& index, int n, int64_t T, int k,
                      const at::Tensor& dst_row, const at::Tensor& dst_tile, bool deferred, int64_t need = 0);
  void grow_sparse(int64_t at_least);
  void grow_low_rank(int64_t at_least);  // room for at least that many low-rank blocks per row
  void shift_buffer(int row, int64_t tokens);  // drops the oldest `tokens` of the row's buffer
  at::Tensor reconstruct(bool key, int row) const;  // float32 [nkv, n_comp, hd] of the compressed part
  std::pair<at::Tensor, at::Tensor> row_kv(int row) const;  // model dtype, [nkv, len, hd] each
  at::Tensor ints(const std::vector<int32_t>& v) const;      // int32 on the layout's device
  // A compressed block whose outlier pools' overflow flags are still on their way to the host: compress() queues
  // their copy behind the block's work instead of waiting for it (a host sync a layer and block, which drained the
  // stream in the middle of a decode step). settle() reads them before anything reads or writes the pools again —
  // every public entry point but append — and for a side that overflowed grows the pools, stores the block again
  // and recomputes its corrections, as compress() did before. Const: it completes queued work; what the cache
  // holds does not change meaning.
  struct PendingBlock {
    bool active = false;
    at::Tensor values[2], index[2];  // the block's outliers (keys, values), for a second store
    at::Tensor drow, dtile;          // its destinations (device int32)
    int n = 0, k[2] = {0, 0};
    int64_t T = 0;
  };
  void settle() const;

  CacheConfig config_;
  std::string name_;
  int layer_ = 0, batch_ = 0, nkv_ = 0, hd_ = 0;
  int64_t capacity_ = 0;
  at::TensorOptions options_;
  bool cuda_ = false;  // kernels (CUDA) or their float64 references (CPU)
  kernels::CompressedKV kv_;
  Arrays a_;
  std::vector<RowState> rows_;
  std::shared_ptr<KernelWorkspace> workspace_;
  int64_t sparse_limit_ = 0;  // the most entries a (row, head) pool can ever need
  at::Tensor pending_k_, pending_v_;  // a prefill chunk's exact K/V between append and attend
  mutable PendingBlock pending_block_;
  std::shared_ptr<kernels::AsyncRead> flags_read_;  // (CUDA, with outliers) the host copy of a_.overflow
};

}  // namespace gear
