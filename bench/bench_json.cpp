#include "bench/bench_json.h"

#include <cstdlib>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "core/util/error.h"

namespace gear::bench {
namespace {

std::string run(const std::string& cmd) {
  std::array<char, 512> buf{};
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    while (fgets(buf.data(), buf.size(), p)) out += buf.data();
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

nlohmann::json environment(at::Device device) {
  nlohmann::json env;
  env["device"] = device.str();
  if (device.is_cuda()) {
    env["gpu"] = run("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1");
    env["driver"] = run("nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1");
  }
  env["cpu"] = run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
  env["cpu_threads"] = at::get_num_threads();
  env["libtorch"] = std::to_string(TORCH_VERSION_MAJOR) + "." +
                    std::to_string(TORCH_VERSION_MINOR) + "." + std::to_string(TORCH_VERSION_PATCH);
  std::string commit = run("git -C '" GEARLAB_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null");
  if (!run("git -C '" GEARLAB_SOURCE_DIR "' status --porcelain --untracked-files=no 2>/dev/null").empty()) commit += "+dirty";
  // The device machine gets a copy of the tree whose git metadata is not this checkout's: the caller
  // names the commit there (scripts/gpu-check.sh exports it from .data/COMMIT).
  if (const char* given = std::getenv("GEARLAB_COMMIT"); given && *given) commit = given;
  env["commit"] = commit.empty() ? "unknown" : commit;
  std::time_t now = std::time(nullptr);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  env["time_utc"] = when;
  return env;
}

void write_json(const nlohmann::json& j, const std::string& path) {
  std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream out(path);
  require(bool(out), path + ": cannot write results");
  out << j.dump(2) << "\n";
  std::cout << "wrote " << path << "\n";
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace gear::bench
