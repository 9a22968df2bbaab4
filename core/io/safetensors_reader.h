#pragma once
// A safetensors file, memory-mapped and validated, handing out tensors as float32 CPU tensors.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "core/io/format/mapped_file.h"
#include "core/io/format/safetensors_format.h"

namespace gear {

class SafetensorsFile {
 public:
  // Maps and validates the whole header (see parse_safetensors); throws gear::Error naming
  // `path` on any problem.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  bool has(const std::string& name) const { return header_.tensors.count(name) != 0; }
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // The entry for `name`; throws "PATH: tensor NAME not found" when absent.
  const StTensorInfo& info(const std::string& name) const;

  // The tensor converted to float32, contiguous, on the CPU, owning its memory (it stays valid
  // after this file is closed). F32, F16, BF16 and F64 are supported; other dtypes throw.
  at::Tensor tensor(const std::string& name) const;

 private:
  MappedFile file_;
  SafetensorsHeader header_;
};

}  // namespace gear
