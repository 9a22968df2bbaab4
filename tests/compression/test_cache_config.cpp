// CacheConfig: presets, flags, JSON, and one clear error for every invalid setting.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/compression/cache_config.h"
#include "core/util/error.h"

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gear::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// stories260K's shape: 5 layers, 4 kv heads of 8 dims (hidden K/V vector of 32 channels).
std::string invalid(gear::CacheConfig c) {
  return error_of([&] { gear::validate(c, 5, 4, 8); });
}

}  // namespace

TEST_CASE("config: GEAR's presets have the paper's settings", "[config]") {
  const gear::CacheConfig g = gear::preset("gear-kivi-2");
  CHECK(g.method == gear::CacheMethod::Gear);
  CHECK(g.backbone == gear::Backbone::Kivi);
  CHECK(g.bits == 2);
  CHECK(g.group == 64);
  CHECK(g.sparsity == 2.0);
  CHECK(g.prefill_rank_k == 4);
  CHECK(g.block_rank_v == 2);
  CHECK(g.power_iters == 3);
  CHECK(g.stream_gap == 64);
  CHECK(g.key_spec().axis == gear::QuantAxis::Channel);
  CHECK(g.value_spec().axis == gear::QuantAxis::Token);
  const gear::CacheConfig k = gear::preset("kcvt-4");
  CHECK(k.method == gear::CacheMethod::Quant);
  CHECK(k.bits == 4);
  CHECK(k.key_spec().group == 0);  // per channel over the whole block
  CHECK(k.value_spec().group == 0);  // per token over the whole hidden vector
  CHECK_FALSE(k.has_low_rank());
  // Block-wide key ranges (KCVT) align prompts to the streaming gap; KIVI's to its key group; unquantized: none.
  CHECK(k.block_wide_keys());
  CHECK(k.prompt_alignment() == k.stream_gap);
  CHECK_FALSE(g.block_wide_keys());
  CHECK(g.prompt_alignment() == 64);
  CHECK_FALSE(gear::preset("kivi-2").block_wide_keys());
  CHECK(gear::preset("kivi-2").prompt_alignment() == gear::preset("kivi-2").group);
  CHECK_FALSE(gear::preset("full").block_wide_keys());
  CHECK(gear::preset("full").prompt_alignment() == 1);
  CHECK(gear::preset("gearl-kcvt-4").has_low_rank());
  CHECK_FALSE(gear::preset("gearl-kcvt-4").has_sparse());
  for (const auto& name : gear::preset_names()) CHECK(gear::preset(name).preset == name);
  CHECK(std::string(gear::kDefaultPreset) == "gear-kivi-2");
}

TEST_CASE("config: methods bring their papers' defaults; flags override them", "[config]") {
  gear::CacheConfig c;
  gear::set_option(c, "cache", "kivi");
  CHECK(c.method == gear::CacheMethod::Kivi);
  CHECK(c.group == 32);
  CHECK(c.stream_gap == 128);
  gear::set_option(c, "bits", "4");
  CHECK(c.bits == 4);
  CHECK_THAT(error_of([&] { gear::set_option(c, "backbone", "kcvt"); }), Catch::Contains("always uses the kivi backbone"));
  gear::set_option(c, "cache", "gear-kcvt-4");  // a preset through --cache
  CHECK(c.preset == "gear-kcvt-4");
  gear::set_option(c, "rank", "3");
  CHECK(c.prefill_rank_k == 3);
  CHECK(c.block_rank_v == 3);
  gear::set_option(c, "k-rank", "1");
  CHECK(c.prefill_rank_k == 1);
  CHECK(c.prefill_rank_v == 3);
  gear::set_option(c, "cache", "pyramid");
  gear::set_option(c, "pool", "best");
  CHECK(c.pyramid.pool == gear::PoolKind::Best);
  CHECK_THAT(error_of([&] { gear::set_option(c, "bits", "four"); }), Catch::Contains("bits must be an integer"));
  CHECK_THAT(error_of([&] { gear::set_option(c, "sparsity", "2%"); }), Catch::Contains("sparsity must be a number"));
  CHECK_THAT(error_of([&] { gear::set_option(c, "colour", "red"); }), Catch::Contains("unknown setting \"colour\""));
  CHECK_THAT(error_of([&] { gear::set_option(c, "cache", "zip"); }), Catch::Contains("unknown cache method \"zip\""));
  CHECK_THAT(error_of([&] { gear::set_option(c, "pool", "median"); }), Catch::Contains("median"));
}

