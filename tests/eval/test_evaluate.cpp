// The eval path on stories260K: teacher forcing through the real cache equals the full-sequence
// forward for FP16 and the generation path for a compressed cache; metrics on known distributions.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/cache/make_cache.h"
#include "core/eval/divergence.h"
#include "core/eval/evaluate.h"
#include "core/eval/metrics.h"
#include "core/eval/teacher_forcing.h"
#include "core/io/loader.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "test_paths.h"

namespace {

const char* kModel = "models/stories260K/stories260K.bin";
const char* kTok = "models/stories260K/tok512.bin";

// The model and the first `n` tokens (BOS included) of the shared evaluation text.
struct Fixture {
  gear::LlamaModel model;
  std::unique_ptr<gear::Tokenizer> tok;
  std::vector<int> tokens;
};

std::unique_ptr<Fixture> fixture(size_t n) {
  if (!gear::test::have_shared(kModel) || !gear::test::have_shared("eval/short_stories.txt")) return nullptr;
  std::ifstream in(gear::test::shared("eval/short_stories.txt"));
  std::stringstream text;
  text << in.rdbuf();
  auto tok = gear::load_tokenizer(gear::test::shared(kTok));
  std::vector<int> tokens = tok->encode(text.str(), /*add_bos=*/true);
  tokens.resize(n);
  return std::unique_ptr<Fixture>(
      new Fixture{gear::LlamaModel(gear::load_llama2c(gear::test::shared(kModel)), {}), std::move(tok), tokens});
}

gear::EvalOptions options(const Fixture& f, int64_t prefill, int gen_tokens) {
  gear::EvalOptions o;
  o.prefill = prefill;
  o.gen_tokens = gen_tokens;
  for (const char* p : {"Once upon a time", "The little dog"}) o.prompts.push_back({p, f.tok->encode(p, true)});
  return o;
}

}  // namespace

TEST_CASE("metrics: perplexity and KL of known distributions", "[eval]") {
  // Uniform logits over V tokens: perplexity V, whatever the targets.
  CHECK(gear::perplexity_from_logits(at::zeros({3, 7}), {0, 3, 6}) == Approx(7.0).epsilon(1e-12));
  // Two classes with p = (0.8, 0.2): the target 0 has probability 0.8.
  const at::Tensor two = at::tensor({std::log(0.8), std::log(0.2)}).to(at::kFloat).unsqueeze(0);
  CHECK(gear::perplexity_from_logits(two, {0}) == Approx(1.0 / 0.8).epsilon(1e-6));
  // KL((0.8, 0.2) || (0.5, 0.5)) = 0.8 ln 1.6 + 0.2 ln 0.4; argmaxes 0 and 0 (a tie goes to the first).
  const gear::Agreement a = gear::compare_distributions(two, at::zeros({1, 2}));
  CHECK(a.kl_mean == Approx(0.8 * std::log(1.6) + 0.2 * std::log(0.4)).epsilon(1e-6));
  CHECK(a.kl_max == a.kl_mean);
  CHECK(a.top1 == 1.0);
  const at::Tensor flipped = at::tensor({std::log(0.2), std::log(0.8)}).to(at::kFloat).unsqueeze(0);
  CHECK(gear::compare_distributions(two, flipped).top1 == 0.0);
  CHECK(gear::compare_distributions(two, two).kl_max == 0.0);
  CHECK_THROWS_WITH(gear::perplexity_from_logits(at::zeros({2, 4}), {1}), Catch::Contains("2 rows of logits for 1 targets"));
  CHECK_THROWS_WITH(gear::perplexity_from_logits(at::zeros({1, 4}), {4}), Catch::Contains("outside the vocabulary"));
}

TEST_CASE("eval: FP16 perplexity through prefill + decode equals the full-sequence forward", "[eval]") {
  auto f = fixture(150);
  if (!f) return;
  const int64_t prefill = 40, n = int64_t(f->tokens.size());
  const gear::EvalReference ref = gear::make_reference(f->model, f->tokens, options(*f, prefill, 0));
  REQUIRE(ref.scored() == n - prefill - 1);
  // One prefill of the whole text gives every position's logits; rows prefill .. n-2 predict the scored targets.
  gear::KvCache cache = f->model.make_full_cache(1, n);
  const at::Tensor all = f->model.prefill(cache, 0, f->tokens);
  const std::vector<int> targets(f->tokens.begin() + prefill + 1, f->tokens.end());
  const double full_seq = gear::perplexity_from_logits(all.narrow(0, prefill, n - prefill - 1), targets);
  INFO("eval path " << ref.fp16.perplexity << ", full sequence " << full_seq);
  CHECK(std::abs(ref.fp16.perplexity - full_seq) <= 1e-4 * full_seq);
  CHECK(ref.fp16.perplexity > 1.0);
  CHECK(ref.fp16.bytes.in_use() == 2 * gear::fp16_bytes(f->model.config(), n));  // f32 on the CPU
}

