#include "libsentencepiece_oracle.h"

#ifdef GEARLAB_HAVE_LIBSENTENCEPIECE
#include <sentencepiece_processor.h>

#include <map>
#include <memory>
#include <stdexcept>

namespace gear::test {
namespace {

sentencepiece::SentencePieceProcessor& processor(const std::string& model) {
  static std::map<std::string, std::unique_ptr<sentencepiece::SentencePieceProcessor>> cache;
  auto& p = cache[model];
  if (!p) {
    p = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = p->Load(model);
    if (!status.ok()) throw std::runtime_error(status.ToString());
  }
  return *p;
}

}  // namespace

bool have_libsentencepiece() { return true; }

std::vector<int> spm_encode(const std::string& model, const std::string& text) {
  std::vector<int> ids;
  processor(model).Encode(text, &ids);
  ids.insert(ids.begin(), processor(model).bos_id());
  return ids;
}

std::string spm_decode(const std::string& model, const std::vector<int>& ids) {
  std::string out;
  processor(model).Decode(ids, &out);
  return out;
}

}  // namespace gear::test

#else

namespace gear::test {
bool have_libsentencepiece() { return false; }
std::vector<int> spm_encode(const std::string&, const std::string&) { return {}; }
std::string spm_decode(const std::string&, const std::vector<int>&) { return {}; }
}  // namespace gear::test

#endif
