#pragma once
namespace gear::cli {
int cmd_generate(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_analyze(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_sweep(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_report(int argc, char** argv);
}  // namespace gear::cli
