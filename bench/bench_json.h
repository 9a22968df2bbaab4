#pragma once
// What every benchmark records beside its numbers: where it ran and on what code.
#include <nlohmann/json.hpp>

#include <string>

#include <ATen/core/Tensor.h>

namespace gear::bench {

// device name (GPU model or CPU model string), driver/runtime where known, LibTorch version,
// git commit of the source tree, UTC time.
nlohmann::json environment(at::Device device);
// Writes pretty JSON to `path` (creating folders) and says where.
void write_json(const nlohmann::json& j, const std::string& path);
double median(std::vector<double> v);

}  // namespace gear::bench
