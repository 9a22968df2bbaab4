// The session API headless: load, chat (compare mode), settings, snapshot, analysis, errors, export.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/session/session.h"
#include "test_paths.h"

namespace {

const char* kModel = "models/stories260K/stories260K.bin";

gear::ModelRequest stories() {
  gear::ModelRequest r;
  r.model_path = gear::test::shared(kModel);
  return r;
}

gear::TurnOptions greedy(int n) {
  gear::TurnOptions o;
  o.max_new_tokens = n;
  o.sampling.temperature = 0;
  return o;
}

}  // namespace

TEST_CASE("session: load, chat side by side, snapshot and analysis", "[session]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::Session s;
  int notified = 0;
  s.set_listener([&] { ++notified; });
  s.load_model(stories());
  s.wait_idle();
  auto st = s.state();
  REQUIRE(st->model_loaded);
  CHECK(st->error.empty());
  CHECK(st->model.config.n_layers == 5);
  CHECK(st->cache.preset == "gear-kivi-2");  // the default

  // 8-bit GEAR: both sides give the FP16 text.
  gear::CacheConfig c = gear::preset("gear-kcvt-4");
  c.bits = 8;
  s.set_cache(c);
  s.send("Once upon a time", greedy(60));
  s.wait_idle();
  st = s.state();
  REQUIRE(st->chat.size() == 1);
  const gear::Exchange& e = st->chat[0];
  CHECK(e.done);
  CHECK(e.answered[gear::kReference]);
  CHECK(e.answered[gear::kCompressed]);
  CHECK(e.reply[0] == e.reply[1]);
  CHECK(e.first_divergence == -1);
  CHECK(e.reply_tokens[0].size() == 60);
  CHECK(st->live[gear::kCompressed].tokens > 60);
  // 8 bits + rank-4 factors on 8-dim heads: about FP16's size on this tiny model.
  CHECK(st->live[gear::kCompressed].ratio_vs_fp16() > 0.5);
  CHECK(st->live[gear::kReference].tokens_per_s > 0);
  REQUIRE(st->snapshot);
  CHECK(st->snapshot->tokens() == st->live[gear::kReference].tokens);
  REQUIRE(st->analysis);
  CHECK(st->analysis->layers.size() == 5);
  CHECK(notified > 3);

  // A slider move: new settings -> a new analysis of the same snapshot.
  const double err8 = st->analysis->layers[0].k.error.quant;
  c.bits = 2;
  s.set_cache(c);
  s.wait_idle();
  st = s.state();
  REQUIRE(st->analysis);
  CHECK(st->analysis->config.bits == 2);
  CHECK(st->analysis->layers[0].k.error.quant > 10 * err8);

  // 2-bit uniform quantization diverges from FP16 in a second turn; the divergence is marked.
  s.set_cache(gear::preset("uniform-2"));
  s.send(" The dog", greedy(60));
  s.wait_idle();
  st = s.state();
  REQUIRE(st->chat.size() == 2);
  CHECK(st->chat[1].first_divergence >= 0);
  CHECK(st->chat[1].reply[0] != st->chat[1].reply[1]);
  // The texts agree up to the marked characters.
  const gear::Exchange& x = st->chat[1];
  REQUIRE(x.divergence_char[0] >= 0);
  CHECK(x.reply[0].substr(0, size_t(x.divergence_char[0])) == x.reply[1].substr(0, size_t(x.divergence_char[1])));
  // The history of the old prompt was rebuilt under the new settings: the cache holds both turns.
  CHECK(st->live[gear::kCompressed].tokens == st->live[gear::kReference].tokens);
  CHECK(st->live[gear::kCompressed].ratio_vs_fp16() > 2.0);  // 2-bit codes
}

