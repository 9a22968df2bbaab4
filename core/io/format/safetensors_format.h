#pragma once
// safetensors container format, parsed and validated from bytes already in memory (no LibTorch,
// so the fuzzers build it with clang). Layout: 8-byte little-endian header length N, N bytes of
// UTF-8 JSON, then the data section. Every JSON key except "__metadata__" is a tensor:
//   {"dtype": "F16", "shape": [4096, 4096], "data_offsets": [begin, end]}
// with offsets relative to the start of the data section.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gear {

enum class StDtype { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64, F8_E4M3, F8_E5M2 };

const char* st_dtype_name(StDtype dtype);
size_t st_dtype_size(StDtype dtype);  // bytes per element
// false when `name` is not a safetensors dtype name ("F32", "BF16", ...)
bool st_dtype_from_name(const std::string& name, StDtype* out);

struct StTensorInfo {
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  uint64_t offset = 0;  // bytes from the start of the FILE (not of the data section)
  uint64_t length = 0;  // bytes; always numel * st_dtype_size(dtype)
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;                     // 8 + header length
  uint64_t data_size = 0;                       // bytes after the header
  std::map<std::string, std::string> metadata;  // "__metadata__", if any
  std::map<std::string, StTensorInfo> tensors;  // by name
};

// Largest JSON header accepted (the format's reference implementation uses the same cap).
constexpr uint64_t kSafetensorsMaxHeader = 100u * 1000u * 1000u;

// Parses and validates the whole file held in [data, data + size). `name` (the path, usually)
// starts every error message. Throws gear::Error for any malformed, inconsistent or
// out-of-range header; on success every tensor lies inside the buffer and none overlap.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& name);

std::string st_shape_str(const std::vector<int64_t>& shape);  // "[4096, 11008]"

}  // namespace gear
