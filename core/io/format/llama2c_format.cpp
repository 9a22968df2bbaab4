#include "core/io/format/llama2c_format.h"

#include <limits>

#include "core/util/error.h"

namespace gear {
namespace {

// Wide enough that no header (seven int32) can overflow it: the largest term is
// n_layers * hidden * dim < 2^93 floats.
using Wide = unsigned __int128;

int32_t read_i32(const uint8_t* p) {
  return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
}

std::string wide_str(Wide v) {
  if (v == 0) return "0";
  std::string s;
  while (v > 0) {
    s.insert(s.begin(), char('0' + int(v % 10)));
    v /= 10;
  }
  return s;
}

}  // namespace

Llama2cLayout parse_llama2c(const uint8_t* data, size_t size, const std::string& name) {
  const std::string file = name + ": ";
  require(size > 0, file + "empty file (0 bytes), not a llama2.c checkpoint");
  require(size >= kLlama2cHeaderBytes,
          file + "file is " + std::to_string(size) + " bytes, too short for a llama2.c header (28 bytes)");
  int32_t h[7];
  for (int i = 0; i < 7; ++i) h[i] = read_i32(data + 4 * i);
  static const char* const kNames[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                        "n_kv_heads", "vocab_size", "seq_len"};
  const std::string bad = file + "bad llama2.c header: ";
  for (int i = 0; i < 7; ++i) {
    if (i == 5) {
      require(h[i] != 0 && h[i] != std::numeric_limits<int32_t>::min(),
              bad + "vocab_size must be non-zero (negative = separate classifier), got " + std::to_string(h[i]));
    } else {
      require(h[i] > 0, bad + kNames[i] + " must be positive, got " + std::to_string(h[i]));
    }
  }
  Llama2cLayout out;
  ModelConfig& c = out.config;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = h[5] < 0 ? -h[5] : h[5];
  c.tied_embeddings = h[5] > 0;
  c.max_seq_len = h[6];
  c.rope_layout = RopeLayout::Adjacent;
  c.source = name;
  out.shared_classifier = c.tied_embeddings;
  require(c.dim % c.n_heads == 0,
          bad + "dim (" + std::to_string(c.dim) + ") is not divisible by n_heads (" + std::to_string(c.n_heads) + ")");
  require(c.n_heads % c.n_kv_heads == 0, bad + "n_heads (" + std::to_string(c.n_heads) +
                                             ") is not a multiple of n_kv_heads (" + std::to_string(c.n_kv_heads) +
                                             ")");
  const Wide hd = Wide(c.dim / c.n_heads);
  require(hd % 2 == 0, bad + "head dimension dim/n_heads = " + wide_str(hd) + " must be even for RoPE");

  const Wide L = Wide(c.n_layers), d = Wide(c.dim), hidden = Wide(c.hidden_dim), vocab = Wide(c.vocab_size);
  const Wide q = Wide(c.n_heads) * hd, kv = Wide(c.n_kv_heads) * hd;
  // Offsets in floats from the start of the file; the header is 7 floats.
  Wide at = kLlama2cHeaderBytes / sizeof(float);
  Wide offs[14];
  const Wide sizes[14] = {vocab * d,
                          L * d,
                          L * q * d,
                          L * kv * d,
                          L * kv * d,
                          L * d * q,
                          L * d,
                          L * hidden * d,
                          L * d * hidden,
                          L * hidden * d,
                          d,
                          Wide(c.max_seq_len) * hd / 2,
                          Wide(c.max_seq_len) * hd / 2,
                          c.tied_embeddings ? Wide(0) : vocab * d};
  for (int i = 0; i < 14; ++i) {
    offs[i] = at;
    at += sizes[i];
  }
  const Wide want = at * sizeof(float);
  const std::string implied = "the header (" + std::to_string(c.dim) + " dim, " + std::to_string(c.hidden_dim) +
                              " hidden, " + std::to_string(c.n_layers) + " layers, " + std::to_string(c.n_heads) +
                              " heads, " + std::to_string(c.n_kv_heads) + " kv heads, vocab " + std::to_string(h[5]) +
                              ", seq_len " + std::to_string(c.max_seq_len) + ") implies ";
  require(want == Wide(size), file + "file is " + std::to_string(size) + " bytes but " + implied + wide_str(want) +
                                  (want > Wide(size) ? " (truncated?)" : " (trailing data, or not a llama2.c file?)"));
  // want == size, so every offset fits in size_t.
  out.token_embedding = size_t(offs[0]);
  out.rms_att = size_t(offs[1]);
  out.wq = size_t(offs[2]);
  out.wk = size_t(offs[3]);
  out.wv = size_t(offs[4]);
  out.wo = size_t(offs[5]);
  out.rms_ffn = size_t(offs[6]);
  out.w1 = size_t(offs[7]);
  out.w2 = size_t(offs[8]);
  out.w3 = size_t(offs[9]);
  out.rms_final = size_t(offs[10]);
  out.freq_cis_real = size_t(offs[11]);
  out.freq_cis_imag = size_t(offs[12]);
  out.wcls = c.tied_embeddings ? out.token_embedding : size_t(offs[13]);
  out.file_bytes = uint64_t(want);
  return out;
}

}  // namespace gear
