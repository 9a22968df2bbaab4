// The gearlab binary as a script sees it: exit codes, one-line errors, and real output.
#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <fstream>
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

TEST_CASE("usage errors exit 2 with one line", "[cli]") {
  Run r = gearlab("");
  CHECK(r.code == 2);
  r = gearlab("frobnicate");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown command 'frobnicate'"));
  CHECK(lines(r.err) == 1);
  r = gearlab("generate --prompt hi");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--model is required"));
  r = gearlab("generate --model x --prompt hi --max-tokens abc");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--max-tokens expects an integer"));
  r = gearlab("generate --model x --prompt hi --top-p 1.5");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--top-p must be in"));
  r = gearlab("generate --model x --prompt hi --bogus 1");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown option --bogus"));
  r = gearlab("info --model x --dtype q7");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--dtype"));
}

TEST_CASE("every command has --help", "[cli]") {
  for (const char* c : {"generate", "info", "analyze", "chat"}) {
    Run r = gearlab(std::string(c) + " --help");
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Catch::Contains("usage: gearlab"));
  }
  Run r = gearlab("--help");
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("generate"));
}

TEST_CASE("engine errors exit 1 naming the problem", "[cli]") {
  Run r = gearlab("generate --model /nonexistent/model.bin --prompt hi");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("/nonexistent/model.bin"));
  CHECK(lines(r.err) == 1);
  r = gearlab("generate --model gen:llama2-7b --device cuda:0 --prompt hi");
  if (r.code != 0) {  // on a CPU-only machine
    CHECK(r.code == 1);
    CHECK(lines(r.err) == 1);
  }
  if (!gear::test::have_shared(kModel)) return;
  const std::string m = "--model " + gear::test::shared(kModel);
  r = gearlab("generate " + m + " --prompt \"$(printf '\\377\\376 bad')\"");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("UTF-8"));
  r = gearlab("generate " + m + " --context 8 --prompt 'Once upon a time there was a very long prompt'");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("context"));
  r = gearlab("generate " + m + " --dtype f16 --prompt hi");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("f16"));
}

TEST_CASE("generate reproduces the llama2.c reference text and reports tokens/s", "[cli][golden]") {
  if (!gear::test::have_shared(kModel)) return;
  std::ifstream f(gear::test::shared("reference/once_upon_a_time.text"));
  std::stringstream want;
  want << f.rdbuf();
  // "Once upon a time" is 5 tokens with BOS; llama2.c's 200 steps leave 196 new tokens.
  Run r = gearlab("generate --model " + gear::test::shared(kModel) +
                  " --cache full --prompt 'Once upon a time' --temperature 0 --max-tokens 196");
  REQUIRE(r.code == 0);
  CHECK(r.out == want.str());
  CHECK_THAT(r.err, Catch::Contains("tokens/s"));
  // Batched: every row of the same prompt gives the same text.
  r = gearlab("generate --model " + gear::test::shared(kModel) + " --prompt 'The little dog' --temperature 0 --max-tokens 40 --batch 3");
  REQUIRE(r.code == 0);
  CHECK(lines(r.out) == 3);
  // Sampling with a seed is reproducible.
  const std::string sampled = "generate --model " + gear::test::shared(kModel) + " --prompt 'Lily' --temperature 0.9 --top-p 0.9 --seed 7 --max-tokens 50";
  Run a = gearlab(sampled), b = gearlab(sampled);
  REQUIRE(a.code == 0);
  CHECK(a.out == b.out);
}

TEST_CASE("info prints config, parameter count and KV bytes", "[cli]") {
  Run r = gearlab("info --model gen:llama2-7b");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("GENERATED"));
  CHECK_THAT(r.out, Catch::Contains("6738415616"));
  CHECK_THAT(r.out, Catch::Contains("KV per token: 524288 bytes"));  // 2*32*32*128*2
  if (!gear::test::have_shared(kModel)) return;
  r = gearlab("info --model " + gear::test::shared(kModel));
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("KV per token: 640 bytes"));  // 2*5*4*8*2
  CHECK_THAT(r.out, Catch::Contains("KV per 1k:    655360 bytes"));
}