TEST_CASE("eval: FP16 against itself has KL 0, top-1 1 and never diverges", "[eval]") {
  auto f = fixture(120);
  if (!f) return;
  const gear::EvalRun run =
      gear::evaluate(f->model, f->tokens, {{"full", gear::preset("full")}}, options(*f, 0, 24));
  REQUIRE(run.methods.size() == 2);
  CHECK(run.prefill == 60);  // half of a text shorter than 128 tokens
  for (const gear::MethodEval& m : run.methods) {
    INFO(m.name);
    CHECK(m.name == "full");
    CHECK(m.agreement.kl_mean == 0.0);
    CHECK(m.agreement.kl_max == 0.0);
    CHECK(m.agreement.top1 == 1.0);
    CHECK(m.perplexity == run.methods[0].perplexity);
    CHECK(m.ppl_delta == 0.0);
    CHECK_FALSE(m.analysis);  // nothing to decompose
    REQUIRE(m.divergence.size() == 2);
    for (const gear::Divergence& d : m.divergence) CHECK(d.first_divergence == 24);
  }
}

TEST_CASE("eval: compressed caches differ from FP16 and report their bytes", "[eval]") {
  auto f = fixture(200);
  if (!f) return;
  gear::CacheConfig pyramid = gear::preset("pyramid");
  gear::set_option(pyramid, "l0", "64");  // budgets of 64 to 115 tokens: merges from the prompt on
  const gear::EvalRun run = gear::evaluate(f->model, f->tokens, {{"kivi-2", gear::preset("kivi-2")}, {"pyramid", pyramid}},
                                           options(*f, 64, 80));
  REQUIRE(run.methods.size() == 3);
  const gear::MethodEval& fp16 = run.methods[0];
  for (size_t i = 1; i < run.methods.size(); ++i) {
    const gear::MethodEval& m = run.methods[i];
    INFO(m.name << ": ppl " << m.perplexity << " vs " << fp16.perplexity << ", KL " << m.agreement.kl_mean);
    CHECK(m.agreement.kl_mean > 0);
    CHECK(m.agreement.kl_max >= m.agreement.kl_mean);
    CHECK(m.agreement.top1 <= 1.0);
    CHECK(m.perplexity != fp16.perplexity);
    CHECK(m.ppl_delta_pct == Approx(100 * (m.perplexity - fp16.perplexity) / fp16.perplexity));
    CHECK(m.fp16_bytes == gear::fp16_bytes(f->model.config(), 200));
    for (const gear::Divergence& d : m.divergence) {
      CHECK(d.generated == 80);
      CHECK(d.first_divergence <= d.generated);
    }
  }
  const gear::MethodEval& kivi = run.methods[1];
  CHECK(kivi.bytes.codes > 0);  // blocks were compressed while decoding
  CHECK(kivi.ratio_vs_fp16 > 2);
  REQUIRE(kivi.analysis);
  CHECK(kivi.analysis->tokens == 200);
  CHECK_FALSE(run.methods[2].analysis);  // pyramid has no quantization backbone
}

TEST_CASE("eval: teacher forcing walks the same cache path as greedy generation", "[eval]") {
  // Greedy-generate with a compressed cache, then teacher-force the generated text with a fresh cache
  // of the same settings: every decode step sees the same cache state, so its argmax is the token
  // generation chose next -- through prefill compression and two streamed blocks.
  auto f = fixture(1);
  if (!f) return;
  for (const char* p : {"gear-kivi-2", "gear-kcvt-4", "h2o"}) {
    gear::CacheConfig c = gear::preset(p);
    if (c.method == gear::CacheMethod::H2O) gear::set_option(c, "heavy", "24"), gear::set_option(c, "recent", "24");
    const std::vector<int> prompt = f->tok->encode("Once upon a time", true);
    const std::vector<int> out = gear::greedy_tokens(f->model, c, prompt, 150);
    std::vector<int> text = prompt;
    text.insert(text.end(), out.begin(), out.end());
    const int64_t P = int64_t(prompt.size());
    const gear::TeacherForced tf =
        gear::teacher_force(f->model, gear::make_cache(f->model, c, 1, int64_t(text.size())), text, P);
    const at::Tensor argmax = tf.logits.argmax(-1);
    REQUIRE(argmax.size(0) == int64_t(out.size()) - 1);
    int same = 0;
    for (int64_t i = 0; i < argmax.size(0); ++i) same += argmax[i].item<int64_t>() == out[size_t(i) + 1];
    INFO(p);
    CHECK(same == argmax.size(0));
    CHECK(tf.cache.length(0) == int64_t(text.size()));
  }
}

TEST_CASE("eval: clear errors for texts and settings that do not fit", "[eval]") {
  auto f = fixture(10);
  if (!f) return;
  CHECK_THROWS_WITH(gear::make_reference(f->model, f->tokens, options(*f, 9, 0)),
                    Catch::Contains("the text has 10 tokens, too few for a prefill of 9 plus 2"));
  CHECK_THROWS_WITH(gear::make_reference(f->model, std::vector<int>(513, 5), options(*f, 0, 0)),
                    Catch::Contains("exceed the model's context of 512"));
  CHECK_THROWS_WITH(gear::make_reference(f->model, f->tokens, options(*f, 2, 600)),
                    Catch::Contains("exceeds the model's context of 512"));
  gear::CacheConfig bad = gear::preset("gear-kivi-2");
  gear::set_option(bad, "rank", "9");
  CHECK_THROWS_WITH(gear::evaluate(f->model, f->tokens, {{"bad", bad}}, options(*f, 2, 0)),
                    Catch::Contains("rank 9 is larger than the head dimension 8"));
}
