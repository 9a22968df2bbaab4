// Strict UTF-8 validation of prompts, before any tokenizer sees them.
#include <catch2/catch.hpp>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "tokenizer_testing.h"

using Catch::Contains;

TEST_CASE("require_utf8 accepts well-formed UTF-8", "[tokenizer][utf8]") {
  for (const std::string& ok : {std::string(""), std::string("plain ASCII"), std::string("\x00 nul", 5),
                               std::string("naïve café"), std::string("東京"), std::string("🙂"),
                               std::string("\xC2\x80"),           // U+0080, smallest 2-byte
                               std::string("\xEF\xBF\xBF"),       // U+FFFF
                               std::string("\xED\x9F\xBF"),       // U+D7FF, just below the surrogates
                               std::string("\xEE\x80\x80"),       // U+E000, just above them
                               std::string("\xF4\x8F\xBF\xBF")})  // U+10FFFF, the last code point
    CHECK_NOTHROW(gear::require_utf8(ok, "prompt"));
}

TEST_CASE("require_utf8 rejects malformed UTF-8 and names the byte", "[tokenizer][utf8]") {
  struct Case {
    std::string text, where;
  };
  const Case cases[] = {
      {"ab\xFF", "at byte 2"},                  // never valid
      {"\x80", "at byte 0"},                    // lone continuation byte
      {"abc\xC3", "at byte 3"},                 // truncated 2-byte sequence
      {"\xE6\x9D", "at byte 0"},                // truncated 3-byte sequence
      {"x\xE6" "A\xB1", "at byte 2"},           // continuation byte missing
      {"\xC0\xAF", "at byte 0"},                // overlong '/'
      {"\xE0\x80\xAF", "at byte 0"},            // overlong, 3 bytes
      {"\xF0\x82\x82\xAC", "at byte 0"},        // overlong, 4 bytes
      {"ok \xED\xA0\x80", "at byte 3"},         // U+D800, a surrogate
      {"\xED\xBF\xBF", "at byte 0"},            // U+DFFF, a surrogate
      {"\xF4\x90\x80\x80", "at byte 0"},        // U+110000, beyond Unicode
      {"\xF8\x88\x80\x80\x80", "at byte 0"}};   // 5-byte form
  for (const Case& c : cases) {
    INFO("where: " << c.where);
    REQUIRE_THROWS_AS(gear::require_utf8(c.text, "prompt"), gear::Error);
    REQUIRE_THROWS_WITH(gear::require_utf8(c.text, "prompt"),
                        Contains("prompt") && Contains("invalid UTF-8") && Contains(c.where));
  }
}

TEST_CASE("every tokenizer rejects invalid UTF-8 prompts", "[tokenizer][utf8]") {
  using namespace gear::test;
  for (const std::string& rel : {kTok512, kLlamaBin, kLlamaModel}) {
    if (!have_shared(rel)) continue;
    auto tok = gear::load_tokenizer(shared(rel));
    INFO(rel);
    REQUIRE_THROWS_WITH(tok->encode("caf\xC3", true), Contains("invalid UTF-8") && Contains("byte 3"));
    REQUIRE_THROWS_WITH(tok->encode("\xED\xA0\x80", false), Contains("invalid UTF-8"));
  }
}
