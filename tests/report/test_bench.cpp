// gearlab bench's measurements: sane numbers, exact bytes on the CPU, and the budget search against a
// hand computation of the byte model.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/bench/progress.h"
#include "core/bench/throughput.h"
#include "core/cache/make_cache.h"
#include "core/io/loader.h"
#include "core/model/llama.h"
#include "test_paths.h"

namespace {

const std::string kModel = "models/stories260K/stories260K.bin";

gear::bench::Method method(const std::string& name) { return {name, gear::preset(name)}; }

gear::bench::Protocol tiny() {
  gear::bench::Protocol p;
  p.steps = 2, p.warmup = 1, p.repeats = 3;
  return p;
}

}  // namespace

TEST_CASE("bench: largest_within finds the boundary of linear, curved and failing peaks, asking each batch once",
          "[bench]") {
  const int64_t base = 13'000'000'000, row = 500'000'000;
  // Peak models: linear (the CPU byte model, nearly CUDA's), growing faster than linear (activations), a
  // step (a pool that doubles), and runs that fail (int64 max) above some batch.
  const std::vector<std::pair<const char*, std::function<int64_t(int)>>> models = {
      {"linear", [&](int b) { return base + b * row; }},
      {"convex", [&](int b) { return base + b * row + int64_t(b) * b * 4'000'000; }},
      {"steps", [&](int b) { return base + int64_t((b + 7) / 8) * 8 * row; }},
      {"oom above 30", [&](int b) { return b > 30 ? std::numeric_limits<int64_t>::max() : base + b * row; }},
  };
  for (const auto& [name, peak] : models)
    for (int64_t budget : {base, base + row, base + 2 * row + row / 3, base + 37 * row, base + 37 * row + row / 2,
                           base + 100 * row, base + 500 * row}) {
      const int cap = 100;
      int want = 0;
      while (want < cap && peak(want + 1) <= budget) ++want;
      std::vector<int> asked;
      const int got = gear::bench::largest_within(
          [&](int b) {
            CHECK(std::find(asked.begin(), asked.end(), b) == asked.end());
            CHECK((b >= 1 && b <= cap));
            asked.push_back(b);
            return peak(b);
          },
          budget, cap);
      INFO(name << ": budget " << budget << ", asked " << asked.size());
      CHECK(got == want);
      CHECK(asked.size() <= 16);
      // The reason for interpolating: a linear peak is found in at most 5 runs (1, 2, one past the line's
      // answer, the answer; plus the cap when everything fits), where bisecting took 6-8.
      if (std::string(name) == "linear") CHECK(asked.size() <= 5);
    }
  CHECK(gear::bench::largest_within([](int) { return int64_t(0); }, 1, 1000) == 1000);
  CHECK(gear::bench::largest_within([](int) { return int64_t(0); }, 1, 0) == 0);
}

TEST_CASE("bench: stories260K decode on the CPU gives sane numbers and exact bytes", "[bench]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  const gear::ModelConfig& c = model.config();
  const gear::bench::Protocol p = tiny();
  const int64_t context = 64, capacity = context + 1 + 2 * 3;  // 64: one whole KIVI group gets compressed
  REQUIRE(p.capacity(context) == capacity);

  const auto full = gear::bench::measure(model, method("full"), 2, context, p);
  REQUIRE(full.fits);
  CHECK(full.tokens_per_s > 0);
  CHECK(full.ms_samples.size() == 3);
  CHECK(full.ms_per_step == Approx(gear::bench::median_of(full.ms_samples)));
  CHECK(full.tokens_per_s == Approx(2 * 1000.0 / full.ms_per_step));
  // f32 on the CPU: K and V of every layer at the full capacity, 4 bytes each, per row.
  const int64_t row_bytes = 2 * int64_t(c.n_layers) * c.n_kv_heads * c.hd() * 4 * capacity;
  CHECK(full.kv_reserved_bytes == 2 * row_bytes);
  // In use: the tokens held, twice the FP16 formula (f32).
  CHECK(full.fp16_kv_bytes == gear::fp16_bytes(c, 2 * capacity));
  CHECK(full.kv_bytes == 2 * full.fp16_kv_bytes);
  CHECK(full.peak_bytes == model.weight_bytes() + full.kv_reserved_bytes);
  CHECK(full.weight_bytes == model.weight_bytes());

  const auto kivi = gear::bench::measure(model, method("kivi-2"), 2, context, p);
  REQUIRE(kivi.fits);
  CHECK(kivi.tokens_per_s > 0);
  CHECK(kivi.fp16_kv_bytes == full.fp16_kv_bytes);
  CHECK(kivi.kv_bytes < full.kv_bytes / 2);  // smaller than FP16, let alone f32
  CHECK(kivi.peak_bytes == model.weight_bytes() + kivi.kv_reserved_bytes);

  const nlohmann::json j = gear::bench::to_json(kivi);
  for (const char* key : {"name", "config", "config_text", "batch", "context", "tokens_per_s", "ms_per_step",
                          "ms_samples", "peak_bytes", "prefill_peak_bytes", "decode_peak_bytes", "kv_bytes", "weight_bytes", "fits"})
    CHECK(j.contains(key));
  CHECK(j["config"]["preset"] == "kivi-2");

  gear::bench::Protocol long_run = p;
  long_run.steps = 600;
  CHECK_THROWS_WITH(gear::bench::measure(model, method("full"), 1, context, long_run),
                    Catch::Contains("exceeds the model's context of 512"));
}

