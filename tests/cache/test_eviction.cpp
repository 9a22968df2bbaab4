// Token eviction (StreamingLLM, H2O): which tokens are kept, checked through values that encode
// each token's position; exactness against the full cache when nothing is evicted; stories260K
// end to end.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "core/cache/eviction_cache.h"
#include "core/cache/full_cache.h"
#include "core/io/loader.h"
#include "core/model/generate.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"
#include "cache/steps.h"
#include "test_paths.h"

namespace {

using gear::EvictionCache;
using gear::EvictionKind;
using gear::EvictionOptions;
using gear::StepInfo;

const auto kF32 = at::TensorOptions().dtype(at::kFloat);

using gear::test::decode_step;
using gear::test::prefill_step;

EvictionOptions opts(EvictionKind kind, int64_t sinks, int64_t recent, int64_t heavy) {
  EvictionOptions o;
  o.kind = kind;
  o.sinks = sinks;
  o.recent = recent;
  o.heavy = heavy;
  return o;
}

// K/V of tokens first..first+n-1 for `nkv` heads with `hd` dims: entry 0 of every head is the
// token's position, the rest small noise.
at::Tensor tagged(int64_t nkv, int64_t first, int64_t n, int64_t hd) {
  at::Tensor t = at::randn({nkv, n, hd}, kF32).mul_(0.1);
  t.select(2, 0).copy_(at::arange(first, first + n, kF32).view({1, n}).expand({nkv, n}));
  return t;
}

// The positions a row keeps, per kv head, read back from entry 0 of its values.
at::Tensor kept_ids(const gear::CachePolicy& p, int row) { return p.view(row).second.select(2, 0).to(at::kLong); }

at::Tensor ids(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }

// Expected StreamingLLM positions of a row of `len` tokens: the sinks and the recent window.
at::Tensor streaming_ids(int64_t len, int64_t sinks, int64_t recent) {
  if (len <= sinks + recent) return at::arange(len, at::kLong);
  return at::cat({at::arange(sinks, at::kLong), at::arange(len - recent, len, at::kLong)});
}

}  // namespace

TEST_CASE("eviction: validate rejects each invalid setting by name", "[cache][eviction]") {
  using Catch::Contains;
  CHECK_NOTHROW(gear::validate(EvictionOptions{}));
  CHECK_NOTHROW(gear::validate(opts(EvictionKind::H2O, 4, 8, 8)));
  CHECK_THROWS_WITH(gear::validate(opts(EvictionKind::StreamingLLM, -1, 8, 0)), Contains("eviction: sinks must be >= 0, got -1"));
  CHECK_THROWS_WITH(gear::validate(opts(EvictionKind::H2O, 4, -3, 8)), Contains("eviction: recent must be >= 0, got -3"));
  CHECK_THROWS_WITH(gear::validate(opts(EvictionKind::H2O, 4, 8, -2)), Contains("eviction: heavy must be >= 0, got -2"));
  CHECK_THROWS_WITH(gear::validate(opts(EvictionKind::StreamingLLM, 4, 8, 2)),
                    Contains("eviction: heavy hitters are an h2o setting, got heavy = 2 for streamingllm"));
  CHECK_THROWS_WITH(gear::validate(opts(EvictionKind::StreamingLLM, 0, 0, 0)),
                    Contains("eviction: the streamingllm budget (sinks + recent) must be at least 1 token, got 0"));
  CHECK_THROWS_WITH(gear::validate(opts(EvictionKind::H2O, 4, 0, 0)),
                    Contains("eviction: the h2o budget (heavy + recent) must be at least 1 token, got 0"));
  CHECK_THROWS_WITH(EvictionCache(1, 1, 4, 16, kF32, opts(EvictionKind::H2O, 4, 0, 0)), Contains("h2o budget"));
  CHECK(gear::eviction_budget(opts(EvictionKind::StreamingLLM, 4, 8, 0)) == 12);
  CHECK(gear::eviction_budget(opts(EvictionKind::H2O, 4, 8, 3)) == 11);
  CHECK(gear::parse_eviction("h2o") == EvictionKind::H2O);
  CHECK(gear::parse_eviction("streamingllm") == EvictionKind::StreamingLLM);
  CHECK_THROWS_WITH(gear::parse_eviction("lru"), Contains("eviction: unknown policy 'lru'"));
}

