#include "core/io/find_tokenizer.h"

#include <filesystem>

namespace gear {

std::string find_tokenizer_for(const std::string& model_path, int vocab_size) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (model_path.rfind("gen:", 0) == 0) return "";
  const fs::path p(model_path);
  const fs::path dir = fs::is_directory(p, ec) ? p : p.parent_path();
  for (const std::string& name :
       {std::string("tokenizer.model"), std::string("tokenizer.bin"), "tok" + std::to_string(vocab_size) + ".bin"}) {
    const fs::path candidate = dir / name;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  return "";
}

}  // namespace gear
