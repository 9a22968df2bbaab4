// Pyramidal KV merging: the layer budgets, the merge rule on crafted K/V streamed through the
// policy directly, exactness against the full cache when nothing needs merging, and stories260K
// end to end.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/cache/full_cache.h"
#include "core/cache/pyramid_cache.h"
#include "core/io/loader.h"
#include "core/model/generate.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"
#include "cache/steps.h"
#include "test_paths.h"

namespace {

using gear::PoolKind;
using gear::PyramidCache;
using gear::PyramidOptions;
using gear::StepInfo;

const auto kF32 = at::TensorOptions().dtype(at::kFloat);

using gear::test::decode_step;
using gear::test::prefill_step;

PyramidOptions opts(int64_t l0, double beta, int64_t sinks, int64_t recent, int64_t window, PoolKind pool) {
  PyramidOptions o;
  o.l0 = l0;
  o.beta = beta;
  o.sinks = sinks;
  o.recent = recent;
  o.window = window;
  o.pool = pool;
  return o;
}

// Synthetic K/V for a two-row batch: row 0 gets a longer prompt than row 1, then both decode.
struct Stream {
  int64_t nkv = 2, nh = 4, hd = 8;
  std::vector<int64_t> prompt = {20, 7};
  int64_t decode_steps = 30;
};

// Feeds the same stream to every policy given, calling `check` after every step with the outputs
// of each and the whole history of K/V per row so far ([nkv, len, hd]).
template <class Check>
void run_stream(const Stream& st, std::vector<gear::CachePolicy*> policies, Check check, at::TensorOptions opt = kF32) {
  at::manual_seed(7);
  auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, kF32).to(opt); };
  const int B = int(st.prompt.size());
  std::vector<at::Tensor> hist_k(B), hist_v(B);
  for (int r = 0; r < B; ++r) {
    at::Tensor k = randn({st.nkv, st.prompt[r], st.hd}), v = randn({st.nkv, st.prompt[r], st.hd});
    at::Tensor q = randn({st.nh, st.prompt[r], st.hd});
    StepInfo s = prefill_step(r, 0, st.prompt[r]);
    std::vector<at::Tensor> outs;
    for (auto* p : policies) {
      p->append(s, k, v);
      outs.push_back(p->attend(s, q));
    }
    hist_k[r] = k;
    hist_v[r] = v;
    check(outs, hist_k, hist_v);
  }
  for (int64_t t = 0; t < st.decode_steps; ++t) {
    std::vector<int64_t> pos;
    for (int r = 0; r < B; ++r) pos.push_back(hist_k[r].size(1));
    at::Tensor k = randn({B, st.nkv, 1, st.hd}), v = randn({B, st.nkv, 1, st.hd});
    at::Tensor q = randn({B, st.nh, 1, st.hd});
    StepInfo s = decode_step(pos);
    s.positions = s.positions.to(opt.device());
    std::vector<at::Tensor> outs;
    for (auto* p : policies) {
      p->append(s, k, v);
      outs.push_back(p->attend(s, q));
    }
    for (int r = 0; r < B; ++r) {
      hist_k[r] = at::cat({hist_k[r], k[r]}, 1);
      hist_v[r] = at::cat({hist_v[r], v[r]}, 1);
    }
    check(outs, hist_k, hist_v);
  }
}

// A 4-token prompt into a budget of 3 (1 sink, 1 recent): slots 1 and 2 merge into one.
struct Crafted {
  at::Tensor k, v, q;  // k, v [nkv, 4, 4]; q [2 * nkv, 4, 4]
};

std::unique_ptr<PyramidCache> merge_four(PoolKind pool, const Crafted& c) {
  const int nkv = int(c.k.size(0));
  auto p = std::make_unique<PyramidCache>(0, 1, 1, nkv, 4, 16, kF32, opts(3, 1.0, 1, 1, 2, pool));
  StepInfo s = prefill_step(0, 0, 4);
  p->append(s, c.k, c.v);
  p->attend(s, c.q);
  return p;
}

}  // namespace

