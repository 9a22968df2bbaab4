#include "core/tokenizer/tokenizer.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>

#include "core/tokenizer/llama2c_tokenizer.h"
#include "core/tokenizer/sentencepiece_model.h"
#include "core/util/error.h"

namespace gear {
namespace {

// Length of the sequence a lead byte announces and the payload bits it carries; 0 for bytes
// that cannot start a sequence (continuation bytes 0x80..0xBF and 0xF8..0xFF).
size_t lead_length(unsigned char c, uint32_t& bits) {
  if (c < 0x80) return bits = c, 1;
  if ((c & 0xE0) == 0xC0) return bits = c & 0x1F, 2;
  if ((c & 0xF0) == 0xE0) return bits = c & 0x0F, 3;
  if ((c & 0xF8) == 0xF0) return bits = c & 0x07, 4;
  return 0;
}

// Decoders that accept overlong forms or surrogates let one text have several byte spellings
// (a classic filter bypass), and the tokenizers would see pieces no model was trained on.
bool valid_code_point(uint32_t cp, size_t len) {
  static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
  return cp >= min_for_len[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

std::string hex_byte(unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", c);
  return buf;
}

[[noreturn]] void bad_utf8(const std::string& what, size_t at, const std::string& why) {
  fail(what + ": invalid UTF-8 at byte " + std::to_string(at) + " (" + why + ")");
}

// Checks the sequence starting at `at`; returns its length.
size_t check_sequence(const unsigned char* s, size_t n, size_t at, const std::string& what) {
  uint32_t cp = 0;
  const size_t len = lead_length(s[at], cp);
  if (len == 0) bad_utf8(what, at, "byte " + hex_byte(s[at]) + " cannot start a character");
  if (at + len > n) bad_utf8(what, at, "truncated sequence");
  for (size_t k = 1; k < len; ++k) {
    if ((s[at + k] & 0xC0) != 0x80) bad_utf8(what, at + k, "expected a continuation byte");
    cp = (cp << 6) | (s[at + k] & 0x3F);
  }
  if (!valid_code_point(cp, len)) bad_utf8(what, at, "overlong form, surrogate or beyond U+10FFFF");
  return len;
}

}  // namespace

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  int prev = -1;
  for (int id : ids) {
    // BOS/EOS are control tokens: they shape decoding of the next piece but print nothing.
    if (id != bos_id() && id != eos_id()) out += decode_token(prev, id);
    prev = id;
  }
  return out;
}

void require_utf8(const std::string& text, const std::string& what) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) i += check_sequence(s, text.size(), i, what);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    // A Hugging Face model directory keeps its SentencePiece model under this name.
    const fs::path sp = fs::path(path) / "tokenizer.model";
    require(fs::is_regular_file(sp, ec), path + ": directory has no tokenizer.model");
    return load_sentencepiece_model(sp.string());
  }
  require(fs::exists(path, ec), path + ": tokenizer file not found");
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".model") return load_sentencepiece_model(path);
  if (ext == ".bin") return load_llama2c_tokenizer(path);
  fail(path + ": unknown tokenizer format (expected a SentencePiece .model or a llama2.c tokenizer .bin)");
}

}  // namespace gear
