// The analysis API on real K/V captured from stories260K.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/cache/gear_cache.h"
#include "core/cache/make_cache.h"
#include "core/compression/analysis.h"
#include "core/io/loader.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"
#include "test_paths.h"

namespace {

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";
const char* kText = "eval/short_stories.txt";

struct Captured {
  std::unique_ptr<gear::LlamaModel> model;
  std::vector<int> ids;
  gear::CacheSnapshot snap;
};

// The first `n` tokens of the eval text through the full cache, `prompt` of them as the prompt and the
// rest decoded teacher-forced (so a GearCache fed the same tokens sees the same K/V).
Captured capture(int64_t n, int64_t prompt) {
  Captured c;
  c.model = std::make_unique<gear::LlamaModel>(gear::load_llama2c(gear::test::shared(kModel)), gear::DeviceSpec{});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  std::ifstream f(gear::test::shared(kText));
  std::stringstream s;
  s << f.rdbuf();
  c.ids = tok->encode(s.str(), true);
  REQUIRE(int64_t(c.ids.size()) >= n);
  c.ids.resize(size_t(n));
  gear::KvCache cache = c.model->make_full_cache(1, 512);
  c.model->prefill(cache, 0, std::vector<int>(c.ids.begin(), c.ids.begin() + prompt));
  for (int64_t t = prompt; t < n; ++t)
    c.model->decode(cache, at::full({1}, c.ids[size_t(t)], at::kLong), at::full({1}, t, at::kLong));
  c.snap = gear::capture_snapshot(cache, c.model->config(), 0, prompt);
  return c;
}

gear::CacheConfig with_bits(const std::string& preset, int bits) {
  gear::CacheConfig c = gear::preset(preset);
  c.bits = bits;
  return c;
}

}  // namespace

TEST_CASE("analysis: error(GEAR) <= error(GEAR-L) <= error(quant-only) per layer, 2 and 4 bits", "[analysis]") {
  if (!gear::test::have_shared(kModel)) return;
  const Captured c = capture(400, 300);
  for (const char* preset : {"gear-kivi-2", "gear-kcvt-4"}) {
    for (int bits : {2, 4}) {
      const gear::Analysis a = gear::analyze(c.snap, with_bits(preset, bits));
      REQUIRE(a.layers.size() == 5);
      for (size_t l = 0; l < a.layers.size(); ++l) {
        for (const gear::SideAnalysis* s : {&a.layers[l].k, &a.layers[l].v}) {
          INFO(preset << " " << bits << "-bit layer " << l << (s == &a.layers[l].k ? " K" : " V") << ": quant "
                      << s->error.quant << ", +S " << s->error.sparse << ", +L " << s->error.lowrank << ", gear "
                      << s->error.gear);
          CHECK(s->error.gear <= s->error.lowrank * (1 + 1e-6));
          CHECK(s->error.lowrank < s->error.quant);  // L always buys something on real residuals
          CHECK(s->error.sparse <= s->error.quant * (1 + 1e-6));
          CHECK(s->error.quant > 0);
          CHECK(s->heads.size() == 4);
        }
      }
    }
  }
}

