#pragma once
// One error type for every bad input the engine meets (files, flags, settings, prompts).
// The message is the whole user-facing story: what was wrong and where, on one line.
#include <stdexcept>
#include <string>

namespace gear {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& message) { throw Error(message); }

inline void require(bool ok, const std::string& message) {
  if (!ok) fail(message);
}

}  // namespace gear