TEST_CASE("config: every invalid setting is rejected with its message", "[config]") {
  const gear::CacheConfig base = gear::preset("gear-kivi-2");
  CHECK(invalid(base) == "(no error)");
  auto with = [&](const char* name, const char* value, gear::CacheConfig c = gear::preset("gear-kivi-2")) {
    gear::set_option(c, name, value);
    return invalid(c);
  };
  CHECK_THAT(with("bits", "5"), Catch::Contains("bits must be 2, 3, 4 or 8, got 5"));
  CHECK_THAT(with("bits", "16"), Catch::Contains("bits must be 2, 3, 4 or 8, got 16"));
  CHECK_THAT(with("rank", "9"), Catch::Contains("rank 9 is larger than the head dimension 8"));
  CHECK_THAT(with("block-rank", "-1"), Catch::Contains("rank must not be negative, got -1"));
  CHECK_THAT(with("sparsity", "60"), Catch::Contains("sparsity must be in [0, 50] %, got 60"));
  CHECK_THAT(with("sparsity", "-1"), Catch::Contains("sparsity must be in [0, 50] %"));
  CHECK_THAT(with("group", "12", gear::preset("group-4")), Catch::Contains("group size 12 does not divide the hidden K/V vector of 32 channels"));
  CHECK_THAT(with("group", "12"), Catch::Contains("group size 12 does not divide the streaming block of 64 tokens"));
  CHECK_THAT(with("stream-gap", "0"), Catch::Contains("streaming gap must be at least 1 token, got 0"));
  gear::CacheConfig g32 = gear::preset("gear-kivi-2");
  gear::set_option(g32, "group", "32");
  CHECK_THAT(with("stream-gap", "48", g32), Catch::Contains("group size 32 does not divide the streaming block of 48 tokens"));
  CHECK(with("stream-gap", "48") == "(no error)");  // group 64 >= the 48-token block: one group per channel
  CHECK_THAT(with("power-iters", "0"), Catch::Contains("power iterations must be at least 1"));
  CHECK_THAT(with("rank-ratio", "1.5"), Catch::Contains("rank ratio must be in [0, 1]"));
  CHECK(with("group", "64") == "(no error)");
  gear::CacheConfig gw = gear::preset("group-4");
  gear::set_option(gw, "group-axis", "channel");
  CHECK(gw.key_spec().axis == gear::QuantAxis::Channel);
  CHECK(gw.value_spec().axis == gear::QuantAxis::Channel);
  CHECK_THAT(with("group", "24", gw), Catch::Contains("group size 24 does not divide the streaming block of 64 tokens"));
  CHECK_THAT(error_of([&] { gear::set_option(gw, "group-axis", "diagonal"); }), Catch::Contains("token or channel"));  // longer than the 32-channel vector: the whole vector
  gear::CacheConfig p = gear::preset("pyramid");
  CHECK_THAT(with("beta", "1.5", p), Catch::Contains("beta"));
  CHECK_THAT(with("beta", "0", p), Catch::Contains("beta"));
  gear::CacheConfig small = p;
  gear::set_option(small, "l0", "20");
  gear::set_option(small, "sinks", "8");
  CHECK_THAT(with("recent", "16", small), Catch::Contains("budget"));
}

TEST_CASE("config: JSON round trip and describe", "[config]") {
  for (const auto& name : gear::preset_names()) {
    gear::CacheConfig c = gear::preset(name);
    const gear::CacheConfig back = gear::config_from_json(gear::to_json(c));
    CHECK(gear::describe(back) == gear::describe(c));
    CHECK(gear::to_json(back) == gear::to_json(c));
  }
  gear::CacheConfig c = gear::config_from_json(nlohmann::json{{"cache", "gear"}, {"bits", 4}, {"sparsity", 1.5}});
  CHECK(c.bits == 4);
  CHECK(c.sparsity == 1.5);
  CHECK_THAT(gear::describe(gear::preset("gear-kivi-2")), Catch::Contains("gear-kivi-2: gear, kivi 2-bit g64, sparsity 2%"));
  CHECK_THAT(error_of([] { gear::config_from_json(nlohmann::json::array()); }), Catch::Contains("must be an object"));
  CHECK_THAT(error_of([] { gear::config_from_json(nlohmann::json{{"bits", nullptr}}); }), Catch::Contains("\"bits\""));
  CHECK_THAT(error_of([] { gear::config_from_json(nlohmann::json{{"bits", 2.5}}); }), Catch::Contains("bits must be an integer"));
}

TEST_CASE("config: impl selects the quantized caches' implementation", "[config]") {
  gear::CacheConfig c = gear::preset("gear-kivi-2");
  CHECK(c.impl == gear::CacheImpl::Auto);  // the default
  for (const auto& [text, want] : std::vector<std::pair<std::string, gear::CacheImpl>>{
           {"aten", gear::CacheImpl::Aten}, {"cuda", gear::CacheImpl::Cuda}, {"auto", gear::CacheImpl::Auto}}) {
    gear::set_option(c, "impl", text);
    CHECK(c.impl == want);
    CHECK(gear::impl_name(c.impl) == text);
  }
  // A bad value names the valid ones.
  const std::string e = error_of([&] { gear::set_option(c, "impl", "gpu"); });
  CHECK_THAT(e, Catch::Contains("impl must be auto, aten or cuda, got \"gpu\""));
  CHECK(c.impl == gear::CacheImpl::Auto);  // unchanged
  CHECK(std::find(gear::option_names().begin(), gear::option_names().end(), "impl") != gear::option_names().end());

  // JSON round trip (quantized methods record it), and describe() names a forced implementation.
  gear::set_option(c, "impl", "cuda");
  const nlohmann::json j = gear::to_json(c);
  CHECK(j.at("impl") == "cuda");
  const gear::CacheConfig back = gear::config_from_json(j);
  CHECK(back.impl == gear::CacheImpl::Cuda);
  CHECK(gear::to_json(back) == j);
  CHECK_THAT(gear::describe(c), Catch::Contains("impl cuda"));
  CHECK_THAT(gear::describe(gear::preset("gear-kivi-2")), !Catch::Contains("impl"));
  CHECK(gear::config_from_json(nlohmann::json{{"cache", "kivi"}, {"impl", "aten"}}).impl == gear::CacheImpl::Aten);
  CHECK_THAT(error_of([] { gear::config_from_json(nlohmann::json{{"impl", "fast"}}); }),
             Catch::Contains("impl must be auto, aten or cuda, got \"fast\""));
  CHECK_THAT(error_of([] { gear::config_from_json(nlohmann::json{{"impl", 3}}); }), Catch::Contains("impl must be"));
  // Choosing a method or preset resets it, like every other setting.
  gear::set_option(c, "cache", "kivi-2");
  CHECK(c.impl == gear::CacheImpl::Auto);
  // Methods that do not quantize ignore it (not in their JSON).
  CHECK_FALSE(gear::to_json(gear::preset("full")).contains("impl"));
}
