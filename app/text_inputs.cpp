#include "app/text_inputs.h"

#include <fstream>
#include <sstream>

#include "core/util/error.h"

namespace gear::cli {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(bool(in), path + ": cannot open text file");
  std::stringstream s;
  s << in.rdbuf();
  require(!s.str().empty(), path + ": the text file is empty");
  return s.str();
}

std::vector<std::string> read_prompt_file(const std::string& path) {
  std::ifstream in(path);
  require(bool(in), path + ": cannot open prompts file");
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) prompts.push_back(line);
  require(!prompts.empty(), path + ": no prompts in file");
  return prompts;
}

}  // namespace gear::cli
