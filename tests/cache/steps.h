#pragma once
// StepInfo for driving a cache policy directly, as the model would: a prefill chunk of one row, or
// one decode token for every row (positions on the CPU).
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "core/cache/kv_cache.h"

namespace gear::test {

inline StepInfo prefill_step(int row, int64_t start, int64_t n) {
  StepInfo s;
  s.kind = StepInfo::Kind::Prefill;
  s.row = row;
  s.start = start;
  s.n_new = n;
  return s;
}

inline StepInfo decode_step(const std::vector<int64_t>& positions) {
  StepInfo s;
  s.kind = StepInfo::Kind::Decode;
  s.positions = at::tensor(positions, at::kLong);
  s.max_len = *std::max_element(positions.begin(), positions.end()) + 1;
  return s;
}

}  // namespace gear::test
