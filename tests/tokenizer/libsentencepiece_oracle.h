#pragma once
// libsentencepiece itself, as the oracle our .model reader is checked against. Only the
// tokenizer tests link it (they have no LibTorch, so its protobuf-lite is alone in the process).
#include <string>
#include <vector>

namespace gear::test {

bool have_libsentencepiece();
// Ids with BOS prepended, as the engine's encode(text, true).
std::vector<int> spm_encode(const std::string& model, const std::string& text);
std::string spm_decode(const std::string& model, const std::vector<int>& ids);

}  // namespace gear::test