TEST_CASE("eviction: StreamingLLM keeps exactly the sinks and the recent window", "[cache][eviction]") {
  c10::InferenceMode guard;
  at::manual_seed(3);
  const int64_t nkv = 2, nh = 4, hd = 4, sinks = 2, recent = 5;
  EvictionCache p(2, nkv, hd, 64, kF32, opts(EvictionKind::StreamingLLM, sinks, recent, 0));
  CHECK(p.name() == "streamingllm");
  // Row 0: a 10-token prompt (evicted at once); row 1: 3 tokens (below budget); then both decode.
  std::vector<at::Tensor> hist(2);
  std::vector<int64_t> len = {10, 3};
  for (int r = 0; r < 2; ++r) {
    at::Tensor kv = tagged(nkv, 0, len[size_t(r)], hd);
    StepInfo s = prefill_step(r, 0, len[size_t(r)]);
    p.append(s, kv, kv);
    p.attend(s, at::randn({nh, len[size_t(r)], hd}));
    hist[size_t(r)] = kv;
  }
  for (int step = 0; step <= 25; ++step) {
    for (int r = 0; r < 2; ++r) {
      INFO("step " << step << " row " << r);
      const int64_t n = len[size_t(r)];
      at::Tensor want = streaming_ids(n, sinks, recent);
      REQUIRE(p.kept(r) == want.size(0));
      auto [k, v] = p.view(r);
      CHECK(at::equal(k.select(2, 0).to(at::kLong), want.view({1, -1}).expand({nkv, -1})));
      // Bit-exact copies of the input tokens (noise included).
      CHECK(at::equal(k, hist[size_t(r)].index_select(1, want)));
      CHECK(at::equal(v, hist[size_t(r)].index_select(1, want)));
    }
    CHECK(p.bytes().full == (p.kept(0) + p.kept(1)) * 2 * nkv * hd * 4);
    CHECK(p.bytes().scales == 0);  // no attention mass kept
    if (step == 25) break;
    at::Tensor k0 = tagged(nkv, len[0], 1, hd), k1 = tagged(nkv, len[1], 1, hd);
    at::Tensor kv = at::stack({k0, k1});  // [2, nkv, 1, hd]
    StepInfo d = decode_step(len);
    p.append(d, kv, kv);
    p.attend(d, at::randn({2, nh, 1, hd}));
    hist[0] = at::cat({hist[0], k0}, 1);
    hist[1] = at::cat({hist[1], k1}, 1);
    ++len[0];
    ++len[1];
  }
  CHECK(p.allocated_slots() == sinks + recent + 1);
  CHECK(p.bytes().reserved == 2 * 2 * nkv * (sinks + recent + 1) * hd * 4);
}

TEST_CASE("eviction: H2O keeps the planted heavy hitter of each kv head and the recent tokens", "[cache][eviction]") {
  c10::InferenceMode guard;
  at::manual_seed(5);
  const int64_t nkv = 2, nh = 4, hd = 4, heavy = 2, recent = 3;
  EvictionCache p(1, nkv, hd, 64, kF32, opts(EvictionKind::H2O, 4, recent, heavy));
  CHECK(p.name() == "h2o");
  // Every query points along dim 1; kv head 0's token 5 and kv head 1's token 9 have large keys
  // along it, so they draw most of the attention from then on. Values carry positions.
  auto queries = [&](int64_t b, int64_t n) {
    at::Tensor q = at::randn({b, nh, n, hd}).mul_(0.1);
    q.select(3, 1).fill_(1.0);
    return q;
  };
  auto keys = [&](int64_t first, int64_t n) {
    at::Tensor k = at::randn({nkv, n, hd}).mul_(0.1);
    for (int64_t t = first; t < first + n; ++t) {
      if (t == 5) k[0][t - first][1] = 10.0;
      if (t == 9) k[1][t - first][1] = 10.0;
    }
    return k;
  };
  StepInfo s = prefill_step(0, 0, 12);
  p.append(s, keys(0, 12), tagged(nkv, 0, 12, hd));
  p.attend(s, queries(1, 12)[0]);
  CHECK(p.kept(0) == heavy + recent);
  for (int64_t t = 12; t < 40; ++t) {
    StepInfo d = decode_step({t});
    p.append(d, keys(t, 1).unsqueeze(0), tagged(nkv, t, 1, hd).unsqueeze(0));
    p.attend(d, queries(1, 1));
    REQUIRE(p.kept(0) == heavy + recent);
    at::Tensor got = kept_ids(p, 0);
    INFO("after token " << t << ": " << got);
    CHECK(at::equal(got.narrow(1, heavy, recent), at::arange(t - recent + 1, t + 1, at::kLong).view({1, -1}).expand({nkv, -1})));
    CHECK(at::any(got[0].narrow(0, 0, heavy) == 5).item<bool>());
    CHECK(at::any(got[1].narrow(0, 0, heavy) == 9).item<bool>());
    // Kept in time order per head.
    CHECK(at::all(got.narrow(1, 1, heavy + recent - 1) > got.narrow(1, 0, heavy + recent - 1)).item<bool>());
  }
  const auto b = p.bytes();
  CHECK(b.full == (heavy + recent) * 2 * nkv * hd * 4);
  CHECK(b.scales == (heavy + recent) * nkv * 4);  // the float32 attention mass of each kept token
  CHECK(b.reserved == (heavy + recent + 1) * nkv * (2 * hd + 1) * 4);
}