TEST_CASE("pyramid: layer budgets follow L0 * [1 + (k/m)(1/beta - 1)]", "[cache][pyramid]") {
  auto budget = [](int64_t l0, double beta, int k, int m) { return gear::pyramid_budget(opts(l0, beta, 4, 32, 2, PoolKind::Mean), k, m); };
  for (auto [l0, beta, m] : {std::tuple{256, 0.5, 32}, std::tuple{100, 0.25, 10}, std::tuple{7, 0.3, 3}, std::tuple{64, 1.0, 5}}) {
    INFO("l0 " << l0 << " beta " << beta << " m " << m);
    CHECK(budget(l0, beta, 0, m) == l0);
    for (int k = 0; k < m; ++k)
      CHECK(budget(l0, beta, k, m) == std::llround(l0 * (1.0 + double(k) / m * (1.0 / beta - 1.0))));
  }
  CHECK(budget(256, 0.5, 16, 32) == 384);
  CHECK(budget(256, 0.5, 31, 32) == 504);
  CHECK(budget(100, 0.25, 9, 10) == 370);
  CHECK(budget(7, 0.3, 1, 3) == 12);   // 12.44
  CHECK(budget(7, 0.3, 2, 3) == 18);   // 17.89
  CHECK(budget(5, 0.5, 1, 2) == 8);    // 7.5 rounds away from zero
  CHECK(budget(64, 1.0, 4, 5) == 64);  // beta = 1: no pyramid
}

TEST_CASE("pyramid: validate rejects each invalid setting by name", "[cache][pyramid]") {
  const PyramidOptions good;
  CHECK_NOTHROW(gear::validate(good, 32));
  auto with = [&](auto edit) {
    PyramidOptions o = good;
    edit(o);
    return o;
  };
  using Catch::Contains;
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.beta = 1.5; }), 32), Contains("pyramid: beta must be in (0, 1], got 1.5"));
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.beta = 0; }), 32), Contains("beta must be in (0, 1], got 0"));
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.beta = -0.5; }), 32), Contains("got -0.5"));
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.l0 = 0; }), 32), Contains("pyramid: l0 must be at least 1 token, got 0"));
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.window = 1; }), 32), Contains("pyramid: window must merge at least 2 tokens, got 1"));
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.sinks = -1; }), 32), Contains("pyramid: sinks must be >= 0, got -1"));
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.recent = -2; }), 32), Contains("pyramid: recent must be >= 0, got -2"));
  CHECK_THROWS_WITH(gear::validate(with([](auto& o) { o.l0 = 36; }), 32),
                    Contains("pyramid: budget of layer 0 is 36 tokens, smaller than sinks + recent + 1 = 37"));
  CHECK_NOTHROW(gear::validate(with([](auto& o) { o.l0 = 37; }), 32));
  CHECK_THROWS_WITH(gear::validate(good, 0), Contains("at least one layer"));
  CHECK_THROWS_WITH(gear::parse_pool("median"), Contains("pyramid: unknown pooling 'median'"));
  for (PoolKind p : {PoolKind::Mean, PoolKind::Max, PoolKind::Best}) CHECK(gear::parse_pool(gear::pool_name(p)) == p);
  CHECK_THROWS_WITH(PyramidCache(5, 5, 1, 1, 4, 16, kF32, good), Contains("pyramid: layer 5 is outside"));
}