TEST_CASE("session: GEAR toggle, compare off, new chat, cancel", "[session]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::Session s;
  s.load_model(stories());
  s.set_compare(false);
  s.set_gear(false);
  s.send("Lily", greedy(20));
  s.wait_idle();
  auto st = s.state();
  REQUIRE(st->chat.size() == 1);
  CHECK(st->chat[0].answered[gear::kReference]);
  CHECK_FALSE(st->chat[0].answered[gear::kCompressed]);
  s.set_gear(true);
  s.send(" and", greedy(20));
  s.wait_idle();
  st = s.state();
  CHECK(st->chat[1].answered[gear::kCompressed]);
  CHECK_FALSE(st->chat[1].answered[gear::kReference]);
  // The compressed side caught up with turn 1 (answered by the reference side) before answering.
  CHECK(st->live[gear::kCompressed].tokens > 40);
  REQUIRE(st->snapshot);  // the reference side was brought up to date for the analysis
  CHECK(st->snapshot->tokens() == st->live[gear::kCompressed].tokens);

  s.new_chat();
  s.wait_idle();
  CHECK(s.state()->chat.empty());
  CHECK_FALSE(s.state()->snapshot);

  s.send("Once", greedy(400));
  s.cancel();
  s.wait_idle();
  st = s.state();
  REQUIRE(st->chat.size() == 1);
  CHECK(st->chat[0].reply_tokens[1].size() < 400);
}

TEST_CASE("session: bad inputs become one-line errors and the session keeps working", "[session]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::Session s;
  s.send("hi", greedy(5));  // no model yet
  s.wait_idle();
  CHECK_THAT(s.state()->error, Catch::Contains("load a model first"));
  const uint64_t errors = s.state()->error_count;

  gear::ModelRequest bad;
  bad.model_path = "/nonexistent/model.bin";
  s.load_model(bad);
  s.wait_idle();
  CHECK_THAT(s.state()->error, Catch::Contains("/nonexistent/model.bin"));
  CHECK(s.state()->error_count == errors + 1);
  CHECK_FALSE(s.state()->model_loaded);

  s.load_model(stories());
  s.wait_idle();
  REQUIRE(s.state()->model_loaded);
  gear::CacheConfig c = gear::preset("gear-kivi-2");
  c.prefill_rank_k = 9;  // > head_dim 8
  s.set_cache(c);
  CHECK_THAT(s.state()->error, Catch::Contains("rank 9 is larger than the head dimension 8"));
  CHECK(s.state()->cache.prefill_rank_k == 4);  // the old settings stay

  s.send(std::string("\xff\xfe bad"), greedy(5));
  s.wait_idle();
  CHECK_THAT(s.state()->error, Catch::Contains("UTF-8"));
  s.send(std::string(3000, 'a') + " long", greedy(5));
  s.wait_idle();
  CHECK_THAT(s.state()->error, Catch::Contains("context holds 512"));
  s.send("Once upon a time", greedy(10));  // still works
  s.wait_idle();
  CHECK(s.state()->chat.back().done);
  CHECK(s.state()->chat.back().reply_tokens[1].size() == 10);
}

TEST_CASE("session: export writes the session JSON and calls the report writer", "[session]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::Session s;
  s.load_model(stories());
  s.send("Once upon a time", greedy(30));
  s.wait_idle();
  std::vector<std::string> seen;
  s.set_report_writer([&](const std::vector<std::string>& json, const std::string& dir) {
    seen = json;
    return std::vector<std::string>{dir + "/report.html"};
  });
  const std::string dir = gear::test::scratch_dir("session-export");
  const auto files = s.export_report(dir);
  REQUIRE(files.size() == 3);  // session.json, analysis.json, and what the writer made
  CHECK(seen == std::vector<std::string>{files[0], files[1]});
  std::ifstream af(files[1]);
  CHECK(nlohmann::json::parse(af)["kind"] == "analysis");
  std::ifstream f(files[0]);
  const nlohmann::json j = nlohmann::json::parse(f);
  CHECK(j["kind"] == "session");
  CHECK(j["cache"]["preset"] == "gear-kivi-2");
  CHECK(j["chat"].size() == 1);
  CHECK(j["analysis"]["layers"].size() == 5);
  CHECK_THROWS_WITH(s.export_report("/proc/nonexistent/x"), Catch::Contains("cannot create the report folder"));
}