TEST_CASE("eviction: H2O with no heavy hitters is a recent window", "[cache][eviction]") {
  c10::InferenceMode guard;
  EvictionCache p(1, 1, 2, 64, kF32, opts(EvictionKind::H2O, 4, 4, 0));
  at::Tensor kv = tagged(1, 0, 20, 2);
  StepInfo s = prefill_step(0, 0, 20);
  p.append(s, kv, kv);
  p.attend(s, at::randn({1, 20, 2}));
  CHECK(at::equal(kept_ids(p, 0), ids({16, 17, 18, 19}).view({1, 4})));
}

TEST_CASE("eviction: with a budget above the sequence length attention equals the full cache", "[cache][eviction]") {
  c10::InferenceMode guard;
  const int64_t nkv = 2, nh = 4, hd = 8;
  for (auto kind : {EvictionKind::StreamingLLM, EvictionKind::H2O}) {
    at::manual_seed(11);
    EvictionCache p(2, nkv, hd, 64, kF32, opts(kind, 4, 60, kind == EvictionKind::H2O ? 4 : 0));
    gear::FullCache full(2, nkv, hd, 64, kF32);
    std::vector<gear::CachePolicy*> both = {&p, &full};
    std::vector<int64_t> len = {17, 6};
    for (int r = 0; r < 2; ++r) {
      at::Tensor k = at::randn({nkv, len[size_t(r)], hd}), v = at::randn({nkv, len[size_t(r)], hd});
      at::Tensor q = at::randn({nh, len[size_t(r)], hd});
      StepInfo s = prefill_step(r, 0, len[size_t(r)]);
      std::vector<at::Tensor> out;
      for (auto* c : both) {
        c->append(s, k, v);
        out.push_back(c->attend(s, q));
      }
      CHECK(at::allclose(out[0], out[1], 1e-6, 1e-6));
    }
    for (int t = 0; t < 40; ++t) {
      at::Tensor k = at::randn({2, nkv, 1, hd}), v = at::randn({2, nkv, 1, hd}), q = at::randn({2, nh, 1, hd});
      StepInfo d = decode_step(len);
      std::vector<at::Tensor> out;
      for (auto* c : both) {
        c->append(d, k, v);
        out.push_back(c->attend(d, q));
      }
      INFO(gear::eviction_name(kind) << " decode step " << t);
      CHECK(at::allclose(out[0], out[1], 1e-6, 1e-6));
      ++len[0];
      ++len[1];
    }
    CHECK(p.bytes().full == full.bytes().full);
  }
}

