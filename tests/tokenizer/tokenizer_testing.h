#pragma once
// Shared fixtures for the tokenizer tests: the ../shared files, the reference traces, and the
// strings every tokenizer must handle.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_paths.h"

namespace gear::test {

inline const std::string kTok512 = "models/stories260K/tok512.bin";
inline const std::string kLlamaModel = "models/llama2-tokenizer/tokenizer.model";
inline const std::string kLlamaBin = "models/llama2-tokenizer/tokenizer.bin";

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// The input token of each trace line ("pos P in ID argmax A logit ...") plus the last argmax:
// the whole sequence llama2.c printed.
inline std::vector<int> trace_sequence(const std::string& path) {
  std::ifstream f(path);
  std::vector<int> ids;
  int last_argmax = -1;
  for (std::string line; std::getline(f, line);) {
    std::istringstream s(line);
    std::string word;
    int pos = 0, in = 0;
    s >> word >> pos >> word >> in >> word >> last_argmax;
    ids.push_back(in);
  }
  if (last_argmax >= 0) ids.push_back(last_argmax);
  return ids;
}

// ASCII, whitespace runs, multi-byte UTF-8 (2, 3 and 4 bytes), code points that need byte
// fallback, control bytes, text that looks like control tokens, and the empty string.
inline const std::vector<std::string> kSamples = {
    "Hello world", "Once upon a time", "The little dog", "", " ", "  two  spaces ", "trailing  ",
    "tab\tand\nnewline\n\n", "naïve café 東京", "emoji 🙂🚀🦙 and ❤️ and math ∑∫√", "Ünïcödé Ωmega Привет мир مرحبا",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \xF4\x8F\xBF\xBF", "12345 + 678 = 7023, 3.14159", "<s> not a control token </s> <0x41>",
    "a\x01" "b\x7f", "ﬁ ligature ǅ", "def f(x):\n    return x  # code",
    "Lily's mom said, \"Lily, let's go to the park.\""};

}  // namespace gear::test
