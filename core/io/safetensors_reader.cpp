#include "core/io/safetensors_reader.h"

#include <ATen/ATen.h>

#include <cstring>

#include "core/util/error.h"

namespace gear {

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(path), header_(parse_safetensors(file_.data(), file_.size(), path)) {}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(header_.tensors.size());
  for (const auto& kv : header_.tensors) out.push_back(kv.first);
  return out;
}

const StTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = header_.tensors.find(name);
  require(it != header_.tensors.end(), path() + ": tensor " + name + " not found");
  return it->second;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const StTensorInfo& t = info(name);
  at::ScalarType type;
  switch (t.dtype) {
    case StDtype::F32:
      type = at::kFloat;
      break;
    case StDtype::F16:
      type = at::kHalf;
      break;
    case StDtype::BF16:
      type = at::kBFloat16;
      break;
    case StDtype::F64:
      type = at::kDouble;
      break;
    default:
      fail(path() + ": tensor " + name + " has dtype " + st_dtype_name(t.dtype) +
           "; only floating-point weights (F32, F16, BF16, F64) can be loaded");
  }
  if (t.numel == 0) return at::empty(t.shape, at::kFloat);
  const uint8_t* src = file_.data() + t.offset;
  // The data section starts at 8 + header length, which need not be a multiple of the element
  // size: an unaligned tensor is copied into aligned memory first instead of being viewed.
  at::Tensor raw;
  if (reinterpret_cast<uintptr_t>(src) % st_dtype_size(t.dtype) == 0) {
    raw = at::from_blob(const_cast<uint8_t*>(src), t.shape, at::TensorOptions().dtype(type));
  } else {
    raw = at::empty(t.shape, at::TensorOptions().dtype(type));
    std::memcpy(raw.data_ptr(), src, t.length);
    if (type == at::kFloat) return raw;
  }
  // copy=true: the result never aliases the mapping, even for F32.
  return raw.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace gear
