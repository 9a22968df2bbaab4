#pragma once
namespace gear::cli {
int cmd_generate(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_analyze(int argc, char** argv);
}  // namespace gear::cli
