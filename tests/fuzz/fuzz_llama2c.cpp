// libFuzzer target: the llama2.c checkpoint header parser on arbitrary bytes. A gear::Error is
// the expected answer to garbage; anything else escaping, a sanitizer report, or an accepted
// layout pointing outside the file is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/io/format/llama2c_format.h"
#include "core/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gear::Llama2cLayout l;
  try {
    l = gear::parse_llama2c(data, size, "fuzz.bin");
  } catch (const gear::Error&) {
    return 0;
  }
  const gear::ModelConfig& c = l.config;
  if (l.file_bytes != size) std::abort();
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 ||
      c.max_seq_len <= 0 || c.dim % c.n_heads || c.n_heads % c.n_kv_heads)
    std::abort();
  const size_t floats = size / sizeof(float);
  const size_t offsets[] = {l.token_embedding, l.rms_att, l.wq, l.wk, l.wv,        l.wo,
                            l.rms_ffn,         l.w1,      l.w2, l.w3, l.rms_final, l.freq_cis_real,
                            l.freq_cis_imag,   l.wcls};
  size_t prev = 0;
  for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); ++i) {
    if (offsets[i] < 7 || offsets[i] > floats) std::abort();
    if (i < 13 && offsets[i] < prev) std::abort();  // arrays in file order
    if (i < 13) prev = offsets[i];
  }
  // The last array ends exactly at the end of the file.
  const size_t vd = size_t(c.vocab_size) * size_t(c.dim);
  const size_t end =
      c.tied_embeddings ? l.freq_cis_imag + size_t(c.max_seq_len) * size_t(c.dim / c.n_heads) / 2 : l.wcls + vd;
  if (end != floats) std::abort();
  if (l.wq - l.token_embedding != vd + size_t(c.n_layers) * size_t(c.dim)) std::abort();
  return 0;
}
