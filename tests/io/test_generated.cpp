// Generated (random) weights of real models' shapes.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "core/io/generated.h"
#include "core/io/loader.h"
#include "io/io_testing.h"

using gear::test::error_of;

TEST_CASE("generated: stories260K shape on the CPU, labelled as generated") {
  const gear::Weights w = gear::generate_weights("stories260K", "cpu", "f32", 123);
  const gear::ModelConfig& c = w.config;
  CHECK(c.generated);
  CHECK(c.source == "generated:stories260K");
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_seq_len == 512);
  CHECK_THAT(c.describe(), Catch::Matchers::Contains("GENERATED"));
  w.validate("test");  // shapes match the config
  REQUIRE(w.layers.size() == 5);
  CHECK(w.tok_embeddings.sizes().vec() == std::vector<int64_t>{512, 64});
  CHECK(w.layers[0].wq.sizes().vec() == std::vector<int64_t>{64, 64});
  CHECK(w.layers[0].wk.sizes().vec() == std::vector<int64_t>{32, 64});
  CHECK(w.layers[4].w2.sizes().vec() == std::vector<int64_t>{64, 172});
  CHECK(w.tok_embeddings.scalar_type() == at::kFloat);
  CHECK(w.tok_embeddings.device().is_cpu());
  CHECK(at::equal(w.layers[2].attn_norm, at::ones({64})));
  CHECK(at::equal(w.final_norm, at::ones({64})));
  const double sd = w.layers[1].w1.std().item<double>();
  CHECK(sd == Approx(0.02).epsilon(0.05));
  CHECK(std::abs(w.layers[1].w1.mean().item<double>()) < 0.002);

  // Deterministic on the CPU for a seed; another seed differs.
  const gear::Weights again = gear::generate_weights("stories260K", "cpu", "f32", 123);
  CHECK(at::equal(again.layers[3].wv, w.layers[3].wv));
  const gear::Weights other = gear::generate_weights("stories260K", "cpu", "f32", 124);
  CHECK_FALSE(at::equal(other.layers[3].wv, w.layers[3].wv));
  // The alias from loader.h's comment works too.
  CHECK(gear::generated_config("stories260K-shape").dim == 64);
}

TEST_CASE("generated: other dtypes are created in that dtype") {
  const gear::Weights w = gear::generate_weights("stories260K", "cpu", "bf16", 1);
  CHECK(w.tok_embeddings.scalar_type() == at::kBFloat16);
  CHECK(w.layers[0].wq.scalar_type() == at::kBFloat16);
  CHECK(w.final_norm.scalar_type() == at::kBFloat16);
  CHECK(w.layers[0].wq.to(at::kFloat).std().item<double>() == Approx(0.02).epsilon(0.1));
}

TEST_CASE("generated: unknown shapes and bad devices are errors") {
  const std::string msg = error_of([] { gear::generate_weights("llama9-1t", "cpu", "f32"); });
  CHECK_ERROR_NAMES(msg, "unknown generated shape 'llama9-1t'", "llama2-7b", "llama2-13b", "llama3-8b",
                    "tinyllama-1.1b", "stories260K");
  CHECK_ERROR_NAMES(error_of([] { gear::load_weights("gen:nope"); }), "unknown generated shape 'nope'");
  CHECK_ERROR_NAMES(error_of([] { gear::generate_weights("stories260K", "cpu", "f8"); }), "f8");
  CHECK_ERROR_NAMES(error_of([] { gear::generate_weights("stories260K", "tpu", "f32"); }), "tpu");
  CHECK(gear::list_generated_shapes() == "llama2-7b, llama2-13b, llama3-8b, tinyllama-1.1b, stories260K");
}

TEST_CASE("generated: configs of the real shapes (no weights allocated)") {
  const gear::ModelConfig l7 = gear::generated_config("llama2-7b");
  CHECK(l7.generated);
  CHECK(l7.source == "generated:llama2-7b");
  CHECK(l7.dim == 4096);
  CHECK(l7.hidden_dim == 11008);
  CHECK(l7.n_layers == 32);
  CHECK(l7.n_kv_heads == 32);
  CHECK(l7.vocab_size == 32000);
  CHECK(l7.max_seq_len == 4096);
  CHECK(double(l7.param_count()) == Approx(6.74e9).epsilon(0.002));  // 6,738,415,616
  CHECK(l7.param_count() == 6738415616);
  // KV cache: 2 * 32 layers * 4096 * 2 bytes = 512 KiB per token in f16.
  CHECK(l7.kv_bytes_per_token(2) == 524288);

  const gear::ModelConfig l13 = gear::generated_config("llama2-13b");
  CHECK(double(l13.param_count()) == Approx(13.0e9).epsilon(0.01));

  const gear::ModelConfig l3 = gear::generated_config("llama3-8b");
  CHECK(l3.n_kv_heads == 8);
  CHECK(l3.vocab_size == 128256);
  CHECK(l3.max_seq_len == 8192);
  CHECK(l3.rope_theta == 500000.0f);
  CHECK(double(l3.param_count()) == Approx(8.03e9).epsilon(0.002));  // 8,030,261,248
  CHECK(l3.kv_bytes_per_token(2) == 131072);

  const gear::ModelConfig tl = gear::generated_config("tinyllama-1.1b");
  CHECK(tl.n_layers == 22);
  CHECK(tl.n_kv_heads == 4);
  CHECK(double(tl.param_count()) == Approx(1.1e9).epsilon(0.005));  // 1,100,048,384

  const gear::ModelConfig via = gear::load_config("gen:llama3-8b");
  CHECK(via.generated);
  CHECK(via.param_count() == l3.param_count());
  CHECK(gear::generated_shape_names().size() == 5);
}

TEST_CASE("generated: load_weights gen:<shape>") {
  const gear::Weights w = gear::load_weights("gen:stories260K", "cpu", "f32");
  CHECK(w.config.generated);
  CHECK(w.config.source == "generated:stories260K");
  CHECK(w.classifier.is_same(w.tok_embeddings));
}
