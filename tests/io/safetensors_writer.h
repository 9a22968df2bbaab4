#pragma once
// Test support: writes safetensors files (well-formed, or with any header text for corrupt-file
// tests). F32/F16/BF16 payloads come from float tensors.
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace gear::test {

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("test: cannot write " + path);
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("test: cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline at::ScalarType st_scalar_type(const std::string& dtype) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "F64") return at::kDouble;
  if (dtype == "I64") return at::kLong;
  if (dtype == "I32") return at::kInt;
  if (dtype == "U8") return at::kByte;
  throw std::runtime_error("test: no ATen type for safetensors dtype " + dtype);
}

// One tensor to write: its name, safetensors dtype, shape and raw little-endian bytes.
struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// `t` converted to `dtype` ("F32", "F16", "BF16", ...) as raw bytes.
inline StTensor st_tensor(const std::string& name, const at::Tensor& t, const std::string& dtype = "F32") {
  const at::Tensor c = t.to(at::kCPU).to(st_scalar_type(dtype)).contiguous();
  StTensor out{name, dtype, c.sizes().vec(), std::string(size_t(c.numel() * c.element_size()), '\0')};
  if (!out.bytes.empty()) std::memcpy(&out.bytes[0], c.data_ptr(), out.bytes.size());
  return out;
}

inline std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A file with exactly this header text and data section. `declared_length` overrides the
// 8-byte header length (default: header.size()).
inline void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data,
                                  int64_t declared_length = -1) {
  write_bytes(path, le64(declared_length < 0 ? header.size() : uint64_t(declared_length)) + header + data);
}

// The JSON header for `tensors` stored back to back in order; fills `data`.
inline nlohmann::json st_header(const std::vector<StTensor>& tensors,
                                const std::map<std::string, std::string>& metadata, std::string* data) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  for (const StTensor& t : tensors) {
    const size_t begin = data->size();
    *data += t.bytes;
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data->size()}}};
  }
  return h;
}

// A well-formed file. The header is padded with spaces so the data section starts 8-byte
// aligned (as the reference writer does); misalign = true instead makes it start at an odd
// offset, to exercise readers on unaligned data.
inline void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}, bool misalign = false) {
  std::string data;
  std::string header = st_header(tensors, metadata, &data).dump();
  if (misalign) {
    if ((8 + header.size()) % 2 == 0) header += ' ';
  } else {
    while ((8 + header.size()) % 8) header += ' ';
  }
  write_raw_safetensors(path, header, data);
}

}  // namespace gear::test
