// SentencePiece .model files read directly: the file is a protobuf ModelProto, and for BPE
// models encoding is the same score-ordered merging as llama2.c's. We read it ourselves because
// libsentencepiece links protobuf-lite, which cannot share a process with Debian's LibTorch
// (full libprotobuf): the two crash at start-up. The tests check this reader against
// libsentencepiece itself on many strings.
#include "core/tokenizer/sentencepiece_model.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/tokenizer/bpe_tokenizer.h"
#include "core/util/error.h"

namespace gear {
namespace {

// Just enough of the protobuf wire format: varints, length-delimited fields, fixed32.
struct Wire {
  const uint8_t* p;
  const uint8_t* end;
  const std::string& file;

  bool done() const { return p >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      require(p < end, file + ": truncated protobuf varint (not a SentencePiece model, or cut short)");
      const uint8_t b = *p++;
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail(file + ": malformed protobuf varint (not a SentencePiece model)");
  }
  Wire sub() {
    const uint64_t n = varint();
    require(n <= uint64_t(end - p), file + ": protobuf field runs past the end of the file (truncated?)");
    Wire w{p, p + n, file};
    p += n;
    return w;
  }
  std::string bytes() {
    const Wire s = sub();
    return std::string(reinterpret_cast<const char*>(s.p), size_t(s.end - s.p));
  }
  float fixed32() {
    require(end - p >= 4, file + ": truncated protobuf float (truncated?)");
    float f;
    std::memcpy(&f, p, 4);
    p += 4;
    return f;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: require(end - p >= 8, file + ": truncated protobuf field (truncated?)"); p += 8; break;
      case 2: sub(); break;
      case 5: fixed32(); break;
      default: fail(file + ": unsupported protobuf wire type " + std::to_string(wire_type) + " (not a SentencePiece model)");
    }
  }
};

// The field number and wire type of a protobuf key.
struct Key {
  int field, type;
  bool is(int f, int t) const { return field == f && type == t; }
};
Key next_key(Wire& w) {
  const uint64_t k = w.varint();
  return {int(k >> 3), int(k & 7)};
}

constexpr int kVarint = 0, kBytes = 2, kFixed32 = 5;
// sentencepiece_model.proto: ModelProto.SentencePiece.Type.
enum SpType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
// TrainerSpec.ModelType.
constexpr int kUnigram = 1, kBpe = 2;

// The parts of ModelProto the encoder needs, with protobuf's defaults.
struct SpModel {
  BpeVocab vocab;
  int model_type = kUnigram;
  bool byte_fallback = false;
  int bos = 1, eos = 2;
  std::string normalizer = "nmt_nfkc";
  std::string unk_surface = " \xE2\x81\x87 ";  // " ⁇ ", SentencePiece's rendering of <unk>
  // Both specs follow the pieces in the file, so a model cut short shows up as their absence.
  bool saw_trainer_spec = false;
  bool saw_normalizer_spec = false;
};

std::string replace_meta_space(const std::string& s) {
  static const std::string kMeta = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, kMeta.size(), kMeta) == 0) {
      out += ' ';
      i += kMeta.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

PieceType piece_type(int sp_type) {
  switch (sp_type) {
    case kUnknown: return PieceType::kUnknown;
    case kControl: return PieceType::kControl;
    case kByte: return PieceType::kByte;
    default: return PieceType::kNormal;
  }
}

// ModelProto.pieces (field 1): piece (1), score (2), type (3).
void read_piece(Wire p, BpeVocab& v) {
  std::string piece;
  float score = 0;
  int type = kNormal;
  while (!p.done()) {
    const Key k = next_key(p);
    if (k.is(1, kBytes)) piece = p.bytes();
    else if (k.is(2, kFixed32)) score = p.fixed32();
    else if (k.is(3, kVarint)) type = int(p.varint());
    else p.skip(k.type);
  }
  v.pieces.push_back(replace_meta_space(piece));
  v.scores.push_back(score);
  v.types.push_back(piece_type(type));
  // bpe_model.cc merges into NORMAL, USER_DEFINED and UNUSED pieces; UNUSED ones are then split
  // again, which never merging into them matches. (USER_DEFINED pieces are also matched whole in
  // the raw text by SentencePiece; Llama's vocabulary has none.)
  v.mergeable.push_back(type == kNormal || type == kUserDefined);
}

// TrainerSpec (field 2): model_type (3), byte_fallback (35), unk_surface (44), bos_id (41), eos_id (42).
void read_trainer_spec(Wire t, SpModel& m) {
  while (!t.done()) {
    const Key k = next_key(t);
    if (k.is(3, kVarint)) m.model_type = int(t.varint());
    else if (k.is(35, kVarint)) m.byte_fallback = t.varint() != 0;
    else if (k.is(41, kVarint)) m.bos = int(int32_t(t.varint()));
    else if (k.is(42, kVarint)) m.eos = int(int32_t(t.varint()));
    else if (k.is(44, kBytes)) m.unk_surface = t.bytes();
    else t.skip(k.type);
  }
}

// NormalizerSpec (field 3): name (1), add_dummy_prefix (3), remove_extra_whitespaces (4).
void read_normalizer_spec(Wire n, SpModel& m) {
  while (!n.done()) {
    const Key k = next_key(n);
    if (k.is(1, kBytes)) m.normalizer = n.bytes();
    else if (k.is(3, kVarint)) m.vocab.dummy_prefix = n.varint() != 0;
    else if (k.is(4, kVarint)) m.vocab.collapse_whitespace = n.varint() != 0;
    else n.skip(k.type);
  }
}

SpModel parse_model(const std::string& bytes, const std::string& path) {
  Wire w{reinterpret_cast<const uint8_t*>(bytes.data()), reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size(), path};
  SpModel m;
  m.vocab.collapse_whitespace = true;  // NormalizerSpec's default
  while (!w.done()) {
    const Key k = next_key(w);
    if (k.is(1, kBytes)) {
      read_piece(w.sub(), m.vocab);
    } else if (k.is(2, kBytes)) {
      read_trainer_spec(w.sub(), m);
      m.saw_trainer_spec = true;
    } else if (k.is(3, kBytes)) {
      read_normalizer_spec(w.sub(), m);
      m.saw_normalizer_spec = true;
    } else {
      w.skip(k.type);
    }
  }
  return m;
}

// Only what BpeTokenizer reproduces exactly; the rest is refused rather than tokenized wrongly.
void check_supported(const SpModel& m, const std::string& path) {
  const int n = int(m.vocab.pieces.size());
  require(n > 0, path + ": no pieces found, not a SentencePiece model");
  require(m.saw_trainer_spec && m.saw_normalizer_spec,
          path + ": SentencePiece model ends before its trainer/normalizer spec (truncated?)");
  require(m.model_type == kBpe, path + ": SentencePiece model type " + std::to_string(m.model_type) +
                                    " is not supported (only BPE, as Llama tokenizers use)");
  require(m.normalizer == "identity", path + ": SentencePiece normalizer '" + m.normalizer +
                                          "' is not supported (only 'identity', as Llama tokenizers use)");
  require(m.byte_fallback, path + ": SentencePiece models without byte fallback are not supported");
  require(m.bos >= 0 && m.bos < n && m.eos >= 0 && m.eos < n,
          path + ": SentencePiece model has no usable BOS/EOS ids (bos " + std::to_string(m.bos) + ", eos " +
              std::to_string(m.eos) + ")");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(bool(in), path + ": cannot open SentencePiece model (missing or unreadable)");
  std::stringstream buf;
  buf << in.rdbuf();
  require(buf.str().size() > 0, path + ": empty file, not a SentencePiece model");
  return buf.str();
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path) {
  SpModel m = parse_model(read_file(path), path);
  check_supported(m, path);
  m.vocab.bos = m.bos;
  m.vocab.eos = m.eos;
  m.vocab.unknown_text = m.unk_surface;
  return std::make_unique<BpeTokenizer>(std::move(m.vocab), "sentencepiece", path);
}

}  // namespace gear
