// GearCache: exact byte accounting, streaming, reconstruction quality, and generation on stories260K.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "core/cache/full_cache.h"
#include "core/cache/gear_cache.h"
#include "core/cache/make_cache.h"
#include "core/compression/cache_config.h"
#include "core/eval/divergence.h"
#include "core/io/loader.h"
#include "core/model/generate.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"
#include "test_paths.h"

namespace {

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";
constexpr int kNkv = 4, kHd = 8, kHeads = 8;  // stories260K's attention shape

gear::CacheConfig config(const std::string& preset, std::vector<std::pair<std::string, std::string>> flags = {}) {
  gear::CacheConfig c = gear::preset(preset);
  for (const auto& [k, v] : flags) gear::set_option(c, k, v);
  return c;
}

// Streams `prompt` tokens through prefill and `decode` more one at a time through one GearCache layer
// (random K/V, queries), returning the policy.
std::unique_ptr<gear::GearCache> stream(const gear::CacheConfig& c, int64_t prompt, int64_t decode, int batch = 1,
                                        at::Tensor* k_all = nullptr, at::Tensor* v_all = nullptr) {
  auto cache = std::make_unique<gear::GearCache>(0, batch, kNkv, kHd, 1024, at::TensorOptions().dtype(at::kFloat), c);
  at::manual_seed(5);
  const at::Tensor K = at::randn({batch, kNkv, prompt + decode, kHd}), V = at::randn({batch, kNkv, prompt + decode, kHd});
  for (int b = 0; b < batch; ++b) {
    gear::StepInfo p;
    p.row = b, p.start = 0, p.n_new = prompt;
    cache->append(p, K[b].narrow(1, 0, prompt), V[b].narrow(1, 0, prompt));
    cache->attend(p, at::randn({kHeads, prompt, kHd}));
  }
  for (int64_t t = prompt; t < prompt + decode; ++t) {
    gear::StepInfo d;
    d.kind = gear::StepInfo::Kind::Decode;
    d.positions = at::full({batch}, t, at::kLong);
    d.max_len = t + 1;
    cache->append(d, K.narrow(2, t, 1), V.narrow(2, t, 1));
    cache->attend(d, at::randn({batch, kHeads, 1, kHd}));
  }
  if (k_all) *k_all = K;
  if (v_all) *v_all = V;
  return cache;
}

}  // namespace

TEST_CASE("gear cache: bytes equal the closed form (gear-kivi-2, 100-token prompt + 30 decoded)", "[gear][bytes]") {
  // Prefill: 64 tokens compressed (keys need whole groups of 64 tokens), 36 buffered. Decode: at 64
  // buffered tokens a block is compressed, leaving 2. Two blocks of 64 tokens, rank 4 then rank 2.
  auto cache = stream(config("gear-kivi-2"), 100, 30);
  CHECK(cache->compressed(0) == 128);
  CHECK(cache->buffered(0) == 2);
  const gear::ByteBreakdown b = cache->bytes();
  // Codes: 64 tokens x 32 channels x 2 bits = 512 bytes per side per block.
  CHECK(b.codes == 4 * 512);
  // Keys: per channel (32 rows) one fp16 scale + zero per 64-token group; values: per token (64 rows),
  // the whole 32-channel vector (group 64 >= 32) -> 4 bytes per row.
  CHECK(b.scales == 2 * (32 * 4 + 64 * 4));
  // 2 % of a 64-entry (keys) or 32-entry (values) vector rounds down to 0 outliers per side.
  CHECK(b.sparse == 0);
  // Low rank per head: A [64, r] + B [r, 8] in fp16, 4 heads, K and V: r = 4 then r = 2.
  CHECK(b.low_rank == 2 * 4 * 2 * ((64 * 4 + 4 * 8) + (64 * 2 + 2 * 8)));
  // Buffer: 2 tokens x 4 heads x 8 dims, fp16, K and V.
  CHECK(b.full == 2 * 4 * 8 * 2 * 2);
  CHECK(b.in_use() == b.codes + b.scales + b.sparse + b.low_rank + b.full);
}

