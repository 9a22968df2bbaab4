#include "core/tokenizer/bpe_tokenizer.h"

#include <cstdio>
#include <queue>

#include "core/util/error.h"

namespace gear {
namespace {

// remove_extra_whitespaces: no leading/trailing spaces, runs of spaces become one.
std::string collapse_spaces(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Bytes in the UTF-8 sequence that starts with `lead` (the text was validated beforehand).
size_t utf8_length(unsigned char lead) {
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

}  // namespace

std::string byte_piece_name(int byte) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", byte & 0xFF);
  return buf;
}

BpeTokenizer::BpeTokenizer(BpeVocab vocab, std::string kind, const std::string& source)
    : v_(std::move(vocab)), kind_(std::move(kind)) {
  const size_t n = v_.pieces.size();
  require(v_.scores.size() == n && v_.types.size() == n && v_.mergeable.size() == n,
          source + ": internal error: inconsistent vocabulary tables");
  require(v_.bos >= 0 && size_t(v_.bos) < n && v_.eos >= 0 && size_t(v_.eos) < n,
          source + ": BOS/EOS ids lie outside the vocabulary of " + std::to_string(n));
  index_pieces(source);
}

// Byte fallback needs a piece for every byte value; a vocabulary without them cannot encode
// arbitrary text, so it is rejected here rather than failing on some later prompt.
void BpeTokenizer::index_pieces(const std::string& source) {
  byte_ids_.assign(256, -1);
  byte_value_.assign(v_.pieces.size(), -1);
  for (int id = 0; id < vocab_size(); ++id) {
    if (v_.mergeable[id]) ids_.emplace(v_.pieces[id], id);  // first occurrence wins on duplicates
    if (v_.types[id] != PieceType::kByte) continue;
    unsigned int byte = 0;
    char tail = 0;
    const std::string& p = v_.pieces[id];
    require(std::sscanf(p.c_str(), "<0x%02X%c", &byte, &tail) == 2 && tail == '>' && p.size() == 6,
            source + ": byte piece " + std::to_string(id) + " is not of the form <0xXX>");
    byte_value_[id] = int(byte);
    if (byte_ids_[byte] < 0) byte_ids_[byte] = id;
  }
  for (int b = 0; b < 256; ++b)
    require(byte_ids_[b] >= 0, source + ": vocabulary has no byte-fallback piece " + byte_piece_name(b));
}

int BpeTokenizer::lookup(const std::string& s) const {
  auto it = ids_.find(s);
  return it == ids_.end() ? -1 : it->second;
}

// One code point: its own piece when the vocabulary has it, else one byte piece per byte.
void BpeTokenizer::append_code_point(const std::string& text, size_t at, size_t len, std::vector<int>& ids) const {
  const int id = lookup(text.substr(at, len));
  if (id >= 0) {
    ids.push_back(id);
    return;
  }
  for (size_t k = 0; k < len; ++k) ids.push_back(byte_ids_[static_cast<unsigned char>(text[at + k])]);
}

std::vector<int> BpeTokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  require_utf8(text, "prompt");
  const std::string normalized = v_.collapse_whitespace ? collapse_spaces(text) : text;
  std::vector<int> body;
  // SentencePiece's dummy prefix: "Hello" is tokenized as " Hello", as at training time.
  if (v_.dummy_prefix && !normalized.empty()) append_code_point(" ", 0, 1, body);
  for (size_t i = 0; i < normalized.size();) {
    const size_t len = utf8_length(static_cast<unsigned char>(normalized[i]));
    append_code_point(normalized, i, len, body);
    i += len;
  }
  merge(body);
  std::vector<int> ids;
  if (add_bos) ids.push_back(bos_id());
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_eos) ids.push_back(eos_id());
  return ids;
}

// run.c repeatedly merges the adjacent pair with the highest score, the leftmost among equals
// (SentencePiece's bpe_model.cc orders its agenda the same way). A heap ordered by
// (score, -left position) over a linked list, skipping stale entries, makes the same choices in
// O(n log n) instead of run.c's O(n^2), so long prompts stay fast with a 32k vocabulary.
void BpeTokenizer::merge(std::vector<int>& ids) const {
  const int n = int(ids.size());
  if (n < 2) return;
  std::vector<int> next(n), prev(n), version(n, 0);
  for (int i = 0; i < n; ++i) next[i] = i + 1, prev[i] = i - 1;
  next[n - 1] = -1;
  struct Candidate {
    float score;
    int left, right, left_version, right_version, id;
    bool operator<(const Candidate& o) const { return score != o.score ? score < o.score : left > o.left; }
  };
  std::priority_queue<Candidate> heap;
  auto consider = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const int right = next[left];
    const int id = lookup(v_.pieces[ids[left]] + v_.pieces[ids[right]]);
    if (id >= 0) heap.push({v_.scores[id], left, right, version[left], version[right], id});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const bool stale = next[c.left] != c.right || version[c.left] != c.left_version ||
                       version[c.right] != c.right_version;
    if (stale) continue;
    ids[c.left] = c.id;  // the merged piece takes the left slot; the right one leaves the list
    ++version[c.left];
    ++version[c.right];
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    consider(prev[c.left]);
    consider(c.left);
  }
  std::vector<int> out;
  for (int i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
  ids.swap(out);
}

std::string BpeTokenizer::decode_token(int prev, int id) const {
  require(id >= 0 && id < vocab_size(), "decode: token id " + std::to_string(id) + " is outside the vocabulary");
  switch (v_.types[id]) {
    case PieceType::kControl: return "";
    case PieceType::kUnknown: return v_.unknown_text;
    case PieceType::kByte: return std::string(1, char(byte_value_[id]));
    case PieceType::kNormal: break;
  }
  const std::string& piece = v_.pieces[id];
  // SentencePiece's decoder drops the dummy-prefix space of the first piece after BOS.
  if (prev == bos_id() && !piece.empty() && piece[0] == ' ') return piece.substr(1);
  return piece;
}

}  // namespace gear
