// gearlab eval and gearlab sweep through the real binary: the table, the JSON the reports read, and
// one-line errors for bad inputs.
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


nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

const std::string kModel = "models/stories260K/stories260K.bin";
const std::string kText = "eval/short_stories.txt";

}  // namespace

TEST_CASE("eval: two caches against FP16, table and JSON with every key the report reads", "[cli][eval]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string json = gear::test::scratch_dir("cli-eval-json") + "/eval.json";
  const Run r = gearlab("eval --model " + gear::test::shared(kModel) + " --text " + gear::test::shared(kText) +
                        " --max-tokens 120 --gen-tokens 16 --cache kivi-2,pyramid:l0=48:recent=16 --json " + json);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("120 tokens: prefill 60, 59 decoded positions scored"));
  CHECK_THAT(r.out, Catch::Contains("KL mean"));
  for (const char* row : {"\nfull ", "\nkivi-2 ", "\npyramid l0=48 recent=16 "}) CHECK_THAT(r.out, Catch::Contains(row));
  CHECK_THAT(r.err, Catch::Contains("[3/3] pyramid l0=48 recent=16: ppl"));
  const nlohmann::json j = read_json(json);
  CHECK(j["kind"] == "eval");
  for (const char* key : {"model", "model_config", "generated_weights", "text", "tokens", "prefill_tokens", "environment"})
    CHECK(j.contains(key));
  CHECK(j["tokens"] == 120);
  CHECK(j["prefill_tokens"] == 60);
  CHECK(j["generated_weights"] == false);
  CHECK(j["environment"].contains("commit"));
  REQUIRE(j["methods"].size() == 3);
  for (const auto& m : j["methods"]) {
    INFO(m["name"]);
    for (const char* key : {"name", "config", "config_text", "perplexity", "ppl_delta", "ppl_delta_pct", "kl_mean", "kl_max",
                            "top1_agreement", "divergence", "bytes", "fp16_bytes", "ratio_vs_fp16"})
      CHECK(m.contains(key));
    for (const char* key : {"full", "codes", "scales", "sparse", "low_rank", "in_use"}) CHECK(m["bytes"].contains(key));
    REQUIRE(m["divergence"].size() == 2);
    CHECK(m["divergence"][0]["prompt"] == "Once upon a time");
    CHECK(m["divergence"][1]["generated"] == 16);
    CHECK(m["divergence"][1]["first_divergence"].get<int>() <= 16);
  }
  CHECK(j["methods"][0]["name"] == "full");
  CHECK(j["methods"][0]["kl_mean"] == 0.0);
  CHECK(j["methods"][1]["config"]["preset"] == "kivi-2");
  CHECK(j["methods"][1]["analysis"]["layers"].size() == 5);      // quantized: analysis of the FP16 K/V
  CHECK(j["methods"][2]["config"]["l0"] == 48);
  CHECK_FALSE(j["methods"][2].contains("analysis"));             // pyramid: nothing to decompose
}

TEST_CASE("eval: bad inputs give one clear line", "[cli][eval]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string dir = gear::test::scratch_dir("cli-eval-bad");
  const std::string base = "eval --model " + gear::test::shared(kModel) + " --gen-tokens 4 ";
  const std::string text = " --text " + gear::test::shared(kText);
  const struct {
    std::string args;
    int code;
    const char* message;
  } cases[] = {
      {"--text " + dir + "/missing.txt", 1, "missing.txt: cannot open text file"},
      {"--text " + write_file(dir, "empty.txt", ""), 1, "empty.txt: the text file is empty"},
      {"--text " + write_file(dir, "short.txt", "Once upon a time") + " --prefill 8", 1,
       "too few for a prefill of 8 plus 2"},
      {text + " --cache kivi-2,zip", 1, "unknown cache method \"zip\""},
      {text + " --cache gear --rank 9", 1, "rank 9 is larger than the head dimension 8"},
      {text + " --cache pyramid:l0", 2, "expected key=value after ':'"},
      {text + " --cache kivi-2,,full", 2, "--cache: empty item"},
      {text + " --prefill 0", 2, "--prefill must be in [1, "},
      {text + " --max-tokens 600", 1, "exceed the model's context of 512"},
      {"--cache full", 2, "--text is required"},
  };
  for (const auto& c : cases) {
    const Run r = gearlab(base + c.args);
    INFO(c.args << " -> " << r.err);
    CHECK(r.code == c.code);
    CHECK(lines(r.err) == 1);
    CHECK_THAT(r.err, Catch::Contains(c.message));
  }
}

TEST_CASE("sweep: one entry per setting of the cross product, FP16 first", "[cli][eval]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string json = gear::test::scratch_dir("cli-sweep") + "/sweep.json";
  const Run r = gearlab("sweep --model " + gear::test::shared(kModel) + " --text " + gear::test::shared(kText) +
                        " --max-tokens 100 --gen-tokens 8 --bits 2,4 --rank 0,2 --sparsity 0,10 --methods gear,gear-l,quant"
                        " --stream-gap 32 --json " + json);
  INFO(r.err);
  REQUIRE(r.code == 0);
  // gear: 2 bits x 2 ranks x 2 sparsities; gear-l: 2 x 2 (no sparsity); quant: 2 (bits only).
  CHECK_THAT(r.err, Catch::Contains("sweep: 14 settings + FP16"));
  const nlohmann::json j = read_json(json);
  CHECK(j["kind"] == "eval");
  REQUIRE(j["methods"].size() == 15);
  CHECK(j["methods"][0]["name"] == "full");
  std::vector<std::string> names;
  for (const auto& m : j["methods"]) names.push_back(m["name"]);
  for (const char* n : {"gear b2 r0 s0", "gear b4 r2 s10", "gear-l b2 r2", "quant b4"})
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  for (const auto& m : j["methods"]) {
    if (m["name"] == "full") continue;
    CHECK(m["config"]["backbone"] == "kivi");
    CHECK(m["config"]["stream-gap"] == 32);  // a shared cache flag reaches every setting
  }
  const Run bad = gearlab("sweep --model " + gear::test::shared(kModel) + " --text " + gear::test::shared(kText) +
                          " --methods pyramid --json " + json);
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Catch::Contains("has no bits to sweep"));
  CHECK(gearlab("sweep --model x --text y").code == 2);  // --json is required
}
