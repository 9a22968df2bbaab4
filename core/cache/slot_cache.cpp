#include "core/cache/slot_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/util/error.h"

namespace gear {
namespace {

struct Scored {
  at::Tensor out;   // attention output, model dtype
  at::Tensor mass;  // float32 probabilities summed per kv head (undefined unless asked)
};

// The same math as prefill_attention (core/cache/attention.cpp), keeping the float32
// probabilities. q [nh, n, hd]; k, v [nkv, S, hd]; query i sees keys j <= start + i.
// mass: [nkv, S], summed over the group's query heads and the n queries.
Scored scored_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start, bool want_mass) {
  const int64_t n_heads = q.size(0), n = q.size(1), hd = q.size(2);
  const int64_t n_kv = k.size(0), S = k.size(1), group = n_heads / n_kv;
  at::Tensor qg = q.reshape({n_kv, group * n, hd});
  at::Tensor scores = at::matmul(qg, k.transpose(1, 2)).mul_(1.0 / std::sqrt(double(hd)));
  scores = scores.view({n_kv, group, n, S});
  at::Tensor qpos = at::arange(start, start + n, q.options().dtype(at::kLong)).view({n, 1});
  at::Tensor kpos = at::arange(S, q.options().dtype(at::kLong)).view({1, S});
  scores = scores.masked_fill(kpos > qpos, -std::numeric_limits<float>::infinity());
  at::Tensor p = at::softmax(scores.to(at::kFloat), -1);  // float32 whatever the storage dtype
  Scored r;
  r.out = at::matmul(p.to(v.scalar_type()).view({n_kv, group * n, S}), v).view({n_heads, n, hd});
  if (want_mass) r.mass = p.sum({1, 2});
  return r;
}

// The same math as decode_attention. q [B, nh, 1, hd]; k, v [B, nkv, S, hd]; keys < lengths[b]
// are valid. mass: [B, nkv, S], summed over the group's query heads.
Scored scored_decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lengths,
                     bool want_mass) {
  const int64_t B = q.size(0), n_heads = q.size(1), hd = q.size(3);
  const int64_t n_kv = k.size(1), S = k.size(2), group = n_heads / n_kv;
  at::Tensor qg = q.reshape({B, n_kv, group, hd});
  at::Tensor scores = at::matmul(qg, k.transpose(2, 3)).mul_(1.0 / std::sqrt(double(hd)));  // [B, nkv, g, S]
  at::Tensor kpos = at::arange(S, lengths.options()).view({1, 1, 1, S});
  scores = scores.masked_fill(kpos >= lengths.view({B, 1, 1, 1}), -std::numeric_limits<float>::infinity());
  at::Tensor p = at::softmax(scores.to(at::kFloat), -1);
  Scored r;
  r.out = at::matmul(p.to(v.scalar_type()), v).view({B, n_heads, 1, hd});
  if (want_mass) r.mass = p.sum(2);
  return r;
}

}  // namespace

SlotCache::SlotCache(int batch, int n_kv_heads, int head_dim, int64_t capacity, int64_t steady_slots, bool track_mass,
                     at::TensorOptions options)
    : count_(size_t(batch), 0), capacity_(capacity), steady_slots_(steady_slots) {
  require(batch > 0 && n_kv_heads > 0 && head_dim > 0,
          "kv cache: batch, kv heads and head dim must be positive, got " + std::to_string(batch) + ", " +
              std::to_string(n_kv_heads) + ", " + std::to_string(head_dim));
  require(capacity > 0 && steady_slots > 0, "kv cache: capacity must be positive, got " + std::to_string(capacity));
  k_ = at::zeros({batch, n_kv_heads, steady_slots, head_dim}, options);
  v_ = at::zeros_like(k_);
  if (track_mass) mass_ = at::zeros({batch, n_kv_heads, steady_slots}, options.dtype(at::kFloat));
}

void SlotCache::ensure_slots(int64_t n) {
  const int64_t slots = k_.size(2);
  if (n <= slots) return;
  auto grow = [&](at::Tensor& t) {
    std::vector<int64_t> shape = t.sizes().vec();
    shape[2] = n;
    at::Tensor bigger = at::zeros(shape, t.options());
    bigger.narrow(2, 0, slots).copy_(t);
    t = bigger;
  };
  grow(k_);
  grow(v_);
  if (mass_.defined()) grow(mass_);
}

