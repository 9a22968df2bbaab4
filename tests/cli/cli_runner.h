#pragma once
// Runs the real gearlab binary as a script would, capturing its exit code, stdout and stderr
// separately. Shared by every CLI test file (one test_cli executable).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "test_paths.h"

namespace gear::test {

struct Run {
  int code;
  std::string out, err;
};

inline std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// `args` are already shell-quoted (and may redirect stdin).
inline Run gearlab(const std::string& args) {
  // One scratch folder per process: ctest runs the test cases in parallel processes.
  static const std::string dir = scratch_dir("cli-run-" + std::to_string(getpid()));
  static int calls = 0;
  const std::string out = dir + "/out" + std::to_string(calls) + ".txt";
  const std::string err = dir + "/err" + std::to_string(calls++) + ".txt";
  const int status = std::system((std::string(GEARLAB_CLI) + " " + args + " >" + out + " 2>" + err).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_all(out), read_all(err)};
}

inline int lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

}  // namespace gear::test