TEST_CASE("pyramid: streamed rows stay within budget with sinks and recent bit-exact", "[cache][pyramid]") {
  c10::InferenceMode guard;
  const Stream st;
  for (PoolKind pool : {PoolKind::Mean, PoolKind::Max, PoolKind::Best})
    for (int64_t window : {2, 3}) {
      const PyramidOptions o = opts(12, 1.0, 2, 4, window, pool);
      PyramidCache p(0, 4, 2, int(st.nkv), int(st.hd), 64, kF32, o);
      REQUIRE(p.budget() == 12);
      int steps = 0;
      run_stream(st, {&p}, [&](const std::vector<at::Tensor>&, const std::vector<at::Tensor>& hk,
                               const std::vector<at::Tensor>& hv) {
        ++steps;
        for (int r = 0; r < 2; ++r) {
          INFO("pool " << gear::pool_name(pool) << " window " << window << " step " << steps << " row " << r);
          if (!hk[r].defined()) {  // not prefilled yet
            REQUIRE(p.kept(r) == 0);
            continue;
          }
          const int64_t len = hk[r].size(1), kept = p.kept(r);
          auto [k, v] = p.view(r);
          REQUIRE(kept <= p.budget());
          REQUIRE(k.size(1) == kept);
          if (len <= p.budget()) {  // nothing merged yet
            REQUIRE(kept == len);
            CHECK(at::equal(k, hk[r]));
            CHECK(at::equal(v, hv[r]));
            continue;
          }
          CHECK(at::equal(k.narrow(1, 0, o.sinks), hk[r].narrow(1, 0, o.sinks)));
          CHECK(at::equal(v.narrow(1, 0, o.sinks), hv[r].narrow(1, 0, o.sinks)));
          CHECK(at::equal(k.narrow(1, kept - o.recent, o.recent), hk[r].narrow(1, len - o.recent, o.recent)));
          CHECK(at::equal(v.narrow(1, kept - o.recent, o.recent), hv[r].narrow(1, len - o.recent, o.recent)));
        }
        // Exact bytes: the kept tokens (+ the float32 mass table for best).
        const int64_t total = p.kept(0) + p.kept(1);
        const auto b = p.bytes();
        CHECK(b.full == total * 2 * st.nkv * st.hd * 4);
        CHECK(b.scales == (pool == PoolKind::Best ? total * st.nkv * 4 : 0));
        CHECK(b.reserved >= b.in_use());
      });
      // Row 0's 20-token prompt grew the storage; after compression it is back to budget + 1.
      CHECK(p.allocated_slots() == p.budget() + 1);
      CHECK(p.bytes().reserved == 2 * 2 * st.nkv * 13 * st.hd * 4 + (pool == PoolKind::Best ? 2 * st.nkv * 13 * 4 : 0));
    }
}

TEST_CASE("pyramid: mean pooling stores the mean of the window", "[cache][pyramid]") {
  c10::InferenceMode guard;
  at::manual_seed(1);
  Crafted c{at::randn({2, 4, 4}), at::randn({2, 4, 4}), at::randn({4, 4, 4})};
  auto p = merge_four(PoolKind::Mean, c);
  REQUIRE(p->kept(0) == 3);
  auto [k, v] = p->view(0);
  CHECK(at::equal(k.select(1, 0), c.k.select(1, 0)));  // sink
  CHECK(at::equal(k.select(1, 2), c.k.select(1, 3)));  // recent
  CHECK(at::allclose(k.select(1, 1), (c.k.select(1, 1) + c.k.select(1, 2)) / 2, 1e-6, 1e-6));
  CHECK(at::allclose(v.select(1, 1), (c.v.select(1, 1) + c.v.select(1, 2)) / 2, 1e-6, 1e-6));
}

TEST_CASE("pyramid: max pooling keeps the entry of largest magnitude with its sign", "[cache][pyramid]") {
  c10::InferenceMode guard;
  at::Tensor k = at::zeros({1, 4, 4}), v = at::zeros({1, 4, 4});
  k[0][1] = at::tensor({1.f, -5.f, 2.f, 0.5f});
  k[0][2] = at::tensor({3.f, 4.f, -2.f, -0.5f});
  v[0][1] = at::tensor({-7.f, 1.f, 0.f, 2.f});
  v[0][2] = at::tensor({6.f, -1.f, 0.f, -3.f});
  auto p = merge_four(PoolKind::Max, {k, v, at::ones({2, 4, 4})});
  auto [mk, mv] = p->view(0);
  CHECK(at::equal(mk[0][1], at::tensor({3.f, -5.f, 2.f, 0.5f})));  // equal magnitudes: the older entry
  CHECK(at::equal(mv[0][1], at::tensor({-7.f, 1.f, 0.f, -3.f})));
}

