// The cache flags of generate and the analyze command, through the real binary.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli_runner.h"
#include "test_paths.h"

namespace {

using gear::test::gearlab;
using gear::test::lines;
using gear::test::Run;


const std::string kModel = "models/stories260K/stories260K.bin";

}  // namespace

TEST_CASE("generate: every cache method runs and reports its bytes against FP16", "[cli][cache]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string base = "generate --model " + gear::test::shared(kModel) + " --prompt 'Once upon a time' --temperature 0 --max-tokens 80 --quiet";
  for (const char* cache : {"gear", "gear-l", "quant --backbone kcvt --bits 4", "kivi", "groupwise", "uniform --bits 8",
                            "pyramid --l0 48 --recent 16 --beta 0.5 --pool best", "streamingllm --sinks 4 --recent 28",
                            "h2o --heavy 16 --recent 16", "gear-kcvt-4", "full"}) {
    const Run r = gearlab(base + " --cache " + cache);
    INFO(cache << "\n" << r.err);
    CHECK(r.code == 0);
    CHECK_THAT(r.err, Catch::Contains("FP16 would be"));
    CHECK_THAT(r.err, Catch::Contains("tokens/s"));
  }
  // The default is gear-kivi-2.
  CHECK_THAT(gearlab(base).err, Catch::Contains("cache: gear-kivi-2: gear, kivi 2-bit g64"));
}

TEST_CASE("generate: invalid cache settings exit 1 with one line naming the setting", "[cli][cache]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string base = "generate --model " + gear::test::shared(kModel) + " --prompt hi --max-tokens 4 --cache ";
  const std::pair<const char*, const char*> cases[] = {
      {"gear --bits 5", "bits must be 2, 3, 4 or 8, got 5"},
      {"gear --rank 9", "rank 9 is larger than the head dimension 8"},
      {"gear --rank -1", "rank must not be negative"},
      {"gear --sparsity 70", "sparsity must be in [0, 50] %, got 70"},
      {"groupwise --group 12", "group size 12 does not divide the hidden K/V vector of 32 channels"},
      {"gear --group 12", "group size 12 does not divide the streaming block of 64 tokens"},
      {"gear --stream-gap 0", "streaming gap must be at least 1 token"},
      {"pyramid --beta 1.5", "beta"},
      {"pyramid --l0 8 --sinks 4 --recent 8", "budget"},
      {"zip", "unknown cache method \"zip\""},
      {"kivi --backbone kcvt", "always uses the kivi backbone"},
      {"gear --bits two", "bits must be an integer"},
  };
  for (const auto& [flags, message] : cases) {
    const Run r = gearlab(base + flags);
    INFO(flags << " -> " << r.err);
    CHECK(r.code == 1);
    CHECK(lines(r.err) == 1);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
  const Run j = gearlab(base + "gear --cache-json /nonexistent.json");
  CHECK(j.code == 1);
  CHECK_THAT(j.err, Catch::Contains("/nonexistent.json: cannot open"));
}

TEST_CASE("analyze: per-layer table and JSON with spectra, outliers and bytes", "[cli][analysis]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string json = gear::test::scratch_dir("cli-analyze") + "/a.json";
  const Run r = gearlab("analyze --model " + gear::test::shared(kModel) + " --text " +
                        gear::test::shared("eval/short_stories.txt") + " --context 300 --max-tokens 20 --cache gear-kcvt-4 --sparsity 10 --json " + json);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("K gear"));
  CHECK(lines(r.out) >= 5 + 4);
  std::ifstream f(json);
  const nlohmann::json j = nlohmann::json::parse(f);
  CHECK(j["tokens"] == 299);  // 280 prompt tokens + 19 decoded (the 20th is sampled, not yet cached)
  CHECK(j["config"]["preset"] == "gear-kcvt-4");
  CHECK(j["layers"].size() == 5);
  CHECK(j["layers"][4]["v"]["heads"].size() == 4);
  CHECK(j["layers"][0]["k"]["outliers"]["value"].size() > 0);
  CHECK(j["ratio_vs_fp16"].get<double>() > 1.0);
  // Token-level methods have nothing to decompose: one clear line.
  const Run bad = gearlab("analyze --model " + gear::test::shared(kModel) + " --prompt hi --cache pyramid");
  CHECK(bad.code == 1);
  CHECK_THAT(bad.err, Catch::Contains("no quantization backbone"));
  CHECK(gearlab("analyze --model " + gear::test::shared(kModel) + " --prompt hi --text x").code == 2);
}

TEST_CASE("chat: the session API on stdin, side by side with FP16, exported", "[cli][session]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string dir = gear::test::scratch_dir("cli-chat");
  {
    std::ofstream in(dir + "/turns.txt");
    in << "Once upon a time\n The dog\n";
  }
  const Run r = gearlab("chat --model " + gear::test::shared(kModel) +
                        " --compare --cache uniform-2 --max-tokens 30 --export " + dir + "/report < " + dir + "/turns.txt");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') >= 6);  // two turns: reply, [fp16] reply, verdict
  CHECK_THAT(r.out, Catch::Contains("[fp16] "));
  CHECK_THAT(r.err, Catch::Contains("tokens/s"));
  std::ifstream f(dir + "/report/session.json");
  const nlohmann::json j = nlohmann::json::parse(f);
  CHECK(j["chat"].size() == 2);
  CHECK(j["compare"] == true);
  const Run bad = gearlab("chat --model /nonexistent.bin < " + dir + "/turns.txt");
  CHECK(bad.code == 1);
  CHECK_THAT(bad.err, Catch::Contains("/nonexistent.bin"));
}
