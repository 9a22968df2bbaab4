// Our reader of SentencePiece .model files, against libsentencepiece itself (linked into this
// test only: it cannot share a process with LibTorch, see core/tokenizer/sentencepiece_model.cpp).
#include <catch2/catch.hpp>

#include <sstream>

#include "core/tokenizer/tokenizer.h"
#include "libsentencepiece_oracle.h"
#include "tokenizer_testing.h"

using namespace gear::test;

TEST_CASE("Llama-2 tokenizer.model encodes Hello world as [1, 15043, 3186]", "[tokenizer][sentencepiece]") {
  if (!have_shared(kLlamaModel)) return;
  auto tok = gear::load_tokenizer(shared(kLlamaModel));
  CHECK(tok->kind() == "sentencepiece");
  CHECK(tok->vocab_size() == 32000);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK(tok->encode("Hello world", true) == std::vector<int>{1, 15043, 3186});
  CHECK(tok->encode("Hello world", true, true) == std::vector<int>{1, 15043, 3186, 2});
  CHECK(tok->encode("Hello world", false) == std::vector<int>{15043, 3186});
}

TEST_CASE("a model directory loads its tokenizer.model", "[tokenizer][sentencepiece]") {
  if (!have_shared(kLlamaModel)) return;
  auto tok = gear::load_tokenizer(shared("models/llama2-tokenizer"));
  CHECK(tok->kind() == "sentencepiece");
  CHECK(tok->encode("Hello world", true) == std::vector<int>{1, 15043, 3186});
}

TEST_CASE("our tokenizer.model reader agrees with libsentencepiece", "[tokenizer][sentencepiece]") {
  if (!have_shared(kLlamaModel)) return;
  if (!have_libsentencepiece()) {
    WARN("SKIPPED: libsentencepiece not found at configure time, no oracle to compare with");
    return;
  }
  const std::string path = shared(kLlamaModel);
  auto tok = gear::load_tokenizer(path);
  std::vector<std::string> texts = kSamples;
  // Every line of the eval text too: real prose with punctuation and quotes.
  std::istringstream eval(slurp(shared("eval/short_stories.txt")));
  for (std::string line; std::getline(eval, line);) texts.push_back(line);
  for (const std::string& t : texts) {
    INFO("text: [" << t << "]");
    const std::vector<int> ids = tok->encode(t, true);
    CHECK(ids == spm_encode(path, t));
    CHECK(tok->decode(ids) == spm_decode(path, ids));
  }
}

TEST_CASE("SentencePiece decode_token follows the llama2.c rules", "[tokenizer][sentencepiece]") {
  if (!have_shared(kLlamaModel)) return;
  auto tok = gear::load_tokenizer(shared(kLlamaModel));
  CHECK(tok->decode_token(1, 15043) == "Hello");   // "▁Hello" right after BOS: no space
  CHECK(tok->decode_token(15043, 3186) == " world");  // "▁world": U+2581 is a space
  CHECK(tok->decode_token(3186, 0x0A + 3) == "\n");   // <0x0A> is the raw byte
  CHECK(tok->decode_token(3186, 2).empty());          // control pieces print nothing
  CHECK(tok->decode({1, 15043, 3186, 2}) == "Hello world");
}

TEST_CASE("tokenizer.model round-trips decode(encode(s)) == s", "[tokenizer][sentencepiece]") {
  if (!have_shared(kLlamaModel)) return;
  auto tok = gear::load_tokenizer(shared(kLlamaModel));
  for (const std::string& t : kSamples) {
    INFO("text: [" << t << "]");
    CHECK(tok->decode(tok->encode(t, true)) == t);
  }
}