TEST_CASE("pyramid: best pooling keeps the most attended token per kv head, mass summed", "[cache][pyramid]") {
  c10::InferenceMode guard;
  // Every query points along dim 0; kv head 0's token 1 and kv head 1's token 2 have keys along
  // it, so each draws most of its head's attention.
  at::Tensor q = at::zeros({4, 4, 4});
  q.select(2, 0).fill_(1.0);
  at::Tensor k = at::zeros({2, 4, 4});
  k[0][1][0] = 8.0;
  k[1][2][0] = 8.0;
  at::Tensor v = at::arange(32, kF32).view({2, 4, 4});
  auto p = merge_four(PoolKind::Best, {k, v, q});
  auto [bk, bv] = p->view(0);
  CHECK(at::equal(bk[0][1], k[0][1]));
  CHECK(at::equal(bv[0][1], v[0][1]));
  CHECK(at::equal(bk[1][1], k[1][2]));
  CHECK(at::equal(bv[1][1], v[1][2]));
  // Reference mass: causal softmax of q.k/2, summed over the 2 query heads of each kv head and the 4 queries.
  at::Tensor scores = at::matmul(q.view({2, 8, 4}), k.transpose(1, 2)).div(2.0).view({2, 2, 4, 4});
  scores = scores.masked_fill(at::ones({4, 4}, at::kBool).triu(1), -INFINITY);
  at::Tensor ref = at::softmax(scores, -1).sum({1, 2});  // [2, 4]
  at::Tensor expect = at::stack({ref.select(1, 0), ref.select(1, 1) + ref.select(1, 2), ref.select(1, 3)}, 1);
  CHECK(at::allclose(p->attention_mass(0), expect, 1e-5, 1e-6));
  CHECK(at::allclose(p->attention_mass(0).sum(1), at::full({2}, 8.0), 1e-5, 1e-5));  // every query's mass is kept
}

TEST_CASE("pyramid: the merge cursor walks the middle, then merged slots merge again", "[cache][pyramid]") {
  c10::InferenceMode guard;
  // Budget 4 = 1 sink + 2 middle + 1 recent; token t has key and value t, merged by mean.
  PyramidCache p(0, 1, 1, 1, 2, 64, kF32, opts(4, 1.0, 1, 1, 2, PoolKind::Mean));
  auto token = [](int64_t t) { return at::full({1, 1, 2}, double(t)); };
  StepInfo s = prefill_step(0, 0, 1);
  p.append(s, token(0), token(0));
  p.attend(s, at::ones({1, 1, 2}));
  const std::vector<std::vector<double>> expect = {
      {0, 1}, {0, 1, 2}, {0, 1, 2, 3},
      {0, 1.5, 3, 4},    // 1+2 at the cursor
      {0, 1.5, 3.5, 5},  // the cursor moved on: 3+4
      {0, 2.5, 5, 6},    // end of the middle: wrap, 1.5+3.5
      {0, 2.5, 5.5, 7},
      {0, 4, 7, 8}};
  for (int64_t t = 1; t <= 8; ++t) {
    StepInfo d = decode_step({t});
    p.append(d, token(t).unsqueeze(0), token(t).unsqueeze(0));
    p.attend(d, at::ones({1, 1, 1, 2}));
    auto [k, v] = p.view(0);
    const auto& e = expect[size_t(t - 1)];
    INFO("after token " << t);
    CHECK(at::equal(k.select(2, 0).flatten(), at::tensor(e, kF32)));
    CHECK(at::equal(v.select(2, 1).flatten(), at::tensor(e, kF32)));
  }
}

