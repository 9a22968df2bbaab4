// The engine on CUDA (fused kernels in the decode path) against the CPU engine and the llama2.c
// references. Skips cleanly where there is no CUDA device.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "core/io/loader.h"
#include "core/model/generate.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"
#include "test_paths.h"

namespace {

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";

bool have_cuda() {
  if (at::hasCUDA()) return true;
  WARN("SKIPPED: no CUDA device");
  return false;
}

// Teacher-forced logits: prefill `split` tokens, then decode the rest one at a time.
at::Tensor forced_logits(gear::LlamaModel& m, const std::vector<int>& ids, size_t split) {
  gear::KvCache cache = m.make_full_cache(1, 512);
  std::vector<at::Tensor> rows{m.prefill(cache, 0, std::vector<int>(ids.begin(), ids.begin() + split)).cpu()};
  const auto opts = at::TensorOptions().dtype(at::kLong).device(m.device());
  for (size_t p = split; p < ids.size(); ++p)
    rows.push_back(m.decode(cache, at::full({1}, ids[p], opts), at::full({1}, int64_t(p), opts)).cpu());
  return at::cat(rows);
}

}  // namespace

TEST_CASE("CUDA engine: logits match the CPU engine in f32, f16 and bf16", "[model][cuda]") {
  if (!have_cuda() || !gear::test::have_shared(kModel)) return;
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  std::vector<int> ids = tok->encode("Once upon a time, there was a little girl named Lily. She loved to play outside", true);
  gear::LlamaModel cpu(gear::load_llama2c(gear::test::shared(kModel)), {"cpu", "f32"});
  const at::Tensor want = forced_logits(cpu, ids, 5);
  for (auto [dtype, tol] : {std::pair{"f32", 1e-3}, std::pair{"f16", 0.08}, std::pair{"bf16", 0.5}}) {
    gear::LlamaModel gpu(gear::load_llama2c(gear::test::shared(kModel)), {"cuda", dtype});
    const at::Tensor got = forced_logits(gpu, ids, 5);
    INFO("dtype " << dtype);
    CHECK((got - want).abs().max().item<double>() < tol);
    if (std::string(dtype) != "bf16") CHECK(at::equal(got.argmax(-1), want.argmax(-1)));
  }
}

TEST_CASE("CUDA engine: greedy generation reproduces the reference text", "[model][cuda][golden]") {
  if (!have_cuda() || !gear::test::have_shared(kModel)) return;
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  gear::LlamaModel gpu(gear::load_llama2c(gear::test::shared(kModel)), {"cuda", "f32"});
  for (auto [name, prompt] : {std::pair{"once_upon_a_time", "Once upon a time"}, std::pair{"the_little_dog", "The little dog"}}) {
    const std::vector<int> ids = tok->encode(prompt, true);
    gear::GenerationParams params;
    params.max_new_tokens = 200 - int(ids.size()) + 1;
    params.stop_tokens = {tok->bos_id()};
    gear::KvCache cache = gpu.make_full_cache(1, 512);
    auto r = gear::generate(gpu, cache, {ids}, params);
    std::vector<int> all = ids;
    all.insert(all.end(), r.tokens[0].begin(), r.tokens[0].end());
    std::ifstream f(gear::test::shared(std::string("reference/") + name + ".text"));
    std::stringstream want;
    want << f.rdbuf();
    CHECK(tok->decode(all) + "\n" == want.str());
  }
}

TEST_CASE("CUDA engine: batched decode equals decoding each alone (f16)", "[model][cuda][batch]") {
  if (!have_cuda() || !gear::test::have_shared(kModel)) return;
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  gear::LlamaModel gpu(gear::load_llama2c(gear::test::shared(kModel)), {"cuda", "f16"});
  std::vector<std::vector<int>> ids;
  for (const char* p : {"Once upon a time", "The little dog", "Tom had a red ball and a big", "Lily"}) ids.push_back(tok->encode(p, true));
  gear::GenerationParams params;
  params.max_new_tokens = 80;
  gear::KvCache bc = gpu.make_full_cache(int(ids.size()), 256);
  auto batched = gear::generate(gpu, bc, ids, params);
  for (size_t b = 0; b < ids.size(); ++b) {
    gear::KvCache alone = gpu.make_full_cache(1, 256);
    auto single = gear::generate(gpu, alone, {ids[b]}, params);
    INFO("row " << b);
    CHECK(batched.tokens[b] == single.tokens[0]);
  }
}

TEST_CASE("CUDA engine: a generated Llama-shaped model (hd 128, GQA 4) runs a long context", "[model][cuda]") {
  if (!have_cuda()) return;
  // tinyllama-1.1b shape: 32 heads / 4 kv heads of 128; the fused decode vs the ATen prefill path.
  gear::LlamaModel m(gear::generate_weights("tinyllama-1.1b", "cuda", "f16", 1), {"cuda", "f16"});
  std::vector<int> ids(1500);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = 1 + int((i * 7919) % 31999);
  gear::KvCache a = m.make_full_cache(1, 1600), b = m.make_full_cache(1, 1600);
  const at::Tensor full = m.prefill(a, 0, ids).cpu();  // prefill path for every position
  const at::Tensor first = m.prefill(b, 0, std::vector<int>(ids.begin(), ids.end() - 1), true);
  const auto opts = at::TensorOptions().dtype(at::kLong).device(m.device());
  const at::Tensor last = m.decode(b, at::full({1}, ids.back(), opts), at::full({1}, int64_t(ids.size() - 1), opts)).cpu();
  const double scale = full[-1].abs().max().item<double>();
  CHECK((last[0] - full[-1]).abs().max().item<double>() < 0.02 * scale + 0.02);
  // The first 1000 positions as a prompt of their own: one MLP chunk (1500 rows take two) and LibTorch's fused
  // prefill attention on both sides; every position's logits agree to fp16 rounding.
  gear::KvCache c = m.make_full_cache(1, 1600);
  const at::Tensor head = m.prefill(c, 0, std::vector<int>(ids.begin(), ids.begin() + 1000)).cpu();
  CHECK((full.narrow(0, 0, 1000) - head).abs().max().item<double>() < 0.02 * full.abs().max().item<double>() + 0.02);
}
