#pragma once
// Storage shared by the policies that keep fewer tokens than the sequence has (pyramid merging,
// StreamingLLM, H2O). Each row holds a variable number of token "slots" in the model dtype;
// a slot is a kept token or, for merging policies, a pooled group of tokens. Keys are stored
// after RoPE at their absolute positions, so dropping or merging slots never re-rotates anything
// and attention needs no positions: slot order is time order and causality only matters among
// the new tokens of a prefill chunk.
//
// The per-row slot counts live on the host (they depend only on how many tokens arrived and on
// each policy's budget, never on tensor values), so the step's device `positions` are never
// used as indices here. A subclass decides what to keep in compress(), which runs after the
// step's attention: the prompt's own attention is exact, then the row is reduced to budget.
//
// Attention mass (optional, for H2O and "best" pooling): for every kept slot and kv head, the
// float32 sum of the softmax probabilities it has received, summed over the query heads of that
// kv head's GQA group and over every query so far (all prompt queries of a prefill chunk, one per
// decode step). It is accumulated per row per kv head because K/V are stored per kv head, so one
// kept/merged decision is made per kv head (as H2O does per head).
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "core/cache/kv_cache.h"

namespace gear {

class SlotCache : public CachePolicy {
 public:
  void append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) override;
  // Attention over the kept slots (softmax in float32, GQA), mass accumulation, then compress()
  // on every row the step touched.
  at::Tensor attend(const StepInfo& step, const at::Tensor& q) override;
  std::pair<at::Tensor, at::Tensor> view(int row) const override;
  // full: kept K/V in the model dtype; scales: the float32 attention-mass table of the kept slots
  // (when tracked); reserved: everything allocated (K, V and mass storage).
  ByteBreakdown bytes() const override;
  void clear_row(int row) override;

  int64_t kept(int row) const { return count_.at(size_t(row)); }
  // Mass received by each kept slot of `row`, [n_kv_heads, kept] float32; undefined when the
  // policy does not track it.
  at::Tensor attention_mass(int row) const;
  int64_t allocated_slots() const { return k_.size(2); }

 protected:
  // `steady_slots`: the per-row storage kept allocated between steps (budget + the token a
  // decode step adds before compressing); prefill grows it on demand and shrinks it back.
  SlotCache(int batch, int n_kv_heads, int head_dim, int64_t capacity, int64_t steady_slots, bool track_mass,
            at::TensorOptions options);

  // Reduces `row` after the step's attention; `prefill` says which kind of step it was.
  virtual void compress(int row, bool prefill) = 0;
  // Overwrites `row` with new contents [n_kv, n, hd] (mass [n_kv, n], or undefined when not
  // tracked). The tensors must not alias the storage (build them with cat/gather).
  void replace_row(int row, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mass);
  bool tracks_mass() const { return mass_.defined(); }

 private:
  void ensure_slots(int64_t n);
  void shrink_to_fit();

  at::Tensor k_, v_;              // [B, n_kv, slots, hd], model dtype
  at::Tensor mass_;               // [B, n_kv, slots] float32, or undefined
  std::vector<int64_t> count_;    // kept slots per row (host)
  int64_t capacity_ = 0;          // longest sequence (absolute positions) a row may reach
  int64_t steady_slots_ = 0;
};

}  // namespace gear