TEST_CASE("bench: malformed tuning variables stop the measurement with a message naming them", "[bench]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  struct Env {  // set for one check only
    const char* name;
    Env(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
    ~Env() { unsetenv(name); }
  };
  const gear::bench::Protocol p = tiny();  // one warm-up step
  for (const char* bad : {"abc", "8x", "17", "-1", "99999999999999999999"}) {
    INFO(bad);
    Env env("GEARLAB_KEY_PASS_TILES", bad);
    CHECK_THROWS_WITH(gear::bench::measure(model, method("full"), 1, 16, p),
                      Catch::Contains(std::string("GEARLAB_KEY_PASS_TILES=") + bad) && Catch::Contains("from 0 to 16"));
  }
  for (const char* bad : {"x", "-2", "1.5"}) {
    INFO(bad);
    Env env("GEARLAB_PROFILE_STEPS", bad);
    CHECK_THROWS_WITH(gear::bench::measure(model, method("full"), 1, 16, p),
                      Catch::Contains(std::string("GEARLAB_PROFILE_STEPS=") + bad) && Catch::Contains("whole number"));
  }
  {
    Env env("GEARLAB_PROFILE_STEPS", "2");  // more than the warm-up holds
    CHECK_THROWS_WITH(gear::bench::measure(model, method("full"), 1, 16, p),
                      Catch::Contains("GEARLAB_PROFILE_STEPS=2") && Catch::Contains("--warmup 2 or more (got 1)"));
  }
  // Valid values; on the CPU they apply to nothing, and the measurement runs as without them.
  Env tiles("GEARLAB_KEY_PASS_TILES", "8"), steps("GEARLAB_PROFILE_STEPS", "1");
  CHECK(gear::bench::measure(model, method("full"), 1, 16, p).fits);
}

TEST_CASE("bench: the CPU budget search returns the largest batch of the byte model", "[bench]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  const gear::ModelConfig& c = model.config();
  const gear::bench::Protocol p = tiny();
  const int64_t context = 24, capacity = p.capacity(context);
  // By hand: weights + B x (2 sides x layers x kv heads x head dim x 4 bytes x capacity) <= budget.
  const int64_t row = 2 * int64_t(c.n_layers) * c.n_kv_heads * c.hd() * 4 * capacity;
  const double gib = 1024.0 * 1024 * 1024;
  const int64_t budget = model.weight_bytes() + 7 * row + row / 2;  // 7.5 rows of room
  std::vector<std::string> probes;
  const auto r = gear::bench::budget_search(model, method("full"), double(budget) / gib, context, p, 64,
                                            [&](const std::string& what) { probes.push_back(what); });
  CHECK(r.max_batch == 7);
  CHECK_FALSE(r.capped);
  CHECK(r.at_max.batch == 7);
  CHECK(r.at_max.peak_bytes == model.weight_bytes() + 7 * row);  // the run agrees with the byte model
  CHECK(r.at_max.tokens_per_s > 0);
  CHECK(probes == std::vector<std::string>{"full batch 1", "full batch 7"});  // one row to size it, then the run
  // The JSON names each probe's peaks by phase; the CPU's byte model has one figure for all three.
  const nlohmann::json jb = gear::bench::to_json(r);
  REQUIRE(jb.at("probes").size() == r.probes.size());
  for (const auto& pr : jb.at("probes")) {
    CHECK(pr.at("prefill_peak_bytes") == pr.at("peak_bytes"));
    CHECK(pr.at("decode_peak_bytes") == pr.at("peak_bytes"));
    CHECK(pr.at("fits") == (pr.at("peak_bytes").get<int64_t>() <= budget));
  }
  CHECK(jb.at("max_batch") == 7);
  CHECK(jb.at("prefill_peak_bytes") == r.at_max.peak_bytes);
  CHECK(jb.at("decode_peak_bytes") == r.at_max.peak_bytes);

  // A compressed cache fits more rows in the same budget; the weights alone do not fit at all.
  const auto kivi = gear::bench::budget_search(model, method("kivi-2"), double(budget) / gib, context, p, 64);
  CHECK(kivi.max_batch > r.max_batch);
  const auto none = gear::bench::budget_search(model, method("full"), double(model.weight_bytes()) / gib, context, p, 64);
  CHECK(none.max_batch == 0);
  const auto capped = gear::bench::budget_search(model, method("full"), 1.0, context, p, 3);
  CHECK(capped.max_batch == 3);
  CHECK(capped.capped);
}

TEST_CASE("bench: progress is one redrawn line on a terminal, plain lines otherwise", "[bench]") {
  for (bool interactive : {true, false}) {
    std::FILE* f = std::tmpfile();
    {
      gear::bench::ProgressBar bar(f, 2, interactive);
      bar.show("full batch 1");
      bar.advance();
      bar.show("kivi-2 batch 1");
      bar.advance();
    }
    std::rewind(f);
    std::string out;
    for (int ch; (ch = std::fgetc(f)) != EOF;) out += char(ch);
    std::fclose(f);
    INFO(out);
    if (interactive) {
      CHECK(std::count(out.begin(), out.end(), '\n') == 1);  // only when it finishes
      CHECK_THAT(out, Catch::Contains("\r[############............] 1/2 kivi-2 batch 1"));
      CHECK_THAT(out, Catch::Contains("2/2 done"));
    } else {
      CHECK(out == "[........................] 0/2 full batch 1\n[############............] 1/2 kivi-2 batch 1\n");
    }
  }
}
