#include "core/eval/metrics.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>

#include "core/util/error.h"

namespace gear {
namespace {

// Rows per float64 chunk: bounds the temporary memory for a 128k vocabulary at long contexts.
constexpr int64_t kChunk = 256;

at::Tensor log_probs(const at::Tensor& logits) { return at::log_softmax(logits.to(at::kDouble), -1); }

}  // namespace

double perplexity_from_logits(const at::Tensor& logits, const std::vector<int>& targets) {
  c10::InferenceMode guard;
  require(logits.dim() == 2, "perplexity: logits must be [positions, vocab]");
  const int64_t n = logits.size(0), vocab = logits.size(1);
  require(n > 0 && n == int64_t(targets.size()), "perplexity: " + std::to_string(n) + " rows of logits for " +
                                                     std::to_string(targets.size()) + " targets");
  for (int t : targets)
    require(t >= 0 && t < vocab, "perplexity: target " + std::to_string(t) + " is outside the vocabulary");
  const at::Tensor idx = at::tensor(std::vector<int64_t>(targets.begin(), targets.end()), at::kLong)
                             .to(logits.device()).unsqueeze(1);
  double nll = 0;
  for (int64_t r = 0; r < n; r += kChunk) {
    const int64_t m = std::min(kChunk, n - r);
    nll -= log_probs(logits.narrow(0, r, m)).gather(1, idx.narrow(0, r, m)).sum().item<double>();
  }
  return std::exp(nll / double(n));
}

Agreement compare_distributions(const at::Tensor& reference, const at::Tensor& logits) {
  c10::InferenceMode guard;
  require(reference.dim() == 2 && reference.sizes() == logits.sizes(),
          "compare: the method's logits do not have the reference's shape");
  const int64_t n = reference.size(0);
  require(n > 0, "compare: no positions to compare");
  Agreement a;
  double kl_sum = 0, agree = 0;
  for (int64_t r = 0; r < n; r += kChunk) {
    const int64_t m = std::min(kChunk, n - r);
    const at::Tensor ref = reference.narrow(0, r, m), got = logits.narrow(0, r, m).to(reference.device());
    const at::Tensor lp = log_probs(ref), lq = log_probs(got);
    // Rounding can make a KL of identical rows a hair below zero: clamp, it is a divergence.
    const at::Tensor kl = (lp.exp() * (lp - lq)).sum(-1).clamp_min(0);
    kl_sum += kl.sum().item<double>();
    a.kl_max = std::max(a.kl_max, kl.max().item<double>());
    agree += ref.argmax(-1).eq(got.argmax(-1)).sum().item<double>();
  }
  a.kl_mean = kl_sum / double(n);
  a.top1 = agree / double(n);
  return a;
}

}  // namespace gear