TEST_CASE("eviction: runs unchanged in bf16 on the CPU and f16/bf16 on CUDA", "[cache][eviction][dtype]") {
  c10::InferenceMode guard;
  std::vector<at::TensorOptions> options = {at::TensorOptions().dtype(at::kBFloat16)};
  if (at::hasCUDA())
    for (auto dt : {at::kHalf, at::kBFloat16}) options.push_back(at::TensorOptions().device(at::kCUDA).dtype(dt));
  const int64_t nkv = 2, nh = 4, hd = 8;
  for (const auto& opt : options)
    for (auto kind : {EvictionKind::StreamingLLM, EvictionKind::H2O}) {
      INFO(opt << " " << gear::eviction_name(kind));
      at::manual_seed(13);
      const int64_t heavy = kind == EvictionKind::H2O ? 3 : 0;
      EvictionCache small(1, nkv, hd, 64, opt, opts(kind, 3, 4, heavy));
      EvictionCache large(1, nkv, hd, 64, opt, opts(kind, 3, 60, heavy));
      gear::FullCache full(1, nkv, hd, 64, opt);
      std::vector<gear::CachePolicy*> all = {&small, &large, &full};
      at::Tensor hist = tagged(nkv, 0, 9, hd).to(opt);
      StepInfo s = prefill_step(0, 0, 9);
      at::Tensor q = at::randn({nh, 9, hd}).to(opt);
      for (auto* c : all) {
        c->append(s, hist, hist);
        c->attend(s, q);
      }
      for (int64_t t = 9; t < 40; ++t) {
        at::Tensor kv = tagged(nkv, t, 1, hd).to(opt).unsqueeze(0);
        StepInfo d = decode_step({t});
        d.positions = d.positions.to(opt.device());
        at::Tensor qd = at::randn({1, nh, 1, hd}).to(opt);
        std::vector<at::Tensor> out;
        for (auto* c : all) {
          c->append(d, kv, kv);
          out.push_back(c->attend(d, qd));
        }
        hist = at::cat({hist, kv[0]}, 1);
        CHECK(out[0].scalar_type() == opt.dtype().toScalarType());
        CHECK(out[0].device().type() == opt.device().type());  // "cuda" vs "cuda:0"
        CHECK(at::allclose(out[1].to(at::kFloat), out[2].to(at::kFloat), 1e-3, 1e-3));
        REQUIRE(small.kept(0) == small.budget());
        // The recent window, bit-exact, at the end of every head.
        CHECK(at::equal(small.view(0).second.narrow(1, small.budget() - 4, 4), hist.narrow(1, t - 3, 4)));
      }
      if (kind == EvictionKind::StreamingLLM)
        CHECK(at::equal(small.view(0).first.narrow(1, 0, 3), hist.narrow(1, 0, 3)));
    }
}

namespace {

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";

gear::KvCache eviction_kv(const gear::LlamaModel& model, int batch, const EvictionOptions& o) {
  gear::KvCache cache = model.make_full_cache(batch, 512);
  const auto& c = model.config();
  const auto options = at::TensorOptions().device(model.device()).dtype(model.dtype());
  for (int l = 0; l < c.n_layers; ++l)
    cache.set_layer(l, std::make_unique<EvictionCache>(batch, c.n_kv_heads, c.hd(), 512, options, o));
  return cache;
}

}  // namespace

TEST_CASE("eviction: stories260K greedy text equals the full cache's when nothing is evicted", "[cache][eviction][model]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  const std::vector<std::vector<int>> prompts = {tok->encode("Once upon a time", true), tok->encode("The little dog", true)};
  gear::GenerationParams params;
  params.max_new_tokens = 150;
  gear::KvCache full = model.make_full_cache(2, 512);
  const auto want = gear::generate(model, full, prompts, params);
  for (auto o : {opts(EvictionKind::StreamingLLM, 4, 400, 0), opts(EvictionKind::H2O, 4, 300, 100)}) {
    gear::KvCache cache = eviction_kv(model, 2, o);
    const auto got = gear::generate(model, cache, prompts, params);
    INFO(cache.policy_name());
    CHECK(got.tokens == want.tokens);
  }
}

TEST_CASE("eviction: stories260K runs 200 tokens on a small budget with fewer bytes", "[cache][eviction][model]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  const std::vector<int> prompt = tok->encode("Once upon a time", true);
  gear::GenerationParams params;
  params.max_new_tokens = 200;
  gear::KvCache full = model.make_full_cache(1, 512);
  gear::generate(model, full, {prompt}, params);
  for (auto o : {opts(EvictionKind::StreamingLLM, 4, 28, 0), opts(EvictionKind::H2O, 4, 16, 16)}) {
    gear::KvCache cache = eviction_kv(model, 1, o);
    const auto r = gear::generate(model, cache, {prompt}, params);
    INFO(cache.policy_name());
    REQUIRE(r.tokens[0].size() == 200);
    for (int l = 0; l < model.config().n_layers; ++l) CHECK(dynamic_cast<const EvictionCache&>(cache.layer(l)).kept(0) == 32);
    CHECK(cache.bytes().in_use() < full.bytes().in_use());
    CHECK(cache.bytes().reserved < full.bytes().reserved);
  }
}
