// llama2.c checkpoint layout (core/io/format/llama2c_format) and errors for bad .bin files.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/io/format/llama2c_format.h"
#include "core/io/format/mapped_file.h"
#include "core/io/loader.h"
#include "io/io_testing.h"
#include "io/safetensors_writer.h"
#include "test_paths.h"

using gear::test::error_of;

namespace {

std::string header_bytes(std::initializer_list<int32_t> h) {
  std::string out;
  for (int32_t x : h)
    for (int i = 0; i < 4; ++i) out.push_back(char((uint32_t(x) >> (8 * i)) & 0xff));
  return out;
}

// A complete checkpoint for the header, float i stored as i * 0.001 (extra_floats may be < 0).
std::string checkpoint(int32_t dim, int32_t hidden, int32_t layers, int32_t heads, int32_t kv, int32_t vocab,
                       int32_t seq, int64_t extra_floats = 0) {
  const int64_t hd = dim / heads, v = vocab < 0 ? -vocab : vocab;
  const int64_t floats = v * dim + layers * (2 * dim + 2 * dim * heads * hd + 2 * dim * kv * hd + 3 * dim * hidden) +
                         dim + seq * hd + (vocab < 0 ? v * dim : 0) + extra_floats;
  std::string out = header_bytes({dim, hidden, layers, heads, kv, vocab, seq});
  for (int64_t i = 0; i < floats; ++i) {
    const float f = float(i) * 0.001f;
    out.append(reinterpret_cast<const char*>(&f), sizeof(f));
  }
  return out;
}

gear::Llama2cLayout parse(const std::string& bytes, const std::string& name = "t.bin") {
  return gear::parse_llama2c(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
}

}  // namespace

TEST_CASE("llama2c format: stories260K header and array offsets") {
  const std::string rel = "models/stories260K/stories260K.bin";
  if (!gear::test::have_shared(rel)) return;
  const std::string path = gear::test::shared(rel);
  const gear::MappedFile file(path);
  const gear::Llama2cLayout l = gear::parse_llama2c(file.data(), file.size(), path);
  const gear::ModelConfig& c = l.config;
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_seq_len == 512);
  CHECK(c.tied_embeddings);
  CHECK(l.shared_classifier);
  CHECK(c.rope_layout == gear::RopeLayout::Adjacent);
  CHECK(l.file_bytes == 1056540);
  CHECK(l.token_embedding == 7);
  CHECK(l.rms_att == 7 + 512 * 64);
  CHECK(l.wcls == l.token_embedding);
  CHECK(l.freq_cis_imag - l.freq_cis_real == 512 * 8 / 2);
  CHECK(l.freq_cis_imag + 512 * 8 / 2 == file.size() / 4);

  // The offsets agree with the loader's reading of the same file.
  const gear::Weights w = gear::load_llama2c(path);
  const float* f = reinterpret_cast<const float*>(file.data());
  auto view = [&](size_t offset, std::vector<int64_t> shape) {
    return at::from_blob(const_cast<float*>(f + offset), shape, at::kFloat);
  };
  const int64_t L = 5, d = 64, kvd = 4 * 8;
  CHECK(at::equal(w.tok_embeddings, view(l.token_embedding, {512, d})));
  CHECK(at::equal(w.layers[3].attn_norm, view(l.rms_att, {L, d})[3]));
  CHECK(at::equal(w.layers[2].wq, view(l.wq, {L, d, d})[2]));
  CHECK(at::equal(w.layers[4].wk, view(l.wk, {L, kvd, d})[4]));
  CHECK(at::equal(w.layers[1].wv, view(l.wv, {L, kvd, d})[1]));
  CHECK(at::equal(w.layers[0].wo, view(l.wo, {L, d, d})[0]));
  CHECK(at::equal(w.layers[4].ffn_norm, view(l.rms_ffn, {L, d})[4]));
  CHECK(at::equal(w.layers[3].w1, view(l.w1, {L, 172, d})[3]));
  CHECK(at::equal(w.layers[3].w2, view(l.w2, {L, d, 172})[3]));
  CHECK(at::equal(w.layers[3].w3, view(l.w3, {L, 172, d})[3]));
  CHECK(at::equal(w.final_norm, view(l.rms_final, {d})));
}

TEST_CASE("llama2c format: shared and separate classifiers") {
  const gear::Llama2cLayout tied = parse(checkpoint(8, 16, 2, 2, 1, 5, 4));
  CHECK(tied.config.tied_embeddings);
  CHECK(tied.config.vocab_size == 5);
  CHECK(tied.wcls == tied.token_embedding);
  CHECK(tied.wq == 7 + 5 * 8 + 2 * 8);
  CHECK(tied.wk == tied.wq + 2 * 8 * 8);
  CHECK(tied.wv == tied.wk + 2 * 4 * 8);

  const std::string bytes = checkpoint(8, 16, 2, 2, 1, -5, 4);
  const gear::Llama2cLayout sep = parse(bytes);
  CHECK_FALSE(sep.config.tied_embeddings);
  CHECK(sep.config.vocab_size == 5);
  CHECK(sep.wcls == sep.freq_cis_imag + 4 * 4 / 2);
  CHECK(sep.wcls + 5 * 8 == bytes.size() / 4);
}

