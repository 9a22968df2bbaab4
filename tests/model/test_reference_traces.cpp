// The engine against llama2.c's own float32 output on stories260K: every argmax, logits to 1e-3,
// and the greedy text byte for byte.
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

struct TraceLine {
  int pos, in, argmax;
  double max_logit, l[4];
};

std::vector<TraceLine> read_trace(const std::string& path) {
  std::ifstream f(path);
  std::vector<TraceLine> out;
  std::string line, word;
  while (std::getline(f, line)) {
    std::istringstream s(line);
    TraceLine t{};
    s >> word >> t.pos >> word >> t.in >> word >> t.argmax >> word >> t.max_logit >> word >> t.l[0] >> t.l[1] >> t.l[2] >> t.l[3];
    if (s) out.push_back(t);
  }
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";

}  // namespace

TEST_CASE("teacher-forced logits match the llama2.c trace at every position", "[model][golden]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  for (const char* name : {"once_upon_a_time", "the_little_dog"}) {
    const auto trace = read_trace(gear::test::shared(std::string("reference/") + name + ".trace"));
    REQUIRE(trace.size() == 200);
    std::vector<int> inputs;
    for (const auto& t : trace) inputs.push_back(t.in);
    gear::KvCache cache = model.make_full_cache(1, 512);
    // Prefill half, then decode the rest one token at a time: both paths must match.
    const size_t split = 100;
    at::Tensor logits = model.prefill(cache, 0, std::vector<int>(inputs.begin(), inputs.begin() + split));
    std::vector<at::Tensor> rows{logits};
    for (size_t p = split; p < inputs.size(); ++p) {
      at::Tensor tok = at::full({1}, inputs[p], at::kLong), pos = at::full({1}, int64_t(p), at::kLong);
      rows.push_back(model.decode(cache, tok, pos));
    }
    logits = at::cat(rows).to(at::kDouble);
    double worst = 0;
    for (size_t p = 0; p < trace.size(); ++p) {
      at::Tensor row = logits[p];
      INFO(name << " position " << p);
      REQUIRE(row.argmax().item<int64_t>() == trace[p].argmax);
      worst = std::max(worst, std::abs(row.max().item<double>() - trace[p].max_logit));
      for (int i = 0; i < 4; ++i) worst = std::max(worst, std::abs(row[i].item<double>() - trace[p].l[i]));
    }
    CHECK(worst < 1e-3);
  }
}

TEST_CASE("greedy generation reproduces the reference texts exactly", "[model][golden]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  for (auto [name, prompt] : {std::pair{"once_upon_a_time", "Once upon a time"}, std::pair{"the_little_dog", "The little dog"}}) {
    const std::vector<int> ids = tok->encode(prompt, true);
    gear::GenerationParams params;
    params.max_new_tokens = 200 - int(ids.size()) + 1;  // llama2.c's steps count prompt positions
    params.stop_tokens = {tok->bos_id()};
    gear::KvCache cache = model.make_full_cache(1, 512);
    auto r = gear::generate(model, cache, {ids}, params);
    std::vector<int> all = ids;
    all.insert(all.end(), r.tokens[0].begin(), r.tokens[0].end());
    CHECK(tok->decode(all) + "\n" == read_text(gear::test::shared(std::string("reference/") + name + ".text")));
  }
}

TEST_CASE("batched decode of prompts of different lengths equals decoding each alone", "[model][batch]") {
  if (!gear::test::have_shared(kModel)) return;
  gear::LlamaModel model(gear::load_llama2c(gear::test::shared(kModel)), {});
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  const std::vector<std::string> prompts = {"Once upon a time", "The little dog", "Tom had a red ball and a big",
                                            "Lily"};
  std::vector<std::vector<int>> ids;
  for (const auto& p : prompts) ids.push_back(tok->encode(p, true));
  gear::GenerationParams params;
  params.max_new_tokens = 60;
  gear::KvCache batch_cache = model.make_full_cache(int(ids.size()), 256);
  auto batched = gear::generate(model, batch_cache, ids, params);
  for (size_t b = 0; b < ids.size(); ++b) {
    gear::KvCache alone = model.make_full_cache(1, 256);
    auto single = gear::generate(model, alone, {ids[b]}, params);
    INFO("row " << b << ": " << prompts[b]);
    CHECK(batched.tokens[b] == single.tokens[0]);
  }
  // And the logits themselves, not only the argmax: one batched step vs single steps.
  gear::KvCache bc = model.make_full_cache(2, 64), c0 = model.make_full_cache(1, 64), c1 = model.make_full_cache(1, 64);
  model.prefill(bc, 0, ids[0]);
  model.prefill(bc, 1, ids[2]);
  model.prefill(c0, 0, ids[0]);
  model.prefill(c1, 0, ids[2]);
  at::Tensor toks = at::tensor({7, 9}, at::kLong);
  at::Tensor pos = at::tensor({int64_t(ids[0].size()), int64_t(ids[2].size())}, at::kLong);
  at::Tensor both = model.decode(bc, toks, pos);
  at::Tensor l0 = model.decode(c0, toks.narrow(0, 0, 1), pos.narrow(0, 0, 1));
  at::Tensor l1 = model.decode(c1, toks.narrow(0, 1, 1), pos.narrow(0, 1, 1));
  CHECK(at::allclose(both[0], l0[0], 1e-5, 1e-5));
  CHECK(at::allclose(both[1], l1[0], 1e-5, 1e-5));
}

TEST_CASE("a prompt longer than the MLP's row chunk gives the logits of a shorter prompt and of decoding", "[model]") {
  // The stories260K shape with generated weights and a 2k context: prefill runs the MLP in chunks of 1024 rows
  // past 1024 tokens (memory), which must not change any position's logits.
  gear::Weights w = gear::generate_weights("stories260K", "cpu", "f32", 5);
  w.config.max_seq_len = 2048;
  gear::LlamaModel model(std::move(w), {});
  std::vector<int> ids(1300);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = 1 + int((i * 7919) % 511);
  gear::KvCache a = model.make_full_cache(1, 1400), b = model.make_full_cache(1, 1400), c = model.make_full_cache(1, 1400);
  const at::Tensor full = model.prefill(a, 0, ids);  // 1300 rows: two chunks
  const at::Tensor head = model.prefill(b, 0, std::vector<int>(ids.begin(), ids.begin() + 1000));  // one chunk
  const double scale = full.abs().max().item<double>();
  CHECK((full.narrow(0, 0, 1000) - head).abs().max().item<double>() < 1e-5 * scale);
  // Positions in the second chunk against one decode step each after a 1030-token prompt.
  model.prefill(c, 0, std::vector<int>(ids.begin(), ids.begin() + 1030));
  for (int64_t p = 1030; p < 1036; ++p) {
    const at::Tensor step = model.decode(c, at::full({1}, int64_t(ids[p]), at::kLong), at::full({1}, p, at::kLong));
    INFO("position " << p);
    CHECK((step[0] - full[p]).abs().max().item<double>() < 1e-4 * scale);
  }
}
