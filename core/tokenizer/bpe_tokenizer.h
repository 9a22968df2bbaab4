#pragma once
// Score-ordered BPE as llama2.c's run.c and SentencePiece's BPE model both do it: a scored
// vocabulary, per-code-point lookup with byte fallback, then greedy merging of the adjacent
// pair whose concatenation is the best-scoring piece. Both file formats load into this.
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace gear {

enum class PieceType { kNormal, kControl, kUnknown, kByte };

struct BpeVocab {
  std::vector<std::string> pieces;  // spaces as ' ' (SentencePiece's U+2581 already replaced)
  std::vector<float> scores;
  std::vector<PieceType> types;     // how decode prints each piece
  std::vector<bool> mergeable;      // may encode produce it by lookup/merge? (run.c: every piece)
  int bos = 1, eos = 2;
  bool dummy_prefix = true;          // prepend ' ' to non-empty text
  bool collapse_whitespace = false;  // SentencePiece's remove_extra_whitespaces
  std::string unknown_text;          // what an unknown piece prints
};

class BpeTokenizer : public Tokenizer {
 public:
  // Throws gear::Error (prefixed with `source`, the file) when the vocabulary is inconsistent.
  BpeTokenizer(BpeVocab vocab, std::string kind, const std::string& source);

  std::vector<int> encode(const std::string& text, bool add_bos, bool add_eos = false) const override;
  std::string decode_token(int prev, int id) const override;
  int vocab_size() const override { return int(v_.pieces.size()); }
  int bos_id() const override { return v_.bos; }
  int eos_id() const override { return v_.eos; }
  std::string kind() const override { return kind_; }
  const std::string& piece(int id) const { return v_.pieces.at(id); }
  float score(int id) const { return v_.scores.at(id); }

 private:
  void index_pieces(const std::string& source);
  int lookup(const std::string& s) const;  // -1 when absent or not mergeable
  void append_code_point(const std::string& text, size_t at, size_t len, std::vector<int>& ids) const;
  void merge(std::vector<int>& ids) const;

  BpeVocab v_;
  std::string kind_;
  std::unordered_map<std::string, int> ids_;
  std::vector<int> byte_ids_;    // the <0xXX> piece of each byte value
  std::vector<int> byte_value_;  // the byte each piece stands for, -1 for non-byte pieces
};

// "<0x0A>" for 10: the spelling of byte-fallback pieces in both formats.
std::string byte_piece_name(int byte);

}  // namespace gear