TEST_CASE("analysis: bytes equal what a GearCache fed the same tokens holds", "[analysis][bytes]") {
  if (!gear::test::have_shared(kModel)) return;
  const Captured c = capture(300, 170);
  for (const char* preset : {"gear-kivi-2", "gearl-kcvt-4", "kivi-2", "uniform-2", "group-4"}) {
    gear::CacheConfig cfg = gear::preset(preset);
    gear::KvCache cache = gear::make_cache(*c.model, cfg, 1, 512);
    c.model->prefill(cache, 0, std::vector<int>(c.ids.begin(), c.ids.begin() + 170));
    for (int64_t t = 170; t < 300; ++t)
      c.model->decode(cache, at::full({1}, c.ids[size_t(t)], at::kLong), at::full({1}, t, at::kLong));
    const gear::Analysis a = gear::analyze(c.snap, cfg);
    INFO(preset);
    CHECK(a.bytes.in_use() == cache.bytes().in_use());
    CHECK(a.bytes.codes == cache.bytes().codes);
    CHECK(a.bytes.low_rank == cache.bytes().low_rank);
    CHECK(a.bytes.full == cache.bytes().full);
    const auto& g = dynamic_cast<const gear::GearCache&>(cache.layer(0));
    CHECK(a.compressed_tokens == g.compressed(0));
    CHECK(a.fp16_bytes == gear::fp16_bytes(c.model->config(), 300));
    CHECK(a.ratio_vs_fp16() == Approx(double(a.fp16_bytes) / double(cache.bytes().in_use())));
    // Per head, K and V separately: the heads add up to the layer's bytes exactly.
    for (const auto& layer : a.layers)
      for (const gear::SideAnalysis* s : {&layer.k, &layer.v}) {
        gear::ByteBreakdown sum;
        for (const auto& h : s->heads) sum += h.bytes;
        CHECK(sum.in_use() == s->bytes.in_use());
        CHECK(sum.low_rank == s->bytes.low_rank);
        CHECK(sum.sparse == s->bytes.sparse);
      }
  }
}

TEST_CASE("analysis: spectra, ranks, outlier maps and JSON", "[analysis]") {
  if (!gear::test::have_shared(kModel)) return;
  const Captured c = capture(256, 256);
  gear::CacheConfig cfg = gear::preset("gear-kcvt-4");
  cfg.sparsity = 10;  // enough outliers on stories260K's short vectors to map
  const gear::Analysis a = gear::analyze(c.snap, cfg);
  CHECK(a.compressed_tokens == 256);  // kcvt: the whole prompt is one block
  for (const auto& layer : a.layers) {
    for (const gear::SideAnalysis* s : {&layer.k, &layer.v}) {
      CHECK(s->rank == 4);
      for (const auto& h : s->heads) {
        REQUIRE(h.spectrum.size() == 8);  // min(256 tokens, head_dim 8)
        CHECK(std::is_sorted(h.spectrum.rbegin(), h.spectrum.rend()));
        CHECK(h.spectrum.back() >= 0);
      }
    }
    // Keys: 32 channel vectors of 256 tokens, floor(256 * 10 / 200) = 12 each side; values: 256 token
    // vectors of 32 channels, 1 each side.
    CHECK(layer.k.outliers.value.size() == 32 * 24);
    CHECK(layer.v.outliers.value.size() == 256 * 2);
  }
  // The map's entries are the exact (fp16) values at those positions.
  const gear::OutlierMap& m = a.layers[2].k.outliers;
  const at::Tensor k = c.snap.k[2];  // [4, 256, 8]
  for (size_t i = 0; i < m.value.size(); i += 37) {
    const int h = m.channel[i] / 8, d = m.channel[i] % 8;
    CHECK(m.value[i] == at::Half(k[h][m.token[i]][d].item<float>()));
  }
  const nlohmann::json j = gear::to_json(a, true, true);
  CHECK(j["layers"].size() == 5);
  CHECK(j["layers"][0]["k"]["heads"][0]["spectrum"].size() == 8);
  CHECK(j["config"]["sparsity"] == 10.0);
  CHECK(j["ratio_vs_fp16"].get<double>() == Approx(a.ratio_vs_fp16()));
  CHECK_THAT(gear::format_table(a), Catch::Contains("K gear"));
}

TEST_CASE("analysis: methods without a backbone and empty snapshots are refused clearly", "[analysis]") {
  gear::CacheSnapshot empty;
  CHECK_THROWS_WITH(gear::analyze(empty, gear::preset("pyramid")), Catch::Contains("no quantization backbone"));
  CHECK_THROWS_WITH(gear::analyze(empty, gear::preset("gear-kivi-2")), Catch::Contains("snapshot is empty"));
}
