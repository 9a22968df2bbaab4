#include "core/io/format/safetensors_format.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/util/error.h"

namespace gear {
namespace {

struct DtypeRow {
  StDtype dtype;
  const char* name;
  size_t size;
};

constexpr DtypeRow kDtypes[] = {
    {StDtype::BOOL, "BOOL", 1}, {StDtype::U8, "U8", 1},           {StDtype::I8, "I8", 1},
    {StDtype::U16, "U16", 2},   {StDtype::I16, "I16", 2},         {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2}, {StDtype::U32, "U32", 4},         {StDtype::I32, "I32", 4},
    {StDtype::F32, "F32", 4},   {StDtype::U64, "U64", 8},         {StDtype::I64, "I64", 8},
    {StDtype::F64, "F64", 8},   {StDtype::F8_E4M3, "F8_E4M3", 1}, {StDtype::F8_E5M2, "F8_E5M2", 1},
};

const DtypeRow& row(StDtype d) {
  for (const DtypeRow& r : kDtypes)
    if (r.dtype == d) return r;
  return kDtypes[0];  // unreachable: every enumerator has a row
}

// Deepest JSON nesting accepted: a tensor entry needs 3 levels; anything far deeper is an attack
// or garbage, and rejecting it up front bounds the parser's work on hostile input.
constexpr int kMaxDepth = 32;

// Depth of [ and { outside strings. Returns false as soon as the limit is passed.
bool nesting_ok(const char* p, size_t n) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// A non-negative JSON integer, or an error naming `what`.
uint64_t get_uint(const nlohmann::json& v, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    const int64_t s = v.get<int64_t>();
    require(s >= 0, what + " must not be negative, got " + std::to_string(s));
    return uint64_t(s);
  }
  fail(what + " must be an integer, got " + std::string(v.type_name()) + " " + v.dump());
}

}  // namespace

const char* st_dtype_name(StDtype dtype) { return row(dtype).name; }
size_t st_dtype_size(StDtype dtype) { return row(dtype).size; }

bool st_dtype_from_name(const std::string& name, StDtype* out) {
  for (const DtypeRow& r : kDtypes) {
    if (name == r.name) {
      *out = r.dtype;
      return true;
    }
  }
  return false;
}

std::string st_shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& name) {
  const std::string file = name + ": ";
  require(size > 0, file + "empty file (0 bytes), not a safetensors file");
  require(size >= 8, file + "file is " + std::to_string(size) +
                         " bytes, too short for a safetensors header (8-byte length + JSON)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  require(n <= size - 8, file + "safetensors header length " + std::to_string(n) + " is beyond the end of the file (" +
                             std::to_string(size) + " bytes; truncated or not a safetensors file?)");
  require(n <= kSafetensorsMaxHeader, file + "safetensors header length " + std::to_string(n) + " exceeds the " +
                                          std::to_string(kSafetensorsMaxHeader) + "-byte limit");
  require(n >= 2, file + "safetensors header of " + std::to_string(n) + " bytes cannot hold a JSON object");

  SafetensorsHeader out;
  out.data_offset = 8 + n;
  out.data_size = size - out.data_offset;

  const char* text = reinterpret_cast<const char*>(data + 8);
  require(nesting_ok(text, size_t(n)),
          file + "safetensors header is not valid: JSON nested deeper than " + std::to_string(kMaxDepth) + " levels");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + n);
  } catch (const nlohmann::json::exception& e) {
    fail(file + "safetensors header is not valid JSON (" + e.what() + ")");
  }
  require(header.is_object(), file + "safetensors header must be a JSON object, got " + header.type_name());

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  try {
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& key = it.key();
      const nlohmann::json& v = it.value();
      if (key == "__metadata__") {
        require(v.is_object(), file + "\"__metadata__\" must be an object of strings, got " + v.type_name());
        for (auto m = v.begin(); m != v.end(); ++m) {
          require(m.value().is_string(),
                  file + "\"__metadata__\" entry \"" + m.key() + "\" must be a string, got " + m.value().type_name());
          out.metadata[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = file + "tensor '" + key + "': ";
      require(v.is_object(), where + "entry must be an object, got " + v.type_name());

      auto dt = v.find("dtype");
      require(dt != v.end(), where + "missing \"dtype\"");
      require(dt->is_string(), where + "\"dtype\" must be a string, got " + dt->type_name());
      StTensorInfo info;
      const std::string dtype_name = dt->get<std::string>();
      require(st_dtype_from_name(dtype_name, &info.dtype), where + "unknown dtype \"" + dtype_name + "\"");

      auto sh = v.find("shape");
      require(sh != v.end(), where + "missing \"shape\"");
      require(sh->is_array(), where + "\"shape\" must be an array, got " + sh->type_name());
      int64_t numel = 1;
      for (const nlohmann::json& d : *sh) {
        const uint64_t dim = get_uint(d, where + "shape dimension");
        require(dim <= uint64_t(std::numeric_limits<int64_t>::max()),
                where + "shape dimension " + std::to_string(dim) + " does not fit in int64");
        info.shape.push_back(int64_t(dim));
        if (dim != 0 && numel > std::numeric_limits<int64_t>::max() / int64_t(dim))
          fail(where + "shape " + sh->dump() + " has more elements than fit in int64");
        numel *= int64_t(dim);
      }
      info.numel = numel;

      auto off = v.find("data_offsets");
      require(off != v.end(), where + "missing \"data_offsets\"");
      require(off->is_array() && off->size() == 2,
              where + "\"data_offsets\" must be an array [begin, end], got " + off->dump());
      const uint64_t begin = get_uint((*off)[0], where + "data_offsets begin");
      const uint64_t end = get_uint((*off)[1], where + "data_offsets end");
      require(begin <= end,
              where + "data_offsets begin " + std::to_string(begin) + " is after end " + std::to_string(end));
      require(end <= out.data_size, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                                        "] out of range: the data section is " + std::to_string(out.data_size) +
                                        " bytes (truncated file?)");
      const uint64_t esize = st_dtype_size(info.dtype);
      require(uint64_t(numel) <= std::numeric_limits<uint64_t>::max() / esize,
              where + "shape " + st_shape_str(info.shape) + " is too large");
      const uint64_t want = uint64_t(numel) * esize;
      require(end - begin == want, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                                       "] span " + std::to_string(end - begin) + " bytes but shape " +
                                       st_shape_str(info.shape) + " of " + dtype_name + " needs " +
                                       std::to_string(want) + " bytes");
      info.offset = out.data_offset + begin;
      info.length = want;
      auto inserted = out.tensors.emplace(key, std::move(info));
      spans.push_back({begin, end, &inserted.first->first});
    }
  } catch (const nlohmann::json::exception& e) {  // defensive: the checks above should prevent any
    fail(file + "malformed safetensors header (" + e.what() + ")");
  }

  // No two tensors may share bytes (empty tensors take none, so they never overlap).
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.begin == s.end) continue;
    if (prev)
      require(s.begin >= prev->end, file + "tensors '" + *prev->name + "' [" + std::to_string(prev->begin) + ", " +
                                        std::to_string(prev->end) + "] and '" + *s.name + "' [" +
                                        std::to_string(s.begin) + ", " + std::to_string(s.end) +
                                        "] overlap in the data section");
    prev = &s;
  }
  return out;
}

}  // namespace gear
