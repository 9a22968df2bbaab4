// A Hugging Face directory converted from stories260K (q/k permuted as HF stores them, so RoPE
// must switch to rotate-half) gives the same logits as the llama2.c checkpoint.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "core/io/loader.h"
#include "core/model/llama.h"
#include "io/hf_writer.h"
#include "test_paths.h"

namespace {

at::Tensor logits_for(gear::Weights w, const std::vector<int>& tokens) {
  gear::LlamaModel model(std::move(w), {});
  gear::KvCache cache = model.make_full_cache(1, 256);
  return model.prefill(cache, 0, tokens);
}

const std::vector<int> kTokens = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 290, 300};

}  // namespace

TEST_CASE("HF safetensors directory reproduces the llama2.c logits", "[model][hf]") {
  const std::string bin = "models/stories260K/stories260K.bin";
  if (!gear::test::have_shared(bin)) return;
  const at::Tensor want = logits_for(gear::load_llama2c(gear::test::shared(bin)), kTokens);

  const std::string dir = gear::test::scratch_dir("hf-stories260K-f32");
  gear::test::write_hf_dir(gear::load_llama2c(gear::test::shared(bin)), dir, "F32", 1);
  gear::Weights hf = gear::load_hf_directory(dir);
  CHECK(hf.config.rope_layout == gear::RopeLayout::HalfSplit);
  const at::Tensor got = logits_for(std::move(hf), kTokens);
  CHECK(at::allclose(got, want, 1e-4, 1e-4));
  CHECK(at::equal(got.argmax(-1), want.argmax(-1)));

  // Half precision in 3 shards: close, and the same greedy choices.
  const std::string dir16 = gear::test::scratch_dir("hf-stories260K-f16");
  gear::test::write_hf_dir(gear::load_llama2c(gear::test::shared(bin)), dir16, "F16", 3);
  const at::Tensor got16 = logits_for(gear::load_hf_directory(dir16), kTokens);
  CHECK((got16 - want).abs().max().item<double>() < 0.05);
  CHECK(at::equal(got16.argmax(-1), want.argmax(-1)));
}

TEST_CASE("rotate-half RoPE on un-permuted weights is wrong (the layout matters)", "[model][hf]") {
  const std::string bin = "models/stories260K/stories260K.bin";
  if (!gear::test::have_shared(bin)) return;
  gear::Weights w = gear::load_llama2c(gear::test::shared(bin));
  const at::Tensor want = logits_for(gear::load_llama2c(gear::test::shared(bin)), kTokens);
  w.config.rope_layout = gear::RopeLayout::HalfSplit;  // without permuting q/k
  const at::Tensor wrong = logits_for(std::move(w), kTokens);
  CHECK((wrong - want).abs().max().item<double>() > 0.1);
}
