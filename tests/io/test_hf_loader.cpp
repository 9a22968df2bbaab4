// Hugging Face directories: conversion round trips, shards, config.json and corrupt checkpoints.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/io/generated.h"
#include "core/io/hf_loader.h"
#include "core/io/loader.h"
#include "io/hf_writer.h"
#include "io/io_testing.h"
#include "test_paths.h"

using gear::test::error_of;
namespace fs = std::filesystem;

namespace {

// Small float32 weights of the stories260K shape; untied ones get a separate classifier.
gear::Weights tiny_weights(bool tied = true, uint64_t seed = 7) {
  gear::Weights w = gear::generate_weights("stories260K", "cpu", "f32", seed);
  w.config.generated = false;
  w.config.source = "test";
  for (auto& L : w.layers) {  // norms other than 1 so a mix-up would show
    L.attn_norm = at::rand({w.config.dim}) + 0.5;
    L.ffn_norm = at::rand({w.config.dim}) + 0.5;
  }
  if (!tied) {
    w.config.tied_embeddings = false;
    w.classifier = at::randn({w.config.vocab_size, w.config.dim});
  }
  return w;
}

// Every tensor equal; q/k compared through `qk` (identity or a permutation).
template <class QK>
void check_same_weights(const gear::Weights& a, const gear::Weights& b, QK qk_a) {
  REQUIRE(a.layers.size() == b.layers.size());
  CHECK(at::equal(a.tok_embeddings, b.tok_embeddings));
  CHECK(at::equal(a.final_norm, b.final_norm));
  CHECK(at::equal(a.classifier, b.classifier));
  for (size_t l = 0; l < a.layers.size(); ++l) {
    INFO("layer " << l);
    const gear::LayerWeights &x = a.layers[l], &y = b.layers[l];
    CHECK(at::equal(qk_a(x.wq, a.config.n_heads), y.wq));
    CHECK(at::equal(qk_a(x.wk, a.config.n_kv_heads), y.wk));
    CHECK(at::equal(x.wv, y.wv));
    CHECK(at::equal(x.wo, y.wo));
    CHECK(at::equal(x.w1, y.w1));
    CHECK(at::equal(x.w2, y.w2));
    CHECK(at::equal(x.w3, y.w3));
    CHECK(at::equal(x.attn_norm, y.attn_norm));
    CHECK(at::equal(x.ffn_norm, y.ffn_norm));
  }
}

void check_same_weights(const gear::Weights& a, const gear::Weights& b) {
  check_same_weights(a, b, [](const at::Tensor& t, int64_t) { return t; });
}

std::string file_in(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(gear::test::read_bytes(path)); }

}  // namespace

TEST_CASE("hf: permutation matches Hugging Face's convert script and inverts") {
  const int64_t heads = 2, hd = 6, dim2 = 3;
  const at::Tensor w = at::arange(heads * hd * dim2, at::kFloat).reshape({heads * hd, dim2});
  const at::Tensor p = gear::test::hf_permute(w, heads);
  // Within a head, row 2i+p (adjacent pair i, element p) moves to row p*hd/2 + i (half p).
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t e = 0; e < 2; ++e) CHECK(at::equal(p[h * hd + e * hd / 2 + i], w[h * hd + 2 * i + e]));
  CHECK(at::equal(gear::test::hf_unpermute(p, heads), w));
}

TEST_CASE("hf: stories260K converted to a Hugging Face directory loads with q/k permuted") {
  const std::string rel = "models/stories260K/stories260K.bin";
  if (!gear::test::have_shared(rel)) return;
  const gear::Weights ref = gear::load_llama2c(gear::test::shared(rel));
  const std::string dir = gear::test::scratch_dir("hf_stories260K");
  gear::test::write_hf_dir(ref, dir, "F32", 1);
  const gear::Weights hf = gear::load_hf_directory(dir);

  const gear::ModelConfig &a = ref.config, &b = hf.config;
  CHECK(b.dim == a.dim);
  CHECK(b.hidden_dim == a.hidden_dim);
  CHECK(b.n_layers == a.n_layers);
  CHECK(b.n_heads == a.n_heads);
  CHECK(b.n_kv_heads == a.n_kv_heads);
  CHECK(b.vocab_size == a.vocab_size);
  CHECK(b.max_seq_len == a.max_seq_len);
  CHECK(b.hd() == a.hd());
  CHECK(b.rope_theta == a.rope_theta);
  CHECK(b.norm_eps == a.norm_eps);
  CHECK(b.tied_embeddings);
  CHECK(b.rope_layout == gear::RopeLayout::HalfSplit);
  CHECK(a.rope_layout == gear::RopeLayout::Adjacent);
  CHECK(b.source == dir);
  CHECK_FALSE(b.generated);
  check_same_weights(ref, hf, gear::test::hf_permute);
  // Tied: one tensor, not a copy.
  CHECK(hf.classifier.is_same(hf.tok_embeddings));
  // And load_weights/load_config dispatch a directory here.
  CHECK(gear::load_config(dir).rope_layout == gear::RopeLayout::HalfSplit);
  check_same_weights(gear::load_weights(dir), hf);
}

