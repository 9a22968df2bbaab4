#pragma once
// Whole-text number parsing shared by the CLI's flags (app/cli_args.cpp) and the bench's tuning variables
// (core/bench/throughput.cpp); each caller words its own error.
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string>

namespace gear {

// The base-10 integer that is all of `text` (no trailing characters, within long long), else nothing.
inline std::optional<long long> parse_whole_integer(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) return std::nullopt;
  return v;
}

}  // namespace gear
