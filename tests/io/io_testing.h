#pragma once
// Small helpers for the loader tests.
#include <catch2/catch.hpp>
#include <initializer_list>
#include <string>

#include "core/util/error.h"

namespace gear::test {

// The message of the gear::Error that `f` throws (a test failure if it throws nothing or
// something else).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const gear::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected gear::Error, got another exception: " << e.what());
  }
  FAIL("expected gear::Error, nothing was thrown");
  return "";
}

// CHECK that a message names all of the given pieces (the file, the tensor, the problem).
#define CHECK_ERROR_NAMES(message, ...)                                                    \
  do {                                                                                     \
    const std::string gear_msg_ = (message);                                               \
    INFO("error message: " << gear_msg_);                                                  \
    for (const std::string& gear_piece_ : std::initializer_list<std::string>{__VA_ARGS__}) \
      CHECK_THAT(gear_msg_, Catch::Matchers::Contains(gear_piece_));                       \
  } while (0)

}  // namespace gear::test
