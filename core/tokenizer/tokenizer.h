#pragma once
// One interface for every tokenizer the engine uses (llama2.c .bin, SentencePiece .model).
#include <memory>
#include <string>
#include <vector>

namespace gear {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text must be valid UTF-8 (else gear::Error). BOS/EOS are added on request.
  virtual std::vector<int> encode(const std::string& text, bool add_bos, bool add_eos = false) const = 0;
  // The bytes token `id` contributes when it follows `prev` (llama2.c rules: the leading space
  // of the first piece after BOS is dropped; <0xXX> byte pieces become raw bytes).
  virtual std::string decode_token(int prev, int id) const = 0;
  // Whole sequence, using decode_token pairwise.
  std::string decode(const std::vector<int>& ids) const;

  virtual int vocab_size() const = 0;
  virtual int bos_id() const { return 1; }
  virtual int eos_id() const { return 2; }
  virtual std::string kind() const = 0;  // "llama2.c" or "sentencepiece"
};

// Picks the implementation from the path: *.model -> SentencePiece, *.bin -> llama2.c format,
// a directory -> its tokenizer.model (Hugging Face layout).
// Throws gear::Error with the file name and the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// Throws gear::Error("<what>: invalid UTF-8 at byte N") for malformed input.
void require_utf8(const std::string& text, const std::string& what);

}  // namespace gear