TEST_CASE("hf: F16 and BF16 checkpoints load as the rounded float32 values") {
  const gear::Weights w = tiny_weights(/*tied=*/false);
  for (const std::string dtype : {"F16", "BF16"}) {
    INFO(dtype);
    const std::string dir = gear::test::scratch_dir("hf_" + dtype);
    gear::test::write_hf_dir(w, dir, dtype, 1);
    const gear::Weights hf = gear::load_hf_directory(dir);
    const at::ScalarType t = dtype == "F16" ? at::kHalf : at::kBFloat16;
    gear::Weights rounded = w;
    auto round = [&](const at::Tensor& x) { return x.to(t).to(at::kFloat); };
    rounded.tok_embeddings = round(w.tok_embeddings);
    rounded.final_norm = round(w.final_norm);
    rounded.classifier = round(w.classifier);
    for (auto& L : rounded.layers)
      for (at::Tensor* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3, &L.attn_norm, &L.ffn_norm}) *x = round(*x);
    CHECK_FALSE(hf.config.tied_embeddings);
    CHECK(hf.tok_embeddings.scalar_type() == at::kFloat);
    check_same_weights(rounded, hf, gear::test::hf_permute);
  }
}

TEST_CASE("hf: 2 and 3 shards with an index load identically to a single file") {
  const gear::Weights w = tiny_weights(/*tied=*/false);
  const std::string one = gear::test::scratch_dir("hf_shards_1");
  gear::test::write_hf_dir(w, one, "F32", 1);
  const gear::Weights ref = gear::load_hf_directory(one);
  for (int shards : {2, 3}) {
    INFO(shards << " shards");
    const std::string dir = gear::test::scratch_dir("hf_shards_" + std::to_string(shards));
    gear::test::write_hf_dir(w, dir, "F32", shards);
    CHECK_FALSE(fs::exists(file_in(dir, "model.safetensors")));
    CHECK(fs::exists(
        file_in(dir, "model-0000" + std::to_string(shards) + "-of-0000" + std::to_string(shards) + ".safetensors")));
    const gear::Weights hf = gear::load_hf_directory(dir);
    CHECK(hf.config.n_layers == ref.config.n_layers);
    check_same_weights(ref, hf);
  }
}