TEST_CASE("pyramid: a long prompt is merged in passes down to the budget", "[cache][pyramid]") {
  c10::InferenceMode guard;
  for (int64_t window : {2, 3, 5}) {
    // 100 tokens into 4 sinks + 20 middle + 8 recent: several passes over the middle.
    PyramidCache p(0, 1, 1, 1, 2, 256, kF32, opts(32, 1.0, 4, 8, window, PoolKind::Mean));
    at::Tensor kv = at::arange(100, kF32).view({1, 100, 1}).expand({1, 100, 2}).contiguous();
    StepInfo s = prefill_step(0, 0, 100);
    p.append(s, kv, kv);
    p.attend(s, at::randn({1, 100, 2}));
    INFO("window " << window);
    REQUIRE(p.kept(0) <= 32);
    REQUIRE(p.kept(0) > 32 - window);  // merging stops once it fits
    at::Tensor ids = p.view(0).first.select(2, 0).flatten();
    CHECK(at::equal(ids.narrow(0, 0, 4), at::arange(4, kF32)));
    CHECK(at::equal(ids.narrow(0, p.kept(0) - 8, 8), at::arange(92, 100, kF32)));
    // Means of consecutive ranges: the middle stays in time order.
    at::Tensor middle = ids.narrow(0, 4, p.kept(0) - 12);
    CHECK(at::all(middle.narrow(0, 1, middle.size(0) - 1) > middle.narrow(0, 0, middle.size(0) - 1)).item<bool>());
  }
}

TEST_CASE("pyramid: without compress_prefill the prompt is kept whole until decode", "[cache][pyramid]") {
  c10::InferenceMode guard;
  PyramidOptions o = opts(8, 1.0, 2, 2, 2, PoolKind::Max);
  o.compress_prefill = false;
  PyramidCache p(0, 1, 1, 1, 2, 64, kF32, o);
  at::Tensor kv = at::randn({1, 30, 2});
  StepInfo s = prefill_step(0, 0, 30);
  p.append(s, kv, kv);
  p.attend(s, at::randn({1, 30, 2}));
  CHECK(p.kept(0) == 30);
  StepInfo d = decode_step({30});
  p.append(d, at::randn({1, 1, 1, 2}), at::randn({1, 1, 1, 2}));
  p.attend(d, at::randn({1, 1, 1, 2}));
  CHECK(p.kept(0) <= 8);
  CHECK(p.allocated_slots() == 9);
  p.clear_row(0);
  CHECK(p.kept(0) == 0);
  CHECK(p.bytes().full == 0);
}

TEST_CASE("pyramid: with a budget above the sequence length attention equals the full cache", "[cache][pyramid]") {
  c10::InferenceMode guard;
  const Stream st;
  for (PoolKind pool : {PoolKind::Mean, PoolKind::Best}) {
    PyramidCache p(1, 4, 2, int(st.nkv), int(st.hd), 64, kF32, opts(64, 0.5, 4, 8, 2, pool));
    gear::FullCache full(2, int(st.nkv), int(st.hd), 64, kF32);
    int steps = 0;
    run_stream(st, {&p, &full}, [&](const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>&,
                                    const std::vector<at::Tensor>&) {
      INFO("step " << ++steps);
      CHECK(at::allclose(outs[0], outs[1], 1e-6, 1e-6));
      CHECK(p.bytes().full == full.bytes().full);
    });
    CHECK(steps == 2 + st.decode_steps);
  }
}

// The options the dtype tests run under: bf16 on the CPU, f16 and bf16 on CUDA when present.
std::vector<at::TensorOptions> low_precision_options() {
  std::vector<at::TensorOptions> out = {at::TensorOptions().dtype(at::kBFloat16)};
  if (at::hasCUDA())
    for (auto dt : {at::kHalf, at::kBFloat16}) out.push_back(at::TensorOptions().device(at::kCUDA).dtype(dt));
  return out;
}

