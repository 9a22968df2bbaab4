#pragma once
// Next-token choice on the device: greedy, or temperature with top-k / top-p, seeded.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace gear {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  float top_p = 1.0f;        // nucleus mass kept, in (0, 1]
  int top_k = 0;             // 0 = no top-k cut
  uint64_t seed = 0;
  void validate() const;     // throws gear::Error naming the bad value
  std::string describe() const;
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, at::Device device);
  // logits [B, vocab] float32 -> [B] int64 on the same device. No host sync.
  at::Tensor sample(const at::Tensor& logits);

 private:
  SamplingParams params_;
  at::Generator generator_;
};

}  // namespace gear
