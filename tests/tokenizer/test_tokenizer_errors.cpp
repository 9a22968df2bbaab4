// Bad tokenizer files: each gets one gear::Error naming the file and the problem.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "tokenizer_testing.h"

using Catch::Contains;
using namespace gear::test;

namespace {

std::string int32_bytes(int32_t v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}

// One llama2.c token record: score, length, bytes.
std::string token_record(float score, int32_t len, const std::string& bytes) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &score, 4);
  return s + int32_bytes(len) + bytes;
}

}  // namespace

TEST_CASE("missing or unrecognised tokenizer files", "[tokenizer][errors]") {
  REQUIRE_THROWS_WITH(gear::load_tokenizer("/nonexistent/tok.bin"), Contains("/nonexistent/tok.bin") && Contains("not found"));
  REQUIRE_THROWS_WITH(gear::load_tokenizer("/nonexistent/tokenizer.model"), Contains("not found"));
  const std::string dir = scratch_dir("tokenizer-errors-kind");
  write_file(dir + "/notes.txt", "hello");
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/notes.txt"), Contains("notes.txt") && Contains("unknown tokenizer format"));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir), Contains(dir) && Contains("no tokenizer.model"));
  write_file(dir + "/junk.model", "this is not a protobuf at all, just text");
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/junk.model"), Contains("junk.model") && Contains("not a SentencePiece model"));
  write_file(dir + "/empty.model", "");
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/empty.model"), Contains("empty file"));
}

TEST_CASE("truncated llama2.c tokenizer.bin files", "[tokenizer][errors]") {
  if (!have_shared(kTok512)) return;
  const std::string full = slurp(shared(kTok512));
  const std::string dir = scratch_dir("tokenizer-errors-truncated");
  write_file(dir + "/short.bin", full.substr(0, 2));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/short.bin"), Contains("short.bin") && Contains("too short"));
  // Header (4) + token 0 ("<unk>": 4 + 4 + 5 bytes) + 3 bytes of token 1's score.
  write_file(dir + "/cut1.bin", full.substr(0, 4 + 13 + 3));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/cut1.bin"), Contains("cut1.bin") && Contains("truncated") && Contains("token 1)"));
  // Cut inside the last token's bytes.
  write_file(dir + "/cut511.bin", full.substr(0, full.size() - 1));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/cut511.bin"), Contains("truncated") && Contains("token 511"));
  // Cut cleanly between tokens: parses, but lacks the byte pieces.
  write_file(dir + "/few.bin", full.substr(0, 4 + 13));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/few.bin"), Contains("only 1 tokens"));
}

TEST_CASE("llama2.c tokenizer.bin with absurd lengths or the wrong layout", "[tokenizer][errors]") {
  const std::string dir = scratch_dir("tokenizer-errors-lengths");
  write_file(dir + "/neg.bin", int32_bytes(-5));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/neg.bin"), Contains("neg.bin") && Contains("max_token_length -5"));
  write_file(dir + "/huge.bin", int32_bytes(1 << 30));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/huge.bin"), Contains("absurd"));
  write_file(dir + "/longtoken.bin", int32_bytes(7) + token_record(0, 1000000, "x"));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/longtoken.bin"),
                      Contains("token 0 has length 1000000") && Contains("max_token_length is 7"));
  write_file(dir + "/mismatch.bin", int32_bytes(4) + token_record(0, 5, "<unk>"));
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/mismatch.bin"),
                      Contains("token 0 has length 5") && Contains("max_token_length is 4"));
  std::string no_bytes = int32_bytes(3);
  for (int i = 0; i < 300; ++i) no_bytes += token_record(-float(i), 1, "a");
  write_file(dir + "/nobytes.bin", no_bytes);
  REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/nobytes.bin"), Contains("token 3 should be the byte piece <0x00>"));
}

TEST_CASE("a model checkpoint is not a tokenizer", "[tokenizer][errors]") {
  const std::string rel = "models/stories260K/stories260K.bin";
  if (!have_shared(rel)) return;
  REQUIRE_THROWS_WITH(gear::load_tokenizer(shared(rel)), Contains("stories260K.bin") && Contains("not a"));
}

TEST_CASE("truncated SentencePiece tokenizer.model files", "[tokenizer][errors]") {
  if (!have_shared(kLlamaModel)) return;
  const std::string full = slurp(shared(kLlamaModel));
  const std::string dir = scratch_dir("tokenizer-errors-model");
  for (size_t cut : {size_t(1), size_t(1001), full.size() / 2, full.size() - 1}) {
    INFO("cut at " << cut);
    write_file(dir + "/trunc.model", full.substr(0, cut));
    REQUIRE_THROWS_WITH(gear::load_tokenizer(dir + "/trunc.model"), Contains("trunc.model") && Contains("truncated"));
  }
}

TEST_CASE("decoding an id outside the vocabulary", "[tokenizer][errors]") {
  if (!have_shared(kTok512)) return;
  auto tok = gear::load_tokenizer(shared(kTok512));
  REQUIRE_THROWS_WITH(tok->decode({1, 512}), Contains("token id 512") && Contains("outside the vocabulary"));
  REQUIRE_THROWS_WITH(tok->decode_token(1, -1), Contains("token id -1"));
}