TEST_CASE("gear cache: bytes equal the closed form (gear-kcvt-4 at 10 % sparsity)", "[gear][bytes]") {
  // kcvt's keys have one range per channel over a block, and blocks are whole streaming gaps
  // (CacheConfig::prompt_alignment): the 100-token prompt leaves 64 compressed and 36 buffered; 30 decoded
  // tokens fill the buffer to 66, whose oldest 64 form the second block.
  auto cache = stream(config("gear-kcvt-4", {{"sparsity", "10"}}), 100, 30);
  CHECK(cache->compressed(0) == 128);
  CHECK(cache->buffered(0) == 2);
  const gear::ByteBreakdown b = cache->bytes();
  CHECK(b.codes == 2 * 128 * 32 / 2);            // 4-bit: two codes per byte
  CHECK(b.scales == 2 * 32 * 4 + 128 * 4);       // per channel and block (keys), per token (values)
  // Keys: 32 channel vectors of 64 entries per block, 3 outliers each side; values: 128 token vectors of 32
  // entries, 1 each side; fp16 value + int16 index.
  CHECK(b.sparse == (2 * 32 * 6 + 128 * 2) * (2 + 2));
  // Rank 4 for the prompt's block, 2 for the streamed one: A [64, r] and B [r, 8] per head, K and V.
  CHECK(b.low_rank == 2 * 4 * 2 * ((64 * 4 + 4 * 8) + (64 * 2 + 2 * 8)));
  CHECK(b.full == 2 * 4 * 8 * 2 * 2);
}

TEST_CASE("gear cache: reconstruction error shrinks with bits; buffer tokens are exact fp16", "[gear]") {
  at::Tensor K, V;
  double prev = 1e9;
  for (const char* bits : {"2", "4", "8"}) {
    auto cache = stream(config("gear-kcvt-4", {{"bits", bits}}), 96, 20, 1, &K, &V);
    auto [k, v] = cache->view(0);
    REQUIRE(k.size(1) == 116);
    const double err = (k - K[0]).norm().item<double>() / K[0].norm().item<double>();
    INFO("bits " << bits << ": relative K error " << err);
    CHECK(err < prev);
    prev = err;
    // The 20 decoded tokens are in the buffer: fp16-rounded, nothing else.
    CHECK(at::equal(k.narrow(1, 96, 20), K[0].narrow(1, 96, 20).to(at::kHalf).to(at::kFloat)));
  }
  CHECK(prev < 0.01);
}

TEST_CASE("gear cache: without the dequantized working copy attention is the same", "[gear]") {
  for (const char* preset : {"gear-kivi-2", "gearl-kcvt-4", "kivi-2"}) {
    at::Tensor K, V;
    auto a = stream(config(preset), 70, 70, 2, &K, &V);
    auto b = stream(config(preset, {{"dequant-cache", "off"}}), 70, 70, 2);
    for (int row = 0; row < 2; ++row) {
      CHECK(at::allclose(a->view(row).first, b->view(row).first, 1e-6, 1e-6));
      CHECK(at::allclose(a->view(row).second, b->view(row).second, 1e-6, 1e-6));
    }
    CHECK(a->bytes().in_use() == b->bytes().in_use());
  }
}

TEST_CASE("gear cache: clear errors for misuse", "[gear]") {
  auto cache = stream(config("gear-kivi-2"), 10, 0);
  gear::StepInfo p;
  p.row = 0, p.start = 3, p.n_new = 2;  // the row holds 10 tokens
  CHECK_THROWS_WITH(cache->append(p, at::randn({kNkv, 2, kHd}), at::randn({kNkv, 2, kHd})),
                    Catch::Contains("prefill at position 3 but the row holds 10 tokens"));
  CHECK_THROWS_WITH(gear::GearCache(0, 1, kNkv, kHd, 64, at::TensorOptions(), gear::preset("pyramid")),
                    Catch::Contains("does not quantize"));
}

