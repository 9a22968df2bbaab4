#pragma once
// Helpers both kernel test files use: the kernels' dtypes as ATen types, and tensors as host doubles.
#include <ATen/ATen.h>

#include <vector>

#include "kernels/kernels.h"

namespace gear::kernels::testing {

constexpr DType kAllTypes[] = {DType::F32, DType::F16, DType::BF16};

inline const char* name(DType t) { return dtype_name(t); }

inline at::ScalarType scalar_type(DType t) {
  switch (t) {
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
  }
  return at::kFloat;
}

// A tensor's values as doubles (any device, any dtype).
inline std::vector<double> host(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU).to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace gear::kernels::testing