TEST_CASE("hf: config.json fields") {
  const std::string dir = gear::test::scratch_dir("hf_config");
  const std::string cfg = file_in(dir, "config.json");
  nlohmann::json base = {{"architectures", {"LlamaForCausalLM"}},
                         {"hidden_size", 4096},
                         {"intermediate_size", 14336},
                         {"num_hidden_layers", 32},
                         {"num_attention_heads", 32},
                         {"num_key_value_heads", 8},
                         {"vocab_size", 128256},
                         {"max_position_embeddings", 131072},
                         {"rope_theta", 500000.0},
                         {"rms_norm_eps", 1e-5},
                         {"tie_word_embeddings", false},
                         {"rope_scaling",
                          {{"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192},
                           {"rope_type", "llama3"}}}};
  auto load = [&](const nlohmann::json& j) {
    gear::test::write_json(cfg, j);
    return gear::load_hf_config(dir);
  };

  SECTION("Llama 3.1 with llama3 rope scaling") {
    const gear::ModelConfig c = load(base);
    CHECK(c.dim == 4096);
    CHECK(c.hidden_dim == 14336);
    CHECK(c.n_layers == 32);
    CHECK(c.n_heads == 32);
    CHECK(c.n_kv_heads == 8);
    CHECK(c.vocab_size == 128256);
    CHECK(c.max_seq_len == 131072);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.norm_eps == 1e-5f);
    CHECK_FALSE(c.tied_embeddings);
    CHECK(c.rope_layout == gear::RopeLayout::HalfSplit);
    CHECK(c.rope_scaling.llama3);
    CHECK(c.rope_scaling.factor == 8.0f);
    CHECK(c.rope_scaling.low_freq_factor == 1.0f);
    CHECK(c.rope_scaling.high_freq_factor == 4.0f);
    CHECK(c.rope_scaling.original_max_position == 8192);
    CHECK(c.hd() == 128);
  }
  SECTION("defaults: kv heads = heads, rope_theta 10000, no scaling; model_type alone identifies llama") {
    nlohmann::json j = base;
    for (const char* k : {"architectures", "num_key_value_heads", "rope_theta", "rope_scaling", "tie_word_embeddings"})
      j.erase(k);
    j["model_type"] = "llama";
    const gear::ModelConfig c = load(j);
    CHECK(c.n_kv_heads == 32);
    CHECK(c.rope_theta == 10000.0f);
    CHECK_FALSE(c.rope_scaling.llama3);
    CHECK(c.rope_scaling.linear_factor == 1.0f);
    CHECK_FALSE(c.tied_embeddings);
  }
  SECTION("linear and default rope scaling, explicit head_dim") {
    nlohmann::json j = base;
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    j["head_dim"] = 64;
    const gear::ModelConfig c = load(j);
    CHECK(c.rope_scaling.linear_factor == 4.0f);
    CHECK_FALSE(c.rope_scaling.llama3);
    CHECK(c.hd() == 64);
    j["rope_scaling"] = {{"rope_type", "default"}};
    CHECK(load(j).rope_scaling.linear_factor == 1.0f);
  }
  SECTION("transformers 5 style: rope_parameters holds rope_theta and the scaling") {
    // As transformers 5.17 save_pretrained writes it (seen on a real run).
    nlohmann::json j = base;
    j.erase("rope_theta");
    j.erase("rope_scaling");
    j["dtype"] = "bfloat16";
    j["head_dim"] = 128;
    j["rope_parameters"] = {{"factor", 8.0},          {"high_freq_factor", 4.0},
                            {"low_freq_factor", 1.0}, {"original_max_position_embeddings", 8192},
                            {"rope_theta", 500000.0}, {"rope_type", "llama3"}};
    gear::ModelConfig c = load(j);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.rope_scaling.llama3);
    CHECK(c.rope_scaling.factor == 8.0f);
    CHECK(c.rope_scaling.original_max_position == 8192);
    j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "default"}};
    c = load(j);
    CHECK(c.rope_theta == 10000.0f);
    CHECK_FALSE(c.rope_scaling.llama3);
    j["rope_parameters"] = {{"rope_theta", 20000.0}};
    CHECK(load(j).rope_theta == 20000.0f);
    j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "yarn"}, {"factor", 4.0}};
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "unsupported rope_parameters type \"yarn\"");
    j["rope_parameters"] = {{"full_attention", {{"rope_theta", 10000.0}, {"rope_type", "default"}}}};
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "per-layer-type \"rope_parameters\"");
  }
  SECTION("errors name config.json and the field") {
    nlohmann::json j = base;
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "unsupported rope_scaling type \"yarn\"");
    j = base;
    j["rope_scaling"].erase("original_max_position_embeddings");
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "missing \"original_max_position_embeddings\"");
    j = base;
    j.erase("hidden_size");
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "missing \"hidden_size\"");
    j = base;
    j["num_attention_heads"] = "32";
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "\"num_attention_heads\" must be an integer");
    j = base;
    j["num_key_value_heads"] = 5;
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "not a multiple of n_kv_heads");
    j = base;
    j["hidden_act"] = "gelu";
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "hidden_act \"gelu\" is not supported");
    j = base;
    j["architectures"] = {"MistralForCausalLM"};
    j["model_type"] = "mistral";
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "unknown architecture MistralForCausalLM");
    j.erase("architectures");
    j["model_type"] = "gpt2";
    CHECK_ERROR_NAMES(error_of([&] { load(j); }), cfg, "unknown architecture gpt2");
    gear::test::write_bytes(cfg, "{\"hidden_size\": ");
    CHECK_ERROR_NAMES(error_of([&] { gear::load_hf_config(dir); }), cfg, "not valid JSON");
  }
}

