#pragma once
// Quality metrics of next-token distributions, from logits: perplexity of the true tokens, and how
// far a method's distributions are from the FP16 reference's (KL, top-1 agreement). Everything is
// accumulated in float64 so differences of 1e-6 between methods are not rounding noise.
#include <ATen/core/Tensor.h>

#include <vector>

namespace gear {

// exp(-mean log p(targets[i] | logits[i])) over the rows of `logits` [n, vocab] (any device/dtype).
double perplexity_from_logits(const at::Tensor& logits, const std::vector<int>& targets);

struct Agreement {
  double kl_mean = 0, kl_max = 0;  // KL(reference || method) per position, nats
  double top1 = 0;                 // fraction of positions whose argmax equals the reference's
};

// Row by row: KL(softmax(reference[i]) || softmax(logits[i])) and argmax agreement. Both [n, vocab].
Agreement compare_distributions(const at::Tensor& reference, const at::Tensor& logits);

}  // namespace gear
