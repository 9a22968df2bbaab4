#pragma once
// llama2.c checkpoint (legacy version 0) layout, parsed and validated from the file's bytes
// without LibTorch (the fuzzers build it with clang). See ../shared/README.md "Formats":
// a header of 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len; vocab_size < 0 means a separate classifier), then float32 arrays.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/model/config.h"

namespace gear {

constexpr size_t kLlama2cHeaderBytes = 28;

// Where each array starts, as an index in floats from the start of the FILE (the header is
// 7 floats long), so `reinterpret_cast<const float*>(file_start) + offset` points at it and
// the byte offset is 4 * offset. Per-layer arrays hold all layers back to back.
struct Llama2cLayout {
  ModelConfig config;              // dims, vocab, max_seq_len, tied_embeddings, rope_layout Adjacent, source
  bool shared_classifier = false;  // == config.tied_embeddings
  size_t token_embedding = 0;      // [vocab, dim]
  size_t rms_att = 0;              // [L, dim]
  size_t wq = 0;                   // [L, n_heads*hd, dim]
  size_t wk = 0;                   // [L, n_kv_heads*hd, dim]
  size_t wv = 0;                   // [L, n_kv_heads*hd, dim]
  size_t wo = 0;                   // [L, dim, n_heads*hd]
  size_t rms_ffn = 0;              // [L, dim]
  size_t w1 = 0;                   // [L, hidden, dim]
  size_t w2 = 0;                   // [L, dim, hidden]
  size_t w3 = 0;                   // [L, hidden, dim]
  size_t rms_final = 0;            // [dim]
  size_t freq_cis_real = 0;        // [seq_len * hd / 2], unused (legacy RoPE table)
  size_t freq_cis_imag = 0;        // [seq_len * hd / 2], unused
  size_t wcls = 0;                 // [vocab, dim]; == token_embedding when shared
  uint64_t file_bytes = 0;         // the exact size the header implies (== the file's size)
};

// Parses the header in [data, data + size) (`size` is the whole file's size; only the first
// 28 bytes are read) and checks that the file is exactly as long as the header implies.
// Throws gear::Error starting with `name` for a short file, non-positive or inconsistent
// dimensions, or a size mismatch ("file is N bytes but the header implies M (truncated?)").
Llama2cLayout parse_llama2c(const uint8_t* data, size_t size, const std::string& name);

}  // namespace gear
