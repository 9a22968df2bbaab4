// gearlab bench and gearlab report through the real binary: outputs, exit codes, one-line errors.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli_runner.h"
#include "test_paths.h"

namespace {

using Result = gear::test::Run;
using gear::test::read_all;
const auto run_gearlab = gear::test::gearlab;
const auto line_count = gear::test::lines;


std::string fixture(const std::string& name) { return std::string(GEARLAB_SOURCE_DIR) + "/tests/report/fixtures/" + name; }

const std::string kModel = "models/stories260K/stories260K.bin";

}  // namespace

TEST_CASE("report: HTML and CSVs from fixtures, misuse exits 2, bad files exit 1", "[cli][report]") {
  const std::string dir = gear::test::scratch_dir("cli-report");
  const std::string inputs = fixture("eval_small.json") + " " + fixture("bench_small.json") + " " + fixture("analysis_small.json");
  const Result ok = run_gearlab("report " + inputs + " -o " + dir + "/r/report.html --csv-dir " + dir + "/csv");
  INFO(ok.err);
  REQUIRE(ok.code == 0);
  const std::string html = read_all(dir + "/r/report.html");
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(std::count(html.begin(), html.end(), '\n') > 100);
  for (const char* csv : {"inputs", "quality", "throughput", "budget", "compression"})
    CHECK(!read_all(dir + "/csv/" + std::string(csv) + ".csv").empty());
  // Default CSV folder: beside the HTML.
  REQUIRE(run_gearlab("report " + fixture("bench_small.json") + " -o " + dir + "/b/b.html").code == 0);
  CHECK(!read_all(dir + "/b/throughput.csv").empty());

  const std::pair<std::string, std::string> misuse[] = {
      {"report -o x.html", "report: no input files"},
      {"report " + fixture("bench_small.json"), "give -o FILE.html and/or --pdf FILE.pdf"},
      {"report " + fixture("bench_small.json") + " -o", "--output needs a value"},
      {"report " + fixture("bench_small.json") + " -o x.html --frobnicate", "unknown option --frobnicate"},
  };
  for (const auto& [args, message] : misuse) {
    const Result r = run_gearlab(args);
    INFO(args << " -> " << r.err);
    CHECK(r.code == 2);
    CHECK(line_count(r.err) == 1);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
  const Result missing = run_gearlab("report " + fixture("bench_small.json") + " /nonexistent/eval.json -o " + dir + "/x.html");
  CHECK(missing.code == 1);
  CHECK(line_count(missing.err) == 1);
  CHECK_THAT(missing.err, Catch::Contains("/nonexistent/eval.json: cannot open"));
  const Result wrong = run_gearlab("report " + std::string(GEARLAB_SOURCE_DIR) + "/bench/results/decode_stories260K_cpu.json -o " + dir + "/x.html");
  CHECK(wrong.code == 1);
  CHECK_THAT(wrong.err, Catch::Contains("decode_stories260K_cpu.json: no \"kind\" key"));
}

TEST_CASE("report --pdf: a PDF where Qt is built in, one clear line where not", "[cli][report]") {
  const std::string dir = gear::test::scratch_dir("cli-report-pdf");
  const Result r = run_gearlab("report " + fixture("eval_small.json") + " " + fixture("analysis_small.json") + " --pdf " + dir + "/r.pdf");
  INFO(r.err);
  if (r.code == 0) {
    CHECK(read_all(dir + "/r.pdf").rfind("%PDF-", 0) == 0);
  } else {
    CHECK(r.code == 2);
    CHECK(line_count(r.err) == 1);
    CHECK_THAT(r.err, Catch::Contains("this build has no PDF support (Qt 6 not found)"));
  }
}

TEST_CASE("bench: misuse exits 2 with one line, an unknown cache exits 1", "[cli][bench]") {
  const std::string model = gear::test::shared(kModel);
  const std::pair<std::string, std::string> misuse[] = {
      {"bench", "--model is required"},
      {"bench --model " + model + " --batches 0", "--batches: bad entry '0'"},
      {"bench --model " + model + " --batches 1,x", "--batches: bad entry 'x'"},
      {"bench --model " + model + " --contexts 1.5", "--contexts: bad entry '1.5'"},
      {"bench --model " + model + " --budget -1", "--budget: bad entry '-1'"},
      {"bench --model " + model + " --cache kivi-2,,full", "--cache: empty entry"},
      {"bench --model " + model + " --steps 0", "--steps must be in"},
      {"bench --model " + model + " --dequant-cache maybe", "--dequant-cache expects on or off"},
      {"bench --model " + model + " extra", "unexpected argument 'extra'"},
  };
  for (const auto& [args, message] : misuse) {
    const Result r = run_gearlab(args);
    INFO(args << " -> " << r.err);
    CHECK(r.code == 2);
    CHECK(line_count(r.err) == 1);
    CHECK_THAT(r.err, Catch::Contains(message));
  }
  if (!gear::test::have_shared(kModel)) return;
  const Result bad = run_gearlab("bench --model " + model + " --cache zip --steps 1 --repeats 1");
  CHECK(bad.code == 1);
  CHECK(line_count(bad.err) == 1);
  CHECK_THAT(bad.err, Catch::Contains("unknown cache method \"zip\""));
  const Result ctx = run_gearlab("bench --model " + model + " --contexts 500 --steps 8");
  CHECK(ctx.code == 1);
  CHECK_THAT(ctx.err, Catch::Contains("exceeds the model's context of 512"));
}

TEST_CASE("bench: a tiny CPU run prints the table and writes JSON the report reads", "[cli][bench]") {
  if (!gear::test::have_shared(kModel)) return;
  const std::string dir = gear::test::scratch_dir("cli-bench");
  const Result r = run_gearlab("bench --model " + gear::test::shared(kModel) +
                               " --cache kivi-2 --batches 1,2 --contexts 16 --steps 2 --warmup 1 --repeats 2 --budget 0.002 "
                               "--max-batch 16 --json " + dir + "/bench.json");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("vs full"));
  CHECK_THAT(r.out, Catch::Contains("max batch"));
  const nlohmann::json j = nlohmann::json::parse(read_all(dir + "/bench.json"));
  CHECK(j["kind"] == "bench");
  CHECK(j["complete"] == true);  // (written after every measurement with false, so a stopped run keeps its results)
  CHECK_THAT(r.err, Catch::Contains("budget (0.002 GiB, context 16): kivi-2 fits batch"));
  CHECK(j["results"].size() == 4);  // full and kivi-2 at batch 1 and 2
  CHECK(j["results"][0]["name"] == "full");
  CHECK(j["budget"].size() == 2);
  CHECK(j["budget"][0]["max_batch"].get<int>() >= 1);
  CHECK(j["environment"].contains("commit"));
  CHECK(j["config"]["prompt"].get<std::string>().find("random token ids") != std::string::npos);
  // 2 timed steps against kivi-2's 64-step streaming gap: the compressions are not amortised, and it says so.
  CHECK(j["config"]["compression_amortised"] == false);
  CHECK_THAT(r.err, Catch::Contains("bench: note: kivi-2 compresses its streaming buffer every 64 decode steps"));
  CHECK(run_gearlab("report " + dir + "/bench.json -o " + dir + "/r.html").code == 0);
}