TEST_CASE("gear cache: 8-bit GEAR reproduces the reference texts; 4-bit GEAR diverges later than 4-bit uniform",
          "[gear][generation]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  gear::GenerationParams params;
  params.sampling.temperature = 0;
  int gear4 = 0, uniform4 = 0;
  for (const std::string name : {"once_upon_a_time", "the_little_dog"}) {
    const std::string prompt = name == "once_upon_a_time" ? "Once upon a time" : "The little dog";
    const std::vector<int> ids = tok->encode(prompt, true);
    params.max_new_tokens = 200 - int(ids.size()) + 1;
    auto run = [&](const gear::CacheConfig& c) {
      gear::KvCache cache = gear::make_cache(model, c, 1, 512);
      return gear::generate(model, cache, {ids}, params).tokens[0];
    };
    const std::vector<int> full = run(gear::preset("full"));
    const std::vector<int> g8 = run(config("gear-kcvt-4", {{"bits", "8"}}));
    std::vector<int> all = ids;
    all.insert(all.end(), g8.begin(), g8.end());
    std::ifstream f(gear::test::shared("reference/" + name + ".text"));
    std::stringstream want;
    want << f.rdbuf();
    CHECK(tok->decode(all) + "\n" == want.str());
    const int dg = gear::first_divergence(full, run(gear::preset("gear-kcvt-4")));
    const int du = gear::first_divergence(full, run(gear::preset("uniform-4")));
    WARN(name << ": first divergence from FP16 at token " << dg << " (gear-kcvt-4) vs " << du << " (uniform-4) of "
              << full.size());
    gear4 += dg, uniform4 += du;
  }
  CHECK(gear4 > uniform4);
}

TEST_CASE("gear cache: on CUDA (the same ATen path) 8-bit GEAR reproduces the reference text; bytes match the CPU",
          "[gear][cuda]") {
  if (!at::hasCUDA()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  if (!gear::test::have_shared(kModel)) return;
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  const std::vector<int> ids = tok->encode("Once upon a time", true);
  gear::GenerationParams params;
  params.sampling.temperature = 0;
  params.max_new_tokens = 196;
  const gear::CacheConfig c = config("gear-kcvt-4", {{"bits", "8"}});
  std::vector<int> out[2];
  int64_t bytes[2];
  int i = 0;
  for (const char* device : {"cpu", "cuda"}) {
    gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {device, "f32"});
    gear::KvCache cache = gear::make_cache(model, c, 1, 512);
    out[i] = gear::generate(model, cache, {ids}, params).tokens[0];
    bytes[i++] = cache.bytes().in_use();
  }
  CHECK(out[0] == out[1]);
  CHECK(bytes[0] == bytes[1]);
  // fp16 weights on the GPU: every method runs and stays within its budget.
  gear::LlamaModel half(gear::load_llama2c(gear::test::shared(kModel)), {"cuda", "f16"});
  for (const char* p : {"gear-kivi-2", "kivi-4", "pyramid", "h2o", "streamingllm"}) {
    gear::CacheConfig pc = gear::preset(p);
    if (pc.method == gear::CacheMethod::Pyramid) pc.pyramid.l0 = 64;
    if (pc.method == gear::CacheMethod::H2O) pc.eviction.heavy = 32, pc.eviction.recent = 32;
    gear::KvCache cache = gear::make_cache(half, pc, 2, 512);
    const auto r = gear::generate(half, cache, {ids, ids}, params);
    INFO(p);
    CHECK(r.tokens[0] == r.tokens[1]);
    CHECK(cache.bytes().in_use() > 0);
  }
}

TEST_CASE("gear cache: a row's compression does not depend on its batch neighbours (identical rows stay identical)",
          "[gear]") {
  if (!gear::test::have_shared(kModel)) return;
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  const std::vector<int> ids = tok->encode("Once upon a time", true);
  gear::GenerationParams params;
  params.sampling.temperature = 0;
  params.max_new_tokens = 140;  // two streamed blocks after the prompt's
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {"cpu", "f32"});
  // The low-rank factors come from a seeded power iteration: seeds follow each row's own blocks.
  gear::KvCache pair = gear::make_cache(model, gear::preset("gearl-kivi-2"), 2, 512);
  const auto r = gear::generate(model, pair, {ids, ids}, params);
  CHECK(r.tokens[0] == r.tokens[1]);
  gear::KvCache single = gear::make_cache(model, gear::preset("gearl-kivi-2"), 1, 512);
  CHECK(gear::generate(model, single, {ids}, params).tokens[0] == r.tokens[0]);
  const auto& a = dynamic_cast<const gear::GearCache&>(pair.layer(2));
  REQUIRE(a.key_blocks(0).size() == a.key_blocks(1).size());
  for (size_t i = 0; i < a.key_blocks(0).size(); ++i)
    CHECK(at::equal(a.key_blocks(0)[i].l.a, a.key_blocks(1)[i].l.a));
}
