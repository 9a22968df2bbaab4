#pragma once
// Reading the texts commands take from files, with the one-line errors every command gives.
#include <string>
#include <vector>

namespace gear::cli {

// The whole file; a missing or empty file is a gear::Error naming it.
std::string read_text_file(const std::string& path);
// One prompt per non-empty line; a file without any is an error.
std::vector<std::string> read_prompt_file(const std::string& path);

}  // namespace gear::cli