TEST_CASE("llama2c format: truncated, padded and too-short files") {
  const std::string good = checkpoint(8, 16, 1, 2, 2, 4, 4);
  CHECK_ERROR_NAMES(error_of([&] { parse(good.substr(0, good.size() - 4), "trunc.bin"); }), "trunc.bin",
                    "file is " + std::to_string(good.size() - 4) + " bytes but the header",
                    "implies " + std::to_string(good.size()), "(truncated?)");
  CHECK_ERROR_NAMES(error_of([&] { parse(good + std::string(4, '\0'), "long.bin"); }), "long.bin",
                    "implies " + std::to_string(good.size()), "trailing data");
  CHECK_ERROR_NAMES(error_of([&] { parse(good.substr(0, 20), "short.bin"); }), "short.bin", "20 bytes",
                    "too short for a llama2.c header");
  CHECK_ERROR_NAMES(error_of([&] { parse("", "empty.bin"); }), "empty.bin", "empty file");
  // Enormous dimensions must be reported, not overflow.
  const int32_t big = std::numeric_limits<int32_t>::max() - 1;
  CHECK_ERROR_NAMES(error_of([&] {
                      parse(header_bytes({big, big, big, 1, 1, -big, big}) + "xxxx", "big.bin");
                    }),
                    "big.bin", "(truncated?)");
}

TEST_CASE("llama2c format: headers with bad dimensions") {
  auto bad = [](std::initializer_list<int32_t> h) {
    return error_of([&] { parse(header_bytes(h) + std::string(64, '\0'), "bad.bin"); });
  };
  CHECK_ERROR_NAMES(bad({0, 16, 1, 2, 2, 4, 4}), "bad.bin", "bad llama2.c header", "dim must be positive, got 0");
  CHECK_ERROR_NAMES(bad({8, -16, 1, 2, 2, 4, 4}), "bad.bin", "hidden_dim must be positive");
  CHECK_ERROR_NAMES(bad({8, 16, 0, 2, 2, 4, 4}), "bad.bin", "n_layers must be positive");
  CHECK_ERROR_NAMES(bad({8, 16, 1, 0, 2, 4, 4}), "bad.bin", "n_heads must be positive");
  CHECK_ERROR_NAMES(bad({8, 16, 1, 2, 0, 4, 4}), "bad.bin", "n_kv_heads must be positive");
  CHECK_ERROR_NAMES(bad({8, 16, 1, 2, 2, 0, 4}), "bad.bin", "vocab_size must be non-zero");
  CHECK_ERROR_NAMES(bad({8, 16, 1, 2, 2, std::numeric_limits<int32_t>::min(), 4}), "bad.bin", "vocab_size");
  CHECK_ERROR_NAMES(bad({8, 16, 1, 2, 2, 4, -1}), "bad.bin", "seq_len must be positive");
  CHECK_ERROR_NAMES(bad({10, 16, 1, 4, 2, 4, 4}), "bad.bin", "dim (10) is not divisible by n_heads (4)");
  CHECK_ERROR_NAMES(bad({12, 16, 1, 3, 2, 4, 4}), "bad.bin", "n_heads (3) is not a multiple of n_kv_heads (2)");
  CHECK_ERROR_NAMES(bad({6, 16, 1, 2, 2, 4, 4}), "bad.bin", "must be even");
}

TEST_CASE("llama2c format: bad files through load_weights and load_config") {
  const std::string dir = gear::test::scratch_dir("llama2c_files");
  const std::string good = checkpoint(8, 16, 1, 2, 2, 4, 4);

  const std::string ok = dir + "/ok.bin";
  gear::test::write_bytes(ok, good);
  const gear::ModelConfig c = gear::load_config(ok);
  CHECK(c.dim == 8);
  CHECK(c.source == ok);
  const gear::Weights w = gear::load_weights(ok);
  CHECK(w.layers.size() == 1);
  CHECK(w.tok_embeddings[0][1].item<float>() == 0.001f);

  const std::string trunc = dir + "/truncated.bin";
  gear::test::write_bytes(trunc, good.substr(0, good.size() - 100));
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(trunc); }), trunc, "truncated");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_config(trunc); }), trunc, "truncated");

  const std::string baddims = dir + "/baddims.bin";
  gear::test::write_bytes(baddims, header_bytes({10, 16, 1, 4, 2, 4, 4}) + std::string(400, '\0'));
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(baddims); }), baddims, "bad llama2.c header");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_config(baddims); }), baddims, "bad llama2.c header");

  const std::string empty = dir + "/empty.bin";
  gear::test::write_bytes(empty, "");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(empty); }), empty);
  CHECK_ERROR_NAMES(error_of([&] { gear::load_config(empty); }), empty, "empty file");
}