TEST_CASE("pyramid: runs unchanged in bf16 on the CPU and f16/bf16 on CUDA", "[cache][pyramid][dtype]") {
  c10::InferenceMode guard;
  const Stream st;
  for (const auto& opt : low_precision_options())
    for (PoolKind pool : {PoolKind::Mean, PoolKind::Max, PoolKind::Best}) {
      INFO(opt << " pool " << gear::pool_name(pool));
      const PyramidOptions o = opts(12, 1.0, 2, 4, 2, pool);
      PyramidCache small(0, 1, 2, int(st.nkv), int(st.hd), 64, opt, o);
      PyramidCache large(0, 1, 2, int(st.nkv), int(st.hd), 64, opt, opts(64, 1.0, 2, 4, 2, pool));
      gear::FullCache full(2, int(st.nkv), int(st.hd), 64, opt);
      run_stream(st, {&small, &large, &full}, [&](const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& hk,
                                                  const std::vector<at::Tensor>&) {
        CHECK(outs[0].scalar_type() == opt.dtype().toScalarType());
        CHECK(outs[0].device().type() == opt.device().type());  // "cuda" vs "cuda:0"
        CHECK(at::allclose(outs[1].to(at::kFloat), outs[2].to(at::kFloat), 1e-3, 1e-3));
        for (int r = 0; r < 2; ++r) {
          if (!hk[r].defined()) continue;
          const int64_t len = hk[r].size(1), kept = small.kept(r);
          REQUIRE(kept == std::min<int64_t>(len, 12));
          auto k = small.view(r).first;
          CHECK(at::equal(k.narrow(1, 0, 2), hk[r].narrow(1, 0, 2)));
          CHECK(at::equal(k.narrow(1, kept - 4, 4), hk[r].narrow(1, len - 4, 4)));
        }
      }, opt);
    }
}

namespace {

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";

gear::KvCache pyramid_kv(const gear::LlamaModel& model, int batch, const PyramidOptions& o) {
  gear::KvCache cache = model.make_full_cache(batch, 512);
  const auto& c = model.config();
  const auto options = at::TensorOptions().device(model.device()).dtype(model.dtype());
  for (int l = 0; l < c.n_layers; ++l)
    cache.set_layer(l, std::make_unique<PyramidCache>(l, c.n_layers, batch, c.n_kv_heads, c.hd(), 512, options, o));
  return cache;
}

}  // namespace

TEST_CASE("pyramid: stories260K greedy text equals the full cache's when the budget holds it all", "[cache][pyramid][model]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  const std::vector<std::vector<int>> prompts = {tok->encode("Once upon a time", true), tok->encode("The little dog", true)};
  gear::GenerationParams params;
  params.max_new_tokens = 150;
  gear::KvCache full = model.make_full_cache(2, 512);
  const auto want = gear::generate(model, full, prompts, params);
  for (PoolKind pool : {PoolKind::Mean, PoolKind::Best}) {
    gear::KvCache cache = pyramid_kv(model, 2, opts(512, 0.5, 4, 32, 2, pool));
    const auto got = gear::generate(model, cache, prompts, params);
    INFO("pool " << gear::pool_name(pool));
    CHECK(cache.policy_name() == "pyramid");
    CHECK(got.tokens == want.tokens);
    CHECK(cache.bytes().full == full.bytes().full);
  }
}

TEST_CASE("pyramid: stories260K runs 200 tokens on a small budget with fewer bytes", "[cache][pyramid][model]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  const std::vector<int> prompt = tok->encode("Once upon a time", true);
  gear::GenerationParams params;
  params.max_new_tokens = 200;
  gear::KvCache full = model.make_full_cache(1, 512);
  gear::generate(model, full, {prompt}, params);
  for (PoolKind pool : {PoolKind::Mean, PoolKind::Max, PoolKind::Best}) {
    const PyramidOptions o = opts(32, 0.5, 4, 8, 2, pool);
    gear::KvCache cache = pyramid_kv(model, 1, o);
    const auto r = gear::generate(model, cache, {prompt}, params);
    INFO("pool " << gear::pool_name(pool));
    REQUIRE(r.tokens[0].size() == 200);
    for (int l = 0; l < model.config().n_layers; ++l) {
      const auto& layer = dynamic_cast<const PyramidCache&>(cache.layer(l));
      CHECK(layer.kept(0) <= gear::pyramid_budget(o, l, model.config().n_layers));
    }
    CHECK(cache.bytes().in_use() < full.bytes().in_use());
    CHECK(cache.bytes().reserved < full.bytes().reserved);
  }
}
