// The ATen attention every cache policy shares: prefill in query blocks must equal the plain math.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <cmath>

#include "core/cache/attention.h"

namespace {

// float64 causal attention of one query head over its kv head: q [n, hd], k/v [S, hd].
at::Tensor reference_head(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) {
  const at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  at::Tensor s = at::matmul(qd, kd.t()) / std::sqrt(double(q.size(1)));
  const int64_t n = q.size(0), S = k.size(0);
  const at::Tensor qpos = at::arange(start, start + n, at::kLong).view({n, 1});
  const at::Tensor kpos = at::arange(S, at::kLong).view({1, S});
  s = s.masked_fill(kpos > qpos, -INFINITY);
  return at::matmul(at::softmax(s, -1), vd);
}

}  // namespace

TEST_CASE("prefill_attention in query blocks equals causal attention (GQA, a prompt after a cached prefix)", "[cache][attention]") {
  at::manual_seed(7);
  // 64 query heads over 16 kv heads and 4096 keys: blocks of 2^24 / (64 * 4096) = 64 queries, so these
  // 600 queries (positions 3496..4095) take ten blocks, the last one partial, each seeing only the keys up to
  // its last query.
  const int64_t nh = 64, nkv = 16, hd = 8, S = 4096, n = 600, start = S - n;
  const at::Tensor q = at::randn({nh, n, hd}), k = at::randn({nkv, S, hd}), v = at::randn({nkv, S, hd});
  const at::Tensor out = gear::prefill_attention(q, k, v, start);
  REQUIRE(out.sizes() == at::IntArrayRef({nh, n, hd}));
  for (int64_t h : {int64_t(0), int64_t(5), nh - 1}) {
    const int64_t kvh = h / (nh / nkv);
    const at::Tensor ref = reference_head(q[h], k[kvh], v[kvh], start);
    CHECK((out[h].to(at::kDouble) - ref).abs().max().item<double>() < 1e-5);
  }
  // A single block (short prompt) is the same computation.
  const at::Tensor small = gear::prefill_attention(q.narrow(1, 0, 100), k.narrow(1, 0, 100), v.narrow(1, 0, 100), 0);
  const at::Tensor ref0 = reference_head(q[3].narrow(0, 0, 100), k[0].narrow(0, 0, 100), v[0].narrow(0, 0, 100), 0);
  CHECK((small[3].to(at::kDouble) - ref0).abs().max().item<double>() < 1e-5);
}

TEST_CASE("prefill_attention of a fresh fp16 prompt on the GPU (LibTorch's fused kernel where it has one)", "[cache][attention][cuda]") {
  if (!at::hasCUDA()) return;
  at::manual_seed(8);
  // Llama-2-7B's heads (MHA: the fused path) and a GQA layout (the blocks), 1200 tokens from position 0.
  for (const int64_t nkv : {int64_t(32), int64_t(8)}) {
    const int64_t nh = 32, hd = 128, n = 1200;
    const auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
    const at::Tensor q = at::randn({nh, n, hd}, o), k = at::randn({nkv, n, hd}, o), v = at::randn({nkv, n, hd}, o);
    const at::Tensor out = gear::prefill_attention(q, k, v, 0).cpu();
    REQUIRE(out.sizes() == at::IntArrayRef({nh, n, hd}));
    REQUIRE(out.scalar_type() == at::kHalf);
    for (int64_t h : {int64_t(0), int64_t(17), nh - 1}) {
      INFO("kv heads " << nkv << ", head " << h);
      const int64_t kvh = h / (nh / nkv);
      const at::Tensor ref = reference_head(q[h].cpu(), k[kvh].cpu(), v[kvh].cpu(), 0);
      // fp16 inputs and output: the output's rounding (values up to ~4: 2e-3) and the probabilities' inside the kernels.
      CHECK((out[h].to(at::kDouble) - ref).abs().max().item<double>() < 1e-2);
    }
  }
}
