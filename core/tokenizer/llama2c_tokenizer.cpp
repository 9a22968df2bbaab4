#include "core/tokenizer/llama2c_tokenizer.h"

#include <cstdint>
#include <fstream>

#include "core/tokenizer/bpe_tokenizer.h"
#include "core/util/error.h"

namespace gear {
namespace {

// run.c allocates max_token_length*2+3 bytes per merge candidate; a header near this bound is
// not a tokenizer's but some other file's first four bytes.
constexpr int32_t kMaxTokenLengthLimit = 4096;
// Ids 3..258 are the byte-fallback pieces: run.c encodes byte b as id b + 3 without looking.
constexpr int kFirstByteToken = 3;
constexpr int kMinVocab = kFirstByteToken + 256;

bool read_exact(std::istream& in, void* dst, std::streamsize n) {
  in.read(static_cast<char*>(dst), n);
  return in.gcount() == n;
}

int32_t read_header(std::istream& in, const std::string& path) {
  int32_t max_len = 0;
  require(read_exact(in, &max_len, 4), path + ": too short for a llama2.c tokenizer (no header)");
  require(max_len > 0 && max_len < kMaxTokenLengthLimit,
          path + ": not a llama2.c tokenizer (max_token_length " + std::to_string(max_len) + " is absurd)");
  return max_len;
}

// The vocabulary size is not stored: tokens run until end of file, as llama2.c's export writes them.
void read_tokens(std::istream& in, const std::string& path, int32_t max_len, BpeVocab& v) {
  while (in.peek() != EOF) {
    const std::string token = "token " + std::to_string(v.pieces.size());
    const std::string truncated = path + ": truncated llama2.c tokenizer (file ends inside " + token + ")";
    float score = 0;
    int32_t len = 0;
    require(read_exact(in, &score, 4) && read_exact(in, &len, 4), truncated);
    // Pieces longer than the header's max_token_length would overflow run.c's merge buffer.
    require(len >= 0 && len <= max_len, path + ": not a valid llama2.c tokenizer (" + token + " has length " +
                                            std::to_string(len) + ", max_token_length is " +
                                            std::to_string(max_len) + ")");
    std::string piece(size_t(len), '\0');
    require(read_exact(in, piece.data(), len), truncated);
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
  }
}

// A file that parses by luck (another .bin) almost never has the byte pieces where they belong.
void check_layout(const std::string& path, BpeVocab& v) {
  require(int(v.pieces.size()) >= kMinVocab, path + ": not a llama2.c tokenizer (only " +
                                                 std::to_string(v.pieces.size()) +
                                                 " tokens; need <unk>, <s>, </s> and 256 byte tokens)");
  v.types.assign(v.pieces.size(), PieceType::kNormal);
  for (int b = 0; b < 256; ++b) {
    const int id = kFirstByteToken + b;
    require(v.pieces[id] == byte_piece_name(b), path + ": not a llama2.c tokenizer (token " + std::to_string(id) +
                                                    " should be the byte piece " + byte_piece_name(b) + ")");
    v.types[id] = PieceType::kByte;
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(bool(in), path + ": cannot open tokenizer (missing or unreadable)");
  BpeVocab v;
  read_tokens(in, path, read_header(in, path), v);
  check_layout(path, v);
  v.mergeable.assign(v.pieces.size(), true);  // run.c's lookup searches the whole vocabulary
  v.unknown_text = v.pieces[0];                // run.c prints pieces as they are
  return std::make_unique<BpeTokenizer>(std::move(v), "llama2.c", path);
}

}  // namespace gear
