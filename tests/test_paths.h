#pragma once
// Where tests find ../shared. Tests that need it skip (with a visible warning) when it is absent,
// as on a user's machine; CI always has it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

namespace gear::test {

inline std::string shared(const std::string& rel) { return std::string(GEARLAB_SHARED_DIR) + "/" + rel; }

inline bool have_shared(const std::string& rel) {
  if (std::filesystem::exists(shared(rel))) return true;
  WARN("SKIPPED: " << shared(rel) << " not found (../shared is missing)");
  return false;
}

// A fresh scratch directory under the build tree for files a test writes.
inline std::string scratch_dir(const std::string& name) {
  auto dir = std::filesystem::path(GEARLAB_BINARY_DIR) / "test-scratch" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace gear::test
