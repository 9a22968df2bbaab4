#include "core/model/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#ifdef GEARLAB_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#include <cmath>
#include <limits>
#include <sstream>

#include "core/util/error.h"

namespace gear {

void SamplingParams::validate() const {
  require(std::isfinite(temperature) && temperature >= 0,
          "sampling: temperature must be >= 0, got " + std::to_string(temperature));
  require(top_p > 0 && top_p <= 1, "sampling: top-p must be in (0, 1], got " + std::to_string(top_p));
  require(top_k >= 0, "sampling: top-k must be >= 0, got " + std::to_string(top_k));
}

std::string SamplingParams::describe() const {
  std::ostringstream s;
  if (temperature == 0) return "greedy";
  s << "temperature " << temperature << ", top-p " << top_p << ", top-k " << top_k << ", seed " << seed;
  return s.str();
}

namespace {

// Each sampler owns its generator, so two chats side by side replay identically for a seed.
at::Generator make_generator(at::Device device, uint64_t seed) {
#ifdef GEARLAB_WITH_CUDA
  if (device.is_cuda()) {
    at::Generator g = at::make_generator<at::CUDAGeneratorImpl>(device.index() < 0 ? 0 : device.index());
    g.set_current_seed(seed);
    return g;
  }
#endif
  require(device.is_cpu(), "sampling: no generator for device " + device.str());
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params, at::Device device)
    : params_(params), generator_(make_generator(device, params.seed)) {
  params_.validate();
}

at::Tensor Sampler::sample(const at::Tensor& logits) {
  if (params_.temperature == 0) return logits.argmax(-1);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::Tensor scaled = logits / params_.temperature;
  if (params_.top_k > 0 && params_.top_k < scaled.size(-1)) {
    at::Tensor kth = std::get<0>(scaled.topk(params_.top_k, -1)).narrow(-1, params_.top_k - 1, 1);
    scaled = scaled.masked_fill(scaled < kth, neg_inf);
  }
  if (params_.top_p < 1) {
    // Keep the smallest prefix of the sorted distribution whose mass reaches top_p.
    auto sorted = scaled.sort(-1, /*descending=*/true);
    at::Tensor probs = at::softmax(std::get<0>(sorted), -1);
    at::Tensor drop_sorted = (probs.cumsum(-1) - probs) > params_.top_p;
    at::Tensor drop = at::zeros_like(drop_sorted).scatter(-1, std::get<1>(sorted), drop_sorted);
    scaled = scaled.masked_fill(drop, neg_inf);
  }
  return at::multinomial(at::softmax(scaled, -1), 1, false, generator_).squeeze(-1);
}

}  // namespace gear
