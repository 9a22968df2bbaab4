#include "core/cache/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

// LibTorch >= 2.1 has scaled_dot_product_attention with a scale argument; Debian's 1.13 has no
// torch/version.h and no such function.
#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))
#define GEARLAB_HAVE_SDPA 1
#else
#define GEARLAB_HAVE_SDPA 0
#endif

namespace gear {
namespace {

// Softmax in float32 whatever the storage dtype: fp16 exponent sums overflow on long contexts.
at::Tensor softmax_f32(const at::Tensor& scores, at::ScalarType out) {
  return at::softmax(scores.to(at::kFloat), -1).to(out);
}

// One block of queries (positions start .. start+n-1) against all S keys.
at::Tensor prefill_block(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) {
  const int64_t n_heads = q.size(0), n = q.size(1), hd = q.size(2);
  const int64_t n_kv = k.size(0), S = k.size(1), group = n_heads / n_kv;
  // Group query heads under their kv head so K/V are broadcast, never copied (GQA).
  at::Tensor qg = q.reshape({n_kv, group * n, hd});
  at::Tensor scores = at::matmul(qg, k.transpose(1, 2)).mul_(1.0 / std::sqrt(double(hd)));  // [n_kv, g*n, S]
  scores = scores.view({n_kv, group, n, S});
  // Query i (position start+i) may see key j iff j <= start + i.
  at::Tensor qpos = at::arange(start, start + n, q.options().dtype(at::kLong)).view({n, 1});
  at::Tensor kpos = at::arange(S, q.options().dtype(at::kLong)).view({1, S});
  scores = scores.masked_fill(kpos > qpos, -std::numeric_limits<float>::infinity());
  at::Tensor p = softmax_f32(scores, v.scalar_type()).view({n_kv, group * n, S});
  return at::matmul(p, v).view({n_heads, n, hd});
}

}  // namespace

// Queries go in blocks so the float32 score matrix stays near 64 MiB: a 4000-token Llama-2-7B prompt
// would otherwise materialise ~6 GiB of scores and softmax temporaries, which would dominate peak memory
// (and the batch that fits a budget) for every cache alike. A block's temporaries (scores in the model dtype,
// the masked copy, float32 scores and softmax, the probabilities) are ~14 bytes a score: at 256 MiB blocks
// they were a 0.93 GB transient at 3.8k tokens, the peak of every budget run (H100, docs/kernels.md). Each
// query row's softmax is unchanged.
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) {
  const int64_t n_heads = q.size(0), n = q.size(1), S = k.size(1);
#if GEARLAB_HAVE_SDPA
  // A fresh prompt on the GPU with one query head per kv head (queries = keys, causal from the first token):
  // LibTorch's fused attention (flash / memory-efficient kernels) never materialises the scores, so a prompt's
  // attention needs no transient beyond its output. Other cases (a prompt after cached tokens; GQA, whose
  // grouped heads some backends serve only with the materialising math kernel; the CPU) take the blocks below.
  if (q.is_cuda() && start == 0 && S == n && k.size(0) == n_heads &&
      (q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16))
    return at::scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), {}, 0.0, /*is_causal=*/true,
                                            1.0 / std::sqrt(double(q.size(2))))
        .squeeze(0);
#endif
  const int64_t block = std::max<int64_t>(1, (int64_t(1) << 24) / std::max<int64_t>(1, n_heads * S));
  if (n <= block) return prefill_block(q, k, v, start);
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < n; i += block) {
    const int64_t m = std::min(block, n - i);
    // Keys past the block's last query are masked anyway: leave them out.
    const int64_t keys = std::min(S, start + i + m);
    parts.push_back(prefill_block(q.narrow(1, i, m), k.narrow(1, 0, keys), v.narrow(1, 0, keys), start + i));
  }
  return at::cat(parts, 1);
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lengths) {
  const int64_t B = q.size(0), n_heads = q.size(1), hd = q.size(3);
  const int64_t n_kv = k.size(1), S = k.size(2), group = n_heads / n_kv;
  at::Tensor qg = q.reshape({B, n_kv, group, hd});
  at::Tensor scores = at::matmul(qg, k.transpose(2, 3)).mul_(1.0 / std::sqrt(double(hd)));  // [B, n_kv, g, S]
  at::Tensor kpos = at::arange(S, lengths.options()).view({1, 1, 1, S});
  at::Tensor invalid = kpos >= lengths.view({B, 1, 1, 1});
  scores = scores.masked_fill(invalid, -std::numeric_limits<float>::infinity());
  at::Tensor p = softmax_f32(scores, v.scalar_type());
  return at::matmul(p, v).view({B, n_heads, 1, hd});
}

}  // namespace gear
