// The llama2.c tokenizer.bin: against llama2.c's own reference traces (tok512.bin) and against
// the SentencePiece model of the same 32k vocabulary.
#include <catch2/catch.hpp>

#include <chrono>

#include "core/tokenizer/chat_format.h"
#include "core/tokenizer/tokenizer.h"
#include "tokenizer_testing.h"

using namespace gear::test;

TEST_CASE("llama2.c tokenizers take their vocabulary size from the file", "[tokenizer][llama2c]") {
  if (have_shared(kTok512)) {
    auto tok = gear::load_tokenizer(shared(kTok512));
    CHECK(tok->kind() == "llama2.c");
    CHECK(tok->vocab_size() == 512);
    CHECK(tok->bos_id() == 1);
    CHECK(tok->eos_id() == 2);
  }
  if (have_shared(kLlamaBin)) CHECK(gear::load_tokenizer(shared(kLlamaBin))->vocab_size() == 32000);
}

TEST_CASE("tok512.bin encodes the reference prompts to the traces' input ids", "[tokenizer][llama2c][golden]") {
  if (!have_shared(kTok512)) return;
  auto tok = gear::load_tokenizer(shared(kTok512));
  const std::pair<std::string, std::string> refs[] = {{"once_upon_a_time", "Once upon a time"},
                                                      {"the_little_dog", "The little dog"}};
  for (const auto& [name, prompt] : refs) {
    INFO(name);
    const std::vector<int> ids = tok->encode(prompt, true);
    const std::vector<int> seq = trace_sequence(shared("reference/" + name + ".trace"));
    REQUIRE(seq.size() == 201);  // 200 steps of inputs plus the final argmax
    REQUIRE(ids.size() > 1);
    CHECK(ids.front() == 1);
    CHECK(ids == std::vector<int>(seq.begin(), seq.begin() + long(ids.size())));
    CHECK(gear::format_completion(*tok, prompt) == ids);
    // llama2.c printed every token after BOS, then a newline.
    CHECK(tok->decode(seq) + "\n" == slurp(shared("reference/" + name + ".text")));
  }
}

TEST_CASE("tokenizer.bin (llama2.c) and tokenizer.model (SentencePiece) give the same ids", "[tokenizer][llama2c]") {
  if (!have_shared(kLlamaModel) || !have_shared(kLlamaBin)) return;
  auto model = gear::load_tokenizer(shared(kLlamaModel));
  auto bin = gear::load_tokenizer(shared(kLlamaBin));
  CHECK(bin->encode("Hello world", true) == std::vector<int>{1, 15043, 3186});
  // No case needed an exception: both vocabularies have byte fallback (never <unk>), Llama's
  // normalizer is the identity, and both merge the best-scoring pair, leftmost first.
  for (const std::string& t : kSamples) {
    INFO("text: [" << t << "]");
    CHECK(bin->encode(t, true) == model->encode(t, true));
    CHECK(bin->encode(t, true, true) == model->encode(t, true, true));
  }
  const std::string stories = slurp(shared("eval/short_stories.txt"));
  CHECK(bin->encode(stories, true) == model->encode(stories, true));
}

TEST_CASE("llama2.c tokenizers round-trip decode(encode(s)) == s", "[tokenizer][llama2c]") {
  for (const std::string& rel : {kTok512, kLlamaBin}) {
    if (!have_shared(rel)) continue;
    auto tok = gear::load_tokenizer(shared(rel));
    for (const std::string& t : kSamples) {
      INFO(rel << " text: [" << t << "]");
      CHECK(tok->decode(tok->encode(t, true)) == t);
    }
  }
}

TEST_CASE("tok512.bin falls back to byte tokens (id = byte + 3) for characters it lacks", "[tokenizer][llama2c]") {
  if (!have_shared(kTok512)) return;
  auto tok = gear::load_tokenizer(shared(kTok512));
  // "東" is E6 9D B1; the vocabulary of 512 has no CJK, so each byte becomes its own token.
  const std::vector<int> ids = tok->encode("東", true);
  REQUIRE(ids.size() == 5);
  CHECK(ids[0] == 1);
  CHECK(std::vector<int>(ids.begin() + 2, ids.end()) == std::vector<int>{0xE6 + 3, 0x9D + 3, 0xB1 + 3});
  CHECK(tok->decode_token(5, 0x41 + 3) == "A");  // <0x41> prints as the raw byte
  CHECK(tok->encode("", true) == std::vector<int>{1});
  CHECK(tok->encode("", false).empty());
}

TEST_CASE("encoding a 6 KB text with the 32k vocabulary is fast", "[tokenizer][llama2c]") {
  if (!have_shared(kLlamaBin)) return;
  auto tok = gear::load_tokenizer(shared(kLlamaBin));
  std::string text = slurp(shared("eval/short_stories.txt"));
  REQUIRE(text.size() > 5000);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int> ids = tok->encode(text, true);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(ids.size() > 1000);
  CHECK(seconds < 0.25);
  CHECK(tok->decode(ids) == text);
}
