// Llama-2-chat prompts as token ids, and the plain completion format.
#include <catch2/catch.hpp>

#include <algorithm>

#include "core/tokenizer/chat_format.h"
#include "core/util/error.h"
#include "tokenizer_testing.h"

using namespace gear::test;

namespace {

std::vector<int> join(std::initializer_list<std::vector<int>> parts) {
  std::vector<int> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

TEST_CASE("Llama-2-chat: a two-turn conversation with a system prompt", "[tokenizer][chat]") {
  if (!have_shared(kLlamaModel)) return;
  auto tok = gear::load_tokenizer(shared(kLlamaModel));
  auto body = [&](const std::string& s) { return tok->encode(s, false); };
  // Whitespace around every message is stripped; BOS/EOS are ids, never text.
  const auto got = gear::format_llama2_chat(*tok, "  Be brief. ", {{" Hi there\n", " Hello! "}, {"Tell me a story", ""}});
  const std::vector<int> want =
      join({{1}, body("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! "), {2},
            {1}, body("[INST] Tell me a story [/INST]")});
  CHECK(got == want);
  // The well-known ids of Llama-2-chat's markers: "[INST]" = 518 25580 29962,
  // "<<SYS>>\n" = 3532 14816 29903 6778 13, "[/INST]" = 518 29914 25580 29962.
  REQUIRE(got.size() > 12);
  CHECK(std::vector<int>(got.begin(), got.begin() + 9) == std::vector<int>{1, 518, 25580, 29962, 3532, 14816, 29903, 6778, 13});
  CHECK(std::vector<int>(got.end() - 4, got.end()) == std::vector<int>{518, 29914, 25580, 29962});
  CHECK(std::count(got.begin(), got.end(), 1) == 2);  // one BOS per turn
  CHECK(std::count(got.begin(), got.end(), 2) == 1);  // one EOS, closing the answered turn
  CHECK(tok->decode(got) ==
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! [INST] Tell me a story [/INST]");
}

TEST_CASE("Llama-2-chat: exact ids of a short conversation", "[tokenizer][chat]") {
  if (!have_shared(kLlamaModel)) return;
  auto tok = gear::load_tokenizer(shared(kLlamaModel));
  // The ids libsentencepiece gives for the two turns' texts, with BOS/EOS added around them.
  const std::vector<int> want = {1,     518,   25580, 29962, 3532,  14816, 29903, 6778, 13,    29903,
                                 13,    29966, 829,   14816, 29903, 6778,  13,    13,   2918,  518,
                                 29914, 25580, 29962, 24800, 29871, 2,     1,     518,  25580, 29962,
                                 289,   518,   29914, 25580, 29962};
  const auto got = gear::format_llama2_chat(*tok, "S", {{"hi", "yo"}, {"b", ""}});
  CHECK(got == want);
}

TEST_CASE("Llama-2-chat: no system block when the system prompt is empty", "[tokenizer][chat]") {
  if (!have_shared(kLlamaModel)) return;
  auto tok = gear::load_tokenizer(shared(kLlamaModel));
  CHECK(gear::format_llama2_chat(*tok, "", {{"Hi", ""}}) == tok->encode("[INST] Hi [/INST]", true));
  CHECK(gear::format_llama2_chat(*tok, " \n ", {{"Hi", ""}}) == tok->encode("[INST] Hi [/INST]", true));
  // The system block goes only into the first turn.
  const auto two = gear::format_llama2_chat(*tok, "Sys", {{"a", "b"}, {"c", ""}});
  CHECK(two == join({tok->encode("[INST] <<SYS>>\nSys\n<</SYS>>\n\na [/INST] b ", true, true),
                     tok->encode("[INST] c [/INST]", true)}));
  REQUIRE_THROWS_AS(gear::format_llama2_chat(*tok, "", {}), gear::Error);
}

TEST_CASE("completion format: the text with BOS", "[tokenizer][chat]") {
  if (!have_shared(kTok512)) return;
  auto tok = gear::load_tokenizer(shared(kTok512));
  CHECK(gear::format_completion(*tok, "Once upon a time") == tok->encode("Once upon a time", true));
  CHECK(gear::format_completion(*tok, "") == std::vector<int>{1});
}