// A long prompt grows the storage; once it is compressed, give the memory back so `reserved`
// reflects the steady state.
void SlotCache::shrink_to_fit() {
  const int64_t longest = *std::max_element(count_.begin(), count_.end());
  const int64_t target = std::max(steady_slots_, longest);
  if (k_.size(2) <= target) return;
  auto shrink = [&](at::Tensor& t) { t = t.narrow(2, 0, target).clone(at::MemoryFormat::Contiguous); };
  shrink(k_);
  shrink(v_);
  if (mass_.defined()) shrink(mass_);
}

void SlotCache::append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) {
  if (step.kind == StepInfo::Kind::Prefill) {
    require(step.row >= 0 && step.row < int(count_.size()),
            "kv cache: row " + std::to_string(step.row) + " is outside the batch of " + std::to_string(count_.size()));
    require(step.start + step.n_new <= capacity_, "kv cache: " + std::to_string(step.start + step.n_new) +
                                                      " tokens exceed the context of " + std::to_string(capacity_));
    int64_t& n = count_[size_t(step.row)];
    ensure_slots(n + step.n_new);
    k_[step.row].narrow(1, n, step.n_new).copy_(k);
    v_[step.row].narrow(1, n, step.n_new).copy_(v);
    if (mass_.defined()) mass_[step.row].narrow(1, n, step.n_new).zero_();
    n += step.n_new;
    return;
  }
  require(step.max_len <= capacity_, "kv cache: context of " + std::to_string(capacity_) + " tokens is full");
  const int64_t B = k_.size(0), H = k_.size(1), D = k_.size(3);
  require(k.size(0) == B, "kv cache: decode step of " + std::to_string(k.size(0)) + " rows for a batch of " +
                              std::to_string(B));
  ensure_slots(*std::max_element(count_.begin(), count_.end()) + 1);
  // Each row's new token goes to its own next free slot (host counts, not the positions).
  at::Tensor slot = at::tensor(count_, at::kLong).to(k_.device()).view({B, 1, 1, 1});
  k_.scatter_(2, slot.expand({B, H, 1, D}), k);
  v_.scatter_(2, slot.expand({B, H, 1, D}), v);
  if (mass_.defined()) mass_.scatter_(2, slot.view({B, 1, 1}).expand({B, H, 1}), 0.0);
  for (auto& n : count_) ++n;
}

at::Tensor SlotCache::attend(const StepInfo& step, const at::Tensor& q) {
  const bool want_mass = mass_.defined();
  if (step.kind == StepInfo::Kind::Prefill) {
    const int row = step.row;
    const int64_t n = kept(row);
    Scored s = scored_prefill(q, k_[row].narrow(1, 0, n), v_[row].narrow(1, 0, n), n - step.n_new, want_mass);
    if (want_mass) mass_[row].narrow(1, 0, n).add_(s.mass);
    compress(row, /*prefill=*/true);
    shrink_to_fit();
    return s.out;
  }
  const int64_t S = *std::max_element(count_.begin(), count_.end());
  at::Tensor lengths = at::tensor(count_, at::kLong).to(k_.device());
  Scored s = scored_decode(q, k_.narrow(2, 0, S), v_.narrow(2, 0, S), lengths, want_mass);
  if (want_mass) mass_.narrow(2, 0, S).add_(s.mass);
  for (int row = 0; row < int(count_.size()); ++row) compress(row, /*prefill=*/false);
  shrink_to_fit();
  return s.out;
}

std::pair<at::Tensor, at::Tensor> SlotCache::view(int row) const {
  const int64_t n = kept(row);
  return {k_[row].narrow(1, 0, n), v_[row].narrow(1, 0, n)};
}

at::Tensor SlotCache::attention_mass(int row) const {
  return mass_.defined() ? mass_[row].narrow(1, 0, kept(row)) : at::Tensor();
}

void SlotCache::replace_row(int row, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mass) {
  const int64_t n = k.size(1);
  k_[row].narrow(1, 0, n).copy_(k);
  v_[row].narrow(1, 0, n).copy_(v);
  if (mass_.defined()) mass_[row].narrow(1, 0, n).copy_(mass);
  count_.at(size_t(row)) = n;
}

ByteBreakdown SlotCache::bytes() const {
  const int64_t kept_total = std::accumulate(count_.begin(), count_.end(), int64_t(0));
  const int64_t heads = k_.size(1), hd = k_.size(3), elem = k_.element_size();
  ByteBreakdown b;
  b.full = kept_total * 2 * heads * hd * elem;
  b.reserved = (k_.numel() + v_.numel()) * elem;
  if (mass_.defined()) {
    b.scales = kept_total * heads * int64_t(sizeof(float));
    b.reserved += mass_.numel() * int64_t(sizeof(float));
  }
  return b;
}

void SlotCache::clear_row(int row) { count_.at(size_t(row)) = 0; }

}  // namespace gear
