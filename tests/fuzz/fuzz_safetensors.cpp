// libFuzzer target: the safetensors header parser on arbitrary bytes. A gear::Error is the
// expected answer to garbage; anything else escaping, a sanitizer report, or an accepted
// header that breaks the parser's promises is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "core/io/format/safetensors_format.h"
#include "core/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gear::SafetensorsHeader h;
  try {
    h = gear::parse_safetensors(data, size, "fuzz.safetensors");
  } catch (const gear::Error&) {
    return 0;
  }
  // Promises of a successful parse: every tensor inside the data section, sized by its shape,
  // no two overlapping.
  if (h.data_offset > size || h.data_offset + h.data_size != size) std::abort();
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, t] : h.tensors) {
    if (t.offset < h.data_offset || t.offset > size || t.length > size - t.offset) std::abort();
    if (t.length != uint64_t(t.numel) * gear::st_dtype_size(t.dtype)) std::abort();
    int64_t n = 1;
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
      n *= d;
    }
    if (n != t.numel) std::abort();
    if (t.length) spans.emplace_back(t.offset, t.offset + t.length);
    volatile uint8_t sink = 0;  // touch the first and last byte: ASan checks they are readable
    if (t.length) sink = data[t.offset] ^ data[t.offset + t.length - 1];
    (void)sink;
  }
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size() && j < i + 64; ++j)
      if (spans[i].first < spans[j].second && spans[j].first < spans[i].second) std::abort();
  return 0;
}
