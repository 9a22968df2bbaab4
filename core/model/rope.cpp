#include "core/model/rope.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

namespace gear {
namespace {

// Llama-3.1 rescaling: long wavelengths are slowed by `factor`, short ones kept, and the band in
// between interpolated smoothly (as in Meta's reference apply_scaling).
double llama3_scale(double freq, const RopeScaling& s) {
  const double kPi = 3.14159265358979323846;
  const double low_wavelen = s.original_max_position / s.low_freq_factor;
  const double high_wavelen = s.original_max_position / s.high_freq_factor;
  const double wavelen = 2 * kPi / freq;
  if (wavelen < high_wavelen) return freq;
  if (wavelen > low_wavelen) return freq / s.factor;
  const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  return (1 - smooth) * freq / s.factor + smooth * freq;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> rope_tables(const ModelConfig& c, at::Device device) {
  const int half = c.hd() / 2;
  std::vector<double> freq(half);
  for (int i = 0; i < half; ++i) {
    freq[i] = std::pow(double(c.rope_theta), -2.0 * i / c.hd());
    if (c.rope_scaling.llama3) freq[i] = llama3_scale(freq[i], c.rope_scaling);
  }
  // Angles in double, then float32: llama2.c computes them in float32 per position, and the
  // reference traces match either way to well under 1e-3.
  at::Tensor f = at::tensor(freq, at::kDouble);
  at::Tensor pos = at::arange(c.max_seq_len, at::kDouble).div_(c.rope_scaling.linear_factor);
  at::Tensor angles = at::outer(pos, f);
  return {at::cos(angles).to(at::kFloat).to(device), at::sin(angles).to(at::kFloat).to(device)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, RopeLayout layout) {
  const int64_t hd = x.size(-1), half = hd / 2;
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor a, b;  // the two members of each rotated pair
  if (layout == RopeLayout::Adjacent) {
    at::Tensor pairs = xf.unflatten(-1, {half, 2});
    a = pairs.select(-1, 0);
    b = pairs.select(-1, 1);
  } else {
    a = xf.narrow(-1, 0, half);
    b = xf.narrow(-1, half, half);
  }
  at::Tensor ra = a * cos - b * sin;
  at::Tensor rb = a * sin + b * cos;
  at::Tensor out = layout == RopeLayout::Adjacent ? at::stack({ra, rb}, -1).flatten(-2) : at::cat({ra, rb}, -1);
  return out.to(x.scalar_type());
}

}  // namespace gear
