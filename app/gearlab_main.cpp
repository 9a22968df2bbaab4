// gearlab: the command-line front end. Each subcommand parses flags, calls the engine, prints.
// Exit codes: 0 success, 1 the engine refused the input (bad file, setting, prompt), 2 misuse.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "app/cli_args.h"
#include "app/commands.h"
#include "core/util/error.h"

namespace {

const char* kUsage =
    "usage: gearlab <command> [options]\n"
    "\n"
    "commands:\n"
    "  generate   generate text from a prompt (batched, any device/dtype)\n"
    "  info       print a model's configuration, parameter count and KV-cache size\n"
    "  chat       chat on the terminal (the session API the desktop app uses), optionally side by side with FP16\n"
    "  analyze    decompose a prompt's K/V with GEAR settings: errors by component, spectra, bytes\n"
    "  eval       compare KV caches with FP16 on a text: perplexity, KL, top-1, greedy divergence, bytes\n"
    "  sweep      eval over bits x rank x sparsity x method (the quality-vs-compression Pareto data)\n"
    "  bench      decode throughput and peak memory of KV caches vs batch, context and a memory budget\n"
    "  report     one self-contained HTML (+ CSV, PDF) report from eval / bench / analysis JSON\n"
    "\n"
    "Run `gearlab <command> --help` for its options.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "generate") return gear::cli::cmd_generate(argc, argv);
    if (command == "info") return gear::cli::cmd_info(argc, argv);
    if (command == "analyze") return gear::cli::cmd_analyze(argc, argv);
    if (command == "eval") return gear::cli::cmd_eval(argc, argv);
    if (command == "sweep") return gear::cli::cmd_sweep(argc, argv);
    if (command == "chat") return gear::cli::cmd_chat(argc, argv);
    if (command == "bench") return gear::cli::cmd_bench(argc, argv);
    if (command == "report") return gear::cli::cmd_report(argc, argv);
    throw gear::cli::UsageError("unknown command '" + command + "' (expected generate, chat, info, analyze, eval, sweep, bench or report; see gearlab --help)");
  } catch (const gear::cli::UsageError& e) {
    std::cerr << "gearlab: " << e.what() << "\n";
    return 2;
  } catch (const gear::Error& e) {
    std::cerr << "gearlab: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // e.g. c10::Error (out of memory): still one line
    std::string what = e.what();
    std::cerr << "gearlab: error: " << what.substr(0, what.find('\n')) << "\n";
    return 1;
  }
}