TEST_CASE("hf: corrupt directories give errors naming the file and the problem") {
  const gear::Weights w = tiny_weights(/*tied=*/false);
  auto fresh = [&](const std::string& name, int shards = 1) {
    const std::string dir = gear::test::scratch_dir("hf_bad_" + name);
    gear::test::write_hf_dir(w, dir, "F32", shards);
    return dir;
  };
  auto load_error = [](const std::string& dir) { return error_of([&] { gear::load_hf_directory(dir); }); };

  SECTION("missing config.json") {
    const std::string dir = fresh("noconfig");
    fs::remove(file_in(dir, "config.json"));
    CHECK_ERROR_NAMES(load_error(dir), dir, "no config.json");
  }
  SECTION("missing directory, or a file given as the directory") {
    const std::string dir = gear::test::scratch_dir("hf_bad_nodir");
    CHECK_ERROR_NAMES(load_error(dir + "/nope"), dir + "/nope", "no such directory");
    gear::test::write_bytes(dir + "/file", "x");
    CHECK_ERROR_NAMES(load_error(dir + "/file"), dir + "/file", "not a directory");
  }
  SECTION("unknown architecture") {
    const std::string dir = fresh("arch");
    nlohmann::json j = read_json(file_in(dir, "config.json"));
    j["architectures"] = {"GPTNeoXForCausalLM"};
    j["model_type"] = "gpt_neox";
    gear::test::write_json(file_in(dir, "config.json"), j);
    CHECK_ERROR_NAMES(load_error(dir), file_in(dir, "config.json"), "unknown architecture GPTNeoXForCausalLM");
  }
  SECTION("shape mismatch against config.json") {
    const std::string dir = fresh("shape");
    nlohmann::json j = read_json(file_in(dir, "config.json"));
    j["intermediate_size"] = 100;
    gear::test::write_json(file_in(dir, "config.json"), j);
    CHECK_ERROR_NAMES(load_error(dir), file_in(dir, "model.safetensors"), "model.layers.0.mlp.gate_proj.weight",
                      "has shape [172, 64] but config.json implies [100, 64]");
  }
  SECTION("dtype mismatch: an integer tensor where a weight belongs") {
    const std::string dir = gear::test::scratch_dir("hf_bad_dtype");
    gear::test::write_json(file_in(dir, "config.json"), gear::test::hf_config_json(w.config));
    std::vector<gear::test::StTensor> ts;
    for (const auto& [name, t] : gear::test::hf_named_tensors(w))
      ts.push_back(gear::test::st_tensor(name, t, name == "model.norm.weight" ? "I32" : "F32"));
    gear::test::write_hf_tensors(ts, dir, 1);
    CHECK_ERROR_NAMES(load_error(dir), file_in(dir, "model.safetensors"), "model.norm.weight", "dtype I32",
                      "floating-point");
  }
  SECTION("tensor missing from a single file") {
    const std::string dir = gear::test::scratch_dir("hf_bad_missing");
    gear::test::write_json(file_in(dir, "config.json"), gear::test::hf_config_json(w.config));
    std::vector<gear::test::StTensor> ts;
    for (const auto& [name, t] : gear::test::hf_named_tensors(w))
      if (name != "model.layers.3.self_attn.v_proj.weight") ts.push_back(gear::test::st_tensor(name, t));
    gear::test::write_hf_tensors(ts, dir, 1);
    CHECK_ERROR_NAMES(load_error(dir), file_in(dir, "model.safetensors"), "model.layers.3.self_attn.v_proj.weight",
                      "not found");
  }
  SECTION("untied config without lm_head.weight") {
    const std::string dir = fresh("lmhead");
    gear::Weights tied = tiny_weights(/*tied=*/true);
    gear::test::write_hf_dir(tied, dir, "F32", 1);
    nlohmann::json j = read_json(file_in(dir, "config.json"));
    j["tie_word_embeddings"] = false;
    gear::test::write_json(file_in(dir, "config.json"), j);
    CHECK_ERROR_NAMES(load_error(dir), "lm_head.weight", "not found");
  }
  SECTION("more layers in the checkpoint than in config.json") {
    const std::string dir = fresh("layers");
    nlohmann::json j = read_json(file_in(dir, "config.json"));
    j["num_hidden_layers"] = 4;
    gear::test::write_json(file_in(dir, "config.json"), j);
    CHECK_ERROR_NAMES(load_error(dir), dir, "model.layers.4.", "num_hidden_layers = 4");
  }
  SECTION("no safetensors at all") {
    const std::string dir = fresh("nofiles");
    fs::remove(file_in(dir, "model.safetensors"));
    CHECK_ERROR_NAMES(load_error(dir), dir, "no model.safetensors or model.safetensors.index.json");
  }
  SECTION("missing shard") {
    const std::string dir = fresh("noshard", 3);
    fs::remove(file_in(dir, "model-00002-of-00003.safetensors"));
    CHECK_ERROR_NAMES(load_error(dir), file_in(dir, "model.safetensors.index.json"),
                      "shard model-00002-of-00003.safetensors", "does not exist");
  }
  SECTION("tensor missing from the index") {
    const std::string dir = fresh("noindex", 2);
    const std::string index = file_in(dir, "model.safetensors.index.json");
    nlohmann::json j = read_json(index);
    j["weight_map"].erase("model.layers.2.mlp.up_proj.weight");
    gear::test::write_json(index, j);
    CHECK_ERROR_NAMES(load_error(dir), index, "model.layers.2.mlp.up_proj.weight", "missing from weight_map");
  }
  SECTION("index maps a tensor to a shard that lacks it") {
    const std::string dir = fresh("wrongshard", 2);
    const std::string index = file_in(dir, "model.safetensors.index.json");
    nlohmann::json j = read_json(index);
    j["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
    gear::test::write_json(index, j);
    CHECK_ERROR_NAMES(load_error(dir), file_in(dir, "model-00001-of-00002.safetensors"), "model.norm.weight",
                      "not found", "index.json maps it");
  }
  SECTION("index that is not JSON, or points outside the directory") {
    const std::string dir = fresh("badindex", 2);
    const std::string index = file_in(dir, "model.safetensors.index.json");
    nlohmann::json j = read_json(index);
    j["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
    gear::test::write_json(index, j);
    CHECK_ERROR_NAMES(load_error(dir), index, "model.norm.weight", "must be a file name in the same directory");
    gear::test::write_bytes(index, "{\"weight_map\": {");
    CHECK_ERROR_NAMES(load_error(dir), index, "not valid JSON");
    gear::test::write_json(index, {{"metadata", {}}});
    CHECK_ERROR_NAMES(load_error(dir), index, "missing \"weight_map\"");
  }
  SECTION("corrupt shard: header length beyond the file") {
    const std::string dir = fresh("corruptshard", 2);
    const std::string shard = file_in(dir, "model-00002-of-00002.safetensors");
    std::string bytes = gear::test::read_bytes(shard);
    bytes.replace(0, 8, gear::test::le64(uint64_t(bytes.size())));
    gear::test::write_bytes(shard, bytes);
    CHECK_ERROR_NAMES(load_error(dir), shard, "header length", "beyond the end of the file");
  }
  SECTION("truncated single file: offsets out of range") {
    const std::string dir = fresh("truncated");
    const std::string file = file_in(dir, "model.safetensors");
    const std::string bytes = gear::test::read_bytes(file);
    gear::test::write_bytes(file, bytes.substr(0, bytes.size() - 1000));
    CHECK_ERROR_NAMES(load_error(dir), file, "out of range", "truncated file?");
  }
  SECTION("empty model.safetensors") {
    const std::string dir = fresh("emptyfile");
    gear::test::write_bytes(file_in(dir, "model.safetensors"), "");
    CHECK_ERROR_NAMES(load_error(dir), file_in(dir, "model.safetensors"), "empty file");
  }
}

TEST_CASE("load_weights: dispatch and errors for paths that are not models") {
  const std::string dir = gear::test::scratch_dir("load_weights_dispatch");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(dir + "/missing"); }), dir + "/missing",
                    "no such file or directory", "gen:<shape>");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_config(dir + "/missing.bin"); }), dir + "/missing.bin",
                    "no such file or directory");
  gear::test::write_bytes(dir + "/model.gguf", "GGUF");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(dir + "/model.gguf"); }), dir + "/model.gguf",
                    "unrecognised model file");
  gear::test::write_bytes(dir + "/model.safetensors", "x");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(dir + "/model.safetensors"); }), dir + "/model.safetensors",
                    "directory");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(""); }), "no model path");
  // An empty directory is treated as a Hugging Face directory without config.json.
  const std::string empty_dir = gear::test::scratch_dir("load_weights_empty_dir");
  CHECK_ERROR_NAMES(error_of([&] { gear::load_weights(empty_dir); }), empty_dir, "no config.json");
}
